//! Tower middleware for Body-Based Routing: reads the top-level `model` of a
//! JSON request body, sets `X-Gateway-Model-Name` (and
//! `X-Gateway-Base-Model-Name` from an adapter map), and forwards the body
//! unchanged, so ordinary header-based routes can pick the pool of model
//! servers.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use bbr_tower::{ModelName, ModelRoutingLayer, ReplayBody, MODEL_HEADER};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let service = ServiceBuilder::new()
//!     .layer(ModelRoutingLayer::new())
//!     .service(service_fn(|request: Request<ReplayBody<Full<Bytes>>>| async move {
//!         // The route is chosen by the header; the body is still unread.
//!         let model = request.headers()[MODEL_HEADER].to_str()?.to_owned();
//!         assert_eq!(request.extensions().get::<ModelName>().unwrap().as_str(), model);
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Response::new(Full::new(Bytes::from(model))))
//!     }));
//!
//! let body = r#"{"model": "food-review-1", "messages": [{"role": "user", "content": "hi"}]}"#;
//! let request = Request::post("/v1/chat/completions")
//!     // A client cannot choose the route: its copy of the header is removed.
//!     .header("x-gateway-model-name", "spoofed")
//!     .body(Full::new(Bytes::from(body)))?;
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.into_body().collect().await?.to_bytes(), "food-review-1");
//! # Ok(())
//! # }
//! ```
//!
//! # What a request gets
//!
//! | situation | result |
//! | --- | --- |
//! | model found | forwarded with the header (and the base model header when the adapter map knows the name), plus the [`ModelName`] (and [`BaseModelName`]) extension |
//! | valid object without `model` | forwarded without the header; 400 `missing_model` with [`OnMissing::Reject`] |
//! | no body (GET, `content-length: 0`, a body that ends without a byte) | forwarded untouched, body not read |
//! | `multipart/form-data` | forwarded untouched without the header (form fields are not read yet) |
//! | not JSON, truncated, top-level not an object, too deep | 400 `invalid_json` |
//! | model not a string, empty, control characters, too long, duplicate | 400 `invalid_model` |
//! | no decision within `max_scan_bytes`, body over `max_body_bytes` (also from `content-length`, before reading) | 413 `request_too_large` |
//!
//! Errors are OpenAI-shaped JSON; [`policy`] is the one place that maps
//! them. Client-sent routing headers are always removed first
//! ([`ClientHeaders::Strip`], the default) or refused with 400
//! ([`ClientHeaders::Reject`]), for every request, with or without a body.
//! The content type is not needed to read a body as JSON.
//!
//! # How the body is read and forwarded
//!
//! The layer polls body frames only until the extractor
//! ([`bbr_core::ModelExtractor`]) decides, holding them, then calls the
//! inner service at once, with a [`ReplayBody`]: the held frames first (the
//! same `Bytes`, the same frame boundaries), then the rest of the client's
//! body as it arrives, trailers included. When `model` comes early, the
//! inner service runs (and can open the upstream connection) while the
//! client is still uploading. Memory held per request is bounded by
//! `max_scan_bytes` plus one frame, never by the body size
//! ([`RoutingStats::held_bytes_peak`]; the `memory` test streams 64 MiB
//! bodies and checks the process's peak RSS).
//!
//! Under [`DuplicateKeys::LastWins`] the extractor decides only at the end
//! of the body, so the layer holds the whole body (up to `max_scan_bytes`)
//! before it calls the inner service; the default `Reject` and `FirstWins`
//! decide at the first `model`.
//!
//! The model header value and the [`ModelName`] extension share the
//! client's bytes when the extractor could slice them (no copy); while they
//! live they keep that one frame's buffer alive.
//!
//! After the decision the rest of the body is still checked as it streams
//! through, without holding it: under the default
//! [`DuplicateKeys::Reject`] it must stay
//! valid JSON with no second top-level `model`, and under every policy it
//! must fit `max_body_bytes`. A violation ends the forwarded body with a
//! [`BodyViolation`] error instead of the offending frame, so a proxy aborts
//! the upstream request, and is counted ([`RoutingStats::body_violations`]).
//! An inner service that has not started its response can answer the
//! contract's 400/413 itself: find the error with [`BodyViolation::find`]
//! and answer [`BodyViolation::to_response`].
//!
//! # Feature flags
//!
//! - `tracing` (off by default): `debug` events for each decision (model,
//!   bytes held), refusal (code, offset) and body violation (kind, offset).
//!   Nothing from the body is logged except the model name.
//!
//! # With axum
//!
//! `axum::Router::layer(ModelRoutingLayer::new())` works as is: axum's
//! routes accept any request body, so they take the [`ReplayBody`]. A proxy
//! handler that forwards the body sees a [`BodyViolation`] inside the
//! `axum::Error` of a failed body read ([`BodyViolation::find`] walks the
//! error's sources).
//!
//! # Decisions where the contract is silent
//!
//! - A refused upload is drained: when the layer refuses a request whose
//!   client is still sending (an error found mid-body, a refused routing
//!   header), or when a violation is found mid-body after the decision, the
//!   rest of the upload is read and dropped (never forwarded) before the
//!   answer or the [`BodyViolation`] goes out, up to `max_body_bytes` in
//!   all. Without this an HTTP/1.1 client still writing sees a reset
//!   connection instead of the 400/413. A `content-length` over
//!   `max_body_bytes` is refused at once, without reading.
//!
//! - A body that ends without a single byte (chunked, no `content-length`)
//!   is treated like no body: forwarded untouched.
//! - A body read error before the decision is answered 400 `invalid_json`
//!   (the JSON did not arrive whole); the message gives the byte offset.
//! - A refused client routing header is 400 `routing_header_not_allowed`,
//!   with the header name as `param`.
//! - A base model name that is not a valid header value sets no base model
//!   header, like an unknown name.
//! - Request bodies must be `Unpin` (hyper's `Incoming`, axum's `Body` and
//!   boxed bodies are); pin others in a `Box` first. The layer does not box.
#![forbid(unsafe_code)]

mod body;
mod error;
mod extension;
mod future;
mod layer;
pub mod policy;
mod scan;
mod service;
mod trace;

pub use bbr_adapters::AdapterStore;
pub use bbr_core::{DuplicateKeys, ErrorKind, ExtractError, Limits};
pub use body::{ErrorBody, ReplayBody, ResponseBody};
pub use error::{BodyViolation, BoxError, Error};
pub use extension::{BaseModelName, ModelName};
pub use future::ResponseFuture;
pub use layer::{ModelRoutingLayer, RoutingStats};
pub use policy::{ClientHeaders, OnMissing};
pub use service::ModelRouting;

use http::HeaderName;

/// `x-gateway-model-name`: the header that carries the model.
pub const MODEL_HEADER: HeaderName = HeaderName::from_static("x-gateway-model-name");

/// `x-gateway-base-model-name`: the header that carries the base model.
pub const BASE_MODEL_HEADER: HeaderName = HeaderName::from_static("x-gateway-base-model-name");
