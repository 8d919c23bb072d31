//! The service: guards routing headers, decides what to read, and hands the
//! request to [`ResponseFuture`].

use std::sync::Arc;
use std::task::{Context, Poll};

use bbr_core::contract::{MissingModel, Refusal};
use bbr_core::{BodyExtractor, BodyKind, ErrorKind, ExtractError, Limits};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use http_body::Body;
use tower_service::Service;

use crate::body::{ReplayBody, ResponseBody};
use crate::config::Config;
use crate::counters::RoutingStats;
use crate::error::BoxError;
use crate::future::ResponseFuture;
use crate::headers::guard_routing_headers;
use crate::trace::debug_event;

/// Routes requests by the top-level `model` of their JSON body: see the
/// [crate docs](crate). Built by [`ModelRoutingLayer`](crate::ModelRoutingLayer).
///
/// ```
/// use bbr_tower::{ModelRouting, ReplayBody};
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower::{ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let service = ModelRouting::new(service_fn(|request: Request<ReplayBody<Full<Bytes>>>| async move {
///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::copy_from_slice(
///         request.headers()[bbr_core::contract::MODEL_HEADER].as_bytes(),
///     ))))
/// }));
/// let stats = service.stats();
/// let request = Request::post("/").body(Full::new(Bytes::from(r#"{"model":"m"}"#)))?;
/// assert_eq!(service.oneshot(request).await?.status(), 200);
/// assert_eq!(stats.found(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ModelRouting<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> ModelRouting<S> {
    /// Wraps `inner` with the default configuration (see
    /// [`ModelRoutingLayer`](crate::ModelRoutingLayer) for the options).
    pub fn new(inner: S) -> Self {
        Self::from_config(inner, Arc::new(Config::default()))
    }

    pub(crate) fn from_config(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The layer's counters.
    pub fn stats(&self) -> RoutingStats {
        RoutingStats::new(self.config.counters.clone())
    }
}

impl<S, B, ResBody> Service<Request<B>> for ModelRouting<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResBody>> + Clone,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let config = &self.config;
        if let Err(refusal) = guard_routing_headers(request.headers_mut(), config.client_headers) {
            config.counters.record_refused(0);
            return ResponseFuture::refused(&refusal, Some(request.into_body()), config);
        }
        if !needs_reading(&request) {
            config.counters.record_unread();
            let counters = config.counters.clone();
            let client_headers = config.client_headers;
            let request = request.map(|body| ReplayBody::unread(body, client_headers, counters));
            return ResponseFuture::called(self.inner.call(request));
        }
        let max_body = config.limits.max_body_bytes();
        if content_length(request.headers()).is_some_and(|length| length > max_body) {
            // Refuse before reading a byte: the client learns at once.
            config.counters.record_refused(0);
            let error = ExtractError::new(ErrorKind::BodyTooLarge { limit: max_body }, max_body);
            return ResponseFuture::refused(&Refusal::Extract(error), None, config);
        }
        let extractor = body_extractor(request.headers(), config.limits);
        request
            .extensions_mut()
            .insert(crate::extension::BodyFormat::of(&extractor));
        if matches!(extractor.kind(), BodyKind::NotDecoded(_)) {
            // An encoding that is not decoded may be valid traffic: the
            // missing-model way, without reading the body.
            debug_event!(kind = ?extractor.kind(), "content encoding not decoded");
            if matches!(config.missing_model, MissingModel::Forward) {
                config.counters.record_absent(0);
                let counters = config.counters.clone();
                let client_headers = config.client_headers;
                let request =
                    request.map(|body| ReplayBody::unread(body, client_headers, counters));
                return ResponseFuture::called(self.inner.call(request));
            }
            config.counters.record_refused(0);
            return ResponseFuture::refused(
                &Refusal::MissingModel,
                Some(request.into_body()),
                config,
            );
        }
        // The standard tower step: the ready service goes into the future,
        // a fresh clone stays here for the next `poll_ready`.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::reading(ready, request, extractor, config.clone())
    }
}

/// False for requests that cannot carry a model: no body, or an empty
/// `content-length`.
fn needs_reading<B: Body>(request: &Request<B>) -> bool {
    !request.body().is_end_stream() && content_length(request.headers()) != Some(0)
}

/// The extractor for this request's headers: the core decides which
/// `content-type` and `content-encoding` fields count
/// ([`BodyExtractor::for_headers`]).
fn body_extractor(headers: &HeaderMap, limits: Limits) -> BodyExtractor {
    BodyExtractor::for_headers(
        headers.get_all(header::CONTENT_TYPE),
        headers.get_all(header::CONTENT_ENCODING),
        limits,
    )
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
}
