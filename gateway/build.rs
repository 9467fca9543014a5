//! Compiles `../proto` client-only: the gateway speaks to the control plane purely over the wire
//! contract, so it never depends on the server crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../proto/google/rpc/status.proto",
        "../proto/molecule/v1/a2a.proto",
        "../proto/molecule/v1/bundles.proto",
        "../proto/molecule/v1/delegations.proto",
        "../proto/molecule/v1/errors.proto",
        "../proto/molecule/v1/plugins.proto",
        "../proto/molecule/v1/registry.proto",
        "../proto/molecule/v1/secrets.proto",
        "../proto/molecule/v1/workspaces.proto",
    ];
    println!("cargo:rerun-if-changed=../proto");
    let descriptors = protox::compile(protos, ["../proto"])?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::LeanCodec")
        .build_server(false)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
