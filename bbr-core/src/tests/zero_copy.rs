//! Zero-copy is tested, not claimed: where the model comes from.

use bytes::Bytes;

use super::harness::split;
use crate::{Limits, ModelExtractor, Outcome, Progress, extract_model};

fn points_into(model: &[u8], chunk: &Bytes) -> bool {
    let range = chunk.as_ptr_range();
    range.contains(&model.as_ptr()) && model.as_ptr_range().end <= range.end
}

#[test]
fn model_inside_one_chunk_is_a_slice_of_that_chunk() {
    let body = Bytes::from_static(
        br#"{"messages":[{"role":"user","content":"hi"}],"model":"food-review-1"}"#,
    );
    let outcome = extract_model(&body, &Limits::new()).expect("valid");
    let model = outcome.model().expect("found");
    assert_eq!(model.as_str(), "food-review-1");
    assert!(model.is_shared());
    assert!(points_into(model.as_bytes(), &body));
    assert_eq!(model.as_bytes().as_ptr(), body[54..].as_ptr());
}

#[test]
fn model_in_a_later_chunk_is_a_slice_of_that_chunk() {
    let body = br#"{"messages":[],  "model":"ski-resorts","stream":true}"#;
    // Every cut outside the model value leaves it shared.
    let (start, end) = (26, 37);
    assert_eq!(&body[start..end], b"ski-resorts");
    for cut in (0..start).chain(end + 1..body.len()) {
        let chunks = split(body, &[cut]);
        let mut extractor = ModelExtractor::new(Limits::new());
        let mut found = None;
        for chunk in &chunks {
            if let Progress::Found(model) = extractor.feed(chunk).expect("valid") {
                assert!(model.is_shared(), "cut {cut}");
                assert!(points_into(model.as_bytes(), chunk), "cut {cut}");
                found = Some(model);
            }
        }
        let Outcome::Found(model) = extractor.finish().expect("valid") else {
            panic!("absent")
        };
        let early = found.expect("reported by feed");
        assert_eq!(
            model.as_bytes().as_ptr(),
            early.as_bytes().as_ptr(),
            "finish hands out the same slice"
        );
    }
}

#[test]
fn model_split_across_chunks_is_one_owned_copy() {
    let body = br#"{"model":"movie-critique"}"#;
    for cut in 11..24 {
        let chunks = split(body, &[cut]);
        let mut extractor = ModelExtractor::new(Limits::new());
        for chunk in &chunks {
            extractor.feed(chunk).expect("valid");
        }
        let Outcome::Found(model) = extractor.finish().expect("valid") else {
            panic!("absent")
        };
        assert_eq!(model.as_str(), "movie-critique");
        assert!(!model.is_shared(), "cut {cut}");
        assert!(
            chunks
                .iter()
                .all(|chunk| !points_into(model.as_bytes(), chunk))
        );
    }
}

#[test]
fn model_split_inside_escape_sequence_is_found() {
    let body = br#"{"model":"caf\u00e9-\ud83d\ude00"}"#;
    for cut in 0..=body.len() {
        let chunks = split(body, &[cut]);
        let mut extractor = ModelExtractor::new(Limits::new());
        for chunk in &chunks {
            extractor.feed(chunk).expect("valid");
        }
        let outcome = extractor.finish().expect("valid");
        let model = outcome.model().expect("found");
        assert_eq!(model.as_str(), "caf\u{e9}-\u{1f600}");
        assert!(
            !model.is_shared(),
            "an escaped model is unescaped into a copy"
        );
    }
}

#[test]
fn escaped_model_is_an_owned_copy_even_in_one_chunk() {
    let body = Bytes::from_static(br#"{"model":"a\/b"}"#);
    let outcome = extract_model(&body, &Limits::new()).expect("valid");
    let model = outcome.model().expect("found");
    assert_eq!(model.as_str(), "a/b");
    assert!(!model.is_shared());
    assert!(!points_into(model.as_bytes(), &body));
}

#[test]
fn a_trimmed_model_is_still_a_slice_of_its_chunk() {
    for (body, name) in [
        (
            &br#"{"model":"  food-review-1 ","stream":true}"#[..],
            "food-review-1",
        ),
        (
            &br#"{"stream":true,"model":" ski-resorts  "}"#[..],
            "ski-resorts",
        ),
    ] {
        let body = Bytes::copy_from_slice(body);
        let outcome = extract_model(&body, &Limits::new()).expect("valid");
        let model = outcome.model().expect("found");
        assert_eq!(model.as_str(), name);
        assert!(model.is_shared());
        assert!(points_into(model.as_bytes(), &body));
        let at = body.windows(name.len()).position(|w| w == name.as_bytes());
        assert_eq!(
            model.as_bytes().as_ptr(),
            body[at.expect("name")..].as_ptr()
        );
    }
    // Escaped padding makes a copy, trimmed the same way.
    let body = Bytes::from_static(br#"{"model":"\tm\u0020"}"#);
    let outcome = extract_model(&body, &Limits::new()).expect("valid");
    let model = outcome.model().expect("found");
    assert_eq!((model.as_str(), model.is_shared()), ("m", false));
}
