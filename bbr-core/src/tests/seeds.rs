//! Hand-written seeds: every outcome and every error kind, with the exact
//! offset, per duplicate-key policy. Each seed runs under every chunking of
//! [`check_all_chunkings`] (every split, every pair of splits, chunk sizes
//! 1..=64), in fast and reference mode, plain and padded with leading
//! whitespace.

use bytes::Bytes;

use super::harness::{POLICIES, check_all_chunkings};
use crate::{DuplicateKeys, ErrorKind, ExtractError, FieldName, Limits, Model, Outcome};

#[derive(Debug, Clone, Copy)]
enum Want {
    Found(&'static str),
    Absent,
    Error(ErrorKind, u64),
}

impl Want {
    fn verdict(self, shift: u64) -> Result<Outcome, ExtractError> {
        match self {
            Want::Found(name) => Ok(Outcome::Found(Model::new_unchecked_utf8(
                Bytes::from_static(name.as_bytes()),
                false,
            ))),
            Want::Absent => Ok(Outcome::Absent),
            Want::Error(kind, offset) => Err(ExtractError::new(kind, offset + shift)),
        }
    }
}

struct Seed {
    note: &'static str,
    body: &'static [u8],
    limits: Limits,
    reject: Want,
    first_wins: Want,
    last_wins: Want,
}

impl Seed {
    fn want(&self, policy: DuplicateKeys) -> Want {
        match policy {
            DuplicateKeys::FirstWins => self.first_wins,
            DuplicateKeys::LastWins => self.last_wins,
            _ => self.reject,
        }
    }
}

/// The same answer under every policy.
fn all(note: &'static str, body: &'static [u8], want: Want) -> Seed {
    Seed {
        note,
        body,
        limits: Limits::new(),
        reject: want,
        first_wins: want,
        last_wins: want,
    }
}

/// Per policy: reject, first-wins, last-wins.
fn each(
    note: &'static str,
    body: &'static [u8],
    reject: Want,
    first_wins: Want,
    last_wins: Want,
) -> Seed {
    Seed {
        note,
        body,
        limits: Limits::new(),
        reject,
        first_wins,
        last_wins,
    }
}

fn with_limits(limits: Limits, seed: Seed) -> Seed {
    Seed { limits, ..seed }
}

use ErrorKind as K;
use Want::{Absent, Error, Found};

const LONG_257: &[u8] = concat!(
    r#"{"model":""#,
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "a",
    r#""}"#
)
.as_bytes();

const LONG_256: &[u8] = concat!(
    r#"{"model":""#,
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    r#""}"#
)
.as_bytes();

/// `{"a":` then 127 `[` (depth 128 with the root: the limit) or 128 (one past).
fn nested(levels: usize) -> &'static [u8] {
    let mut body = b"{\"a\":".to_vec();
    body.extend(std::iter::repeat_n(b'[', levels));
    body.extend(std::iter::repeat_n(b']', levels));
    body.extend_from_slice(b",\"model\":\"m\"}");
    body.leak()
}

fn seeds() -> Vec<Seed> {
    let m256: &'static str = std::str::from_utf8(&LONG_256[10..266]).expect("ascii");
    vec![
        // Found.
        all(
            "model only",
            br#"{"model":"food-review-1"}"#,
            Found("food-review-1"),
        ),
        all(
            "model after messages",
            br#"{"messages":[{"role":"user","content":"hi"}],"model":"m"}"#,
            Found("m"),
        ),
        all(
            "whitespace everywhere",
            b" \t\r\n{ \"model\" : \"m\" , \"x\" : [ 1 , 2 ] , \"y\" : { } } \n",
            Found("m"),
        ),
        all("escaped key", br#"{"mod\u0065l":"m"}"#, Found("m")),
        all(
            "key fully escaped",
            br#"{"\u006d\u006F\u0064\u0065\u006c":"m"}"#,
            Found("m"),
        ),
        all(
            "escaped model",
            br#"{"model":"a\u00e9\/b"}"#,
            Found("a\u{e9}/b"),
        ),
        all(
            "surrogate pair",
            br#"{"model":"\ud83d\ude00"}"#,
            Found("\u{1f600}"),
        ),
        all(
            "raw utf-8 model",
            "{\"model\":\"日本-é\"}".as_bytes(),
            Found("日本-é"),
        ),
        all(
            "nested model keys are ignored",
            br#"{"messages":[{"model":"nested"}],"tools":{"model":{"model":1}},"model":"top"}"#,
            Found("top"),
        ),
        all(
            "numbers and literals",
            br#"{"a":-0.5e+10,"b":0,"c":1E5,"d":[true,false,null],"e":12.25e-3,"model":"m"}"#,
            Found("m"),
        ),
        all(
            "other strings may hold any valid content",
            b"{\"x\":\"\\u0000\x7f\\n\\\"\xc3\xa9\xf0\x9f\x98\x80\",\"model\":\"m\"}",
            Found("m"),
        ),
        all("model at the length limit", LONG_256, Found(m256)),
        all("nesting at the depth limit", nested(127), Found("m")),
        // Absent.
        all("empty object", b"{}", Absent),
        all("no model", br#"{"messages":[]}"#, Absent),
        all(
            "only nested models",
            br#"{"messages":[{"model":"nested"}],"tools":{"model":"x"}}"#,
            Absent,
        ),
        all(
            "near-miss keys",
            br#"{"mode":"a","model2":"b","Model":"c","mod\u00e9l":"d"}"#,
            Absent,
        ),
        all("raw non-ascii key", "{\"modél\":\"x\"}".as_bytes(), Absent),
        // Duplicates.
        each(
            "duplicate model",
            br#"{"model":"a","model":"b"}"#,
            Error(K::DuplicateModel, 13),
            Found("a"),
            Found("b"),
        ),
        each(
            "duplicate model, escaped",
            br#"{"model":"a","m\u006fdel":"b"}"#,
            Error(K::DuplicateModel, 13),
            Found("a"),
            Found("b"),
        ),
        each(
            "invalid first model, valid last",
            br#"{"model":1,"model":"b"}"#,
            Error(K::ModelNotAString, 9),
            Error(K::ModelNotAString, 9),
            Found("b"),
        ),
        each(
            "valid first model, invalid last",
            br#"{"model":"a","model":1}"#,
            Error(K::DuplicateModel, 13),
            Found("a"),
            Error(K::ModelNotAString, 21),
        ),
        // Model errors.
        all(
            "model is a number",
            br#"{"model":123}"#,
            Error(K::ModelNotAString, 9),
        ),
        all(
            "model is null",
            br#"{"model": null}"#,
            Error(K::ModelNotAString, 10),
        ),
        all(
            "model is a bool",
            br#"{"model":true}"#,
            Error(K::ModelNotAString, 9),
        ),
        all(
            "model is an object",
            br#"{"model":{"model":"m"}}"#,
            Error(K::ModelNotAString, 9),
        ),
        all(
            "model is an array",
            br#"{"model":["m"]}"#,
            Error(K::ModelNotAString, 9),
        ),
        all(
            "model is empty",
            br#"{"model":""}"#,
            Error(K::EmptyModel, 9),
        ),
        all(
            "escaped newline in model",
            br#"{"model":"a\nb"}"#,
            Error(K::ModelControlChar, 11),
        ),
        all(
            "escaped nul in model",
            br#"{"model":"a\u0000"}"#,
            Error(K::ModelControlChar, 11),
        ),
        all(
            "raw del in model",
            b"{\"model\":\"a\x7f\"}",
            Error(K::ModelControlChar, 11),
        ),
        all(
            "escaped del in model",
            br#"{"model":"\u007F"}"#,
            Error(K::ModelControlChar, 10),
        ),
        all(
            "model one past the length limit",
            LONG_257,
            Error(K::ModelTooLong { limit: 256 }, 9),
        ),
        // JSON errors.
        all("empty body", b"", Error(K::UnexpectedEnd, 0)),
        all("whitespace only", b" \n\t ", Error(K::UnexpectedEnd, 4)),
        all(
            "top-level array",
            br#"[{"model":"m"}]"#,
            Error(K::NotAnObject, 0),
        ),
        all(
            "top-level string",
            br#"  "model""#,
            Error(K::NotAnObject, 2),
        ),
        all("top-level number", b"42", Error(K::NotAnObject, 0)),
        all("top-level garbage", b"model=m", Error(K::InvalidJson, 0)),
        all(
            "byte order mark",
            b"\xef\xbb\xbf{\"model\":\"m\"}",
            Error(K::InvalidJson, 0),
        ),
        each(
            "garbage after the object",
            br#"{"model":"m"}x"#,
            Error(K::InvalidJson, 13),
            Found("m"),
            Error(K::InvalidJson, 13),
        ),
        each(
            "second object",
            br#"{"model":"m"} {}"#,
            Error(K::InvalidJson, 14),
            Found("m"),
            Error(K::InvalidJson, 14),
        ),
        each(
            "absent, then garbage",
            br#"{"a":1}]"#,
            Error(K::InvalidJson, 7),
            Absent,
            Error(K::InvalidJson, 7),
        ),
        each(
            "truncated after the model",
            br#"{"model":"m""#,
            Error(K::UnexpectedEnd, 12),
            Found("m"),
            Error(K::UnexpectedEnd, 12),
        ),
        all(
            "truncated inside the model",
            br#"{"model":"m"#,
            Error(K::UnexpectedEnd, 11),
        ),
        all(
            "truncated before the model",
            br#"{"messages":[1,"#,
            Error(K::UnexpectedEnd, 15),
        ),
        each(
            "trailing comma",
            br#"{"model":"m",}"#,
            Error(K::InvalidJson, 13),
            Found("m"),
            Error(K::InvalidJson, 13),
        ),
        each(
            "missing comma",
            br#"{"model":"m" "x":1}"#,
            Error(K::InvalidJson, 13),
            Found("m"),
            Error(K::InvalidJson, 13),
        ),
        all(
            "missing colon",
            br#"{"model" "m"}"#,
            Error(K::InvalidJson, 9),
        ),
        all("single quotes", b"{'model':'m'}", Error(K::InvalidJson, 1)),
        all(
            "raw control char in model",
            b"{\"model\":\"a\x01\"}",
            Error(K::InvalidJson, 11),
        ),
        all(
            "raw newline in a string",
            b"{\"x\":\"a\nb\",\"model\":\"m\"}",
            Error(K::InvalidJson, 7),
        ),
        all("bad literal", br#"{"x":tru}"#, Error(K::InvalidJson, 8)),
        all("leading zero", br#"{"x":01}"#, Error(K::InvalidJson, 6)),
        all("lone minus", br#"{"x":-}"#, Error(K::InvalidJson, 6)),
        all(
            "dot without digits",
            br#"{"x":1.}"#,
            Error(K::InvalidJson, 7),
        ),
        all(
            "exponent without digits",
            br#"{"x":1e+}"#,
            Error(K::InvalidJson, 8),
        ),
        all(
            "mismatched brackets",
            br#"{"x":[1}"#,
            Error(K::InvalidJson, 7),
        ),
        all(
            "unknown escape",
            br#"{"model":"a\qb"}"#,
            Error(K::InvalidEscape, 11),
        ),
        all(
            "short unicode escape",
            br#"{"a":"\u00"}"#,
            Error(K::InvalidEscape, 6),
        ),
        all(
            "lone high surrogate",
            br#"{"model":"\ud800"}"#,
            Error(K::InvalidEscape, 10),
        ),
        all(
            "lone low surrogate",
            br#"{"x":"\udc00"}"#,
            Error(K::InvalidEscape, 6),
        ),
        all(
            "high surrogate then bmp escape",
            br#"{"x":"\ud800\u0041"}"#,
            Error(K::InvalidEscape, 6),
        ),
        all(
            "high surrogate then n escape",
            br#"{"x":"\ud800\n"}"#,
            Error(K::InvalidEscape, 6),
        ),
        all(
            "invalid byte",
            b"{\"x\":\"\xff\"}",
            Error(K::InvalidUtf8, 6),
        ),
        all(
            "truncated sequence",
            b"{\"x\":\"a\xe2\x82\"}",
            Error(K::InvalidUtf8, 7),
        ),
        all(
            "encoded surrogate",
            b"{\"x\":\"\xed\xa0\x80\"}",
            Error(K::InvalidUtf8, 6),
        ),
        all(
            "overlong encoding",
            b"{\"x\":\"\xc0\x80\"}",
            Error(K::InvalidUtf8, 6),
        ),
        all(
            "invalid utf-8 in the model",
            b"{\"model\":\"a\xf5\"}",
            Error(K::InvalidUtf8, 11),
        ),
        all(
            "invalid utf-8 in a key",
            b"{\"\xe0\x80\":1}",
            Error(K::InvalidUtf8, 2),
        ),
        all(
            "utf-8 error before a control char",
            b"{\"x\":\"\xe2\x01\"}",
            Error(K::InvalidUtf8, 6),
        ),
        all(
            "control char before a utf-8 error",
            b"{\"x\":\"\x01\xff\"}",
            Error(K::InvalidJson, 6),
        ),
        all(
            "nesting one past the depth limit",
            nested(128),
            Error(K::TooDeep { limit: 128 }, 132),
        ),
        // Limits other than the defaults.
        with_limits(
            Limits::new().with_max_scan_bytes(12),
            each(
                "decision needs exactly the scan limit",
                br#"{"model":"m"}"#,
                Found("m"),
                Found("m"),
                Error(K::ScanLimit { limit: 12 }, 12),
            ),
        ),
        with_limits(
            Limits::new().with_max_scan_bytes(11),
            all(
                "decision needs one byte past the scan limit",
                br#"{"model":"m"}"#,
                Error(K::ScanLimit { limit: 11 }, 11),
            ),
        ),
        with_limits(
            Limits::new().with_max_scan_bytes(13),
            each(
                "last-wins needs the whole body within the scan limit",
                br#"{"model":"m"} "#,
                Found("m"),
                Found("m"),
                Error(K::ScanLimit { limit: 13 }, 13),
            ),
        ),
        with_limits(
            Limits::new().with_max_body_bytes(13),
            all(
                "body exactly at the body limit",
                br#"{"model":"m"}"#,
                Found("m"),
            ),
        ),
        with_limits(
            Limits::new().with_max_body_bytes(13),
            all(
                "body one past the body limit (also after a decision)",
                br#"{"model":"m"} "#,
                Error(K::BodyTooLarge { limit: 13 }, 13),
            ),
        ),
        with_limits(
            Limits::new().with_max_body_bytes(5).with_max_scan_bytes(5),
            all(
                "both limits at the same byte: the body limit wins",
                br#"{"model":"m"}"#,
                Error(K::BodyTooLarge { limit: 5 }, 5),
            ),
        ),
        with_limits(
            Limits::new().with_max_model_len(3),
            all(
                "model at a custom length limit",
                br#"{"model":"a\u00e9"}"#,
                Found("a\u{e9}"),
            ),
        ),
        with_limits(
            Limits::new().with_max_model_len(2),
            all(
                "escaped model one past a custom length limit",
                br#"{"model":"a\u00e9"}"#,
                Error(K::ModelTooLong { limit: 2 }, 9),
            ),
        ),
        with_limits(
            Limits::new().with_max_depth(2),
            all(
                "depth 2 at the limit",
                br#"{"a":{},"model":"m"}"#,
                Found("m"),
            ),
        ),
        with_limits(
            Limits::new().with_max_depth(2),
            all(
                "depth 3 one past the limit",
                br#"{"a":[[]]}"#,
                Error(K::TooDeep { limit: 2 }, 6),
            ),
        ),
        // What a model name is: trimmed, not empty, no C0/DEL/C1.
        all(
            "spaces around the model are trimmed",
            br#"{"model":"  food-review-1 "}"#,
            Found("food-review-1"),
        ),
        all(
            "escaped tabs and spaces around the model are trimmed",
            br#"{"model":"\t\u0020m \t\u0009"}"#,
            Found("m"),
        ),
        all(
            "spaces inside the model are kept",
            br#"{"model":" a b "}"#,
            Found("a b"),
        ),
        all(
            "only spaces is empty",
            br#"{"model":"   "}"#,
            Error(K::EmptyModel, 9),
        ),
        all(
            "only tabs and spaces is empty",
            br#"{"model":"\t \t"}"#,
            Error(K::EmptyModel, 9),
        ),
        all(
            "a tab inside the model",
            br#"{"model":"a\tb"}"#,
            Error(K::ModelControlChar, 11),
        ),
        all(
            "a tab inside the model, spaces after it",
            br#"{"model":"a \t  \tb"}"#,
            Error(K::ModelControlChar, 12),
        ),
        all(
            "raw C1 control in the model",
            b"{\"model\":\"a\xc2\x85b\"}",
            Error(K::ModelControlChar, 11),
        ),
        all(
            "escaped C1 control in the model",
            br#"{"model":"a\u009F"}"#,
            Error(K::ModelControlChar, 11),
        ),
        all(
            "the first code point after C1 is fine",
            b"{\"model\":\"a\xc2\xa0\"}",
            Found("a\u{a0}"),
        ),
        all(
            "a C1 control elsewhere is fine",
            b"{\"x\":\"\xc2\x85\",\"model\":\"m\"}",
            Found("m"),
        ),
        each(
            "padded duplicate under last-wins",
            br#"{"model":" a","model":"b "}"#,
            Error(K::DuplicateModel, 14),
            Found("a"),
            Found("b"),
        ),
        each(
            "an earlier empty model is forgotten under last-wins",
            br#"{"model":"  ","model":"b"}"#,
            Error(K::EmptyModel, 9),
            Error(K::EmptyModel, 9),
            Found("b"),
        ),
        with_limits(
            Limits::new().with_max_model_len(3),
            all(
                "the length limit counts the spaces",
                br#"{"model":" abc"}"#,
                Error(K::ModelTooLong { limit: 3 }, 9),
            ),
        ),
        with_limits(
            Limits::new().with_max_model_len(4),
            all(
                "padded model exactly at the length limit",
                br#"{"model":" abc"}"#,
                Found("abc"),
            ),
        ),
        with_limits(
            Limits::new().with_max_model_len(2),
            all(
                "too long before the control character",
                b"{\"model\":\"abc\xc2\x85\"}",
                Error(K::ModelTooLong { limit: 2 }, 9),
            ),
        ),
        with_limits(
            Limits::new().with_max_model_len(2),
            all(
                "a tab inside the name before the byte past the limit",
                br#"{"model":"a\tb"}"#,
                Error(K::ModelControlChar, 11),
            ),
        ),
        with_limits(
            Limits::new().with_max_model_len(2),
            all(
                "a trailing tab then a space past the limit",
                br#"{"model":"a\t "}"#,
                Error(K::ModelTooLong { limit: 2 }, 9),
            ),
        ),
        // Another field name.
        with_limits(
            Limits::new().with_field(FieldName::new("model_name").unwrap()),
            each(
                "a configured field name, escaped in the body",
                br#"{"model":"a","model_n\u0061me":" b ","mode":1}"#,
                Found("b"),
                Found("b"),
                Found("b"),
            ),
        ),
        with_limits(
            Limits::new().with_field(FieldName::new("model_name").unwrap()),
            each(
                "a configured field name first, then a duplicate",
                br#"{"model_name":"b","model_name":"c"}"#,
                Error(K::DuplicateModel, 18),
                Found("b"),
                Found("c"),
            ),
        ),
        with_limits(
            Limits::new().with_field(FieldName::new("model_name").unwrap()),
            all(
                "a configured field name absent (model does not count)",
                br#"{"model":"a","model_nam":"b"}"#,
                Absent,
            ),
        ),
        with_limits(
            Limits::new().with_field(FieldName::new("\u{65e5}\u{672c}").unwrap()),
            all(
                "a non-ASCII field name, escaped in the body",
                b"{\"\\u65e5\xe6\x9c\xac\":\"m\"}",
                Found("m"),
            ),
        ),
        with_limits(
            Limits::new().with_field(FieldName::new("m").unwrap()),
            all(
                "a one-byte field name is not a prefix match",
                br#"{"model":"a","m":"b"}"#,
                Found("b"),
            ),
        ),
        with_limits(
            Limits::new().with_max_depth(0),
            all(
                "depth 0 refuses the root",
                br#"{}"#,
                Error(K::TooDeep { limit: 0 }, 0),
            ),
        ),
    ]
}

#[test]
fn every_seed_gives_its_verdict_under_every_chunking() {
    for seed in seeds() {
        for policy in POLICIES {
            let limits = seed.limits.with_duplicate_keys(policy);
            let expected = seed.want(policy).verdict(0);
            check_all_chunkings(seed.body, limits, &expected, 64);
        }
        let _ = seed.note;
    }
}

#[test]
fn padded_seeds_shift_their_offsets() {
    for seed in seeds().into_iter().filter(|s| s.limits == Limits::new()) {
        let mut body = b" \r\n\t".to_vec();
        body.extend_from_slice(seed.body);
        for policy in POLICIES {
            let expected = seed.want(policy).verdict(4);
            check_all_chunkings(&body, seed.limits.with_duplicate_keys(policy), &expected, 0);
        }
    }
}

#[test]
fn seeds_cover_every_error_kind_and_outcome() {
    let mut names: Vec<&str> = seeds()
        .iter()
        .flat_map(|s| [s.reject, s.first_wins, s.last_wins])
        .map(|want| match want {
            Found(_) => "found",
            Absent => "absent",
            Error(kind, _) => kind.as_str(),
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut all_kinds = vec![
        "found",
        "absent",
        K::InvalidJson.as_str(),
        K::InvalidEscape.as_str(),
        K::InvalidUtf8.as_str(),
        K::UnexpectedEnd.as_str(),
        K::NotAnObject.as_str(),
        K::TooDeep { limit: 0 }.as_str(),
        K::ModelNotAString.as_str(),
        K::EmptyModel.as_str(),
        K::ModelControlChar.as_str(),
        K::ModelTooLong { limit: 0 }.as_str(),
        K::DuplicateModel.as_str(),
        K::ScanLimit { limit: 0 }.as_str(),
        K::BodyTooLarge { limit: 0 }.as_str(),
    ];
    all_kinds.sort_unstable();
    assert_eq!(names, all_kinds);
}

#[test]
fn a_million_open_brackets_are_too_deep_without_recursion() {
    let mut body = b"{\"a\":".to_vec();
    body.extend(std::iter::repeat_n(b'[', 1_000_000));
    let body = Bytes::from(body);
    let err = crate::extract_model(&body, &Limits::new()).unwrap_err();
    assert_eq!(err, ExtractError::new(K::TooDeep { limit: 128 }, 5 + 127));
    // With the limit lifted the same body is read to its end: still no
    // recursion, and the truncation is reported.
    let unlimited = Limits::new().with_max_depth(u32::MAX);
    let err = crate::extract_model(&body, &unlimited).unwrap_err();
    assert_eq!(err, ExtractError::new(K::UnexpectedEnd, body.len() as u64));
}

/// Long strings exercise the word- and block-wise fast paths (8-byte
/// words, 64-byte blocks, runs of non-ASCII characters): one defect planted at every
/// position of a long value must be reported at exactly that offset, in
/// fast and reference mode, whatever the chunking.
#[test]
fn defects_in_long_strings_are_reported_at_their_exact_offset() {
    let filler =
        "lorem ipsum \\\"dolor\\\" sit caf\u{e9} \\u00e9 \u{65e5}\u{672c} \\ud83d\\ude00 amet, "
            .repeat(4);
    let head = r#"{"messages":[{"role":"user","content":""#;
    let tail = r#""}],"model":"m"}"#;
    let body = format!("{head}{filler}{tail}");
    let valid = body.as_bytes();
    check_all_chunkings(valid, Limits::new(), &Want::Found("m").verdict(0), 0);
    let defects: [(&[u8], ErrorKind); 4] = [
        (b"\x01", K::InvalidJson),
        (b"\xff", K::InvalidUtf8),
        (b"\xe6\x97", K::InvalidUtf8),
        (b"\\x", K::InvalidEscape),
    ];
    let content = head.len()..head.len() + filler.len();
    let mut checked = 0;
    for at in content.clone().step_by(3) {
        // Only at character boundaries of the filler.
        if !filler.is_char_boundary(at - head.len()) {
            continue;
        }
        for (defect, kind) in defects {
            let mut broken = valid[..at].to_vec();
            broken.extend_from_slice(defect);
            broken.extend_from_slice(&valid[at..]);
            // An escape cut in half by the defect is reported at its own
            // backslash: plant defects only where the previous escape is
            // complete (the seed table covers escapes themselves).
            let before = &valid[content.start..at];
            let trailing_backslashes = before.iter().rev().take_while(|&&b| b == b'\\').count();
            let in_unicode_escape = before.len() >= 2
                && before[before.len().saturating_sub(5)..].contains(&b'u')
                && before[before.len().saturating_sub(6)..].contains(&b'\\');
            if trailing_backslashes % 2 == 1 || in_unicode_escape {
                continue;
            }
            checked += 1;
            let expected = Err(ExtractError::new(kind, at as u64));
            for reference in [false, true] {
                for size in [1, 7, 31, 32, 33, 64, 4096] {
                    let cuts: Vec<usize> = (size..broken.len()).step_by(size).collect();
                    let chunks = super::harness::split(&broken, &cuts);
                    let got = super::harness::drive(&chunks, Limits::new(), reference);
                    assert_eq!(
                        got, expected,
                        "defect {defect:?} at {at}, chunks of {size}, reference {reference}"
                    );
                }
            }
        }
    }
    assert!(checked > 200, "only {checked} placements checked");
}
