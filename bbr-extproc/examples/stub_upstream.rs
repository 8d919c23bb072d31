//! A fast stand-in for a model server, for the load benchmark
//! (`bench/run-load.sh`): reads the whole request body, answers 200 with a
//! small JSON naming the `x-gateway-model-name` it received.
//!
//! ```text
//! cargo run --release -p bbr-extproc --example stub_upstream -- 127.0.0.1:8000
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let model = request
                        .headers()
                        .get("x-gateway-model-name")
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                    let len = match request.into_body().collect().await {
                        Ok(body) => body.to_bytes().len(),
                        Err(_) => 0,
                    };
                    let reply = serde_json::json!({"model": model, "len": len}).to_string();
                    let mut response = Response::new(Full::new(Bytes::from(reply)));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(response)
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
