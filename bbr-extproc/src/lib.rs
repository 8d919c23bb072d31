//! An Envoy `ext_proc` server for Body-Based Routing of LLM requests: it
//! reads the top-level `model` of OpenAI-style JSON bodies with
//! [`bbr_core`] as the body streams through Envoy, sets
//! `x-gateway-model-name` (and, with an adapter map,
//! `x-gateway-base-model-name`) with `clear_route_cache`, and lets ordinary
//! header routes pick the pool. A drop-in for the upstream BBR image: same
//! flags, ports and metric names.
//!
//! Beyond JSON, the same streaming rules route `multipart/form-data`
//! uploads by their `model` form field (audio transcriptions, image edits)
//! and compressed bodies (`content-encoding` gzip, deflate, br, zstd),
//! chosen per request from its `content-type` and `content-encoding` with
//! [`bbr_core::BodyExtractor`]; the bytes go upstream as the client sent
//! them. See [`stream`] for the rules and limits.
//!
//! In `FULL_DUPLEX_STREAMED` the bytes held before a late decision (a
//! form's `model` after a large file) stay in memory up to a threshold and
//! go past it to a disk spool ([`bbr_core::spool`], on by default in the
//! binary: `--spool-threshold`, `--spool-dir`, `--max-spooled-bytes`), so
//! a 256 MiB upload with `model` last costs a few MiB of memory; see
//! [`held`].
//!
//! # Cargo features
//!
//! - `server` (default): the binary's parts, below.
//! - `kube` (default): `--adapters-from=kubernetes`.
//! - `flate2`, `brotli`, `zstd` (default): one request-body decoder each,
//!   forwarded to bbr-core's features: gzip and deflate (miniz_oxide, pure
//!   Rust), br (brotli-decompressor, pure Rust), zstd (libzstd, C; the
//!   fastest measured, see bbr-core's docs for the numbers). A library user
//!   (`default-features = false`) opts in; without a decoder its encoding
//!   is not read and the request is forwarded unrouted (or refused by the
//!   missing-model policy), never answered 400.
//!
//! - [`StreamState`]: the synchronous per-stream state machine, one per
//!   HTTP request; all the protocol logic, per body mode (see [`stream`]).
//! - [`BbrExtProc`]: the tonic `ExternalProcessor` service around it.
//! - With the `server` feature (on by default): `Server`, the process
//!   around the service (listeners, TLS, `grpc.health.v1`, Prometheus
//!   `/metrics`, draining on SIGTERM), `Config` (the upstream-compatible
//!   flags) and `run`, the binary's entry point. Without it the crate is the
//!   state machine and the tonic service only (no clap, tracing-subscriber,
//!   rcgen or HTTP server).
//! - [`proto`]: Envoy's ext_proc v3 types, generated from vendored protos
//!   (checked in under `src/generated/`).
//!
//! Envoy configurations for each body mode, as the end-to-end tests run
//! them, are in `deploy/envoy/` of the repository.
//!
//! ```
//! use std::sync::Arc;
//! use bbr_core::contract::MODEL_HEADER;
//! use bbr_extproc::{Settings, StreamState};
//! use bbr_extproc::proto::envoy::service::ext_proc::v3::{
//!     HttpBody, HttpHeaders, ProcessingRequest, processing_request::Request, processing_response::Response,
//! };
//!
//! let mut stream = StreamState::new(Arc::new(Settings::default()));
//! let mut out = Vec::new();
//! let headers = ProcessingRequest {
//!     request: Some(Request::RequestHeaders(HttpHeaders::default())),
//!     ..Default::default()
//! };
//! stream.on_request(headers, &mut out).unwrap();
//! assert!(out.is_empty(), "the headers reply waits for the model");
//! let body = ProcessingRequest {
//!     request: Some(Request::RequestBody(HttpBody {
//!         body: r#"{"model":"food-review-1","messages":[]}"#.into(),
//!         end_of_stream: true,
//!         ..Default::default()
//!     })),
//!     ..Default::default()
//! };
//! stream.on_request(body, &mut out).unwrap();
//! let Some(Response::RequestHeaders(reply)) = &out[0].response else { panic!() };
//! let common = reply.response.as_ref().unwrap();
//! assert!(common.clear_route_cache);
//! let set = &common.header_mutation.as_ref().unwrap().set_headers[0];
//! assert_eq!(set.header.as_ref().unwrap().key, MODEL_HEADER);
//! assert_eq!(&set.header.as_ref().unwrap().raw_value[..], b"food-review-1");
//! assert_eq!(out.len(), 2, "then the body chunk, echoed");
//! ```

#[cfg(feature = "server")]
mod config;
#[cfg(feature = "server")]
mod discovery;
mod error;
pub mod held;
#[cfg(feature = "server")]
mod logging;
mod metrics;
#[cfg(feature = "server")]
mod metrics_http;
mod mutation;
#[cfg(feature = "otlp")]
mod otel;
#[cfg(feature = "server")]
mod plugins;
pub mod proto;
mod routing;
#[cfg(feature = "server")]
mod serve;
mod server;
pub mod stream;
mod stream_trace;

#[cfg(feature = "server")]
pub use config::{Config, ConfigError, LogLevel, SpoolThreshold};
#[cfg(feature = "server")]
pub use discovery::AdaptersFrom;
pub use error::{Error, UnknownValue, immediate_response};
pub use held::{HeldBudget, SpoolDone, SpoolJob};
pub use metrics::{
    BUILD_REF, COMMIT, MAX_REWRITE_MODEL_LABELS, Metrics, OVERFLOW_LABEL, PluginNames,
    WatchedConfig,
};
#[cfg(feature = "server")]
pub use metrics_http::MetricsAuth;
pub use mutation::MAX_CHUNK_BYTES;
#[cfg(feature = "otlp")]
pub use otel::{DEFAULT_SERVICE_NAME, TracingError};
#[cfg(feature = "server")]
pub use plugins::{
    BASE_MODEL_TO_HEADER, BODY_FIELD_TO_HEADER, CONFIG_API_VERSION, CONFIG_KIND, Plugin,
    PluginChain, PluginError,
};
pub use routing::{InvalidHeaderName, RoutingHeaders};
#[cfg(feature = "server")]
pub use serve::{Server, ServerConfig, StartError, Tls, run, shutdown_signal};
pub use server::{BbrExtProc, SERVICE_NAME};
pub use stream::{BodyMode, ModelRewrite, Report, Settings, StreamState, UndecidedPrefix, Verdict};
pub use stream_trace::{StreamEnd, StreamSpan, StreamTracer};
