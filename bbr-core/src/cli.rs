//! The logic behind the `extract` example (kept here, in the library, so
//! it is tested directly; the example's `main` only calls [`run`]).
//!
//! `cargo run --release -p bbr-core --example extract -- [--chunk N]
//! [--policy reject|first-wins|last-wins] FILE...` prints one JSON object
//! per line and file, the verdict after the whole file was fed:
//!
//! - `{"file":F,"outcome":"found","model":M}`
//! - `{"file":F,"outcome":"absent"}`
//! - `{"file":F,"outcome":"error","kind":K,"offset":N}` with `K` from
//!   [`ErrorKind::as_str`](crate::ErrorKind::as_str).
//!
//! A file that cannot be read gets a message on stderr instead, and the
//! exit status is 2; bad arguments give the usage and status 64.
//! Otherwise the status is 0, whatever the verdicts.

use std::io::{self, Read, Write};

use bytes::Bytes;

use crate::{DuplicateKeys, ExtractError, Limits, ModelExtractor, Outcome};

/// Default chunk size when `--chunk` is not given: 64 KiB.
pub const DEFAULT_CHUNK: usize = 64 * 1024;

/// The usage line.
pub const USAGE: &str = "usage: extract [--chunk N] [--policy reject|first-wins|last-wins] FILE...";

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Bytes per fed chunk (at least 1).
    pub chunk: usize,
    /// The duplicate-key policy.
    pub policy: DuplicateKeys,
    /// The files, in order.
    pub files: Vec<String>,
}

/// Parses the arguments (without the program name).
///
/// ```
/// use bbr_core::cli::{Args, parse_args};
/// use bbr_core::DuplicateKeys;
/// let args = parse_args(["--chunk", "1", "--policy", "last-wins", "a.json"].map(String::from)).unwrap();
/// assert_eq!(args, Args { chunk: 1, policy: DuplicateKeys::LastWins, files: vec!["a.json".into()] });
/// assert!(parse_args(["--chunk", "0", "a.json"].map(String::from)).is_err());
/// ```
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        chunk: DEFAULT_CHUNK,
        policy: DuplicateKeys::Reject,
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
///
/// ```
/// use bbr_core::cli::extract_reader;
/// use bbr_core::Limits;
/// let verdict = extract_reader(&br#"{"model":"m"}"#[..], 1, Limits::new()).unwrap();
/// assert_eq!(verdict.unwrap().model().unwrap().as_str(), "m");
/// ```
pub fn extract_reader(
    mut reader: impl Read,
    chunk: usize,
    limits: Limits,
) -> io::Result<Result<Outcome, ExtractError>> {
    let mut extractor = ModelExtractor::new(limits);
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
///
/// ```
/// let mut out = String::new();
/// bbr_core::cli::push_json_string(&mut out, "a\"b\\c\n\u{1}é");
/// assert_eq!(out, r#""a\"b\\c\n\u0001é""#);
/// ```
pub fn push_json_string(out: &mut String, s: &str) {
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
///
/// ```
/// use bbr_core::cli::verdict_line;
/// use bbr_core::{ErrorKind, ExtractError};
/// let line = verdict_line("a.json", &Err(ExtractError::new(ErrorKind::UnexpectedEnd, 7)));
/// assert_eq!(line, r#"{"file":"a.json","outcome":"error","kind":"unexpected_end","offset":7}"#);
/// ```
pub fn verdict_line(file: &str, verdict: &Result<Outcome, ExtractError>) -> String {
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
///
/// ```
/// let mut out = Vec::new();
/// let mut err = Vec::new();
/// let status = bbr_core::cli::run(["--chunk".to_owned()], &mut out, &mut err);
/// assert_eq!(status, 64);
/// assert!(String::from_utf8(err).unwrap().contains("usage"));
/// ```
pub fn run(
    args: impl IntoIterator<Item = String>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> i32 {
    let args = match parse_args(args) {
        Ok(args) => args,
        Err(problem) => {
            let _ = writeln!(err, "extract: {problem}\n{USAGE}");
            return 64;
        }
    };
    let limits = Limits::new().with_duplicate_keys(args.policy);
    let mut status = 0;
    for file in &args.files {
        let verdict = std::fs::File::open(file).and_then(|f| extract_reader(f, args.chunk, limits));
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
