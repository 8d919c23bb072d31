//! End to end through a real Envoy: client → Envoy listener → ext_proc
//! filter → bbr-extproc (in process) → header routes → recording upstreams.
//! One Envoy per test; the configs are the ones in `deploy/envoy/`.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bbr_extproc::Tls;
use bytes::Bytes;
use hyper::body::Frame;
use hyper::{HeaderMap, Request};
use rand::{Rng, SeedableRng};
use support::*;

const SPOOF: &str = "x-gateway-model-name";
const SPOOF_BASE: &str = "x-gateway-base-model-name";

async fn stack(file: &str, tls: Tls) -> (Upstreams, ExtProc, Envoy) {
    let upstreams = Upstreams::start().await;
    let extproc = ExtProc::start(test_settings(), tls).await;
    let envoy = Envoy::start(file, Some(extproc.grpc), &upstreams).await;
    (upstreams, extproc, envoy)
}

/// Calls 0–8 of the reference scenario reach the right pool with the header
/// set and the body byte for byte (content-length kept).
async fn reference_requests_reach_their_pool(envoy: &Envoy, upstreams: &Upstreams) {
    let client = http1_client();
    for (path, body, model, pool) in reference_requests() {
        let answer = send(&client, post(&envoy.url(path), body.clone(), &[])).await;
        assert_eq!(
            answer.status,
            200,
            "{model}: {:?} / envoy log: {}",
            answer.body,
            envoy.log_text()
        );
        let json = answer.json();
        assert_eq!(json["pool"], pool, "{model}");
        assert_eq!(json["model"], model);
        assert_eq!(
            json["sha256"],
            sha256(body.as_bytes()),
            "{model}: body changed"
        );
    }
    let received = upstreams.take();
    assert_eq!(received.len(), 9);
    for r in &received {
        assert_eq!(
            r.header("content-length"),
            Some(r.body_len.to_string().as_str())
        );
        assert_eq!(r.method, "POST");
    }
}

/// Every error row: status, content-type and OpenAI-shaped body as the
/// client sees them; a body refused before the decision reaches no pool,
/// and no refused body reaches a pool complete.
async fn error_rows_reach_the_client(envoy: &Envoy, upstreams: &Upstreams) {
    let client = http1_client();
    for (name, body, status, code) in error_rows() {
        let len = body.len();
        let answer = send(&client, post(&envoy.url("/v1/chat/completions"), body, &[])).await;
        assert_eq!(
            answer.status,
            status,
            "{name}: {:?}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(
            answer.content_type.as_deref(),
            Some("application/json"),
            "{name}"
        );
        let json = answer.json();
        assert_eq!(json["error"]["code"], code, "{name}");
        assert_eq!(json["error"]["type"], "invalid_request_error", "{name}");
        assert_eq!(json["error"]["param"], "model", "{name}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| m.len() < 200),
            "{name}"
        );
        let reached = upstreams.take();
        if !LATE_ROWS.contains(&name) {
            assert!(reached.is_empty(), "{name}: reached {reached:?}");
        }
        for r in reached {
            assert_ne!(
                r.body_len, len,
                "{name}: the refused body reached {} complete",
                r.pool
            );
        }
    }
}

/// A client can never pick the route with the routing headers; GET and a
/// body without `model` go through untouched, to the default route.
async fn spoofed_headers_get_and_missing_model(envoy: &Envoy, upstreams: &Upstreams) {
    let client = http1_client();
    let body = r#"{"model":"food-review-1","prompt":"x"}"#;
    let spoof = [
        (SPOOF, "ski-resorts"),
        (SPOOF_BASE, "deepseek/vllm-deepseek-r1"),
    ];
    let answer = send(&client, post(&envoy.url("/v1/completions"), body, &spoof)).await;
    assert_eq!(answer.json()["pool"], "pool-llama");
    let r = upstreams.take().pop().expect("received");
    assert_eq!(r.headers.get(SPOOF).map(Vec::len), Some(1));
    assert_eq!(r.header(SPOOF), Some("food-review-1"));
    assert_eq!(
        r.header(SPOOF_BASE),
        None,
        "a spoofed base header must not survive"
    );

    let answer = send(
        &client,
        post(
            &envoy.url("/v1/completions"),
            r#"{"prompt":"no model"}"#,
            &spoof,
        ),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["pool"], "default-pool");
    let r = upstreams.take().pop().expect("received");
    assert_eq!((r.header(SPOOF), r.header(SPOOF_BASE)), (None, None));

    let get = Request::get(envoy.url("/v1/models"))
        .header(SPOOF, "ski-resorts")
        .body(empty())
        .expect("request");
    let answer = send(&client, get).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["pool"], "default-pool");
    let r = upstreams.take().pop().expect("received");
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.header(SPOOF)),
        ("GET", "/v1/models", None)
    );
}

/// An HTTP/2 client sends the body then trailers: trailers end the body,
/// the request is routed and the trailers reach the upstream.
async fn trailers_end_the_body(envoy: &Envoy, upstreams: &Upstreams) {
    let text = r#"{"messages":[{"role":"user","content":"hi"}],"model":"movie-critique"}"#;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().expect("value"));
    let answer = send_with_trailers(envoy, text, trailers).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json()["pool"], "pool-deepseek");
    assert_eq!(answer.json()["sha256"], sha256(text.as_bytes()));
    let r = upstreams.take().pop().expect("received");
    assert_eq!(
        r.trailers,
        vec![("x-checksum".to_owned(), "abc".to_owned())]
    );
}

/// HTTP/2 request trailers cannot carry the routing headers to the
/// upstream: they are removed, other trailers pass.
async fn trailers_cannot_carry_routing_headers(envoy: &Envoy, upstreams: &Upstreams) {
    let text = r#"{"model":"movie-critique","messages":[{"role":"user","content":"hi"}]}"#;
    let mut trailers = HeaderMap::new();
    trailers.insert(SPOOF, "food-review-1".parse().expect("value"));
    trailers.insert(
        SPOOF_BASE,
        "meta-llama/Llama-3.1-8B-Instruct".parse().expect("value"),
    );
    trailers.insert(
        "x_gateway_model_name",
        "food-review-1".parse().expect("value"),
    );
    trailers.insert("x-checksum", "abc".parse().expect("value"));
    let answer = send_with_trailers(envoy, text, trailers).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json()["pool"], "pool-deepseek");
    let r = upstreams.take().pop().expect("received");
    assert_eq!(r.header(SPOOF), Some("movie-critique"));
    assert_eq!(
        r.trailers,
        vec![("x-checksum".to_owned(), "abc".to_owned())],
        "routing headers smuggled in the trailers"
    );
}

/// A `content-length` over the body limit is refused at the headers: the
/// client gets 413 while it still holds the body, the upstream nothing.
async fn oversized_content_length_is_refused_at_the_headers(envoy: &Envoy, upstreams: &Upstreams) {
    let client = http1_client();
    let (tx, body) = channel_body();
    let request = Request::post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("content-length", (13u64 << 20).to_string())
        .body(body)
        .expect("request");
    let pending = tokio::spawn(async move { send(&client, request).await });
    tx.send(Frame::data(Bytes::from_static(
        br#"{"model":"food-review-1","#,
    )))
    .await
    .expect("send data");
    let answer = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("answered before the body was sent")
        .expect("task");
    drop(tx);
    assert_eq!(answer.status, 413, "{:?}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "request_too_large");
    assert!(upstreams.take().is_empty(), "the upstream got the request");
}

async fn contract_in_mode(file: &str) -> ExtProc {
    let (upstreams, extproc, envoy) = stack(file, Tls::Plaintext).await;
    reference_requests_reach_their_pool(&envoy, &upstreams).await;
    error_rows_reach_the_client(&envoy, &upstreams).await;
    spoofed_headers_get_and_missing_model(&envoy, &upstreams).await;
    trailers_end_the_body(&envoy, &upstreams).await;
    trailers_cannot_carry_routing_headers(&envoy, &upstreams).await;
    oversized_content_length_is_refused_at_the_headers(&envoy, &upstreams).await;
    extproc
}

/// A slow upload (model last, the rest never comes) is refused with 408
/// once the decision deadline passed; nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upload_is_refused_at_the_decision_deadline() {
    let upstreams = Upstreams::start().await;
    let settings = test_settings().decision_deadline(Duration::from_millis(300));
    let extproc = ExtProc::start(settings, Tls::Plaintext).await;
    let envoy = Envoy::start("bbr-full-duplex.yaml", Some(extproc.grpc), &upstreams).await;
    let (tx, pending) = streamed_request(&envoy);
    tx.send(Frame::data(Bytes::from_static(
        br#"{"messages":[{"role":"user","#,
    )))
    .await
    .expect("send data");
    // The body never completes: only the deadline can answer.
    let answer = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("answered by the deadline")
        .expect("task");
    drop(tx);
    assert_eq!(answer.status, 408, "{:?}", answer.body);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert_eq!(answer.json()["error"]["code"], "request_timeout");
    assert!(upstreams.take().is_empty());
    let metrics = extproc.metrics_text().await;
    assert!(
        metrics.contains("bbr_request_outcomes_total{outcome=\"request_timeout\"} 1"),
        "{metrics}"
    );
}

/// Over the global cap on held bytes: 503 with `Retry-After`; under it the
/// same body is routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_held_over_the_global_cap_get_503_with_retry_after() {
    let upstreams = Upstreams::start().await;
    let settings = test_settings().max_held_bytes(64 << 10);
    let extproc = ExtProc::start(settings, Tls::Plaintext).await;
    let envoy = Envoy::start("bbr-full-duplex.yaml", Some(extproc.grpc), &upstreams).await;
    // Streamed by the client so that Envoy cannot hand the whole body over
    // in one message: the first chunk (no model yet) must be held.
    let (tx, pending) = streamed_request(&envoy);
    let first = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"#,
        "x".repeat(200 << 10)
    );
    tx.send(Frame::data(Bytes::from(first)))
        .await
        .expect("send data");
    let answer = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("answered before the body was complete")
        .expect("task");
    drop(tx);
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    let json = answer.json();
    assert_eq!(json["error"]["code"], "overloaded");
    assert_eq!(json["error"]["type"], "server_error");
    assert!(json["error"]["param"].is_null());
    let small = r#"{"messages":[],"model":"ski-resorts"}"#;
    let answer = send(
        &http1_client(),
        post(&envoy.url("/v1/chat/completions"), small, &[]),
    )
    .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_duplex_streamed_follows_the_contract() {
    let extproc = contract_in_mode("bbr-full-duplex.yaml").await;
    let expected = [
        "bbr_success_total 13",
        "bbr_body_field_not_found_total{field=\"model\"} 1",
        "bbr_body_field_empty_total{field=\"model\"} 1",
        "bbr_request_outcomes_total{outcome=\"found\"} 12",
        "bbr_request_outcomes_total{outcome=\"no_body\"} 1",
        "bbr_request_outcomes_total{outcome=\"request_too_large\"} 3",
        "bbr_request_outcomes_total{outcome=\"invalid_json\"} 5",
        "bbr_request_outcomes_total{outcome=\"invalid_model\"} 6",
        "bbr_extraction_duration_seconds_count 27",
    ];
    // Envoy closes each ext_proc stream just after the response; the last
    // stream may still be recording.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = extproc.metrics_text().await;
        let missing: Vec<_> = expected.iter().filter(|l| !metrics.contains(*l)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing {missing:?} in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_follows_the_contract() {
    contract_in_mode("bbr-streamed.yaml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_follows_the_contract() {
    contract_in_mode("bbr-buffered.yaml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_model_header_routes_every_adapter_with_one_route_per_pool() {
    let dir = std::env::temp_dir().join(format!("bbr-e2e-adapters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("adapters.yaml");
    std::fs::write(
        &file,
        "kind: ConfigMap\nmetadata: {name: llama}\ndata:\n  baseModel: meta-llama/Llama-3.1-8B-Instruct\n  adapters: |\n    - food-review-1\n---\nkind: ConfigMap\nmetadata: {name: deepseek}\ndata:\n  baseModel: deepseek/vllm-deepseek-r1\n  adapters: |\n    - ski-resorts\n    - movie-critique\n",
    )
    .expect("write adapters");
    let upstreams = Upstreams::start().await;
    let mut config = bbr_extproc::ServerConfig::local(test_settings());
    config.adapters = vec![file.clone()];
    let extproc = ExtProc::start_with(config).await;
    let envoy = Envoy::start("bbr-base-model.yaml", Some(extproc.grpc), &upstreams).await;
    let client = http1_client();
    for (path, body, model, pool) in reference_requests() {
        let answer = send(&client, post(&envoy.url(path), body, &[])).await;
        assert_eq!(answer.status, 200, "{model}");
        let json = answer.json();
        assert_eq!(json["pool"], pool, "{model}");
        assert_eq!(json["model"], model);
        let base = if pool == "pool-llama" {
            "meta-llama/Llama-3.1-8B-Instruct"
        } else {
            "deepseek/vllm-deepseek-r1"
        };
        assert_eq!(json["base"], base, "{model}");
    }
    // An unknown model has no base model: no header, default route.
    let answer = send(
        &client,
        post(&envoy.url("/v1/completions"), r#"{"model":"foo"}"#, &[]),
    )
    .await;
    assert_eq!(answer.json()["pool"], "default-pool");
    assert_eq!(answer.json()["base"], serde_json::Value::Null);
    drop(envoy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_between_envoy_and_bbr_extproc() {
    let (upstreams, _extproc, envoy) = stack("bbr-full-duplex-tls.yaml", Tls::SelfSigned).await;
    reference_requests_reach_their_pools(&envoy, 3, || envoy.log_text()).await;
    assert_eq!(upstreams.take().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_with_model_first_reaches_the_upstream_before_the_client_finished() {
    let (upstreams, _extproc, envoy) = stack("bbr-full-duplex.yaml", Tls::Plaintext).await;
    const TOTAL: usize = 8 << 20;
    let head = br#"{"model":"ski-resorts","messages":[{"role":"user","content":""#;
    let tail = br#""}]}"#;
    let mut body = Vec::with_capacity(TOTAL);
    body.extend_from_slice(head);
    body.resize(TOTAL - tail.len(), b'a');
    body.extend_from_slice(tail);
    let body = Bytes::from(body);

    let (tx, request_body) = channel_body();
    let request = Request::post(envoy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("content-length", TOTAL.to_string())
        .body(request_body)
        .expect("request");
    let client = http1_client();
    let pending = tokio::spawn(async move { send(&client, request).await });
    let arrived = upstreams.headers_arrived.clone();
    let headers_at_upstream = arrived.notified();
    // Send the first half; hold the rest back.
    let half = TOTAL / 2;
    for piece in body.slice(..half).chunks(256 << 10) {
        tx.send(Frame::data(Bytes::copy_from_slice(piece)))
            .await
            .expect("send");
    }
    tokio::time::timeout(Duration::from_secs(10), headers_at_upstream)
        .await
        .expect("the upstream saw the request while the client still held half of the body");
    assert!(
        upstreams.take().is_empty(),
        "the upstream cannot have the whole body yet"
    );
    for piece in body.slice(half..).chunks(256 << 10) {
        tx.send(Frame::data(Bytes::copy_from_slice(piece)))
            .await
            .expect("send");
    }
    drop(tx);
    let answer = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("no hang")
        .expect("task");
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let json = answer.json();
    assert_eq!(json["pool"], "pool-deepseek");
    assert_eq!(json["len"], TOTAL);
    assert_eq!(json["sha256"], sha256(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_arrive_byte_identical() {
    let (upstreams, _extproc, envoy) = stack("bbr-full-duplex.yaml", Tls::Plaintext).await;
    let models = [
        ("meta-llama/Llama-3.1-8B-Instruct", "pool-llama"),
        ("food-review-1", "pool-llama"),
        ("deepseek/vllm-deepseek-r1", "pool-deepseek"),
        ("ski-resorts", "pool-deepseek"),
        ("movie-critique", "pool-deepseek"),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let client = http1_client();
    let mut tasks = Vec::new();
    let mut expected = HashSet::new();
    for i in 0..200 {
        let (model, pool) = models[i % models.len()];
        let pad = "p".repeat(rng.random_range(0..(64 << 10)));
        // Half the bodies put the model last.
        let body = if i % 2 == 0 {
            format!(
                r#"{{"model":"{model}","i":{i},"messages":[{{"role":"user","content":"{pad}"}}]}}"#
            )
        } else {
            format!(
                r#"{{"i":{i},"messages":[{{"role":"user","content":"{pad}"}}],"model":"{model}"}}"#
            )
        };
        let hash = sha256(body.as_bytes());
        expected.insert(hash.clone());
        let client = client.clone();
        let url = envoy.url("/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let answer = send(&client, post(&url, body, &[])).await;
            (answer, pool, hash)
        }));
    }
    for task in tasks {
        let (answer, pool, hash) = task.await.expect("task");
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let json = answer.json();
        assert_eq!(
            (json["pool"].as_str(), json["sha256"].as_str()),
            (Some(pool), Some(hash.as_str()))
        );
    }
    let received: HashSet<String> = upstreams
        .take()
        .into_iter()
        .map(|r| r.body_sha256)
        .collect();
    assert_eq!(received, expected, "every body arrived once, unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_when_ready_and_not_serving_while_draining() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut config = bbr_extproc::ServerConfig::local(test_settings());
    config.drain_delay = Duration::from_millis(800);
    let mut extproc = ExtProc::start_with(config).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", extproc.health))
        .expect("uri")
        .connect()
        .await
        .expect("health port");
    let mut health = HealthClient::new(channel);
    for service in ["", bbr_extproc::SERVICE_NAME] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    extproc.shutdown();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health answers while draining")
            .into_inner()
            .status;
        if status == ServingStatus::NotServing as i32 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = extproc.done.take().expect("running");
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("exits after the drain delay")
        .expect("task")
        .expect("clean exit");
}

// ------------------------------------ uploads and compressed bodies (issue 12)

const BOUNDARY: &str = "------------------------bbrE2e4f1c";

/// Random audio-like bytes (every byte value, CRLFs and dashes included).
fn audio_file(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut file = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
    file.extend((0..len).map(|_| rng.random::<u8>()));
    file.extend_from_slice(format!("\r\n--{}\r\n", &BOUNDARY[..20]).as_bytes());
    file
}

/// A form as curl `-F` builds it; `model` before or after the file.
fn upload(model: &str, file: &[u8], model_first: bool) -> Bytes {
    let field = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n"
    );
    let mut body = Vec::new();
    if model_first {
        body.extend_from_slice(field.as_bytes());
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(b"\r\n");
    if !model_first {
        body.extend_from_slice(field.as_bytes());
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    Bytes::from(body)
}

fn request_with(url: &str, body: Bytes, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::post(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(full(body)).expect("request")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams::default();
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).expect("brotli");
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 3).expect("zstd")
}

/// Form uploads (model first and last) and compressed JSON bodies through
/// one Envoy: routed by what the body says, and the upstream gets the
/// client's bytes exactly (the file inside the form; the compressed bytes,
/// still compressed, with their `content-encoding`).
async fn uploads_and_compressed_bodies(envoy: &Envoy, upstreams: &Upstreams, mode: &str) {
    let client = http1_client();
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    for (model_first, model, pool) in [
        (true, "food-review-1", "pool-llama"),
        (false, "ski-resorts", "pool-deepseek"),
    ] {
        let file = audio_file(300 << 10, u64::from(model_first));
        let body = upload(model, &file, model_first);
        let answer = send(
            &client,
            request_with(
                &envoy.url("/v1/audio/transcriptions"),
                body.clone(),
                &[("content-type", &content_type)],
            ),
        )
        .await;
        let context = format!("{mode}: form, model first {model_first}");
        assert_eq!(answer.status, 200, "{context}: {:?}", answer.body);
        assert_eq!(answer.json()["pool"], pool, "{context}");
        let r = upstreams.take().pop().expect("received");
        assert_eq!(r.header(SPOOF), Some(model), "{context}");
        assert_eq!(r.path, "/v1/audio/transcriptions");
        assert_eq!(r.body_sha256, sha256(&body), "{context}: the form changed");
        let at = r
            .body
            .windows(file.len())
            .position(|w| w == &file[..])
            .unwrap_or_else(|| panic!("{context}: the file is not in the forwarded form"));
        assert!(at > 0, "{context}");
    }

    // An encoding bbr does not decode: forwarded unrouted, untouched.
    let body = Bytes::from_static(b"\x1f\x9d\x90not decoded");
    let answer = send(
        &client,
        request_with(
            &envoy.url("/v1/chat/completions"),
            body.clone(),
            &[
                ("content-type", "application/json"),
                ("content-encoding", "compress"),
                (SPOOF, "food-review-1"),
            ],
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{mode} compress: {:?}", answer.body);
    assert_eq!(answer.json()["pool"], "default-pool");
    let r = upstreams.take().pop().expect("received");
    assert_eq!((r.header(SPOOF), &r.body[..]), (None, &body[..]));

    if !cfg!(all(
        feature = "flate2",
        feature = "brotli",
        feature = "zstd"
    )) {
        return;
    }
    let chat =
        r#"{"messages":[{"role":"user","content":"Is the soup good?"}],"model":"movie-critique"}"#;
    type Encoder = fn(&[u8]) -> Vec<u8>;
    let encoders: [(&str, Encoder); 3] = [("gzip", gzip), ("br", brotli), ("zstd", zstd)];
    for (coding, encode) in encoders {
        let body = Bytes::from(encode(chat.as_bytes()));
        let answer = send(
            &client,
            request_with(
                &envoy.url("/v1/chat/completions"),
                body.clone(),
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", coding),
                ],
            ),
        )
        .await;
        assert_eq!(answer.status, 200, "{mode} {coding}: {:?}", answer.body);
        assert_eq!(answer.json()["pool"], "pool-deepseek", "{mode} {coding}");
        let r = upstreams.take().pop().expect("received");
        assert_eq!(r.header(SPOOF), Some("movie-critique"));
        assert_eq!(r.header("content-encoding"), Some(coding));
        assert_eq!(
            &r.body[..],
            &body[..],
            "{mode} {coding}: not the bytes sent"
        );
    }

    // A bomb: `{` and 16 MiB of spaces in ~16 KiB of gzip.
    let mut blank = vec![b' '; 16 << 20];
    blank[0] = b'{';
    let bomb = Bytes::from(gzip(&blank));
    drop(blank);
    let answer = send(
        &client,
        request_with(
            &envoy.url("/v1/chat/completions"),
            bomb,
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
        ),
    )
    .await;
    assert_eq!(answer.status, 413, "{mode} bomb: {:?}", answer.body);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let json = answer.json();
    assert_eq!(json["error"]["code"], "request_too_large");
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert!(
        upstreams.take().is_empty(),
        "{mode}: the bomb reached a pool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_compressed_bodies_are_routed_in_every_body_mode() {
    for file in [
        "bbr-full-duplex.yaml",
        "bbr-streamed.yaml",
        "bbr-buffered.yaml",
    ] {
        let (upstreams, _extproc, envoy) = stack(file, Tls::Plaintext).await;
        uploads_and_compressed_bodies(&envoy, &upstreams, file).await;
    }
}

/// The model field first: the upstream gets the request while the client
/// is still sending the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_with_the_model_first_reaches_the_upstream_before_the_file_is_sent() {
    let (upstreams, _extproc, envoy) = stack("bbr-full-duplex.yaml", Tls::Plaintext).await;
    let file = audio_file(4 << 20, 3);
    let body = upload("food-review-1", &file, true);
    let (tx, request_body) = channel_body();
    let request = Request::post(envoy.url("/v1/audio/transcriptions"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary=\"{BOUNDARY}\""),
        )
        .header("content-length", body.len().to_string())
        .body(request_body)
        .expect("request");
    let client = http1_client();
    let pending = tokio::spawn(async move { send(&client, request).await });
    let headers_at_upstream = upstreams.headers_arrived.notified();
    let half = body.len() / 2;
    for piece in body.slice(..half).chunks(64 << 10) {
        tx.send(Frame::data(Bytes::copy_from_slice(piece)))
            .await
            .expect("send");
    }
    tokio::time::timeout(Duration::from_secs(10), headers_at_upstream)
        .await
        .expect("the upstream saw the upload while the client still held half the file");
    for piece in body.slice(half..).chunks(64 << 10) {
        tx.send(Frame::data(Bytes::copy_from_slice(piece)))
            .await
            .expect("send");
    }
    drop(tx);
    let answer = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("no hang")
        .expect("task");
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json()["pool"], "pool-llama");
    assert_eq!(answer.json()["sha256"], sha256(&body));
}

/// The official OpenAI Python client's `audio.transcriptions.create`
/// through Envoy and bbr-extproc: routed by its `model` form field, the
/// file's bytes in the form the upstream got, the client reads the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_client_transcription_is_routed_by_the_form_field() {
    let python = workspace().join(".venv/bin/python");
    let has_openai = std::process::Command::new(&python)
        .args(["-c", "import openai"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_openai {
        eprintln!(
            "SKIPPED openai_python_client_transcription_is_routed_by_the_form_field: \
             the `openai` module is not in {} (run `bash scripts/install-tools`)",
            python.display()
        );
        return;
    }
    let (upstreams, _extproc, envoy) = stack("bbr-full-duplex.yaml", Tls::Plaintext).await;
    let dir = std::env::temp_dir().join(format!("bbr-e2e-openai-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("speech.wav");
    let file = audio_file(200 << 10, 11);
    std::fs::write(&path, &file).expect("write the file");
    let script = "import sys, openai\n\
        client = openai.OpenAI(base_url=sys.argv[1], api_key='not-checked', max_retries=0)\n\
        with open(sys.argv[2], 'rb') as f:\n\
        \x20   result = client.audio.transcriptions.create(model='ski-resorts', file=f)\n\
        print(result.text)\n";
    let base_url = envoy.url("/v1");
    let output = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            std::process::Command::new(python)
                .args(["-c", script, &base_url])
                .arg(&path)
                .output()
                .expect("run python")
        }
    })
    .await
    .expect("task");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "the client failed: {} / envoy: {}",
        String::from_utf8_lossy(&output.stderr),
        envoy.log_text()
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "transcribed by pool-deepseek"
    );
    let r = upstreams.take().pop().expect("received");
    assert_eq!(r.path, "/v1/audio/transcriptions");
    assert_eq!(r.header(SPOOF), Some("ski-resorts"));
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("multipart/form-data")),
        "{:?}",
        r.headers
    );
    assert!(
        r.body.windows(file.len()).any(|w| w == &file[..]),
        "the file's bytes are not in the form the upstream got"
    );
}
