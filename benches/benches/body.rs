//! Benchmark group `body`: `model` from multipart uploads and compressed
//! bodies through [`BodyExtractor`], against what peers do (buffer and
//! decode the whole body, then parse it).
//!
//! Ids are `body/<case>/<implementation>`:
//!
//! | case | body |
//! | --- | --- |
//! | `multipart_model_first_16MiB` | a form: `model`, then a 16 MiB file |
//! | `multipart_model_after_16MiB` | a form: a 16 MiB file, then `model` |
//! | `gzip_chat_{1MiB,8MiB}_{first,last}`, `zstd_...` | the chat body of the `extract` group, compressed |
//!
//! | implementation | what is measured |
//! | --- | --- |
//! | `bbr_first_wins` | `BodyExtractor` fed 64 KiB chunks (16 KiB for compressed bodies) until it decides |
//! | `bbr_reject` | every chunk, then `finish` (the whole body decoded and checked) |
//! | `multer` | multer (async, the parser behind axum's `Multipart`) reading every field to the model's |
//! | `decode_then_serde_json` | the whole body decoded into one buffer, then `serde_json` into a struct with only `model` |
//! | `decode_only_{libzstd,ruzstd,miniz_oxide,brotli}` | decoding the whole body into one buffer (for the choice of decoders) |
//!
//! Every benchmark checks its answer before it measures.
//! `BBR_BENCH_QUICK=1` shortens warm-up and measurement.

use std::hint::black_box;
use std::io::{Read, Write};
use std::time::Duration;

use bbr_benches::{KIB, MIB, MODEL, Position, chat_body};
use bbr_core::{BodyExtractor, DuplicateKeys, Limits, Outcome, Progress};
use bytes::Bytes;
use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use serde::Deserialize;

const FORM_TYPE: &[u8] = b"multipart/form-data; boundary=------------------------d74496d66958873e";
const BOUNDARY: &str = "------------------------d74496d66958873e";
const WHISPER: &str = "whisper-1";

/// Decodes a whole body into one buffer.
type DecodeAll = fn(&[u8]) -> Vec<u8>;

#[derive(Deserialize)]
struct OnlyModel {
    model: Option<String>,
}

fn quick() -> bool {
    std::env::var("BBR_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, bytes: usize) {
    let (warm_up, measurement) = if quick() {
        (Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(3))
    };
    group
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(10)
        .throughput(Throughput::Bytes(bytes as u64));
}

/// A curl-style form: the `model` field before or after a 16 MiB file.
fn form(model_first: bool) -> Vec<u8> {
    let field = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{WHISPER}\r\n"
    );
    let mut file = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    file.extend((0..16 * MIB).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    }));
    file.extend_from_slice(b"\r\n");
    let mut body = Vec::new();
    if model_first {
        body.extend_from_slice(field.as_bytes());
        body.extend(file);
    } else {
        body.extend(file);
        body.extend_from_slice(field.as_bytes());
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn split(body: &[u8], size: usize) -> Vec<Bytes> {
    body.chunks(size).map(Bytes::copy_from_slice).collect()
}

/// Feeds chunks until the decision (first-wins) or all of them and
/// `finish` (reject); the model found.
fn bbr(
    content_type: Option<&[u8]>,
    encoding: Option<&[u8]>,
    chunks: &[Bytes],
    policy: DuplicateKeys,
) -> Option<String> {
    let mut body = BodyExtractor::for_content(
        content_type,
        encoding,
        Limits::new().with_duplicate_keys(policy),
    );
    for chunk in chunks {
        match body.feed(chunk).ok()? {
            Progress::Found(model) if policy == DuplicateKeys::FirstWins => {
                return Some(model.as_str().to_owned());
            }
            _ => {}
        }
    }
    match body.finish().ok()? {
        Outcome::Found(model) => Some(model.as_str().to_owned()),
        _ => None,
    }
}

fn multer_model(chunks: &[Bytes], runtime: &tokio::runtime::Runtime) -> Option<String> {
    let stream = futures_util::stream::iter(chunks.iter().cloned().map(Ok::<_, std::io::Error>));
    runtime.block_on(async {
        let mut form = multer::Multipart::new(stream, BOUNDARY);
        while let Some(field) = form.next_field().await.ok()? {
            if field.name() == Some("model") {
                return field.text().await.ok();
            }
            // Skip the file as a streaming server would: read and drop it.
            let mut field = field;
            while field.chunk().await.ok()?.is_some() {}
        }
        None
    })
}

fn multipart(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (model_first, case) in [
        (true, "multipart_model_first_16MiB"),
        (false, "multipart_model_after_16MiB"),
    ] {
        let body = form(model_first);
        let chunks = split(&body, 64 * KIB);
        let mut group = c.benchmark_group(format!("body/{case}"));
        configure(&mut group, body.len());
        for policy in [DuplicateKeys::FirstWins, DuplicateKeys::Reject] {
            assert_eq!(
                bbr(Some(FORM_TYPE), None, &chunks, policy).as_deref(),
                Some(WHISPER)
            );
            let name = if policy == DuplicateKeys::FirstWins {
                "bbr_first_wins"
            } else {
                "bbr_reject"
            };
            group.bench_function(name, |b| {
                b.iter(|| bbr(Some(FORM_TYPE), None, black_box(&chunks), policy))
            });
        }
        assert_eq!(multer_model(&chunks, &runtime).as_deref(), Some(WHISPER));
        group.bench_function("multer", |b| {
            b.iter(|| multer_model(black_box(&chunks), &runtime))
        });
        group.finish();
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn unzstd(data: &[u8]) -> Vec<u8> {
    zstd::decode_all(data).unwrap()
}

fn unzstd_ruzstd(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut source = data;
    ruzstd::decoding::StreamingDecoder::new(&mut source)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn unbrotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(data, 64 * KIB)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn serde_model(decoded: &[u8]) -> Option<String> {
    serde_json::from_slice::<OnlyModel>(decoded).ok()?.model
}

fn compressed(c: &mut Criterion) {
    let sizes = [MIB, 8 * MIB];
    for size in sizes {
        for position in [Position::First, Position::Last] {
            let plain = chat_body(size, position);
            let label = format!(
                "{}MiB_{}",
                size / MIB,
                if position == Position::First {
                    "first"
                } else {
                    "last"
                }
            );
            let encoded: [(&str, &[u8], Vec<u8>, DecodeAll); 2] = [
                ("gzip", b"gzip", gzip(&plain), gunzip),
                (
                    "zstd",
                    b"zstd",
                    zstd::encode_all(&plain[..], 3).unwrap(),
                    unzstd,
                ),
            ];
            for (name, header, bytes, decode) in encoded {
                let chunks = split(&bytes, 16 * KIB);
                let mut group = c.benchmark_group(format!("body/{name}_chat_{label}"));
                configure(&mut group, plain.len());
                for policy in [DuplicateKeys::FirstWins, DuplicateKeys::Reject] {
                    assert_eq!(
                        bbr(None, Some(header), &chunks, policy).as_deref(),
                        Some(MODEL)
                    );
                    let id = if policy == DuplicateKeys::FirstWins {
                        "bbr_first_wins"
                    } else {
                        "bbr_reject"
                    };
                    group.bench_function(id, |b| {
                        b.iter(|| bbr(None, Some(header), black_box(&chunks), policy))
                    });
                }
                assert_eq!(serde_model(&decode(&bytes)).as_deref(), Some(MODEL));
                group.bench_function("decode_then_serde_json", |b| {
                    b.iter(|| serde_model(&decode(black_box(&bytes))))
                });
                if position == Position::Last && size == 8 * MIB {
                    let decoders: Vec<(&str, DecodeAll)> = match name {
                        "zstd" => vec![
                            ("decode_only_libzstd", unzstd),
                            ("decode_only_ruzstd", unzstd_ruzstd),
                        ],
                        _ => vec![("decode_only_miniz_oxide", gunzip)],
                    };
                    for (id, decoder) in decoders {
                        assert_eq!(decoder(&bytes).len(), plain.len());
                        group.bench_function(id, |b| b.iter(|| decoder(black_box(&bytes))));
                    }
                }
                group.finish();
            }
            if position == Position::Last && size == 8 * MIB {
                let mut encoder = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
                encoder.write_all(&plain).unwrap();
                let bytes = encoder.into_inner();
                let chunks = split(&bytes, 16 * KIB);
                let mut group = c.benchmark_group(format!("body/br_chat_{label}"));
                configure(&mut group, plain.len());
                assert_eq!(
                    bbr(None, Some(b"br"), &chunks, DuplicateKeys::Reject).as_deref(),
                    Some(MODEL)
                );
                group.bench_function("bbr_reject", |b| {
                    b.iter(|| bbr(None, Some(b"br"), black_box(&chunks), DuplicateKeys::Reject))
                });
                assert_eq!(unbrotli(&bytes).len(), plain.len());
                group.bench_function("decode_only_brotli", |b| {
                    b.iter(|| unbrotli(black_box(&bytes)))
                });
                group.finish();
            }
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    multipart(&mut criterion);
    compressed(&mut criterion);
    criterion.final_summary();
}
