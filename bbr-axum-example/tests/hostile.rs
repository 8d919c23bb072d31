//! Hostile clients against the proxy: a routing header nominated as
//! hop-by-hop in `Connection`, and routing headers smuggled in request
//! trailers over h2c.

mod common;

const DEEPSEEK_BODY: &str = r#"{"model":"ski-resorts","prompt":"hi","max_tokens":2}"#;

use std::convert::Infallible;
use std::net::SocketAddr;

use bbr_axum_example::Config;
use bytes::Bytes;
use common::{REQUEST_DEADLINE, TestBody, start, start_yaml};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn connection_cannot_nominate_the_routing_header_away() {
    let gateway = start(Config::scenario()).await;
    for connection in [
        "x-gateway-model-name",
        "keep-alive, X-Gateway-Model-Name",
        "x_gateway_model_name, x-gateway-base-model-name",
    ] {
        // Raw bytes: what a client puts on the wire, no client library between.
        let mut tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        let request = format!(
            "POST /v1/completions HTTP/1.1\r\nhost: gw\r\nconnection: {connection}\r\n\
             x-keep: 1\r\ncontent-length: {}\r\n\r\n{DEEPSEEK_BODY}",
            DEEPSEEK_BODY.len()
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(REQUEST_DEADLINE, tcp.read_exact(&mut head))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "Connection: {connection}");
        let seen = gateway.simulators().pool("vllm-deepseek-r1")[0]
            .observer()
            .last_request()
            .expect("the upstream got the request");
        assert_eq!(
            seen.header("x-gateway-model-name"),
            Some("ski-resorts"),
            "Connection: {connection}"
        );
        assert_eq!(seen.header("connection"), None);
        assert_eq!(seen.header("x-keep"), Some("1"));
    }
    gateway.shutdown().await.unwrap();
}

/// What the recording upstream saw of one request.
#[derive(Debug, Default, Clone)]
struct Seen {
    headers: HeaderMap,
    trailers: Option<HeaderMap>,
    body: Bytes,
}

/// An HTTP/1.1 upstream that records one request's headers, body and
/// trailers, and answers 200.
async fn recording_upstream() -> (SocketAddr, tokio::sync::mpsc::Receiver<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        // Bounded: one connection per test request.
        for _ in 0..4 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let seen_tx = seen_tx.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let collected = body.collect().await.expect("the body arrives whole");
                        let trailers = collected.trailers().cloned();
                        let seen = Seen {
                            headers: parts.headers,
                            trailers,
                            body: collected.to_bytes(),
                        };
                        let _ = seen_tx.send(seen).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, seen_rx)
}

#[tokio::test]
async fn routing_headers_in_h2c_request_trailers_never_reach_the_upstream() {
    let (upstream, mut seen) = recording_upstream().await;
    let yaml = format!(
        "pools: [{{name: p, endpoints: ['{upstream}']}}]\nroutes: [{{pool: p, matches: [{{model: ski-resorts}}]}}]\n"
    );
    let gateway = start_yaml(&yaml).await;

    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    trailers.insert("x-gateway-model-name", "movie-critique".parse().unwrap());
    trailers.insert("x_gateway_base_model_name", "evil".parse().unwrap());
    let body_text = r#"{"model":"ski-resorts","prompt":"hi"}"#;
    let frames = vec![
        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(
            body_text.as_bytes(),
        ))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let body: TestBody = StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let request = Request::post(format!("http://{}/v1/completions", gateway.addr))
        .header(
            "trailer",
            "x-checksum, x-gateway-model-name, x_gateway_base_model_name",
        )
        .body(body)
        .unwrap();
    let h2c = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let response = tokio::time::timeout(REQUEST_DEADLINE, h2c.request(request))
        .await
        .expect("an answer in time")
        .expect("h2c works");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);

    let seen = seen.recv().await.expect("the upstream saw the request");
    assert_eq!(seen.body, body_text.as_bytes(), "body unchanged");
    assert_eq!(seen.headers["x-gateway-model-name"], "ski-resorts");
    assert_eq!(seen.headers["trailer"], "x-checksum");
    let trailers = seen.trailers.expect("declared trailers are forwarded");
    let names: Vec<&str> = trailers.keys().map(|name| name.as_str()).collect();
    assert_eq!(
        names,
        ["x-checksum"],
        "routing headers stripped, others kept"
    );
    assert_eq!(trailers["x-checksum"], "abc");
    gateway.shutdown().await.unwrap();
}
