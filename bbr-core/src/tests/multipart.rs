//! The multipart extractor: hand-written uploads at every split point and
//! every chunking of 1..64 bytes, the limits at and one past, the policies,
//! and a large file part with bounded memory.

use bytes::Bytes;

use super::*;
use crate::{DuplicateKeys, ErrorKind, ExtractError, Limits, Outcome, Progress};

const POLICIES: [DuplicateKeys; 3] = [
    DuplicateKeys::Reject,
    DuplicateKeys::FirstWins,
    DuplicateKeys::LastWins,
];

const CT: &[u8] = b"multipart/form-data; boundary=----bbrTestBoundary7MA4YWxk";

fn part(name: &str, filename: Option<&str>, value: &[u8]) -> Vec<u8> {
    let mut out = b"------bbrTestBoundary7MA4YWxk\r\n".to_vec();
    match filename {
        Some(f) => out.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes(),
        ),
        None => out.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
    }
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

fn close(mut body: Vec<u8>) -> Vec<u8> {
    body.extend_from_slice(b"------bbrTestBoundary7MA4YWxk--\r\n");
    body
}

/// Audio-like bytes that hold CRs, partial delimiters and dashes.
fn audio(len: usize) -> Vec<u8> {
    let pattern = b"RIFF\r\n--\r\n------bbrTestBoundary7MA4YWx\r\r\n-\x00\xff";
    pattern.iter().copied().cycle().take(len).collect()
}

/// One run: every chunk fed (stopping at the first error, which must be
/// sticky), then finish. Returns the verdict and the absolute byte count
/// at which the decision was reported (the end of the deciding chunk).
pub(crate) fn drive(
    chunks: &[Bytes],
    limits: Limits,
) -> (Result<Outcome, ExtractError>, Option<u64>) {
    let mut extractor = MultipartExtractor::from_content_type(CT, limits);
    let mut decided_at = None;
    let mut early = None;
    let mut fed = 0u64;
    for chunk in chunks {
        fed += chunk.len() as u64;
        match extractor.feed(chunk) {
            Ok(Progress::NeedMore) => assert!(early.is_none()),
            Ok(Progress::Decided) => assert!(early.is_some()),
            Ok(Progress::Found(model)) => {
                assert!(early.is_none(), "decided twice");
                if model.is_shared() {
                    assert!(chunk.as_ptr_range().contains(&model.as_bytes().as_ptr()));
                }
                early = Some(Outcome::Found(model));
                decided_at = Some(fed);
            }
            Ok(Progress::Absent) => {
                assert!(early.is_none(), "decided twice");
                early = Some(Outcome::Absent);
                decided_at = Some(fed);
            }
            Err(error) => {
                assert_eq!(
                    extractor.feed(&Bytes::from_static(b"x")),
                    Err(error.clone())
                );
                assert_eq!(extractor.finish(), Err(error.clone()));
                return (Err(error), decided_at);
            }
        }
    }
    let verdict = extractor.finish();
    if let (Some(early), Ok(outcome)) = (&early, &verdict) {
        assert_eq!(early, outcome, "finish disagrees with the early decision");
    }
    (verdict, decided_at)
}

fn split(body: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let mut from = 0;
    for &cut in cuts {
        if cut > from && cut < body.len() {
            chunks.push(Bytes::copy_from_slice(&body[from..cut]));
            from = cut;
        }
    }
    chunks.push(Bytes::copy_from_slice(&body[from..]));
    chunks
}

fn chunked(body: &[u8], size: usize) -> Vec<Bytes> {
    body.chunks(size.max(1))
        .map(Bytes::copy_from_slice)
        .collect()
}

/// The verdict of `body` in one chunk, checked to be the same at every
/// single split point and every chunk size of 1..=64, with the decision
/// reported by the chunk holding `decision_byte` (when given).
fn check_all_chunkings(body: &[u8], limits: Limits) -> Result<Outcome, ExtractError> {
    let (whole, _) = drive(&[Bytes::copy_from_slice(body)], limits);
    // The byte that decides: fed one byte at a time, the decision comes
    // with it.
    let (bytewise, decision_byte) = drive(&chunked(body, 1), limits);
    assert_eq!(bytewise, whole, "1-byte chunks");
    for cut in 0..=body.len() {
        let chunks = split(body, &[cut]);
        let (verdict, decided_at) = drive(&chunks, limits);
        assert_eq!(verdict, whole, "split at {cut}");
        if let (Some(byte), Some(at)) = (decision_byte, decided_at) {
            let expected = if byte <= cut as u64 {
                cut as u64
            } else {
                body.len() as u64
            };
            assert_eq!(at, expected.max(byte), "decided late, split at {cut}");
        }
    }
    for size in 2..=64 {
        let (verdict, _) = drive(&chunked(body, size), limits);
        assert_eq!(verdict, whole, "chunks of {size}");
    }
    whole
}

fn found(verdict: &Result<Outcome, ExtractError>) -> Option<&str> {
    match verdict {
        Ok(Outcome::Found(model)) => Some(model.as_str()),
        _ => None,
    }
}

fn err(kind: ErrorKind, offset: usize) -> Result<Outcome, ExtractError> {
    Err(ExtractError::new(kind, offset as u64))
}

#[test]
fn model_first_then_file() {
    let mut body = part("model", None, b"whisper-1");
    body.extend(part("file", Some("a.wav"), &audio(300)));
    body.extend(part("response_format", None, b"json"));
    let body = close(body);
    for policy in POLICIES {
        let limits = Limits::new().with_duplicate_keys(policy);
        assert_eq!(
            found(&check_all_chunkings(&body, limits)),
            Some("whisper-1")
        );
    }
    // Decided at the last byte of the delimiter after the value.
    let value_end = body.windows(9).position(|w| w == b"whisper-1").unwrap() + 9;
    let (_, at) = drive(&chunked(&body, 1), Limits::new());
    assert_eq!(at, Some((value_end + 2 + 29) as u64));
}

#[test]
fn model_after_file() {
    let mut body = part("file", Some("speech.mp3"), &audio(500));
    body.extend(part("model", None, b"gpt-4o-transcribe"));
    body.extend(part("language", None, b"en"));
    let body = close(body);
    for policy in POLICIES {
        let limits = Limits::new().with_duplicate_keys(policy);
        assert_eq!(
            found(&check_all_chunkings(&body, limits)),
            Some("gpt-4o-transcribe")
        );
    }
}

#[test]
fn absent_at_the_close_delimiter() {
    let body = close(part("file", Some("a.png"), &audio(64)));
    for policy in POLICIES {
        let limits = Limits::new().with_duplicate_keys(policy);
        assert_eq!(check_all_chunkings(&body, limits), Ok(Outcome::Absent));
    }
    // A form with no parts at all.
    assert_eq!(
        check_all_chunkings(b"------bbrTestBoundary7MA4YWxk--", Limits::new()),
        Ok(Outcome::Absent)
    );
}

#[test]
fn preamble_epilogue_padding_and_quoting() {
    let body = b"ignored preamble\r\n------bbrTestBoundary7MA4YWxk \t\r\n\
content-disposition: FORM-DATA; NAME=model\r\n\
content-type: text/plain; charset=utf-8\r\n\r\n\
food-review-1\r\n------bbrTestBoundary7MA4YWxk--  epilogue \r\n--x";
    assert_eq!(
        found(&check_all_chunkings(body, Limits::new())),
        Some("food-review-1")
    );
    // Quoted pairs in the name are undone before the comparison.
    let body = close(
        b"------bbrTestBoundary7MA4YWxk\r\ncontent-disposition: form-data; name=\"mod\\el\"\r\n\r\nm\r\n"
            .to_vec(),
    );
    assert_eq!(found(&check_all_chunkings(&body, Limits::new())), Some("m"));
    // Other names, including near misses, are not the model.
    for name in ["Model", "model2", "mode", "file"] {
        let body = close(part(name, None, b"x"));
        assert_eq!(
            check_all_chunkings(&body, Limits::new()),
            Ok(Outcome::Absent)
        );
    }
}

#[test]
fn zero_copy_within_one_chunk() {
    let body = close(part("model", None, b"whisper-1"));
    let (verdict, _) = drive(&[Bytes::from(body.clone())], Limits::new());
    let Ok(Outcome::Found(model)) = verdict else {
        panic!()
    };
    assert!(model.is_shared());
    // Cut inside the value: one owned copy.
    let cut = body.windows(9).position(|w| w == b"whisper-1").unwrap() + 3;
    let (verdict, _) = drive(&split(&body, &[cut]), Limits::new());
    let Ok(Outcome::Found(model)) = verdict else {
        panic!()
    };
    assert!(!model.is_shared());
    assert_eq!(model.as_str(), "whisper-1");
}

#[test]
fn value_rules_are_the_json_rules() {
    let start = part("model", None, b"").len() - 2; // the value's offset
    let cases: [(&[u8], Result<Outcome, ExtractError>); 5] = [
        (b"", err(ErrorKind::EmptyModel, start)),
        (b"a\r\nb", err(ErrorKind::ModelControlChar, start + 1)),
        (b"a\x7f", err(ErrorKind::ModelControlChar, start + 1)),
        (b"ok\xff", err(ErrorKind::InvalidUtf8, start + 2)),
        ("modèle".as_bytes(), Ok(Outcome::Absent)),
    ];
    for (value, expected) in cases {
        let body = close(part("model", None, value));
        let verdict = check_all_chunkings(&body, Limits::new());
        match expected {
            Ok(_) => assert_eq!(found(&verdict), Some("modèle")),
            Err(_) => assert_eq!(verdict, expected, "{value:?}"),
        }
    }
}

#[test]
fn model_len_limit_at_and_one_past() {
    let limits = Limits::new().with_max_model_len(16);
    let at = close(part("model", None, &[b'm'; 16]));
    assert_eq!(
        found(&check_all_chunkings(&at, limits)).map(str::len),
        Some(16)
    );
    let past = close(part("model", None, &[b'm'; 17]));
    let start = part("model", None, b"").len() - 2;
    for policy in POLICIES {
        assert_eq!(
            check_all_chunkings(&past, limits.with_duplicate_keys(policy)),
            err(ErrorKind::ModelTooLong { limit: 16 }, start)
        );
    }
    // The default, 256.
    let past = close(part("model", None, &[b'm'; 257]));
    assert_eq!(
        drive(&[Bytes::from(past)], Limits::new()).0,
        err(ErrorKind::ModelTooLong { limit: 256 }, start)
    );
}

#[test]
fn file_named_model_is_not_a_string() {
    let body = close(part("model", Some("m.txt"), b"whisper-1"));
    let at = "------bbrTestBoundary7MA4YWxk\r\n".len();
    for policy in POLICIES {
        let limits = Limits::new().with_duplicate_keys(policy);
        assert_eq!(
            check_all_chunkings(&body, limits),
            err(ErrorKind::ModelNotAString, at)
        );
    }
}

#[test]
fn duplicate_model_under_each_policy() {
    let mut body = part("model", None, b"first");
    let second_at = body.len() + "------bbrTestBoundary7MA4YWxk\r\n".len();
    body.extend(part("file", Some("a.wav"), &audio(40)));
    let second_at = second_at + part("file", Some("a.wav"), &audio(40)).len();
    body.extend(part("model", None, b"second"));
    let body = close(body);
    let reject = check_all_chunkings(&body, Limits::new());
    assert_eq!(reject, err(ErrorKind::DuplicateModel, second_at));
    let first = Limits::new().with_duplicate_keys(DuplicateKeys::FirstWins);
    assert_eq!(found(&check_all_chunkings(&body, first)), Some("first"));
    let last = Limits::new().with_duplicate_keys(DuplicateKeys::LastWins);
    assert_eq!(found(&check_all_chunkings(&body, last)), Some("second"));
    // Last-wins forgets an earlier invalid value.
    let body = close([part("model", None, b""), part("model", None, b"ok")].concat());
    assert_eq!(found(&check_all_chunkings(&body, last)), Some("ok"));
}

#[test]
fn truncated_uploads() {
    let mut full = part("model", None, b"whisper-1");
    full.extend(part("file", Some("a.wav"), &audio(100)));
    let full = close(full);
    let decided = full.windows(9).position(|w| w == b"whisper-1").unwrap() + 9 + 31;
    // Cut anywhere before the end of the close delimiter (what follows it
    // is the epilogue).
    for len in 0..full.len() - 2 {
        let body = &full[..len];
        for policy in POLICIES {
            let limits = Limits::new().with_duplicate_keys(policy);
            let (verdict, _) = drive(&chunked(body, 7), limits);
            if policy == DuplicateKeys::FirstWins && len >= decided {
                assert_eq!(found(&verdict), Some("whisper-1"), "len {len}");
            } else {
                assert_eq!(
                    verdict,
                    err(ErrorKind::UnexpectedEnd, len),
                    "len {len} {policy:?}"
                );
            }
        }
    }
}

#[test]
fn malformed_framing() {
    let d = "------bbrTestBoundary7MA4YWxk";
    // Each body, and the text at whose start the error is.
    let cases: Vec<(String, &str)> = vec![
        // Garbage after a delimiter.
        (format!("{d}x\r\n"), "x"),
        (format!("{d}-x"), "x"),
        (format!("{d}\r\r"), "\r"),
        // A header line without a colon, with a bare LF, with a bare CR.
        (format!("{d}\r\nno colon\r\n\r\n"), " colon"),
        (format!("{d}\r\nx: y\n"), "\n"),
        (format!("{d}\r\nx: y\rz\r\n"), "\rz"),
        // A folded line.
        (format!("{d}\r\n folded: x\r\n"), " folded"),
        // No Content-Disposition.
        (
            format!("{d}\r\ncontent-type: text/plain\r\n\r\nx\r\n{d}--"),
            "\r\nx",
        ),
        // Not form-data, no name, two names, name*, twice, an open quote.
        (
            format!("{d}\r\ncontent-disposition: attachment; name=model\r\n"),
            "attachment",
        ),
        (
            format!("{d}\r\ncontent-disposition: form-data\r\n\r\n"),
            " form-data",
        ),
        (
            format!("{d}\r\ncontent-disposition: form-data; name=a; name=model\r\n"),
            "name=model",
        ),
        (
            format!("{d}\r\ncontent-disposition: form-data; name*=utf-8''model\r\n"),
            "name*",
        ),
        (
            format!(
                "{d}\r\ncontent-disposition: form-data; name=a\r\ncontent-disposition: form-data; name=b\r\n"
            ),
            "content-disposition: form-data; name=b",
        ),
        (
            format!("{d}\r\ncontent-disposition: form-data; name=\"model\r\n"),
            "\r\n",
        ),
    ];
    let cases: Vec<(String, usize)> = cases
        .into_iter()
        .map(|(body, marker)| {
            let at = body.rfind(marker).expect(marker);
            (body, at)
        })
        .collect();
    for (body, at) in cases {
        for policy in POLICIES {
            let limits = Limits::new().with_duplicate_keys(policy);
            assert_eq!(
                check_all_chunkings(body.as_bytes(), limits),
                err(ErrorKind::InvalidMultipart, at),
                "{body:?}"
            );
        }
    }
    // No usable boundary in the content type.
    let mut extractor =
        MultipartExtractor::from_content_type(b"multipart/form-data; boundary=", Limits::new());
    assert_eq!(
        extractor.feed(&Bytes::from_static(b"--x")),
        err(ErrorKind::InvalidMultipart, 0).map(|_| Progress::NeedMore)
    );
}

#[test]
fn under_reject_the_rest_is_checked_first_wins_stops() {
    let mut body = part("model", None, b"m");
    body.extend_from_slice(b"------bbrTestBoundary7MA4YWxk\r\nbroken\r\n\r\n");
    let at = part("model", None, b"m").len() + 31 + 6;
    assert_eq!(
        check_all_chunkings(&body, Limits::new()),
        err(ErrorKind::InvalidMultipart, at)
    );
    let first = Limits::new().with_duplicate_keys(DuplicateKeys::FirstWins);
    assert_eq!(found(&check_all_chunkings(&body, first)), Some("m"));
}

fn headers_part(lines: &[String]) -> Vec<u8> {
    let mut out = b"------bbrTestBoundary7MA4YWxk\r\n".to_vec();
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\nwhisper-1\r\n------bbrTestBoundary7MA4YWxk--");
    out
}

#[test]
fn part_header_count_at_and_one_past() {
    let mut lines = vec!["Content-Disposition: form-data; name=model".to_owned()];
    lines.extend((1..16).map(|i| format!("x-h{i}: v")));
    let body = headers_part(&lines);
    assert_eq!(
        found(&check_all_chunkings(&body, Limits::new())),
        Some("whisper-1")
    );
    lines.push("x-h16: v".to_owned());
    let body = headers_part(&lines);
    let at = body.windows(6).position(|w| w == b"x-h16:").unwrap();
    assert_eq!(
        check_all_chunkings(&body, Limits::new()),
        err(ErrorKind::TooManyPartHeaders { limit: 16 }, at)
    );
}

#[test]
fn part_header_bytes_at_and_one_past() {
    let disposition = "Content-Disposition: form-data; name=model".to_owned();
    // The block: the disposition line, a filler line, the empty line.
    let fixed = disposition.len() + 2 + "x-fill: ".len() + 2 + 2;
    let filler = |n: usize| format!("x-fill: {}", "f".repeat(n));
    let at_limit = headers_part(&[
        disposition.clone(),
        filler(PartLimits::DEFAULT_MAX_HEADER_BYTES - fixed),
    ]);
    let mut extractor = MultipartExtractor::from_content_type(CT, Limits::new());
    assert!(matches!(
        extractor.feed(&Bytes::from(at_limit.clone())),
        Ok(Progress::Found(_))
    ));
    for size in [1, 7, 64, 1000] {
        assert_eq!(
            found(&drive(&chunked(&at_limit, size), Limits::new()).0),
            Some("whisper-1")
        );
    }
    let past = headers_part(&[
        disposition,
        filler(PartLimits::DEFAULT_MAX_HEADER_BYTES - fixed + 1),
    ]);
    let at = 31 + PartLimits::DEFAULT_MAX_HEADER_BYTES;
    for size in [1, 7, 64, 1000, past.len()] {
        assert_eq!(
            drive(&chunked(&past, size), Limits::new()).0,
            err(ErrorKind::PartHeadersTooLarge { limit: 8192 }, at),
            "chunks of {size}"
        );
    }
    // Configurable.
    let small = PartLimits::new().with_max_header_bytes(32);
    let mut extractor =
        MultipartExtractor::from_content_type(CT, Limits::new()).with_part_limits(small);
    let body = headers_part(&["Content-Disposition: form-data; name=model".to_owned()]);
    assert_eq!(
        extractor.feed(&Bytes::from(body)),
        Err(ExtractError::new(
            ErrorKind::PartHeadersTooLarge { limit: 32 },
            31 + 32
        ))
    );
}

#[test]
fn scan_and_body_limits() {
    let mut body = part("file", Some("a.wav"), &audio(1000));
    body.extend(part("model", None, b"whisper-1"));
    let body = close(body);
    let (_, decided) = drive(&chunked(&body, 1), Limits::new());
    let decided = decided.unwrap();
    let at = Limits::new().with_max_scan_bytes(decided);
    assert_eq!(found(&check_all_chunkings(&body, at)), Some("whisper-1"));
    let past = Limits::new().with_max_scan_bytes(decided - 1);
    for size in [1, 5, 64, body.len()] {
        assert_eq!(
            drive(&chunked(&body, size), past).0,
            err(
                ErrorKind::ScanLimit { limit: decided - 1 },
                decided as usize - 1
            )
        );
    }
    let len = body.len() as u64;
    for policy in POLICIES {
        let limits = Limits::new().with_duplicate_keys(policy);
        assert_eq!(
            found(&check_all_chunkings(&body, limits.with_max_body_bytes(len))),
            Some("whisper-1")
        );
        assert_eq!(
            drive(&chunked(&body, 3), limits.with_max_body_bytes(len - 1)).0,
            err(ErrorKind::BodyTooLarge { limit: len - 1 }, len as usize - 1)
        );
    }
}

#[test]
fn content_type_parsing() {
    for (ct, boundary) in [
        (&b"multipart/form-data; boundary=abc"[..], &b"abc"[..]),
        (
            b"multipart/form-data;boundary=\"quoted; with space\"",
            b"quoted; with space",
        ),
        (
            b"  MULTIPART/FORM-DATA ; charset=utf-8 ; BOUNDARY=x ;",
            b"x",
        ),
        (b"multipart/form-data; boundary=\"a\\\"b\"", b"a\"b"),
    ] {
        assert_eq!(
            Boundary::from_content_type(ct).unwrap().as_bytes(),
            boundary,
            "{ct:?}"
        );
    }
    for (ct, error) in [
        (
            &b"multipart/mixed; boundary=x"[..],
            ContentTypeError::NotFormData,
        ),
        (
            b"multipart/form-data; charset=utf-8",
            ContentTypeError::MissingBoundary,
        ),
        (
            b"multipart/form-data; boundary=\"\"",
            ContentTypeError::InvalidBoundary,
        ),
        (
            b"multipart/form-data; boundary=a; boundary=b",
            ContentTypeError::MalformedParameters,
        ),
        (
            b"multipart/form-data; boundary",
            ContentTypeError::MalformedParameters,
        ),
        (
            b"multipart/form-data; boundary=\"open",
            ContentTypeError::MalformedParameters,
        ),
    ] {
        assert_eq!(Boundary::from_content_type(ct), Err(error), "{ct:?}");
    }
}

#[test]
fn large_file_with_model_last_holds_no_file_bytes() {
    // 16 MiB of file in 64 KiB chunks, then the model: decided at the
    // end, and the extractor's buffers never grew past the limits.
    let mut head = part("file", Some("big.wav"), b"");
    head.truncate(head.len() - 2);
    let mut extractor = MultipartExtractor::from_content_type(CT, Limits::new());
    assert_eq!(
        extractor.feed(&Bytes::from(head)).unwrap(),
        Progress::NeedMore
    );
    let block = Bytes::from(audio(64 * 1024));
    for _ in 0..256 {
        assert_eq!(extractor.feed(&block).unwrap(), Progress::NeedMore);
        assert!(extractor.value_buf.capacity() <= 256 && extractor.line.capacity() <= 8192);
    }
    let tail = Bytes::from(close(
        [b"\r\n".to_vec(), part("model", None, b"whisper-1")].concat(),
    ));
    let Progress::Found(model) = extractor.feed(&tail).unwrap() else {
        panic!()
    };
    assert_eq!(model.as_str(), "whisper-1");
    assert_eq!(extractor.finish().unwrap(), Outcome::Found(model));
    assert!(extractor.line.capacity() <= 8192);
}

mod oracle {
    //! Property test against multer, an independent multipart parser.

    use futures_util::stream;
    use proptest::prelude::*;

    use super::*;

    /// A field as multer reports it: name, file name, value.
    type Field = (String, Option<String>, Vec<u8>);

    /// What multer makes of the body: the fields' names and values in
    /// order (files with their file name), or None when it refuses it.
    fn multer_fields(body: &[u8], chunk: usize) -> Option<Vec<Field>> {
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(chunk.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut form =
                multer::Multipart::new(stream::iter(chunks), "----bbrTestBoundary7MA4YWxk");
            let mut fields = Vec::new();
            loop {
                match form.next_field().await {
                    Ok(Some(field)) => {
                        let name = field.name()?.to_owned();
                        let file = field.file_name().map(str::to_owned);
                        let value = field.bytes().await.ok()?;
                        fields.push((name, file, value.to_vec()));
                    }
                    Ok(None) => return Some(fields),
                    Err(_) => return None,
                }
            }
        })
    }

    fn field_strategy() -> impl Strategy<Value = (String, bool, Vec<u8>)> {
        let name = prop_oneof![
            Just("model".to_owned()),
            Just("file".to_owned()),
            Just("prompt".to_owned()),
            Just("Model".to_owned()),
            "[a-z_]{1,8}",
        ];
        let value = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80),
            "[a-zA-Z0-9./:_-]{1,40}".prop_map(String::into_bytes),
            proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'-'), Just(b'x')],
                0..60
            ),
            (0usize..160).prop_map(audio),
        ];
        (name, any::<bool>(), value)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn agrees_with_multer(fields in proptest::collection::vec(field_strategy(), 0..5), chunk in 1usize..40) {
            let mut body = Vec::new();
            for (name, is_file, value) in &fields {
                body.extend(part(name, is_file.then_some("f.bin"), value));
            }
            let body = close(body);
            let limits = Limits::new().with_duplicate_keys(DuplicateKeys::LastWins);
            let (ours, _) = drive(&chunked(&body, chunk), limits);
            let theirs = multer_fields(&body, chunk).expect("multer parses what we generate");
            // The last `model` field as multer sees it, checked by the same rules.
            let expected = match theirs.iter().rev().find(|(name, _, _)| name == "model") {
                None => Ok(None),
                Some((_, Some(_), _)) => Err(ErrorKind::ModelNotAString),
                Some((_, None, value)) => crate::validate_model_name(value, &limits)
                    .map(|m| Some(m.to_owned()))
                    .map_err(|e| e.kind()),
            };
            let ours = ours.map(|o| o.model().map(|m| m.as_str().to_owned())).map_err(|e| e.kind());
            prop_assert_eq!(ours, expected);
            // Under reject, a second model field is the only difference.
            let models: Vec<_> = theirs.iter().filter(|(name, _, _)| name == "model").collect();
            let (reject, _) = drive(&chunked(&body, chunk), Limits::new());
            let first_valid = models.first().is_some_and(|(_, file, value)| {
                file.is_none() && crate::validate_model_name(value, &limits).is_ok()
            });
            if models.len() > 1 && first_valid {
                prop_assert_eq!(reject.unwrap_err().kind(), ErrorKind::DuplicateModel);
            }
        }

        #[test]
        fn never_panics_and_chunking_does_not_matter(body in proptest::collection::vec(any::<u8>(), 0..200), cut in 0usize..200) {
            let mut framed = b"------bbrTestBoundary7MA4YWxk\r\n".to_vec();
            framed.extend(body);
            for policy in POLICIES {
                let limits = Limits::new().with_duplicate_keys(policy);
                let whole = drive(&[Bytes::from(framed.clone())], limits).0;
                prop_assert_eq!(drive(&split(&framed, &[cut]), limits).0, whole.clone());
                prop_assert_eq!(drive(&chunked(&framed, 1), limits).0, whole);
            }
        }
    }
}
