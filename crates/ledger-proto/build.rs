//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates tonic code.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "converge/context/v1/context.proto",
        "converge/ledger/v1/integrity.proto",
        "converge/ledger/v1/append.proto",
        "converge/ledger/v1/snapshot.proto",
        "converge/ledger/cluster/v1/cluster.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::ReservingCodec")
        .compile_fds(fds)?;
    Ok(())
}
