//! Streaming reverse proxy to a pool (hyper-util's pooled client).
//!
//! - The request body streams to the upstream frame by frame as the
//!   body-based routing layer releases it; nothing is buffered again here
//!   (the layer's `ReplayBody` already holds back the end of the body until
//!   its final check passed).
//! - Request trailers are forwarded when the client declared them in
//!   `Trailer` (HTTP/1.1 upstreams get only declared trailer fields), minus
//!   any routing header: a client can never set the route in trailers.
//! - The response (JSON or an SSE stream) is forwarded frame by frame as the
//!   model server produces it.
//! - Hop-by-hop headers (RFC 9110 §7.6.1) are dropped both ways. The ones a
//!   request's `Connection` nominates are dropped before the routing layer
//!   runs ([`strip_hop_by_hop`], put in front of the layer by the gateway),
//!   never after it: a client naming `x-gateway-model-name` in `Connection`
//!   cannot make the proxy drop the header the layer set. `Host` is set to
//!   the upstream; the client address is appended to `x-forwarded-for`
//!   (every earlier line kept) unless configured off.
//! - If the request body fails while streaming (the routing layer found an
//!   invalid tail, a duplicate `model`, or the body limit; or the client's
//!   upload broke), the upstream request is aborted — the connection is
//!   closed before the body is complete, so the model server never sees a
//!   complete bad body — and the client gets the contract's answer, found
//!   through the upstream error's `source()` chain, as long as the upstream
//!   has not answered yet.
//! - The route timeout runs from the request until the response is
//!   complete: before the response headers it gives 504; after them the
//!   response body is cut (the status is already sent).

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bbr_core::contract::routing_header;
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

/// The upstream client and proxy options.
#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, WatchedBody>,
    options: ProxyOptions,
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
    pub fn new(options: ProxyOptions) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(options.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Self { client, options }
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
        // The headers `Connection` nominated are gone already (before the
        // routing layer); what is left here is only the fixed set.
        remove_fixed_hop_by_hop(&mut parts.headers);
        remove_routing_trailer_names(&mut parts.headers);
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

        let upstream = Request::from_parts(parts, WatchedBody::new(body));
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
                let response = match RequestBodyFailed::find(&error) {
                    Some(failed) => GatewayError::Refused(crate::bbr::body_refusal(
                        &failed.source,
                        failed.offset,
                    )),
                    None => {
                        tracing::warn!(pool = %pool, error = %error, "upstream unreachable");
                        GatewayError::UpstreamUnreachable {
                            pool,
                            source: error,
                        }
                    }
                };
                (response.into_response(), Outcome::Gateway)
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

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
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
    remove_fixed_hop_by_hop(headers);
}

/// Removes the fixed hop-by-hop set and `transfer-encoding`, not the names
/// a `Connection` header nominates.
fn remove_fixed_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Strips a request's hop-by-hop headers before the routing layer runs
/// (`axum::middleware::map_request`), so that nothing the client nominates
/// in `Connection` can be removed after the layer set its headers.
pub async fn strip_hop_by_hop<B>(mut request: Request<B>) -> Request<B> {
    remove_hop_by_hop(request.headers_mut());
    request
}

/// Drops routing header names from `Trailer` (their trailers are never
/// forwarded, so the declaration would be false).
fn remove_routing_trailer_names(headers: &mut HeaderMap) {
    if !headers.contains_key(header::TRAILER) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty() && routing_header(name.as_bytes()).is_none())
        .map(str::to_owned)
        .collect();
    headers.remove(header::TRAILER);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join(", "))
    {
        headers.insert(header::TRAILER, value);
    }
}

/// Appends the client address to `x-forwarded-for`, keeping every earlier
/// line (a header repeated over several lines is one comma list).
fn append_forwarded_for(headers: &mut HeaderMap, addr: SocketAddr) {
    let mut value = String::new();
    for line in headers.get_all("x-forwarded-for") {
        let Ok(line) = line.to_str() else { continue };
        let line = line.trim();
        if !line.is_empty() {
            value.push_str(line);
            value.push_str(", ");
        }
    }
    value.push_str(&addr.ip().to_string());
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

/// The request body failed while it streamed to the upstream. hyper ends
/// the upstream request with an error whose `source()` chain holds this;
/// the proxy finds it there and answers the client with the contract's
/// refusal.
#[derive(Debug, thiserror::Error)]
#[error("request body failed after {offset} bytes; upstream request aborted")]
pub struct RequestBodyFailed {
    /// Bytes forwarded before the failure.
    pub offset: u64,
    /// The body's error (the routing layer's violation, or the upload's).
    #[source]
    pub source: axum::Error,
}

impl RequestBodyFailed {
    /// Finds a `RequestBodyFailed` in `error` or its chain of sources.
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        bbr_core::ErrorChain::find(error)
    }
}

pin_project_lite::pin_project! {
    /// The request body on its way upstream: frames pass through untouched
    /// (same `Bytes`); routing headers are removed from trailers; an error
    /// becomes a [`RequestBodyFailed`] with the byte offset.
    pub struct WatchedBody {
        #[pin]
        inner: Body,
        forwarded: u64,
    }
}

impl WatchedBody {
    /// Wraps `inner`.
    pub fn new(inner: Body) -> Self {
        Self {
            inner,
            forwarded: 0,
        }
    }
}

impl std::fmt::Debug for WatchedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedBody")
            .field("forwarded", &self.forwarded)
            .finish_non_exhaustive()
    }
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = RequestBodyFailed;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match std::task::ready!(this.inner.poll_frame(cx)) {
            None => Poll::Ready(None),
            Some(Err(source)) => Poll::Ready(Some(Err(RequestBodyFailed {
                offset: *this.forwarded,
                source,
            }))),
            Some(Ok(frame)) => {
                let frame = match frame.into_trailers() {
                    Ok(mut trailers) => {
                        let smuggled: Vec<HeaderName> = trailers
                            .keys()
                            .filter(|name| routing_header(name.as_str().as_bytes()).is_some())
                            .cloned()
                            .collect();
                        for name in smuggled {
                            trailers.remove(name);
                        }
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                };
                if let Some(data) = frame.data_ref() {
                    *this.forwarded += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
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

    #[test]
    fn the_fixed_set_ignores_nominations() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "x-gateway-model-name".parse().unwrap());
        headers.insert("x-gateway-model-name", "m".parse().unwrap());
        remove_fixed_hop_by_hop(&mut headers);
        assert_eq!(headers["x-gateway-model-name"], "m");
        assert!(!headers.contains_key("connection"));
    }

    #[test]
    fn trailer_declarations_lose_routing_names() {
        let mut headers = HeaderMap::new();
        headers.append("trailer", "x-a, X-Gateway-Model-Name".parse().unwrap());
        headers.append("trailer", "x_gateway_base_model_name".parse().unwrap());
        remove_routing_trailer_names(&mut headers);
        assert_eq!(headers["trailer"], "x-a");
        let mut only_routing = HeaderMap::new();
        only_routing.insert("trailer", "x-gateway-model-name".parse().unwrap());
        remove_routing_trailer_names(&mut only_routing);
        assert!(!only_routing.contains_key("trailer"));
    }

    /// A body of fixed frames, then optional trailers, ending with `None`
    /// or an error.
    struct Frames {
        frames: std::collections::VecDeque<Frame<Bytes>>,
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
            if let Some(frame) = self.frames.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
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
    }

    fn watched(frames: Vec<Frame<Bytes>>, fail_at_end: bool) -> WatchedBody {
        WatchedBody::new(Body::new(Frames {
            frames: frames.into(),
            fail_at_end,
            done: false,
        }))
    }

    fn poll(body: &mut WatchedBody) -> Option<Result<Frame<Bytes>, RequestBodyFailed>> {
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
        let mut body = watched(chunks.iter().cloned().map(Frame::data).collect(), false);
        for chunk in &chunks {
            let frame = poll(&mut body).unwrap().unwrap().into_data().unwrap();
            assert_eq!(frame.as_ptr(), chunk.as_ptr(), "same bytes, not a copy");
            assert_eq!(frame.len(), chunk.len());
        }
        assert!(poll(&mut body).is_none());
    }

    #[test]
    fn a_body_error_carries_its_offset_and_source_chain() {
        let frames = vec![
            Frame::data(Bytes::from_static(b"{\"model\":\"m\",")),
            Frame::data(Bytes::from_static(b"\"prompt\":")),
        ];
        let mut body = watched(frames, true);
        assert!(poll(&mut body).unwrap().is_ok());
        assert!(poll(&mut body).unwrap().is_ok());
        let failed = poll(&mut body).unwrap().unwrap_err();
        assert_eq!(failed.offset, 22);
        // Found again through an outer error's sources, as hyper wraps it.
        #[derive(Debug, thiserror::Error)]
        #[error("user body write aborted")]
        struct Outer(#[source] RequestBodyFailed);
        let outer = Outer(failed);
        let found = RequestBodyFailed::find(&outer).expect("in the source chain");
        assert!(found.source.to_string().contains("truncated"), "{found}");
        assert_eq!(
            crate::bbr::body_refusal(&found.source, found.offset),
            bbr_core::contract::Refusal::BodyRead { offset: 22 }
        );
    }

    #[test]
    fn routing_headers_are_removed_from_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        trailers.insert("x-gateway-model-name", "evil".parse().unwrap());
        trailers.insert("x_gateway_base_model_name", "evil".parse().unwrap());
        let mut body = watched(
            vec![
                Frame::data(Bytes::from_static(b"{\"model\":\"m\"}")),
                Frame::trailers(trailers),
            ],
            false,
        );
        assert!(poll(&mut body).unwrap().unwrap().is_data());
        let trailers = poll(&mut body).unwrap().unwrap().into_trailers().unwrap();
        let names: Vec<_> = trailers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-checksum"]);
    }

    #[test]
    fn forwarded_for_keeps_every_line() {
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, "127.0.0.1:5".parse().unwrap());
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        append_forwarded_for(&mut headers, "[::1]:5".parse().unwrap());
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1, ::1");
        let mut lines = HeaderMap::new();
        lines.append("x-forwarded-for", "10.0.0.1".parse().unwrap());
        lines.append("x-forwarded-for", "10.0.0.2, 10.0.0.3".parse().unwrap());
        append_forwarded_for(&mut lines, "127.0.0.9:1".parse().unwrap());
        assert_eq!(lines.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            lines["x-forwarded-for"],
            "10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.9"
        );
    }
}
