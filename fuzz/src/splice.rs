//! The `splice_chunked` target: the model of any body, found under every
//! policy, replaced by an arbitrary target through
//! [`ModelSplicer`](bbr_core::rewrite::ModelSplicer) in the chunks
//! [`Split`] chooses.

use bbr_core::rewrite::{ModelSplicer, json_string_token};
use bbr_core::{ModelExtractor, Outcome, Progress, validate_model_name};
use bytes::Bytes;
use serde_json::Value;

use crate::{MAX_INPUT, Oracle, POLICIES, Split, limits, oracle};

/// The `splice_chunked` target: byte 0 is the target's length (0–255),
/// then the target's bytes (read as UTF-8, invalid sequences replaced),
/// then a [`Split`] header and the body. Under every policy where the
/// extractor finds a model:
///
/// - the output is the body with exactly the model's token replaced by
///   the target's JSON token, its length as announced, no empty piece, and
///   every piece but the new token a slice of the input;
/// - when serde_json reads one top-level `model` in the body, it reads the
///   output as the same object with `model` set to the target;
/// - when the target is a valid model name, the extractor finds it (its
///   trimmed form) in the output.
pub fn check_splice(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let len = usize::from(len).min(rest.len());
    let (target, rest) = rest.split_at(len);
    let target = String::from_utf8_lossy(target);
    let Some(split) = Split::parse(rest) else {
        return;
    };
    let body = Bytes::copy_from_slice(split.body);
    let chunks = split.chunks(&body);
    for policy in POLICIES {
        let mut extractor = ModelExtractor::new(limits(policy));
        let mut failed = false;
        for chunk in &chunks {
            match extractor.feed(chunk) {
                Ok(Progress::Found(model)) => assert!(model.json_span().is_some()),
                Ok(_) => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            continue;
        }
        let Ok(Outcome::Found(model)) = extractor.finish() else {
            continue;
        };
        let span = model.json_span().expect("a JSON model has a span");
        let (start, end) = (span.start as usize, span.end as usize);
        let mut splicer = ModelSplicer::for_model(&model, &target).expect("a valid span");
        let mut out = Vec::new();
        for chunk in &chunks {
            out.extend(
                splicer
                    .push(chunk)
                    .expect("the span is a token of this body"),
            );
        }
        splicer.finish().expect("the body holds the span");
        let token = json_string_token(&target);
        let body_range = body.as_ptr_range();
        for piece in &out {
            assert!(!piece.is_empty(), "no empty piece");
            let inside =
                body_range.contains(&piece.as_ptr()) && piece.as_ptr_range().end <= body_range.end;
            assert!(
                inside || piece.as_ptr() == splicer.token().as_ptr(),
                "a copy"
            );
        }
        let out = out.concat();
        assert_eq!(splicer.spliced_len(body.len() as u64), out.len() as u64);
        let want = [&body[..start], &token[..], &body[end..]].concat();
        assert_eq!(out, want, "only the token changes");

        if let Oracle::Object(models) = oracle(&body)
            && models.len() == 1
        {
            let mut original: Value = serde_json::from_slice(&body).expect("parsed above");
            let spliced: Value = serde_json::from_slice(&out).expect("the output parses");
            original["model"] = Value::String(target.to_string());
            assert_eq!(spliced, original, "serde_json sees only `model` changed");
        }
        if let Ok(name) = validate_model_name(target.as_bytes(), &limits(policy)) {
            let mut again = ModelExtractor::new(limits(policy));
            again.feed(&Bytes::from(out)).expect("still valid");
            let outcome = again.finish().expect("still valid");
            assert_eq!(outcome.model().map(|m| m.as_str()), Some(name));
        }
    }
}
