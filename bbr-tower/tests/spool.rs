//! The disk spool (feature `spool`): held bytes past the memory threshold go
//! to a temp file and come back in order, byte for byte, with the trailers;
//! they count against the disk cap, not the memory cap.
#![cfg(feature = "spool")]

mod common;

use bbr_core::Limits;
use bbr_core::spool::SpoolConfig;
use bbr_tower::ModelRoutingLayer;
use bytes::Bytes;
use common::{FramesBody, Recorder, oneshot, split};
use http::{HeaderMap, Request};

const THRESHOLD: u64 = 1024;

/// A JSON body of `len` bytes with `model` last.
fn model_last(len: usize) -> Bytes {
    let head = br#"{"prompt":""#;
    let tail = br#"","model":"food-review-1"}"#;
    let mut body = head.to_vec();
    body.extend((0..len - head.len() - tail.len()).map(|i| b'a' + (i % 26) as u8));
    body.extend_from_slice(tail);
    Bytes::from(body)
}

fn layer(threshold: u64) -> ModelRoutingLayer {
    ModelRoutingLayer::new().spool(SpoolConfig::new().with_memory_threshold(threshold))
}

fn trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    trailers
}

#[tokio::test]
async fn spooled_bytes_come_back_in_order_byte_identical_with_the_trailers() {
    let body = model_last(300_000);
    // Frames of every kind: tiny ones (coalesced on the way to disk), odd
    // sizes, and large ones.
    let mut frames = split(&body.slice(..2048), 1);
    frames.extend(split(&body.slice(2048..100_000), 7_001));
    frames.extend(split(&body.slice(100_000..), 65_536));
    let layer = layer(THRESHOLD);
    let stats = layer.stats();
    let recorder = Recorder::keeping_frames();
    let request = Request::post("/v1/completions")
        .body(FramesBody::chunked(frames.clone()).with_trailers(trailers()))
        .unwrap();
    let answer = oneshot(&layer, &recorder, request).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = recorder.last();
    assert_eq!(seen.header("x-gateway-model-name"), Some("food-review-1"));
    assert_eq!(seen.frames.concat(), body);
    assert_eq!(seen.trailers, Some(trailers()));
    assert!(seen.violation.is_none() && seen.other_error.is_none());
    // The frames held in memory before the threshold are the client's
    // own (no copy); the first of them are handed out as they came.
    for (forwarded, sent) in seen.frames.iter().zip(&frames).take(16) {
        assert_eq!(forwarded.as_ptr(), sent.as_ptr());
    }
    assert_eq!(stats.spooled_requests(), 1);
    // Everything read back: no disk or memory left accounted.
    assert_eq!((stats.spooled_bytes(), stats.held_bytes()), (0, 0));
}

#[tokio::test]
async fn a_body_under_the_threshold_is_not_spooled_and_not_copied() {
    let body = model_last(THRESHOLD as usize);
    let frames = split(&body, 100);
    let layer = layer(THRESHOLD);
    let stats = layer.stats();
    let recorder = Recorder::keeping_frames();
    let request = Request::post("/")
        .body(FramesBody::sized(frames.clone()))
        .unwrap();
    assert_eq!(oneshot(&layer, &recorder, request).await.status, 200);
    let seen = recorder.last();
    assert_eq!(seen.frames.concat(), body);
    for (forwarded, sent) in seen.frames.iter().zip(&frames).take(16) {
        assert_eq!(forwarded.as_ptr(), sent.as_ptr());
    }
    assert_eq!(stats.spooled_requests(), 0);
}

/// Sends a model-last body whose spooled part is `spooled` bytes through a
/// layer whose disk cap is `cap`.
async fn spool_against_cap(spooled: usize, cap: u64) -> (common::Answer, Recorder) {
    let body = model_last(THRESHOLD as usize + spooled);
    let layer = layer(THRESHOLD).max_spooled_bytes(cap);
    let recorder = Recorder::default();
    let request = Request::post("/")
        .body(FramesBody::chunked(split(&body, 512)))
        .unwrap();
    (oneshot(&layer, &recorder, request).await, recorder)
}

#[tokio::test]
async fn the_disk_cap_admits_a_body_at_it_and_refuses_one_byte_past_it_with_503() {
    let spooled = 100_000;
    let (answer, recorder) = spool_against_cap(spooled, spooled as u64).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(recorder.last().len, THRESHOLD + spooled as u64);

    let (answer, recorder) = spool_against_cap(spooled + 1, spooled as u64).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.error_json()["error"]["code"], "overloaded");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(recorder.count(), 0, "refused before the inner service");
}

#[tokio::test]
async fn spooled_bytes_do_not_count_against_the_memory_cap() {
    // 8 MiB with `model` last through a layer that may hold 1 MiB of memory.
    let body = model_last(8 << 20);
    let layer = layer(256 << 10)
        .max_held_bytes(1 << 20)
        .limits(Limits::new().with_max_scan_bytes(16 << 20));
    let stats = layer.stats();
    let recorder = Recorder::default();
    let request = Request::post("/")
        .body(FramesBody::chunked(split(&body, 64 << 10)))
        .unwrap();
    let answer = oneshot(&layer, &recorder, request).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(recorder.last().sha256, common::sha256_bytes(&body));
    assert_eq!(stats.overloaded(), 0);
    assert!(stats.held_bytes_peak() <= 1 << 20);

    // Without the spool the same body is over the memory cap.
    let layer = ModelRoutingLayer::new()
        .max_held_bytes(1 << 20)
        .limits(Limits::new().with_max_scan_bytes(16 << 20));
    let request = Request::post("/")
        .body(FramesBody::chunked(split(&body, 64 << 10)))
        .unwrap();
    assert_eq!(oneshot(&layer, &recorder, request).await.status, 503);
}

#[tokio::test]
async fn a_spool_directory_that_cannot_hold_files_refuses_with_503() {
    let missing = std::env::temp_dir().join("bbr-tower-no-such-spool-dir/nested");
    let layer = ModelRoutingLayer::new().spool(
        SpoolConfig::new()
            .with_memory_threshold(THRESHOLD)
            .with_dir(missing),
    );
    let recorder = Recorder::default();
    let request = Request::post("/")
        .body(FramesBody::chunked(split(&model_last(10_000), 512)))
        .unwrap();
    let answer = oneshot(&layer, &recorder, request).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.error_json()["error"]["code"], "overloaded");
    assert_eq!(recorder.count(), 0);
}

#[tokio::test]
async fn the_scan_limit_still_applies_to_spooled_bytes() {
    let body = model_last(64 << 10);
    let layer = layer(THRESHOLD).limits(Limits::new().with_max_scan_bytes(32 << 10));
    let recorder = Recorder::default();
    let request = Request::post("/")
        .body(FramesBody::chunked(split(&body, 4096)))
        .unwrap();
    let answer = oneshot(&layer, &recorder, request).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.error_code(), "request_too_large");
}
