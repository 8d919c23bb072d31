//! A simulated OpenAI/vLLM-compatible model server, LoRA-aware, following
//! the [llm-d inference simulator](https://github.com/llm-d/llm-d-inference-sim)
//! that the Gateway API Inference Extension's body-based-routing guide
//! deploys. It stands in for the model-server pods of the reference
//! scenario: the example gateway and the Envoy end-to-end tests start it
//! in-process, and the `model-sim` binary runs it on its own.
//!
//! What it serves (see the crate README for the full list):
//! - `POST /v1/chat/completions`, `POST /v1/completions`: non-streaming and
//!   SSE streaming answers naming the requested model (base or LoRA), with
//!   `usage`, honouring `max_tokens` / `max_completion_tokens`; errors with
//!   the simulator's body, e.g. 404
//!   ``{"error":{"message":"The model `X` does not exist.","type":"NotFoundError","param":null,"code":404}}``;
//!   a body compressed with `Content-Encoding` `gzip`, `deflate`, `br` or
//!   `zstd` (or two of them) is decoded first (415 for another coding);
//! - `POST /v1/audio/transcriptions`, `/v1/audio/translations` (`{"text":
//!   ...}`) and `/v1/images/edits` (`{"created", "data": [{"b64_json"}]}`):
//!   the `multipart/form-data` form is parsed as it streams; the answer also
//!   names the `model` field and gives `file` (the first file part's `name`,
//!   `bytes`, `sha256`) and `body` (the whole form's `bytes`, `sha256`), so a
//!   test proves a gateway forwarded the upload byte for byte;
//! - `GET /v1/models` (base model, then LoRAs with `parent`), `/health`,
//!   `/health/ready`, `/ready`, `/metrics` (vLLM gauge names);
//! - `POST /v1/load_lora_adapter`, `/v1/unload_lora_adapter`;
//! - on every answer, `x-inference-pod` and `x-inference-port` naming the
//!   replica;
//! - test aids: the `X-Return-Error` header, failure injection
//!   ([`SimConfig::failure_injection`]), and the [`Observer`] (requests
//!   received, their headers and body hashes).
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bbr_model_sim::{Mode, SimConfig};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let sim = bbr_model_sim::spawn(
//!     SimConfig::new("deepseek/vllm-deepseek-r1").lora("ski-resorts").mode(Mode::Echo),
//! )
//! .await?;
//!
//! let body = r#"{"model":"ski-resorts","prompt":"Tell me about ski deals","max_tokens":20}"#;
//! let mut tcp = tokio::net::TcpStream::connect(sim.addr()).await?;
//! let request = format!(
//!     "POST /v1/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n\
//!      content-length: {}\r\nconnection: close\r\n\r\n{body}",
//!     body.len()
//! );
//! tcp.write_all(request.as_bytes()).await?;
//! let mut response = String::new();
//! tcp.read_to_string(&mut response).await?;
//!
//! assert!(response.starts_with("HTTP/1.1 200"));
//! assert!(response.contains(r#""model":"ski-resorts""#));
//! assert!(response.contains(r#""text":"Tell me about ski deals""#));
//! assert!(response.contains(&format!("x-inference-pod: {}", sim.pod_name())));
//! assert_eq!(sim.observer().completions_received(), 1);
//! sim.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Decisions where the simulator and the spec leave room
//!
//! - Echo mode answers the last `user` message (the simulator v0.6.1 rule;
//!   the last message of any role when there is none) and, like v0.6.1,
//!   cuts it to `max_tokens` tokens.
//! - The context-window check runs before queueing (as in v0.6.1), so an
//!   oversized request never takes a place in the queue.
//! - A body with a duplicate `model` key is a parse error (400), where the
//!   Go simulator would take the last one: the gateway and the model server
//!   must never disagree on the model.
//! - `prompt` must be a string (arrays of prompts are not simulated).
//! - The request body limit is the simulator's 4 MiB default
//!   ([`SimConfig::max_request_body_bytes`]); larger bodies get 413.
//! - Form uploads are not held: files are hashed as they stream, so the
//!   4 MiB body limit does not apply to them; text fields are held, 64 KiB
//!   each at most (400 past it). A form without a `model` field, or with two,
//!   is a 400; an unknown model a 404, as for completions.
//! - The [`Observer`] records a compressed body as received (its hash is
//!   the compressed bytes'), and counts each form's `model` field the moment
//!   it is read ([`Observer::form_models_seen`]), before the file.
//! - The replica headers are on every answer, not only completions.
//! - `vllm:lora_requests_info` keeps the latest 32 label sets (the
//!   simulator never drops old ones).

mod api;
mod config;
mod error;
mod form;
mod generate;
mod metrics;
mod observe;
mod scheduler;
mod server;
mod tokenizer;

pub mod args;
pub mod scenario;
pub mod upload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{FailureType, LoraModule, Mode, SimConfig, parse_duration};
pub use error::{ConfigError, Error};
pub use observe::{Observer, RecordedRequest, sha256_hex};

/// One simulated model server (one "pod"): its configuration, counters and
/// router, independent of how it is served.
#[derive(Debug, Clone)]
pub struct Simulator {
    state: Arc<server::SimState>,
}

impl Simulator {
    /// Validates `config` and builds the server state. `port` is what
    /// `x-inference-port` says and, without a configured pod name, part of
    /// `x-inference-pod`.
    pub fn new(config: SimConfig, port: u16) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            state: Arc::new(server::SimState::new(config, port)),
        })
    }

    /// The axum router serving every endpoint (usable with any listener or
    /// in-process with `tower::ServiceExt::oneshot`).
    pub fn router(&self) -> axum::Router {
        server::router(Arc::clone(&self.state))
    }

    /// Counters and recent requests of this server.
    pub fn observer(&self) -> &Observer {
        &self.state.observer
    }

    /// The replica name sent as `x-inference-pod`.
    pub fn pod_name(&self) -> &str {
        &self.state.pod_name
    }

    /// The port sent as `x-inference-port`.
    pub fn port(&self) -> u16 {
        self.state.port
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes the
    /// requests in flight (graceful shutdown).
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Token events are small writes: send each at once.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}

/// Serves one simulated model server on `listener` until `shutdown`
/// resolves. The port in the replica headers is the listener's.
pub async fn serve<F>(listener: TcpListener, config: SimConfig, shutdown: F) -> Result<(), Error>
where
    F: Future<Output = ()> + Send + 'static,
{
    let port = listener.local_addr()?.port();
    Simulator::new(config, port)?
        .serve(listener, shutdown)
        .await
}

/// Starts a simulated model server on `127.0.0.1` with a free port, in a
/// background task; see [`SimHandle`].
pub async fn spawn(config: SimConfig) -> Result<SimHandle, Error> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    spawn_on(listener, config)
}

/// Starts a simulated model server on `listener` in a background task.
/// Must be called within a Tokio runtime.
pub fn spawn_on(listener: TcpListener, config: SimConfig) -> Result<SimHandle, Error> {
    let addr = listener.local_addr()?;
    let simulator = Simulator::new(config, addr.port())?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(simulator.clone().serve(listener, async move {
        // Either an explicit stop or a dropped handle ends the server.
        let _ = stopped.await;
    }));
    Ok(SimHandle {
        addr,
        simulator,
        stop: Some(stop),
        task: Some(task),
    })
}

/// A running simulated server. Dropping the handle stops it (gracefully, in
/// the background); [`SimHandle::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    simulator: Simulator,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl SimHandle {
    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://<addr>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The replica name sent as `x-inference-pod`.
    pub fn pod_name(&self) -> &str {
        self.simulator.pod_name()
    }

    /// Counters and recent requests of this server.
    pub fn observer(&self) -> &Observer {
        self.simulator.observer()
    }

    /// The server itself.
    pub fn simulator(&self) -> &Simulator {
        &self.simulator
    }

    /// Stops accepting, waits for the requests in flight (streams end after
    /// their last token), and returns the server's result.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))?,
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
