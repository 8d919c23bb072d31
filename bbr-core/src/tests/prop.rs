//! Property tests: generated bodies (nested values, escapes, non-ASCII text,
//! duplicate and nested `model` keys, whitespace) under random chunkings
//! must agree with the one-shot function, with the byte-at-a-time
//! reference mode and with the serde_json oracle ([`super::oracle`]).
//! Mutated bodies (truncations, byte flips, insertions) must never yield a
//! model that the oracle would not also produce, and must end in an error
//! under `reject` and `last-wins` whenever serde_json refuses them.
//!
//! simd-json is a second oracle for JSON validity on the mutated bodies.
//!
//! The case count is proptest's: 256 by default, raised with the
//! `PROPTEST_CASES` environment variable (e.g. `PROPTEST_CASES=20000`).

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;

use super::harness::{POLICIES, drive, drive_with, split};
use super::oracle::{Verdict, check_early_decision, expected, oracle_is_stricter, parse};
use crate::{
    DuplicateKeys, ExtractError, FieldName, Limits, ModelExtractor, Outcome, Progress,
    extract_model,
};

fn ws() -> BoxedStrategy<String> {
    prop_oneof![4 => Just(String::new()), 1 => "[ \t\r\n]{1,3}"].boxed()
}

/// JSON-escaped string contents. Long plain runs (100+ bytes) take the
/// 64-byte block path, and the random cuts split them anywhere.
fn string_piece() -> BoxedStrategy<String> {
    prop_oneof![
        8 => "[a-zA-Z0-9 _./:-]{1,8}",
        2 => "[a-zA-Z0-9 _./:-]{100,300}",
        1 => "[a-z \u{e9}\u{65e5}]{60,200}",
        1 => prop::sample::select(vec![
            "\\n", "\\\"", "\\\\", "\\/", "\\t", "\\b", "\\f", "\\r", "\\u00e9", "\\u00E9", "\\uD83D\\uDE00",
            "\\ud83d\\ude00", "\\u0000", "\\u0041", "\\u007f", "\\u2028", "\\u006d",
            "\\u0080", "\\u009F", "\\u00a0", "\\u0020", "\\u0009", " ",
        ])
        .prop_map(str::to_owned),
        2 => "[éß日本語😀\u{7f}\u{80}\u{85}\u{9f}\u{a0}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}]{1,3}",
    ]
    .boxed()
}

fn json_string() -> BoxedStrategy<String> {
    prop::collection::vec(string_piece(), 0..6)
        .prop_map(|pieces| format!("\"{}\"", pieces.concat()))
        .boxed()
}

fn number() -> BoxedStrategy<String> {
    // Short enough that no byte flip makes one out of f64 range.
    "-?(0|[1-9][0-9]{0,2})(\\.[0-9]{1,2})?([eE][+-]?[0-9]{1,2})?".boxed()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "\"model\"", "\"mod\\u0065l\"", "\"\\u006dodel\"", "\"Model\"", "\"model2\"", "\"mode\"",
            "\"messages\"", "\"role\"", "\"content\"", "\"model_name\"", "\"日本\"",
        ])
        .prop_map(str::to_owned),
        1 => "\"[a-z]{1,8}\"",
        1 => json_string(),
    ]
    .boxed()
}

fn value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number(),
        json_string(),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec((ws(), inner.clone(), ws()), 0..5).prop_map(|items| {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|(a, v, b)| format!("{a}{v}{b}"))
                    .collect();
                format!("[{}]", items.join(","))
            }),
            prop::collection::vec((ws(), key(), ws(), ws(), inner, ws()), 0..5).prop_map(
                |entries| {
                    let entries: Vec<String> = entries
                        .into_iter()
                        .map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"))
                        .collect();
                    format!("{{{}}}", entries.join(","))
                }
            ),
        ]
    })
    .boxed()
}

/// Spaces and tabs (escaped or raw spaces) around a name, or alone.
fn padding() -> BoxedStrategy<String> {
    prop::sample::select(vec!["", "", " ", "  ", "\\t", " \\t", "\\u0020", "\\t\\t "])
        .prop_map(str::to_owned)
        .boxed()
}

fn model_value() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "\"[a-zA-Z0-9][a-zA-Z0-9./_-]{0,30}\"",
        2 => (padding(), "[a-zA-Z0-9 ./_-]{0,12}|\\\\t|\\\\u0085", padding())
            .prop_map(|(a, name, b)| format!("\"{a}{name}{b}\"")),
        2 => json_string(),
        1 => Just("\"\"".to_owned()),
        1 => value(),
    ]
    .boxed()
}

fn entry() -> BoxedStrategy<String> {
    let model_key = prop::sample::select(vec![
        "\"model\"",
        "\"mod\\u0065l\"",
        "\"\\u006d\\u006f\\u0064\\u0065\\u006c\"",
        "\"model_name\"",
        "\"model_n\\u0061me\"",
        "\"日本\"",
        "\"\\u65e5本\"",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        1 => (model_key, model_value()),
        3 => (key(), value()),
    ]
    .prop_flat_map(|(k, v)| (ws(), Just(k), ws(), ws(), Just(v), ws()))
    .prop_map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"))
    .boxed()
}

fn body() -> BoxedStrategy<Vec<u8>> {
    (ws(), prop::collection::vec(entry(), 0..6), ws())
        .prop_map(|(lead, entries, trail)| {
            format!("{lead}{{{}}}{trail}", entries.join(",")).into_bytes()
        })
        .boxed()
}

fn limits() -> BoxedStrategy<Limits> {
    (
        prop_oneof![3 => Just(256usize), 1 => 1usize..40],
        prop::sample::select(POLICIES.to_vec()),
        prop::sample::select(vec!["model", "model", "model", "model_name", "日本"]),
    )
        .prop_map(|(max_len, policy, field)| {
            Limits::new()
                .with_max_model_len(max_len)
                .with_duplicate_keys(policy)
                .with_field(FieldName::new(field).expect("valid field name"))
        })
        .boxed()
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
}

fn mutation() -> BoxedStrategy<Mutation> {
    let interesting = prop_oneof![
        any::<u8>(),
        prop::sample::select(b"{}[]:,\"\\ 0e-.tnu\x7f\xff\xc3\xe2".to_vec()),
    ];
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), interesting.clone()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), interesting).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
    ]
    .boxed()
}

fn apply(mut body: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        match *mutation {
            Mutation::Truncate(i) => body.truncate(i.index(body.len() + 1)),
            Mutation::Flip(i, b) if !body.is_empty() => {
                let i = i.index(body.len());
                body[i] = b;
            }
            Mutation::Insert(i, b) => body.insert(i.index(body.len() + 1), b),
            Mutation::Delete(i) if !body.is_empty() => {
                body.remove(i.index(body.len()));
            }
            _ => {}
        }
    }
    body
}

/// Feeds one byte at a time; returns the verdict and, for an early
/// decision, the index of the deciding byte and what it decided.
fn byte_by_byte(
    body: &[u8],
    limits: Limits,
) -> (Result<Outcome, ExtractError>, Option<(usize, Verdict)>) {
    let mut extractor = ModelExtractor::new(limits);
    let mut early = None;
    for (i, &b) in body.iter().enumerate() {
        match extractor.feed(&Bytes::copy_from_slice(&[b])) {
            Ok(Progress::Found(model)) => {
                early = Some((i, Verdict::Found(model.as_str().to_owned())))
            }
            Ok(Progress::Absent) => early = Some((i, Verdict::Absent)),
            Ok(_) => {}
            Err(error) => return (Err(error), early),
        }
    }
    (extractor.finish(), early)
}

/// Every way of feeding `body` gives the same verdict (with offsets);
/// returns it with the early decision, if any.
fn agreeing_verdict(
    body: &[u8],
    limits: Limits,
    cuts: &[Index],
) -> (Result<Outcome, ExtractError>, Option<(usize, Verdict)>) {
    let one_shot = extract_model(&Bytes::copy_from_slice(body), &limits);
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
    cuts.sort_unstable();
    let chunks = split(body, &cuts);
    assert_eq!(
        drive(&chunks, limits, false),
        one_shot,
        "random chunks, cuts {cuts:?}"
    );
    assert_eq!(
        drive(&chunks, limits, true),
        one_shot,
        "reference mode, cuts {cuts:?}"
    );
    for level in crate::simd::Level::available() {
        assert_eq!(
            drive_with(&chunks, limits, || ModelExtractor::with_level(
                limits, level
            )),
            one_shot,
            "level {level:?}, cuts {cuts:?}"
        );
    }
    let (bytewise, early) = byte_by_byte(body, limits);
    assert_eq!(bytewise, one_shot, "one-byte chunks");
    (one_shot, early)
}

proptest! {
    #[test]
    fn generated_bodies_agree_with_serde_json_under_any_chunking(
        body in body(),
        limits in limits(),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let entries = parse(&body).unwrap_or_else(|e| panic!("generator made invalid JSON: {e}"));
        let (verdict, early) = agreeing_verdict(&body, limits, &cuts);
        prop_assert_eq!(Verdict::from(&verdict), expected(&entries, &limits), "{}", String::from_utf8_lossy(&body));
        if let Some((at, decision)) = early {
            check_early_decision(&body, at, &decision, &limits);
        }
        // The other policies on the same body, one-shot, against the oracle.
        for policy in POLICIES {
            let limits = limits.with_duplicate_keys(policy);
            let verdict = extract_model(&Bytes::copy_from_slice(&body), &limits);
            prop_assert_eq!(Verdict::from(&verdict), expected(&entries, &limits));
        }
    }

    #[test]
    fn mutated_bodies_never_yield_a_model_serde_json_would_not(
        body in body(),
        limits in limits(),
        mutations in prop::collection::vec(mutation(), 1..3),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let body = apply(body, &mutations);
        let (verdict, early) = agreeing_verdict(&body, limits, &cuts);
        if let Some((at, decision)) = &early {
            check_early_decision(&body, *at, decision, &limits);
        }
        let serde = parse(&body);
        if serde.as_ref().is_err_and(oracle_is_stricter) {
            return Ok(());
        }
        // simd-json as a second, independent judge of JSON validity: under
        // last-wins the whole body is validated, so a JSON-class error
        // must match simd-json's refusal exactly.
        let mut copy = body.clone();
        let simd_object = simd_json::to_owned_value(&mut copy)
            .map(|value| matches!(value, simd_json::OwnedValue::Object(_)));
        if limits.duplicate_keys() == DuplicateKeys::LastWins && !matches!(simd_object, Ok(false)) {
            let json_error = verdict.as_ref().is_err_and(|e| e.kind().class() == crate::ErrorClass::InvalidJson);
            prop_assert_eq!(json_error, simd_object.is_err(), "simd-json disagrees on {:?}", String::from_utf8_lossy(&body));
            prop_assert_eq!(simd_object.is_ok(), serde.is_ok(), "serde_json and simd-json disagree");
        }
        match serde {
            Ok(entries) => prop_assert_eq!(Verdict::from(&verdict), expected(&entries, &limits)),
            Err(e) => match limits.duplicate_keys() {
                // First-wins answers on the prefix it read; that prefix was
                // checked above.
                DuplicateKeys::FirstWins => prop_assert!(verdict.is_err() || early.is_some()),
                _ => prop_assert!(verdict.is_err(), "serde_json refuses ({e}) but got {verdict:?}"),
            },
        }
    }
}
