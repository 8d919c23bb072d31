//! Hostile clients: slow uploads, the global cap, routing headers smuggled
//! in trailers or with underscores, uploads that fail before the decision,
//! and violations that must not keep the upstream request open.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use bbr_core::Limits;
use bbr_core::contract::{ClientHeaders, MODEL_HEADER};
use bbr_tower::{BodyViolation, ModelRoutingLayer, ReplayBody};
use bytes::Bytes;
use common::{FramesBody, Recorder, TEST_TIMEOUT, TestServer, channel_body, oneshot};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Layer, ServiceExt};

const DEADLINE: Duration = Duration::from_secs(5);

/// Lets the spawned request task run until it took every frame sent so far.
async fn until_read(tx: &tokio::sync::mpsc::Sender<Frame<Bytes>>) {
    for _ in 0..10_000 {
        if tx.capacity() == tx.max_capacity() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the layer did not read the frames");
}

fn data(bytes: &'static [u8]) -> Frame<Bytes> {
    Frame::data(Bytes::from_static(bytes))
}

#[tokio::test(start_paused = true)]
async fn a_decision_just_before_the_deadline_is_routed_and_one_at_it_is_408() {
    let layer = ModelRoutingLayer::new().decision_deadline(DEADLINE);
    let recorder = Recorder::default();
    for (wait, status) in [(DEADLINE - Duration::from_millis(1), 200), (DEADLINE, 408)] {
        let (tx, body) = channel_body();
        let request = Request::post("/").body(body).unwrap();
        let answer = tokio::spawn({
            let (layer, recorder) = (layer.clone(), recorder.clone());
            async move { oneshot(&layer, &recorder, request).await }
        });
        tx.send(data(br#"{"messages":[],"#)).await.unwrap();
        until_read(&tx).await;
        tokio::time::advance(wait).await;
        // Let the request task see the clock before the model arrives.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        // The model arrives `wait` after the first byte.
        let _ = tx.send(data(br#""model":"m"}"#)).await;
        drop(tx);
        let answer = answer.await.unwrap();
        assert_eq!(answer.status, status, "after {wait:?}: {answer:?}");
        if status == 408 {
            assert_eq!(answer.error_code(), "request_timeout");
        }
    }
    let stats = layer.stats();
    assert_eq!(
        (stats.found(), stats.decision_timeouts(), stats.refused()),
        (1, 1, 1)
    );
    assert_eq!(recorder.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_trickling_upload_is_refused_at_the_default_deadline_and_frees_what_it_held() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let (tx, body) = channel_body();
    let request = Request::post("/").body(body).unwrap();
    // Not the `oneshot` helper: its safety timeout is as long as the default
    // deadline.
    let service = recorder.service(&layer);
    let answer =
        tokio::spawn(async move { common::collect(service.oneshot(request).await.unwrap()).await });
    tx.send(data(b"{\"messages\":[\"")).await.unwrap();
    until_read(&tx).await;
    // One byte a second, never the model: paused time runs the clock.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if tx.send(data(b"a")).await.is_err() {
                break;
            }
        }
    });
    let answer = answer.await.unwrap();
    assert_eq!(answer.status, 408);
    assert_eq!(answer.error_code(), "request_timeout");
    assert_eq!(layer.stats().decision_timeouts(), 1);
    assert_eq!(layer.stats().held_bytes(), 0);
    assert_eq!(recorder.count(), 0);
    trickle.abort();
}

#[tokio::test(start_paused = true)]
async fn a_refused_upload_that_stalls_is_drained_for_the_drain_timeout_only() {
    let layer = ModelRoutingLayer::new()
        .client_headers(ClientHeaders::Reject)
        .drain_timeout(Duration::from_secs(2));
    let recorder = Recorder::default();
    let (tx, body) = channel_body();
    let request = Request::post("/")
        .header("x-gateway-model-name", "spoofed")
        .body(body)
        .unwrap();
    tx.send(data(b"{")).await.unwrap();
    // The client never sends more and never ends: the answer still comes.
    let answer = oneshot(&layer, &recorder, request).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "routing_header_not_allowed");
    drop(tx);
}

#[tokio::test]
async fn past_the_global_cap_a_request_is_503_with_retry_after_and_passes_once_memory_is_freed() {
    let cap = 64 * 1024;
    let layer = ModelRoutingLayer::new().max_held_bytes(cap);
    let recorder = Recorder::default();
    // A first request holds 40 KiB, undecided.
    let (tx, body) = channel_body();
    let first = tokio::spawn({
        let (layer, recorder) = (layer.clone(), recorder.clone());
        async move { oneshot(&layer, &recorder, Request::post("/").body(body).unwrap()).await }
    });
    let mut head = b"{\"messages\":\"".to_vec();
    head.resize(40 * 1024, b'a');
    tx.send(Frame::data(Bytes::from(head))).await.unwrap();
    until_read(&tx).await;
    let held = layer.stats().held_bytes();
    assert!(held >= 40 * 1024, "{held}");
    // A second one of 40 KiB does not fit beside it.
    let mut body = b"{\"messages\":\"".to_vec();
    body.resize(40 * 1024, b'b');
    body.extend_from_slice(br#"","model":"m"}"#);
    let body = Bytes::from(body);
    let answer = oneshot(
        &layer,
        &recorder,
        Request::post("/")
            .body(FramesBody::chunked([body.clone()]))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(answer.error_json()["error"]["code"], "overloaded");
    assert_eq!(answer.error_json()["error"]["type"], "server_error");
    assert_eq!(layer.stats().overloaded(), 1);
    // The first finishes; its memory is given back; the second now passes.
    tx.send(data(br#"","model":"m"}"#)).await.unwrap();
    drop(tx);
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(layer.stats().held_bytes(), 0);
    let answer = oneshot(
        &layer,
        &recorder,
        Request::post("/")
            .body(FramesBody::chunked([body]))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
}

fn smuggling_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    trailers.insert("x-gateway-model-name", HeaderValue::from_static("spoofed"));
    trailers.insert(
        "x_gateway_base_model_name",
        HeaderValue::from_static("spoofed"),
    );
    trailers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_headers_in_http2_trailers_are_stripped_or_refused() {
    let decides_early = Bytes::from_static(br#"{"model":"food-review-1","prompt":"hi"}"#);
    for policy in [ClientHeaders::Strip, ClientHeaders::Reject] {
        // Last-wins decides only at the end: the trailers arrive before the
        // decision. First-wins decides at once: they arrive after it.
        for duplicate_keys in [
            bbr_core::DuplicateKeys::LastWins,
            bbr_core::DuplicateKeys::FirstWins,
        ] {
            let layer = ModelRoutingLayer::new()
                .client_headers(policy)
                .limits(Limits::new().with_duplicate_keys(duplicate_keys));
            let recorder = Recorder::default();
            let server = TestServer::start(&layer, &recorder).await;
            let request = Request::post("/")
                .body(
                    FramesBody::chunked(common::split(&decides_early, 8))
                        .with_trailers(smuggling_trailers()),
                )
                .unwrap();
            let answer = server.send_h2(request).await;
            let case = format!("{policy:?} {duplicate_keys:?}");
            match policy {
                ClientHeaders::Strip => {
                    assert_eq!(answer.status, 200, "{case}: {answer:?}");
                    let seen = recorder.last();
                    let trailers = seen.trailers.clone().expect("trailers forwarded");
                    assert_eq!(trailers.len(), 1, "{case}: {trailers:?}");
                    assert_eq!(trailers["x-checksum"], "abc");
                    assert_eq!(seen.header(MODEL_HEADER), Some("food-review-1"));
                }
                _ => {
                    assert_eq!(answer.status, 400, "{case}: {answer:?}");
                    assert_eq!(answer.error_code(), "routing_header_not_allowed", "{case}");
                    assert_eq!(answer.error_json()["error"]["param"], MODEL_HEADER);
                }
            }
        }
    }
}

#[tokio::test]
async fn underscored_routing_headers_are_stripped_or_refused() {
    let body = Bytes::from_static(br#"{"prompt":"no model"}"#);
    let recorder = Recorder::default();
    let request = || {
        Request::post("/")
            .header("X_Gateway_Model_Name", "spoofed")
            .header("x_gateway_base-model_name", "spoofed")
            .body(FramesBody::chunked([body.clone()]))
            .unwrap()
    };
    let answer = oneshot(&ModelRoutingLayer::new(), &recorder, request()).await;
    assert_eq!(answer.status, 200);
    let seen = recorder.last();
    assert!(
        seen.headers
            .keys()
            .all(|name| !name.as_str().starts_with("x_gateway")),
        "{:?}",
        seen.headers
    );
    let reject = ModelRoutingLayer::new().client_headers(ClientHeaders::Reject);
    let answer = oneshot(&reject, &recorder, request()).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "routing_header_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_upload_before_the_decision_is_400_invalid_request_body() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let server = TestServer::start(&layer, &recorder).await;
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Promises 100 bytes, sends 13, then closes its sending side.
    socket
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"messages\":[")
        .await
        .unwrap();
    socket.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(TEST_TIMEOUT, socket.read_to_end(&mut answer))
        .await
        .expect("the server answers")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains(r#""code":"invalid_request_body""#),
        "{answer}"
    );
    assert!(answer.contains("after byte 13"), "{answer}");
    assert_eq!(recorder.count(), 0);
}

#[tokio::test]
async fn a_violation_reaches_the_inner_service_while_the_client_is_still_uploading() {
    // Drains without a time bound here, so only the body's end finishes it.
    let layer = ModelRoutingLayer::new().drain_timeout(Duration::MAX);
    let (violation_seen, seen) = tokio::sync::oneshot::channel::<()>();
    let violation_seen = std::sync::Arc::new(std::sync::Mutex::new(Some(violation_seen)));
    let inner = tower::service_fn(move |request: Request<ReplayBody<common::ChannelBody>>| {
        let violation_seen = violation_seen.lock().unwrap().take();
        async move {
            let mut body = request.into_body();
            let mut response = Response::new(Full::new(Bytes::new()));
            while let Some(frame) = body.frame().await {
                if let Err(error) = frame
                    && let Some(violation) = BodyViolation::find(&*error)
                {
                    // A proxy aborts the upstream request here.
                    *response.status_mut() = violation.status();
                    if let Some(tx) = violation_seen {
                        let _ = tx.send(());
                    }
                    break;
                }
            }
            Ok::<_, Infallible>(response)
        }
    });
    let (tx, body) = channel_body();
    let call = tokio::spawn(
        layer
            .layer(inner)
            .oneshot(Request::post("/").body(body).unwrap()),
    );
    tx.send(data(br#"{"model":"a","#)).await.unwrap();
    tx.send(data(br#""model":"b","#)).await.unwrap();
    // Before the fix the layer drained the whole upload first.
    tokio::time::timeout(TEST_TIMEOUT, seen)
        .await
        .expect("the violation came while the client was still sending")
        .unwrap();
    // The answer waits for the drain: the rest of the upload is read...
    tx.send(data(br#""rest":"...""#)).await.unwrap();
    until_read(&tx).await;
    assert!(!call.is_finished());
    // ...and the answer goes out once it ended.
    drop(tx);
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn the_base_model_is_looked_up_by_exactly_the_name_the_model_header_carries() {
    let llama = bbr_tower::BaseModelName::new("meta-llama/Llama-3.1-8B-Instruct").unwrap();
    let layer = ModelRoutingLayer::new().base_models(std::collections::HashMap::from([(
        "food-review-1".to_owned(),
        llama,
    )]));
    let recorder = Recorder::default();
    // The core decides what a model name is (it may trim the padding); the
    // lookup never trims on its own, so the two headers always agree.
    for body in [
        &br#"{"model":"food-review-1"}"#[..],
        br#"{"model":" food-review-1"}"#,
        br#"{"model":"food-review-1\t"}"#,
    ] {
        let request = Request::post("/")
            .body(FramesBody::chunked([Bytes::from_static(body)]))
            .unwrap();
        let answer = oneshot(&layer, &recorder, request).await;
        let seen = recorder.last();
        let case = String::from_utf8_lossy(body);
        if answer.status == 400 {
            // A core that refuses the padding (a tab is a control character).
            assert_eq!(answer.error_code(), "invalid_model", "{case}");
            continue;
        }
        assert_eq!(answer.status, 200, "{case}");
        let model = seen.headers[MODEL_HEADER].as_bytes().to_vec();
        let base = seen.header(bbr_core::contract::BASE_MODEL_HEADER);
        if model == b"food-review-1" {
            assert_eq!(base, Some("meta-llama/Llama-3.1-8B-Instruct"), "{case}");
        } else {
            assert_eq!(base, None, "{case}: model header {model:?}");
        }
    }
}
