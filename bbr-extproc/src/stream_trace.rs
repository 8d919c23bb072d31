//! A hook for one span per ext_proc stream (one HTTP request), with no
//! tracing dependency: the binary's `otlp` feature implements it with
//! OpenTelemetry; a library user may implement it with anything.
//!
//! The server calls the [`StreamTracer`] when the request headers arrive,
//! sets the [`StreamSpan::propagation`] headers on the request to the
//! upstream (added to the request headers reply, so they reach the
//! upstream in every body mode; a request refused before that reply gets
//! none) and ends the span with what the stream decided ([`StreamEnd`]).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use bbr_extproc::proto::envoy::config::core::v3::HeaderMap;
//! use bbr_extproc::{BbrExtProc, Metrics, Settings, StreamEnd, StreamSpan, StreamTracer};
//!
//! /// Counts streams by outcome.
//! #[derive(Debug, Default)]
//! struct Outcomes(Arc<Mutex<Vec<String>>>);
//! struct Recorder(Arc<Mutex<Vec<String>>>);
//!
//! impl StreamTracer for Outcomes {
//!     fn start(&self, _request_headers: &HeaderMap) -> Box<dyn StreamSpan> {
//!         Box::new(Recorder(self.0.clone()))
//!     }
//! }
//! impl StreamSpan for Recorder {
//!     fn propagation(&self) -> Vec<(String, String)> {
//!         vec![("x-request-seen".into(), "1".into())]
//!     }
//!     fn end(self: Box<Self>, end: &StreamEnd<'_>) {
//!         let label = end.report.verdict.as_ref().map_or("none", |v| v.label());
//!         self.0.lock().unwrap().push(label.to_owned());
//!     }
//! }
//!
//! let processor = BbrExtProc::new(Arc::new(Settings::default()), Arc::new(Metrics::new()))
//!     .with_stream_tracer(Arc::new(Outcomes::default()));
//! # let _ = processor;
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bbr_core::contract::BASE_MODEL_HEADER;

use crate::mutation::set_header;
use crate::proto::envoy::config::core::v3::HeaderMap;
use crate::proto::envoy::service::ext_proc::v3::{
    CommonResponse, HeaderMutation, ProcessingRequest, ProcessingResponse, processing_request,
    processing_response,
};
use crate::stream::Report;

/// Opens the span of each ext_proc stream.
pub trait StreamTracer: Send + Sync + fmt::Debug {
    /// The span of a stream whose request headers (as Envoy sent them,
    /// lower-case names) are `request_headers`: e.g. a child of their
    /// `traceparent`.
    fn start(&self, request_headers: &HeaderMap) -> Box<dyn StreamSpan>;
}

/// The span of one stream, from its request headers to its end.
pub trait StreamSpan: Send {
    /// Headers set (replacing any the client sent) on the request to the
    /// upstream, e.g. `traceparent` naming this span. Empty: none.
    fn propagation(&self) -> Vec<(String, String)>;

    /// The stream ended.
    fn end(self: Box<Self>, end: &StreamEnd<'_>);
}

/// What a stream did, for its span.
#[derive(Debug)]
#[non_exhaustive]
pub struct StreamEnd<'a> {
    /// The state machine's report (verdict, body bytes read before the
    /// decision, extractor time).
    pub report: &'a Report,
    /// The `x-gateway-base-model-name` value set on the request, if any.
    pub base_model: Option<&'a str>,
    /// From the request headers to the routing decision (`None`: the
    /// stream ended undecided).
    pub decision_latency: Option<Duration>,
}

/// The server's per-stream glue around an optional [`StreamTracer`]: a
/// no-op without one.
pub(crate) struct StreamTrace {
    tracer: Option<Arc<dyn StreamTracer>>,
    span: Option<Box<dyn StreamSpan>>,
    /// Headers still to add to the request headers reply.
    pending: Vec<(String, String)>,
    started: Option<Instant>,
    decision_latency: Option<Duration>,
    base_model: Option<String>,
}

impl StreamTrace {
    pub(crate) fn new(tracer: Option<Arc<dyn StreamTracer>>) -> Self {
        Self {
            tracer,
            span: None,
            pending: Vec::new(),
            started: None,
            decision_latency: None,
            base_model: None,
        }
    }

    /// Before the state machine sees `message`: the request headers open
    /// the span.
    pub(crate) fn on_message(&mut self, message: &ProcessingRequest) {
        let Some(tracer) = &self.tracer else { return };
        if self.span.is_some() {
            return;
        }
        if let Some(processing_request::Request::RequestHeaders(headers)) = &message.request {
            let empty = HeaderMap::default();
            let span = tracer.start(headers.headers.as_ref().unwrap_or(&empty));
            self.pending = span.propagation();
            self.span = Some(span);
            self.started = Some(Instant::now());
        }
    }

    /// After the state machine answered: notes the decision and adds the
    /// propagation headers to the request headers reply when it leaves.
    pub(crate) fn on_replies(&mut self, replies: &mut [ProcessingResponse], report: &Report) {
        if self.span.is_none() {
            return;
        }
        if self.decision_latency.is_none()
            && report.verdict.is_some()
            && let Some(started) = self.started
        {
            self.decision_latency = Some(started.elapsed());
        }
        for reply in replies.iter_mut() {
            let common = match &mut reply.response {
                Some(processing_response::Response::RequestHeaders(r)) => {
                    if !self.pending.is_empty() {
                        let mutation = r
                            .response
                            .get_or_insert_with(CommonResponse::default)
                            .header_mutation
                            .get_or_insert_with(HeaderMutation::default);
                        for (name, value) in self.pending.drain(..) {
                            mutation.set_headers.push(set_header(&name, value.into()));
                        }
                    }
                    r.response.as_ref()
                }
                Some(processing_response::Response::RequestBody(r)) => r.response.as_ref(),
                _ => None,
            };
            if let Some(value) = common.and_then(base_model_set) {
                self.base_model = Some(value);
            }
        }
    }

    /// The stream ended: ends its span.
    pub(crate) fn finish(self, report: &Report) {
        if let Some(span) = self.span {
            span.end(&StreamEnd {
                report,
                base_model: self.base_model.as_deref(),
                decision_latency: self.decision_latency,
            });
        }
    }
}

/// The base-model header a reply sets, if it does.
fn base_model_set(common: &CommonResponse) -> Option<String> {
    common
        .header_mutation
        .as_ref()?
        .set_headers
        .iter()
        .filter_map(|option| option.header.as_ref())
        .find(|header| header.key.eq_ignore_ascii_case(BASE_MODEL_HEADER))
        .map(|header| String::from_utf8_lossy(&header.raw_value).into_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::proto::envoy::config::core::v3::HeaderValue;
    use crate::proto::envoy::service::ext_proc::v3::{HeadersResponse, HttpHeaders};
    use crate::stream::Verdict;

    /// Each ended span: (base model, decided).
    type Ended = Arc<Mutex<Vec<(Option<String>, bool)>>>;

    #[derive(Debug, Default)]
    struct Recording {
        ended: Ended,
    }
    struct RecordingSpan(Ended);
    impl StreamTracer for Recording {
        fn start(&self, request_headers: &HeaderMap) -> Box<dyn StreamSpan> {
            assert_eq!(request_headers.headers[0].key, "traceparent");
            Box::new(RecordingSpan(self.ended.clone()))
        }
    }
    impl StreamSpan for RecordingSpan {
        fn propagation(&self) -> Vec<(String, String)> {
            vec![("traceparent".into(), "00-ours".into())]
        }
        fn end(self: Box<Self>, end: &StreamEnd<'_>) {
            let base = end.base_model.map(str::to_owned);
            self.0
                .lock()
                .unwrap()
                .push((base, end.decision_latency.is_some()));
        }
    }

    fn headers_message() -> ProcessingRequest {
        ProcessingRequest {
            request: Some(processing_request::Request::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![HeaderValue {
                        key: "traceparent".into(),
                        raw_value: "00-theirs".into(),
                        ..HeaderValue::default()
                    }],
                }),
                ..HttpHeaders::default()
            })),
            ..ProcessingRequest::default()
        }
    }

    fn headers_reply(common: Option<CommonResponse>) -> ProcessingResponse {
        ProcessingResponse {
            response: Some(processing_response::Response::RequestHeaders(
                HeadersResponse { response: common },
            )),
            ..ProcessingResponse::default()
        }
    }

    fn set_headers(reply: &ProcessingResponse) -> Vec<(String, Vec<u8>)> {
        let Some(processing_response::Response::RequestHeaders(r)) = &reply.response else {
            panic!("not a request headers reply");
        };
        r.response
            .as_ref()
            .and_then(|c| c.header_mutation.as_ref())
            .map(|m| {
                m.set_headers
                    .iter()
                    .map(|o| {
                        let h = o.header.as_ref().unwrap();
                        (h.key.clone(), h.raw_value.to_vec())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn propagation_goes_on_the_first_request_headers_reply_only() {
        let tracer = Recording::default();
        let ended = tracer.ended.clone();
        let mut trace = StreamTrace::new(Some(Arc::new(tracer)));
        trace.on_message(&headers_message());
        let mut report = Report::default();
        // Nothing decided yet and no headers reply (held): nothing added.
        trace.on_replies(&mut [], &report);
        let routed = HeaderMutation {
            set_headers: vec![set_header(BASE_MODEL_HEADER, "llama".into())],
            ..HeaderMutation::default()
        };
        let mut replies = [
            headers_reply(Some(CommonResponse {
                header_mutation: Some(routed),
                ..CommonResponse::default()
            })),
            headers_reply(None),
        ];
        report.verdict = Some(Verdict::Absent);
        trace.on_replies(&mut replies, &report);
        assert_eq!(
            set_headers(&replies[0]),
            [
                (BASE_MODEL_HEADER.to_owned(), b"llama".to_vec()),
                ("traceparent".to_owned(), b"00-ours".to_vec())
            ]
        );
        assert_eq!(set_headers(&replies[1]), []);
        // A second request headers message (none in a real stream) opens no span.
        trace.on_message(&headers_message());
        trace.finish(&report);
        assert_eq!(*ended.lock().unwrap(), [(Some("llama".to_owned()), true)]);
    }

    #[test]
    fn a_reply_without_common_response_gets_one() {
        let mut trace = StreamTrace::new(Some(Arc::new(Recording::default())));
        trace.on_message(&headers_message());
        let mut replies = [headers_reply(None)];
        trace.on_replies(&mut replies, &Report::default());
        assert_eq!(
            set_headers(&replies[0]),
            [("traceparent".to_owned(), b"00-ours".to_vec())]
        );
    }

    #[test]
    fn without_a_tracer_replies_are_untouched() {
        let mut trace = StreamTrace::new(None);
        trace.on_message(&headers_message());
        let mut replies = [headers_reply(None)];
        trace.on_replies(&mut replies, &Report::default());
        assert_eq!(replies[0], headers_reply(None));
        trace.finish(&Report::default());
    }

    #[test]
    fn an_undecided_stream_ends_without_latency() {
        let tracer = Recording::default();
        let ended = tracer.ended.clone();
        let mut trace = StreamTrace::new(Some(Arc::new(tracer)));
        trace.on_message(&headers_message());
        trace.on_replies(&mut [], &Report::default());
        trace.finish(&Report::default());
        assert_eq!(*ended.lock().unwrap(), [(None, false)]);
    }
}
