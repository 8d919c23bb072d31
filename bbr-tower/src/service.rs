//! The service: strips routing headers, decides what to read, and hands the
//! request to [`ResponseFuture`].

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use http_body::Body;
use tower_service::Service;

use crate::body::{ReplayBody, ResponseBody};
use crate::error::{BoxError, Error};
use crate::future::ResponseFuture;
use crate::layer::{Config, ModelRoutingLayer, RoutingStats};
use crate::policy::ClientHeaders;

/// Routes requests by the top-level `model` of their JSON body: see the
/// [crate docs](crate). Built by [`ModelRoutingLayer`].
#[derive(Debug, Clone)]
pub struct ModelRouting<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> ModelRouting<S> {
    /// Wraps `inner` with the default configuration.
    pub fn new(inner: S) -> Self {
        tower_layer::Layer::layer(&ModelRoutingLayer::new(), inner)
    }

    /// A [`ModelRoutingLayer`] with the default configuration.
    pub fn layer() -> ModelRoutingLayer {
        ModelRoutingLayer::new()
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
        ModelRoutingLayer::stats_of(&self.config)
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
        if let Err(error) = guard_client_headers(request.headers_mut(), config) {
            config.counters.record_refused(0);
            if request.body().is_end_stream() {
                return ResponseFuture::refused(&error);
            }
            let max_body = config.limits.max_body_bytes();
            return ResponseFuture::refused_after_draining(
                &error,
                request.into_body(),
                0,
                max_body,
            );
        }
        if !needs_reading(&request) {
            config.counters.record_unread();
            return ResponseFuture::called(self.inner.call(request.map(ReplayBody::new)));
        }
        let max_body = config.limits.max_body_bytes();
        if content_length(request.headers()).is_some_and(|length| length > max_body) {
            // Refuse before reading a byte: the client learns at once.
            config.counters.record_refused(0);
            let error = bbr_core::ExtractError::new(
                bbr_core::ErrorKind::BodyTooLarge { limit: max_body },
                max_body,
            );
            return ResponseFuture::refused(&Error::Extract(error));
        }
        // The standard tower step: the ready service goes into the future,
        // a fresh clone stays here for the next `poll_ready`.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::reading(ready, request, config.clone())
    }
}

/// Removes (or refuses) client-sent routing headers.
fn guard_client_headers(headers: &mut HeaderMap, config: &Config) -> Result<(), Error> {
    for name in [&config.model_header, &config.base_model_header] {
        match config.client_headers {
            ClientHeaders::Reject if headers.contains_key(name) => {
                return Err(Error::ClientRoutingHeader(name.clone()));
            }
            _ => {
                headers.remove(name);
            }
        }
    }
    Ok(())
}

/// False for requests that cannot carry a JSON model: no body, an empty
/// `content-length`, or a `multipart/form-data` upload (not read yet).
fn needs_reading<B: Body>(request: &Request<B>) -> bool {
    if request.body().is_end_stream() || content_length(request.headers()) == Some(0) {
        return false;
    }
    !request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim_start()
                .get(..19)
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case("multipart/form-data"))
        })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
}
