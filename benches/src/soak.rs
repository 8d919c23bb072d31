//! A soak run (the `soak` binary, driven by `benches/scripts/soak.sh`; not
//! part of the test suite): many clients send random bodies in random
//! chunkings through a gateway for a bounded time, to an upstream this
//! process serves itself, and every request is accounted for.
//!
//! Each request carries a unique `x-soak-id`. The upstream records, per id,
//! how often it arrived, an FNV-1a hash of the body bytes it received and
//! the `x-gateway-model-name` it carried, and answers with the id. At the
//! end every planned request is judged ([`judge`]):
//!
//! | verdict | meaning |
//! | --- | --- |
//! | ok | routed: 200, the upstream saw it once, same bytes, the model header of its body, the answer names its id; refused: 400 `invalid_model` and the upstream never saw it |
//! | lost | a routable request that got no answer, an error status, or never reached the upstream |
//! | duplicated | the upstream saw the id more than once |
//! | mismatched | other bytes, another model header, another request's answer, a refused request that reached the upstream, or a refusal with the wrong status or code |
//!
//! Bodies are built from the crate's corpus (dense multilingual prose, the
//! base64-heavy chat, agent turns with tool calls, completions) at
//! log-uniform sizes, with `model` first or last and one of the scenario's
//! models; about one request in eight names a model that is not a string,
//! which every adapter must refuse. Chunk sizes are random per request:
//! 1, 7 or 64 bytes for bodies up to 16 KiB, otherwise up to 16 KiB, and
//! half the requests announce `content-length` (the rest go chunked).
//!
//! The run is bounded: no request starts after the deadline, each has a
//! timeout, so it ends within `duration + request_timeout`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::{Position, SplitMix64};

/// The header naming a request for the ledger.
pub const ID_HEADER: &str = "x-soak-id";

/// The models bodies name: the guide's base models and adapters, each a
/// route of the example gateway and of `deploy/envoy/bbr-full-duplex.yaml`.
pub const MODELS: [&str; 5] = [
    "food-review-1",
    "ski-resorts",
    "movie-critique",
    "meta-llama/Llama-3.1-8B-Instruct",
    "deepseek/vllm-deepseek-r1",
];

/// How a soak run goes.
#[derive(Debug, Clone)]
pub struct Config {
    /// The gateway, `http://host:port` (no TLS).
    pub target: Uri,
    /// The request path.
    pub path: String,
    /// Where this process serves the upstream the gateway routes to.
    pub upstream: SocketAddr,
    /// Concurrent clients (default 64), each with its own connection.
    pub clients: usize,
    /// How long requests are started (default 60 s).
    pub duration: Duration,
    /// Longest wait for one answer (default 30 s); a slower one is lost.
    pub request_timeout: Duration,
    /// Seed of the workload; the same seed plans the same requests.
    pub seed: u64,
    /// Largest body (default 1 MiB).
    pub max_body: usize,
    /// Processes whose memory is reported before and after (the gateway,
    /// the processor, Envoy).
    pub pids: Vec<u32>,
}

impl Config {
    /// 64 clients for 60 s, bodies up to 1 MiB, seed 1.
    pub fn new(target: Uri, upstream: SocketAddr) -> Self {
        Self {
            target,
            path: "/v1/chat/completions".to_owned(),
            upstream,
            clients: 64,
            duration: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            seed: 1,
            max_body: 1 << 20,
            pids: Vec::new(),
        }
    }
}

/// What must happen to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Routed to the upstream with this model header.
    Routed(&'static str),
    /// Refused with 400 `invalid_model`; never forwarded.
    Refused,
}

/// One planned request.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Its `x-soak-id`.
    pub id: u64,
    /// What must happen to it.
    pub expect: Expect,
    /// The body.
    pub body: Bytes,
    /// The chunk sizes it is sent in (summing to the body's length).
    pub chunks: Vec<usize>,
    /// Whether it announces `content-length` (else chunked).
    pub content_length: bool,
}

/// FNV-1a, 64-bit: the same value however the bytes were split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The hash of one buffer.
    ///
    /// ```
    /// use bbr_benches::soak::Fnv;
    /// let mut split = Fnv::default();
    /// split.update(b"mod");
    /// split.update(b"el");
    /// assert_eq!(split.value(), Fnv::of(b"model"));
    /// ```
    pub fn of(bytes: &[u8]) -> u64 {
        let mut hash = Self::default();
        hash.update(bytes);
        hash.value()
    }

    /// The hash so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// Body templates without `model`, and the generator that turns them into
/// plans.
#[derive(Debug)]
pub struct Workload {
    /// Each is an object's members after `{`, without the closing `}`.
    templates: Vec<Bytes>,
    rng: SplitMix64,
    next_id: u64,
}

impl Workload {
    /// Builds 48 templates of log-uniform sizes up to `max_body` from the
    /// corpus's body classes.
    ///
    /// # Panics
    ///
    /// When `max_body` is below the corpus's [`MIN_SIZE`](crate::MIN_SIZE).
    pub fn new(seed: u64, max_body: usize) -> Self {
        assert!(max_body >= crate::MIN_SIZE, "max_body below MIN_SIZE");
        let mut rng = SplitMix64::new(seed ^ 0x736f_616b);
        let (low, high) = ((crate::MIN_SIZE as f64).ln(), (max_body as f64).ln());
        let mut templates = Vec::new();
        for i in 0..48 {
            let unit = rng.below(1 << 20) as f64 / f64::from(1 << 20);
            let size =
                ((low + (high - low) * unit).exp() as usize).clamp(crate::MIN_SIZE, max_body);
            let body = match i % 4 {
                0 => crate::prose_body(size, Position::First),
                1 => crate::chat_body(size, Position::First),
                2 => crate::tools_body(size, Position::First),
                _ => crate::completions_body(size, Position::First),
            };
            let prefix = format!("{{\"model\":\"{}\",", crate::MODEL);
            let members = body
                .strip_prefix(prefix.as_bytes())
                .and_then(|rest| rest.strip_suffix(b"}"))
                .expect("a corpus body starts with its model and ends with `}`");
            templates.push(Bytes::copy_from_slice(members));
        }
        Self {
            templates,
            rng,
            next_id: 1,
        }
    }

    /// The next request: a template, a model or a refusable value, a
    /// position and a chunking.
    pub fn plan(&mut self) -> Plan {
        let id = self.next_id;
        self.next_id += 1;
        let members = &self.templates[self.rng.below(self.templates.len())];
        let (expect, value) = if self.rng.below(8) == 0 {
            (Expect::Refused, "42".to_owned())
        } else {
            let model = MODELS[self.rng.below(MODELS.len())];
            (Expect::Routed(model), format!("\"{model}\""))
        };
        let mut body = Vec::with_capacity(members.len() + 64);
        if self.rng.below(2) == 0 {
            body.extend_from_slice(format!("{{\"model\":{value},").as_bytes());
            body.extend_from_slice(members);
            body.push(b'}');
        } else {
            body.push(b'{');
            body.extend_from_slice(members);
            body.extend_from_slice(format!(",\"model\":{value}}}").as_bytes());
        }
        let chunks = self.chunking(body.len());
        Plan {
            id,
            expect,
            body: Bytes::from(body),
            chunks,
            content_length: self.rng.below(2) == 0,
        }
    }

    fn chunking(&mut self, len: usize) -> Vec<usize> {
        let fixed = if len <= 16 << 10 {
            [Some(1), Some(7), Some(64), None][self.rng.below(4)]
        } else {
            None
        };
        let mut chunks = Vec::new();
        let mut left = len;
        while left > 0 {
            let size = fixed
                .unwrap_or_else(|| self.rng.range(1, 16 << 10))
                .min(left);
            chunks.push(size);
            left -= size;
        }
        chunks
    }
}

/// What the upstream saw of one id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// How often it arrived.
    pub count: u32,
    /// FNV-1a of the body bytes of its last arrival.
    pub hash: u64,
    /// Its `x-gateway-model-name`, if any.
    pub model: Option<String>,
}

/// What the client got for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A response: its status and body.
    Response {
        /// The status.
        status: u16,
        /// The body.
        body: Bytes,
    },
    /// No response within the timeout.
    Timeout,
    /// The connection failed.
    Failed,
}

/// The verdict on one request; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// As expected.
    Ok,
    /// Never answered as it should have been, or never reached the upstream.
    Lost,
    /// The upstream saw it more than once.
    Duplicated,
    /// Something arrived, but not what was sent or expected.
    Mismatched,
}

/// Judges a request by what the client got and what the upstream saw.
///
/// ```
/// use bbr_benches::soak::{judge, Answer, Expect, Fnv, Seen, Verdict};
/// let sent = Fnv::of(b"{}");
/// let seen = Seen { count: 1, hash: sent, model: Some("ski-resorts".into()) };
/// let answer = Answer::Response { status: 200, body: r#"{"id":7}"#.into() };
/// assert_eq!(judge(7, Expect::Routed("ski-resorts"), sent, &answer, Some(&seen)), Verdict::Ok);
/// assert_eq!(judge(7, Expect::Routed("food-review-1"), sent, &answer, Some(&seen)), Verdict::Mismatched);
/// assert_eq!(judge(7, Expect::Routed("ski-resorts"), sent, &answer, None), Verdict::Lost);
/// ```
pub fn judge(id: u64, expect: Expect, sent: u64, answer: &Answer, seen: Option<&Seen>) -> Verdict {
    if seen.is_some_and(|seen| seen.count > 1) {
        return Verdict::Duplicated;
    }
    match expect {
        Expect::Refused => {
            if seen.is_some() {
                return Verdict::Mismatched;
            }
            match answer {
                Answer::Response { status: 400, body }
                    if contains(body, br#""code":"invalid_model""#) =>
                {
                    Verdict::Ok
                }
                Answer::Response { .. } => Verdict::Mismatched,
                Answer::Timeout | Answer::Failed => Verdict::Lost,
            }
        }
        Expect::Routed(model) => {
            let Some(seen) = seen else {
                return Verdict::Lost;
            };
            if seen.hash != sent || seen.model.as_deref() != Some(model) {
                return Verdict::Mismatched;
            }
            match answer {
                Answer::Response { status: 200, body } => {
                    if contains(body, format!("\"id\":{id}}}").as_bytes()) {
                        Verdict::Ok
                    } else {
                        Verdict::Mismatched
                    }
                }
                _ => Verdict::Lost,
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Resident memory of a process, from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`.
    pub rss_kib: u64,
    /// `VmHWM`, the peak.
    pub peak_kib: u64,
}

impl Memory {
    /// Reads it; `None` when the process is gone or this is not Linux.
    pub fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Some(Self {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }
}

/// Why a run did not start.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// The upstream address could not be bound.
    #[error("cannot listen on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
    /// Only `http://host:port` targets.
    #[error("the target must be http://host:port")]
    Target,
    /// The first request, sent alone, was not routed as it must be.
    #[error(
        "the first request was not routed (verdict {0:?}): is the gateway configured for the soak's upstream?"
    )]
    FirstRequest(Verdict),
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Requests sent.
    pub sent: u64,
    /// Of those, refused as planned.
    pub refused: u64,
    /// Verdict counts.
    pub verdicts: HashMap<Verdict, u64>,
    /// Median and 99th percentile of the answered requests.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Body bytes sent.
    pub bytes: u64,
    /// How long the run took.
    pub elapsed: Duration,
    /// Per process: before and after.
    pub memory: Vec<(u32, Option<Memory>, Option<Memory>)>,
}

impl Report {
    /// True when every request was judged ok.
    pub fn clean(&self) -> bool {
        self.verdicts
            .iter()
            .all(|(verdict, n)| *verdict == Verdict::Ok || *n == 0)
    }

    fn count(&self, verdict: Verdict) -> u64 {
        self.verdicts.get(&verdict).copied().unwrap_or(0)
    }

    /// One line a person reads.
    pub fn human_line(&self) -> String {
        let mut line = format!(
            "{} requests ({} refused as planned, {:.1} MiB) in {:.1} s: ok {}, lost {}, duplicated {}, mismatched {}; p50 {:.2} ms, p99 {:.2} ms",
            self.sent,
            self.refused,
            self.bytes as f64 / f64::from(1 << 20),
            self.elapsed.as_secs_f64(),
            self.count(Verdict::Ok),
            self.count(Verdict::Lost),
            self.count(Verdict::Duplicated),
            self.count(Verdict::Mismatched),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
        );
        for (pid, before, after) in &self.memory {
            let mib = |m: &Option<Memory>, f: fn(&Memory) -> u64| {
                m.as_ref()
                    .map_or("?".to_owned(), |m| format!("{:.1}", f(m) as f64 / 1024.0))
            };
            line.push_str(&format!(
                "; pid {pid} RSS {} -> {} MiB (peak {} MiB)",
                mib(before, |m| m.rss_kib),
                mib(after, |m| m.rss_kib),
                mib(after, |m| m.peak_kib),
            ));
        }
        line
    }
}

type Ledger = Arc<Mutex<HashMap<u64, Seen>>>;

/// Serves the upstream: records each request in the ledger, answers its id.
async fn serve_upstream(listener: TcpListener, ledger: Ledger) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let ledger = ledger.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let ledger = ledger.clone();
                async move {
                    let header = |name: &str| {
                        request
                            .headers()
                            .get(name)
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    };
                    let id = header(ID_HEADER).and_then(|v| v.parse::<u64>().ok());
                    let model = header(bbr_core::contract::MODEL_HEADER);
                    let mut body = request.into_body();
                    let mut hash = Fnv::default();
                    let mut complete = true;
                    while let Some(frame) = body.frame().await {
                        match frame {
                            Ok(frame) => {
                                if let Some(data) = frame.data_ref() {
                                    hash.update(data);
                                }
                            }
                            Err(_) => {
                                complete = false;
                                break;
                            }
                        }
                    }
                    // A body cut short never counts as delivered.
                    if let (Some(id), true) = (id, complete) {
                        let mut ledger = ledger.lock().expect("ledger");
                        let seen = ledger.entry(id).or_default();
                        seen.count += 1;
                        seen.hash = hash.value();
                        seen.model = model;
                    }
                    let reply = format!("{{\"object\":\"soak\",\"id\":{}}}", id.unwrap_or(0));
                    let mut response = Response::new(Full::new(Bytes::from(reply)));
                    response
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

/// A request body fed from a channel: each chunk is one frame on the wire.
struct ChannelBody {
    chunks: mpsc::Receiver<Bytes>,
    len: Option<u64>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
    }

    fn size_hint(&self) -> SizeHint {
        self.len
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

struct Client {
    host: String,
    port: u16,
    authority: String,
    path: String,
    sender: Option<hyper::client::conn::http1::SendRequest<ChannelBody>>,
}

impl Client {
    async fn connection(
        &mut self,
    ) -> Option<&mut hyper::client::conn::http1::SendRequest<ChannelBody>> {
        if let Some(sender) = &mut self.sender
            && sender.ready().await.is_err()
        {
            self.sender = None;
        }
        if self.sender.is_none() {
            let stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .ok()?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .ok()?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        self.sender.as_mut()
    }

    /// Sends one plan and reads the whole answer.
    async fn send(&mut self, plan: &Plan, timeout: Duration) -> Answer {
        let (tx, rx) = mpsc::channel(8);
        let len = plan.content_length.then_some(plan.body.len() as u64);
        let mut request = Request::post(&self.path)
            .header(HOST, &self.authority)
            .header(CONTENT_TYPE, "application/json")
            .header(ID_HEADER, plan.id)
            .body(ChannelBody { chunks: rx, len })
            .expect("request");
        if let Some(len) = len {
            request.headers_mut().insert(CONTENT_LENGTH, len.into());
        }
        // A refusal may leave the rest of the body unread, after which the
        // server closes: such a request gets a connection of its own.
        let refused = plan.expect == Expect::Refused;
        if refused {
            request
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let body = plan.body.clone();
        let chunks = plan.chunks.clone();
        let feeder = tokio::spawn(async move {
            let mut at = 0;
            for (i, size) in chunks.into_iter().enumerate() {
                if tx.send(body.slice(at..at + size)).await.is_err() {
                    return;
                }
                at += size;
                if i % 16 == 15 {
                    tokio::task::yield_now().await;
                }
            }
        });
        let exchange = async {
            let sender = self.connection().await.ok_or(Answer::Failed)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|_| Answer::Failed)?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|_| Answer::Failed)?
                .to_bytes();
            Ok::<_, Answer>(Answer::Response { status, body })
        };
        let answer = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(failed)) => failed,
            Err(_) => Answer::Timeout,
        };
        feeder.abort();
        if refused || !matches!(answer, Answer::Response { .. }) {
            self.sender = None;
        }
        answer
    }
}

struct Sent {
    id: u64,
    expect: Expect,
    hash: u64,
    answer: Answer,
    latency: Duration,
}

/// Runs the soak: serves the upstream, checks one request, then runs
/// `clients` workers until `duration` is over, and judges every request.
pub async fn run(config: &Config) -> Result<Report, SoakError> {
    let host = config.target.host().ok_or(SoakError::Target)?.to_owned();
    let port = config.target.port_u16().ok_or(SoakError::Target)?;
    if config.target.scheme_str() != Some("http") {
        return Err(SoakError::Target);
    }
    let listener = TcpListener::bind(config.upstream)
        .await
        .map_err(|e| SoakError::Listen(config.upstream, e))?;
    let ledger = Ledger::default();
    let upstream = tokio::spawn(serve_upstream(listener, ledger.clone()));
    let client = || Client {
        host: host.clone(),
        port,
        authority: format!("{host}:{port}"),
        path: config.path.clone(),
        sender: None,
    };

    // A misrouted gateway soaks nothing: one routed request must pass first.
    let mut workload = Workload::new(config.seed, config.max_body);
    let first = loop {
        let plan = workload.plan();
        if plan.expect != Expect::Refused {
            break plan;
        }
    };
    let answer = client().send(&first, config.request_timeout).await;
    let seen = ledger.lock().expect("ledger").remove(&first.id);
    let verdict = judge(
        first.id,
        first.expect,
        Fnv::of(&first.body),
        &answer,
        seen.as_ref(),
    );
    if verdict != Verdict::Ok {
        upstream.abort();
        return Err(SoakError::FirstRequest(verdict));
    }

    let before: Vec<_> = config.pids.iter().map(|&pid| Memory::of(pid)).collect();
    let workload = Arc::new(Mutex::new(workload));
    let start = Instant::now();
    let deadline = start + config.duration;
    let mut workers = Vec::new();
    for _ in 0..config.clients {
        let workload = workload.clone();
        let mut client = client();
        let timeout = config.request_timeout;
        workers.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut bytes = 0u64;
            while Instant::now() < deadline {
                let plan = workload.lock().expect("workload").plan();
                let begun = Instant::now();
                let answer = client.send(&plan, timeout).await;
                bytes += plan.body.len() as u64;
                sent.push(Sent {
                    id: plan.id,
                    expect: plan.expect,
                    hash: Fnv::of(&plan.body),
                    answer,
                    latency: begun.elapsed(),
                });
            }
            (sent, bytes)
        }));
    }
    let mut all = Vec::new();
    let mut bytes = 0;
    for worker in workers {
        let (sent, worker_bytes) = worker.await.expect("worker");
        all.extend(sent);
        bytes += worker_bytes;
    }
    let elapsed = start.elapsed();
    let after: Vec<_> = config.pids.iter().map(|&pid| Memory::of(pid)).collect();
    upstream.abort();

    let ledger = ledger.lock().expect("ledger");
    let mut verdicts = HashMap::new();
    let mut latencies = Vec::new();
    let mut refused = 0;
    for sent in &all {
        let verdict = judge(
            sent.id,
            sent.expect,
            sent.hash,
            &sent.answer,
            ledger.get(&sent.id),
        );
        *verdicts.entry(verdict).or_insert(0) += 1;
        if sent.expect == Expect::Refused && verdict == Verdict::Ok {
            refused += 1;
        }
        if matches!(sent.answer, Answer::Response { .. }) {
            latencies.push(sent.latency);
        }
    }
    // Nearest rank, as the load generator reports it.
    let (p50, p99) = crate::loadgen::Latency::from_samples(&mut latencies)
        .map(|latency| (latency.p50, latency.p99))
        .unwrap_or_default();
    Ok(Report {
        sent: all.len() as u64,
        refused,
        verdicts,
        p50,
        p99,
        bytes,
        elapsed,
        memory: config
            .pids
            .iter()
            .zip(before.into_iter().zip(after))
            .map(|(&pid, (before, after))| (pid, before, after))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_bodies_are_json_naming_the_planned_model() {
        let mut workload = Workload::new(7, 64 << 10);
        let (mut first, mut last, mut refused) = (0, 0, 0);
        for _ in 0..200 {
            let plan = workload.plan();
            assert_eq!(plan.chunks.iter().sum::<usize>(), plan.body.len());
            let value: serde_json::Value = serde_json::from_slice(&plan.body).expect("JSON");
            match plan.expect {
                Expect::Routed(model) => assert_eq!(value["model"], model),
                Expect::Refused => {
                    assert_eq!(value["model"], 42);
                    refused += 1;
                }
            }
            if plan.body.starts_with(b"{\"model\"") {
                first += 1;
            } else {
                last += 1;
            }
        }
        assert!(first > 50 && last > 50 && (10..60).contains(&refused));
    }

    #[test]
    fn the_same_seed_plans_the_same_requests() {
        let (mut a, mut b) = (Workload::new(3, 1 << 20), Workload::new(3, 1 << 20));
        for _ in 0..20 {
            let (x, y) = (a.plan(), b.plan());
            assert_eq!((x.id, x.body, x.chunks), (y.id, y.body, y.chunks));
        }
    }

    #[test]
    fn verdicts_for_every_way_a_request_goes_wrong() {
        let sent = Fnv::of(b"body");
        let routed = Expect::Routed("ski-resorts");
        let seen = |count, hash, model: &str| Seen {
            count,
            hash,
            model: Some(model.to_owned()),
        };
        let ok = Answer::Response {
            status: 200,
            body: Bytes::from_static(br#"{"object":"soak","id":5}"#),
        };
        let good = seen(1, sent, "ski-resorts");
        assert_eq!(judge(5, routed, sent, &ok, Some(&good)), Verdict::Ok);
        assert_eq!(judge(5, routed, sent, &ok, None), Verdict::Lost);
        assert_eq!(
            judge(5, routed, sent, &Answer::Timeout, Some(&good)),
            Verdict::Lost
        );
        let error = Answer::Response {
            status: 502,
            body: Bytes::new(),
        };
        assert_eq!(judge(5, routed, sent, &error, Some(&good)), Verdict::Lost);
        assert_eq!(
            judge(5, routed, sent, &ok, Some(&seen(2, sent, "ski-resorts"))),
            Verdict::Duplicated
        );
        assert_eq!(
            judge(
                5,
                routed,
                sent,
                &ok,
                Some(&seen(1, sent ^ 1, "ski-resorts"))
            ),
            Verdict::Mismatched
        );
        assert_eq!(
            judge(5, routed, sent, &ok, Some(&seen(1, sent, "movie-critique"))),
            Verdict::Mismatched
        );
        // Another request's answer.
        assert_eq!(
            judge(55, routed, sent, &ok, Some(&good)),
            Verdict::Mismatched
        );

        let refusal = Answer::Response {
            status: 400,
            body: bbr_core::contract::Refusal::from(bbr_core::ExtractError::new(
                bbr_core::ErrorKind::ModelNotAString,
                9,
            ))
            .json_body()
            .into(),
        };
        assert_eq!(judge(5, Expect::Refused, sent, &refusal, None), Verdict::Ok);
        assert_eq!(
            judge(5, Expect::Refused, sent, &refusal, Some(&good)),
            Verdict::Mismatched
        );
        assert_eq!(
            judge(5, Expect::Refused, sent, &ok, None),
            Verdict::Mismatched
        );
        assert_eq!(
            judge(5, Expect::Refused, sent, &Answer::Failed, None),
            Verdict::Lost
        );
    }

    #[test]
    fn memory_of_this_process_is_read() {
        let memory = Memory::of(std::process::id()).expect("/proc");
        assert!(memory.rss_kib > 0 && memory.peak_kib >= memory.rss_kib);
    }

    #[tokio::test]
    async fn a_run_without_a_gateway_stops_at_the_first_request() {
        // The soak pointed at its own upstream, no gateway between: no
        // model header is set, so the run refuses to start.
        let upstream = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let mut config = Config::new(format!("http://{upstream}").parse().unwrap(), upstream);
        config.clients = 4;
        config.duration = Duration::from_millis(300);
        config.max_body = 16 << 10;
        let error = run(&config).await.expect_err("no gateway");
        assert!(
            matches!(error, SoakError::FirstRequest(Verdict::Mismatched)),
            "{error}"
        );
    }
}
