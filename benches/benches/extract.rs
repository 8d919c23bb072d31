//! Benchmark group `extract`: how fast the top-level `model` comes out of a
//! request body, bbr-core against the usual JSON parsers, on the same bytes
//! in the same run.
//!
//! Ids are `extract/<implementation>/<shape>/<size>/<position>`, and
//! `extract/<implementation>/matrix/<special>/every<N>/1MiB/last` for the
//! synthetic per-special-byte bodies. Body classes: `chat` (base64 images
//! dominate from 256 KiB), `completions` (one long prompt), `prose` (dense
//! multilingual text, a special byte every 8–20 bytes), `tools` (an agent
//! loop of short turns with tool calls), `matrix` (see
//! [`bbr_benches::MatrixSpec`]).
//!
//! | implementation | what is measured |
//! | --- | --- |
//! | `bbr_first_wins` | `extract_model`, `DuplicateKeys::FirstWins`: time to the decision (the tail is not read); model first only |
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
//! Each benchmark takes [`distinct`] bodies of its class and size in turn
//! (256 of 1 KiB, 64 of 16 KiB, 4 of 256 KiB, one from 1 MiB; each
//! [`BodySpec::build_variant`]), never one body repeated, whose branches
//! the branch predictor would learn as it cannot on a server's traffic.
//!
//! Every benchmark checks that it returns [`MODEL`] before it measures, and
//! every body is checked once up front: serde_json, sonic-rs and bbr-core
//! (contiguous, 16 KiB chunks, reference mode) agree on it.
//!
//! With the model last: `bbr_reject`, `bbr_reject_chunks16KiB`,
//! `serde_json_struct`, `sonic_get`, `sonic_get_unchecked` (plus, in full
//! mode, `serde_json_value`, `simd_json_struct` and `bbr_reject_chunks1B`
//! up to 16 KiB). With the model first: `bbr_first_wins`,
//! `bbr_first_wins_chunks16KiB`, `bbr_reject` and `sonic_get`.
//!
//! `BBR_BENCH_QUICK=1` uses a short warm-up and measurement (0.2 s, 0.6 s,
//! 10 samples) and leaves out the slow baselines above, so the whole group
//! takes a few minutes on two cores. `BBR_BENCH_CLASSES=prose,matrix`
//! keeps only those body classes.

use std::borrow::Cow;
use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use bbr_benches::{
    BodySpec, Chunking, KIB, MIB, MODEL, MatrixSpec, Position, SIZES, Shape, Special, Turns, chunks,
};
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

/// One body class and size to measure: [`distinct`] bodies of it.
struct Case {
    label: String,
    bodies: Vec<Bytes>,
    position: Position,
}

/// How many distinct bodies of `size` bytes a benchmark takes in turn:
/// enough that together they hold 1 MiB (at most 256), so the branch
/// predictor cannot learn them. One body repeated is learnt: prose at
/// 16 KiB took half the time it takes on bodies seen once, as a server
/// sees them.
fn distinct(size: usize) -> usize {
    (MIB / size).clamp(1, 256)
}

struct Plan {
    quick: bool,
    classes: Option<Vec<String>>,
}

impl Plan {
    fn from_env() -> Self {
        let quick = std::env::var("BBR_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let classes = std::env::var("BBR_BENCH_CLASSES")
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| v.split(',').map(str::to_owned).collect());
        Self { quick, classes }
    }

    fn wants(&self, class: &str) -> bool {
        self.classes
            .as_ref()
            .is_none_or(|classes| classes.iter().any(|c| c == class))
    }

    fn cases(&self) -> Vec<Case> {
        let mut cases = Vec::new();
        for shape in Shape::ALL {
            if !self.wants(shape.as_str()) {
                continue;
            }
            for size in SIZES {
                for position in Position::ALL {
                    let spec = BodySpec::new(shape, position, size);
                    cases.push(Case {
                        label: spec.label(),
                        bodies: (0..distinct(size) as u64)
                            .map(|k| spec.build_variant(k))
                            .collect(),
                        position,
                    });
                }
            }
        }
        if self.wants("matrix") {
            for special in Special::ALL {
                for every in MatrixSpec::EVERY {
                    let spec = MatrixSpec {
                        special,
                        every,
                        size: MIB,
                    };
                    cases.push(Case {
                        label: spec.label(),
                        bodies: vec![spec.build()],
                        position: Position::Last,
                    });
                }
            }
        }
        cases
    }

    fn configure(&self, group: &mut BenchmarkGroup<'_, WallTime>, size: usize) {
        let (warm_up, measurement) = if self.quick {
            (Duration::from_millis(200), Duration::from_millis(600))
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

/// Every implementation agrees on the body before anything is timed, and
/// bbr-core's fast paths agree with its byte-at-a-time reference mode.
fn check_body(label: &str, body: &Bytes) {
    let value: serde_json::Value = serde_json::from_slice(body).expect(label);
    assert_eq!(value["model"], MODEL, "serde_json on {label}");
    use sonic_rs::JsonValueTrait as _;
    let sonic = sonic_rs::get(body, ["model"]).expect(label);
    assert_eq!(sonic.as_str(), Some(MODEL), "sonic-rs on {label}");
    let whole = extract_model(body, &REJECT).expect(label);
    assert_eq!(whole.model().map(Model::as_str), Some(MODEL), "{label}");
    let mut reference = ModelExtractor::new_reference(REJECT);
    for chunk in chunks(body, Chunking::Fixed(4093)) {
        reference.feed(&chunk).expect(label);
    }
    assert_eq!(
        reference.finish().as_ref(),
        Ok(&whole),
        "reference mode on {label}"
    );
}

fn extract(c: &mut Criterion) {
    let plan = Plan::from_env();
    let mut group = c.benchmark_group("extract");
    for case in plan.cases() {
        let Case {
            label,
            bodies,
            position,
        } = case;
        for body in &bodies {
            check_body(&label, body);
        }
        let body = &bodies[0];
        let size = body.len();
        let chunked: Vec<Vec<Bytes>> = bodies
            .iter()
            .map(|body| chunks(body, Chunking::CHUNK_16K))
            .collect();
        plan.configure(&mut group, size);
        group.throughput(Throughput::Bytes(size as u64));

        let whole = Turns::new(&bodies);
        let chunks16k = Turns::new(&chunked);
        measure(&mut group, "bbr_reject", &label, || {
            found(extract_model(black_box(whole.next()), &REJECT))
        });
        measure(&mut group, "sonic_get", &label, || {
            sonic_get(black_box(whole.next()))
        });
        if position == Position::First {
            measure(&mut group, "bbr_first_wins", &label, || {
                found(extract_model(black_box(whole.next()), &FIRST_WINS))
            });
            measure(&mut group, "bbr_first_wins_chunks16KiB", &label, || {
                bbr_chunked_decision(black_box(chunks16k.next()), FIRST_WINS)
            });
            continue;
        }
        measure(&mut group, "bbr_reject_chunks16KiB", &label, || {
            bbr_chunked_verdict(black_box(chunks16k.next()), REJECT)
        });
        measure(&mut group, "sonic_get_unchecked", &label, || {
            sonic_get_unchecked(black_box(whole.next()))
        });
        measure(&mut group, "serde_json_struct", &label, || {
            serde_json_struct(black_box(whole.next()))
        });
        if plan.quick {
            continue;
        }
        if size <= ONE_BYTE_MAX {
            let bytes1 = chunks(body, Chunking::ONE_BYTE);
            measure(&mut group, "bbr_reject_chunks1B", &label, || {
                bbr_chunked_verdict(black_box(&bytes1), REJECT)
            });
        }
        measure(&mut group, "serde_json_value", &label, || {
            serde_json_value(black_box(whole.next()))
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
                if size >= MIB {
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
