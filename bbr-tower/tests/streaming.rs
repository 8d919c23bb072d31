//! How bodies stream through the layer: early decision, identical bytes and
//! frames, trailers, size hints, limits at and past their value, reloads.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bbr_core::{ErrorKind, Limits};
use bbr_tower::{COALESCE_BYTES, FRAME_OVERHEAD, ModelRoutingLayer, ZERO_COPY_FRAMES};
use bytes::Bytes;
use common::{
    FramesBody, Recorder, TEST_TIMEOUT, TestServer, channel_body, oneshot, sha256, split,
};
use http::{HeaderMap, HeaderValue, Request};
use http_body::{Body, Frame};
use tower::ServiceExt;

/// A chat body of about `size` bytes with `model` first or last.
fn chat_body(model: &str, size: usize, model_first: bool) -> Bytes {
    let content = "lorem ipsum \\\"quoted\\\" \\u00e9 ".repeat(size / 30 + 1);
    let messages = format!(
        r#""messages":[{{"role":"developer","content":"{content}"}},{{"role":"user","content":"hi"}}],"max_tokens":5,"temperature":0"#
    );
    let text = if model_first {
        format!(r#"{{"model":"{model}",{messages}}}"#)
    } else {
        format!(r#"{{{messages},"model":"{model}"}}"#)
    };
    Bytes::from(text)
}

#[tokio::test]
async fn inner_service_is_called_before_the_client_finishes_uploading() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let called = recorder.on_call();
    let (tx, body) = channel_body();
    let request = Request::post("/v1/completions").body(body).unwrap();
    let response = tokio::spawn(recorder.service(&layer).oneshot(request));

    tx.send(Frame::data(Bytes::from_static(
        br#"{"model":"food-review-1","#,
    )))
    .await
    .unwrap();
    // The last frame is sent only after the inner service saw the header.
    let seen = tokio::time::timeout(TEST_TIMEOUT, called)
        .await
        .expect("inner service not called early")
        .unwrap();
    assert_eq!(seen.header("x-gateway-model-name"), Some("food-review-1"));
    tx.send(Frame::data(Bytes::from_static(br#""prompt":"hi"}"#)))
        .await
        .unwrap();
    drop(tx);

    let answer = common::collect(response.await.unwrap().unwrap()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(recorder.last().len, 39);
    assert_eq!(
        common::hex(&recorder.last().sha256),
        sha256(&[br#"{"model":"food-review-1","prompt":"hi"}"#])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_decision_over_a_real_socket() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let server = TestServer::start(&layer, &recorder).await;
    let called = recorder.on_call();
    let (tx, body) = channel_body();
    let request = Request::post("/v1/chat/completions").body(body).unwrap();
    let response = tokio::spawn(async move { server.send(request).await });

    tx.send(Frame::data(Bytes::from_static(
        br#"{"model":"ski-resorts","messages":["#,
    )))
    .await
    .unwrap();
    let seen = tokio::time::timeout(TEST_TIMEOUT, called)
        .await
        .expect("inner service not called early")
        .unwrap();
    assert_eq!(seen.header("x-gateway-model-name"), Some("ski-resorts"));
    tx.send(Frame::data(Bytes::from_static(
        br#"{"role":"user","content":"x"}]}"#,
    )))
    .await
    .unwrap();
    drop(tx);
    let answer = response.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-seen-model"), Some("ski-resorts"));
}

/// Asserts the inner service got exactly `chunks`: same frames, same
/// pointers, same lengths.
fn assert_same_frames(seen: &common::Seen, chunks: &[Bytes]) {
    assert_eq!(seen.frames.len(), chunks.len(), "frame count");
    for (index, (got, sent)) in seen.frames.iter().zip(chunks).enumerate() {
        assert_eq!(got.len(), sent.len(), "frame {index} length");
        assert_eq!(got.as_ptr(), sent.as_ptr(), "frame {index} was copied");
    }
}

/// Asserts the inner service got the same bytes in the same order: the
/// first frames and those after the decision as the client's own `Bytes`,
/// the tiny held frames between them coalesced into a few buffers.
fn assert_same_bytes(seen: &common::Seen, chunks: &[Bytes]) {
    let got: Vec<u8> = seen.frames.iter().flat_map(|f| f.iter().copied()).collect();
    let sent: Vec<u8> = chunks.iter().flat_map(|f| f.iter().copied()).collect();
    assert_eq!(got, sent);
    let same =
        |(got, sent): &(&Bytes, &Bytes)| got.as_ptr() == sent.as_ptr() && got.len() == sent.len();
    let head = seen.frames.iter().zip(chunks).take_while(same).count();
    // Counted only past the shared head, so the two never overlap.
    let tail = seen.frames[head..]
        .iter()
        .rev()
        .zip(chunks[head..].iter().rev())
        .take_while(same)
        .count();
    assert!(
        head >= ZERO_COPY_FRAMES.min(chunks.len()),
        "first frames shared: {head}"
    );
    let coalesced = seen.frames.len().saturating_sub(head + tail);
    let copied_bytes = sent.len()
        - chunks[..head]
            .iter()
            .chain(&chunks[chunks.len() - tail..])
            .map(Bytes::len)
            .sum::<usize>();
    assert!(
        coalesced <= copied_bytes.div_ceil(COALESCE_BYTES),
        "{coalesced} buffers for {copied_bytes} copied bytes"
    );
}

#[tokio::test]
async fn one_byte_frames_arrive_identical_first_and_after_the_decision_coalesced_between() {
    for model_first in [true, false] {
        let body = chat_body("movie-critique", 2_000, model_first);
        let chunks = split(&body, 1);
        let layer = ModelRoutingLayer::new();
        let recorder = Recorder::keeping_frames();
        let answer = oneshot(
            &layer,
            &recorder,
            Request::post("/")
                .body(FramesBody::chunked(chunks.clone()))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let seen = recorder.last();
        assert_eq!(seen.header("x-gateway-model-name"), Some("movie-critique"));
        assert_same_bytes(&seen, &chunks);
        assert!(
            seen.frames.len() < chunks.len(),
            "tiny held frames coalesced"
        );
        assert_eq!(common::hex(&seen.sha256), sha256(&[&body]));
        assert!(seen.end_stream_after);
    }
}

#[tokio::test]
async fn sixteen_kib_frames_arrive_identical_in_the_same_boundaries() {
    for model_first in [true, false] {
        let body = chat_body("food-review-1", 1 << 20, model_first);
        let chunks = split(&body, 16 * 1024);
        let layer = ModelRoutingLayer::new();
        let recorder = Recorder::keeping_frames();
        let answer = oneshot(
            &layer,
            &recorder,
            Request::post("/")
                .body(FramesBody::sized(chunks.clone()))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let seen = recorder.last();
        assert_eq!(seen.header("x-gateway-model-name"), Some("food-review-1"));
        // Frames of 16 KiB are never copied; only a small last frame held past
        // the first 16 is (into a buffer of its own).
        assert_same_bytes(&seen, &chunks);
        assert_eq!(seen.frames.len(), chunks.len());
        assert_eq!(common::hex(&seen.sha256), sha256(&[&body]));
        assert_eq!(
            seen.size_hint_at_call,
            (body.len() as u64, Some(body.len() as u64)),
            "size hint = held + rest"
        );
        // With the model last, everything before it was held, and no more.
        let peak = layer.stats().held_bytes_peak();
        if model_first {
            assert_eq!(peak, 16 * 1024 + FRAME_OVERHEAD);
        } else {
            let frames = (body.len() as u64).div_ceil(16 * 1024);
            assert!(
                peak >= body.len() as u64 - 16 * 1024
                    && peak <= body.len() as u64 + frames * FRAME_OVERHEAD + COALESCE_BYTES as u64,
                "peak {peak}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_any_size_arrive_identical_over_a_real_socket() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let server = TestServer::start(&layer, &recorder).await;
    for (size, frame) in [(3_000, 1), (2 << 20, 16 * 1024)] {
        for model_first in [true, false] {
            let body = chat_body("ski-resorts", size, model_first);
            let answer = server
                .send(
                    Request::post("/")
                        .body(FramesBody::chunked(split(&body, frame)))
                        .unwrap(),
                )
                .await;
            assert_eq!(answer.status, 200, "{answer:?}");
            assert_eq!(answer.header("x-seen-model"), Some("ski-resorts"));
            assert_eq!(
                answer.header("x-seen-sha256"),
                Some(sha256(&[&body]).as_str())
            );
            assert_eq!(
                answer.header("x-seen-len"),
                Some(body.len().to_string().as_str())
            );
        }
    }
}

fn trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    trailers
}

#[tokio::test]
async fn trailers_are_forwarded_after_an_early_decision() {
    let body = Bytes::from_static(br#"{"model":"food-review-1","prompt":"hi"}"#);
    let chunks = split(&body, 8);
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::keeping_frames();
    let request = Request::post("/")
        .body(FramesBody::chunked(chunks.clone()).with_trailers(trailers()))
        .unwrap();
    let answer = oneshot(&layer, &recorder, request).await;
    assert_eq!(answer.status, 200);
    let seen = recorder.last();
    assert_eq!(seen.header("x-gateway-model-name"), Some("food-review-1"));
    assert_eq!(seen.trailers, Some(trailers()));
    assert_same_frames(&seen, &chunks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_cross_a_real_http2_connection() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let server = TestServer::start(&layer, &recorder).await;
    for body in [
        &br#"{"model":"food-review-1","prompt":"hi"}"#[..],
        br#"{"prompt":"no model"}"#,
    ] {
        let body = Bytes::from_static(body);
        let request = Request::post("/v1/completions")
            .body(FramesBody::chunked(split(&body, 5)).with_trailers(trailers()))
            .unwrap();
        let answer = server.send_h2(request).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            answer.header("x-seen-sha256"),
            Some(sha256(&[&body]).as_str())
        );
        assert_eq!(recorder.last().trailers, Some(trailers()));
    }
    assert_eq!((layer.stats().found(), layer.stats().absent()), (1, 1));
}

#[tokio::test]
async fn model_header_shares_the_clients_bytes() {
    let body = Bytes::from_static(br#"{"model":"food-review-1"}"#);
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let service = recorder.service::<FramesBody>(&layer);
    let called = recorder.on_call();
    let answer = common::collect(
        service
            .oneshot(
                Request::post("/")
                    .body(FramesBody::chunked([body.clone()]))
                    .unwrap(),
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = called.await.unwrap();
    let header = seen.headers.get("x-gateway-model-name").unwrap().as_bytes();
    let range = body.as_ptr_range();
    assert!(
        range.contains(&header.as_ptr()),
        "the header value was copied"
    );
    assert_eq!(header, b"food-review-1");
}

#[tokio::test]
async fn trailers_read_before_the_decision_are_replayed() {
    // No model: the decision comes only when the body ends, with the trailers.
    let body = Bytes::from_static(br#"{"prompt":"hi"}"#);
    let chunks = split(&body, 4);
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::keeping_frames();
    let request = Request::post("/")
        .body(FramesBody::chunked(chunks.clone()).with_trailers(trailers()))
        .unwrap();
    let answer = oneshot(&layer, &recorder, request).await;
    assert_eq!(answer.status, 200);
    let seen = recorder.last();
    assert_eq!(seen.header("x-gateway-model-name"), None);
    assert_eq!(seen.trailers, Some(trailers()));
    assert_same_frames(&seen, &chunks);
    assert!(seen.end_stream_after);
}

#[tokio::test]
async fn size_hint_adds_the_held_bytes_to_an_unknown_rest() {
    let body = Bytes::from_static(br#"{"model":"m","prompt":"hello"}"#);
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let answer = oneshot(
        &layer,
        &recorder,
        Request::post("/")
            .body(FramesBody::chunked(split(&body, 5)))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = recorder.last();
    assert_eq!(seen.header("x-gateway-model-name"), Some("m"));
    // `{"model":"m"` is decided within the first 15 bytes (3 frames).
    assert_eq!(seen.size_hint_at_call, (15, None));
}

/// Sends `body` in 7-byte frames without a length, and with its length.
async fn run(layer: &ModelRoutingLayer, body: &str) -> (common::Answer, common::Answer) {
    let body = Bytes::copy_from_slice(body.as_bytes());
    let recorder = Recorder::default();
    let chunked = oneshot(
        layer,
        &recorder,
        Request::post("/")
            .body(FramesBody::chunked(split(&body, 7)))
            .unwrap(),
    )
    .await;
    let sized = Request::post("/")
        .header("content-length", body.len())
        .body(FramesBody::sized(split(&body, 7)))
        .unwrap();
    let sized = oneshot(layer, &recorder, sized).await;
    (chunked, sized)
}

#[tokio::test]
async fn body_limit_at_the_limit_passes_and_one_past_is_413() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"0123456789"}]}"#;
    let limit = body.len() as u64;
    let at = ModelRoutingLayer::new().limits(Limits::new().with_max_body_bytes(limit));
    let (chunked, sized) = run(&at, body).await;
    assert_eq!((chunked.status.as_u16(), sized.status.as_u16()), (200, 200));
    assert_eq!(at.stats().body_violations(), 0);

    let past = ModelRoutingLayer::new().limits(Limits::new().with_max_body_bytes(limit - 1));
    let (chunked, sized) = run(&past, body).await;
    // Chunked: decided early, then the forwarded body ends with a violation.
    assert_eq!(chunked.status, 413);
    assert_eq!(chunked.error_code(), "request_too_large");
    assert_eq!(past.stats().body_violations(), 1);
    // With content-length: refused before a byte is read.
    assert_eq!(sized.status, 413);
    assert_eq!(sized.error_code(), "request_too_large");
    assert_eq!(past.stats().refused(), 1);
}

#[tokio::test]
async fn scan_limit_at_the_limit_decides_and_one_past_is_413() {
    let body = format!(
        r#"{{"messages":[{{"content":"{}"}}],"model":"m"}}"#,
        "x".repeat(200)
    );
    // The decision needs every byte up to the closing quote of the model.
    let needed = body.len() as u64 - 1;
    let at = ModelRoutingLayer::new().limits(Limits::new().with_max_scan_bytes(needed));
    let (chunked, sized) = run(&at, &body).await;
    assert_eq!(
        (chunked.status.as_u16(), sized.status.as_u16()),
        (200, 200),
        "{chunked:?}"
    );
    let past = ModelRoutingLayer::new().limits(Limits::new().with_max_scan_bytes(needed - 1));
    let (chunked, sized) = run(&past, &body).await;
    assert_eq!((chunked.status.as_u16(), sized.status.as_u16()), (413, 413));
    assert_eq!(chunked.error_code(), "request_too_large");
    assert_eq!(past.stats().refused(), 2);
    // Never more held than the scan limit plus one frame, one coalescing
    // buffer and the frames' overhead (7-byte frames: 16 as is, then one buffer).
    let bound =
        needed - 1 + 7 + COALESCE_BYTES as u64 + (ZERO_COPY_FRAMES as u64 + 1) * FRAME_OVERHEAD;
    assert!(
        past.stats().held_bytes_peak() <= bound,
        "{}",
        past.stats().held_bytes_peak()
    );
}

#[tokio::test]
async fn model_length_at_the_limit_passes_and_one_past_is_400() {
    let layer = ModelRoutingLayer::new();
    let at = format!(
        r#"{{"model":"{}"}}"#,
        "x".repeat(Limits::DEFAULT_MAX_MODEL_LEN)
    );
    let (chunked, sized) = run(&layer, &at).await;
    assert_eq!((chunked.status.as_u16(), sized.status.as_u16()), (200, 200));
    let past = format!(
        r#"{{"model":"{}"}}"#,
        "x".repeat(Limits::DEFAULT_MAX_MODEL_LEN + 1)
    );
    let (chunked, sized) = run(&layer, &past).await;
    assert_eq!((chunked.status.as_u16(), sized.status.as_u16()), (400, 400));
    assert_eq!(chunked.error_code(), "invalid_model");
}

#[tokio::test]
async fn depth_at_the_limit_passes_and_one_past_is_400() {
    let layer = ModelRoutingLayer::new();
    let depth = Limits::DEFAULT_MAX_DEPTH as usize;
    // The root object is depth 1.
    let nested = |levels: usize| {
        format!(
            r#"{{"a":{}{},"model":"m"}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    let (chunked, sized) = run(&layer, &nested(depth - 1)).await;
    assert_eq!((chunked.status.as_u16(), sized.status.as_u16()), (200, 200));
    let (chunked, sized) = run(&layer, &nested(depth)).await;
    assert_eq!((chunked.status.as_u16(), sized.status.as_u16()), (400, 400));
    assert_eq!(chunked.error_code(), "invalid_json");
}

#[tokio::test]
async fn invalid_tail_after_the_decision_ends_the_body_with_a_violation() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let body = Bytes::from_static(br#"{"model":"food-review-1","messages":[}"#);
    let answer = oneshot(
        &layer,
        &recorder,
        Request::post("/")
            .body(FramesBody::chunked(split(&body, 30)))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "invalid_json");
    let seen = recorder.last();
    assert_eq!(seen.header("x-gateway-model-name"), Some("food-review-1"));
    let violation = seen.violation.expect("a violation");
    assert_eq!(violation.error().unwrap().kind(), ErrorKind::InvalidJson);
    // The offending frame itself is never handed out.
    assert_eq!(seen.len, 30);
    assert_eq!(layer.stats().body_violations(), 1);
}

#[tokio::test]
async fn duplicate_model_in_a_later_frame_ends_the_body_with_a_violation() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let chunks = vec![
        Bytes::from_static(br#"{"model":"food-review-1","#),
        Bytes::from_static(br#""messages":[],"#),
        Bytes::from_static(br#""model":"ski-resorts"}"#),
    ];
    let answer = oneshot(
        &layer,
        &recorder,
        Request::post("/")
            .body(FramesBody::chunked(chunks))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "invalid_model");
    let seen = recorder.last();
    assert_eq!(seen.header("x-gateway-model-name"), Some("food-review-1"));
    assert_eq!(
        seen.violation.expect("a violation").error().unwrap().kind(),
        ErrorKind::DuplicateModel
    );
    assert_eq!(
        seen.len,
        25 + 14,
        "the frame with the second model is not handed out"
    );
    assert_eq!(layer.stats().body_violations(), 1);
}

/// A body that fails after one frame.
struct FailingBody {
    first: Option<Bytes>,
}

impl Body for FailingBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(match self.first.take() {
            Some(first) => Ok(Frame::data(first)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client went away",
            )),
        }))
    }
}

#[tokio::test]
async fn body_error_before_the_decision_is_400_and_after_it_reaches_the_inner_service() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let before = FailingBody {
        first: Some(Bytes::from_static(br#"{"messages":["#)),
    };
    let answer = oneshot(&layer, &recorder, Request::post("/").body(before).unwrap()).await;
    assert_eq!(answer.status, 400);
    // The body failed (the client went away), it was not bad JSON.
    assert_eq!(answer.error_code(), "invalid_request_body");
    assert_eq!(layer.stats().refused(), 1);
    assert!(
        answer.error_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("after byte 13")
    );
    assert_eq!(recorder.count(), 0);

    let after = FailingBody {
        first: Some(Bytes::from_static(br#"{"model":"m","messages":["#)),
    };
    let answer = oneshot(&layer, &recorder, Request::post("/").body(after).unwrap()).await;
    assert_eq!(answer.status, 200);
    let seen = recorder.last();
    assert!(seen.violation.is_none());
    assert!(
        seen.other_error
            .as_deref()
            .is_some_and(|e| e.contains("client went away")),
        "{seen:?}"
    );
}

#[cfg(feature = "adapters")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_map_reloads_while_requests_run() {
    use bbr_adapters::AdapterStore;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;
    let dir = std::env::temp_dir().join(format!("bbr-tower-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("adapters.yaml");
    let write = {
        let (dir, file) = (dir.clone(), file.clone());
        move |base: &str| {
            let tmp = dir.join(".adapters.yaml.tmp");
            std::fs::write(
                &tmp,
                format!("kind: ConfigMap\ndata: {{baseModel: {base}, adapters: '[lora]'}}\n"),
            )
            .unwrap();
            std::fs::rename(&tmp, &file).unwrap();
        }
    };
    write("base-a");
    let store = AdapterStore::load([&file]).unwrap();
    let watcher = store.watch(Duration::from_millis(2)).unwrap();
    let layer = ModelRoutingLayer::new().adapters(store.clone());
    let recorder = Recorder::default();
    let service = recorder.service::<FramesBody>(&layer);

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let done = done.clone();
        let write = write.clone();
        std::thread::spawn(move || {
            // Bounded: at most 10 s of rewrites.
            for round in 0..3_000 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                write(if round % 2 == 0 { "base-b" } else { "base-a" });
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    // Requests run until the map was swapped under them at least 10 times.
    const WANTED_RELOADS: u64 = 10;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut requests = 0;
    while store.reload_count() < WANTED_RELOADS && std::time::Instant::now() < deadline {
        let batch: Vec<_> = (0..8)
            .map(|_| {
                let body = FramesBody::chunked(split(
                    &Bytes::from_static(br#"{"model":"lora","x":1}"#),
                    6,
                ));
                tokio::spawn(
                    service
                        .clone()
                        .oneshot(Request::post("/").body(body).unwrap()),
                )
            })
            .collect();
        for request in batch {
            let answer = common::collect(request.await.unwrap().unwrap()).await;
            assert_eq!(answer.status, 200);
            let base = answer.header("x-seen-base").unwrap();
            assert!(
                base == "base-a" || base == "base-b",
                "lookup failed during a reload: {base}"
            );
            requests += 1;
        }
    }
    done.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    drop(watcher);
    assert!(
        store.reload_count() >= WANTED_RELOADS,
        "only {} reloads in 10 s",
        store.reload_count()
    );
    assert_eq!(recorder.count(), requests);
    assert_eq!(store.failed_reload_count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An always-ready body of one-byte frames that counts how often it was polled.
struct CountingBody {
    frames: std::collections::VecDeque<Bytes>,
    polls: Arc<std::sync::atomic::AtomicUsize>,
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(self.frames.pop_front().map(|frame| Ok(Frame::data(frame))))
    }
}

#[tokio::test]
async fn an_always_ready_body_does_not_monopolise_the_executor() {
    let body = chat_body("m", 4_000, false);
    let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let request = Request::post("/")
        .body(CountingBody {
            frames: split(&body, 1).into(),
            polls: polls.clone(),
        })
        .unwrap();
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let mut service = recorder.service::<CountingBody>(&layer);
    let service = service.ready().await.unwrap();
    let mut future = std::pin::pin!(tower::Service::call(service, request));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // The first poll reads a bounded number of frames, then yields.
    assert!(future.as_mut().poll(&mut cx).is_pending());
    let first = polls.load(Ordering::Relaxed);
    assert!((1..=256).contains(&first), "{first} frames in one poll");
    // Driving it to the end still forwards everything.
    let answer = common::collect(future.await.unwrap()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-seen-model"), Some("m"));
    assert_eq!(
        answer.header("x-seen-len"),
        Some(body.len().to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_still_uploading_receives_the_refusal() {
    let layer = ModelRoutingLayer::new().limits(Limits::new().with_max_scan_bytes(64 * 1024));
    let recorder = Recorder::default();
    let server = TestServer::start(&layer, &recorder).await;
    // `model` far past the scan limit; the rest of the upload after the
    // refusal fits the default drain budget (1 MiB). Sent chunked and with
    // a length.
    let body = chat_body("m", 1 << 20, false);
    let answer = server
        .send(
            Request::post("/")
                .body(FramesBody::chunked(split(&body, 16 * 1024)))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.error_code(), "request_too_large");
    let answer = server
        .send(
            Request::post("/")
                .body(FramesBody::sized(split(&body, 16 * 1024)))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(recorder.count(), 0);
}

#[tokio::test]
async fn a_refused_upload_is_drained_up_to_the_drain_budget_and_no_further() {
    const FRAME: usize = 16 * 1024;
    const BUDGET: u64 = 256 * 1024;
    let layer = ModelRoutingLayer::new()
        .limits(Limits::new().with_max_scan_bytes(64 * 1024))
        .drain_max_bytes(BUDGET);
    let recorder = Recorder::default();
    // The scan limit is passed in the 5th frame; then the drain reads the
    // rest: at the budget (16 frames) to the body's end, one frame past it
    // stops after the frame that passes the budget.
    for (after_refusal, polls_expected) in [(16, 5 + 16 + 1), (17, 5 + 17), (64, 5 + 17)] {
        let frames: Vec<Bytes> = split(&chat_body("m", 8 << 20, false), FRAME)
            .into_iter()
            .take(5 + after_refusal)
            .collect();
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let request = Request::post("/")
            .body(CountingBody {
                frames: frames.into(),
                polls: polls.clone(),
            })
            .unwrap();
        let answer = oneshot(&layer, &recorder, request).await;
        assert_eq!(answer.status, 413);
        let polls = polls.load(Ordering::Relaxed);
        assert_eq!(
            polls, polls_expected,
            "{after_refusal} frames after the refusal"
        );
    }
    assert_eq!(recorder.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_still_uploading_receives_the_violation_answer() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let server = TestServer::start(&layer, &recorder).await;
    // A second `model` 32 KiB after the first (in a later frame), then
    // 512 KiB more (within the drain budget).
    let pad = "p".repeat(32 << 10);
    let rest = "r".repeat(512 << 10);
    let body = Bytes::from(format!(
        r#"{{"model":"a","pad":"{pad}","model":"b","rest":"{rest}"}}"#
    ));
    for sized in [false, true] {
        let frames = split(&body, 16 * 1024);
        let body = if sized {
            FramesBody::sized(frames)
        } else {
            FramesBody::chunked(frames)
        };
        let answer = server.send(Request::post("/").body(body).unwrap()).await;
        assert_eq!(answer.status, 400, "{answer:?}");
        assert_eq!(answer.error_code(), "invalid_model");
        assert!(recorder.last().violation.is_some());
    }
}

#[tokio::test]
async fn duplicate_key_policies_first_wins_and_last_wins() {
    use bbr_core::DuplicateKeys;
    let body = Bytes::from_static(br#"{"model":"first","messages":[],"model":"last"}"#);
    for (policy, model, held_all) in [
        (DuplicateKeys::FirstWins, "first", false),
        (DuplicateKeys::LastWins, "last", true),
    ] {
        let layer = ModelRoutingLayer::new().limits(Limits::new().with_duplicate_keys(policy));
        let recorder = Recorder::keeping_frames();
        let chunks = split(&body, 8);
        let answer = oneshot(
            &layer,
            &recorder,
            Request::post("/")
                .body(FramesBody::chunked(chunks.clone()))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, 200, "{policy:?}");
        let seen = recorder.last();
        assert_eq!(
            seen.header("x-gateway-model-name"),
            Some(model),
            "{policy:?}"
        );
        assert_same_frames(&seen, &chunks);
        assert_eq!(layer.stats().body_violations(), 0);
        // Last-wins decides only at the end, so the whole body was held
        // (its bytes and an overhead per frame).
        let peak = layer.stats().held_bytes_peak();
        let whole = body.len() as u64 + chunks.len() as u64 * FRAME_OVERHEAD;
        assert_eq!(peak == whole, held_all, "{policy:?}: held {peak}");
    }
}
