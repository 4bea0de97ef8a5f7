//! Compiles `proto/**/*.proto` with protox (pure Rust, so no `protoc` on the
//! build machine) and generates tonic clients and servers, plus the encoded
//! file descriptor set that apid serves through gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "slate/machine/v1/machine.proto",
    "slate/resource/v1/resource.proto",
    "slate/trust/v1/trust.proto",
    "slate/join/v1/join.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("slate_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
