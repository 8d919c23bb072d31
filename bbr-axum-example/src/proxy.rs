//! Streaming reverse proxy to a pool (hyper-util's pooled client).
//!
//! - The request body streams to the upstream frame by frame as the
//!   body-based routing layer releases it; nothing is buffered again here.
//! - The response (JSON or an SSE stream) is forwarded frame by frame as the
//!   model server produces it.
//! - Hop-by-hop headers (RFC 9110 §7.6.1, and those named by `Connection`)
//!   are dropped both ways; `Host` is set to the upstream; the client address
//!   is appended to `x-forwarded-for` unless configured off.
//! - If the request body fails while streaming (the routing layer found an
//!   invalid tail, a duplicate `model`, or the body limit), the upstream
//!   request is aborted — the connection is closed before the body is
//!   complete, so the model server never sees a complete bad body — and the
//!   client gets the error response, as long as the upstream has not
//!   answered yet.
//! - The route timeout runs from the request until the response is
//!   complete: before the response headers it gives 504; after them the
//!   response body is cut (the status is already sent).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri};
use http_body::{Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::ProxyOptions;
use crate::error::GatewayError;
use crate::pools::InFlight;
use crate::routing::Route;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Turns a request-body error into the client's response when it is a
/// violation of the routing contract (the body-based routing layer's typed
/// error); `None` for any other body error.
pub type BodyErrorResponder = Arc<dyn Fn(&axum::Error) -> Option<Response> + Send + Sync>;

/// The upstream client and proxy options.
#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, WatchedBody>,
    options: ProxyOptions,
    body_error: BodyErrorResponder,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What a forwarded request produced, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered (any status).
    Upstream,
    /// The gateway answered itself.
    Gateway,
}

impl Proxy {
    /// A proxy with a pooled HTTP/1 client.
    pub fn new(options: ProxyOptions, body_error: BodyErrorResponder) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Self {
            client,
            options,
            body_error,
        }
    }

    /// Forwards `request` to an endpoint of the route's pool.
    ///
    /// `in_flight_gauge` is the pool's gauge, held up while the response
    /// body streams.
    pub async fn forward(
        &self,
        route: &Route,
        request: Request<Body>,
        client_addr: Option<SocketAddr>,
        in_flight_gauge: Gauge,
    ) -> (Response, Outcome) {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + route.timeout);
        let flight = Flight::new(route.pool.pick(), in_flight_gauge);

        let (mut parts, body) = request.into_parts();
        let authority = flight.in_flight.endpoint().authority().clone();
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
            .expect("scheme, a valid authority and a valid path make a valid URI");
        parts.version = http::Version::HTTP_11;
        let original_host = parts.headers.remove(header::HOST);
        remove_hop_by_hop(&mut parts.headers);
        // `100-continue` was the client's exchange with this hop (the server
        // answered it when the body was first read).
        parts.headers.remove(header::EXPECT);
        if let Some(host) = original_host {
            parts
                .headers
                .insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        if self.options.x_forwarded_for
            && let Some(addr) = client_addr
        {
            append_forwarded_for(&mut parts.headers, addr);
        }

        let failure = Arc::new(Mutex::new(None));
        let body = WatchedBody::new(body, Arc::clone(&failure));
        let upstream = Request::from_parts(parts, body);

        let result = tokio::time::timeout_at(deadline, self.client.request(upstream)).await;
        let pool = route.pool.name().to_owned();
        match result {
            Ok(Ok(response)) => {
                let (mut parts, incoming) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                let body = ResponseBody {
                    inner: incoming,
                    deadline: tokio::time::sleep_until(deadline),
                    _flight: flight,
                };
                (
                    Response::from_parts(parts, Body::new(body)),
                    Outcome::Upstream,
                )
            }
            Ok(Err(error)) => {
                let body_failure = failure.lock().expect("the lock is never poisoned").take();
                match body_failure {
                    Some(body_error) => match (self.body_error)(&body_error) {
                        Some(response) => (response, Outcome::Gateway),
                        None => (
                            GatewayError::RequestBody(body_error).into_response(),
                            Outcome::Gateway,
                        ),
                    },
                    None => {
                        tracing::warn!(pool = %pool, error = %error, "upstream unreachable");
                        (
                            GatewayError::UpstreamUnreachable {
                                pool,
                                source: error,
                            }
                            .into_response(),
                            Outcome::Gateway,
                        )
                    }
                }
            }
            Err(_elapsed) => {
                tracing::warn!(pool = %pool, timeout = ?route.timeout, "upstream timeout");
                (
                    GatewayError::UpstreamTimeout {
                        pool,
                        timeout: route.timeout,
                    }
                    .into_response(),
                    Outcome::Gateway,
                )
            }
        }
    }
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Removes hop-by-hop headers, including the ones `Connection` names.
/// `transfer-encoding` goes too: each hop frames the body itself.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

fn append_forwarded_for(headers: &mut HeaderMap, addr: SocketAddr) {
    let ip = addr.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) if !previous.is_empty() => format!("{previous}, {ip}"),
        _ => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
}

/// A request in flight: the endpoint's count and the pool's gauge.
#[derive(Debug)]
struct Flight {
    in_flight: InFlight,
    gauge: Gauge,
}

impl Flight {
    fn new(in_flight: InFlight, gauge: Gauge) -> Self {
        gauge.inc();
        Self { in_flight, gauge }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The error hyper sees when the request body failed; the real error stays
/// with the proxy, which answers the client with it.
#[derive(Debug, thiserror::Error)]
#[error("request body failed; upstream request aborted")]
pub struct RequestBodyAborted;

pin_project_lite::pin_project! {
    /// The request body on its way upstream: frames pass through untouched
    /// (same `Bytes`); the first error is kept for the proxy.
    ///
    /// The last data frame of a body with a known length is held until the
    /// body's end is confirmed: with `content-length` framing the upstream
    /// has a complete request as soon as the last byte is written, so that
    /// byte must not leave before the routing layer's final check (a
    /// truncated tail is only known at the end). Bodies without a length
    /// are safe as they are: their end is the terminating chunk, written
    /// only after the check.
    pub struct WatchedBody {
        #[pin]
        inner: Body,
        failure: Arc<Mutex<Option<axum::Error>>>,
        held: Option<Frame<Bytes>>,
        next: Option<Frame<Bytes>>,
        ended: bool,
    }
}

impl WatchedBody {
    /// Wraps `inner`; a body error is stored in `failure`.
    pub fn new(inner: Body, failure: Arc<Mutex<Option<axum::Error>>>) -> Self {
        Self {
            inner,
            failure,
            held: None,
            next: None,
            ended: false,
        }
    }
}

impl std::fmt::Debug for WatchedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedBody").finish_non_exhaustive()
    }
}

fn frame_len(frame: Option<&Frame<Bytes>>) -> u64 {
    frame
        .and_then(|f| f.data_ref())
        .map_or(0, |d| d.len() as u64)
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = RequestBodyAborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if let Some(frame) = this.next.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        loop {
            if *this.ended {
                return Poll::Ready(this.held.take().map(Ok));
            }
            match std::task::ready!(this.inner.as_mut().poll_frame(cx)) {
                None => {
                    *this.ended = true;
                }
                Some(Err(error)) => {
                    *this.ended = true;
                    *this.held = None;
                    *this.failure.lock().expect("the lock is never poisoned") = Some(error);
                    return Poll::Ready(Some(Err(RequestBodyAborted)));
                }
                Some(Ok(frame)) => {
                    if let Some(held) = this.held.take() {
                        *this.next = Some(frame);
                        return Poll::Ready(Some(Ok(held)));
                    }
                    let last_of_known_length = frame.is_data()
                        && !this.inner.is_end_stream()
                        && this.inner.size_hint().upper() == Some(0);
                    if !last_of_known_length {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    // Ask for the end (or the error) before letting it go.
                    *this.held = Some(frame);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.next.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let extra = frame_len(self.held.as_ref()) + frame_len(self.next.as_ref());
        if self.ended {
            return SizeHint::with_exact(extra);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(extra));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(extra));
        }
        hint
    }
}

/// The response body was cut because the route timeout expired.
#[derive(Debug, thiserror::Error)]
#[error("route timeout expired while the response streamed")]
pub struct ResponseTimeout;

pin_project_lite::pin_project! {
    /// The upstream response body on its way to the client: frames pass
    /// through as they arrive; the request counts as in flight until the
    /// body ends or is dropped.
    struct ResponseBody {
        #[pin]
        inner: hyper::body::Incoming,
        #[pin]
        deadline: tokio::time::Sleep,
        _flight: Flight,
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Pending => match this.deadline.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(ResponseTimeout)))),
                Poll::Pending => Poll::Pending,
            },
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future as _;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-secret".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.insert("te", "trailers".parse().unwrap());
        headers.insert("upgrade", "h2c".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("x-gateway-model-name", "m".parse().unwrap());
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-gateway-model-name"]);
    }

    /// A body of fixed frames with an exact size hint, ending with `None`
    /// or an error, that only reports its end once polled past the data
    /// (like a validating body whose last check runs at the end).
    struct Frames {
        frames: std::collections::VecDeque<Bytes>,
        fail_at_end: bool,
        done: bool,
    }

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if let Some(bytes) = self.frames.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            self.done = true;
            if self.fail_at_end {
                Poll::Ready(Some(Err(std::io::Error::other("truncated"))))
            } else {
                Poll::Ready(None)
            }
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.frames.iter().map(|b| b.len() as u64).sum())
        }
    }

    fn watched(
        chunks: &[Bytes],
        fail_at_end: bool,
    ) -> (WatchedBody, Arc<Mutex<Option<axum::Error>>>) {
        let failure = Arc::new(Mutex::new(None));
        let body = Frames {
            frames: chunks.iter().cloned().collect(),
            fail_at_end,
            done: false,
        };
        (
            WatchedBody::new(Body::new(body), Arc::clone(&failure)),
            failure,
        )
    }

    fn poll(body: &mut WatchedBody) -> Option<Result<Frame<Bytes>, RequestBodyAborted>> {
        let waker = std::task::Waker::noop();
        match Pin::new(body).poll_frame(&mut Context::from_waker(waker)) {
            Poll::Ready(frame) => frame,
            Poll::Pending => panic!("test bodies are always ready"),
        }
    }

    #[test]
    fn frames_pass_through_without_copies() {
        let chunks = [
            Bytes::from_static(b"{\"model\":"),
            Bytes::from(b"\"m\"}".to_vec()),
        ];
        let (mut body, failure) = watched(&chunks, false);
        for chunk in &chunks {
            let frame = poll(&mut body).unwrap().unwrap().into_data().unwrap();
            assert_eq!(frame.as_ptr(), chunk.as_ptr(), "same bytes, not a copy");
            assert_eq!(frame.len(), chunk.len());
        }
        assert!(poll(&mut body).is_none());
        assert!(body.is_end_stream());
        assert!(failure.lock().unwrap().is_none());
    }

    #[test]
    fn last_frame_of_a_sized_body_waits_for_the_verdict() {
        let chunks = [
            Bytes::from_static(b"{\"model\":\"m\","),
            Bytes::from_static(b"\"prompt\":"),
        ];
        let (mut body, failure) = watched(&chunks, true);
        assert!(poll(&mut body).unwrap().is_ok());
        // The last frame is never released: the end turned out to be an error.
        assert!(poll(&mut body).unwrap().is_err());
        assert!(poll(&mut body).is_none());
        let error = failure
            .lock()
            .unwrap()
            .take()
            .expect("the error is kept for the proxy");
        assert!(error.to_string().contains("truncated"), "{error}");
    }

    #[test]
    fn last_frame_of_a_sized_body_is_released_at_a_clean_end() {
        let chunks = [Bytes::from_static(b"{\"model\":\"m\"}")];
        let (mut body, _) = watched(&chunks, false);
        assert_eq!(body.size_hint().exact(), Some(chunks[0].len() as u64));
        let frame = poll(&mut body).unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame.as_ptr(), chunks[0].as_ptr());
        assert!(poll(&mut body).is_none());
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, "127.0.0.1:5".parse().unwrap());
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        append_forwarded_for(&mut headers, "[::1]:5".parse().unwrap());
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1, ::1");
    }
}
