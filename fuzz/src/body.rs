//! The `body_chunked` target: any bytes through [`BodyExtractor`] as a
//! form or a compressed body, cut as [`Split`] says; the verdict must not
//! depend on the cuts, and nothing may panic.

use bbr_core::{BodyExtractor, DuplicateKeys, ExtractError, Outcome, Progress};
use bytes::Bytes;

use crate::{MAX_INPUT, Split, limits};

/// The content headers the first input byte selects (low three bits).
const CONTENT: [(Option<&[u8]>, Option<&[u8]>); 8] = [
    (Some(b"multipart/form-data; boundary=b"), None),
    (Some(b"multipart/form-data; boundary=\"--x y\""), None),
    (None, Some(b"gzip")),
    (None, Some(b"deflate")),
    (None, Some(b"br")),
    (None, Some(b"zstd")),
    (Some(b"multipart/form-data; boundary=b"), Some(b"gzip")),
    (None, Some(b"gzip, zstd")),
];

/// Feeds `chunks` and finishes; checks the progress protocol.
fn run(
    content: (Option<&[u8]>, Option<&[u8]>),
    policy: DuplicateKeys,
    chunks: &[Bytes],
) -> Result<Outcome, ExtractError> {
    let mut body = BodyExtractor::for_content(content.0, content.1, limits(policy));
    let mut decided = false;
    for chunk in chunks {
        match body.feed(chunk) {
            Ok(Progress::NeedMore) => assert!(!decided, "NeedMore after a decision"),
            Ok(Progress::Decided) => assert!(decided, "Decided before a decision"),
            Ok(_) => {
                assert!(!decided, "decided twice");
                decided = true;
            }
            Err(error) => {
                assert_eq!(body.finish(), Err(error.clone()), "errors are sticky");
                return Err(error);
            }
        }
    }
    body.finish()
}

/// The `body_chunked` target: byte 0 picks the headers and the policy,
/// the rest is a [`Split`] header and the body.
pub fn check_body(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some(split) = Split::parse(rest) else {
        return;
    };
    let content = CONTENT[usize::from(selector & 7)];
    let policy = [
        DuplicateKeys::Reject,
        DuplicateKeys::FirstWins,
        DuplicateKeys::LastWins,
    ][usize::from(selector >> 3) % 3];
    let body = Bytes::copy_from_slice(split.body);
    let whole = run(content, policy, std::slice::from_ref(&body));
    let chunked = run(content, policy, &split.chunks(&body));
    // Decoding errors carry the encoded bytes read when found, which may
    // move with the cuts; their kind may not.
    match (&whole, &chunked) {
        (Err(a), Err(b)) if content.1.is_some() => assert_eq!(a.kind(), b.kind(), "{a} vs {b}"),
        _ => assert_eq!(whole, chunked, "the verdict depends on the cuts"),
    }
}
