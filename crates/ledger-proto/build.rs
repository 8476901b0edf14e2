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
    // The node's ContextService again, server side only, every message taken from the module
    // above except WatchEvent, which the node sends pre-encoded (`crate::frame::WatchFrame`).
    // prost resolves the most specific extern path first.
    let framed = out.join("framed");
    std::fs::create_dir_all(&framed)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .codec_path("crate::codec::ReservingCodec")
        .extern_path(
            ".converge.context.v1.WatchEvent",
            "crate::frame::WatchFrame",
        )
        .extern_path(".converge.context.v1", "crate::context::v1")
        .extern_path(".converge.ledger.v1", "crate::ledger::v1")
        .out_dir(&framed)
        .compile_fds(protox::compile(
            ["converge/context/v1/context.proto"],
            [&root],
        )?)?;
    Ok(())
}
