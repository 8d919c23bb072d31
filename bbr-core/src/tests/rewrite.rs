//! The splicer against serde_json, under every chunking.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;

use super::harness::{POLICIES, split};
use crate::rewrite::{ModelSplicer, SpliceError, json_string_token, splice};
use crate::{BodyExtractor, DuplicateKeys, Limits, Model, ModelExtractor, Outcome, Progress};

/// Bodies whose `model` token is escaped, padded, first, last, or repeated.
const BODIES: &[&str] = &[
    r#"{"model":"food-review-1"}"#,
    r#"{"mod\u0065l":" a\"b\\c\u00e9\ud83d\ude00 ","n":1}"#,
    r#" {"messages":[{"role":"user","model":"inner","content":"h\u00e9\"llo"}], "model" : "ski\/resorts" , "x":[1.5e3,true,null]}
"#,
    r#"{"stream":false,"model":"ünï-çødé-模型"}"#,
    r#"{"model":"\tspaced\t"}"#,
];

/// Targets that need every kind of escape, and plain ones.
const TARGETS: &[&str] = &[
    "food-review-2",
    "",
    "q\"uote\\back/slash",
    "ctl\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}",
    "模型-é-😀",
    "a longer target name than any original model name in these bodies",
];

/// Extracts over `chunks` with `policy` (fast or reference mode) and
/// returns the decided model, which must carry a span.
fn decide(chunks: &[Bytes], policy: DuplicateKeys, reference: bool) -> Model {
    let limits = Limits::new().with_duplicate_keys(policy);
    let mut extractor = if reference {
        ModelExtractor::new_reference(limits)
    } else {
        ModelExtractor::new(limits)
    };
    let mut early = None;
    for chunk in chunks {
        if let Progress::Found(model) = extractor.feed(chunk).expect("valid body") {
            early = Some(model);
        }
    }
    let Outcome::Found(model) = extractor.finish().expect("valid body") else {
        panic!("no model")
    };
    if let Some(early) = early {
        assert_eq!(early.json_span(), model.json_span());
    }
    model
}

/// The spliced body must parse as the original with only `model` changed,
/// and be byte for byte the original outside the token.
fn check(body: &[u8], chunks: &[Bytes], target: &str, model: &Model) {
    let span = model.json_span().expect("a span");
    let (start, end) = (span.start as usize, span.end as usize);
    let spliced = splice(chunks, span, target).expect("spliced");
    assert!(spliced.chunks().iter().all(|c| !c.is_empty()));
    let out = spliced.clone().into_chunks().concat();
    assert_eq!(spliced.len(), out.len() as u64);
    let mut want = body[..start].to_vec();
    want.extend_from_slice(&json_string_token(target));
    want.extend_from_slice(&body[end..]);
    assert_eq!(out, want, "only the token changes");

    let mut original: Value = serde_json::from_slice(body).expect("original parses");
    let rewritten: Value = serde_json::from_slice(&out).expect("spliced body parses");
    assert_eq!(rewritten["model"], Value::String(target.to_owned()));
    original["model"] = Value::String(target.to_owned());
    assert_eq!(rewritten, original);
}

#[test]
fn every_single_and_double_cut_and_one_byte_chunks() {
    for body in BODIES {
        let body = body.as_bytes();
        let mut chunkings = vec![
            split(body, &[]),
            split(body, &(1..body.len()).collect::<Vec<_>>()),
        ];
        for a in 1..body.len() {
            chunkings.push(split(body, &[a]));
            for b in a + 1..body.len() {
                chunkings.push(split(body, &[a, b]));
            }
        }
        let whole = decide(&chunkings[0], DuplicateKeys::Reject, false);
        for chunks in &chunkings {
            for policy in POLICIES {
                let fast = decide(chunks, policy, false);
                assert_eq!(
                    fast.json_span(),
                    whole.json_span(),
                    "span independent of chunking"
                );
                assert_eq!(decide(chunks, policy, true).json_span(), fast.json_span());
            }
            for target in TARGETS {
                check(body, chunks, target, &whole);
            }
        }
    }
}

#[test]
fn under_last_wins_the_last_token_is_replaced() {
    let body = br#"{"model":"first","n":2,"model":"sec\u006fnd"}"#;
    let model = decide(&[Bytes::from_static(body)], DuplicateKeys::LastWins, false);
    assert_eq!(model.as_str(), "second");
    assert_eq!(model.json_span(), Some(31..44));
    let out = splice(&[Bytes::from_static(body)], 31..44, "t").unwrap();
    assert_eq!(
        out.into_chunks().concat(),
        br#"{"model":"first","n":2,"model":"t"}"#
    );
    // First-wins stops at the first one.
    let model = decide(&[Bytes::from_static(body)], DuplicateKeys::FirstWins, false);
    assert_eq!(model.json_span(), Some(9..16));
}

#[test]
fn untouched_chunks_are_the_same_bytes_and_the_deciding_one_is_sliced() {
    let body =
        br#"{"messages":[{"role":"user","content":"hello"}],"model":"food-review","stream":true}"#;
    let start = 56;
    assert_eq!(&body[start..start + 13], br#""food-review""#);
    // Chunks: 0..20, 20..50, 50..75 (holds the whole token), 75..
    let chunks = split(body, &[20, 50, 75]);
    let model = decide(&chunks, DuplicateKeys::Reject, false);
    assert_eq!(model.json_span(), Some(56..69));
    let out = splice(&chunks, 56..69, "food-review-2")
        .unwrap()
        .into_chunks();
    assert_eq!(out.len(), 6);
    for (got, want) in [
        (&out[0], &chunks[0]),
        (&out[1], &chunks[1]),
        (&out[5], &chunks[3]),
    ] {
        assert_eq!(got.as_ptr(), want.as_ptr());
        assert_eq!(got.len(), want.len());
    }
    // The deciding chunk: split around the token, no copy of the rest.
    assert_eq!(out[2].as_ptr(), chunks[2].as_ptr());
    assert_eq!(out[2].len(), 6);
    assert_eq!(&out[3][..], br#""food-review-2""#);
    assert_eq!(out[4].as_ptr(), chunks[2][19..].as_ptr());
    assert_eq!(out[4].len(), chunks[2].len() - 19);
}

#[test]
fn a_token_across_chunks_drops_its_bytes_and_keeps_the_outer_parts_shared() {
    let body = br#"{"a":1,"model":"abcdef","b":2}"#;
    // The token 15..23 spread over three chunks.
    let chunks = split(body, &[17, 20]);
    let out = splice(&chunks, 15..23, "z").unwrap().into_chunks();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].as_ptr(), chunks[0].as_ptr());
    assert_eq!(&out[1][..], b"\"z\"");
    assert_eq!(out[2].as_ptr(), chunks[2][3..].as_ptr());
    assert_eq!(out.concat(), br#"{"a":1,"model":"z","b":2}"#);
}

#[test]
fn json_string_token_escapes_every_control_character_and_nothing_else() {
    for c in (0u32..0x80).chain([0x80, 0x9f, 0xa0, 0xe9, 0x2028, 0x1f600]) {
        let c = char::from_u32(c).unwrap();
        let value = format!("a{c}b");
        let token = json_string_token(&value);
        let parsed: String = serde_json::from_slice(&token).expect("valid JSON string");
        assert_eq!(parsed, value);
        let raw = !(c < ' ' || c == '"' || c == '\\');
        assert_eq!(
            token.len() == value.len() + 2,
            raw,
            "{c:?} kept raw iff it needs no escape"
        );
    }
    assert_eq!(json_string_token(""), "\"\"");
}

#[test]
fn a_span_that_is_not_a_token_is_refused_before_anything_is_emitted() {
    assert_eq!(
        ModelSplicer::new(3..4, "m").unwrap_err(),
        SpliceError::NotAToken { start: 3, end: 4 }
    );
    let mut splicer = ModelSplicer::new(1..4, "m").unwrap();
    let err = splicer.push(&Bytes::from_static(b"[1,\"")).unwrap_err();
    assert_eq!(err, SpliceError::NotAQuote { offset: 1 });
    // Sticky.
    assert_eq!(splicer.push(&Bytes::from_static(b"]")).unwrap_err(), err);
    assert_eq!(splicer.finish().unwrap_err(), err);
    // The closing end checked too.
    let mut splicer = ModelSplicer::new(1..4, "m").unwrap();
    splicer.push(&Bytes::from_static(b"[\"a")).unwrap();
    assert_eq!(
        splicer.push(&Bytes::from_static(b"b]")).unwrap_err(),
        SpliceError::NotAQuote { offset: 3 }
    );
}

#[test]
fn a_body_that_ends_inside_the_token_is_truncated() {
    let chunks = [Bytes::from_static(br#"{"model":"ab"#)];
    assert_eq!(
        splice(&chunks, 9..13, "m").unwrap_err(),
        SpliceError::Truncated { len: 12, end: 13 }
    );
    // At the limit: the body ends exactly with the token.
    let chunks = [Bytes::from_static(br#"["ab""#)];
    assert_eq!(splice(&chunks, 1..5, "m").unwrap().len(), 4);
}

#[test]
fn empty_chunks_give_no_pieces() {
    let mut splicer = ModelSplicer::new(1..4, "m").unwrap();
    assert_eq!(splicer.push(&Bytes::new()).unwrap().len(), 0);
    assert_eq!(
        splicer.push(&Bytes::from_static(b"[\"a\"")).unwrap().len(),
        2
    );
    assert_eq!(splicer.push(&Bytes::new()).unwrap().len(), 0);
    assert_eq!(splicer.push(&Bytes::from_static(b"]")).unwrap().len(), 1);
    splicer.finish().unwrap();
}

#[test]
fn spans_only_where_they_are_the_forwarded_bytes() {
    // A plain JSON body through the adapters' entry point: a span.
    let mut body = BodyExtractor::for_content(Some(b"application/json"), None, Limits::new());
    body.feed(&Bytes::from_static(br#"{"model":"m"}"#)).unwrap();
    assert_eq!(
        body.finish().unwrap().model().unwrap().json_span(),
        Some(9..12)
    );
    // A form field: none.
    let mut body = BodyExtractor::for_content(
        Some(b"multipart/form-data; boundary=b"),
        None,
        Limits::new(),
    );
    body.feed(&Bytes::from_static(
        b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--b--\r\n",
    ))
    .unwrap();
    let outcome = body.finish().unwrap();
    let model = outcome.model().unwrap();
    assert_eq!(model.json_span(), None);
    assert_eq!(
        ModelSplicer::for_model(model, "x").unwrap_err(),
        SpliceError::NoSpan
    );
}

#[cfg(feature = "flate2")]
#[test]
fn a_compressed_body_has_no_span_in_feed_or_finish() {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(br#"{"model":"m","n":1}"#).unwrap();
    let gzipped = Bytes::from(encoder.finish().unwrap());
    for policy in POLICIES {
        let limits = Limits::new().with_duplicate_keys(policy);
        let mut body = BodyExtractor::for_content(None, Some(b"gzip"), limits);
        if let Progress::Found(model) = body.feed(&gzipped).unwrap() {
            assert_eq!(model.json_span(), None);
        }
        assert_eq!(body.finish().unwrap().model().unwrap().json_span(), None);
    }
}

/// A JSON string token for `value`, some characters as `\uXXXX` escapes.
fn escaped_token(value: &str, escape_mask: u64) -> String {
    let mut out = String::from("\"");
    for (i, c) in value.chars().enumerate() {
        if escape_mask >> (i % 64) & 1 == 1 {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                _ => out.push(c),
            }
        }
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn splice_matches_serde_json(
        before in proptest::collection::vec(("[a-z]{1,6}", any::<String>()), 0..4),
        after in proptest::collection::vec(("[a-z]{1,6}", any::<String>()), 0..4),
        name in "[^\\x00-\\x20\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]{0,20}",
        escape_mask in any::<u64>(),
        target in any::<String>(),
        cuts in proptest::collection::vec(0usize..400, 0..8),
    ) {
        let entries = |fields: &[(String, String)]| {
            fields
                .iter()
                .filter(|(k, _)| k != "model")
                .map(|(k, v)| format!("\"{k}\":{},", serde_json::to_string(v).unwrap()))
                .collect::<String>()
        };
        let body = format!(
            "{{{}\"model\":{},{}\"end\":0}}",
            entries(&before),
            escaped_token(&name, escape_mask),
            entries(&after)
        );
        let mut cuts = cuts;
        cuts.sort_unstable();
        let chunks = split(body.as_bytes(), &cuts);
        let model = decide(&chunks, DuplicateKeys::Reject, false);
        prop_assert_eq!(model.as_str(), name.trim_matches([' ', '\t']));
        check(body.as_bytes(), &chunks, &target, &model);
    }
}
