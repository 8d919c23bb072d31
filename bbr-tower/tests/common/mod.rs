//! Test helpers: bodies with chosen frames, a channel-fed body, a recording
//! inner service, and a real hyper server on 127.0.0.1 with the layer.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bbr_tower::{BaseModelName, BodyViolation, BoxError, ModelName, ModelRoutingLayer, ReplayBody};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tower::{Layer, Service, ServiceExt};

pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A body that hands out exactly these frames.
#[derive(Debug, Default)]
pub struct FramesBody {
    frames: VecDeque<Frame<Bytes>>,
    exact_len: Option<u64>,
}

impl FramesBody {
    /// Data frames, size unknown (like a chunked upload).
    pub fn chunked(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        Self {
            frames: chunks.into_iter().map(Frame::data).collect(),
            exact_len: None,
        }
    }

    /// Data frames with an exact size hint (like a `content-length` upload).
    pub fn sized(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let mut body = Self::chunked(chunks);
        body.exact_len = Some(body.remaining());
        body
    }

    pub fn with_trailers(mut self, trailers: HeaderMap) -> Self {
        self.frames.push_back(Frame::trailers(trailers));
        self
    }

    fn remaining(&self) -> u64 {
        self.frames
            .iter()
            .filter_map(Frame::data_ref)
            .map(|d| d.len() as u64)
            .sum()
    }
}

impl Body for FramesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.frames.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(_) => SizeHint::with_exact(self.remaining()),
            None => SizeHint::default(),
        }
    }
}

/// Splits `body` into frames of `size` bytes (slices of one buffer).
pub fn split(body: &Bytes, size: usize) -> Vec<Bytes> {
    (0..body.len())
        .step_by(size)
        .map(|start| body.slice(start..(start + size).min(body.len())))
        .collect()
}

/// A body fed through a channel, so a test decides when each frame is sent.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Frame<Bytes>>,
}

pub fn channel_body() -> (mpsc::Sender<Frame<Bytes>>, ChannelBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, ChannelBody { rx })
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

/// What the inner service saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub headers: HeaderMap,
    pub model_extension: Option<String>,
    pub base_extension: Option<String>,
    pub size_hint_at_call: (u64, Option<u64>),
    /// Data frames, kept only when recording frames.
    pub frames: Vec<Bytes>,
    pub frame_count: usize,
    pub len: u64,
    pub sha256: Vec<u8>,
    pub trailers: Option<HeaderMap>,
    pub violation: Option<BodyViolation>,
    pub other_error: Option<String>,
    pub end_stream_after: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }
}

/// Where the recording service puts what it saw.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    keep_frames: bool,
    called: Arc<Mutex<Option<oneshot::Sender<Seen>>>>,
}

impl Recorder {
    pub fn keeping_frames() -> Self {
        Self {
            keep_frames: true,
            ..Self::default()
        }
    }

    /// A channel that receives what the service saw at the moment it was
    /// called, before it read the body.
    pub fn on_call(&self) -> oneshot::Receiver<Seen> {
        let (tx, rx) = oneshot::channel();
        *self.called.lock().unwrap() = Some(tx);
        rx
    }

    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the inner service was called")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The inner service: reads the whole body frame by frame, records it,
    /// and answers 200 with what it saw in `x-seen-*` headers, or the
    /// contract's response for a [`BodyViolation`].
    pub async fn serve<B>(
        self,
        request: Request<ReplayBody<B>>,
    ) -> Result<Response<Full<Bytes>>, Infallible>
    where
        ReplayBody<B>: Body<Data = Bytes, Error = BoxError>,
    {
        let (parts, body) = request.into_parts();
        let mut body = std::pin::pin!(body);
        let hint = body.size_hint();
        let mut seen = Seen {
            headers: parts.headers.clone(),
            model_extension: parts
                .extensions
                .get::<ModelName>()
                .map(|m| m.as_str().to_owned()),
            base_extension: parts
                .extensions
                .get::<BaseModelName>()
                .map(|m| m.as_str().to_owned()),
            size_hint_at_call: (hint.lower(), hint.upper()),
            ..Seen::default()
        };
        if let Some(tx) = self.called.lock().unwrap().take() {
            let _ = tx.send(seen.clone());
        }
        let mut hasher = Sha256::new();
        while let Some(frame) = body.as_mut().frame().await {
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => {
                        hasher.update(&data);
                        seen.len += data.len() as u64;
                        seen.frame_count += 1;
                        if self.keep_frames {
                            seen.frames.push(data);
                        }
                    }
                    Err(frame) => seen.trailers = frame.into_trailers().ok(),
                },
                Err(error) => {
                    match BodyViolation::find(&*error) {
                        Some(violation) => seen.violation = Some(violation.clone()),
                        None => seen.other_error = Some(error.to_string()),
                    }
                    break;
                }
            }
        }
        seen.end_stream_after = body.is_end_stream();
        seen.sha256 = hasher.finalize().to_vec();
        let response = if let Some(violation) = &seen.violation {
            let response = violation.to_response();
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, Full::new(Bytes::copy_from_slice(body.as_bytes())))
        } else {
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
            let headers = response.headers_mut();
            for (name, value) in [
                (
                    "x-seen-model",
                    seen.header("x-gateway-model-name")
                        .unwrap_or("-")
                        .to_owned(),
                ),
                (
                    "x-seen-base",
                    seen.header("x-gateway-base-model-name")
                        .unwrap_or("-")
                        .to_owned(),
                ),
                ("x-seen-len", seen.len.to_string()),
                ("x-seen-sha256", hex(&seen.sha256)),
                ("x-seen-frames", seen.frame_count.to_string()),
            ] {
                headers.insert(name, value.parse().unwrap());
            }
            response
        };
        self.seen.lock().unwrap().push(seen);
        Ok(response)
    }

    /// The recording service wrapped in `layer`.
    pub fn service<B>(
        &self,
        layer: &ModelRoutingLayer,
    ) -> impl Service<
        Request<B>,
        Response = Response<bbr_tower::ResponseBody<Full<Bytes>>>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static
    where
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let recorder = self.clone();
        layer.layer(tower::service_fn(move |request: Request<ReplayBody<B>>| {
            recorder.clone().serve(request)
        }))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hex(&hasher.finalize())
}

/// A response, collected.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// Asserts the contract's error shape and returns the `code`.
    pub fn error_code(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&self.body).expect("error body is JSON");
        let error = &json["error"];
        assert_eq!(error["type"], "invalid_request_error", "{json}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
        assert!(error["param"].is_string(), "{json}");
        error["code"].as_str().expect("code").to_owned()
    }

    pub fn error_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("error body is JSON")
    }
}

pub async fn collect<B>(response: Response<B>) -> Answer
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Sends one request through `layer` + recorder with `oneshot`.
pub async fn oneshot<B>(
    layer: &ModelRoutingLayer,
    recorder: &Recorder,
    request: Request<B>,
) -> Answer
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let response = tokio::time::timeout(TEST_TIMEOUT, recorder.service(layer).oneshot(request))
        .await
        .expect("request timed out")
        .expect("infallible");
    collect(response).await
}

/// A hyper server on 127.0.0.1 serving `layer` + recorder; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

impl TestServer {
    pub async fn start(layer: &ModelRoutingLayer, recorder: &Recorder) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = recorder.service::<hyper::body::Incoming>(layer);
        let (shutdown, mut stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let hyper_service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            service.clone().oneshot(request)
                        },
                    );
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), hyper_service)
                        .await;
                });
            }
        });
        Self {
            addr,
            _shutdown: shutdown,
        }
    }

    /// Sends `request` over a fresh HTTP/2 (prior knowledge) connection,
    /// which carries request trailers.
    pub async fn send_h2<B>(&self, request: Request<B>) -> Answer
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .expect("connect");
            let (mut sender, connection) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .expect("handshake");
            tokio::spawn(connection);
            let mut request = request;
            *request.uri_mut() = format!("http://{}{}", self.addr, request.uri().path())
                .parse()
                .unwrap();
            let response = sender.send_request(request).await.expect("response");
            collect(response).await
        })
        .await
        .expect("request timed out")
    }

    /// Sends `request` over a fresh HTTP/1.1 connection.
    pub async fn send<B>(&self, request: Request<B>) -> Answer
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .expect("connect");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(connection);
            let mut request = request;
            request
                .headers_mut()
                .insert("host", "127.0.0.1".parse().unwrap());
            let response = sender.send_request(request).await.expect("response");
            collect(response).await
        })
        .await
        .expect("request timed out")
    }
}

/// A file with bytes that look like a delimiter without being one.
pub const AUDIO: &[u8] = b"RIFF\0\x01\r\n--\r\n-x\n--x\r--y\r\n\xff\xfe";

/// A hand-written form (boundary `x`); the `file` field has a filename.
pub fn form(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(b"--x\r\nContent-Disposition: form-data; name=\"");
        body.extend_from_slice(name.as_bytes());
        body.push(b'"');
        if *name == "file" {
            body.extend_from_slice(b"; filename=\"a.wav\"\r\nContent-Type: audio/wav");
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--x--\r\n");
    body
}

pub fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

pub fn zstd(body: &[u8]) -> Vec<u8> {
    zstd::encode_all(body, 3).unwrap()
}

pub fn brotli(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &body[..], &mut out, &Default::default()).unwrap();
    out
}

/// The SHA-256 of `bytes`, as `Seen::sha256` holds it.
pub fn sha256_bytes(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}
