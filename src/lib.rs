//! Molecule: the control plane for AI-agent workspaces. One binary serves REST (the gateway),
//! gRPC, gRPC-Web and the `/ws` WebSocket on one port. See README.md for the map.

pub mod a2a;
pub mod audit;
pub mod audit_log;
pub mod auth;
pub mod bootstrap;
pub mod bundles;
pub mod cli;
pub mod config;
pub mod console;
pub mod crypto;
pub mod delegations;
pub mod domain;
pub mod error;
pub mod events;
pub mod github;
pub mod grpc_edge;
pub mod hierarchy;
pub mod hot;
pub mod listener;
pub mod liveness;
pub mod nul_guard;
pub mod plugins;
pub mod readiness;
pub mod registry;
pub mod runtime;
pub mod schedules;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
pub mod supervision;
pub mod sweeper;
pub mod telemetry;
pub mod templates;
pub mod url_safety;
pub mod workspaces;

/// The wire contract (the `molecule-proto` crate): generated types and stubs, codec, error detail.
pub use ::pb;
