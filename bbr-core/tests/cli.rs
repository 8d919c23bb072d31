//! The `extract` example, run as a real process on real files: its output
//! is the black-box interface of the core.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The example binary `cargo test` builds next to the test binaries
/// (`target/<profile>/examples/extract`); built on demand if missing.
fn extract_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir
        .join("examples")
        .join(format!("extract{}", std::env::consts::EXE_SUFFIX));
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", "bbr-core", "--example", "extract"])
            .status()
            .expect("run cargo to build the extract example");
        assert!(status.success(), "building the extract example failed");
    }
    assert!(
        binary.exists(),
        "the extract example is missing at {}",
        binary.display()
    );
    binary
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bbr-core-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    fn file(&self, name: &str, body: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, body).expect("write temp file");
        path.to_str().expect("utf-8 temp path").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(extract_binary())
        .args(args)
        .output()
        .expect("run extract");
    (
        output.status.code().expect("exit code"),
        String::from_utf8(output.stdout).expect("utf-8 stdout"),
        String::from_utf8(output.stderr).expect("utf-8 stderr"),
    )
}

/// The expected line for `file` (a temp path of plain ASCII, so it needs
/// no escaping: the escaping itself is tested on a file name of its own).
fn json(file: &str, rest: &str) -> String {
    assert!(
        file.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'),
        "{file:?}"
    );
    format!("{{\"file\":\"{file}\",{rest}}}")
}

#[test]
fn prints_one_verdict_line_per_file_under_every_chunking() {
    let dir = TempDir::new("verdicts");
    let found = dir.file(
        "found.json",
        br#"{"messages":[{"role":"user","content":"hi"}],"model":"food-review-1"}"#,
    );
    let escaped = dir.file("escaped.json", br#"{"model":"a\"b\\c\u00e9"}"#);
    let absent = dir.file("absent.json", br#"{"messages":[]}"#);
    let tail = dir.file("bad-tail.json", br#"{"model":"m","x":tru}"#);
    let duplicate = dir.file("dup.json", br#"{"model":"a","model":"b"}"#);
    let empty = dir.file("empty.json", b"");
    for chunk in ["1", "3", "65536"] {
        let (status, stdout, stderr) = run(&[
            "--chunk", chunk, &found, &escaped, &absent, &tail, &duplicate, &empty,
        ]);
        assert_eq!(status, 0, "{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines,
            vec![
                json(&found, r#""outcome":"found","model":"food-review-1""#),
                json(&escaped, r#""outcome":"found","model":"a\"b\\cé""#),
                json(&absent, r#""outcome":"absent""#),
                json(
                    &tail,
                    r#""outcome":"error","kind":"invalid_json","offset":20"#
                ),
                json(
                    &duplicate,
                    r#""outcome":"error","kind":"duplicate_model","offset":13"#
                ),
                json(
                    &empty,
                    r#""outcome":"error","kind":"unexpected_end","offset":0"#
                ),
            ],
            "chunk {chunk}"
        );
        // Every line is JSON that serde_json reads back.
        for line in lines {
            let value: serde_json::Value = serde_json::from_str(line).expect("valid JSON line");
            assert!(value["file"].is_string());
        }
    }
    let (status, stdout, _) = run(&["--policy", "first-wins", &tail, &duplicate]);
    assert_eq!(status, 0);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![
            json(&tail, r#""outcome":"found","model":"m""#),
            json(&duplicate, r#""outcome":"found","model":"a""#),
        ]
    );
    let (_, stdout, _) = run(&["--policy", "last-wins", "--chunk", "2", &duplicate]);
    assert_eq!(
        stdout.trim_end(),
        json(&duplicate, r#""outcome":"found","model":"b""#)
    );
}

#[test]
fn bad_arguments_and_missing_files_set_the_exit_status() {
    let (status, stdout, stderr) = run(&["--policy", "most-wins", "x.json"]);
    assert_eq!((status, stdout.as_str()), (64, ""));
    assert!(stderr.contains("usage:"), "{stderr}");
    let (status, _, stderr) = run(&["--chunk", "0", "x.json"]);
    assert_eq!(status, 64, "{stderr}");
    let (status, _, _) = run(&[]);
    assert_eq!(status, 64);

    let dir = TempDir::new("missing");
    let good = dir.file("good.json", br#"{"model":"m"}"#);
    let missing = dir.0.join("missing.json");
    let (status, stdout, stderr) = run(&[missing.to_str().expect("utf-8"), &good]);
    assert_eq!(status, 2);
    assert_eq!(
        stdout.trim_end(),
        json(&good, r#""outcome":"found","model":"m""#)
    );
    assert!(stderr.contains("missing.json"), "{stderr}");
}

#[test]
fn the_field_flag_names_the_key_and_names_are_trimmed() {
    let dir = TempDir::new("field");
    let body = dir.file(
        "field.json",
        br#"{"model":" a ","model_name":"\tfood-review-1 "}"#,
    );
    let (status, stdout, _) = run(&[&body]);
    assert_eq!(status, 0);
    assert_eq!(
        stdout.trim_end(),
        json(&body, r#""outcome":"found","model":"a""#)
    );
    for chunk in ["1", "7"] {
        let (status, stdout, _) = run(&["--field", "model_name", "--chunk", chunk, &body]);
        assert_eq!(status, 0);
        assert_eq!(
            stdout.trim_end(),
            json(&body, r#""outcome":"found","model":"food-review-1""#)
        );
    }
    let (status, _, stderr) = run(&["--field", "", &body]);
    assert_eq!(status, 64);
    assert!(stderr.contains("--field"), "{stderr}");
}

#[test]
fn file_names_are_escaped_as_json_strings() {
    let dir = TempDir::new("escaping");
    let name = "q\"b\\s\u{1}\u{7f}t\té.json";
    let file = dir.file(name, br#"{"model":"m"}"#);
    let (status, stdout, _) = run(&[&file]);
    assert_eq!(status, 0);
    let prefix = dir.0.to_str().expect("utf-8");
    assert_eq!(
        stdout.trim_end(),
        format!(
            r#"{{"file":"{prefix}/q\"b\\s\u0001\u007ft\té.json","outcome":"found","model":"m"}}"#
        )
    );
    let value: serde_json::Value = serde_json::from_str(stdout.trim_end()).expect("JSON line");
    assert_eq!(value["file"], file.as_str());
}

#[test]
fn content_type_and_encoding_flags_read_forms_and_compressed_files() {
    use std::io::Write as _;
    let dir = TempDir::new("encoding");
    let plain = br#"{"messages":[],"model":"food-review-1"}"#;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(plain).expect("gzip");
    let gz = dir.file("body.json.gz", &gzip.finish().expect("gzip"));
    for chunk in ["1", "7", "65536"] {
        let (status, stdout, _) = run(&["--encoding", "gzip", "--chunk", chunk, &gz]);
        assert_eq!(status, 0);
        assert_eq!(
            stdout.trim_end(),
            json(&gz, r#""outcome":"found","model":"food-review-1""#)
        );
    }
    // Not decoded: absent, as adapters treat it; undecoded gzip as JSON: an error.
    let (_, stdout, _) = run(&["--encoding", "compress", &gz]);
    assert_eq!(stdout.trim_end(), json(&gz, r#""outcome":"absent""#));
    let (_, stdout, _) = run(&[&gz]);
    assert!(
        stdout.contains(r#""outcome":"error","kind":"invalid_json""#),
        "{stdout}"
    );
    let form = dir.file(
        "form.txt",
        b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b--\r\n",
    );
    let (status, stdout, _) = run(&[
        "--content-type",
        "multipart/form-data; boundary=b",
        "--chunk",
        "3",
        &form,
    ]);
    assert_eq!(status, 0);
    assert_eq!(
        stdout.trim_end(),
        json(&form, r#""outcome":"found","model":"whisper-1""#)
    );
    let (status, _, stderr) = run(&["--encoding"]);
    assert_eq!(status, 64);
    assert!(stderr.contains("--encoding"), "{stderr}");
}
