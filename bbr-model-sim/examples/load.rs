//! Closed-loop load against one in-process simulated server, for 4 seconds
//! (a sanity check of the simulator's own cost, not the gateway benchmark).
//!
//! `cargo run -p bbr-model-sim --example load --profile test -- [CONCURRENCY] [BODY_KIB] [RECORD_CAPACITY]`
//! (defaults 64, 1, 32); prints requests/s, p50 and p99.
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let concurrency: usize = args.next().map_or(64, |v| v.parse().expect("concurrency"));
    let body_kib: usize = args.next().map_or(1, |v| v.parse().expect("KiB"));
    let record: usize = args.next().map_or(32, |v| v.parse().expect("record"));
    let sim = bbr_model_sim::spawn(bbr_model_sim::SimConfig::new("m").record_capacity(record))
        .await
        .expect("sim");
    let filler = "x".repeat(body_kib * 1024);
    let body = Bytes::from(format!(
        r#"{{"model":"m","max_tokens":20,"messages":[{{"role":"user","content":"{filler}"}}]}}"#
    ));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url = format!("{}/v1/chat/completions", sim.url());
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let start = Instant::now();
                let request = http::Request::post(&url)
                    .body(Full::new(body.clone()))
                    .expect("req");
                let response = client.request(request).await.expect("response");
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.expect("body");
                latencies.push(start.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    all.sort();
    let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    println!(
        "concurrency {concurrency}, {body_kib} KiB, record {record}: {:.0} req/s, p50 {:?}, p99 {:?}",
        all.len() as f64 / 4.0,
        p(0.5),
        p(0.99)
    );
}
