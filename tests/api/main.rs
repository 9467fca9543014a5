//! The integration suite: one binary, every test against a real server on a real socket, on
//! every configured backend (see `helpers`).

mod a2a;
mod activity;
mod architecture;
mod auth;
mod bundles;
mod checkpoints;
mod cli;
mod delegations;
mod discovery;
mod edge;
mod events;
mod grpc;
mod heartbeat_stream;
mod helpers;
mod interop;
mod lifecycle;
mod limits;
mod outage;
mod plugins;
mod registry;
mod secrets;
mod tokens;
mod validation;
mod workspaces;
