//! The checks behind bbr's fuzz targets, as plain functions.
//!
//! The fuzz binaries (`fuzz_targets/*.rs`, built by cargo-fuzz with the
//! `libfuzzer` feature) only call these functions, so the stable test
//! `tests/corpus.rs` replays the checked-in corpus and every saved crash
//! through exactly the same code without libFuzzer or nightly.
//!
//! Each check panics (that is how a fuzzer learns of a failure) when bbr-core
//! breaks its contract:
//!
//! - [`check_oneshot`]: any bytes, every duplicate-key policy. Never a panic;
//!   every found model is a valid model; when serde_json parses the input,
//!   bbr agrees with it (see [`expected`] for the exact rules, including the
//!   duplicate-key policies); when serde_json finds a syntax error, the
//!   validating policies (`reject`, `last-wins`) report an error too.
//! - [`check_chunked`]: the first bytes choose chunk boundaries; the chunked
//!   verdict (model, or error kind and offset) equals the one-shot verdict,
//!   and the `feed` protocol holds (one decision, sticky errors, zero-copy
//!   models point into a chunk).
//! - [`check_replay`]: the same split header (bit 5 adds trailers); the body
//!   goes through the bbr-tower layer; the inner service must get exactly
//!   the input frames (same `Bytes`, same boundaries) and trailers with the
//!   right header, or the request is refused with the right status, or the
//!   forwarded frames are a prefix ended by the same error as the one-shot
//!   verdict.
//! - [`check_stream`]: the same split header after a setup byte; the body
//!   as `request_body` messages through the bbr-extproc `StreamState` in
//!   every body mode, with the content headers bits 2–4 of the split
//!   header pick (none, forms, gzip, zstd, br, a gzip form, an encoding not
//!   decoded): no panic, chunk bytes forwarded in order, the decision
//!   equals the core's `BodyExtractor` on the whole body.

//! - [`check_body`]: byte 0 picks a form or compressed content type and a
//!   policy, then the split header; the verdict through `BodyExtractor`
//!   must not depend on the cuts.
//! - [`check_splice`]: a target length byte and the target, then the split
//!   header; the found model's token replaced by the target through the
//!   `bbr_core::rewrite` splicer: only that token changes, serde_json
//!   agrees, and untouched bytes are slices of the input.
//! - [`check_spool`]: a threshold, a read size, then steps (holds, write
//!   completions and failures) through `bbr_core::spool::Spool`: memory,
//!   then the file, then the unwritten chunks is what went in, in order,
//!   and the spool's memory cost stays bounded.

mod body;
mod replay;
mod splice;
mod spool;
mod stream;

pub use body::check_body;
pub use replay::check_replay;
pub use splice::check_splice;
pub use spool::check_spool;
pub use stream::check_stream;

use std::fmt;

use bbr_core::{
    DuplicateKeys, ExtractError, Limits, Model, ModelExtractor, Outcome, Progress, extract_model,
};
use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// Inputs longer than this are ignored (as agentgateway's targets do): the
/// interesting structure of a body fits in a few KiB, and short inputs keep
/// the fuzzer fast.
pub const MAX_INPUT: usize = 64 * 1024;

/// Every duplicate-key policy, each checked on every input.
pub const POLICIES: [DuplicateKeys; 3] = [
    DuplicateKeys::Reject,
    DuplicateKeys::FirstWins,
    DuplicateKeys::LastWins,
];

/// The default limits with `policy`.
pub fn limits(policy: DuplicateKeys) -> Limits {
    Limits::new().with_duplicate_keys(policy)
}

/// What serde_json says about a body.
#[derive(Debug, Clone, PartialEq)]
pub enum Oracle {
    /// A valid JSON object; the values of its top-level `model` keys, in
    /// order (keys compared after unescaping).
    Object(Vec<Value>),
    /// Valid JSON, but the top-level value is not an object.
    NotAnObject,
    /// A syntax error, bad escape, bad UTF-8 or truncation (bbr must refuse
    /// it under the validating policies).
    Invalid,
    /// serde_json refused it for a reason of its own that JSON does not
    /// impose (its 128-level recursion limit, numbers out of `f64` range, a
    /// byte order mark): no claim is made.
    NoClaim,
}

/// Reads `body` with serde_json.
///
/// serde_json's `Value` keeps the **last** of duplicate keys (its map insert
/// overwrites); the list of every top-level `model` comes from a visitor that
/// sees each key once, unescaped, in order.
pub fn oracle(body: &[u8]) -> Oracle {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => {
            let models = serde_json::from_slice::<TopLevelModels>(body)
                .expect("a body serde_json parsed as an object parses again")
                .0;
            // serde_json keeps the last duplicate: the oracle relies on it.
            assert_eq!(
                map.get("model"),
                models.last(),
                "serde_json duplicate-key rule"
            );
            Oracle::Object(models)
        }
        Ok(_) => Oracle::NotAnObject,
        Err(error) => {
            let message = error.to_string();
            let serde_only = message.contains("recursion limit exceeded")
                || message.contains("number out of range")
                || body.starts_with(b"\xEF\xBB\xBF");
            if serde_only {
                Oracle::NoClaim
            } else {
                Oracle::Invalid
            }
        }
    }
}

/// The values of every top-level `model` key of an object, in order.
#[derive(Debug)]
struct TopLevelModels(Vec<Value>);

impl<'de> Deserialize<'de> for TopLevelModels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ModelsVisitor;
        impl<'de> Visitor<'de> for ModelsVisitor {
            type Value = TopLevelModels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevelModels, A::Error> {
                let mut models = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "model" {
                        models.push(map.next_value::<Value>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(TopLevelModels(models))
            }
        }
        deserializer.deserialize_map(ModelsVisitor)
    }
}

/// What bbr must answer for a valid object under one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// This model.
    Found(String),
    /// No top-level `model`.
    Absent,
    /// An error of one of these kinds (`ErrorKind::as_str`); more than one
    /// only where the contract does not fix the order of two checks (a model
    /// both too long and holding a control character).
    Error(Vec<&'static str>),
}

/// The contract's answer for an object whose top-level `model` values are
/// `models` (in order) under `policy`, with the default `max_model_len`:
///
/// - `reject`: the first value is validated; a second `model` key is
///   `duplicate_model`;
/// - `first-wins`: the first value is validated, the others ignored;
/// - `last-wins`: only the last value counts (serde_json's, Go's and
///   Python's rule), earlier ones are ignored whatever their type.
pub fn expected(models: &[Value], policy: DuplicateKeys) -> Expected {
    let Some(first) = models.first() else {
        return Expected::Absent;
    };
    match policy {
        DuplicateKeys::LastWins => validate(models.last().expect("not empty")),
        DuplicateKeys::Reject => match validate(first) {
            Expected::Found(_) if models.len() > 1 => Expected::Error(vec!["duplicate_model"]),
            other => other,
        },
        _ => validate(first),
    }
}

/// The model-name rule of the contract, from its definition: spaces and
/// tabs around the name are trimmed; no control character may remain (a
/// tab inside the name is one); at most `max_model_len` bytes counted
/// before trimming; not empty after it.
fn validate(value: &Value) -> Expected {
    let Value::String(model) = value else {
        return Expected::Error(vec!["model_not_a_string"]);
    };
    let name = model.trim_matches([' ', '\t']);
    let mut kinds = Vec::new();
    if name.chars().any(is_control) {
        kinds.push("model_control_char");
    }
    if model.len() > Limits::DEFAULT_MAX_MODEL_LEN {
        kinds.push("model_too_long");
    }
    if !kinds.is_empty() {
        Expected::Error(kinds)
    } else if name.is_empty() {
        Expected::Error(vec!["empty_model"])
    } else {
        Expected::Found(name.to_owned())
    }
}

/// The contract's control characters: C0, DEL and C1 (U+0080–U+009F).
fn is_control(c: char) -> bool {
    c < ' ' || ('\u{7f}'..='\u{9f}').contains(&c)
}

/// Panics unless `model` is a valid model (non-empty, no control character,
/// at most the default length), and, when it claims to be shared, unless it
/// lies inside one of `chunks`.
fn assert_valid_model(model: &Model, chunks: &[Bytes], context: &dyn fmt::Display) {
    let text = model.as_str();
    assert!(!text.is_empty(), "{context}: empty model found");
    assert!(
        !text.chars().any(is_control),
        "{context}: model with a control character found: {text:?}"
    );
    assert!(
        text.len() <= Limits::DEFAULT_MAX_MODEL_LEN,
        "{context}: model of {} bytes found",
        text.len()
    );
    if model.is_shared() {
        let start = model.as_bytes().as_ptr() as usize;
        let end = start + model.as_bytes().len();
        let inside = chunks.iter().any(|chunk| {
            let chunk_start = chunk.as_ptr() as usize;
            chunk_start <= start && end <= chunk_start + chunk.len()
        });
        assert!(
            inside,
            "{context}: shared model does not point into an input chunk"
        );
    }
}

fn describe(result: &Result<Outcome, ExtractError>) -> String {
    match result {
        Ok(Outcome::Found(model)) => format!("found {:?}", model.as_str()),
        Ok(Outcome::Absent) => "absent".to_owned(),
        Ok(other) => format!("{other:?}"),
        Err(error) => format!("error {} at {}", error.kind().as_str(), error.offset()),
    }
}

/// The `extract_oneshot` target: see the crate docs.
pub fn check_oneshot(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let body = Bytes::copy_from_slice(data);
    let oracle = oracle(data);
    for policy in POLICIES {
        let context = format!("policy {}", policy.as_str());
        let result = extract_model(&body, &limits(policy));
        if let Ok(Outcome::Found(model)) = &result {
            assert_valid_model(model, std::slice::from_ref(&body), &context);
        }
        let got = describe(&result);
        match &oracle {
            Oracle::Object(models) => match expected(models, policy) {
                Expected::Found(model) => assert!(
                    matches!(&result, Ok(Outcome::Found(m)) if m.as_str() == model),
                    "{context}: expected found {model:?}, got {got}"
                ),
                Expected::Absent => assert!(
                    matches!(&result, Ok(Outcome::Absent)),
                    "{context}: expected absent, got {got}"
                ),
                Expected::Error(kinds) => assert!(
                    matches!(&result, Err(e) if kinds.contains(&e.kind().as_str())),
                    "{context}: expected an error in {kinds:?}, got {got}"
                ),
            },
            Oracle::NotAnObject => assert!(
                matches!(&result, Err(e) if e.kind().as_str() == "not_an_object"),
                "{context}: expected not_an_object, got {got}"
            ),
            Oracle::Invalid => {
                // First-wins does not read past the decision, so an invalid
                // tail may go unnoticed; the other policies read it all.
                if policy != DuplicateKeys::FirstWins {
                    assert!(
                        result.is_err(),
                        "{context}: serde_json refuses the body, got {got}"
                    );
                }
            }
            Oracle::NoClaim => {}
        }
    }
}

/// How [`check_chunked`] cuts its input: the chunk sizes and the body.
///
/// Byte 0 is a flags byte: its low two bits + 1 give how many size bytes
/// follow (1 to 4); bit 7 means 1-byte chunks (the size bytes are still
/// consumed); bit 6 inserts an empty chunk after every chunk. Each size byte
/// `b` gives a chunk of `b + 1` bytes, cycling. The rest is the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    /// Chunk sizes, used in a cycle.
    pub sizes: Vec<usize>,
    /// Feed an empty chunk after each chunk.
    pub empty_chunks: bool,
    /// The body to cut.
    pub body: &'a [u8],
}

impl<'a> Split<'a> {
    /// Decodes the header; `None` when the input is too short to hold it.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (&flags, rest) = data.split_first()?;
        let count = usize::from(flags & 3) + 1;
        if rest.len() < count {
            return None;
        }
        let (size_bytes, body) = rest.split_at(count);
        let sizes = if flags & 0x80 != 0 {
            vec![1]
        } else {
            size_bytes.iter().map(|&b| usize::from(b) + 1).collect()
        };
        Some(Self {
            sizes,
            empty_chunks: flags & 0x40 != 0,
            body,
        })
    }

    /// The chunks: slices of `body` (plus empty chunks when asked for).
    pub fn chunks(&self, body: &Bytes) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        let mut start = 0;
        let mut sizes = self.sizes.iter().cycle();
        while start < body.len() {
            let size = *sizes.next().expect("at least one size");
            let end = (start + size).min(body.len());
            chunks.push(body.slice(start..end));
            if self.empty_chunks {
                chunks.push(Bytes::new());
            }
            start = end;
        }
        chunks
    }
}

/// The `extract_chunked` target: see the crate docs and [`Split`].
pub fn check_chunked(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Some(split) = Split::parse(data) else {
        return;
    };
    let body = Bytes::copy_from_slice(split.body);
    let chunks = split.chunks(&body);
    for policy in POLICIES {
        let context = format!("policy {}, chunks {:?}", policy.as_str(), split.sizes);
        let oneshot = extract_model(&body, &limits(policy));
        let chunked = feed_all(&chunks, policy, &context);
        if let Ok(Outcome::Found(model)) = &chunked {
            assert_valid_model(model, &chunks, &context);
        }
        assert!(
            same_outcome(&oneshot, &chunked),
            "{context}: one-shot gave {}, chunked gave {}",
            describe(&oneshot),
            describe(&chunked)
        );
        // The byte-at-a-time reference mode, in the same chunks: it takes
        // none of the fast paths (block skip, nested-value loop,
        // model-first prefix), so any disagreement is theirs.
        let mut reference = ModelExtractor::new_reference(limits(policy));
        let referenced = chunks
            .iter()
            .try_for_each(|chunk| reference.feed(chunk).map(drop))
            .and_then(|()| reference.finish());
        assert!(
            same_outcome(&referenced, &chunked),
            "{context}: reference mode gave {}, fast mode {}",
            describe(&referenced),
            describe(&chunked)
        );
    }
}

/// The same answer: the same model name, both absent, or the same error
/// (kind and offset).
fn same_outcome(a: &Result<Outcome, ExtractError>, b: &Result<Outcome, ExtractError>) -> bool {
    match (a, b) {
        (Ok(Outcome::Found(a)), Ok(Outcome::Found(b))) => a.as_str() == b.as_str(),
        (Ok(Outcome::Absent), Ok(Outcome::Absent)) => true,
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

/// Feeds every chunk and finishes, checking the `feed` protocol on the way;
/// returns the final verdict (the first error, or `finish()`).
fn feed_all(
    chunks: &[Bytes],
    policy: DuplicateKeys,
    context: &str,
) -> Result<Outcome, ExtractError> {
    let mut extractor = ModelExtractor::new(limits(policy));
    let mut decided: Option<Option<Model>> = None;
    let mut fed = 0u64;
    let mut first_error: Option<ExtractError> = None;
    for chunk in chunks {
        let progress = extractor.feed(chunk);
        if let Some(error) = &first_error {
            assert_eq!(
                progress.as_ref().err(),
                Some(error),
                "{context}: errors are sticky"
            );
            continue;
        }
        fed += chunk.len() as u64;
        match progress {
            Err(error) => first_error = Some(error),
            Ok(Progress::NeedMore) => {
                assert!(decided.is_none(), "{context}: NeedMore after the decision");
            }
            Ok(Progress::Decided) => {
                assert!(decided.is_some(), "{context}: Decided before any decision");
            }
            Ok(Progress::Found(model)) => {
                assert!(decided.is_none(), "{context}: a second decision");
                assert_ne!(
                    policy,
                    DuplicateKeys::LastWins,
                    "{context}: last-wins decided early"
                );
                assert_valid_model(&model, chunks, &context);
                decided = Some(Some(model));
            }
            Ok(Progress::Absent) => {
                assert!(decided.is_none(), "{context}: a second decision");
                assert_ne!(
                    policy,
                    DuplicateKeys::LastWins,
                    "{context}: last-wins decided early"
                );
                decided = Some(None);
            }
            Ok(other) => panic!("{context}: unknown progress {other:?}"),
        }
    }
    if let Some(error) = first_error {
        assert_eq!(
            extractor.finish().err(),
            Some(error.clone()),
            "{context}: sticky at finish"
        );
        return Err(error);
    }
    assert_eq!(extractor.bytes_consumed(), fed, "{context}: bytes_consumed");
    let result = extractor.finish();
    if let (Some(early), Ok(outcome)) = (&decided, &result) {
        assert_eq!(
            early.as_ref().map(Model::as_str),
            outcome.model().map(Model::as_str),
            "{context}: finish() contradicts the early decision"
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_json_value_keeps_the_last_duplicate_key() {
        let value: Value = serde_json::from_str(r#"{"model":"a","model":"b"}"#).unwrap();
        assert_eq!(value["model"], "b");
        assert_eq!(
            oracle(br#"{"model":"a","mod\u0065l":"b"}"#),
            Oracle::Object(vec![Value::from("a"), Value::from("b")])
        );
    }

    #[test]
    fn oracle_ignores_nested_models_and_classifies_inputs() {
        assert_eq!(
            oracle(br#"{"messages":[{"model":"x"}],"tools":{"model":"y"}}"#),
            Oracle::Object(vec![])
        );
        assert_eq!(oracle(b"[1,2]"), Oracle::NotAnObject);
        assert_eq!(oracle(br#"{"model":"a""#), Oracle::Invalid);
        assert_eq!(oracle(br#"{"model":"a"} x"#), Oracle::Invalid);
        assert_eq!(oracle(b"{\"model\":\"\\ud800\"}"), Oracle::Invalid);
        assert_eq!(oracle(b"{\"a\":\"\xff\"}"), Oracle::Invalid);
        assert_eq!(oracle(b"{\"a\":1e400}"), Oracle::NoClaim);
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(oracle(deep.as_bytes()), Oracle::NoClaim);
    }

    #[test]
    fn expected_follows_each_duplicate_key_policy() {
        let models = vec![Value::from("a"), Value::from(1), Value::from("c")];
        assert_eq!(
            expected(&models, DuplicateKeys::Reject),
            Expected::Error(vec!["duplicate_model"])
        );
        assert_eq!(
            expected(&models, DuplicateKeys::FirstWins),
            Expected::Found("a".into())
        );
        assert_eq!(
            expected(&models, DuplicateKeys::LastWins),
            Expected::Found("c".into())
        );
        let bad_first = vec![Value::Null, Value::from("b")];
        assert_eq!(
            expected(&bad_first, DuplicateKeys::Reject),
            Expected::Error(vec!["model_not_a_string"])
        );
        assert_eq!(expected(&[], DuplicateKeys::Reject), Expected::Absent);
    }

    #[test]
    fn expected_validates_the_model_value() {
        let check = |v: Value| expected(&[v], DuplicateKeys::Reject);
        assert_eq!(check(Value::from("")), Expected::Error(vec!["empty_model"]));
        assert_eq!(
            check(Value::from("a\u{7f}")),
            Expected::Error(vec!["model_control_char"])
        );
        // C1 controls (U+0080–U+009F) as well; U+00A0 is not one.
        for c1 in ["\u{80}8d", "a\u{9f}"] {
            assert_eq!(
                check(Value::from(c1)),
                Expected::Error(vec!["model_control_char"])
            );
        }
        assert_eq!(
            check(Value::from("a\u{a0}")),
            Expected::Found("a\u{a0}".to_owned())
        );
        // Spaces and tabs around the name are trimmed; inside it a tab is
        // a control character, a space is not.
        assert_eq!(
            check(Value::from("  a b\t ")),
            Expected::Found("a b".to_owned())
        );
        assert_eq!(
            check(Value::from(" a\tb")),
            Expected::Error(vec!["model_control_char"])
        );
        assert_eq!(
            check(Value::from(" \t ")),
            Expected::Error(vec!["empty_model"])
        );
        assert_eq!(
            check(Value::from(format!(" {} ", "a".repeat(255)))),
            Expected::Error(vec!["model_too_long"])
        );
        assert_eq!(
            check(Value::from("a".repeat(256))),
            Expected::Found("a".repeat(256))
        );
        assert_eq!(
            check(Value::from("a".repeat(257))),
            Expected::Error(vec!["model_too_long"])
        );
        assert_eq!(
            check(Value::from(format!("\n{}", "a".repeat(256)))),
            Expected::Error(vec!["model_control_char", "model_too_long"])
        );
        assert_eq!(
            check(Value::Bool(true)),
            Expected::Error(vec!["model_not_a_string"])
        );
    }

    #[test]
    fn split_header_chooses_chunk_sizes() {
        let split = Split::parse(b"\x01\x02\x00{}").unwrap();
        assert_eq!(split.sizes, vec![3, 1]);
        assert_eq!(split.body, b"{}");
        let body = Bytes::from_static(b"{\"model\":\"m\"}");
        let chunks = split.chunks(&body);
        assert_eq!(chunks.concat(), body.to_vec());
        assert_eq!(chunks[0].len(), 3);
        assert_eq!(chunks[1].len(), 1);

        let one_byte = Split::parse(b"\xC0\xFF{}").unwrap();
        assert_eq!(one_byte.sizes, vec![1]);
        let chunks = one_byte.chunks(&body);
        assert_eq!(chunks.len(), 2 * body.len());
        assert!(chunks.iter().skip(1).step_by(2).all(Bytes::is_empty));
        assert_eq!(Split::parse(b"\x03\x01"), None);
    }
}
