//! Benchmark group `rewrite`: what replacing the requested model costs per
//! request, against not rewriting and against what peers do (parse the
//! whole body with serde_json, set `model`, serialise it again).
//!
//! Ids are `rewrite/<implementation>/prose/<size>/<position>`, on the
//! dense multilingual prose bodies of [`bbr_benches::prose_body`] (a
//! special byte every 8–20 bytes: the worst case for a scanner), 1 KiB
//! and 1 MiB, model first and last, cut in 16 KiB chunks (what hyper
//! hands over from a socket).
//!
//! | implementation | what is measured |
//! | --- | --- |
//! | `extract` | the baseline, no rewrite: `ModelExtractor` (default `Reject`) over every chunk, then `finish` |
//! | `extract_splice` | the same, then `ModelSplicer` over every chunk into the output piece list (what an adapter forwards) |
//! | `splice` | the splicer alone, given the span (the added cost by itself) |
//! | `serde_json_reserialise` | `serde_json::from_slice::<Value>` on the contiguous body, set `model`, `serde_json::to_vec` |
//!
//! Every implementation's output is checked before it is measured:
//! serde_json reads the spliced body as the original with only `model`
//! changed, equal to the re-serialised one, and the spliced length is the
//! announced one.
//!
//! `cargo bench -p bbr-benches --bench rewrite -- --warm-up-time 1
//! --measurement-time 3` takes about a minute. On the shared 2-core
//! machine (busy with other builds; medians):
//!
//! | body | `extract` | `extract_splice` | `splice` | `serde_json_reserialise` |
//! | --- | --- | --- | --- | --- |
//! | prose 1 KiB, model first | 1.42 µs | 1.26 µs | 0.69 µs | 12.9 µs |
//! | prose 1 KiB, model last | 1.66 µs | 3.09 µs | 0.77 µs | 12.4 µs |
//! | prose 1 MiB, model first | 2.13 ms | 2.29 ms | 8.1 µs | 25.8 ms |
//! | prose 1 MiB, model last | 2.95 ms | 3.04 ms | 7.7 µs | 16.5 ms |
//!
//! The splice costs well under a microsecond per 1 KiB request and
//! ~8 µs per 1 MiB (64 chunks: one piece list entry each); the
//! extraction the layer does anyway dominates; re-serialising costs 5–11
//! times the whole extraction.

use std::hint::black_box;

use bbr_benches::{BodySpec, Chunking, KIB, MIB, MODEL, Position, Shape, chunks};
use bbr_core::rewrite::ModelSplicer;
use bbr_core::{Limits, Model, ModelExtractor, Outcome};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use serde_json::Value;

/// The name the model is rewritten to (needs an escape, like a real
/// target may).
const TARGET: &str = "food-review-2 \"canary\"";

fn extract(chunks: &[Bytes]) -> Model {
    let mut extractor = ModelExtractor::new(Limits::new());
    for chunk in chunks {
        extractor.feed(chunk).expect("valid body");
    }
    match extractor.finish().expect("valid body") {
        Outcome::Found(model) => model,
        _ => panic!("no model"),
    }
}

fn splice(chunks: &[Bytes], model: &Model, out: &mut Vec<Bytes>) -> u64 {
    out.clear();
    let mut splicer = ModelSplicer::for_model(model, TARGET).expect("a span");
    for chunk in chunks {
        out.extend(splicer.push(chunk).expect("the span is in the body"));
    }
    splicer.finish().expect("complete");
    splicer.spliced_len(chunks.iter().map(|c| c.len() as u64).sum())
}

fn reserialise(body: &[u8]) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(body).expect("valid body");
    value["model"] = Value::String(TARGET.to_owned());
    serde_json::to_vec(&value).expect("serialisable")
}

fn rewrite(c: &mut Criterion) {
    let mut group = c.benchmark_group("rewrite");
    for size in [KIB, MIB] {
        for position in Position::ALL {
            let spec = BodySpec {
                shape: Shape::Prose,
                size,
                position,
            };
            let body = spec.build();
            let pieces = chunks(&body, Chunking::CHUNK_16K);
            let label = spec.label();
            group.throughput(Throughput::Bytes(body.len() as u64));

            // Checks before measuring.
            let model = extract(&pieces);
            assert_eq!(model.as_str(), MODEL);
            let mut out = Vec::with_capacity(pieces.len() + 2);
            let len = splice(&pieces, &model, &mut out);
            let spliced = out.concat();
            assert_eq!(len, spliced.len() as u64);
            let reserialised = reserialise(&body);
            let mut want: Value = serde_json::from_slice(&body).unwrap();
            want["model"] = Value::String(TARGET.to_owned());
            let got: Value = serde_json::from_slice(&spliced).unwrap();
            assert_eq!(got, want);
            assert_eq!(
                serde_json::from_slice::<Value>(&reserialised).unwrap(),
                want
            );

            group.bench_function(BenchmarkId::new("extract", &label), |b| {
                b.iter(|| black_box(extract(black_box(&pieces))))
            });
            group.bench_function(BenchmarkId::new("extract_splice", &label), |b| {
                b.iter(|| {
                    let model = extract(black_box(&pieces));
                    black_box(splice(&pieces, &model, &mut out))
                })
            });
            group.bench_function(BenchmarkId::new("splice", &label), |b| {
                b.iter(|| black_box(splice(black_box(&pieces), &model, &mut out)))
            });
            group.bench_function(BenchmarkId::new("serde_json_reserialise", &label), |b| {
                b.iter(|| black_box(reserialise(black_box(&body))))
            });
        }
    }
    group.finish();
}

criterion::criterion_group!(benches, rewrite);
criterion::criterion_main!(benches);
