//! Benchmark group `extract`: how fast the top-level `model` comes out of a
//! request body, bbr-core against the usual JSON parsers, on the same bytes
//! in the same run.
//!
//! Ids are `extract/<implementation>/<shape>/<size>/<position>`:
//!
//! | implementation | what is measured |
//! | --- | --- |
//! | `bbr_first_wins` | `extract_model`, `DuplicateKeys::FirstWins`: time to the decision (the tail is not read) |
//! | `bbr_reject` | `extract_model`, default `Reject`: decision plus validation of the whole body (the contract's verdict) |
//! | `bbr_first_wins_chunks16KiB` | `ModelExtractor` fed 16 KiB chunks until it decides (`FirstWins`) |
//! | `bbr_reject_chunks16KiB` | `ModelExtractor` fed every 16 KiB chunk, then `finish` (`Reject`) |
//! | `bbr_reject_chunks1B` | the same with 1-byte chunks (sizes up to 16 KiB only) |
//! | `serde_json_value` | `serde_json::from_slice::<Value>` then `["model"]` (validates everything) |
//! | `serde_json_struct` | `serde_json::from_slice` into a struct with only `model` (validates everything) |
//! | `simd_json_struct` | `simd_json::serde::from_slice` into that struct, on a copy made outside the timing (simd-json parses in place) |
//! | `sonic_get` | `sonic_rs::get(body, ["model"])`: lazy, validates what it skips up to the field |
//! | `sonic_get_unchecked` | `sonic_rs::get_unchecked`: lazy, no validation |
//!
//! Every benchmark checks that it returns [`MODEL`] before it measures.
//!
//! `BBR_BENCH_QUICK=1` runs fewer completions sizes with a short warm-up and
//! measurement, so the whole group takes a few minutes on two cores.

use std::borrow::Cow;
use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use bbr_benches::{BodySpec, Chunking, KIB, MIB, MODEL, Position, SIZES, Shape, chunks};
use bbr_core::{DuplicateKeys, Limits, Model, ModelExtractor, Outcome, Progress, extract_model};
use bytes::Bytes;
use criterion::{
    BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput, measurement::WallTime,
};
use serde::Deserialize;

const REJECT: Limits = Limits::new();
const FIRST_WINS: Limits = Limits::new().with_duplicate_keys(DuplicateKeys::FirstWins);

/// Largest body measured with 1-byte chunks (one `feed` call per byte).
const ONE_BYTE_MAX: usize = 16 * KIB;

/// What an implementation returns, without further work in the timed part:
/// a bbr `Model` (zero copy), a string that may borrow from the body, or
/// sonic-rs' lazy value (read as a string only by the check).
enum Extracted<'a> {
    Bbr(Model),
    Str(Cow<'a, str>),
    Sonic(sonic_rs::LazyValue<'a>),
}

impl Extracted<'_> {
    fn as_str(&self) -> Option<&str> {
        use sonic_rs::JsonValueTrait as _;
        match self {
            Extracted::Bbr(model) => Some(model.as_str()),
            Extracted::Str(s) => Some(s),
            Extracted::Sonic(value) => value.as_str(),
        }
    }
}

/// A body's top-level `model` and nothing else; unknown fields are skipped
/// (and still validated), a duplicate `model` is an error.
#[derive(Deserialize)]
struct OnlyModel<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
}

fn found(outcome: Result<Outcome, bbr_core::ExtractError>) -> Option<Extracted<'static>> {
    match outcome {
        Ok(Outcome::Found(model)) => Some(Extracted::Bbr(model)),
        _ => None,
    }
}

/// Feeds every chunk, then `finish`: the verdict on the whole body.
fn bbr_chunked_verdict(chunks: &[Bytes], limits: Limits) -> Option<Extracted<'static>> {
    let mut extractor = ModelExtractor::new(limits);
    for chunk in chunks {
        extractor.feed(chunk).ok()?;
    }
    found(extractor.finish())
}

/// Feeds chunks until the extractor decides: what a proxy waits for before
/// it can route.
fn bbr_chunked_decision(chunks: &[Bytes], limits: Limits) -> Option<Extracted<'static>> {
    let mut extractor = ModelExtractor::new(limits);
    for chunk in chunks {
        match extractor.feed(chunk).ok()? {
            Progress::Found(model) => return Some(Extracted::Bbr(model)),
            Progress::Absent => return None,
            _ => {}
        }
    }
    found(extractor.finish())
}

fn serde_json_value(body: &[u8]) -> Option<Extracted<'static>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value.as_object_mut()?.remove("model")? {
        serde_json::Value::String(model) => Some(Extracted::Str(Cow::Owned(model))),
        _ => None,
    }
}

fn serde_json_struct(body: &[u8]) -> Option<Extracted<'_>> {
    let parsed: OnlyModel<'_> = serde_json::from_slice(body).ok()?;
    parsed.model.map(Extracted::Str)
}

fn simd_json_struct(body: &mut [u8]) -> Option<Extracted<'_>> {
    let parsed: OnlyModel<'_> = simd_json::serde::from_slice(body).ok()?;
    parsed.model.map(Extracted::Str)
}

fn sonic_get(body: &[u8]) -> Option<Extracted<'_>> {
    sonic_rs::get(body, ["model"]).ok().map(Extracted::Sonic)
}

#[allow(unsafe_code)]
fn sonic_get_unchecked(body: &[u8]) -> Option<Extracted<'_>> {
    // SAFETY: sonic-rs requires valid JSON here. Every generated body is
    // valid (bbr-benches' tests parse each one with serde_json), and this
    // function only ever sees generated bodies.
    unsafe { sonic_rs::get_unchecked(body, ["model"]) }
        .ok()
        .map(Extracted::Sonic)
}

/// Benchmarks `run` under `id`, after checking once that it yields MODEL.
fn measure<'a>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    label: &str,
    run: impl Fn() -> Option<Extracted<'a>>,
) {
    let checked = Cell::new(false);
    group.bench_function(BenchmarkId::new(id, label), |b| {
        if !checked.get() {
            let model = run();
            assert_eq!(
                model.as_ref().and_then(Extracted::as_str),
                Some(MODEL),
                "{id} on {label} did not return the expected model"
            );
            checked.set(true);
        }
        b.iter(&run);
    });
}

struct Plan {
    quick: bool,
}

impl Plan {
    fn from_env() -> Self {
        let quick = std::env::var("BBR_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        Self { quick }
    }

    fn specs(&self) -> Vec<BodySpec> {
        let mut specs = Vec::new();
        for shape in Shape::ALL {
            let sizes: &[usize] = match (shape, self.quick) {
                (Shape::Chat, _) => &SIZES,
                (Shape::Completions, true) => &[16 * KIB, MIB],
                (Shape::Completions, false) => &SIZES,
            };
            for &size in sizes {
                for position in Position::ALL {
                    specs.push(BodySpec::new(shape, position, size));
                }
            }
        }
        specs
    }

    fn configure(&self, group: &mut BenchmarkGroup<'_, WallTime>, size: usize) {
        let (warm_up, measurement) = if self.quick {
            (Duration::from_millis(300), Duration::from_secs(1))
        } else {
            (Duration::from_secs(1), Duration::from_secs(3))
        };
        group.warm_up_time(warm_up).measurement_time(measurement);
        group.sample_size(match (self.quick, size >= MIB) {
            (true, _) | (false, true) => 10,
            (false, false) => 50,
        });
    }
}

fn extract(c: &mut Criterion) {
    let plan = Plan::from_env();
    let mut group = c.benchmark_group("extract");
    for spec in plan.specs() {
        let body = spec.build();
        let label = spec.label();
        let chunks16k = chunks(&body, Chunking::CHUNK_16K);
        plan.configure(&mut group, spec.size);
        group.throughput(Throughput::Bytes(body.len() as u64));

        let body_ref = &body;
        measure(&mut group, "bbr_first_wins", &label, || {
            found(extract_model(black_box(body_ref), &FIRST_WINS))
        });
        measure(&mut group, "bbr_reject", &label, || {
            found(extract_model(black_box(body_ref), &REJECT))
        });
        measure(&mut group, "bbr_first_wins_chunks16KiB", &label, || {
            bbr_chunked_decision(black_box(&chunks16k), FIRST_WINS)
        });
        measure(&mut group, "bbr_reject_chunks16KiB", &label, || {
            bbr_chunked_verdict(black_box(&chunks16k), REJECT)
        });
        if spec.size <= ONE_BYTE_MAX {
            let bytes1 = chunks(&body, Chunking::ONE_BYTE);
            measure(&mut group, "bbr_reject_chunks1B", &label, || {
                bbr_chunked_verdict(black_box(&bytes1), REJECT)
            });
        }
        measure(&mut group, "serde_json_value", &label, || {
            serde_json_value(black_box(body_ref))
        });
        measure(&mut group, "serde_json_struct", &label, || {
            serde_json_struct(black_box(body_ref))
        });
        measure(&mut group, "sonic_get", &label, || {
            sonic_get(black_box(body_ref))
        });
        measure(&mut group, "sonic_get_unchecked", &label, || {
            sonic_get_unchecked(black_box(body_ref))
        });

        // simd-json parses in place: each iteration gets a fresh copy, made
        // outside the timed part.
        let checked = Cell::new(false);
        group.bench_function(BenchmarkId::new("simd_json_struct", &label), |b| {
            if !checked.get() {
                let mut copy = body.to_vec();
                let model = simd_json_struct(&mut copy).and_then(|m| m.as_str().map(str::to_owned));
                assert_eq!(model.as_deref(), Some(MODEL), "simd_json_struct on {label}");
                checked.set(true);
            }
            b.iter_batched_ref(
                || body.to_vec(),
                |copy| simd_json_struct(copy).is_some(),
                if spec.size >= MIB {
                    BatchSize::PerIteration
                } else {
                    BatchSize::LargeInput
                },
            );
        });
    }
    group.finish();
}

criterion::criterion_group!(benches, extract);
criterion::criterion_main!(benches);
