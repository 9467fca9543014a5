//! The wire contract of `molecule.v1`, shared by the control plane, the gateway and every
//! client: generated messages, servers and clients, the codec they use, and how a domain error
//! travels in a `tonic::Status`. It owns no behaviour and depends on nothing of ours.

#[allow(clippy::all, unreachable_pub)]
mod generated {
    tonic::include_proto!("molecule.v1");
}
pub use generated::*;

pub mod codec;
pub mod wire_error;

/// `google.rpc.Status`, the envelope of error details.
#[allow(clippy::all, unreachable_pub)]
pub mod google_rpc {
    tonic::include_proto!("google.rpc");
}

/// Every descriptor of `molecule.v1` and `google.rpc`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("molecule_descriptor");

/// The largest message the A2A services carry: an agent's answer may be 10 MiB, plus its
/// envelope. Servers and clients of `A2A`, `AgentInbound` and `Replicas` set it both ways.
pub const MAX_MESSAGE_BYTES: usize = 11 * 1024 * 1024;

/// The largest message every other service decodes: a REST body (1 MiB, the gateway's cap)
/// and room for its protobuf framing.
pub const REQUEST_MESSAGE_BYTES: usize = 1024 * 1024 + 64 * 1024;

/// A UTC time as a protobuf timestamp.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}
