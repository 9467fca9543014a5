//! The platform services the workspace runtime calls beyond registration and heartbeats
//! (docs/runtime.md): memories and the key-value memory (docs/operations.md O3), approvals, chat
//! files, instructions, checkpoints and shared context. Each
//! submodule is one gRPC service with its own error catalogue; none of them talks to agents.

pub mod approvals;
pub mod chat_files;
pub mod checkpoints;
pub mod instructions;
pub mod key_values;
pub mod memories;
pub mod shared_context;

pub use approvals::ApprovalsService;
pub use chat_files::ChatFilesService;
pub use checkpoints::CheckpointsService;
pub use instructions::InstructionsService;
pub use key_values::KeyValuesService;
pub use memories::MemoriesService;
pub use shared_context::SharedContextService;
