//! `soak`: random bodies in random chunkings through a gateway, every
//! request accounted for (see `bbr_benches::soak`). Driven by
//! `benches/scripts/soak.sh`, which starts both paths.
//!
//! ```text
//! cargo run --release -p bbr-benches --bin soak -- \
//!     --target http://127.0.0.1:8080 --upstream 127.0.0.1:9000 \
//!     --clients 64 --duration 60s --pid "$GATEWAY_PID"
//! ```
//!
//! Prints one line; exits 1 when a request was lost, duplicated or
//! mismatched, or the run could not start.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bbr_benches::loadgen::parse_duration;
use bbr_benches::soak::{Config, run};
use clap::Parser;
use http::Uri;

/// Soak a gateway: many clients, random bodies and chunkings, a ledger.
#[derive(Debug, Parser)]
#[command(name = "soak")]
struct Args {
    /// The gateway, `http://host:port`.
    #[arg(long)]
    target: Uri,
    /// Where to serve the upstream the gateway routes every model to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long requests are started: `60s`, `5m`.
    #[arg(long, default_value = "60s", value_parser = duration)]
    duration: Duration,
    /// Longest wait for one answer.
    #[arg(long, default_value = "30s", value_parser = duration)]
    timeout: Duration,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Largest body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// A process whose RSS is reported before and after (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// A label printed before the report.
    #[arg(long, default_value = "soak")]
    label: String,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("not a duration: {text}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = Config::new(args.target, args.upstream);
    config.path = args.path;
    config.clients = args.clients;
    config.duration = args.duration;
    config.request_timeout = args.timeout;
    config.seed = args.seed;
    config.max_body = args.max_body;
    config.pids = args.pids;
    match run(&config).await {
        Ok(report) => {
            println!("{}: {}", args.label, report.human_line());
            if report.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("{}: {error}", args.label);
            ExitCode::FAILURE
        }
    }
}
