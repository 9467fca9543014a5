//! The integration suite: one binary, every test against a real server on a real socket, on
//! every configured backend (see `helpers`).

mod a2a;
mod activity;
mod approvals;
mod architecture;
mod auth;
mod bundles;
mod chat_files;
mod checkpoints;
mod cli;
mod console;
mod delegations;
mod discovery;
mod edge;
mod events;
mod grpc;
mod heartbeat_stream;
mod helpers;
mod instructions;
mod interop;
mod key_values;
mod lifecycle;
mod limits;
mod memories;
mod operability;
mod operator_cli;
mod outage;
mod plugins;
mod registry;
mod schedules;
mod secrets;
mod shared_context;
mod tokens;
mod validation;
mod workspace_config;
mod workspaces;
