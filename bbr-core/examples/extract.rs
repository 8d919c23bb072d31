//! `extract [--chunk N] [--policy reject|first-wins|last-wins] [--field NAME]
//! [--content-type VALUE] [--encoding VALUE] FILE...`:
//! the black-box interface of bbr-core.
//!
//! `cargo run --release -p bbr-core --example extract -- [--chunk N]
//! [--policy reject|first-wins|last-wins] [--field NAME] [--content-type
//! VALUE] [--encoding VALUE] FILE...` prints one JSON object per line and
//! file, the verdict after the whole file was fed in `N`-byte chunks (64 KiB
//! by default) to `BodyExtractor`, with `VALUE`s as the `Content-Type` and
//! `Content-Encoding` headers (a form: `--content-type
//! 'multipart/form-data; boundary=...'`; a compressed file: `--encoding
//! gzip`). An encoding that is not decoded gives `absent`, as adapters
//! treat it:
//!
//! - `{"file":F,"outcome":"found","model":M}`
//! - `{"file":F,"outcome":"absent"}`
//! - `{"file":F,"outcome":"error","kind":K,"offset":N}` with `K` from
//!   `ErrorKind::as_str`.
//!
//! A file that cannot be read gets a message on stderr instead, and the
//! exit status is 2; bad arguments give the usage and status 64.
//! Otherwise the status is 0, whatever the verdicts. This format is
//! stable; `tests/cli.rs` runs the built example against it.

use std::io::{self, Read, Write};

use bbr_core::{BodyExtractor, DuplicateKeys, ExtractError, FieldName, Limits, Outcome};
use bytes::Bytes;

/// Default chunk size when `--chunk` is not given: 64 KiB.
const DEFAULT_CHUNK: usize = 64 * 1024;

/// The usage line.
const USAGE: &str = "usage: extract [--chunk N] [--policy reject|first-wins|last-wins] \
                     [--field NAME] [--content-type VALUE] [--encoding VALUE] FILE...";

/// Parsed command line.
#[derive(Debug)]
struct Args {
    /// Bytes per fed chunk (at least 1).
    chunk: usize,
    /// The duplicate-key policy.
    policy: DuplicateKeys,
    /// The top-level key to read (`model` unless `--field` is given).
    field: FieldName,
    /// The `Content-Type` header value, if given.
    content_type: Option<String>,
    /// The `Content-Encoding` header value, if given.
    encoding: Option<String>,
    /// The files, in order.
    files: Vec<String>,
}

/// Parses the arguments (without the program name).
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        chunk: DEFAULT_CHUNK,
        policy: DuplicateKeys::Reject,
        field: FieldName::MODEL,
        content_type: None,
        encoding: None,
        files: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--chunk" => {
                let value = args.next().ok_or("--chunk needs a value")?;
                parsed.chunk = match value.parse() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("--chunk: not a positive number: {value}")),
                };
            }
            "--policy" => {
                let value = args.next().ok_or("--policy needs a value")?;
                parsed.policy = value.parse().map_err(|e| format!("--policy: {e}"))?;
            }
            "--field" => {
                let value = args.next().ok_or("--field needs a value")?;
                parsed.field = value.parse().map_err(|e| format!("--field: {e}"))?;
            }
            "--content-type" => {
                parsed.content_type = Some(args.next().ok_or("--content-type needs a value")?);
            }
            "--encoding" => {
                parsed.encoding = Some(args.next().ok_or("--encoding needs a value")?);
            }
            "--" => parsed.files.extend(args.by_ref()),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => parsed.files.push(arg),
        }
    }
    if parsed.files.is_empty() {
        return Err("no FILE given".to_owned());
    }
    Ok(parsed)
}

/// Feeds everything `reader` yields in `chunk`-byte chunks (each a fresh
/// `Bytes`), then finishes. The verdict is the one after the whole input,
/// as an adapter that forwards the body would see it.
fn extract_reader(
    mut reader: impl Read,
    args: &Args,
    limits: Limits,
) -> io::Result<Result<Outcome, ExtractError>> {
    let mut extractor = BodyExtractor::for_content(
        args.content_type.as_deref().map(str::as_bytes),
        args.encoding.as_deref().map(str::as_bytes),
        limits,
    );
    let chunk = args.chunk;
    let mut buf = vec![0u8; chunk.max(1)];
    loop {
        // Fill the whole chunk (a reader may return less), so `--chunk N`
        // means exactly N bytes per feed.
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(extractor.finish());
        }
        if let Err(error) = extractor.feed(&Bytes::copy_from_slice(&buf[..filled])) {
            return Ok(Err(error));
        }
    }
}

/// Appends `s` as a JSON string literal (quotes included).
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || c == '\u{7f}' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The output line for one file (without the newline).
fn verdict_line(file: &str, verdict: &Result<Outcome, ExtractError>) -> String {
    let mut line = String::from("{\"file\":");
    push_json_string(&mut line, file);
    match verdict {
        Ok(Outcome::Found(model)) => {
            line.push_str(",\"outcome\":\"found\",\"model\":");
            push_json_string(&mut line, model.as_str());
        }
        Ok(_) => line.push_str(",\"outcome\":\"absent\""),
        Err(error) => {
            line.push_str(",\"outcome\":\"error\",\"kind\":");
            push_json_string(&mut line, error.kind().as_str());
            line.push_str(&format!(",\"offset\":{}", error.offset()));
        }
    }
    line.push('}');
    line
}

/// Runs the command: one line per file on `out`, problems on `err`.
/// Returns the exit status.
fn run(args: impl IntoIterator<Item = String>, out: &mut impl Write, err: &mut impl Write) -> i32 {
    let args = match parse_args(args) {
        Ok(args) => args,
        Err(problem) => {
            let _ = writeln!(err, "extract: {problem}\n{USAGE}");
            return 64;
        }
    };
    let limits = Limits::new()
        .with_duplicate_keys(args.policy)
        .with_field(args.field);
    let mut status = 0;
    for file in &args.files {
        let verdict = std::fs::File::open(file).and_then(|f| extract_reader(f, &args, limits));
        let written = match verdict {
            Ok(verdict) => writeln!(out, "{}", verdict_line(file, &verdict)),
            Err(problem) => {
                status = 2;
                writeln!(err, "extract: {file}: {problem}")
            }
        };
        if written.is_err() {
            return 1;
        }
    }
    status
}

fn main() {
    let status = run(
        std::env::args().skip(1),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(status);
}
