//! The Go programs the proof tests run, installed by
//! `scripts/install-go-tools` into `<workspace>/.tools/bin/`.
//!
//! Missing one: under `CI=true` the test fails (the proof must not silently
//! vanish from CI); elsewhere it is skipped with a message.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};

/// `.tools/bin/NAME`, or `None` (after printing why) when it is missing
/// outside CI. Panics under `CI=true` when it is missing.
pub fn go_tool(name: &str) -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace");
    let path = workspace.join(".tools/bin").join(name);
    if path.is_file() {
        return Some(path);
    }
    let message = format!(
        "{} is missing: run `bash scripts/install-go-tools {name}` (Go and the module proxy needed)",
        path.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    None
}
