//! Compiles `proto/` with protox (no system protoc) into server and client code, and writes the
//! file descriptor set that server reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/google/rpc/status.proto",
        "proto/molecule/v1/a2a.proto",
        "proto/molecule/v1/bundles.proto",
        "proto/molecule/v1/delegations.proto",
        "proto/molecule/v1/errors.proto",
        "proto/molecule/v1/plugins.proto",
        "proto/molecule/v1/registry.proto",
        "proto/molecule/v1/secrets.proto",
        "proto/molecule/v1/workspaces.proto",
    ];
    // tonic-prost-build does not emit these itself (grpc/grpc-rust#2511).
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("molecule_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .codec_path("gateway::codec::LeanCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
