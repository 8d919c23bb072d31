//! The HTTP surface: routes, request handling in the simulator's order,
//! non-streaming and streaming answers.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use bbr_core::encoding::{ContentEncoding, DecodeLimits, Decoder};

use crate::api::{
    ChatChoice, ChatChunkChoice, ChatMessage, ChatRequest, Delta, Envelope, LoraAdapterRequest,
    ModelCard, ModelList, TextChoice, TextRequest, Usage,
};
use crate::config::{FailureType, LoraModule, Mode, SimConfig};
use crate::error::RequestError;
use crate::form;
use crate::generate::{self, Generated, Rng};
use crate::metrics::{self, Counters};
use crate::observe::Observer;
use crate::scheduler::{Admission, Slot};
use crate::tokenizer;

/// Everything one simulated server shares between requests.
#[derive(Debug)]
pub(crate) struct SimState {
    pub(crate) config: SimConfig,
    pub(crate) port: u16,
    pub(crate) pod_name: String,
    pod_header: HeaderValue,
    port_header: HeaderValue,
    namespace_header: Option<HeaderValue>,
    /// Known LoRAs: configured ones plus `/v1/load_lora_adapter`.
    loras: RwLock<Vec<LoraModule>>,
    admission: Admission,
    counters: Counters,
    pub(crate) observer: Observer,
    request_counter: AtomicU64,
    /// Draws for failure injection (separate from answer ids).
    failure_counter: AtomicU64,
    started: std::time::Instant,
}

/// `x-inference-pod` default: the first served name made DNS-label-like,
/// then the port, e.g. `meta-llama-llama-3-1-8b-instruct-8000`.
fn default_pod_name(model: &str, port: u16) -> String {
    let mut name = String::with_capacity(model.len() + 6);
    for c in model.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('-') && !name.is_empty() {
            name.push('-');
        }
    }
    if !name.ends_with('-') {
        name.push('-');
    }
    name.push_str(&port.to_string());
    name
}

/// A header value from configuration text; invalid characters become `_`
/// so a bad `POD_NAME` cannot stop the server.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| {
        let cleaned: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        HeaderValue::from_str(&cleaned).expect("only visible ASCII remains")
    })
}

impl SimState {
    pub(crate) fn new(config: SimConfig, port: u16) -> Self {
        let pod_name = config
            .pod_name
            .clone()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| default_pod_name(config.display_name(), port));
        Self {
            port,
            pod_header: header_value(&pod_name),
            port_header: HeaderValue::from(port),
            namespace_header: config
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(header_value),
            pod_name,
            loras: RwLock::new(config.lora_modules.clone()),
            admission: Admission::new(
                config.max_num_seqs,
                config.max_waiting_queue_length,
                config.max_loras,
            ),
            counters: Counters::default(),
            observer: Observer::new(config.record_capacity),
            request_counter: AtomicU64::new(0),
            failure_counter: AtomicU64::new(0),
            started: std::time::Instant::now(),
            config,
        }
    }

    fn loras(&self) -> std::sync::RwLockReadGuard<'_, Vec<LoraModule>> {
        self.loras
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn loras_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<LoraModule>> {
        self.loras
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the answer's `model` says and which LoRA slot (if any) the
    /// request needs; `None` for a name this server does not serve.
    pub(crate) fn resolve(&self, model: &str) -> Option<(String, Option<String>)> {
        if self.config.is_served_name(model) {
            return Some((self.config.display_name().to_owned(), None));
        }
        self.loras()
            .iter()
            .any(|lora| lora.name == model)
            .then(|| (model.to_owned(), Some(model.to_owned())))
    }

    /// Failure injection: `rate` percent of requests get one of the
    /// configured error types (deterministic for a seed).
    fn injected_failure(&self) -> Option<FailureType> {
        let rate = self.config.failure_injection_rate;
        if rate == 0 {
            return None;
        }
        let draw = self.failure_counter.fetch_add(1, Ordering::Relaxed);
        let mut rng = Rng::for_request(self.config.seed ^ 0x6661_696C_7572_6573, draw);
        if rng.next_f64() * 100.0 >= f64::from(rate) {
            return None;
        }
        let types: &[FailureType] = if self.config.failure_types.is_empty() {
            &FailureType::ALL
        } else {
            &self.config.failure_types
        };
        Some(types[rng.range(0, types.len() as u64 - 1) as usize])
    }

    /// A response id: the simulator's name-based UUID of seed, port and a
    /// counter, so a fixed seed gives reproducible ids.
    fn next_id(&self, prefix: &str) -> (String, u64) {
        let counter = self.request_counter.fetch_add(1, Ordering::Relaxed);
        let digest = Sha256::digest(format!("{}-{}-{counter}", self.config.seed, self.port));
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[6] = (b[6] & 0x0f) | 0x50;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let id = format!(
            "{prefix}{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        (id, counter)
    }
}

/// The router of one simulated server.
pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(text_completions))
        .route("/v1/audio/transcriptions", post(form::transcriptions))
        .route("/v1/audio/translations", post(form::translations))
        .route("/v1/images/edits", post(form::image_edits))
        .route("/v1/models", get(models))
        .route("/v1/load_lora_adapter", post(load_lora))
        .route("/v1/unload_lora_adapter", post(unload_lora))
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .layer(axum::middleware::map_response_with_state(
            Arc::clone(&state),
            add_replica_headers,
        ))
        .with_state(state)
}

/// `x-inference-pod`, `x-inference-port` (and `x-inference-namespace` when
/// configured) on every answer, as the simulator does with `POD_NAME`.
async fn add_replica_headers(State(sim): State<Arc<SimState>>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("x-inference-pod", sim.pod_header.clone());
    headers.insert("x-inference-port", sim.port_header.clone());
    if let Some(namespace) = &sim.namespace_header {
        headers.insert("x-inference-namespace", namespace.clone());
    }
    response
}

async fn health() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], "")
}

/// 503 during `startup_duration`, then 200 like `/health`.
async fn ready(State(sim): State<Arc<SimState>>) -> Response {
    if sim.started.elapsed() < sim.config.startup_duration {
        return RequestError::NotReady.into_response();
    }
    health().await.into_response()
}

async fn metrics_text(State(sim): State<Arc<SimState>>) -> impl IntoResponse {
    let body = metrics::render(
        sim.config.display_name(),
        sim.config.max_loras,
        &sim.admission.snapshot(),
        &sim.counters,
    );
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body)
}

pub(crate) fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn models(State(sim): State<Arc<SimState>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    sim.observer.record(
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        b"",
        None,
        false,
    );
    let created = unix_seconds();
    let served = sim.config.served_names();
    let parent = served[0].clone();
    let mut data: Vec<ModelCard> = served
        .into_iter()
        .map(|id| ModelCard {
            id,
            object: "model",
            created,
            owned_by: "vllm",
            root: sim.config.model.clone(),
            parent: None,
            max_model_len: sim.config.max_model_len,
        })
        .collect();
    data.extend(sim.loras().iter().map(|lora| ModelCard {
        id: lora.name.clone(),
        object: "model",
        created,
        owned_by: "vllm",
        root: lora.path.clone().unwrap_or_else(|| lora.name.clone()),
        parent: Some(parent.clone()),
        max_model_len: sim.config.max_model_len,
    }));
    json_response(&ModelList {
        object: "list",
        data,
    })
}

pub(crate) fn json_response<T: Serialize>(value: &T) -> Response {
    let body = serde_json::to_vec(value).expect("response types always serialize");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Reads the whole body, refusing more than `limit` bytes.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, RequestError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(RequestError::BodyTooLarge { limit });
    }
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| RequestError::BodyRead)?;
        total += chunk.len();
        if total > limit {
            return Err(RequestError::BodyTooLarge { limit });
        }
        match (&mut first, &mut joined) {
            (None, _) => first = Some(chunk),
            (Some(head), None) => {
                let mut buffer = BytesMut::with_capacity(total.max(head.len() * 2));
                buffer.extend_from_slice(head);
                buffer.extend_from_slice(&chunk);
                joined = Some(buffer);
            }
            (Some(_), Some(buffer)) => buffer.extend_from_slice(&chunk),
        }
    }
    Ok(match joined {
        Some(buffer) => buffer.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// The body decoded by its `Content-Encoding` (`gzip`, `deflate`, `br`,
/// `zstd`, or a list of two), at most `limit` decoded bytes; a plain body
/// as it is.
fn decode_body<'a>(
    headers: &HeaderMap,
    body: &'a Bytes,
    limit: usize,
) -> Result<Cow<'a, [u8]>, RequestError> {
    let mut encodings = headers.get_all(header::CONTENT_ENCODING).iter().peekable();
    if encodings.peek().is_none() {
        return Ok(Cow::Borrowed(body));
    }
    let joined = encodings
        .map(|value| value.as_bytes())
        .collect::<Vec<_>>()
        .join(&b","[..]);
    let encoding = ContentEncoding::parse(&joined)
        .map_err(|reason| RequestError::UnsupportedEncoding(reason.to_string()))?;
    if encoding.is_identity() {
        return Ok(Cow::Borrowed(body));
    }
    // The simulator trusts its client: no expansion ratio, only the limit.
    let limits = DecodeLimits::new().with_max_ratio(u32::MAX);
    let mut decoder = Decoder::new(encoding, limits);
    let mut decoded = Vec::new();
    let corrupt = |_| RequestError::Parse("the compressed body is corrupt or truncated".to_owned());
    let mut too_large = false;
    decoder
        .decode(body, &mut |piece| {
            too_large = decoded.len() + piece.len() > limit;
            if !too_large {
                decoded.extend_from_slice(piece);
            }
            Ok(!too_large)
        })
        .map_err(corrupt)?;
    if too_large {
        return Err(RequestError::BodyTooLarge { limit });
    }
    decoder.finish().map_err(corrupt)?;
    Ok(Cow::Owned(decoded))
}

/// The parts of a completion request both endpoints share.
#[derive(Debug)]
struct Job<'a> {
    chat: bool,
    model: String,
    stream: bool,
    include_usage: bool,
    max_tokens: Option<i64>,
    ignore_eos: bool,
    /// Prompt tokens (chat: of the `### role: content\n` rendering).
    prompt_tokens: u64,
    /// What echo mode answers (only filled in echo mode).
    echo: Cow<'a, str>,
}

fn parse_job(chat: bool, body: &[u8], mode: Mode) -> Result<Job<'_>, RequestError> {
    let parse_error = |e: serde_json::Error| RequestError::Parse(e.to_string());
    // serde would read a struct from a JSON array too; the simulator (Go)
    // accepts only an object.
    if !body.trim_ascii_start().starts_with(b"{") {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Err(e) => parse_error(e),
                Ok(_) => RequestError::Parse("the request body must be a JSON object".to_owned()),
            },
        );
    }
    let echo_mode = mode == Mode::Echo;
    if chat {
        let request: ChatRequest<'_> = serde_json::from_slice(body).map_err(parse_error)?;
        let messages = request.messages.unwrap_or_default();
        let echo = if echo_mode {
            messages
                .iter()
                .rev()
                .find(|m| m.role.as_deref() == Some("user"))
                .or(messages.last())
                .map_or(Cow::Borrowed(""), crate::api::Message::text)
        } else {
            Cow::Borrowed("")
        };
        Ok(Job {
            chat,
            model: request.model.unwrap_or_default(),
            stream: request.stream.unwrap_or(false),
            include_usage: request
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            // `max_completion_tokens` wins over `max_tokens`.
            max_tokens: request.max_completion_tokens.or(request.max_tokens),
            ignore_eos: request.ignore_eos.unwrap_or(false),
            prompt_tokens: messages
                .iter()
                .map(crate::api::Message::prompt_tokens)
                .sum(),
            echo,
        })
    } else {
        let request: TextRequest<'_> = serde_json::from_slice(body).map_err(parse_error)?;
        let prompt = request.prompt.unwrap_or_default();
        Ok(Job {
            chat,
            model: request.model.unwrap_or_default(),
            stream: request.stream.unwrap_or(false),
            include_usage: request
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            max_tokens: request.max_tokens,
            ignore_eos: request.ignore_eos.unwrap_or(false),
            prompt_tokens: tokenizer::count(&prompt),
            echo: if echo_mode { prompt } else { Cow::Borrowed("") },
        })
    }
}

/// `X-Return-Error: <status>`: answer with that status at once.
fn requested_error(headers: &HeaderMap) -> Option<RequestError> {
    let value = headers.get("x-return-error")?;
    let status = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok());
    Some(match status {
        Some(status) => RequestError::Requested(status),
        None => RequestError::InvalidRequestedStatus,
    })
}

async fn chat_completions(State(sim): State<Arc<SimState>>, request: Request) -> Response {
    complete(sim, true, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn text_completions(State(sim): State<Arc<SimState>>, request: Request) -> Response {
    complete(sim, false, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Sleeps for `delay`; zero returns at once (a zero-length Tokio sleep
/// still waits for the next timer tick, about 1 ms, which would cap a
/// zero-latency server at a few hundred tokens per second).
async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// A delay drawn around `base` with `std_dev` (never negative).
fn jittered(rng: &mut Rng, base: Duration, std_dev: Duration) -> Duration {
    if std_dev.is_zero() {
        return base;
    }
    Duration::from_secs_f64(
        rng.gaussian(base.as_secs_f64(), std_dev.as_secs_f64())
            .max(0.0),
    )
}

/// Handles one completion request in the simulator's order: parse (400),
/// `X-Return-Error`, model (404), max tokens (400), context window (400),
/// queue (429), then time to first token and the answer.
async fn complete(
    sim: Arc<SimState>,
    chat: bool,
    request: Request,
) -> Result<Response, RequestError> {
    let arrived = Instant::now();
    let (parts, body) = request.into_parts();
    let body = match read_body(body, &parts.headers, sim.config.max_request_body_bytes).await {
        Ok(body) => body,
        Err(error) => {
            sim.observer.record(
                &parts.method,
                parts.uri.path(),
                &parts.headers,
                b"",
                None,
                true,
            );
            return Err(error);
        }
    };
    // The observer records the body as received (compressed or not).
    let decoded = decode_body(&parts.headers, &body, sim.config.max_request_body_bytes);
    let job = match &decoded {
        Ok(decoded) => parse_job(chat, decoded, sim.config.mode),
        Err(error) => Err(error.clone()),
    };
    let model = job.as_ref().ok().map(|job| job.model.clone());
    sim.observer.record(
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        &body,
        model,
        true,
    );
    let job = job?;
    if let Some(error) = requested_error(&parts.headers) {
        return Err(error);
    }
    if let Some(kind) = sim.injected_failure() {
        return Err(RequestError::Injected(kind, job.model));
    }
    let Some((display, lora)) = sim.resolve(&job.model) else {
        return Err(RequestError::UnknownModel(job.model));
    };
    let max_tokens = match job.max_tokens {
        Some(n) if n <= 0 => return Err(RequestError::NonPositiveMaxTokens),
        Some(n) => Some(n as u64),
        None if job.ignore_eos => return Err(RequestError::IgnoreEosWithoutMaxTokens),
        None => None,
    };
    let prompt_tokens = job.prompt_tokens;
    let limit = u64::from(sim.config.max_model_len);
    let requested = max_tokens.unwrap_or(1);
    if prompt_tokens.saturating_add(requested) > limit {
        return Err(RequestError::ContextLength {
            limit: sim.config.max_model_len,
            prompt: prompt_tokens,
            completion: requested,
        });
    }
    let slot = sim
        .admission
        .acquire(lora)
        .await
        .map_err(|_| RequestError::QueueFull)?;

    let (id, counter) = sim.next_id(if job.chat { "chatcmpl-" } else { "cmpl-" });
    let mut rng = Rng::for_request(sim.config.seed, counter);
    let generated = match sim.config.mode {
        Mode::Echo => generate::echo(&job.echo, max_tokens),
        Mode::Random => {
            generate::random(&mut rng, max_tokens, job.ignore_eos, limit - prompt_tokens)
        }
    };
    let ttft = jittered(
        &mut rng,
        sim.config.time_to_first_token,
        sim.config.time_to_first_token_std_dev,
    );
    pause(ttft).await;
    sim.counters.first_token(arrived.elapsed());

    let answer = Answer {
        id,
        model: display,
        created: unix_seconds(),
        chat: job.chat,
        usage: Usage::new(prompt_tokens, generated.tokens.len() as u64),
        generated,
    };
    if job.stream {
        return Ok(stream_response(
            sim,
            answer,
            job.include_usage,
            rng,
            slot,
            arrived,
        ));
    }
    for _ in 1..answer.generated.tokens.len() {
        let itl = jittered(
            &mut rng,
            sim.config.inter_token_latency,
            sim.config.inter_token_latency_std_dev,
        );
        pause(itl).await;
    }
    drop(slot);
    sim.counters.finished(
        answer.generated.finish_reason,
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
        arrived.elapsed(),
    );
    Ok(answer.full_response())
}

/// A generated answer and its envelope fields.
#[derive(Debug)]
struct Answer {
    id: String,
    model: String,
    created: u64,
    chat: bool,
    usage: Usage,
    generated: Generated,
}

impl Answer {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat, chunk) {
            (true, false) => "chat.completion",
            (true, true) => "chat.completion.chunk",
            (false, _) => "text_completion",
        }
    }

    fn envelope<C>(&self, chunk: bool, usage: Option<Usage>, choices: Vec<C>) -> Envelope<'_, C> {
        Envelope {
            id: &self.id,
            model: &self.model,
            object: self.object(chunk),
            created: self.created,
            usage,
            choices,
        }
    }

    fn full_response(&self) -> Response {
        let text = self.generated.text();
        let finish_reason = self.generated.finish_reason.as_str();
        if self.chat {
            json_response(&self.envelope(
                false,
                Some(self.usage),
                vec![ChatChoice {
                    index: 0,
                    finish_reason,
                    message: ChatMessage {
                        role: "assistant",
                        content: &text,
                    },
                }],
            ))
        } else {
            json_response(&self.envelope(
                false,
                Some(self.usage),
                vec![TextChoice {
                    index: 0,
                    finish_reason: Some(finish_reason),
                    text: &text,
                }],
            ))
        }
    }

    /// One SSE event for a stream step.
    fn event(&self, step: Step) -> Bytes {
        let json = match step {
            Step::Role => serde_json::to_string(&self.envelope(
                true,
                None,
                vec![ChatChunkChoice {
                    index: 0,
                    finish_reason: None,
                    delta: Delta {
                        role: Some("assistant"),
                        content: None,
                    },
                }],
            )),
            Step::Token(i) => {
                let token = self.generated.tokens[i].as_str();
                if self.chat {
                    serde_json::to_string(&self.envelope(
                        true,
                        None,
                        vec![ChatChunkChoice {
                            index: 0,
                            finish_reason: None,
                            delta: Delta {
                                role: None,
                                content: Some(token),
                            },
                        }],
                    ))
                } else {
                    serde_json::to_string(&self.envelope(
                        true,
                        None,
                        vec![TextChoice {
                            index: 0,
                            finish_reason: None,
                            text: token,
                        }],
                    ))
                }
            }
            Step::Finish => {
                let finish_reason = Some(self.generated.finish_reason.as_str());
                if self.chat {
                    serde_json::to_string(&self.envelope(
                        true,
                        None,
                        vec![ChatChunkChoice {
                            index: 0,
                            finish_reason,
                            delta: Delta::default(),
                        }],
                    ))
                } else {
                    serde_json::to_string(&self.envelope(
                        true,
                        None,
                        vec![TextChoice {
                            index: 0,
                            finish_reason,
                            text: "",
                        }],
                    ))
                }
            }
            Step::Usage => serde_json::to_string(&self.envelope::<TextChoice<'_>>(
                true,
                Some(self.usage),
                Vec::new(),
            )),
            Step::Done => return Bytes::from_static(b"data: [DONE]\n\n"),
        }
        .expect("chunk types always serialize");
        Bytes::from(format!("data: {json}\n\n"))
    }
}

/// The steps of a stream, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Role,
    Token(usize),
    Finish,
    Usage,
    Done,
}

/// Stream state: the answer, where we are, and the running place, which is
/// freed when the stream ends or the client goes away (the body is dropped).
struct StreamState {
    sim: Arc<SimState>,
    answer: Answer,
    include_usage: bool,
    rng: Rng,
    next: Option<Step>,
    slot: Option<Slot>,
    arrived: Instant,
}

impl StreamState {
    fn step_after(&self, step: Step) -> Option<Step> {
        let tokens = self.answer.generated.tokens.len();
        match step {
            Step::Role | Step::Token(_) => {
                let next_token = match step {
                    Step::Token(i) => i + 1,
                    _ => 0,
                };
                Some(if next_token < tokens {
                    Step::Token(next_token)
                } else {
                    Step::Finish
                })
            }
            Step::Finish if self.include_usage => Some(Step::Usage),
            Step::Finish | Step::Usage => Some(Step::Done),
            Step::Done => None,
        }
    }
}

fn stream_response(
    sim: Arc<SimState>,
    answer: Answer,
    include_usage: bool,
    rng: Rng,
    slot: Slot,
    arrived: Instant,
) -> Response {
    let first = if answer.chat {
        Step::Role
    } else if answer.generated.tokens.is_empty() {
        Step::Finish
    } else {
        Step::Token(0)
    };
    let state = StreamState {
        sim,
        answer,
        include_usage,
        rng,
        next: Some(first),
        slot: Some(slot),
        arrived,
    };
    let events = futures_util::stream::unfold(state, |mut state| async move {
        let step = state.next?;
        if let Step::Token(i) = step
            && i > 0
        {
            let config = &state.sim.config;
            let itl = jittered(
                &mut state.rng,
                config.inter_token_latency,
                config.inter_token_latency_std_dev,
            );
            pause(itl).await;
        }
        if step == Step::Finish {
            // Generation is over: free the place before the trailing events.
            state.slot = None;
            let answer = &state.answer;
            state.sim.counters.finished(
                answer.generated.finish_reason,
                answer.usage.prompt_tokens,
                answer.usage.completion_tokens,
                state.arrived.elapsed(),
            );
        }
        let event = state.answer.event(step);
        state.next = state.step_after(step);
        Some((Ok::<_, Infallible>(event), state))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

async fn load_lora(State(sim): State<Arc<SimState>>, request: Request) -> Response {
    lora_admin(sim, request, true)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn unload_lora(State(sim): State<Arc<SimState>>, request: Request) -> Response {
    lora_admin(sim, request, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `/v1/load_lora_adapter` registers a name (no duplicate check beyond
/// keeping one entry), `/v1/unload_lora_adapter` removes it; both answer
/// 200 with an empty body, as the simulator does.
async fn lora_admin(
    sim: Arc<SimState>,
    request: Request,
    load: bool,
) -> Result<Response, RequestError> {
    let (parts, body) = request.into_parts();
    let body = read_body(body, &parts.headers, sim.config.max_request_body_bytes).await?;
    let parsed: Result<LoraAdapterRequest, _> = if body.trim_ascii_start().starts_with(b"{") {
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    } else {
        Err("the request body must be a JSON object".to_owned())
    };
    let name = parsed.as_ref().ok().and_then(|r| r.lora_name.clone());
    sim.observer.record(
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        &body,
        name.clone(),
        false,
    );
    let parsed = parsed.map_err(RequestError::Parse)?;
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or(RequestError::MissingLoraName)?;
    let mut loras = sim.loras_mut();
    loras.retain(|lora| lora.name != name);
    if load {
        loras.push(LoraModule {
            name,
            path: parsed.lora_path.filter(|p| !p.is_empty()),
        });
    }
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pod_names_are_dns_like() {
        assert_eq!(
            default_pod_name("meta-llama/Llama-3.1-8B-Instruct", 8000),
            "meta-llama-llama-3-1-8b-instruct-8000"
        );
        assert_eq!(default_pod_name("//", 1), "-1");
    }

    #[test]
    fn chat_prompt_renders_roles_and_counts_like_the_reference() {
        let body = br#"{"model":"m","max_tokens":100,"temperature":0,"messages":[{"role":"developer","content":"You are a helpful assistant."},{"role":"user","content":"Linux is said to be an open source kernel because "}]}"#;
        let job = parse_job(true, body, Mode::Echo).expect("parses");
        assert_eq!(job.prompt_tokens, 26, "simulator.md §2.5");
        assert_eq!(
            job.echo,
            "Linux is said to be an open source kernel because "
        );
        assert_eq!(job.max_tokens, Some(100));
    }

    #[test]
    fn max_completion_tokens_wins_and_blocks_are_joined() {
        let body = br#"{"model":"m","max_tokens":5,"max_completion_tokens":7,"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]},{"role":"assistant","content":null}]}"#;
        let job = parse_job(true, body, Mode::Echo).expect("parses");
        assert_eq!(job.max_tokens, Some(7));
        assert_eq!(job.echo, "a b");
    }

    #[test]
    fn piecewise_prompt_counts_equal_counting_the_rendering() {
        let roles = ["user", "", " ", "a b", "x:", "ü-ß", "\n", "reviewer "];
        let contents = [
            "", " ", "hi", " lead", "trail ", "a,b", "x\n", "don't", "ü世界", "###",
        ];
        for role in roles {
            for content in contents {
                let body = serde_json::json!({"messages": [
                    {"role": role, "content": content},
                    {"role": role, "content": [{"type": "text", "text": content}, {"type": "text", "text": "z"}]},
                ]})
                .to_string();
                let job = parse_job(true, body.as_bytes(), Mode::Random).expect("parses");
                let rendered = format!("### {role}: {content}\n### {role}: {content} z\n");
                assert_eq!(
                    job.prompt_tokens,
                    tokenizer::count(&rendered),
                    "{role:?} {content:?}"
                );
            }
        }
    }

    #[test]
    fn text_borrows_from_the_body_without_escapes() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"plain"},{"role":"user","content":"esc\"aped"}]}"#;
        let request: ChatRequest<'_> = serde_json::from_slice(body).expect("parses");
        let messages = request.messages.expect("messages");
        assert!(matches!(
            messages[0].content,
            Some(crate::api::Content::Text(Cow::Borrowed("plain")))
        ));
        assert!(
            matches!(&messages[1].content, Some(crate::api::Content::Text(Cow::Owned(text))) if text == "esc\"aped")
        );
    }

    #[test]
    fn ids_are_reproducible_for_a_seed_and_port() {
        let a = SimState::new(SimConfig::default().seed(3), 10);
        let b = SimState::new(SimConfig::default().seed(3), 10);
        let c = SimState::new(SimConfig::default().seed(3), 11);
        let (id_a, _) = a.next_id("cmpl-");
        assert_eq!(id_a, b.next_id("cmpl-").0);
        assert_ne!(id_a, c.next_id("cmpl-").0);
        assert_eq!(id_a.len(), "cmpl-".len() + 36);
    }
}
