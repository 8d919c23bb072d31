//! The body extractor: every encoding at every chunking of small bodies,
//! large compressed bodies, bombs, windows, truncated and corrupt streams,
//! the dispatch on the headers.

use std::io::Write;

use bytes::Bytes;

use super::*;
use crate::encoding::{Coding, ContentEncoding, NotDecoded};
use crate::{ErrorClass, ErrorKind, ExtractError, Limits, Outcome, Progress, extract_model};

const POLICIES: [DuplicateKeys; 3] = [
    DuplicateKeys::Reject,
    DuplicateKeys::FirstWins,
    DuplicateKeys::LastWins,
];

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn br_with(data: &[u8], quality: u32, lgwin: u32) -> Vec<u8> {
    let mut encoder = brotli::CompressorWriter::new(Vec::new(), 4096, quality, lgwin);
    encoder.write_all(data).unwrap();
    encoder.into_inner()
}

fn br(data: &[u8]) -> Vec<u8> {
    br_with(data, 5, 22)
}

fn zstd_with(data: &[u8], window_log: Option<u32>, checksum: bool) -> Vec<u8> {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    if let Some(log) = window_log {
        encoder.window_log(log).unwrap();
    }
    encoder.include_checksum(checksum).unwrap();
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd_with(data, None, true)
}

fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => gzip(data),
        Coding::Deflate => deflate(data),
        Coding::Br => br(data),
        Coding::Zstd => zstd(data),
    }
}

/// `data` encoded with every coding of `header`, in its order.
fn encode_all(header: &str, data: &[u8]) -> Vec<u8> {
    let encoding = ContentEncoding::parse(header.as_bytes()).unwrap();
    encoding
        .codings()
        .iter()
        .fold(data.to_vec(), |data, &coding| encode(coding, &data))
}

fn drive(
    content_type: Option<&[u8]>,
    encoding: Option<&str>,
    chunks: &[Bytes],
    limits: Limits,
    decode_limits: DecodeLimits,
) -> Result<Outcome, ExtractError> {
    let mut body = BodyExtractor::for_content(content_type, encoding.map(str::as_bytes), limits)
        .with_decode_limits(decode_limits);
    let mut early = None;
    for chunk in chunks {
        match body.feed(chunk) {
            Ok(Progress::NeedMore) => assert!(early.is_none()),
            Ok(Progress::Decided) => assert!(early.is_some()),
            Ok(Progress::Found(model)) => {
                assert!(
                    early.replace(Outcome::Found(model)).is_none(),
                    "decided twice"
                );
            }
            Ok(Progress::Absent) => {
                assert!(early.replace(Outcome::Absent).is_none(), "decided twice")
            }
            Err(error) => {
                assert_eq!(
                    body.feed(&Bytes::from_static(b"x")),
                    Err(error.clone()),
                    "sticky"
                );
                assert_eq!(body.finish(), Err(error.clone()), "sticky");
                return Err(error);
            }
        }
    }
    let verdict = body.finish();
    if let (Some(early), Ok(outcome)) = (&early, &verdict) {
        assert_eq!(early, outcome);
    }
    verdict
}

fn chunked(body: &[u8], size: usize) -> Vec<Bytes> {
    body.chunks(size.max(1))
        .map(Bytes::copy_from_slice)
        .collect()
}

fn split_at(body: &[u8], cut: usize) -> Vec<Bytes> {
    [&body[..cut], &body[cut..]]
        .into_iter()
        .filter(|part| !part.is_empty())
        .map(Bytes::copy_from_slice)
        .collect()
}

const ENCODINGS: [&str; 7] = [
    "gzip",
    "deflate",
    "br",
    "zstd",
    "x-gzip",
    "gzip, br",
    "zstd,deflate",
];

const FORM_TYPE: &[u8] = b"multipart/form-data; boundary=b0undary";

fn small_bodies() -> Vec<(Option<&'static [u8]>, Vec<u8>)> {
    vec![
        (None, br#"{"model":"food-review-1","messages":[{"role":"user","content":"hi"}]}"#.to_vec()),
        (
            Some(b"application/json"),
            br#"{"messages":[{"role":"user","content":"caf\u00e9 \"q\""}],"model":"ski-resorts"}"#.to_vec(),
        ),
        (None, br#"{"stream":true}"#.to_vec()),
        (None, br#"{"model":"a","model":"b"}"#.to_vec()),
        (None, br#"{"model":"a""#.to_vec()),
        (
            Some(FORM_TYPE),
            b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n--b0undar\r\n--b0undary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b0undary--\r\n".to_vec(),
        ),
    ]
}

#[test]
fn every_encoding_at_every_chunking_matches_the_plain_body() {
    for (content_type, plain) in small_bodies() {
        for policy in POLICIES {
            let limits = Limits::new().with_duplicate_keys(policy);
            let expected = drive(
                content_type,
                None,
                &[Bytes::from(plain.clone())],
                limits,
                DecodeLimits::new(),
            );
            for encoding in ENCODINGS {
                let encoded = encode_all(encoding, &plain);
                let run = |chunks: &[Bytes]| {
                    drive(
                        content_type,
                        Some(encoding),
                        chunks,
                        limits,
                        DecodeLimits::new(),
                    )
                };
                let mut runs = vec![run(&[Bytes::from(encoded.clone())])];
                runs.extend((0..=encoded.len()).map(|cut| run(&split_at(&encoded, cut))));
                runs.extend((1..=64).map(|size| run(&chunked(&encoded, size))));
                for verdict in runs {
                    // The stream is whole, so the verdict is the plain
                    // body's (also for the truncated JSON body).
                    assert_eq!(verdict, expected, "{encoding} {policy:?} {plain:?}");
                }
            }
        }
    }
}

#[test]
fn the_header_picks_the_extractor() {
    let limits = Limits::new();
    assert_eq!(
        BodyExtractor::for_content(None, None, limits).kind(),
        BodyKind::Json
    );
    assert_eq!(
        BodyExtractor::for_content(Some(b"application/x-www-form-urlencoded"), None, limits).kind(),
        BodyKind::Json
    );
    assert_eq!(
        BodyExtractor::for_content(Some(FORM_TYPE), Some(b"gzip"), limits).kind(),
        BodyKind::Multipart
    );
    for (header, reason) in [
        (&b"compress"[..], NotDecoded::Unknown),
        (b"gzip, snappy", NotDecoded::Unknown),
        (b"gzip, br, zstd", NotDecoded::TooMany),
    ] {
        let mut body = BodyExtractor::for_content(None, Some(header), limits);
        assert_eq!(body.kind(), BodyKind::NotDecoded(reason));
        // Decided at once, the missing-model way, whatever the bytes.
        assert_eq!(
            body.feed(&Bytes::from_static(b"\x00\x01")),
            Ok(Progress::Absent)
        );
        assert_eq!(
            body.feed(&Bytes::from_static(b"\x02")),
            Ok(Progress::Decided)
        );
        assert_eq!(body.finish(), Ok(Outcome::Absent));
        let mut empty = BodyExtractor::for_content(None, Some(header), limits);
        assert_eq!(empty.finish(), Ok(Outcome::Absent));
    }
    // A form without a boundary is a malformed form.
    let mut body = BodyExtractor::for_content(Some(b"multipart/form-data"), None, limits);
    assert_eq!(
        body.feed(&Bytes::from_static(b"--x")).unwrap_err().kind(),
        ErrorKind::InvalidMultipart
    );
}

/// A chat body of about `size` bytes of varied base64-like text, `model` last.
fn large_chat(size: usize) -> Vec<u8> {
    let mut body = br#"{"messages":[{"role":"user","content":""#.to_vec();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ ";
    while body.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        body.push(alphabet[(state % alphabet.len() as u64) as usize]);
    }
    body.extend_from_slice(br#""}],"model":"deepseek/vllm-deepseek-r1"}"#);
    body
}

#[test]
fn eight_mib_compressed_with_model_last() {
    let plain = large_chat(8 << 20);
    for encoding in ["gzip", "br", "zstd"] {
        let encoded = encode_all(encoding, &plain);
        let chunks = chunked(&encoded, 16 * 1024);
        let mut body = BodyExtractor::for_content(None, Some(encoding.as_bytes()), Limits::new());
        let mut found_at = None;
        for (index, chunk) in chunks.iter().enumerate() {
            if let Progress::Found(model) = body.feed(chunk).unwrap() {
                assert_eq!(model.as_str(), "deepseek/vllm-deepseek-r1");
                found_at = Some(index);
            }
        }
        // Decided by the last chunks (the model is at the end), and the
        // whole stream checked.
        assert!(found_at.unwrap() + 2 >= chunks.len(), "{encoding}");
        assert_eq!(body.decoded_bytes(), plain.len() as u64);
        assert!(matches!(body.finish(), Ok(Outcome::Found(_))));
    }
}

/// `{"pad":"000…0","model":"m"}` with `zeros` zero digits, encoded with
/// `header` without ever holding it: the encoder is fed 1 MiB at a time.
fn bomb(header: &str, zeros: usize) -> Vec<u8> {
    fn feed(writer: &mut dyn Write, zeros: usize) {
        writer.write_all(br#"{"pad":""#).unwrap();
        let block = vec![b'0'; 1 << 20];
        let mut left = zeros;
        while left > 0 {
            let n = left.min(block.len());
            writer.write_all(&block[..n]).unwrap();
            left -= n;
        }
        writer.write_all(br#"","model":"m"}"#).unwrap();
    }
    match header {
        "zstd" => {
            let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
            feed(&mut encoder, zeros);
            encoder.finish().unwrap()
        }
        "br" => {
            let mut encoder = brotli::CompressorWriter::new(Vec::new(), 1 << 16, 5, 22);
            feed(&mut encoder, zeros);
            encoder.into_inner()
        }
        "gzip, gzip" => {
            let inner = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let mut outer = flate2::write::GzEncoder::new(inner, flate2::Compression::best());
            feed(&mut outer, zeros);
            outer.finish().unwrap().finish().unwrap()
        }
        _ => unreachable!(),
    }
}

#[test]
fn a_gibibyte_bomb_is_refused_after_a_mebibyte() {
    for header in ["zstd", "br", "gzip, gzip"] {
        let encoded = bomb(header, 1 << 30);
        assert!(
            encoded.len() < 64 * 1024,
            "{header}: {} bytes",
            encoded.len()
        );
        for size in [encoded.len(), 1024, 7] {
            let mut body = BodyExtractor::for_content(None, Some(header.as_bytes()), Limits::new());
            let mut error = None;
            for chunk in chunked(&encoded, size) {
                if let Err(e) = body.feed(&chunk) {
                    error = Some(e);
                    break;
                }
            }
            let error = error.expect("refused before the end");
            assert_eq!(
                error.kind(),
                ErrorKind::ExpansionRatio { limit: 100 },
                "{header}"
            );
            assert_eq!(error.kind().class(), ErrorClass::TooLarge);
            // Decoding stopped at the first piece past the floor: bounded
            // work and memory, whatever the bomb's size.
            let decoded = body.decoded_bytes();
            assert!(decoded > DecodeLimits::DEFAULT_RATIO_FLOOR, "{header}");
            assert!(
                decoded <= DecodeLimits::DEFAULT_RATIO_FLOOR + 64 * 1024,
                "{header}: {decoded}"
            );
            assert!(body.decoded.capacity() <= 64 * 1024);
        }
        // Without the ratio, the scan limit still stops it, in decoded bytes.
        let no_ratio = DecodeLimits::new().with_max_ratio(u32::MAX);
        let verdict = drive(
            None,
            Some(header),
            &chunked(&encoded, 4096),
            Limits::new(),
            no_ratio,
        );
        assert_eq!(
            verdict,
            Err(ExtractError::new(
                ErrorKind::ScanLimit { limit: 32 << 20 },
                32 << 20
            ))
        );
    }
}

#[test]
fn ratio_at_and_one_past() {
    // The smallest ratio this body passes with: it passes at it, and
    // fails one below it, under every chunking.
    let plain = bomb("zstd", 256 * 1024);
    let plain = {
        let mut body = BodyExtractor::for_content(None, Some(b"zstd"), Limits::new());
        body.feed(&Bytes::from(plain.clone())).unwrap();
        assert!(body.finish().is_ok());
        plain
    };
    let limits_at = |ratio: u32| {
        DecodeLimits::new()
            .with_ratio_floor(0)
            .with_max_ratio(ratio)
    };
    let passes = |ratio: u32, size: usize| {
        drive(
            None,
            Some("zstd"),
            &chunked(&plain, size),
            Limits::new(),
            limits_at(ratio),
        )
        .is_ok()
    };
    let (mut low, mut high) = (1u32, u32::MAX);
    while low < high {
        let mid = low + (high - low) / 2;
        if passes(mid, plain.len()) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    assert!(low > 1);
    assert!(passes(low, plain.len()));
    let verdict = drive(
        None,
        Some("zstd"),
        &[Bytes::from(plain.clone())],
        Limits::new(),
        limits_at(low - 1),
    );
    assert_eq!(
        verdict.unwrap_err().kind(),
        ErrorKind::ExpansionRatio { limit: low - 1 }
    );
}

#[test]
fn windows_at_and_over_the_cap() {
    let plain = br#"{"model":"m","messages":[]}"#;
    let zstd_window = |log: u32| zstd_with(plain, Some(log), true);
    let run = |encoding: &str, encoded: &[u8], cap: u64| {
        drive(
            None,
            Some(encoding),
            &chunked(encoded, 3),
            Limits::new(),
            DecodeLimits::new().with_max_window(cap),
        )
    };
    // zstd: the window descriptor against the cap (a power of two).
    assert!(run("zstd", &zstd_window(23), 8 << 20).is_ok());
    assert_eq!(
        run("zstd", &zstd_window(24), 8 << 20).unwrap_err().kind(),
        ErrorKind::DecoderWindow { limit: 8 << 20 }
    );
    assert_eq!(
        run("zstd", &zstd_window(27), 8 << 20)
            .unwrap_err()
            .kind()
            .class(),
        ErrorClass::TooLarge
    );
    // brotli: WBITS from the first byte, window 2^WBITS - 16.
    let br24 = br_with(plain, 5, 24);
    let br23 = br_with(plain, 5, 23);
    assert!(run("br", &br23, 8 << 20).is_ok());
    assert!(run("br", &br23, (8 << 20) - 16).is_ok());
    assert_eq!(
        run("br", &br23, (8 << 20) - 17).unwrap_err(),
        ExtractError::new(
            ErrorKind::DecoderWindow {
                limit: (8 << 20) - 17
            },
            0
        )
    );
    assert_eq!(
        run("br", &br24, 8 << 20).unwrap_err().kind(),
        ErrorKind::DecoderWindow { limit: 8 << 20 }
    );
    assert!(run("br", &br24, 16 << 20).is_ok());
}

#[test]
fn truncated_streams() {
    let plain = br#"{"messages":[{"role":"user","content":"hello"}],"model":"movie-critique"}"#;
    for encoding in ["gzip", "deflate", "br", "zstd", "gzip, zstd"] {
        let encoded = encode_all(encoding, plain);
        for len in 0..encoded.len() {
            for policy in POLICIES {
                let limits = Limits::new().with_duplicate_keys(policy);
                let verdict = drive(
                    None,
                    Some(encoding),
                    &chunked(&encoded[..len], 5),
                    limits,
                    DecodeLimits::new(),
                );
                match verdict {
                    // First-wins may decide before the cut, and reads no further.
                    Ok(outcome) => {
                        assert_eq!(policy, DuplicateKeys::FirstWins, "{encoding} len {len}");
                        assert_eq!(outcome.model().unwrap().as_str(), "movie-critique");
                    }
                    Err(error) => {
                        assert_eq!(
                            error.kind(),
                            ErrorKind::InvalidEncoding,
                            "{encoding} len {len}"
                        );
                        assert_eq!(error.kind().class(), ErrorClass::InvalidJson);
                    }
                }
            }
        }
    }
    // An empty body with an encoding is no stream at all.
    assert_eq!(
        drive(None, Some("gzip"), &[], Limits::new(), DecodeLimits::new()),
        Err(ExtractError::new(ErrorKind::InvalidEncoding, 0))
    );
}

#[test]
fn corrupt_streams() {
    let plain = large_chat(4096);
    for encoding in ["gzip", "deflate", "br", "zstd"] {
        let encoded = encode_all(encoding, &plain);
        // gzip's MTIME, XFL and OS bytes are informative, not checked.
        let unchecked = if encoding == "gzip" { 4..10 } else { 0..0 };
        for at in (0..encoded.len())
            .step_by(7)
            .filter(|at| !unchecked.contains(at))
        {
            let mut corrupt = encoded.clone();
            corrupt[at] ^= 0x5a;
            let verdict = drive(
                None,
                Some(encoding),
                &chunked(&corrupt, 64),
                Limits::new(),
                DecodeLimits::new(),
            );
            match (encoding, verdict) {
                // gzip and deflate carry a checksum, and so does this zstd
                // frame: every flipped byte is found.
                (_, Err(error)) => assert!(
                    matches!(
                        error.kind().class(),
                        ErrorClass::InvalidJson | ErrorClass::InvalidModel
                    ),
                    "{encoding} at {at}: {error}"
                ),
                // Brotli has no checksum: a flip inside a literal may
                // decode to another valid body.
                ("br", Ok(_)) => {}
                (_, Ok(outcome)) => panic!("{encoding}: corruption at {at} not found: {outcome:?}"),
            }
        }
        // Garbage after a complete stream.
        let mut trailing = encoded.clone();
        trailing.extend_from_slice(b"\x01garbage");
        let verdict = drive(
            None,
            Some(encoding),
            &[Bytes::from(trailing)],
            Limits::new(),
            DecodeLimits::new(),
        );
        assert_eq!(
            verdict.unwrap_err().kind(),
            ErrorKind::InvalidEncoding,
            "{encoding}"
        );
    }
}

#[test]
fn concatenated_members_and_frames() {
    let plain = br#"{"model":"m","messages":[{"role":"user","content":"split across members"}]}"#;
    let (a, b) = plain.split_at(20);
    for (encoding, encoded) in [
        ("gzip", [gzip(a), gzip(b)].concat()),
        ("zstd", [zstd(a), zstd(b)].concat()),
    ] {
        for size in 1..=32 {
            let verdict = drive(
                None,
                Some(encoding),
                &chunked(&encoded, size),
                Limits::new(),
                DecodeLimits::new(),
            );
            assert_eq!(
                verdict,
                extract_model(&Bytes::from_static(plain), &Limits::new()),
                "{encoding} {size}"
            );
        }
    }
}

#[test]
fn limits_count_decoded_and_raw_bytes() {
    let plain = large_chat(100_000);
    let encoded = gzip(&plain);
    // Decided by the closing quote of the model, before the last `}`.
    let decided = plain.len() as u64 - 1;
    // The scan limit counts decoded bytes: at the decision byte, and one short.
    let at = Limits::new().with_max_scan_bytes(decided);
    assert!(
        drive(
            None,
            Some("gzip"),
            &chunked(&encoded, 999),
            at,
            DecodeLimits::new()
        )
        .is_ok()
    );
    let short = Limits::new().with_max_scan_bytes(decided - 1);
    assert_eq!(
        drive(
            None,
            Some("gzip"),
            &chunked(&encoded, 999),
            short,
            DecodeLimits::new()
        ),
        Err(ExtractError::new(
            ErrorKind::ScanLimit { limit: decided - 1 },
            decided - 1
        ))
    );
    // The body limit counts raw bytes too (here, below the decoded size).
    let raw = encoded.len() as u64;
    let raw_limit = Limits::new().with_max_body_bytes(raw - 1);
    assert_eq!(
        drive(
            None,
            Some("gzip"),
            &chunked(&encoded, 999),
            raw_limit,
            DecodeLimits::new()
        )
        .unwrap_err()
        .kind(),
        ErrorKind::BodyTooLarge { limit: raw - 1 }
    );
}

#[test]
fn first_wins_stops_decoding_at_the_decision() {
    let mut plain = br#"{"model":"m","rest":""#.to_vec();
    plain.extend(
        large_chat(200_000)
            .iter()
            .filter(|b| b.is_ascii_alphanumeric()),
    );
    plain.extend_from_slice(br#""}"#);
    let mut encoded = gzip(&plain);
    let len = encoded.len();
    encoded[len / 2] ^= 0xff; // corrupt, after the decision
    let first = Limits::new().with_duplicate_keys(DuplicateKeys::FirstWins);
    let mut body = BodyExtractor::for_content(None, Some(b"gzip"), first);
    let chunks = chunked(&encoded, 4096);
    assert!(matches!(body.feed(&chunks[0]), Ok(Progress::Found(_))));
    for chunk in &chunks[1..] {
        assert_eq!(body.feed(chunk), Ok(Progress::Decided));
    }
    assert!(body.decoded_bytes() < 64 * 1024);
    assert_eq!(body.finish().unwrap().model().unwrap().as_str(), "m");
    // Under reject the corruption is found.
    let verdict = drive(
        None,
        Some("gzip"),
        &chunks,
        Limits::new(),
        DecodeLimits::new(),
    );
    assert!(verdict.is_err());
}

#[test]
fn a_plain_body_is_the_extractor_itself() {
    // Errors in byte order, the body limit included: an invalid byte
    // before the limit wins, in the chunk that also passes it.
    let body = Bytes::from_static(br#"{"model":"m"]   "#);
    let limits = Limits::new().with_max_body_bytes(14);
    for (content_type, body, limits) in [
        (None, body.clone(), limits),
        (Some(&b"text/plain"[..]), body, Limits::new()),
        (None, Bytes::from_static(br#"{"model":"m"}"#), Limits::new()),
    ] {
        let expected = extract_model(&body, &limits);
        assert_eq!(
            drive(
                content_type,
                None,
                std::slice::from_ref(&body),
                limits,
                DecodeLimits::new()
            ),
            expected
        );
        for size in 1..=body.len() {
            assert_eq!(
                drive(
                    content_type,
                    None,
                    &chunked(&body, size),
                    limits,
                    DecodeLimits::new()
                ),
                expected
            );
        }
    }
}
