//! An Envoy `ext_proc` server for Body-Based Routing of LLM requests: it
//! reads the top-level `model` of OpenAI-style JSON bodies with
//! [`bbr_core`] as the body streams through Envoy, sets
//! `x-gateway-model-name` (and, with an adapter map,
//! `x-gateway-base-model-name`) with `clear_route_cache`, and lets ordinary
//! header routes pick the pool. A drop-in for the upstream BBR image: same
//! flags, ports and metric names.
//!
//! - [`StreamState`]: the synchronous per-stream state machine, one per
//!   HTTP request; all the protocol logic, per body mode (see [`stream`]).
//! - [`BbrExtProc`]: the tonic `ExternalProcessor` service around it.
//! - [`Server`]: listeners, TLS, `grpc.health.v1`, Prometheus `/metrics`,
//!   draining on SIGTERM. [`run`] is the binary's entry point.
//! - [`proto`]: Envoy's ext_proc v3 types, compiled from vendored protos.
//!
//! Envoy configurations for each body mode, as the end-to-end tests run
//! them, are in `deploy/envoy/` of the repository.
//!
//! ```
//! use std::sync::Arc;
//! use bbr_extproc::{MODEL_HEADER, Settings, StreamState};
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

mod config;
mod discovery;
mod error;
mod metrics;
mod mutation;
pub mod proto;
mod server;
pub mod stream;

pub use config::Config;
pub use discovery::AdaptersFrom;
pub use error::{Error, Rejection, StartError};
pub use metrics::Metrics;
pub use mutation::{BASE_MODEL_HEADER, MAX_CHUNK_BYTES, MODEL_HEADER, ROUTING_HEADERS};
pub use server::{BbrExtProc, SERVICE_NAME, Server, ServerConfig, Tls, shutdown_signal};
pub use stream::{BodyMode, OnMissingModel, Report, Settings, StreamState, Verdict};

/// Runs the server as the binary does: binds, serves until `shutdown`, drains.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let ignored = config.ignored_flags();
    if !ignored.is_empty() {
        tracing::warn!(?ignored, "upstream flags accepted and ignored");
    }
    let mut server_config = config.server_config();
    // Held for as long as the server runs: it keeps the watch going.
    #[cfg(feature = "kube")]
    let _discovery = if config
        .adapters_from
        .uses_kubernetes(&config.adapters, &config.plugin)
    {
        Some(discovery::start_kubernetes(&mut server_config.settings).await?)
    } else {
        None
    };
    #[cfg(not(feature = "kube"))]
    if config.adapters_from == AdaptersFrom::Kubernetes {
        tracing::warn!(
            "--adapters-from=kubernetes: built without the `kube` feature; no adapter map"
        );
    }
    let server = Server::bind(server_config).await?;
    tracing::info!(
        grpc = %server.grpc_addr(),
        health = %server.health_addr(),
        metrics = %server.metrics_addr(),
        secure = config.secure_serving,
        "listening"
    );
    server.serve(shutdown).await
}
