//! The layer: builder options only.

use std::sync::Arc;
use std::time::Duration;

use bbr_core::Limits;
use bbr_core::contract::{ClientHeaders, MissingModel};
use tower_layer::Layer;

use crate::base_model::BaseModels;
use crate::config::Config;
use crate::counters::RoutingStats;
use crate::service::ModelRouting;

/// Applies [`ModelRouting`] to a service: reads the body until the model is
/// known, sets the routing headers, and forwards the body unchanged. See the
/// [crate docs](crate) for the behaviour and an example.
///
/// | option | default |
/// | --- | --- |
/// | [`limits`](Self::limits) | [`Limits::new()`]: model ≤ 256 bytes, depth ≤ 128, decision within 32 MiB, body ≤ 128 MiB, duplicate `model` rejected |
/// | [`missing_model`](Self::missing_model) | [`MissingModel::Forward`] |
/// | [`client_headers`](Self::client_headers) | [`ClientHeaders::Strip`] |
/// | [`base_models`](Self::base_models) (or `adapters`, feature `adapters`) | none: no base model header |
/// | [`decision_deadline`](Self::decision_deadline) | 30 s from the first body byte ([`DEFAULT_DECISION_DEADLINE`](crate::DEFAULT_DECISION_DEADLINE)) |
/// | [`max_held_bytes`](Self::max_held_bytes) | 512 MiB across all requests of the layer ([`DEFAULT_MAX_HELD_BYTES`](crate::DEFAULT_MAX_HELD_BYTES)) |
/// | `spool` (feature `spool`) | off: held bytes stay in memory; with a [`SpoolConfig`](bbr_core::spool::SpoolConfig), past 4 MiB per request ([`DEFAULT_SPOOL_THRESHOLD`](crate::DEFAULT_SPOOL_THRESHOLD)) they go to a temp file in the OS temp dir |
/// | `max_spooled_bytes` (feature `spool`) | 4 GiB across all requests of the layer ([`DEFAULT_MAX_SPOOLED_BYTES`](crate::DEFAULT_MAX_SPOOLED_BYTES)) |
/// | [`drain_max_bytes`](Self::drain_max_bytes) | 1 MiB ([`DEFAULT_DRAIN_MAX_BYTES`](crate::DEFAULT_DRAIN_MAX_BYTES)) |
/// | [`drain_timeout`](Self::drain_timeout) | 2 s ([`DEFAULT_DRAIN_TIMEOUT`](crate::DEFAULT_DRAIN_TIMEOUT)) |
///
/// # Example
///
/// ```
/// use std::collections::HashMap;
/// use bbr_core::contract::{BASE_MODEL_HEADER, MissingModel};
/// use bbr_tower::{BaseModelName, ModelRoutingLayer, ReplayBody};
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let base = BaseModelName::new("deepseek/vllm-deepseek-r1")?;
/// let layer = ModelRoutingLayer::new()
///     .base_models(HashMap::from([("ski-resorts".to_owned(), base)]))
///     .missing_model(MissingModel::Reject);
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
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ModelRoutingLayer {
    config: Arc<Config>,
}

impl ModelRoutingLayer {
    /// A layer with the defaults above.
    pub fn new() -> Self {
        Self::default()
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
    pub fn missing_model(mut self, policy: MissingModel) -> Self {
        self.config_mut().missing_model = policy;
        self
    }

    /// What to do with routing headers sent by the client (in the request
    /// head and in trailers).
    pub fn client_headers(mut self, policy: ClientHeaders) -> Self {
        self.config_mut().client_headers = policy;
        self
    }

    /// Sets the base model header from this lookup.
    pub fn base_models(mut self, lookup: impl BaseModels) -> Self {
        self.config_mut().base_models = Some(Arc::new(lookup));
        self
    }

    /// Sets the base model header from this adapter map, in the upstream
    /// ConfigMap format (feature `adapters`; reloads are seen at once,
    /// lookups never wait for one).
    #[cfg(feature = "adapters")]
    pub fn adapters(self, adapters: bbr_adapters::AdapterStore) -> Self {
        self.base_models(crate::AdapterBaseModels::new(adapters))
    }

    /// Rewrites the requested model by these `InferenceModelRewrite` rules
    /// (feature `adapters`; reloads are seen at once). When a rule matches,
    /// the inner service gets the body with only the `model` token
    /// replaced by the picked target, `content-length` corrected,
    /// `x-gateway-model-name` (and the base model header) from the target,
    /// and the requested name in
    /// [`REQUESTED_MODEL_HEADER`](bbr_core::contract::REQUESTED_MODEL_HEADER);
    /// with rewrites configured that header is set for every request with a
    /// model and a client's own value never passes. A compressed body or a
    /// form field is not rewritten (it is routed as requested), nor is a
    /// refused body. The response is passed on unchanged: its `model`
    /// field names the model that served it (the target), as the upstream
    /// gateways do; restoring the client's name would mean rewriting every
    /// response, SSE events included.
    ///
    /// ```
    /// use bbr_adapters::rewrite::{RewritePicker, RewriteRules, RewriteStore};
    /// use bbr_core::contract::{MODEL_HEADER, REQUESTED_MODEL_HEADER};
    /// use bbr_tower::{ModelRoutingLayer, ReplayBody};
    /// use bytes::Bytes;
    /// use http::{Request, Response};
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let rules = RewriteRules::from_yaml_str(
    ///     "kind: InferenceModelRewrite\nspec: {rules: [{matches: [{model: {value: gpt-4o}}], targets: [{modelRewrite: llama-3}]}]}",
    ///     "inline",
    /// )?;
    /// let picker = RewritePicker::new(RewriteStore::from_rules(rules));
    /// let layer = ModelRoutingLayer::new().model_rewrites(picker);
    /// let service = layer.layer(service_fn(|request: Request<ReplayBody<Full<Bytes>>>| async move {
    ///     let (parts, body) = request.into_parts();
    ///     assert_eq!(parts.headers[MODEL_HEADER], "llama-3");
    ///     assert_eq!(parts.headers[REQUESTED_MODEL_HEADER], "gpt-4o");
    ///     assert_eq!(parts.headers[http::header::CONTENT_LENGTH], "28");
    ///     let body = body.collect().await.unwrap().to_bytes();
    ///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(body)))
    /// }));
    /// let request = Request::post("/v1/chat/completions")
    ///     .header(http::header::CONTENT_LENGTH, "27")
    ///     .body(Full::new(Bytes::from_static(br#"{"model":"gpt-4o","n":1}   "#)))?;
    /// let body = service.oneshot(request).await?.into_body().collect().await?.to_bytes();
    /// assert_eq!(&body[..], br#"{"model":"llama-3","n":1}   "#);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "adapters")]
    pub fn model_rewrites(mut self, picker: bbr_adapters::rewrite::RewritePicker) -> Self {
        self.config_mut().rewrites = Some(picker);
        self
    }

    /// Time allowed from the first body byte to the routing decision; past
    /// it the request is refused with 408 `request_timeout`. A slow upload
    /// cannot hold a connection and its buffers forever. `Duration::MAX`
    /// turns it off.
    pub fn decision_deadline(mut self, deadline: Duration) -> Self {
        self.config_mut().decision_deadline = deadline;
        self
    }

    /// Cap on the bytes held (before their decision) by all requests of
    /// this layer and its clones together, as accounted in
    /// [`RoutingStats::held_bytes`]. A request that would go over it is
    /// refused with 503 `overloaded` and `Retry-After`.
    pub fn max_held_bytes(mut self, bytes: u64) -> Self {
        self.config_mut().max_held_bytes = bytes;
        self
    }

    /// Holds what a request must hold before its decision on disk past
    /// `config`'s memory threshold (feature `spool`): see the crate docs,
    /// "Disk spool". The spool's file I/O runs on tokio's blocking pool, so
    /// the service must run inside a tokio runtime (hyper and axum servers
    /// do).
    ///
    /// ```
    /// use bbr_core::spool::SpoolConfig;
    /// use bbr_tower::{ModelRoutingLayer, ReplayBody};
    /// use bytes::Bytes;
    /// use http::{Request, Response};
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let layer = ModelRoutingLayer::new().spool(SpoolConfig::new().with_memory_threshold(4));
    /// let stats = layer.stats();
    /// let service = layer.layer(service_fn(|request: Request<ReplayBody<Full<Bytes>>>| async move {
    ///     let body = request.into_body().collect().await?.to_bytes();
    ///     Ok::<_, bbr_tower::BoxError>(Response::new(Full::new(body)))
    /// }));
    /// let body = r#"{"messages":[],"model":"m"}"#;
    /// let request = Request::post("/").body(Full::new(Bytes::from(body)))?;
    /// let response = service.oneshot(request).await?;
    /// assert_eq!(response.into_body().collect().await?.to_bytes(), body);
    /// assert_eq!((stats.spooled_requests(), stats.spooled_bytes()), (1, 0));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "spool")]
    pub fn spool(mut self, config: bbr_core::spool::SpoolConfig) -> Self {
        self.config_mut().spool = Some(config);
        self
    }

    /// Cap on the bytes spooled to disk by all requests of this layer and
    /// its clones together (feature `spool`), as in
    /// [`RoutingStats::spooled_bytes`]. A request whose next spooled frame
    /// would go over it is refused with 503 `overloaded` and `Retry-After`,
    /// as for the memory cap: spooled bytes count against this cap, not
    /// against [`max_held_bytes`](Self::max_held_bytes).
    #[cfg(feature = "spool")]
    pub fn max_spooled_bytes(mut self, bytes: u64) -> Self {
        self.config_mut().max_spooled_bytes = bytes;
        self
    }

    /// Bytes of a refused upload read and dropped, at most, so an HTTP/1.1
    /// client still sending reads the answer; past it the server may close
    /// the connection.
    pub fn drain_max_bytes(mut self, bytes: u64) -> Self {
        self.config_mut().drain.max_bytes = bytes;
        self
    }

    /// Time spent draining a refused upload, at most.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().drain.timeout = timeout;
        self
    }

    /// Counters shared by this layer and every service it builds (clones of
    /// the layer share them too).
    pub fn stats(&self) -> RoutingStats {
        RoutingStats::new(self.config.counters.clone())
    }
}

impl<S> Layer<S> for ModelRoutingLayer {
    type Service = ModelRouting<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ModelRouting::from_config(inner, self.config.clone())
    }
}
