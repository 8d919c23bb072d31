//! Extraction allocates nothing when the model is a slice of the input: a
//! counting global allocator around the whole extraction. In its own test
//! binary because it replaces the global allocator.
#![allow(unsafe_code)] // GlobalAlloc is an unsafe trait; this file only counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bbr_core::{DuplicateKeys, Limits, ModelExtractor, Outcome, Progress, extract_model};
use bytes::Bytes;

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel do not count each other.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a const-initialized thread local (no allocation, no reentry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let result = f();
    (result, ALLOCATIONS.with(Cell::get) - before)
}

/// A chat body with the model last, built once, outside the measurement.
/// `Bytes::from_static` and an already-shared `Bytes` both slice without
/// allocating (a `Bytes` made from a `Vec` allocates its shared header on
/// its first clone, inside the `bytes` crate, whoever clones it).
/// With `padded`, the model is sent with spaces around it (trimmed, still
/// a slice of the body).
fn chat_body(model_first: bool, padded: bool) -> Bytes {
    let model = if padded {
        r#""model":"  meta-llama/Llama-3.1-8B-Instruct ""#
    } else {
        r#""model":"meta-llama/Llama-3.1-8B-Instruct""#
    };
    let mut body = String::from("{");
    if model_first {
        body.push_str(model);
        body.push(',');
    }
    body.push_str(r#""messages":["#);
    for i in 0..2000 {
        body.push_str(&format!(
            r#"{{"role":"user","content":"message {i} caf\u00e9 \"quoted\" 日本語 and more text"}},"#
        ));
    }
    body.push_str(
        r#"{"role":"assistant","content":"ok"}],"tools":[{"model":"nested"}],"temperature":0"#,
    );
    if !model_first {
        body.push(',');
        body.push_str(model);
    }
    body.push('}');
    let body = Bytes::from(body.into_bytes());
    let _promote_to_shared = body.clone();
    body
}

#[test]
fn extraction_of_a_shared_model_allocates_nothing() {
    for (model_first, padded) in [(true, false), (false, false), (true, true), (false, true)] {
        let body = chat_body(model_first, padded);
        // 16 KiB chunks, sliced before measuring.
        let chunks: Vec<Bytes> = (0..body.len())
            .step_by(16 * 1024)
            .map(|at| body.slice(at..body.len().min(at + 16 * 1024)))
            .collect();
        for policy in [
            DuplicateKeys::Reject,
            DuplicateKeys::FirstWins,
            DuplicateKeys::LastWins,
        ] {
            let limits = Limits::new().with_duplicate_keys(policy);

            let (outcome, allocations) = allocations_during(|| extract_model(&body, &limits));
            let outcome = outcome.expect("valid body");
            assert_eq!(
                allocations, 0,
                "one-shot, {policy:?}, model first: {model_first}"
            );
            let model = outcome.model().expect("found");
            assert!(model.is_shared());
            assert_eq!(model.as_str(), "meta-llama/Llama-3.1-8B-Instruct");
            drop(outcome);

            let (outcome, allocations) = allocations_during(|| {
                let mut extractor = ModelExtractor::new(limits);
                for chunk in &chunks {
                    extractor.feed(chunk)?;
                }
                extractor.finish()
            });
            let Ok(Outcome::Found(model)) = outcome else {
                panic!("{outcome:?}")
            };
            assert_eq!(
                allocations, 0,
                "16 KiB chunks, {policy:?}, model first: {model_first}"
            );
            assert!(
                model.is_shared(),
                "the model does not straddle a 16 KiB boundary here"
            );
        }
    }
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that cannot count.
    let (_, allocations) = allocations_during(|| std::hint::black_box(vec![1u8; 64]));
    assert!(allocations >= 1);
    // A split model is one small owned copy, and it shows up.
    let (_, allocations) = allocations_during(|| {
        let mut extractor = ModelExtractor::new(Limits::new());
        let first = Bytes::from_static(br#"{"model":"food-"#);
        let second = Bytes::from_static(br#"review-1"}"#);
        assert_eq!(extractor.feed(&first), Ok(Progress::NeedMore));
        assert!(matches!(extractor.feed(&second), Ok(Progress::Found(_))));
        extractor.finish()
    });
    assert!(allocations >= 1);
}
