//! Tiny frames cost their bytes, not their bookkeeping: a body just under
//! the scan limit, with `model` last, sent as 1-, 7- and 64-byte frames
//! (each its own allocation, as a server hands them out), raises the peak
//! RSS by a small multiple of what the layer accounts as held.
//!
//! Each chunking runs in a child process of this test binary, so the peak
//! RSS (`VmHWM`) it reads belongs to that chunking alone.

use std::pin::Pin;
use std::process::Command;
use std::task::{Context, Poll};

use bbr_core::Limits;
use bbr_tower::{ModelRoutingLayer, ReplayBody};
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};

const SCAN_LIMIT: u64 = 4 << 20;
const CHUNK_ENV: &str = "BBR_MEMORY_CHUNK";
/// Allowed peak RSS growth: this many times the bytes held, plus room for
/// the runtime and allocator slack.
const HELD_MULTIPLE: u64 = 2;
const SLACK_BYTES: u64 = 8 << 20;

/// `{"messages":"aaaa…","model":"m"}`, just under the scan limit, generated
/// `chunk` bytes at a time; every frame is a fresh allocation.
struct TinyFrames {
    body: Bytes,
    at: usize,
    chunk: usize,
}

impl TinyFrames {
    fn new(chunk: usize) -> Self {
        let tail = br#"","model":"m"}"#;
        let mut body = br#"{"messages":""#.to_vec();
        body.resize(SCAN_LIMIT as usize - 1024 - tail.len(), b'a');
        body.extend_from_slice(tail);
        Self {
            body: Bytes::from(body),
            at: 0,
            chunk,
        }
    }
}

impl Body for TinyFrames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let end = (self.at + self.chunk).min(self.body.len());
        if self.at == end {
            return Poll::Ready(None);
        }
        let frame = Bytes::copy_from_slice(&self.body[self.at..end]);
        self.at = end;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.at == self.body.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.body.len() - self.at) as u64)
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

/// One chunking, in a child process (skipped when run directly).
#[test]
fn child_one_chunking() {
    let Some(chunk) = std::env::var(CHUNK_ENV).ok().and_then(|v| v.parse().ok()) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let layer = ModelRoutingLayer::new().limits(Limits::new().with_max_scan_bytes(SCAN_LIMIT));
        let service = layer.layer(tower::service_fn(
            |request: Request<ReplayBody<TinyFrames>>| async move {
                let mut body = request.into_body();
                let mut len = 0u64;
                while let Some(frame) = body.frame().await {
                    len += frame.unwrap().into_data().map_or(0, |d| d.len() as u64);
                }
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                    len.to_string(),
                ))))
            },
        ));
        // The sender's own copy of the body is not the layer's.
        let body = TinyFrames::new(chunk);
        let baseline = peak_rss_bytes();
        let expected = body.body.len();
        let response = service
            .oneshot(Request::post("/").body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let len = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(len, expected.to_string());
        let grown = peak_rss_bytes().saturating_sub(baseline);
        let held = layer.stats().held_bytes_peak();
        println!("MEMORY chunk={chunk} body={expected} held_peak={held} rss_growth={grown}");
    });
}

#[test]
fn tiny_chunkings_cost_a_small_multiple_of_the_bytes_held() {
    let exe = std::env::current_exe().unwrap();
    for chunk in [1, 7, 64] {
        let output = Command::new(&exe)
            .args([
                "--exact",
                "child_one_chunking",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHUNK_ENV, chunk.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "chunk {chunk}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|line| line.find("MEMORY ").map(|at| &line[at..]))
            .unwrap_or_else(|| panic!("no measurement: {stdout}"));
        println!("{line}");
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                .unwrap()
        };
        let (body, held, grown) = (field("body"), field("held_peak"), field("rss_growth"));
        // Everything before the model was held, and accounted.
        assert!(held >= body - 64, "chunk {chunk}: held {held} of {body}");
        assert!(
            grown <= HELD_MULTIPLE * held + SLACK_BYTES,
            "chunk {chunk}: peak RSS grew by {grown} B for {held} B held"
        );
    }
}
