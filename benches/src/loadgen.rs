//! A closed-loop HTTP/1.1 load generator for loopback benchmarks (the
//! `loadgen` binary).
//!
//! Each of `concurrency` workers owns one keep-alive connection and sends the
//! same request again as soon as the previous response has been read in
//! full, until `duration` has passed. Latency is measured from sending the
//! request to the end of the response body. Before measuring, one request on
//! a fresh connection is checked (status, optional headers, optional body
//! substring): a load test against a misrouted gateway measures nothing, so
//! a failed check stops the run.
//!
//! The run is bounded in time: every request has a timeout, and no request
//! starts after the deadline, so a run ends within `duration +
//! request_timeout`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), bbr_benches::loadgen::LoadError> {
//! use bbr_benches::loadgen::{Config, run};
//! let config = Config::new("http://127.0.0.1:8080/v1/chat/completions".parse().unwrap(),
//!     bytes::Bytes::from_static(br#"{"model":"food-review-1"}"#));
//! let report = run(&config).await?;
//! println!("{}", report.human_line());
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What to send, how hard, for how long, and what a good answer looks like.
#[derive(Debug, Clone)]
pub struct Config {
    /// `http://host:port/path` (no TLS).
    pub url: Uri,
    /// Request method (default `POST`).
    pub method: Method,
    /// Request body, sent with `content-length`.
    pub body: Bytes,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Workers, each with one connection (default 1).
    pub concurrency: usize,
    /// How long to send requests (default 10 s).
    pub duration: Duration,
    /// Longest wait for one response (default 30 s); a slower one is an error.
    pub request_timeout: Duration,
    /// The status every response must have (default 200); others are errors.
    pub expect_status: StatusCode,
    /// Headers the first response must have, with these exact values.
    pub expect_headers: Vec<(HeaderName, String)>,
    /// A substring the first response body must contain.
    pub expect_body: Option<String>,
}

impl Config {
    /// `POST body` to `url`, concurrency 1, 10 s, expecting 200.
    pub fn new(url: Uri, body: Bytes) -> Self {
        Self {
            url,
            method: Method::POST,
            body,
            headers: Vec::new(),
            concurrency: 1,
            duration: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            expect_status: StatusCode::OK,
            expect_headers: Vec::new(),
            expect_body: None,
        }
    }
}

/// Why a run could not start or was stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The URL is not `http://host:port/...`.
    #[error("unsupported url {0} (expected http://host:port/path)")]
    BadUrl(String),
    /// The first request could not be sent or answered.
    #[error("first request failed: {0}")]
    FirstRequest(String),
    /// The first response did not look as expected.
    #[error("check of the first response failed: {0}")]
    Check(String),
    /// The concurrency is zero.
    #[error("concurrency must be at least 1")]
    NoWorkers,
}

/// Latency percentiles (nearest rank) of the successful requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest request.
    pub max: Duration,
}

impl Latency {
    /// Percentiles of `samples` (sorted in place); `None` when empty.
    ///
    /// ```
    /// use std::time::Duration;
    /// use bbr_benches::loadgen::Latency;
    /// let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
    /// let latency = Latency::from_samples(&mut samples).unwrap();
    /// assert_eq!(latency.p50, Duration::from_millis(50));
    /// assert_eq!(latency.p99, Duration::from_millis(99));
    /// assert_eq!(latency.max, Duration::from_millis(100));
    /// ```
    pub fn from_samples(samples: &mut [Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        Some(Self {
            p50: percentile(samples, 50.0),
            p90: percentile(samples, 90.0),
            p99: percentile(samples, 99.0),
            max: *samples.last().expect("not empty"),
        })
    }
}

/// Nearest-rank percentile of sorted, non-empty `samples`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Successful requests (expected status, body read in full).
    pub requests: u64,
    /// Failed requests: connection errors, timeouts, unexpected status.
    pub errors: u64,
    /// Time from the first measured request to the last response.
    pub elapsed: Duration,
    /// Workers used.
    pub concurrency: usize,
    /// Request body size in bytes.
    pub body_bytes: usize,
    /// Percentiles of the successful requests; `None` if there were none.
    pub latency: Option<Latency>,
}

impl Report {
    /// Successful requests per second.
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// One line for people.
    pub fn human_line(&self) -> String {
        let latency = match self.latency {
            Some(l) => format!(
                "p50 {} p90 {} p99 {} max {}",
                micros(l.p50),
                micros(l.p90),
                micros(l.p99),
                micros(l.max)
            ),
            None => "no successful request".to_owned(),
        };
        format!(
            "{} requests in {:.2}s, {:.1} req/s, latency {latency}, {} errors \
             (concurrency {}, body {} B)",
            self.requests,
            self.elapsed.as_secs_f64(),
            self.requests_per_sec(),
            self.errors,
            self.concurrency,
            self.body_bytes
        )
    }

    /// One JSON object for scripts; latencies in microseconds (`null`
    /// without a successful request).
    pub fn json_line(&self) -> String {
        let us = |pick: fn(&Latency) -> Duration| {
            self.latency
                .as_ref()
                .map(|l| serde_json::json!(pick(l).as_secs_f64() * 1e6))
                .unwrap_or(serde_json::Value::Null)
        };
        serde_json::json!({
            "requests": self.requests,
            "errors": self.errors,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "requests_per_sec": self.requests_per_sec(),
            "p50_us": us(|l| l.p50),
            "p90_us": us(|l| l.p90),
            "p99_us": us(|l| l.p99),
            "max_us": us(|l| l.max),
            "concurrency": self.concurrency,
            "body_bytes": self.body_bytes,
        })
        .to_string()
    }
}

fn micros(d: Duration) -> String {
    format!("{:.0}us", d.as_secs_f64() * 1e6)
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `250us`; a bare number is seconds.
///
/// ```
/// use std::time::Duration;
/// use bbr_benches::loadgen::parse_duration;
/// assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
/// assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
/// assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
/// assert_eq!(parse_duration("soon"), None);
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// Host and port to connect to, from an `http://` URL.
fn target(url: &Uri) -> Result<(String, u16), LoadError> {
    let bad = || LoadError::BadUrl(url.to_string());
    if url.scheme_str() != Some("http") {
        return Err(bad());
    }
    let host = url.host().ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_owned(), url.port_u16().unwrap_or(80)))
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(host: &str, port: u16) -> Result<Self, String> {
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the peer closes.
            let _ = connection.await;
        });
        Ok(Self { sender })
    }

    /// Sends one request and reads the whole response.
    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), Exchange> {
        // A connection the server closed (idle timeout, `connection: close`)
        // was not given the request: reconnect, do not count an error.
        self.sender
            .ready()
            .await
            .map_err(|e| Exchange::NotSent(format!("connection: {e}")))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| Exchange::Failed(format!("request: {e}")))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| Exchange::Failed(format!("response body: {e}")))?
            .to_bytes();
        Ok((parts, body))
    }
}

/// Why an exchange on a connection did not give a response.
#[derive(Debug)]
enum Exchange {
    /// The connection was already closed; the request was not sent.
    NotSent(String),
    /// The request was sent (or being sent) and failed.
    Failed(String),
}

impl std::fmt::Display for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exchange::NotSent(m) | Exchange::Failed(m) => f.write_str(m),
        }
    }
}

/// True when the server said it closes the connection after this response.
fn closes_connection(parts: &http::response::Parts) -> bool {
    parts
        .headers
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

fn build_request(config: &Config) -> Request<Full<Bytes>> {
    let path = config
        .url
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut request = Request::builder()
        .method(config.method.clone())
        .uri(path)
        .body(Full::new(config.body.clone()))
        .expect("method and path come from a parsed URL");
    let headers = request.headers_mut();
    if let Some(authority) = config.url.authority() {
        headers.insert(
            HOST,
            HeaderValue::from_str(authority.as_str()).expect("authority is a valid header value"),
        );
    }
    for (name, value) in &config.headers {
        headers.append(name.clone(), value.clone());
    }
    request
}

/// Sends one request on a fresh connection and checks the response.
async fn check_first(config: &Config, host: &str, port: u16) -> Result<(), LoadError> {
    let exchange = async {
        let mut connection = Connection::open(host, port).await?;
        connection
            .exchange(build_request(config))
            .await
            .map_err(|e| e.to_string())
    };
    let (parts, body) = tokio::time::timeout(config.request_timeout, exchange)
        .await
        .map_err(|_| LoadError::FirstRequest("timed out".to_owned()))?
        .map_err(LoadError::FirstRequest)?;
    let excerpt = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    if parts.status != config.expect_status {
        return Err(LoadError::Check(format!(
            "status {} (expected {}), body starts with {:?}",
            parts.status,
            config.expect_status,
            excerpt()
        )));
    }
    for (name, value) in &config.expect_headers {
        let got = parts
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<not text>"));
        if got != Some(value.as_str()) {
            return Err(LoadError::Check(format!(
                "header {name} is {got:?} (expected {value:?})"
            )));
        }
    }
    if let Some(needle) = &config.expect_body
        && !body
            .windows(needle.len().max(1))
            .any(|w| w == needle.as_bytes())
    {
        return Err(LoadError::Check(format!(
            "body does not contain {needle:?}; it starts with {:?}",
            excerpt()
        )));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct WorkerResult {
    latencies: Vec<Duration>,
    errors: u64,
}

async fn worker(config: Config, host: String, port: u16, deadline: Instant) -> WorkerResult {
    let mut result = WorkerResult::default();
    let mut connection: Option<Connection> = None;
    while Instant::now() < deadline {
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match Connection::open(&host, port).await {
                Ok(conn) => connection.insert(conn),
                Err(_) => {
                    result.errors += 1;
                    // Do not spin on a refused connection.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let start = Instant::now();
        let outcome = tokio::time::timeout(
            config.request_timeout,
            conn.exchange(build_request(&config)),
        )
        .await;
        match outcome {
            Ok(Ok((parts, _body))) => {
                if parts.status == config.expect_status {
                    result.latencies.push(start.elapsed());
                } else {
                    result.errors += 1;
                }
                if closes_connection(&parts) {
                    connection = None;
                }
            }
            Ok(Err(Exchange::NotSent(_))) => connection = None,
            Ok(Err(Exchange::Failed(_))) | Err(_) => {
                result.errors += 1;
                connection = None;
            }
        }
    }
    result
}

/// Checks the first response, then runs the closed loop and summarises it.
pub async fn run(config: &Config) -> Result<Report, LoadError> {
    if config.concurrency == 0 {
        return Err(LoadError::NoWorkers);
    }
    let (host, port) = target(&config.url)?;
    check_first(config, &host, port).await?;

    let start = Instant::now();
    let deadline = start + config.duration;
    let workers: Vec<_> = (0..config.concurrency)
        .map(|_| tokio::spawn(worker(config.clone(), host.clone(), port, deadline)))
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for handle in workers {
        // A worker never runs past deadline + request_timeout (+ connect);
        // a panicked worker counts as one error.
        match handle.await {
            Ok(result) => {
                latencies.extend(result.latencies);
                errors += result.errors;
            }
            Err(_) => errors += 1,
        }
    }
    let elapsed = start.elapsed();
    Ok(Report {
        requests: latencies.len() as u64,
        errors,
        elapsed,
        concurrency: config.concurrency,
        body_bytes: config.body.len(),
        latency: Latency::from_samples(&mut latencies),
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use http::Response;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// A real hyper server on 127.0.0.1 that reads the body and answers
    /// `{"bytes":N}` with `x-gateway-model-name: test-model`; it counts the
    /// requests it answered and stops when the returned handle is aborted.
    /// With `close_each`, every response says `connection: close`.
    async fn echo_server(
        close_each: bool,
    ) -> (SocketAddr, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let served = count.clone();
        let handle = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let served = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let served = served.clone();
                        async move {
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            served.fetch_add(1, Ordering::SeqCst);
                            let mut response = Response::builder();
                            if close_each {
                                response = response.header("connection", "close");
                            }
                            Ok::<_, Infallible>(
                                response
                                    .header("x-gateway-model-name", "test-model")
                                    .body(Full::new(Bytes::from(format!(
                                        "{{\"bytes\":{}}}",
                                        body.len()
                                    ))))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, count, handle)
    }

    fn config_for(addr: SocketAddr, body: &'static [u8]) -> Config {
        let mut config = Config::new(
            format!("http://{addr}/v1/chat/completions")
                .parse()
                .unwrap(),
            Bytes::from_static(body),
        );
        config.duration = Duration::from_millis(300);
        config.request_timeout = Duration::from_secs(5);
        config
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_every_request_the_server_answered() {
        let (addr, served, server) = echo_server(false).await;
        let mut config = config_for(addr, br#"{"model":"test-model"}"#);
        config.concurrency = 3;
        config.expect_headers = vec![(
            HeaderName::from_static("x-gateway-model-name"),
            "test-model".to_owned(),
        )];
        config.expect_body = Some("\"bytes\":22".to_owned());
        let report = run(&config).await.unwrap();
        server.abort();

        assert_eq!(report.errors, 0);
        assert!(report.requests > 10, "only {} requests", report.requests);
        // The checked first request is not measured.
        assert_eq!(served.load(Ordering::SeqCst), report.requests + 1);
        assert!(report.elapsed >= config.duration);
        assert!(report.elapsed < config.duration + Duration::from_secs(2));
        let latency = report.latency.unwrap();
        assert!(latency.p50 <= latency.p90 && latency.p90 <= latency.p99);
        assert!(latency.p99 <= latency.max && latency.max < Duration::from_secs(2));
        let rps = report.requests as f64 / report.elapsed.as_secs_f64();
        assert!((report.requests_per_sec() - rps).abs() < 1e-6);

        let json: serde_json::Value = serde_json::from_str(&report.json_line()).unwrap();
        assert_eq!(json["requests"], report.requests);
        assert_eq!(json["errors"], 0);
        assert_eq!(json["concurrency"], 3);
        assert!(json["p99_us"].as_f64().unwrap() >= json["p50_us"].as_f64().unwrap());
        assert!(
            report
                .human_line()
                .contains(&format!("{} requests", report.requests))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_closing_each_connection_costs_reconnects_not_errors() {
        let (addr, served, server) = echo_server(true).await;
        let mut config = config_for(addr, br#"{"model":"test-model"}"#);
        config.concurrency = 2;
        let report = run(&config).await.unwrap();
        server.abort();
        assert_eq!(report.errors, 0);
        assert!(report.requests > 5, "only {} requests", report.requests);
        assert_eq!(served.load(Ordering::SeqCst), report.requests + 1);
    }

    #[tokio::test]
    async fn a_wrong_status_fails_the_check_before_any_load() {
        let (addr, served, server) = echo_server(false).await;
        let mut config = config_for(addr, b"{}");
        config.expect_status = StatusCode::CREATED;
        let error = run(&config).await.unwrap_err();
        server.abort();
        assert!(
            matches!(error, LoadError::Check(ref m) if m.contains("200")),
            "{error}"
        );
        assert_eq!(served.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_missing_header_or_body_text_fails_the_check() {
        let (addr, _served, server) = echo_server(false).await;
        let mut config = config_for(addr, b"{}");
        config.expect_headers = vec![(
            HeaderName::from_static("x-gateway-model-name"),
            "other".to_owned(),
        )];
        assert!(matches!(run(&config).await, Err(LoadError::Check(_))));
        config.expect_headers.clear();
        config.expect_body = Some("nowhere".to_owned());
        assert!(matches!(run(&config).await, Err(LoadError::Check(_))));
        server.abort();
    }

    #[tokio::test]
    async fn a_closed_port_fails_the_first_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = run(&config_for(addr, b"{}")).await.unwrap_err();
        assert!(matches!(error, LoadError::FirstRequest(_)), "{error}");
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(target(&"https://127.0.0.1/".parse().unwrap()).is_err());
        assert_eq!(
            target(&"http://127.0.0.1:9/x".parse().unwrap()).unwrap(),
            ("127.0.0.1".to_owned(), 9)
        );
        assert_eq!(
            target(&"http://[::1]/".parse().unwrap()).unwrap(),
            ("::1".to_owned(), 80)
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut one = vec![Duration::from_micros(7)];
        let latency = Latency::from_samples(&mut one).unwrap();
        assert_eq!(latency.p50, Duration::from_micros(7));
        assert_eq!(latency.max, Duration::from_micros(7));
        let mut ten: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        let latency = Latency::from_samples(&mut ten).unwrap();
        assert_eq!(latency.p50, Duration::from_millis(5));
        assert_eq!(latency.p90, Duration::from_millis(9));
        assert_eq!(latency.p99, Duration::from_millis(10));
        assert_eq!(Latency::from_samples(&mut []), None);
    }

    #[test]
    fn reports_without_success_say_so() {
        let report = Report {
            requests: 0,
            errors: 4,
            elapsed: Duration::from_secs(1),
            concurrency: 2,
            body_bytes: 10,
            latency: None,
        };
        assert!(report.human_line().contains("no successful request"));
        let json: serde_json::Value = serde_json::from_str(&report.json_line()).unwrap();
        assert!(json["p50_us"].is_null());
        assert_eq!(json["errors"], 4);
    }
}
