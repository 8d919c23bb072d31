//! The soak harness judged against a real gateway: the bbr tower layer in
//! front of a forwarding client, on real sockets. A short run must come out
//! clean, with refusals counted; the full-length runs against the example
//! gateway and Envoy + bbr-extproc are `benches/scripts/soak.sh`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bbr_benches::soak::{Config, Verdict, run};
use bbr_tower::ModelRoutingLayer;
use http::Request;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};

/// Listens on a free port: the tower layer, then a client forwarding every
/// request to `upstream`.
async fn start_gateway(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let forward = tower::service_fn(move |mut request: Request<_>| {
        let client = client.clone();
        async move {
            *request.uri_mut() = format!("http://{upstream}{}", request.uri().path())
                .parse()
                .unwrap();
            client.request(request).await
        }
    });
    let gateway = ModelRoutingLayer::new().layer(forward);
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let gateway = gateway.clone();
                    async move {
                        Ok::<_, Infallible>(match gateway.oneshot(request).await {
                            Ok(response) => response.map(http_body_util::Either::Left),
                            Err(_) => http::Response::builder()
                                .status(502)
                                .body(http_body_util::Either::Right(http_body_util::Empty::<
                                    bytes::Bytes,
                                >::new(
                                )))
                                .unwrap(),
                        })
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_through_the_tower_layer_is_clean() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gateway = start_gateway(upstream).await;
    let mut config = Config::new(format!("http://{gateway}").parse().unwrap(), upstream);
    config.clients = 8;
    config.duration = Duration::from_millis(500);
    config.max_body = 64 << 10;
    config.pids = vec![std::process::id()];
    let report = run(&config).await.expect("the first request is routed");
    assert!(report.clean(), "{}", report.human_line());
    let ok = report.verdicts.get(&Verdict::Ok).copied().unwrap_or(0);
    assert_eq!(ok, report.sent);
    // Planned refusals (one in eight) were sent and answered 400.
    assert!(report.sent >= 16, "{}", report.human_line());
    assert!(
        report.refused > 0 && report.refused < report.sent,
        "{}",
        report.human_line()
    );
    assert!(report.memory[0].2.is_some());
}
