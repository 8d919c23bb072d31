//! The `replay_body` check: a body through the bbr-tower layer (default
//! policy) over a recording inner service.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bbr_core::contract::MODEL_HEADER;
use bbr_core::{Limits, Outcome, extract_model};
use bbr_tower::{BodyViolation, ModelRoutingLayer, ReplayBody};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use tower_layer::Layer;
use tower_service::Service;

use crate::{MAX_INPUT, Split};

/// A request body handing out prepared frames, then optional trailers.
#[derive(Debug)]
struct FramedBody {
    frames: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for FramedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.frames.iter().map(|f| f.len() as u64).sum())
    }
}

/// What the inner service saw.
#[derive(Debug, Default)]
struct Seen {
    called: bool,
    model_header: Option<HeaderValue>,
    frames: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    violation: Option<bbr_core::ExtractError>,
    other_error: Option<String>,
}

/// Reads the whole forwarded body, frame by frame, and records it.
#[derive(Debug, Clone)]
struct Recorder(Arc<Mutex<Seen>>);

impl Service<Request<ReplayBody<FramedBody>>> for Recorder {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReplayBody<FramedBody>>) -> Self::Future {
        let seen = self.0.clone();
        Box::pin(async move {
            let model_header = request.headers().get(MODEL_HEADER).cloned();
            let mut body = request.into_body();
            let mut record = Seen {
                called: true,
                model_header,
                ..Seen::default()
            };
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => record.frames.push(data),
                        Err(frame) => record.trailers = frame.into_trailers().ok(),
                    },
                    Err(error) => {
                        match BodyViolation::find(error.as_ref()) {
                            Some(violation) => record.violation = violation.error().cloned(),
                            None => record.other_error = Some(error.to_string()),
                        }
                        break;
                    }
                }
            }
            *seen.lock().expect("not poisoned") = record;
            Ok(Response::new(Empty::new()))
        })
    }
}

/// Polls a future that never waits on I/O to completion.
fn complete<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..100_000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
    panic!("an in-memory request did not complete");
}

/// Sends `frames` (and `trailers`) through the layer over a [`Recorder`];
/// returns the response status and what the inner service saw.
fn run_layer(frames: &[Bytes], trailers: Option<HeaderMap>) -> (StatusCode, Seen) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut service = ModelRoutingLayer::new().layer(Recorder(seen.clone()));
    let request = Request::post("/v1/chat/completions")
        .body(FramedBody {
            frames: frames.iter().cloned().collect(),
            trailers,
        })
        .expect("static request parts");
    let response = complete(async {
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .expect("recorder is always ready");
        service.call(request).await.expect("the layer answers")
    });
    let seen = std::mem::take(&mut *seen.lock().expect("not poisoned"));
    (response.status(), seen)
}

/// The `replay_body` target. Input: the [`Split`] header of
/// `extract_chunked` (bit 5 of the flags byte adds trailers), then the body.
///
/// Checks, against the one-shot verdict of `extract_model` on the whole
/// body (default limits, `reject`):
///
/// - an empty body is forwarded untouched (no header, no frame);
/// - found: the inner service gets the header with that model and exactly
///   the input frames (same `Bytes`, same boundaries) and trailers;
/// - absent: the same frames and trailers, without the header;
/// - an error: either the layer answers 400/413 itself and never calls the
///   inner service, or the inner service sees a prefix of the input frames
///   ended by a `BodyViolation` carrying the same error (kind and offset).
pub fn check_replay(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Some(split) = Split::parse(data) else {
        return;
    };
    let with_trailers = data[0] & 0x20 != 0;
    let body = Bytes::copy_from_slice(split.body);
    let frames: Vec<Bytes> = split
        .chunks(&body)
        .into_iter()
        .filter(|f| !f.is_empty())
        .collect();
    let trailers = with_trailers.then(|| {
        let mut t = HeaderMap::new();
        t.insert("x-checksum", HeaderValue::from_static("fuzz"));
        t
    });

    let (status, seen) = run_layer(&frames, trailers.clone());
    let verdict = extract_model(&body, &Limits::new());

    // The same bytes in the same order; the first frames as the client's
    // own `Bytes` (the layer coalesces tiny held frames past those).
    let same_bytes = |got: &[Bytes], want: &[Bytes], prefix: bool| {
        let got_bytes: Vec<u8> = got.iter().flat_map(|f| f.iter().copied()).collect();
        let want_bytes: Vec<u8> = want.iter().flat_map(|f| f.iter().copied()).collect();
        let bytes_match = if prefix {
            want_bytes.starts_with(&got_bytes)
        } else {
            got_bytes == want_bytes
        };
        bytes_match
            && got
                .iter()
                .zip(want)
                .take(bbr_tower::ZERO_COPY_FRAMES)
                .all(|(g, w)| g.as_ptr() == w.as_ptr() && g.len() == w.len())
    };

    if body.is_empty() {
        assert!(seen.called, "an empty body is forwarded");
        assert!(seen.model_header.is_none() && seen.frames.is_empty());
        return;
    }
    match &verdict {
        Ok(outcome) => {
            assert!(
                seen.called,
                "a valid body reaches the inner service (status {status})"
            );
            assert_eq!(seen.violation, None, "valid body ended with a violation");
            assert_eq!(seen.other_error, None);
            // Compared as bytes: a non-ASCII model is a valid (opaque)
            // header value, which `to_str` would refuse.
            assert_eq!(
                seen.model_header.as_ref().map(HeaderValue::as_bytes),
                outcome.model().map(|m| m.as_bytes()),
                "model header"
            );
            if let Outcome::Absent = outcome {
                assert!(seen.model_header.is_none());
            }
            assert!(
                same_bytes(&seen.frames, &frames, false),
                "frames differ from the input"
            );
            assert_eq!(seen.trailers, trailers, "trailers");
        }
        Err(error) => {
            if seen.called {
                let violation = seen.violation.as_ref().unwrap_or_else(|| {
                    panic!("invalid body ({error}) forwarded without a violation")
                });
                assert_eq!(
                    violation, error,
                    "violation differs from the one-shot error"
                );
                assert!(seen.frames.len() <= frames.len(), "more frames than sent");
                assert!(
                    same_bytes(&seen.frames, &frames, true),
                    "forwarded frames are not a prefix of the input"
                );
            } else {
                let expected = match error.kind().class() {
                    bbr_core::ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::BAD_REQUEST,
                };
                assert_eq!(status, expected, "refusal status for {error}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(body: &'static [u8], size: usize) -> Vec<Bytes> {
        let body = Bytes::from_static(body);
        (0..body.len())
            .step_by(size)
            .map(|i| body.slice(i..(i + size).min(body.len())))
            .collect()
    }

    #[test]
    fn found_model_reaches_the_inner_service_with_the_same_frames() {
        let frames = frames_of(br#"{"model":"m","messages":[]}"#, 5);
        let (status, seen) = run_layer(&frames, None);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            seen.model_header.as_ref().map(HeaderValue::as_bytes),
            Some(&b"m"[..])
        );
        assert_eq!(seen.frames, frames);
        assert_eq!(seen.frames[1].as_ptr(), frames[1].as_ptr());
    }

    #[test]
    fn duplicate_after_the_decision_ends_the_forwarded_body_with_a_violation() {
        let frames = frames_of(br#"{"model":"a","x":1,"model":"b"}"#, 4);
        let (_, seen) = run_layer(&frames, None);
        assert!(seen.called);
        let violation = seen.violation.expect("a violation");
        assert_eq!(violation.kind().as_str(), "duplicate_model");
        assert!(seen.frames.len() < frames.len());
    }

    #[test]
    fn invalid_json_before_the_decision_is_refused_without_calling_the_service() {
        let frames = frames_of(br#"{"messages":[,"model":"m"}"#, 3);
        let (status, seen) = run_layer(&frames, None);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(!seen.called);
    }
}
