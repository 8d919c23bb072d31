//! An OpenAI-compatible gateway on axum that routes by the body's `model`.
//!
//! The body-based routing layer (`bbr-tower`) reads the top-level `model`
//! of each request body as it streams in (the `model` field of a
//! `multipart/form-data` upload such as `/v1/audio/transcriptions`; a body
//! compressed with `Content-Encoding` gzip, deflate, br or zstd is decoded
//! for that and forwarded as sent) and sets `X-Gateway-Model-Name`
//! (and `X-Gateway-Base-Model-Name` with an adapter map). Ordinary header
//! routes — the same ones a Kubernetes `HTTPRoute` holds — then pick a pool
//! of model servers, and the request streams through to the least busy
//! endpoint of that pool.
//!
//! With no configuration, [`Gateway::start`] on [`Config::scenario`] runs
//! the reference scenario on one machine: two pools of simulated vLLM-like
//! model servers (`bbr-model-sim`) on loopback and the scenario's HTTPRoutes.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bbr_axum_example::{Config, Gateway};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // The reference scenario on a free port: 4 simulated replicas + gateway.
//! let gateway = Gateway::new(Config::scenario()).start("127.0.0.1:0".parse()?).await?;
//!
//! let body = r#"{"prompt":"Tell me about ski deals","max_tokens":5,"model":"ski-resorts"}"#;
//! let mut tcp = tokio::net::TcpStream::connect(gateway.addr).await?;
//! let request = format!(
//!     "POST /v1/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: {}\r\n\
//!      connection: close\r\n\r\n{body}",
//!     body.len()
//! );
//! tcp.write_all(request.as_bytes()).await?;
//! let mut response = String::new();
//! tcp.read_to_string(&mut response).await?;
//!
//! assert!(response.starts_with("HTTP/1.1 200"));
//! // The body's model picked the DeepSeek pool's only replica.
//! assert!(response.contains("x-inference-pod: vllm-deepseek-r1-0"));
//! assert!(response.contains(r#""model":"ski-resorts""#));
//! gateway.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Endpoints served by the gateway itself:
//!
//! | path | what |
//! | --- | --- |
//! | `GET /v1/models` | every model of every pool ([`models`]) |
//! | `GET /health` | 200 `ok` |
//! | `GET /metrics` | Prometheus text ([`metrics`]) |
//! | anything else | routed by the headers and path ([`routing`]) and proxied ([`proxy`]) |
//!
//! Decisions where the contract is silent:
//! - A request that matches no route gets 404 `model_not_found`
//!   (OpenAI-shaped), also when the body has no `model` at all.
//! - Upstream errors: 502 `upstream_unreachable`, 504 `upstream_timeout`,
//!   with `type: server_error` and `param: null`.
//! - The route timeout covers the whole exchange (like Envoy's route
//!   timeout): a response that is still streaming when it expires is cut.
//! - Model rewrites (`model_rewrites:`, `--model-rewrites`; see [`config`]):
//!   the model server gets the client's body with only the `model` string
//!   replaced and the response is passed on as it wrote it, so its `model`
//!   names the target that served the request (as the upstream gateways
//!   do; restoring the client's name would mean rewriting every response,
//!   SSE events included). `GET /v1/models` lists what the pools serve,
//!   not the names rules rewrite (`food-review` is not listed).
//! - Metrics count rewrite decisions under the upstream endpoint picker's
//!   name and labels, like bbr-extproc ([`metrics`]).

pub mod config;
pub mod error;
pub mod metrics;
pub mod models;
pub mod pools;
pub mod proxy;
pub mod routing;
pub mod simulate;

mod bbr;
mod gateway;

pub use config::{Config, ConfigError};
pub use error::GatewayError;
pub use gateway::{AppState, Gateway, RunningGateway, StartError, app};
