//! The layer: configuration only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bbr_adapters::AdapterStore;
use bbr_core::Limits;
use http::HeaderName;
use tower_layer::Layer;

use crate::policy::{ClientHeaders, OnMissing};
use crate::service::ModelRouting;
use crate::{BASE_MODEL_HEADER, MODEL_HEADER};

/// Configuration shared by a layer and every service it builds.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) limits: Limits,
    pub(crate) on_missing: OnMissing,
    pub(crate) client_headers: ClientHeaders,
    pub(crate) adapters: Option<AdapterStore>,
    pub(crate) model_header: HeaderName,
    pub(crate) base_model_header: HeaderName,
    pub(crate) counters: Arc<Counters>,
}

/// Applies [`ModelRouting`] to a service: reads the body until the model is
/// known, sets the routing headers, and forwards the body unchanged. See the
/// [crate docs](crate) for the behaviour and an example.
///
/// | option | default |
/// | --- | --- |
/// | [`limits`](Self::limits) | [`Limits::new()`]: model ≤ 256 bytes, depth ≤ 128, decision within 32 MiB, body ≤ 128 MiB, duplicate `model` rejected |
/// | [`on_missing`](Self::on_missing) | [`OnMissing::PassThrough`] |
/// | [`client_headers`](Self::client_headers) | [`ClientHeaders::Strip`] |
/// | [`adapters`](Self::adapters) | none: no base model header |
/// | [`model_header`](Self::model_header) | [`MODEL_HEADER`] (`x-gateway-model-name`) |
/// | [`base_model_header`](Self::base_model_header) | [`BASE_MODEL_HEADER`] (`x-gateway-base-model-name`) |
///
/// # Example
///
/// ```
/// use bbr_adapters::{AdapterMap, AdapterStore};
/// use bbr_tower::{BASE_MODEL_HEADER, ModelRoutingLayer, OnMissing, ReplayBody};
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let map = AdapterMap::from_yaml_str(
///     "kind: ConfigMap\ndata: {baseModel: deepseek/vllm-deepseek-r1, adapters: '[ski-resorts]'}",
///     "inline",
/// )?;
/// let layer = ModelRoutingLayer::new()
///     .adapters(AdapterStore::from_map(map))
///     .on_missing(OnMissing::Reject);
/// let stats = layer.stats();
/// let service = layer.layer(service_fn(|request: Request<ReplayBody<Full<Bytes>>>| async move {
///     let base = request.headers()[BASE_MODEL_HEADER].clone();
///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::copy_from_slice(base.as_bytes()))))
/// }));
///
/// let routed = Request::post("/v1/completions").body(Full::new(Bytes::from(r#"{"model":"ski-resorts"}"#)))?;
/// assert_eq!(service.clone().oneshot(routed).await?.status(), 200);
/// let no_model = Request::post("/v1/completions").body(Full::new(Bytes::from(r#"{"prompt":"hi"}"#)))?;
/// assert_eq!(service.oneshot(no_model).await?.status(), 400);
/// assert_eq!((stats.found(), stats.refused()), (1, 1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ModelRoutingLayer {
    config: Arc<Config>,
}

impl ModelRoutingLayer {
    /// A layer with the defaults above.
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                limits: Limits::new(),
                on_missing: OnMissing::default(),
                client_headers: ClientHeaders::default(),
                adapters: None,
                model_header: MODEL_HEADER,
                base_model_header: BASE_MODEL_HEADER,
                counters: Arc::new(Counters::default()),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Extraction limits and the duplicate-key policy (see [`Limits`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config_mut().limits = limits;
        self
    }

    /// What to do with a body that has no top-level `model`.
    pub fn on_missing(mut self, on_missing: OnMissing) -> Self {
        self.config_mut().on_missing = on_missing;
        self
    }

    /// What to do with routing headers sent by the client.
    pub fn client_headers(mut self, client_headers: ClientHeaders) -> Self {
        self.config_mut().client_headers = client_headers;
        self
    }

    /// Sets the base model header from this adapter map (reloads are seen
    /// at once; lookups never block).
    pub fn adapters(mut self, adapters: AdapterStore) -> Self {
        self.config_mut().adapters = Some(adapters);
        self
    }

    /// The header that carries the model.
    pub fn model_header(mut self, name: HeaderName) -> Self {
        self.config_mut().model_header = name;
        self
    }

    /// The header that carries the base model.
    pub fn base_model_header(mut self, name: HeaderName) -> Self {
        self.config_mut().base_model_header = name;
        self
    }

    /// Counters shared by this layer and every service it builds (clones of
    /// the layer share them too).
    pub fn stats(&self) -> RoutingStats {
        Self::stats_of(&self.config)
    }

    pub(crate) fn stats_of(config: &Config) -> RoutingStats {
        RoutingStats {
            counters: config.counters.clone(),
        }
    }
}

impl Default for ModelRoutingLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ModelRoutingLayer {
    type Service = ModelRouting<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ModelRouting::from_config(inner, self.config.clone())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    found: AtomicU64,
    absent: AtomicU64,
    unread: AtomicU64,
    refused: AtomicU64,
    violations: AtomicU64,
    held_peak: AtomicU64,
}

impl Counters {
    pub(crate) fn record_found(&self, held: u64) {
        self.found.fetch_add(1, Ordering::Relaxed);
        self.held_peak.fetch_max(held, Ordering::Relaxed);
    }

    pub(crate) fn record_absent(&self, held: u64) {
        self.absent.fetch_add(1, Ordering::Relaxed);
        self.held_peak.fetch_max(held, Ordering::Relaxed);
    }

    pub(crate) fn record_unread(&self) {
        self.unread.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_refused(&self, held: u64) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.held_peak.fetch_max(held, Ordering::Relaxed);
    }

    pub(crate) fn record_violation(&self) {
        self.violations.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn violations_for_tests(&self) -> u64 {
        self.violations.load(Ordering::Relaxed)
    }
}

/// What a [`ModelRoutingLayer`] did so far. Cheap to clone; all clones read
/// the same counters.
#[derive(Debug, Clone)]
pub struct RoutingStats {
    counters: Arc<Counters>,
}

impl RoutingStats {
    /// Requests forwarded with the model header.
    pub fn found(&self) -> u64 {
        self.counters.found.load(Ordering::Relaxed)
    }

    /// Requests with a valid body but no `model`, forwarded without the header.
    pub fn absent(&self) -> u64 {
        self.counters.absent.load(Ordering::Relaxed)
    }

    /// Requests forwarded without reading the body (no body, empty body,
    /// `multipart/form-data`).
    pub fn unread(&self) -> u64 {
        self.counters.unread.load(Ordering::Relaxed)
    }

    /// Requests the layer answered itself with a 400 or 413.
    pub fn refused(&self) -> u64 {
        self.counters.refused.load(Ordering::Relaxed)
    }

    /// Forwarded bodies ended with a [`BodyViolation`](crate::BodyViolation).
    pub fn body_violations(&self) -> u64 {
        self.counters.violations.load(Ordering::Relaxed)
    }

    /// The most body bytes any one request had held before its decision
    /// (bounded by `max_scan_bytes` plus one frame).
    pub fn held_bytes_peak(&self) -> u64 {
        self.counters.held_peak.load(Ordering::Relaxed)
    }
}
