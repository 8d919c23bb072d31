//! The Envoy protobuf code in `src/generated/` is checked in (the
//! tonic-health pattern), so that no build of this crate runs protox or
//! tonic-prost-build. This test generates it again from the vendored protos
//! in `proto/` and fails when anything differs. After changing a proto or
//! upgrading prost/tonic, rewrite the files with
//!
//! ```sh
//! BBR_REGENERATE=1 cargo test -p bbr-extproc --test generated_code
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The one service file; everything it imports is generated with it.
const ROOT_PROTO: &str = "envoy/service/ext_proc/v3/external_processor.proto";

fn generate(into: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let mut fds = protox::compile([ROOT_PROTO], [&root])?;
    // Envoy's comments are reStructuredText whose indented blocks rustdoc
    // would run as doctests; the vendored protos themselves are the reference.
    for file in &mut fds.file {
        file.source_code_info = None;
    }
    tonic_prost_build::configure()
        // Every `bytes` field (bodies, raw header values) becomes
        // `bytes::Bytes`, so body chunks are passed on without copying.
        .bytes(".")
        .build_client(false)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .out_dir(into)
        .compile_fds(fds)?;
    Ok(())
}

/// File name → contents of every `.rs` file directly in `dir`.
fn rust_files(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|ext| ext == "rs") {
            let name = path.file_name().expect("a file name").to_string_lossy();
            let text = std::fs::read_to_string(&path).expect("readable file");
            files.insert(name.into_owned(), text);
        }
    }
    files
}

#[test]
fn checked_in_protobuf_code_is_what_the_protos_generate() {
    let scratch: PathBuf =
        std::env::temp_dir().join(format!("bbr-extproc-generated-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    generate(&scratch).expect("the vendored protos compile");
    let fresh = rust_files(&scratch);
    std::fs::remove_dir_all(&scratch).expect("scratch directory removed");

    let checked_in_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/generated");
    if std::env::var_os("BBR_REGENERATE").is_some() {
        std::fs::create_dir_all(&checked_in_dir).expect("src/generated");
        for (name, _) in rust_files(&checked_in_dir) {
            std::fs::remove_file(checked_in_dir.join(name)).expect("stale file removed");
        }
        for (name, text) in &fresh {
            std::fs::write(checked_in_dir.join(name), text).expect("generated file written");
        }
    }
    let checked_in = rust_files(&checked_in_dir);
    assert!(!fresh.is_empty(), "nothing was generated");
    assert_eq!(
        checked_in.keys().collect::<Vec<_>>(),
        fresh.keys().collect::<Vec<_>>(),
        "src/generated/ holds other files than the protos generate; \
         run BBR_REGENERATE=1 cargo test -p bbr-extproc --test generated_code"
    );
    for (name, text) in &fresh {
        assert!(
            checked_in[name] == *text,
            "src/generated/{name} differs from what the protos generate; \
             run BBR_REGENERATE=1 cargo test -p bbr-extproc --test generated_code"
        );
    }
}
