//! Molecule: the control plane for AI-agent workspaces. One binary serves REST (the gateway),
//! gRPC, gRPC-Web and the `/ws` WebSocket on one port. See README.md for the map.

pub mod a2a;
pub mod auth;
pub mod bootstrap;
pub mod bundles;
pub mod config;
pub mod crypto;
pub mod delegations;
pub mod error;
pub mod events;
pub mod grpc_edge;
pub mod hierarchy;
pub mod listener;
pub mod liveness;
pub mod nul_guard;
pub mod plugins;
pub mod registry;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
pub mod sweeper;
pub mod url_safety;
pub mod workspaces;

/// Generated protobuf types and gRPC stubs for `molecule.v1`.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("molecule.v1");

    /// `google.rpc.Status`, the envelope of error details.
    pub mod google_rpc {
        tonic::include_proto!("google.rpc");
    }

    /// A UTC time as a protobuf timestamp.
    pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: at.timestamp_subsec_nanos() as i32,
        }
    }

    /// Every descriptor of `proto/`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("molecule_descriptor");
}
