//! Compiles every `.proto` under `molecule/v1` and `google/rpc` with protox (no system protoc)
//! into server and client code, and writes the descriptor set that reflection and the U+0000
//! scan read. A new proto file needs no edit here.

use std::{
    env,
    path::{Path, PathBuf},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut protos = Vec::new();
    for dir in ["google/rpc", "molecule/v1"] {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "proto") {
                protos.push(path);
            }
        }
    }
    protos.sort();
    // tonic-prost-build does not emit these itself (grpc/grpc-rust#2511).
    for dir in ["google", "molecule"] {
        println!("cargo:rerun-if-changed={dir}");
    }
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    let descriptors = protox::compile(&protos, [Path::new(".")])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("molecule_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::LeanCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
