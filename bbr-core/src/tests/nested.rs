//! The tight loop for nested values (`extractor/nested.rs`) against the
//! byte-at-a-time reference mode, which never enters it, and against
//! serde_json on validity: bodies whose nested values hold every token
//! kind, whitespace everywhere, and each defect the loop must leave to the
//! general machine (bad numbers and literals, missing or extra commas and
//! colons, mismatched brackets, bad escapes, control and invalid UTF-8
//! bytes, the depth limit), under every chunking of
//! [`check_all_chunkings`] and every policy.

use super::harness::{POLICIES, check_all_chunkings, drive};
use super::oracle::parse;
use crate::{ErrorKind, Limits};

/// Nested values; each is put in `{"a":VALUE,"model":"m"}`.
const VALUES: &[&[u8]] = &[
    b"[]",
    b"{}",
    b"[ ]",
    b"{ }",
    b"[1,-2,3.5,-0.25e+3,4E9,0,true,false,null,\"s\"]",
    b"{\"k\":1,\"l\":[{\"m\":{\"model\":\"no\"}}],\"n\":\"\"}",
    b" [ 1 , { \"k\" : [ ] } , \"x\" ] ",
    b"\t[\r\n{\"k\"\n:\n\"v\"\t}\r]",
    b"[{\"arguments\":\"{\\\"city\\\":\\\"Z\xc3\xbcrich\\\",\\\"unit\\\":\\\"celsius\\\"}\"}]",
    b"[\"a string of plain ascii that is longer than one sixty-four byte block, to cross it\"]",
    b"[\"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \\u00e9 \\ud83d\\ude00 \\n\\t\\\\\\/\"]",
    b"[[[[[[[[1]]]]]]]]",
    b"{\"\xc3\xa9\\u0041\":{\"\":[]}}",
    // Defects, each inside a nested value.
    b"[01]",
    b"[1.]",
    b"[-]",
    b"[1e]",
    b"[1e+]",
    b"[.5]",
    b"[tru]",
    b"[nul]",
    b"[falsy]",
    b"[1,]",
    b"[,1]",
    b"{\"k\":1,}",
    b"{,}",
    b"{\"k\"1}",
    b"{\"k\":}",
    b"{\"k\" \"v\"}",
    b"[}",
    b"{]",
    b"[1 2]",
    b"[\"\\x\"]",
    b"[\"\\u12g4\"]",
    b"[\"\\ud83d\"]",
    b"[\"a\x01b\"]",
    b"{\"a\x1f\":1}",
    b"[\"\xff\"]",
    b"[\"\xc3\"]",
    b"[\"\xed\xa0\x80\"]",
    b"[x]",
    b"[\"unterminated]",
];

#[test]
fn nested_values_agree_with_the_reference_under_every_chunking() {
    let mut checked = 0;
    for value in VALUES {
        let mut body = b"{\"a\":".to_vec();
        body.extend_from_slice(value);
        body.extend_from_slice(b",\"model\":\"m\"}");
        let valid = parse(&body).is_ok();
        for policy in POLICIES {
            let limits = Limits::new().with_duplicate_keys(policy);
            let expected = drive(&[bytes::Bytes::from(body.clone())], limits, true);
            assert_eq!(
                expected.is_ok(),
                valid,
                "reference vs serde_json on {:?}",
                String::from_utf8_lossy(&body)
            );
            check_all_chunkings(&body, limits, &expected, 40);
            checked += 1;
        }
    }
    assert_eq!(checked, VALUES.len() * 3);
}

/// The depth limit inside a nested value: at the limit and one past it.
#[test]
fn the_depth_limit_holds_inside_nested_values() {
    for max_depth in [2, 3, 8] {
        let limits = Limits::new().with_max_depth(max_depth);
        for levels in [max_depth - 1, max_depth] {
            // The root object is one level; `levels` arrays below it.
            let mut body = b"{\"a\":".to_vec();
            body.extend(std::iter::repeat_n(b'[', levels as usize));
            body.extend(std::iter::repeat_n(b']', levels as usize));
            body.extend_from_slice(b",\"model\":\"m\"}");
            let expected = drive(&[bytes::Bytes::from(body.clone())], limits, true);
            if levels < max_depth {
                assert_eq!(expected.as_ref().unwrap().model().unwrap().as_str(), "m");
            } else {
                let error = expected.as_ref().unwrap_err();
                assert_eq!(error.kind(), ErrorKind::TooDeep { limit: max_depth });
                assert_eq!(error.offset(), 5 + u64::from(max_depth) - 1);
            }
            check_all_chunkings(&body, limits, &expected, 0);
        }
    }
}

/// Dense non-ASCII strings longer than a block, cut anywhere (sequences
/// split by the chunk end go to the byte path and carry over), with a
/// defect at several places: the same verdict and offset as the reference.
#[test]
fn dense_non_ascii_strings_across_chunks() {
    let text = "日本語é😀ß".repeat(12);
    for defect in [
        None,
        Some(&b"\xff"[..]),
        Some(&b"\xe6\x97"[..]),
        Some(&b"\x01"[..]),
    ] {
        for at in [0, 63, 64, 130] {
            let mut content = text.as_bytes().to_vec();
            if let Some(defect) = defect {
                let at = (0..=at).rev().find(|&k| text.is_char_boundary(k)).unwrap();
                content.splice(at..at, defect.iter().copied());
            }
            for nested in [false, true] {
                let mut body = b"{\"a\":".to_vec();
                body.extend_from_slice(if nested { &b"[\""[..] } else { b"\"" });
                body.extend_from_slice(&content);
                body.extend_from_slice(if nested { &b"\"]"[..] } else { b"\"" });
                body.extend_from_slice(b",\"model\":\"m\"}");
                let limits = Limits::new();
                let expected = drive(&[bytes::Bytes::from(body.clone())], limits, true);
                assert_eq!(expected.is_ok(), defect.is_none());
                check_all_chunkings(&body, limits, &expected, 0);
            }
        }
    }
}

/// The root object's members in the tight loop: keys it takes (plain,
/// not the field) and keys it must leave to the general machine (the
/// field, escaped or non-ASCII spellings of it, prefixes and extensions
/// of it, keys longer than the 64 bytes it looks at, keys cut by the
/// chunk end), the plain model value it decides itself, duplicates under
/// every policy, and defects right after a top-level member: the same
/// verdict and offset as the reference mode under every chunking.
#[test]
fn top_level_members_agree_with_the_reference_under_every_chunking() {
    let long_key = |len: usize| format!("\"{}\":1", "k".repeat(len));
    let mut members: Vec<String> = [15, 16, 17, 31, 32, 47, 63, 64, 65, 100]
        .into_iter()
        .map(long_key)
        .collect();
    members.extend(
        [
            r#""mode":1"#,
            r#""models":[1]"#,
            r#""modelx":"m2""#,
            r#""Model":"m3""#,
            // As long as the field, differing only in the last byte or
            // in every one (the masked word compare).
            r#""modeL":"m4""#,
            r#""tools":[]"#,
            r#""mod\u0065l":"esc""#,
            r#""mod\u0065l":"m""#,
            r#""model":"m""#,
            r#""model":" m ""#,
            r#""model":"   ""#,
            r#""model":"a\tb""#,
            r#""model":"café""#,
            r#""model":"e\u0301""#,
            r#""model" : "ws""#,
            r#""model":1"#,
            r#""model":null"#,
            r#""model":"x""#,
            "\"k\u{e9}\":{\"model\":\"no\"}",
            r#""stream":true"#,
            r#""temperature":-0.5e+1"#,
            r#""a":{"b":[{"c":"d"}]}"#,
            r#""k":tru"#,
            r#""k":"v" "k2":1"#,
            r#""k":"v",}"#,
            r#""k" 1"#,
        ]
        .map(str::to_owned),
    );
    let mut checked = 0;
    for (n, first) in members.iter().enumerate() {
        // Each member before and after a plain model, and next to a
        // neighbour, so every pair of kinds meets once.
        let second = &members[(n * 7 + 3) % members.len()];
        for body in [
            format!("{{{first},\"model\":\"m\"}}"),
            format!("{{\"model\":\"m\",{first}}}"),
            format!("{{{first},{second}}}"),
            format!("{{ {first} , {second} }}"),
        ] {
            let body = body.into_bytes();
            let valid = parse(&body).is_ok();
            for policy in POLICIES {
                let limits = Limits::new().with_duplicate_keys(policy);
                let expected = drive(&[bytes::Bytes::from(body.clone())], limits, true);
                // First-wins stops reading at its decision; last-wins
                // refuses nothing the reference reads as JSON.
                if policy == crate::DuplicateKeys::Reject {
                    let refused = expected.is_err();
                    assert!(valid || refused, "{}", String::from_utf8_lossy(&body));
                }
                check_all_chunkings(&body, limits, &expected, 0);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, members.len() * 4 * 3);
}

/// A field name as long as it may be (64 bytes) and one just shorter:
/// keys of its length and one byte longer or shorter, with the plain-key
/// test's 64-byte window at its edge.
#[test]
fn long_field_names_at_the_window_edge() {
    for len in [63, 64] {
        let name = "f".repeat(len);
        let field = crate::FieldName::new(&name).unwrap();
        let limits = Limits::new().with_field(field);
        for key_len in [len - 1, len, len + 1] {
            let body = format!("{{\"{}\":\"a\",\"{name}\":\"b\"}}", "f".repeat(key_len));
            let expected = drive(&[bytes::Bytes::from(body.clone())], limits, true);
            let model = if key_len == len { "a" } else { "b" };
            if key_len == len {
                // The same key twice: refused under the default policy.
                assert_eq!(
                    expected.as_ref().unwrap_err().kind(),
                    ErrorKind::DuplicateModel
                );
            } else {
                assert_eq!(expected.as_ref().unwrap().model().unwrap().as_str(), model);
            }
            check_all_chunkings(body.as_bytes(), limits, &expected, 0);
        }
    }
}

/// Plain ASCII runs of several blocks (skipped one test per block), then
/// a first non-ASCII byte and another long run (the stops-only blocks),
/// an escape, or a defect, in nested and top-level values, cut at every
/// point and in chunks of every size up to 64 bytes: the same verdict and
/// offset as the reference mode.
#[test]
fn long_plain_runs_across_chunks() {
    let run = |c: u8, n: usize| vec![c; n];
    let mut contents: Vec<Vec<u8>> = Vec::new();
    for tail in [
        &b""[..],
        "é".as_bytes(),
        b"\\n",
        b"\\u00e9",
        b"\x01",
        b"\xff",
        b"\xe6\x97",
    ] {
        let mut content = run(b'a', 200);
        content.extend_from_slice(tail);
        content.extend(run(b'b', 150));
        contents.push(content);
    }
    let mut checked = 0;
    for content in &contents {
        for nested in [false, true] {
            let mut body = b"{\"a\":".to_vec();
            body.extend_from_slice(if nested { &b"[\""[..] } else { b"\"" });
            body.extend_from_slice(content);
            body.extend_from_slice(if nested { &b"\"]"[..] } else { b"\"" });
            body.extend_from_slice(b",\"model\":\"m\"}");
            let limits = Limits::new();
            let expected = drive(&[bytes::Bytes::from(body.clone())], limits, true);
            assert_eq!(expected.is_ok(), parse(&body).is_ok());
            check_all_chunkings(&body, limits, &expected, 0);
            checked += 1;
        }
    }
    assert_eq!(checked, 14);
}

/// Strings of 17 to 200 bytes (past the 16-byte test: the long-string
/// skip and its UTF-8 check in one call): a 2-, 3- or 4-byte character
/// across the 64-byte block boundary, and an invalid byte (a stray
/// continuation, a cut lead, `0xff`, an encoded surrogate, a control
/// byte) at every position of the first block, at the top level and
/// nested: the reference's verdict and offset under every chunking.
#[test]
fn long_strings_with_utf8_across_blocks_and_defects_at_every_position() {
    let mut checked = 0;
    for (len, character) in [(17, "é"), (70, "日"), (130, "😀"), (200, "é")] {
        for shift in 0..4 {
            // The character starts `shift` bytes before the block ends.
            let mut content = vec![b'p'; len];
            let at = 64usize.saturating_sub(shift + 1).min(len - character.len());
            content.splice(at..at + character.len(), character.bytes());
            checked += check_string(&content, None);
        }
    }
    let defects: [&[u8]; 5] = [b"\x80", b"\xe6\x97", b"\xff", b"\xed\xa0\x80", b"\x01"];
    for defect in defects {
        for at in 0..64 {
            let mut content = "ü".repeat(40).into_bytes();
            let at = at & !1; // on a character boundary
            content.splice(at..at, defect.iter().copied());
            checked += check_string(&content, Some(at));
        }
    }
    assert!(checked > 600);
}

/// `content` as a top-level and as a nested string value, every chunking
/// (single cuts, fixed sizes 1..=64) against the reference; a defect at
/// `defect` (an index into `content`) is the error at its body offset.
fn check_string(content: &[u8], defect: Option<usize>) -> usize {
    let mut checked = 0;
    for nested in [false, true] {
        let mut body = b"{\"a\":".to_vec();
        body.extend_from_slice(if nested { &b"[\""[..] } else { b"\"" });
        let start = body.len();
        body.extend_from_slice(content);
        body.extend_from_slice(if nested { &b"\"]"[..] } else { b"\"" });
        body.extend_from_slice(b",\"model\":\"m\"}");
        check_model_m_or_defect(&body, defect.map(|at| start + at));
        checked += 1;
    }
    checked
}

/// `body` (whose `model` is `m`) against the reference under every
/// chunking; with a defect at body offset `defect`, that is the error.
fn check_model_m_or_defect(body: &[u8], defect: Option<usize>) {
    let limits = Limits::new();
    let expected = drive(&[bytes::Bytes::copy_from_slice(body)], limits, true);
    match defect {
        None => assert_eq!(expected.as_ref().unwrap().model().unwrap().as_str(), "m"),
        Some(at) => {
            let error = expected.as_ref().unwrap_err();
            assert_eq!(error.offset(), at as u64, "{body:?}");
        }
    }
    check_all_chunkings(body, limits, &expected, 0);
}

/// A string with non-ASCII bytes is validated up to the next multiple of
/// 64 bytes from its first non-ASCII block when the body goes on that far:
/// what follows its closing quote within that range (valid characters,
/// or a defect in the next string at every distance) must not change the
/// answer, and a defect there is the error at its own offset, under every
/// chunking.
#[test]
fn utf8_check_past_the_closing_quote_does_not_leak() {
    let defects: [&[u8]; 4] = [b"\x80", b"\xe6\x97", b"\xff", b"\xed\xa0\x80"];
    let mut checked = 0;
    for len in [17, 40, 63, 64, 65, 130] {
        let content = "é".repeat(len / 2).into_bytes();
        for gap in 0..64 {
            for (defect, nested) in [None, Some(defects[gap % defects.len()])]
                .into_iter()
                .flat_map(|defect| [(defect, false), (defect, true)])
            {
                let mut body = b"{\"a\":".to_vec();
                body.extend_from_slice(if nested { &b"[\""[..] } else { b"\"" });
                body.extend_from_slice(&content);
                body.extend_from_slice(if nested {
                    &b"\",\""[..]
                } else {
                    b"\",\"b\":\""
                });
                body.extend(std::iter::repeat_n(b'x', gap));
                let at = body.len();
                match defect {
                    Some(defect) => body.extend_from_slice(defect),
                    None => body.extend_from_slice("日".as_bytes()),
                }
                body.extend_from_slice(if nested { &b"\"]"[..] } else { b"\"" });
                body.extend_from_slice(b",\"model\":\"m\"}");
                check_model_m_or_defect(&body, defect.map(|_| at));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 6 * 64 * 4);
}
