//! Compiles the vendored Envoy ext_proc protos with protox (pure Rust, no
//! system `protoc`) and generates the tonic service code.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    let files = ["envoy/service/ext_proc/v3/external_processor.proto"];
    let mut fds = protox::compile(files, [root])?;
    for file in &fds.file {
        // Well-known types come from protox itself and have no file here.
        let path = root.join(file.name());
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    // Envoy's comments are reStructuredText whose indented blocks rustdoc
    // would run as doctests; the vendored protos themselves are the reference.
    for file in &mut fds.file {
        file.source_code_info = None;
    }
    tonic_prost_build::configure()
        // Every `bytes` field (bodies, raw header values) becomes `bytes::Bytes`,
        // so body chunks are passed on without copying.
        .bytes(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
