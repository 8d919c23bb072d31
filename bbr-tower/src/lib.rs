//! Tower middleware for Body-Based Routing: reads the top-level `model` of a
//! JSON request body (or the `model` field of a `multipart/form-data`
//! upload, plain or compressed), sets `X-Gateway-Model-Name` (and
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
//! use bbr_core::contract::MODEL_HEADER;
//! use bbr_tower::{ModelName, ModelRoutingLayer, ReplayBody};
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
//! Every refusal is a [`bbr_core::contract::Refusal`]: status, OpenAI-shaped
//! JSON body, message and `content-type` come from the core's contract,
//! written once for every adapter.
//!
//! | situation | result |
//! | --- | --- |
//! | model found | forwarded with the header (and the base model header when the [`BaseModels`] lookup knows the name), plus the [`ModelName`] (and [`BaseModelName`]) extension; with model rewrites, the [`ModelRewrite`] extension when a rule decided |
//! | valid object without `model` | forwarded without the header; 400 `missing_model` with [`MissingModel::Reject`](bbr_core::contract::MissingModel::Reject) |
//! | no body (GET, `content-length: 0`, a body that ends without a byte) | forwarded untouched, body not read |
//! | `multipart/form-data` (audio transcriptions and translations, image edits) | the `model` form field, before or after the file, decides as in JSON: the rows above and below apply; the form is forwarded untouched |
//! | form malformed (no boundary, bad delimiter, part without a name, no closing boundary, truncated) | 400 `invalid_json` |
//! | form part headers over 8 KiB or 16 lines ([`PartLimits`](bbr_core::multipart::PartLimits)) | 400 `invalid_json` |
//! | a second `model` field (under the default `Reject`) | 400 `invalid_model` |
//! | `Content-Encoding` `gzip`, `deflate`, `br`, `zstd` (or two of them) | decoded for the decision only: the compressed bytes are forwarded; decoded bytes count against `max_scan_bytes` / `max_body_bytes`, raw bytes against `max_body_bytes` |
//! | compressed stream corrupt or truncated | 400 `invalid_json` |
//! | decoded more than 100 times the encoded bytes (past 1 MiB), or a brotli/zstd window over 8 MiB ([`DecodeLimits`](bbr_core::encoding::DecodeLimits)) | 413 `request_too_large` |
//! | a `Content-Encoding` not decoded (unknown, more than two, or its feature off) | body not read: forwarded without the header; 400 `missing_model` with [`MissingModel::Reject`](bbr_core::contract::MissingModel::Reject) |
//! | not JSON, truncated, top-level not an object, too deep | 400 `invalid_json` |
//! | model not a string, empty, control characters, too long, duplicate | 400 `invalid_model` |
//! | no decision within `max_scan_bytes`, body over `max_body_bytes` (also from `content-length`, before reading) | 413 `request_too_large` |
//! | the body fails before the decision (client reset, half-closed upload) | 400 `invalid_request_body` |
//! | no decision within the decision deadline (30 s from the first body byte) | 408 `request_timeout` |
//! | the bytes held by all requests would pass the global cap (512 MiB) | 503 `overloaded`, `Retry-After: 1` |
//! | with the spool (feature `spool`): the bytes spooled by all requests would pass the disk cap (4 GiB), or the spool file cannot be created or written | 503 `overloaded`, `Retry-After: 1` |
//! | a client-sent routing header, any case, `-` or `_` (`X_Gateway_Model_Name`), in the head or in trailers | removed ([`ClientHeaders::Strip`](bbr_core::contract::ClientHeaders::Strip), the default); 400 `routing_header_not_allowed` with [`ClientHeaders::Reject`](bbr_core::contract::ClientHeaders::Reject) |
//!
//! The content type is not needed to read a body as JSON: every body that
//! is not `multipart/form-data` is read as JSON. Model names are
//! what the core's extractor returns; the base model lookup gets exactly
//! that name (no trimming of its own).
//!
//! # How the body is read and forwarded
//!
//! The layer picks the extractor from the request's `content-type` and
//! `content-encoding` fields ([`bbr_core::BodyExtractor::for_headers`], the
//! core's one rule for which fields count: JSON or a form, behind a
//! streaming decoder when compressed; the [`BodyFormat`] extension says
//! which), polls body frames only
//! until it decides, holding them (the client's frames as they came,
//! compressed bytes stay compressed), then calls the
//! inner service at once, with a [`ReplayBody`]: the held bytes first, then
//! the rest of the client's body as it arrives, trailers included. When
//! `model` comes early, the inner service runs (and can open the upstream
//! connection) while the client is still uploading.
//!
//! Under [`DuplicateKeys::LastWins`](bbr_core::DuplicateKeys::LastWins) the
//! extractor decides only at the end of the body, so the layer holds the
//! whole body (up to `max_scan_bytes`) before it calls the inner service;
//! the default `Reject` and `FirstWins` decide at the first `model`.
//!
//! After the decision the rest of the body is still checked as it streams
//! through, without holding it: under the default `Reject` it must stay
//! valid JSON (a well-formed form, a valid compressed stream) with no second
//! `model`, and under every policy it
//! must fit `max_body_bytes`. A violation ends the forwarded body with a
//! [`BodyViolation`] error instead of the offending frame, so a proxy aborts
//! the upstream request, and is counted ([`RoutingStats::body_violations`]).
//! An inner service that has not started its response can answer the
//! contract's 400/413 itself: find the error with [`BodyViolation::find`]
//! and answer [`BodyViolation::to_response`].
//!
//! # Memory
//!
//! Memory per request is bounded by what it holds before its decision, and
//! that is accounted as real memory: the bytes plus [`FRAME_OVERHEAD`] per
//! held frame. When a copy happens, exactly:
//!
//! - the first [`ZERO_COPY_FRAMES`] (16) data frames are held as they came,
//!   the same `Bytes`: a body that decides within them (nearly all) is never
//!   copied;
//! - after those, a data frame of [`COPY_BELOW`] (4 KiB) or more is held as
//!   is; a smaller one is copied into a [`COALESCE_BYTES`] (16 KiB) buffer
//!   and the client's frame is dropped. Tiny frames (a client sending 1-byte
//!   chunks) so cost their bytes, not ~100 bytes of bookkeeping each;
//! - the model value is sliced from the client's frame before any copy
//!   (the header and [`ModelName`] share it; while they live they keep that
//!   one frame's buffer alive); nothing is copied after the decision.
//!   A plain JSON body allocates nothing for its extraction.
//! - a compressed body also holds its decoders, accounted against the global
//!   cap from its first byte until it is no longer decoded: 64 KiB per gzip
//!   or deflate stage, the window cap (8 MiB by default) per brotli or zstd
//!   stage. Decoded bytes are never held: they go through the extractor and
//!   are dropped (a model found in them is a slice of one decoded piece).
//!
//! Held frames therefore cost at most `max_scan_bytes × (1 + FRAME_OVERHEAD
//! / 4 KiB)` plus one buffer per request ([`RoutingStats::held_bytes_peak`];
//! the `memory` tests check the process's RSS for 64 MiB bodies and for
//! 1-, 7- and 64-byte chunkings). A frame held as is counts its own length:
//! the allocation behind a large `Bytes` belongs to the server that made it.
//!
//! # Disk spool
//!
//! With the feature `spool` and `ModelRoutingLayer::spool`, a request
//! that must hold more than the spool's memory threshold before its
//! decision (4 MiB by default, [`DEFAULT_SPOOL_THRESHOLD`]; a `model` form
//! field after a large file, a chat body with `model` after its images)
//! holds the rest on disk:
//!
//! - the frames up to the threshold are held in memory as above (the same
//!   `Bytes`, zero-copy); the frame that would pass it and every later one
//!   before the decision go to one anonymous temp file per request, created
//!   in the configured directory (the OS temp dir by default) and unlinked
//!   at once on Unix (removed on drop elsewhere), so nothing outlives the
//!   request or the process;
//! - writes run on tokio's blocking pool, one at a time per request; while
//!   one runs, the next frames gather (tiny ones coalesced into 64 KiB
//!   buffers), and once 64 KiB waits behind a running write the layer stops
//!   reading the client until it finishes: per request memory stays about
//!   the threshold plus two writes. Waiting frames count against the memory
//!   cap until written;
//! - spooled bytes count against a separate disk cap shared by all requests
//!   of the layer (`ModelRoutingLayer::max_spooled_bytes`, 4 GiB by
//!   default, [`DEFAULT_MAX_SPOOLED_BYTES`]), not against the memory cap. A
//!   frame that would take them over it refuses the request with 503
//!   `overloaded` and `Retry-After`, like the memory cap (the disk is shared
//!   too, and frees as other requests finish); so does a spool file that
//!   cannot be created or written (a full disk). `max_scan_bytes` still
//!   bounds each request (413);
//! - at the decision the layer waits for the running write, then calls the
//!   inner service. The [`ReplayBody`] hands out the frames held in memory,
//!   then the file's bytes in order, read on the blocking pool in chunks of
//!   [`SPOOL_READ_BYTES`](bbr_core::spool::SPOOL_READ_BYTES) (256 KiB) with
//!   one read ahead, then the frames that were still waiting for their
//!   write, the trailers, and the rest of the client's body. The bytes are
//!   identical and in order; frame boundaries of the spooled part are not
//!   kept (HTTP does not carry them);
//! - copies: a spooled byte is copied to the file and once back from it
//!   into a fresh buffer; a spooled frame under 4 KiB is also copied into a
//!   coalescing buffer first. Nothing held in memory is copied, as without
//!   the spool.
//! - A body that spooled is not rewritten by
//!   `ModelRoutingLayer::model_rewrites` (its token may be on disk): it is
//!   routed as requested, like a form or a compressed body.
//!
//! The spool needs a tokio runtime (hyper and axum servers run in one).
//! [`RoutingStats::spooled_requests`] and [`RoutingStats::spooled_bytes`]
//! count it. The example gateway enables it by default: a 256 MiB form
//! upload with `model` last grows its peak RSS by about 7 MiB (265 MiB
//! without the spool).
//!
//! Across requests, all requests of a layer share one cap
//! ([`ModelRoutingLayer::max_held_bytes`], 512 MiB by default): a request
//! whose next frame would take the total over it is refused with 503 and
//! `Retry-After`, never an out-of-memory. A slow upload is refused with 408
//! once the decision deadline ([`ModelRoutingLayer::decision_deadline`],
//! 30 s from the first body byte) passes without a decision. Both are
//! counted ([`RoutingStats::overloaded`], [`RoutingStats::decision_timeouts`]).
//! The deadline and the drain timeout use tokio's timer, created only when
//! a body is actually waited for.
//!
//! # Feature flags
//!
//! - `gzip`, `br`, `zstd` (all on by default): the `Content-Encoding`
//!   decoders, each forwarding to `bbr-core`'s (`gzip` brings `deflate` too;
//!   `gzip` and `br` are pure Rust, `zstd` builds libzstd, C). With
//!   `default-features = false` a build pays only for the decoders it
//!   enables; a coding that is not built is a body not decoded (forwarded
//!   unrouted, or the missing-model refusal), never a 400.
//! - `adapters` (off by default): `ModelRoutingLayer::adapters` and
//!   `AdapterBaseModels`, the [`BaseModels`] lookup over `bbr-adapters`'
//!   reloading ConfigMap store (which brings a YAML parser). Without it,
//!   implement [`BaseModels`] or use a `HashMap<String, BaseModelName>`.
//! - `spool` (off by default): `ModelRoutingLayer::spool` and
//!   `ModelRoutingLayer::max_spooled_bytes`, the disk spool above. It
//!   turns on tokio's `rt` (already a dependency) for `spawn_blocking`;
//!   without it nothing of the spool is built into the layer's paths.
//! - `tracing` (off by default): `debug` events for each decision (model,
//!   bytes held), refusal (code, offset) and body violation (code, offset).
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
//!   header, a timeout, an overload), the rest of the upload is read and
//!   dropped (never forwarded) before the answer goes out, within a drain
//!   budget much smaller than the body limit: 1 MiB and 2 s by default
//!   ([`ModelRoutingLayer::drain_max_bytes`],
//!   [`ModelRoutingLayer::drain_timeout`]). A violation found after the
//!   decision ends the forwarded body at once (the upstream request is not
//!   kept open); the rest of the upload is drained after the inner service
//!   answered, within the same budget. Without draining an HTTP/1.1 client
//!   still writing sees a reset connection instead of the answer. A
//!   `content-length` over `max_body_bytes` is refused at once, without
//!   reading.
//! - The decision deadline starts at the first body byte, as its name says:
//!   a client that sends headers and then nothing holds no body bytes, and
//!   is left to the server's own idle timeouts.
//! - A body that ends without a single byte (chunked, no `content-length`)
//!   is treated like no body: forwarded untouched.
//! - A `Content-Encoding` that is not decoded is known from the head: the
//!   body is not read at all (counted as [`RoutingStats::absent`]), or,
//!   under `MissingModel::Reject`, refused with 400 `missing_model` and the
//!   upload drained.
//! - Several `Content-Encoding` fields are one list, in order (RFC 9110);
//!   only the first `Content-Type` field is read.
//! - Under first-wins a compressed body is decoded only up to the
//!   decision; its raw bytes still count against `max_body_bytes`.
//! - Routing headers in trailers read before the decision are removed (or
//!   refused with 400) like those in the head; in trailers after the
//!   decision they are removed, or, under `ClientHeaders::Reject`, end the
//!   body with a [`BodyViolation`] carrying the 400.
//! - A base model name that is not a valid header value sets no base model
//!   header, like an unknown name.
//! - Request bodies must be `Unpin` (hyper's `Incoming`, axum's `Body` and
//!   boxed bodies are); pin others in a `Box` first. The layer does not box.
#![forbid(unsafe_code)]

mod base_model;
mod blocking;
mod body;
mod config;
mod counters;
mod deadline;
mod drain;
mod error;
mod error_body;
mod extension;
mod future;
mod headers;
mod layer;
#[cfg(feature = "adapters")]
mod rewrite;
mod scan;
mod service;
mod trace;

#[cfg(feature = "adapters")]
pub use base_model::AdapterBaseModels;
pub use base_model::BaseModels;
pub use body::{ReplayBody, ResponseBody};
pub use config::{
    DEFAULT_DECISION_DEADLINE, DEFAULT_DRAIN_MAX_BYTES, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_HELD_BYTES, DEFAULT_MAX_SPOOLED_BYTES, DEFAULT_SPOOL_THRESHOLD,
};
pub use counters::RoutingStats;
pub use error::{BodyViolation, BoxError};
pub use error_body::ErrorBody;
pub use extension::{BaseModelName, BodyFormat, ModelName, ModelRewrite};
pub use future::ResponseFuture;
pub use layer::ModelRoutingLayer;
pub use scan::{COALESCE_BYTES, COPY_BELOW, FRAME_OVERHEAD, ZERO_COPY_FRAMES};
pub use service::ModelRouting;
