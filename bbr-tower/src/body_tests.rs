//! The replay body as a synchronous state machine, polled with a no-op waker.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bbr_core::contract::{ClientHeaders, MODEL_HEADER, Refusal};
use bbr_core::{BodyExtractor, ErrorKind, Limits};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::ReplayBody;
use crate::body::Handoff;
use crate::counters::{Counters, Reservation};
use crate::error::{BodyViolation, BoxError};
use crate::scan::{Scan, Step};

/// Hands out its frames, then `None` once; panics if polled after that.
#[derive(Debug)]
struct StrictBody {
    frames: VecDeque<Frame<Bytes>>,
    ended: bool,
    exact: bool,
}

impl StrictBody {
    fn new(chunks: &[&'static [u8]], exact: bool) -> Self {
        Self {
            frames: chunks
                .iter()
                .map(|c| Frame::data(Bytes::from_static(c)))
                .collect(),
            ended: false,
            exact,
        }
    }
}

impl Body for StrictBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        assert!(!self.ended, "polled after it ended");
        let frame = self.frames.pop_front();
        if frame.is_none() {
            self.ended = true;
        }
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.exact && self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        let len = self
            .frames
            .iter()
            .filter_map(Frame::data_ref)
            .map(|d| d.len() as u64)
            .sum();
        if self.exact {
            SizeHint::with_exact(len)
        } else {
            SizeHint::new()
        }
    }
}

/// A replay body whose scan read `held` (and decided on it).
fn replay(held: &[&'static [u8]], rest: StrictBody) -> (ReplayBody<StrictBody>, Arc<Counters>) {
    let (body, counters, _) = replay_with(held, rest, ClientHeaders::Strip);
    (body, counters)
}

fn replay_with(
    held: &[&'static [u8]],
    rest: StrictBody,
    client_headers: ClientHeaders,
) -> (ReplayBody<StrictBody>, Arc<Counters>, Handoff<StrictBody>) {
    let counters = Arc::new(Counters::default());
    let mut scan = Scan::new(
        BodyExtractor::for_content(None, None, Limits::new()),
        client_headers,
        Reservation::new(counters.clone(), u64::MAX),
    );
    for chunk in held {
        assert!(!matches!(
            scan.push(Frame::data(Bytes::from_static(chunk))),
            Step::Failed(_)
        ));
    }
    let handoff: Handoff<StrictBody> = Arc::default();
    (
        ReplayBody::replay(
            scan.into_held(),
            rest,
            client_headers,
            Some(handoff.clone()),
        ),
        counters,
        handoff,
    )
}

type Polled = Option<Result<Frame<Bytes>, BoxError>>;

fn poll(body: &mut ReplayBody<StrictBody>) -> Polled {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(body).poll_frame(&mut cx) {
        Poll::Ready(frame) => frame,
        Poll::Pending => panic!("test bodies are always ready"),
    }
}

fn data(polled: Polled) -> Bytes {
    polled
        .expect("a frame")
        .expect("not an error")
        .into_data()
        .expect("a data frame")
}

fn violation(polled: Polled) -> BodyViolation {
    let error = polled.expect("a frame").expect_err("an error");
    BodyViolation::find(&*error)
        .expect("a BodyViolation")
        .clone()
}

#[test]
fn held_frames_come_first_then_the_rest_and_the_inner_body_is_not_polled_after_its_end() {
    let (mut body, counters) = replay(
        &[b"{\"model\":", b"\"m\","],
        StrictBody::new(&[b"\"x\":1", b"}"], false),
    );
    assert_eq!(body.held_bytes(), 13);
    assert_eq!(&data(poll(&mut body))[..], b"{\"model\":");
    assert_eq!(&data(poll(&mut body))[..], b"\"m\",");
    assert_eq!(body.held_bytes(), 0);
    assert_eq!(&data(poll(&mut body))[..], b"\"x\":1");
    assert_eq!(&data(poll(&mut body))[..], b"}");
    assert!(
        !body.is_end_stream(),
        "unknown until the inner body says so"
    );
    assert!(poll(&mut body).is_none());
    assert!(body.is_end_stream());
    // StrictBody panics if polled again; the replay body must not.
    assert!(poll(&mut body).is_none());
    assert_eq!(counters.violations_for_tests(), 0);
}

#[test]
fn an_exact_body_ends_with_its_last_frame() {
    let (mut body, _) = replay(
        &[b"{\"model\":\"m\""],
        StrictBody::new(&[b",\"x\":1}"], true),
    );
    assert_eq!(body.size_hint().exact(), Some(12 + 7));
    let _ = data(poll(&mut body));
    assert_eq!(body.size_hint().exact(), Some(7));
    let _ = data(poll(&mut body));
    assert!(
        body.is_end_stream(),
        "finished and checked with the last frame"
    );
    assert_eq!(body.size_hint().exact(), Some(0));
}

#[test]
fn size_hint_adds_held_bytes_to_the_inner_hint() {
    let (body, _) = replay(&[b"{\"model\":\"m\""], StrictBody::new(&[b"}"], false));
    let hint = body.size_hint();
    assert_eq!((hint.lower(), hint.upper()), (12, None));
}

#[test]
fn a_truncated_exact_body_is_refused_in_place_of_its_last_frame() {
    let (mut body, counters) = replay(&[b"{\"model\":\"m\""], StrictBody::new(&[b",\"x\":"], true));
    let _ = data(poll(&mut body));
    let violation = violation(poll(&mut body));
    assert_eq!(violation.error().unwrap().kind(), ErrorKind::UnexpectedEnd);
    assert!(body.is_end_stream());
    assert!(poll(&mut body).is_none());
    assert_eq!(counters.violations_for_tests(), 1);
}

#[test]
fn a_truncated_body_of_unknown_length_is_refused_at_its_end() {
    let (mut body, counters) = replay(
        &[b"{\"model\":\"m\""],
        StrictBody::new(&[b",\"x\":"], false),
    );
    let _ = data(poll(&mut body));
    assert_eq!(&data(poll(&mut body))[..], b",\"x\":");
    assert_eq!(
        violation(poll(&mut body)).error().unwrap().kind(),
        ErrorKind::UnexpectedEnd
    );
    assert!(poll(&mut body).is_none());
    assert_eq!(counters.violations_for_tests(), 1);
}

#[test]
fn a_second_model_replaces_its_frame_with_a_violation() {
    let (mut body, counters) = replay(
        &[b"{\"model\":\"a\","],
        StrictBody::new(&[b"\"model\":\"b\"}"], false),
    );
    let _ = data(poll(&mut body));
    assert_eq!(
        violation(poll(&mut body)).error().unwrap().kind(),
        ErrorKind::DuplicateModel
    );
    assert!(poll(&mut body).is_none());
    assert_eq!(counters.violations_for_tests(), 1);
}

#[test]
fn a_pass_through_body_checks_nothing() {
    let mut body = ReplayBody::new(StrictBody::new(&[b"not json"], true));
    assert_eq!(body.size_hint().exact(), Some(8));
    assert_eq!(&data(poll(&mut body))[..], b"not json");
    assert!(body.is_end_stream());
}

impl StrictBody {
    fn with_trailers(mut self, trailers: http::HeaderMap) -> Self {
        self.frames.push_back(Frame::trailers(trailers));
        self
    }
}

fn spoofed_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("1"));
    trailers.insert("X-Gateway-Model-Name", http::HeaderValue::from_static("a"));
    trailers.insert(
        "x_gateway_base_model_name",
        http::HeaderValue::from_static("b"),
    );
    trailers
}

#[test]
fn routing_headers_are_stripped_from_trailers_after_the_decision() {
    let (mut body, counters) = replay(
        &[b"{\"model\":\"m\""],
        StrictBody::new(&[b"}"], false).with_trailers(spoofed_trailers()),
    );
    let _ = data(poll(&mut body));
    let _ = data(poll(&mut body));
    let trailers = poll(&mut body)
        .expect("a frame")
        .expect("not an error")
        .into_trailers()
        .expect("trailers");
    assert_eq!(trailers.len(), 1, "{trailers:?}");
    assert_eq!(trailers["x-checksum"], "1");
    assert!(poll(&mut body).is_none());
    assert_eq!(counters.violations_for_tests(), 0);
}

#[test]
fn routing_headers_in_trailers_end_the_body_under_reject() {
    let (mut body, counters, _) = replay_with(
        &[b"{\"model\":\"m\""],
        StrictBody::new(&[b"}"], false).with_trailers(spoofed_trailers()),
        ClientHeaders::Reject,
    );
    let _ = data(poll(&mut body));
    let _ = data(poll(&mut body));
    let violation = violation(poll(&mut body));
    assert_eq!(violation.refusal(), &Refusal::RoutingHeader(MODEL_HEADER));
    assert_eq!(violation.status(), 400);
    assert!(poll(&mut body).is_none());
    assert_eq!(counters.violations_for_tests(), 1);
}

#[test]
fn a_violation_ends_the_body_at_once_and_hands_the_rest_of_the_upload_to_the_layer() {
    let (mut body, _, handoff) = replay_with(
        &[b"{\"model\":\"a\","],
        StrictBody::new(&[b"\"model\":\"b\",", b"\"rest\":1", b"}"], false),
        ClientHeaders::Strip,
    );
    let _ = data(poll(&mut body));
    assert!(handoff.lock().unwrap().is_none());
    assert_eq!(
        violation(poll(&mut body)).error().unwrap().kind(),
        ErrorKind::DuplicateModel
    );
    // Not drained here: the rest waits for the layer, untouched.
    let rest = handoff.lock().unwrap().take().expect("handed off");
    assert_eq!(rest.frames.len(), 2);
    assert!(poll(&mut body).is_none());
}
