//! Drives an extractor over a body split at given points and checks the
//! invariants every run must keep, whatever the chunking.

use bytes::Bytes;

use crate::simd::Level;
use crate::{DuplicateKeys, ExtractError, Limits, ModelExtractor, Outcome, Progress};

/// Every policy, for loops.
pub(crate) const POLICIES: [DuplicateKeys; 3] = [
    DuplicateKeys::Reject,
    DuplicateKeys::FirstWins,
    DuplicateKeys::LastWins,
];

/// Splits `body` at the sorted, deduplicated `cuts` into separate `Bytes`
/// (each its own allocation, so zero-copy checks are meaningful).
pub(crate) fn split(body: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut chunks = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for &cut in cuts {
        let cut = cut.min(body.len());
        if cut > from {
            chunks.push(Bytes::copy_from_slice(&body[from..cut]));
            from = cut;
        }
    }
    chunks.push(Bytes::copy_from_slice(&body[from..]));
    chunks
}

/// Feeds every chunk (stopping at the first error, which must then be
/// sticky), then finishes; checks the progress protocol on the way.
/// Returns the final verdict.
pub(crate) fn drive(
    chunks: &[Bytes],
    limits: Limits,
    reference: bool,
) -> Result<Outcome, ExtractError> {
    drive_with(chunks, limits, || {
        if reference {
            ModelExtractor::new_reference(limits)
        } else {
            ModelExtractor::new(limits)
        }
    })
}

/// [`drive`] with the extractor `make` builds.
pub(crate) fn drive_with(
    chunks: &[Bytes],
    limits: Limits,
    make: impl FnOnce() -> ModelExtractor,
) -> Result<Outcome, ExtractError> {
    let mut extractor = make();
    let mut early: Option<Outcome> = None;
    let mut fed = 0u64;
    for chunk in chunks {
        fed += chunk.len() as u64;
        match extractor.feed(chunk) {
            Ok(Progress::NeedMore) => assert!(early.is_none(), "NeedMore after a decision"),
            Ok(Progress::Decided) => assert!(early.is_some(), "Decided before a decision"),
            Ok(Progress::Found(model)) => {
                assert!(early.is_none(), "decided twice");
                assert_ne!(limits.duplicate_keys(), DuplicateKeys::LastWins);
                if model.is_shared() {
                    let range = chunk.as_ptr_range();
                    assert!(
                        range.contains(&model.as_bytes().as_ptr()),
                        "shared model outside its chunk"
                    );
                }
                early = Some(Outcome::Found(model));
            }
            Ok(Progress::Absent) => {
                assert!(early.is_none(), "decided twice");
                assert_ne!(limits.duplicate_keys(), DuplicateKeys::LastWins);
                early = Some(Outcome::Absent);
            }
            Err(error) => {
                assert_eq!(
                    extractor.feed(&Bytes::from_static(b"}")),
                    Err(error.clone()),
                    "sticky feed"
                );
                assert_eq!(extractor.finish(), Err(error.clone()), "sticky finish");
                return Err(error);
            }
        }
        assert_eq!(extractor.bytes_consumed(), fed);
    }
    let verdict = extractor.finish();
    assert_eq!(extractor.finish(), verdict, "finish is repeatable");
    if let (Some(early), Ok(outcome)) = (&early, &verdict) {
        assert_eq!(early, outcome, "finish disagrees with the early decision");
    }
    verdict
}

/// The verdict for `body` under every chunking the seed suites use: whole,
/// every single split, every pair of splits (bodies up to `pair_limit`
/// bytes), every fixed chunk size 1..=64; fast and reference mode. Panics
/// with the chunking on the first disagreement with `expected`.
pub(crate) fn check_all_chunkings(
    body: &[u8],
    limits: Limits,
    expected: &Result<Outcome, ExtractError>,
    pair_limit: usize,
) {
    let levels = Level::available();
    let check = |cuts: &[usize]| {
        let chunks = split(body, cuts);
        for reference in [false, true] {
            let got = drive(&chunks, limits, reference);
            assert_eq!(
                &got,
                expected,
                "body {:?}, policy {:?}, cuts {cuts:?}, reference {reference}",
                String::from_utf8_lossy(body),
                limits.duplicate_keys(),
            );
        }
        // The other mask implementations of the fast mode.
        for &level in &levels {
            let got = drive_with(&chunks, limits, || {
                ModelExtractor::with_level(limits, level)
            });
            assert_eq!(&got, expected, "cuts {cuts:?}, level {level:?}");
        }
    };
    check(&[]);
    for a in 0..=body.len() {
        check(&[a]);
    }
    if body.len() <= pair_limit {
        for a in 1..body.len() {
            for b in a + 1..body.len() {
                check(&[a, b]);
            }
        }
    }
    for size in 1..=64 {
        let cuts: Vec<usize> = (size..body.len()).step_by(size).collect();
        check(&cuts);
    }
}
