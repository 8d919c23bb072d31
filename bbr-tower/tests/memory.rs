//! A 64 MiB body streams through the layer byte for byte while resident
//! memory stays bounded by the scan limit, not by the body.
//!
//! One test in its own binary, so the process-wide peak RSS (`VmHWM`) it
//! reads belongs to it alone.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};

use bbr_core::Limits;
use bbr_tower::ModelRoutingLayer;
use bytes::Bytes;
use common::{Recorder, TestServer, oneshot};
use http::Request;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

const BODY_BYTES: u64 = 64 << 20;
const FRAME_BYTES: usize = 64 << 10;
const SCAN_LIMIT: u64 = 4 << 20;
/// Room for runtime, socket buffers and allocator slack on top of what the
/// layer may hold (the scan limit plus one frame).
const SLACK_BYTES: u64 = 12 << 20;

/// Generates a chat body of exactly `BODY_BYTES` on the fly: the model
/// after `content_before_model` bytes of a first message, then a long
/// second message. Every content frame is a slice of one shared pattern, so
/// the sender itself holds nothing.
struct GeneratedBody {
    frames: std::vec::IntoIter<Bytes>,
    remaining: u64,
}

fn frames(pattern: &Bytes, content_before_model: usize) -> Vec<Bytes> {
    let head = Bytes::from_static(br#"{"messages":[{"role":"developer","content":""#);
    let middle = Bytes::from_static(br#""}],"model":"food-review-1","prompt":""#);
    let tail = Bytes::from_static(br#""}"#);
    let fixed = (head.len() + middle.len() + tail.len()) as u64;
    let mut out = vec![head];
    let push_content = |out: &mut Vec<Bytes>, mut len: usize| {
        while len > 0 {
            let take = len.min(FRAME_BYTES).min(pattern.len());
            out.push(pattern.slice(..take));
            len -= take;
        }
    };
    push_content(&mut out, content_before_model);
    out.push(middle);
    push_content(
        &mut out,
        (BODY_BYTES - fixed) as usize - content_before_model,
    );
    out.push(tail);
    out
}

impl GeneratedBody {
    fn new(pattern: &Bytes, content_before_model: usize) -> Self {
        Self {
            frames: frames(pattern, content_before_model).into_iter(),
            remaining: BODY_BYTES,
        }
    }
}

impl Body for GeneratedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = self.frames.next();
        if let Some(frame) = &frame {
            self.remaining -= frame.len() as u64;
        }
        Poll::Ready(frame.map(|frame| Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}

#[test]
fn sixty_four_mib_body_is_forwarded_identically_with_bounded_memory() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Content bytes that need no JSON escaping.
    let pattern = Bytes::from(
        (0..1 << 20)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let expected: Vec<(usize, String)> = [0, 3 << 20]
        .into_iter()
        .map(|before| {
            let mut hasher = Sha256::new();
            for frame in frames(&pattern, before) {
                hasher.update(&frame);
            }
            (before, common::hex(&hasher.finalize()))
        })
        .collect();
    runtime.block_on(async {
        let layer = ModelRoutingLayer::new().limits(Limits::new().with_max_scan_bytes(SCAN_LIMIT));
        let recorder = Recorder::default();
        let server = TestServer::start(&layer, &recorder).await;
        // Warm up runtime, connection and allocator paths before the baseline.
        let warm = server.send(Request::post("/").body(http_body_util::Full::new(Bytes::from_static(br#"{"model":"m"}"#))).unwrap()).await;
        assert_eq!(warm.status, 200);
        let baseline = peak_rss_bytes();

        for (before, hash) in &expected {
            let answer = oneshot(&layer, &recorder, Request::post("/").body(GeneratedBody::new(&pattern, *before)).unwrap()).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            let seen = recorder.last();
            assert_eq!(seen.header("x-gateway-model-name"), Some("food-review-1"));
            assert_eq!(seen.len, BODY_BYTES);
            assert_eq!(&common::hex(&seen.sha256), hash, "oneshot, model after {before} bytes");

            let answer = server.send(Request::post("/").body(GeneratedBody::new(&pattern, *before)).unwrap()).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            assert_eq!(answer.header("x-seen-model"), Some("food-review-1"));
            assert_eq!(answer.header("x-seen-len"), Some(BODY_BYTES.to_string().as_str()));
            assert_eq!(answer.header("x-seen-sha256"), Some(hash.as_str()), "hyper, model after {before} bytes");
        }

        let held_peak = layer.stats().held_bytes_peak();
        let grown = peak_rss_bytes().saturating_sub(baseline);
        println!("64 MiB bodies: peak held by the layer {held_peak} B, peak RSS growth {grown} B (scan limit {SCAN_LIMIT} B)");
        assert!(held_peak >= 3 << 20, "the model-late body was held up to its model: {held_peak}");
        assert!(held_peak <= SCAN_LIMIT + FRAME_BYTES as u64, "held {held_peak} B, more than the scan limit plus a frame");
        assert!(grown <= SCAN_LIMIT + FRAME_BYTES as u64 + SLACK_BYTES, "peak RSS grew by {grown} B for 64 MiB bodies");
    });
}
