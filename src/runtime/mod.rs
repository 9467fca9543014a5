//! The platform services the workspace runtime calls beyond registration and heartbeats
//! (docs/runtime.md): memories, approvals, instructions, checkpoints and shared context. Each
//! submodule is one gRPC service with its own error catalogue; none of them talks to agents.

pub mod checkpoints;

pub use checkpoints::CheckpointsService;
