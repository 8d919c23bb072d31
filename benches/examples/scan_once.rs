//! Runs one extraction of one generated body, for instruction counts under
//! callgrind (stable on a shared machine where wall-clock time is not):
//!
//! ```text
//! cargo build --profile bench -p bbr-benches --example scan_once
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='scan_once::timed' \
//!     target/release/examples/scan_once bbr_reject prose 1MiB
//! ```
//!
//! Arguments: `IMPL CLASS SIZE [ITERATIONS [BODIES]]`, with `IMPL` one of
//! `bbr_reject`, `bbr_first_wins`, `bbr_reject_chunks16KiB`, `sonic_get`,
//! `sonic_get_unchecked`, `serde_json_struct`; `CLASS` one of `chat`,
//! `completions`, `prose`, `tools` (model last; `chat:first` and so on for
//! the model first), or `matrix:SPECIAL:EVERY` (`matrix:raw_e:8`, 1 MiB
//! only); `SIZE` `1KiB`, `16KiB`,
//! `256KiB`, `1MiB`, `8MiB`. Only the calls inside `timed` are counted
//! with the command above (the body is built outside it). `BODIES`
//! (default 1) distinct bodies of the class and size
//! ([`BodySpec::build_variant`]) are taken in turn: one body repeated lets the
//! branch predictor learn its branches, which a server, seeing each body
//! once, never can. Checks the answer and prints `IMPL CLASS SIZE ok NS ns`,
//! `NS` the wall-clock time per extraction of the timed part (the bodies'
//! generation and the process's start excluded).

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use bbr_benches::{BodySpec, Chunking, MIB, MODEL, MatrixSpec, Special, Turns, chunks};
use bbr_core::{DuplicateKeys, Limits, ModelExtractor, Outcome, extract_model};
use bytes::Bytes;

const FIRST_WINS: Limits = Limits::new().with_duplicate_keys(DuplicateKeys::FirstWins);

#[derive(serde::Deserialize)]
struct OnlyModel<'a> {
    #[serde(borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
}

/// A body and its 16 KiB chunks.
type Prepared = (Bytes, Vec<Bytes>);

/// The measured part: `iterations` extractions, taking the `bodies` in
/// turn; returns the last model.
#[inline(never)]
fn timed(implementation: &str, bodies: &[Prepared], iterations: u32) -> Option<String> {
    let turns = Turns::new(bodies);
    let mut model = None;
    for _ in 0..iterations {
        let (body, pieces) = turns.next();
        model = extract(implementation, body, pieces);
    }
    model
}

/// One extraction of `body` (or of its `pieces`) by `implementation`.
#[inline(always)]
fn extract(implementation: &str, body: &Bytes, pieces: &[Bytes]) -> Option<String> {
    use sonic_rs::JsonValueTrait as _;
    match implementation {
        "bbr_reject" => match extract_model(black_box(body), &Limits::new()) {
            Ok(Outcome::Found(m)) => Some(m.as_str().to_owned()),
            _ => None,
        },
        "bbr_first_wins" => match extract_model(black_box(body), &FIRST_WINS) {
            Ok(Outcome::Found(m)) => Some(m.as_str().to_owned()),
            _ => None,
        },
        "bbr_reject_chunks16KiB" => {
            let mut extractor = ModelExtractor::new(Limits::new());
            let fed = pieces.iter().try_for_each(|p| extractor.feed(p).map(drop));
            match fed.and_then(|()| extractor.finish()) {
                Ok(Outcome::Found(m)) => Some(m.as_str().to_owned()),
                _ => None,
            }
        }
        "sonic_get" => sonic_rs::get(black_box(body), ["model"])
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned)),
        #[allow(unsafe_code)]
        // SAFETY: generated bodies are valid JSON (checked in
        // bbr-benches' tests); sonic-rs asks for nothing else.
        "sonic_get_unchecked" => unsafe { sonic_rs::get_unchecked(black_box(body), ["model"]) }
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned)),
        "serde_json_struct" => serde_json::from_slice::<OnlyModel<'_>>(black_box(body))
            .ok()
            .and_then(|m| m.model.map(|m| m.into_owned())),
        _ => None,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [implementation, class, size, rest @ ..] = args.as_slice() else {
        eprintln!("usage: scan_once IMPL CLASS SIZE [ITERATIONS [BODIES]]");
        return ExitCode::from(64);
    };
    if let Some(matrix) = class.strip_prefix("matrix:") {
        return run_matrix(implementation, matrix, size, rest);
    }
    let spec = match BodySpec::from_args(class, size) {
        Ok(spec) => spec,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(64);
        }
    };
    let iterations = rest.first().and_then(|n| n.parse().ok()).unwrap_or(1);
    let count: usize = rest.get(1).and_then(|n| n.parse().ok()).unwrap_or(1).max(1);
    let bodies: Vec<Prepared> = (0..count as u64)
        .map(|k| prepared(spec.build_variant(k)))
        .collect();
    measure(
        implementation,
        &format!("{class} {size}"),
        &bodies,
        iterations,
    )
}

fn prepared(body: Bytes) -> Prepared {
    let pieces = chunks(&body, Chunking::CHUNK_16K);
    (body, pieces)
}

/// Checks every body, then times `iterations` extractions and prints the
/// time per extraction after `what`.
fn measure(implementation: &str, what: &str, bodies: &[Prepared], iterations: u32) -> ExitCode {
    // Outside `timed`, so callgrind does not count the check.
    for (k, (body, pieces)) in bodies.iter().enumerate() {
        if extract(implementation, body, pieces).as_deref() != Some(MODEL) {
            eprintln!("{implementation} did not find {MODEL} in {what} (body {k})");
            return ExitCode::FAILURE;
        }
    }
    let start = Instant::now();
    if timed(implementation, bodies, iterations).as_deref() != Some(MODEL) {
        eprintln!("{implementation} did not find {MODEL} in {what}");
        return ExitCode::FAILURE;
    }
    let each = start.elapsed().as_nanos() / u128::from(iterations.max(1));
    println!("{implementation} {what} ok {each} ns");
    ExitCode::SUCCESS
}

/// `matrix:SPECIAL:EVERY` bodies (`matrix:raw_e:8`), 1 MiB only.
fn run_matrix(implementation: &str, matrix: &str, size: &str, rest: &[String]) -> ExitCode {
    let Some((special, every)) = matrix.split_once(':') else {
        eprintln!("matrix classes are matrix:SPECIAL:EVERY");
        return ExitCode::from(64);
    };
    let special = Special::ALL.into_iter().find(|s| s.as_str() == special);
    let (Some(special), Ok(every), "1MiB") = (special, every.parse(), size) else {
        eprintln!("unknown matrix body {matrix} {size} (1MiB only)");
        return ExitCode::from(64);
    };
    let iterations = rest.first().and_then(|n| n.parse().ok()).unwrap_or(1);
    let body = MatrixSpec {
        special,
        every,
        size: MIB,
    }
    .build();
    measure(
        implementation,
        &format!("matrix:{matrix} {size}"),
        &[prepared(body)],
        iterations,
    )
}
