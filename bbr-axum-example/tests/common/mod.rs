//! Shared helpers: a gateway over real sockets and a small HTTP client.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bbr_axum_example::{Config, Gateway, RunningGateway};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Every request of a test must finish within this.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

pub async fn start(config: Config) -> RunningGateway {
    Gateway::new(config)
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("gateway starts")
}

pub async fn start_yaml(yaml: &str) -> RunningGateway {
    start(Config::from_yaml_str(yaml, Path::new(".")).expect("test config is valid")).await
}

pub type TestBody = BoxBody<Bytes, std::convert::Infallible>;

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

/// A body without a length (chunked), one chunk every `gap`.
pub fn chunked(chunks: Vec<&'static str>, gap: Duration) -> TestBody {
    let stream =
        futures_util::stream::unfold(chunks.into_iter().enumerate(), move |mut it| async move {
            let (i, chunk) = it.next()?;
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            Some((
                Ok(http_body::Frame::data(Bytes::from_static(chunk.as_bytes()))),
                it,
            ))
        });
    StreamBody::new(stream).boxed()
}

#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    /// Asserts an OpenAI-shaped error with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), "application/json");
        let json = self.json();
        let error = &json["error"];
        assert_eq!(error["code"], code, "{json}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
        assert!(error["type"].is_string(), "{json}");
        assert!(error.get("param").is_some(), "{json}");
    }
}

pub async fn send(addr: SocketAddr, request: Request<TestBody>) -> Answer {
    let (mut parts, body) = request.into_parts();
    parts.uri = format!("http://{addr}{}", parts.uri.path_and_query().unwrap())
        .parse()
        .unwrap();
    let response = tokio::time::timeout(
        REQUEST_DEADLINE,
        client().request(Request::from_parts(parts, body)),
    )
    .await
    .expect("answer within the deadline")
    .expect("request succeeds at the HTTP level");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(REQUEST_DEADLINE, body.collect())
        .await
        .expect("body within the deadline")
        .expect("body reads")
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn post(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> Answer {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap();
    send(addr, request).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, Request::get(path).body(full(Bytes::new())).unwrap()).await
}

/// The pool's completion counts, per replica.
pub fn completions(gateway: &RunningGateway, pool: &str) -> Vec<u64> {
    gateway
        .simulators()
        .pool(pool)
        .iter()
        .map(|s| s.observer().completions_received())
        .collect()
}

pub fn total_completions(gateway: &RunningGateway) -> u64 {
    gateway
        .pools
        .iter()
        .flat_map(|(pool, _)| completions(gateway, pool))
        .sum()
}

/// The gateway binary in its own process (its memory and exit measured
/// alone). Killed on drop.
pub struct GatewayProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// The banner, up to and with the printed curl command.
    pub banner: Vec<String>,
    /// The rest of standard output, read on by [`Self::keep_reading`] or
    /// taken by a test that waits for a line.
    pub rest: Option<std::io::Lines<std::io::BufReader<std::process::ChildStdout>>>,
}

impl GatewayProcess {
    /// Starts the binary with `args` (and `--listen 127.0.0.1:0`) and reads
    /// its banner, on a blocking thread so the test's runtime is not stalled.
    pub async fn start<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bbr-axum-example"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("the gateway binary starts");
        let stdout = child.stdout.take().unwrap();
        let banner = tokio::task::spawn_blocking(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let mut banner = Vec::new();
            for line in lines.by_ref() {
                let line = line.unwrap();
                let done = line.contains("curl ");
                banner.push(line);
                if done {
                    break;
                }
            }
            (banner, lines)
        });
        let (banner, rest) = tokio::time::timeout(REQUEST_DEADLINE, banner)
            .await
            .expect("banner in time")
            .unwrap();
        let addr = banner
            .first()
            .and_then(|l| l.strip_prefix("bbr gateway listening on http://"))
            .unwrap_or_else(|| panic!("unexpected banner {banner:?}"))
            .parse()
            .unwrap();
        Self {
            child,
            addr,
            banner,
            rest: Some(rest),
        }
    }

    /// Drains standard output on a thread so the gateway never blocks on it.
    pub fn keep_reading(&mut self) {
        if let Some(rest) = self.rest.take() {
            std::thread::spawn(move || for _ in rest {});
        }
    }

    /// `VmHWM` (peak resident set) of the gateway process, in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
