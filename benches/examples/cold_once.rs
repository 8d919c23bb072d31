//! What one extraction costs when the caches are cold, as in a server that
//! does other work between requests (an ext_proc processor between gRPC
//! messages), against the same extraction in a hot loop:
//!
//! ```text
//! cargo run --profile bench -p bbr-benches --example cold_once -- prose 1KiB 2000
//! ```
//!
//! Arguments: `CLASS SIZE [ROUNDS]` (as for `scan_once`). Each cold round
//! first walks a 32 MiB buffer (`EVICT_MIB` to change it; evicting the
//! extractor's code and data from the caches, as other processes on the
//! core do), then times one
//! `BodyExtractor::for_content` + `feed` + `finish` with `Instant`, the way
//! bbr-extproc's `bbr_extraction_duration_seconds` times its calls (it
//! leaves out `for_content`: here it is timed separately). Prints the
//! median, mean and 90th percentile of both, in nanoseconds, and of a
//! third run where only the code and tables are cold (the body was just
//! read, as after decoding the message that carried it).

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bbr_benches::{BodySpec, MIB, MODEL};
use bbr_core::{BodyExtractor, Limits, Outcome};
use bytes::Bytes;

/// One extraction as bbr-extproc does it: (construction, feed + finish).
fn extract(body: &Bytes) -> (Duration, Duration, bool) {
    let start = Instant::now();
    let mut extractor = BodyExtractor::for_content(Some(b"application/json"), None, Limits::new());
    let built = start.elapsed();
    let start = Instant::now();
    let fed = extractor.feed(black_box(body)).is_ok();
    let outcome = extractor.finish();
    let scanned = start.elapsed();
    let found = fed && matches!(&outcome, Ok(Outcome::Found(m)) if m.as_str() == MODEL);
    (built, scanned, found)
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let nanos = |d: Duration| d.as_nanos();
    let mean = samples.iter().map(|d| d.as_nanos()).sum::<u128>() / samples.len() as u128;
    println!(
        "{label}: median {} ns, mean {mean} ns, p90 {} ns",
        nanos(samples[samples.len() / 2]),
        nanos(samples[samples.len() * 9 / 10]),
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [class, size, rest @ ..] = args.as_slice() else {
        eprintln!("usage: cold_once CLASS SIZE [ROUNDS]");
        return ExitCode::from(64);
    };
    let spec = match BodySpec::from_args(class, size) {
        Ok(spec) => spec,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(64);
        }
    };
    let rounds: usize = rest.first().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let body = spec.build();
    let evict_mib = std::env::var("EVICT_MIB")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(32);
    let mut evict = vec![0u8; evict_mib * MIB];
    let (mut cold_build, mut cold_scan, mut hot_build, mut hot_scan) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut warm_body_scan = Vec::new();
    for round in 0..rounds {
        // Other work between requests: every cache line of 32 MiB.
        for line in evict.chunks_mut(64) {
            line[0] = line[0].wrapping_add(round as u8);
        }
        black_box(&evict);
        let (built, scanned, found) = extract(&body);
        if !found {
            eprintln!("{class} {size}: the model was not found");
            return ExitCode::FAILURE;
        }
        cold_build.push(built);
        cold_scan.push(scanned);
        // Cold again, but the body just read (as a server that has just
        // decoded the message holding it): what the code and tables cost.
        for line in evict.chunks_mut(64) {
            line[0] = line[0].wrapping_add(1);
        }
        black_box(&evict);
        black_box(body.iter().fold(0u8, |acc, &b| acc ^ b));
        warm_body_scan.push(extract(&body).1);
        // The same, hot (right after the cold one and a few more).
        for _ in 0..4 {
            extract(&body);
        }
        let (built, scanned, _) = extract(&body);
        hot_build.push(built);
        hot_scan.push(scanned);
    }
    println!("{class} {size}, {rounds} rounds, {evict_mib} MiB walked between them");
    summary("cold for_content", cold_build);
    summary("cold feed+finish", cold_scan);
    summary("cold code, body in cache: feed+finish", warm_body_scan);
    summary("hot  for_content", hot_build);
    summary("hot  feed+finish", hot_scan);
    ExitCode::SUCCESS
}
