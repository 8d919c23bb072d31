//! `loadgen`: closed-loop HTTP/1.1 load against a loopback server.
//!
//! ```text
//! cargo run --release -p bbr-benches --bin loadgen -- \
//!     --url http://127.0.0.1:8080/v1/chat/completions --body body.json \
//!     --concurrency 64 --duration 10s --header content-type:application/json \
//!     --expect-status 200 --expect-header x-gateway-model-name:food-review-1
//! ```
//!
//! Prints one human line and one JSON line on stdout. Exits 1 when the check
//! of the first response fails or the run cannot start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bbr_benches::loadgen::{Config, parse_duration, run};
use bytes::Bytes;
use clap::Parser;
use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};

/// Closed-loop HTTP/1.1 load generator (one keep-alive connection per worker).
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// Target, `http://host:port/path`.
    #[arg(long)]
    url: Uri,
    /// File whose bytes are the request body.
    #[arg(long)]
    body: Option<PathBuf>,
    /// Request method.
    #[arg(long, default_value = "POST")]
    method: Method,
    /// Workers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// How long to send requests: `10s`, `500ms`, `1m`.
    #[arg(long, default_value = "10s", value_parser = duration)]
    duration: Duration,
    /// Longest wait for one response.
    #[arg(long, default_value = "30s", value_parser = duration)]
    timeout: Duration,
    /// Extra request header `name:value` (repeatable).
    #[arg(long = "header", value_parser = header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Status every response must have (others count as errors; the first
    /// response must have it).
    #[arg(long, default_value = "200")]
    expect_status: StatusCode,
    /// Header `name:value` the first response must have (repeatable).
    #[arg(long = "expect-header", value_parser = expected_header)]
    expect_headers: Vec<(HeaderName, String)>,
    /// Text the first response body must contain.
    #[arg(long)]
    expect_body: Option<String>,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("not a duration: {text:?} (try 10s, 500ms)"))
}

fn split_header(text: &str) -> Result<(HeaderName, &str), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("expected name:value, got {text:?}"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| e.to_string())?;
    Ok((name, value.trim()))
}

fn header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = split_header(text)?;
    Ok((
        name,
        HeaderValue::from_str(value).map_err(|e| e.to_string())?,
    ))
}

fn expected_header(text: &str) -> Result<(HeaderName, String), String> {
    let (name, value) = split_header(text)?;
    Ok((name, value.to_owned()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let body = match &args.body {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => {
                eprintln!("loadgen: cannot read {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => Bytes::new(),
    };
    let mut config = Config::new(args.url, body);
    config.method = args.method;
    config.headers = args.headers;
    config.concurrency = args.concurrency;
    config.duration = args.duration;
    config.request_timeout = args.timeout;
    config.expect_status = args.expect_status;
    config.expect_headers = args.expect_headers;
    config.expect_body = args.expect_body;
    match run(&config).await {
        Ok(report) => {
            println!("loadgen: {}", report.human_line());
            println!("{}", report.json_line());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}
