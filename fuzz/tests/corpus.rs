//! Replays the checked-in seed corpus and every saved crash through the
//! fuzz checks, on stable, without libFuzzer: `cargo test --manifest-path
//! fuzz/Cargo.toml`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use bbr_fuzz::{
    check_body, check_chunked, check_oneshot, check_replay, check_splice, check_spool, check_stream,
};

/// Files directly under `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every file of the target's corpus and artifacts and
/// reports every failing file at once. Returns how many corpus files ran.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = files(&root.join("corpus").join(target));
    let artifacts = files(&root.join("artifacts").join(target));
    let mut failures = Vec::new();
    for path in corpus.iter().chain(&artifacts) {
        let data = std::fs::read(path).expect("readable corpus file");
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failures.push(path.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: failing inputs: {failures:#?}"
    );
    corpus.len()
}

#[test]
fn extract_oneshot_corpus_passes() {
    let count = replay("extract_oneshot", check_oneshot);
    assert!(
        count >= 40,
        "the extract_oneshot seed corpus is missing ({count} files)"
    );
}

#[test]
fn extract_chunked_corpus_passes() {
    let count = replay("extract_chunked", check_chunked);
    assert!(
        count >= 10,
        "the extract_chunked seed corpus is missing ({count} files)"
    );
}

#[test]
fn replay_body_corpus_passes() {
    let count = replay("replay_body", check_replay);
    assert!(
        count >= 10,
        "the replay_body seed corpus is missing ({count} files)"
    );
}

#[test]
fn body_chunked_corpus_passes() {
    let count = replay("body_chunked", check_body);
    assert!(
        count >= 8,
        "the body_chunked seed corpus is missing ({count} files)"
    );
}

#[test]
fn splice_chunked_corpus_passes() {
    let count = replay("splice_chunked", check_splice);
    assert!(
        count >= 8,
        "the splice_chunked seed corpus is missing ({count} files)"
    );
}

/// Every one-shot seed also goes through the splicer, in 1-byte and
/// 7-byte chunks, with a target that needs escaping.
#[test]
fn oneshot_seeds_pass_the_splicer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    for path in files(&root.join("corpus").join("extract_oneshot")) {
        let body = std::fs::read(&path).expect("readable corpus file");
        for header in [&b"\x80\x00"[..], b"\x00\x06"] {
            let target = b"a\"\n\xc3\xa9\\";
            let data = [&[target.len() as u8][..], target, header, &body].concat();
            if catch_unwind(AssertUnwindSafe(|| check_splice(&data))).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:#?}");
}

#[test]
fn spool_corpus_passes() {
    let count = replay("spool", check_spool);
    assert!(
        count >= 8,
        "the spool seed corpus is missing ({count} files)"
    );
}

#[test]
fn stream_state_corpus_passes() {
    let count = replay("stream_state", check_stream);
    assert!(
        count >= 25,
        "the stream_state seed corpus is missing ({count} files)"
    );
}

/// Every one-shot seed also goes through the ext_proc state machine in each
/// of its eight setups, with and without trailers, in 7-byte chunks.
#[test]
fn oneshot_seeds_pass_the_stream_state_in_every_mode() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    for path in files(&root.join("corpus").join("extract_oneshot")) {
        let body = std::fs::read(&path).expect("readable corpus file");
        for setup in (0u8..8).chain(8..16) {
            let data = [&[setup, 0x00, 0x06][..], &body].concat();
            if catch_unwind(AssertUnwindSafe(|| check_stream(&data))).is_err() {
                failures.push(format!("{} in setup {setup:#04x}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "failing setups: {failures:#?}");
}

/// Every one-shot seed also goes through the ext_proc state machine under
/// each content header of the stream check (forms, codings, one not
/// decoded), in full duplex and buffered, in 7-byte chunks.
#[test]
fn oneshot_seeds_pass_the_stream_state_under_every_content_header() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    for path in files(&root.join("corpus").join("extract_oneshot")) {
        let body = std::fs::read(&path).expect("readable corpus file");
        for content in 1u8..8 {
            for setup in [0x00, 0x03] {
                let data = [&[setup, content << 2, 0x06][..], &body].concat();
                if catch_unwind(AssertUnwindSafe(|| check_stream(&data))).is_err() {
                    failures.push(format!(
                        "{} in setup {setup:#04x}, content {content}",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "failing setups: {failures:#?}");
}

/// Every one-shot seed also goes through the chunked check with a few fixed
/// splits: 1-byte chunks, 16-byte chunks, mixed sizes with empty chunks.
#[test]
fn oneshot_seeds_agree_under_fixed_splits() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let headers: [&[u8]; 4] = [
        b"\x80\x00",
        b"\x00\x0f",
        b"\x43\x06\xc8\x00\x3f",
        b"\x01\x02\x04",
    ];
    let mut failures = Vec::new();
    for path in files(&root.join("corpus").join("extract_oneshot")) {
        let body = std::fs::read(&path).expect("readable corpus file");
        for header in headers {
            let data = [header, &body].concat();
            if catch_unwind(AssertUnwindSafe(|| check_chunked(&data))).is_err() {
                failures.push(format!("{} with header {header:02x?}", path.display()));
            }
            if catch_unwind(AssertUnwindSafe(|| check_replay(&data))).is_err() {
                failures.push(format!(
                    "{} through the layer, header {header:02x?}",
                    path.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "failing splits: {failures:#?}");
}
