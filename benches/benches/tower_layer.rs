//! Benchmark group `tower_layer`: what the bbr-tower layer adds to one
//! request, measured over an in-memory echo service with and without the
//! layer, on the same bodies in the same run.
//!
//! Ids are `tower_layer/<with_layer|without_layer>/<shape>/<size>/<position>`.
//! The request body arrives as 16 KiB frames (what hyper hands over from a
//! socket); the echo service reads every frame and answers the same frames
//! back (no copy) with the model header it saw, and the response body is
//! read frame by frame. Both
//! variants do exactly that; the difference is the layer: header guard,
//! reading until the decision, replaying the held frames, and checking the
//! rest of the body as it streams through (default `Reject` policy).
//!
//! Before measuring, each variant checks that the echo equals the body, and
//! the layered one that the header names [`MODEL`].
//!
//! The futures never wait on I/O, so they are polled to completion with a
//! no-op waker: no runtime overhead in either variant.
//!
//! Goals (issue "bbr-tower", Benchmark): at most 2 µs added per 1 KiB
//! request; with the model last in 1 MiB, no worse than the bbr-core scan
//! time (`extract/bbr_reject/chat/1MiB/last`) plus 10%.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bbr_benches::{BodySpec, Chunking, KIB, MIB, MODEL, Position, Shape, chunks};
use bbr_core::contract::MODEL_HEADER;
use bbr_tower::ModelRoutingLayer;
use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput};
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};

/// A request body handing over prepared frames, all ready at once.
#[derive(Debug, Clone)]
struct FramedBody {
    frames: VecDeque<Bytes>,
    remaining: u64,
}

impl FramedBody {
    fn new(frames: Vec<Bytes>) -> Self {
        let remaining = frames.iter().map(|f| f.len() as u64).sum();
        Self {
            frames: frames.into(),
            remaining,
        }
    }
}

impl Body for FramedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = self.frames.pop_front();
        if let Some(data) = &frame {
            self.remaining -= data.len() as u64;
        }
        Poll::Ready(frame.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads the whole request body frame by frame and answers the same frames
/// back (no copy), with the model header it received (if any).
async fn echo<B>(request: Request<B>) -> Result<Response<FramedBody>, BoxError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let model = request.headers().get(MODEL_HEADER).cloned();
    let mut body = request.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(Into::into)?.into_data() {
            frames.push(data);
        }
    }
    let mut response = Response::new(FramedBody::new(frames));
    if let Some(model) = model {
        response.headers_mut().insert(MODEL_HEADER, model);
    }
    Ok(response)
}

/// Polls a future that never waits on I/O to completion.
fn complete<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
    panic!("an in-memory request did not complete");
}

/// Sends one request through `service` and reads the whole response, frame
/// by frame (the frames are kept, not concatenated).
fn roundtrip<S, ResBody>(service: &S, frames: Vec<Bytes>) -> (Option<HeaderValue>, Vec<Bytes>)
where
    S: Service<Request<FramedBody>, Response = Response<ResBody>> + Clone,
    S::Error: std::fmt::Debug,
    ResBody: Body<Data = Bytes> + Unpin,
    ResBody::Error: std::fmt::Debug,
{
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(FramedBody::new(frames))
        .expect("static request parts");
    complete(async {
        let response = service
            .clone()
            .oneshot(request)
            .await
            .expect("echo answers");
        let model = response.headers().get(MODEL_HEADER).cloned();
        let mut body = response.into_body();
        let mut echoed = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("in-memory body").into_data() {
                echoed.push(data);
            }
        }
        (model, echoed)
    })
}

fn tower_layer(c: &mut Criterion) {
    let quick = std::env::var("BBR_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut group = c.benchmark_group("tower_layer");
    if quick {
        group
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10);
    }
    let without_layer = tower::service_fn(echo::<FramedBody>);
    let with_layer = ModelRoutingLayer::new().layer(tower::service_fn(echo));

    for size in [KIB, MIB] {
        for position in Position::ALL {
            let spec = BodySpec::new(Shape::Chat, position, size);
            let body = spec.build();
            let frames = chunks(&body, Chunking::CHUNK_16K);
            let label = spec.label();
            group.throughput(Throughput::Bytes(body.len() as u64));
            if !quick {
                group.sample_size(if size >= MIB { 20 } else { 100 });
            }

            let (header, echoed) = roundtrip(&without_layer, frames.clone());
            assert_eq!(
                echoed.concat(),
                body,
                "without_layer on {label}: echo differs"
            );
            assert_eq!(header, None, "without_layer on {label}: unexpected header");
            let (header, echoed) = roundtrip(&with_layer, frames.clone());
            assert_eq!(echoed.concat(), body, "with_layer on {label}: echo differs");
            assert_eq!(
                header.as_ref().and_then(|h| h.to_str().ok()),
                Some(MODEL),
                "with_layer on {label}: model header"
            );

            group.bench_function(format!("without_layer/{label}"), |b| {
                b.iter_batched(
                    || frames.clone(),
                    |frames| black_box(roundtrip(&without_layer, frames)),
                    BatchSize::SmallInput,
                );
            });
            group.bench_function(format!("with_layer/{label}"), |b| {
                b.iter_batched(
                    || frames.clone(),
                    |frames| black_box(roundtrip(&with_layer, frames)),
                    BatchSize::SmallInput,
                );
            });
        }
    }
    group.finish();
}

criterion::criterion_group!(benches, tower_layer);
criterion::criterion_main!(benches);
