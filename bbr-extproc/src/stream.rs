//! The per-stream state machine: one ext_proc stream (one HTTP request) in,
//! the replies Envoy needs out. Pure and synchronous; the gRPC glue in
//! `server.rs` only moves messages.
//!
//! # What each body mode gets
//!
//! | mode (from `protocol_config`, else the configured default) | request headers reply | body replies |
//! | --- | --- | --- |
//! | `FULL_DUPLEX_STREAMED` | held until the model is decided, then sent with the routing mutation and `clear_route_cache` | the held chunks and every later chunk as `streamed_response` (≤ 62,000 bytes each, same buffers, no copy) |
//! | `STREAMED` with `send_body_without_waiting_for_header_response` | held until decided, as above | one empty `BodyResponse` per chunk (Envoy keeps the bytes; nothing is echoed) |
//! | `STREAMED` without it | sent at once (Envoy sends no body before it), so only spoofed headers are removed: the request cannot be routed by body; configure the flag | one empty `BodyResponse` per chunk |
//! | `BUFFERED` (and `BUFFERED_PARTIAL`) | sent at once, empty | the one body message is the whole body; its reply carries the routing mutation and `clear_route_cache` |
//! | `NONE` | sent at once, spoofed headers removed | — |
//!
//! Trailers end the body like `end_of_stream` does. Response headers, body
//! and trailers are answered at once and never held (in
//! `FULL_DUPLEX_STREAMED` the response body is echoed as it comes).
//!
//! # Decisions where the spec is silent
//!
//! - A request whose body is empty (zero bytes, then end of stream or
//!   trailers) is treated like a request without a body: forwarded untouched
//!   (spoofed routing headers still removed), not a JSON error.
//! - Client-sent `x-gateway-model-name` / `x-gateway-base-model-name` are
//!   always removed or overwritten, whatever the outcome.
//! - The body is never changed, so `content-length` is left as the client
//!   sent it (Envoy keeps it only with `allow_content_length_header: true`,
//!   which the configs in `deploy/envoy/` set).
//! - After the decision the rest of the body is still validated (under the
//!   `reject` duplicate-key policy); a violation ends the stream with an
//!   `ImmediateResponse` 400 instead of the remaining chunks. The body is
//!   not held for this, so the chunks before the violation have reached
//!   the upstream; with a `content-length` the upstream never sees the body
//!   complete (the chunk that completes it is checked to the end first),
//!   without one (HTTP/2 or chunked clients) a violation detected only at
//!   the end of stream (a truncated body) may come after the last byte was
//!   forwarded. The client gets the 400 either way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bbr_core::{Limits, Model, ModelExtractor, Outcome, Progress};
use bytes::Bytes;

use crate::error::{Error, Rejection};
use crate::mutation::{
    self, BASE_MODEL_HEADER, Direction, MODEL_HEADER, ROUTING_HEADERS, body_reply, headers_reply,
    immediate_reply, push_streamed, routing_common, trailers_reply,
};
use crate::proto::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use crate::proto::envoy::service::ext_proc::v3::{
    HeaderMutation, HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse,
    processing_request::Request,
};
use bbr_adapters::AdapterStore;

use crate::routing::RoutingHeaders;

/// How request bodies arrive when Envoy does not say (`protocol_config` is
/// sent by Envoy ≥ 1.33 on the first message of each stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BodyMode {
    /// `FULL_DUPLEX_STREAMED`, what the upstream charts configure. The default.
    #[default]
    FullDuplexStreamed,
    /// `STREAMED` (needs `send_body_without_waiting_for_header_response`).
    Streamed,
    /// `BUFFERED`: the whole body in one message.
    Buffered,
}

impl BodyMode {
    /// Stable name: `full-duplex-streamed`, `streamed` or `buffered`.
    ///
    /// ```
    /// use bbr_extproc::BodyMode;
    /// assert_eq!("buffered".parse::<BodyMode>().unwrap(), BodyMode::Buffered);
    /// assert_eq!(BodyMode::default().as_str(), "full-duplex-streamed");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            BodyMode::FullDuplexStreamed => "full-duplex-streamed",
            BodyMode::Streamed => "streamed",
            BodyMode::Buffered => "buffered",
        }
    }
}

/// A body mode name given to `FromStr` is not one of [`BodyMode`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown body mode `{0}` (expected full-duplex-streamed, streamed or buffered)")]
pub struct UnknownBodyMode(Box<str>);

impl std::str::FromStr for BodyMode {
    type Err = UnknownBodyMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            BodyMode::FullDuplexStreamed,
            BodyMode::Streamed,
            BodyMode::Buffered,
        ]
        .into_iter()
        .find(|mode| mode.as_str() == s)
        .ok_or_else(|| UnknownBodyMode(s.into()))
    }
}

/// What to do with a valid body that has no top-level `model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnMissingModel {
    /// Forward it without the model header. The default.
    #[default]
    PassThrough,
    /// Answer 400 with code `missing_model`.
    Reject,
}

/// Per-process policy shared by every stream.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Settings {
    /// Extraction limits and the duplicate-key policy.
    pub limits: Limits,
    /// Missing-model policy.
    pub on_missing: OnMissingModel,
    /// Body mode assumed when Envoy sends no `protocol_config`.
    pub default_body_mode: BodyMode,
    /// Adapter map for `x-gateway-base-model-name`; `None` sets no base header.
    pub base_models: Option<AdapterStore>,
    /// The headers a decision sets (the plugin chain).
    pub routing: RoutingHeaders,
}

impl Settings {
    /// Default settings with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Sets the missing-model policy.
    #[must_use]
    pub fn on_missing(mut self, policy: OnMissingModel) -> Self {
        self.on_missing = policy;
        self
    }

    /// Sets the body mode assumed without `protocol_config`.
    #[must_use]
    pub fn default_body_mode(mut self, mode: BodyMode) -> Self {
        self.default_body_mode = mode;
        self
    }

    /// Sets the headers a decision sets.
    #[must_use]
    pub fn routing(mut self, routing: RoutingHeaders) -> Self {
        self.routing = routing;
        self
    }

    /// Sets the adapter map.
    #[must_use]
    pub fn base_models(mut self, map: AdapterStore) -> Self {
        self.base_models = Some(map);
        self
    }
}

/// How a request ended, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Routed by this model.
    Found(Model),
    /// A valid body without `model`, forwarded without the header.
    Absent,
    /// No body (GET, empty body, or a body mode that sends none).
    NoBody,
    /// Refused with an HTTP error.
    Rejected(Rejection),
}

impl Verdict {
    /// Stable label: `found`, `absent`, `no_body`, or the error code.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Found(_) => "found",
            Verdict::Absent => "absent",
            Verdict::NoBody => "no_body",
            Verdict::Rejected(r) => r.code(),
        }
    }
}

/// What the stream did, read by the server when the stream ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The final verdict (`None` if the stream ended before one).
    pub verdict: Option<Verdict>,
    /// Body bytes read when the routing decision was taken.
    pub bytes_before_decision: u64,
    /// Time spent inside the extractor (all chunks).
    pub extract_time: Duration,
    /// Time spent building the routing headers once the model was found
    /// (the adapter-map lookup included): the `base-model-to-header`
    /// plugin's share, for `bbr_plugin_duration_seconds`.
    pub header_time: Duration,
    /// The body had an empty `model` (counted like upstream's `field_empty`).
    pub empty_model: bool,
    /// True when a `STREAMED` request arrived without
    /// `send_body_without_waiting_for_header_response`, so it could not be
    /// routed by body.
    pub unroutable_mode: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    Streamed { early_body: bool },
    Buffered,
    FullDuplex,
}

impl Mode {
    fn from_proto(raw: i32) -> Result<Self, Error> {
        match BodySendMode::try_from(raw) {
            Ok(BodySendMode::None) => Ok(Mode::None),
            Ok(BodySendMode::Streamed) => Ok(Mode::Streamed { early_body: false }),
            Ok(BodySendMode::Buffered | BodySendMode::BufferedPartial) => Ok(Mode::Buffered),
            Ok(BodySendMode::FullDuplexStreamed) => Ok(Mode::FullDuplex),
            _ => Err(Error::UnsupportedBodyMode(raw)),
        }
    }

    fn from_default(mode: BodyMode) -> Self {
        match mode {
            BodyMode::FullDuplexStreamed => Mode::FullDuplex,
            // Without protocol_config there is no way to know; assume Envoy
            // is configured as documented.
            BodyMode::Streamed => Mode::Streamed { early_body: true },
            BodyMode::Buffered => Mode::Buffered,
        }
    }
}

/// Where the request side of the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing received yet.
    AwaitHeaders,
    /// Headers reply held until the decision (full duplex, early streamed).
    Holding,
    /// Headers reply sent; body chunks answered as they come.
    Flowing,
    /// `BUFFERED`: headers answered, the whole body comes in one message.
    AwaitBuffered,
    /// `BUFFERED` body answered; only trailers may follow.
    BufferedDone,
    /// Request side complete.
    Ended,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::AwaitHeaders => "awaiting request headers",
            Phase::Holding => "holding the headers reply",
            Phase::Flowing => "streaming the request body",
            Phase::AwaitBuffered => "awaiting the buffered body",
            Phase::BufferedDone => "awaiting request trailers",
            Phase::Ended => "the request was complete",
        }
    }
}

/// The state of one ext_proc stream. Feed each `ProcessingRequest` to
/// [`StreamState::on_request`]; send the replies it pushes, in order.
///
/// ```
/// use bbr_extproc::{Settings, StreamState};
/// use bbr_extproc::proto::envoy::service::ext_proc::v3::{HttpHeaders, ProcessingRequest, processing_request::Request};
///
/// let mut stream = StreamState::new(Settings::default().into());
/// let mut out = Vec::new();
/// // A GET: headers with end_of_stream are answered at once.
/// let get = ProcessingRequest {
///     request: Some(Request::RequestHeaders(HttpHeaders { end_of_stream: true, ..Default::default() })),
///     ..Default::default()
/// };
/// stream.on_request(get, &mut out).unwrap();
/// assert_eq!(out.len(), 1);
/// assert_eq!(stream.report().verdict.as_ref().unwrap().label(), "no_body");
/// ```
#[derive(Debug)]
pub struct StreamState {
    settings: Arc<Settings>,
    extractor: ModelExtractor,
    phase: Phase,
    mode: Mode,
    response_full_duplex: bool,
    spoofed: [bool; 2],
    /// The client sent the configured model header (when it is not one of
    /// the contract's routing headers).
    spoofed_custom: bool,
    /// The client's `content-length`: a sized body is known complete (and
    /// checked to its end) on the chunk that reaches it, before that chunk
    /// is forwarded, even if Envoy signals the end in a later message.
    content_length: Option<u64>,
    /// `finish()` was called: the end of the body was validated.
    body_checked: bool,
    /// Full duplex: chunks held until the decision (`Bytes`, not copied).
    held: Vec<(Bytes, bool)>,
    /// Streamed: body replies owed to Envoy (it holds the bytes itself).
    owed_replies: usize,
    held_bytes: u64,
    decided: bool,
    finished: bool,
    report: Report,
}

impl StreamState {
    /// A new stream.
    pub fn new(settings: Arc<Settings>) -> Self {
        let extractor = ModelExtractor::new(settings.limits);
        Self {
            settings,
            extractor,
            phase: Phase::AwaitHeaders,
            mode: Mode::FullDuplex,
            response_full_duplex: false,
            spoofed: [false; 2],
            spoofed_custom: false,
            content_length: None,
            body_checked: false,
            held: Vec::new(),
            owed_replies: 0,
            held_bytes: 0,
            decided: false,
            finished: false,
            report: Report::default(),
        }
    }

    /// True once an `ImmediateResponse` was sent: the stream should end.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// True while Envoy is owed a reply for something it sent (held headers
    /// or body). After the end of the request body this is always false.
    pub fn is_holding(&self) -> bool {
        !self.finished
            && (!self.held.is_empty() || self.owed_replies > 0 || self.phase == Phase::Holding)
    }

    /// Body bytes currently held by this stream (bounded by the scan limit).
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// What happened so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Handles one message from Envoy, pushing zero or more replies to `out`.
    ///
    /// An `Err` means the conversation is broken (unknown or out-of-order
    /// message): end the stream with the error's gRPC status.
    pub fn on_request(
        &mut self,
        request: ProcessingRequest,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Error> {
        if self.finished {
            // After an ImmediateResponse Envoy no longer listens.
            return Ok(());
        }
        if request.observability_mode {
            // Envoy only observes: it expects no replies and applies none.
            let mut ignored = Vec::new();
            let result = self.on_message(request, &mut ignored);
            return result;
        }
        self.on_message(request, out)
    }

    fn on_message(
        &mut self,
        request: ProcessingRequest,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Error> {
        let Some(message) = request.request else {
            return Err(Error::UnknownRequestType);
        };
        match message {
            Request::RequestHeaders(headers) => {
                self.learn_modes(&request.protocol_config)?;
                self.on_request_headers(&headers, out)
            }
            Request::RequestBody(body) => self.on_request_body(body, out),
            Request::RequestTrailers(_) => self.on_request_trailers(out),
            Request::ResponseHeaders(_) => {
                out.push(headers_reply(Direction::Response, None));
                Ok(())
            }
            Request::ResponseBody(body) => {
                if self.response_full_duplex {
                    push_streamed(out, Direction::Response, &body.body, body.end_of_stream);
                } else {
                    out.push(body_reply(Direction::Response, None));
                }
                Ok(())
            }
            Request::ResponseTrailers(_) => {
                out.push(trailers_reply(Direction::Response));
                Ok(())
            }
        }
    }

    fn learn_modes(
        &mut self,
        config: &Option<crate::proto::envoy::service::ext_proc::v3::ProtocolConfiguration>,
    ) -> Result<(), Error> {
        match config {
            Some(config) => {
                self.mode = match Mode::from_proto(config.request_body_mode)? {
                    Mode::Streamed { .. } => Mode::Streamed {
                        early_body: config.send_body_without_waiting_for_header_response,
                    },
                    other => other,
                };
                self.response_full_duplex =
                    config.response_body_mode == BodySendMode::FullDuplexStreamed as i32;
            }
            None => {
                self.mode = Mode::from_default(self.settings.default_body_mode);
                self.response_full_duplex = self.mode == Mode::FullDuplex;
            }
        }
        Ok(())
    }

    fn unexpected(&self, got: &'static str) -> Error {
        Error::UnexpectedMessage {
            got,
            state: self.phase.name(),
        }
    }

    fn on_request_headers(
        &mut self,
        headers: &HttpHeaders,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Error> {
        if self.phase != Phase::AwaitHeaders {
            return Err(self.unexpected("request headers"));
        }
        if let Some(map) = &headers.headers {
            for header in &map.headers {
                for (i, name) in ROUTING_HEADERS.iter().enumerate() {
                    if header.key.eq_ignore_ascii_case(name) {
                        self.spoofed[i] = true;
                    }
                }
                if self.settings.routing.is_custom_model_header(&header.key) {
                    self.spoofed_custom = true;
                }
                if header.key.eq_ignore_ascii_case("content-length") {
                    let value: &[u8] = if header.raw_value.is_empty() {
                        header.value.as_bytes()
                    } else {
                        &header.raw_value
                    };
                    self.content_length = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok());
                }
            }
        }
        if headers.end_of_stream {
            self.decide_without_body(out);
            return Ok(());
        }
        match self.mode {
            Mode::None => self.decide_without_body(out),
            Mode::Buffered => {
                out.push(headers_reply(Direction::Request, None));
                self.phase = Phase::AwaitBuffered;
            }
            Mode::Streamed { early_body: false } => {
                // Envoy sends no body before this reply, so the route cannot
                // wait for the model; at least strip spoofed headers.
                self.report.unroutable_mode = true;
                out.push(headers_reply(
                    Direction::Request,
                    routing_common(self.strip_spoofed()),
                ));
                self.phase = Phase::Flowing;
            }
            Mode::Streamed { early_body: true } | Mode::FullDuplex => self.phase = Phase::Holding,
        }
        Ok(())
    }

    fn decide_without_body(&mut self, out: &mut Vec<ProcessingResponse>) {
        self.decided = true;
        self.report.verdict = Some(Verdict::NoBody);
        out.push(headers_reply(
            Direction::Request,
            routing_common(self.strip_spoofed()),
        ));
        self.phase = Phase::Ended;
    }

    fn on_request_body(
        &mut self,
        body: HttpBody,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Error> {
        match self.phase {
            Phase::AwaitBuffered => self.on_buffered_body(body, out),
            Phase::Holding | Phase::Flowing => self.on_streamed_body(body, out),
            Phase::AwaitHeaders | Phase::BufferedDone | Phase::Ended => {
                Err(self.unexpected("request body"))
            }
        }
    }

    /// `BUFFERED`: the one body message is the whole body (trailers may
    /// still follow, so `end_of_stream` may be false).
    fn on_buffered_body(
        &mut self,
        body: HttpBody,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Error> {
        self.phase = if body.end_of_stream {
            Phase::Ended
        } else {
            Phase::BufferedDone
        };
        if body.body.is_empty() {
            self.decided = true;
            self.report.verdict = Some(Verdict::NoBody);
            out.push(body_reply(
                Direction::Request,
                routing_common(self.strip_spoofed()),
            ));
            return Ok(());
        }
        let result = self.feed(&body.body).and_then(|_| self.finish());
        match result.and_then(|outcome| self.accept(outcome)) {
            Ok(mutation) => {
                out.push(body_reply(Direction::Request, routing_common(mutation)));
            }
            Err(rejection) => self.reject(rejection, out),
        }
        Ok(())
    }

    /// `FULL_DUPLEX_STREAMED` and `STREAMED`.
    fn on_streamed_body(
        &mut self,
        body: HttpBody,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Error> {
        let HttpBody {
            body: chunk,
            end_of_stream,
            ..
        } = body;
        let verdict = self.scan_chunk(&chunk, end_of_stream);
        if let Err(rejection) = verdict {
            self.reject(rejection, out);
            return Ok(());
        }
        if end_of_stream {
            self.phase = Phase::Ended;
        }
        match verdict {
            Ok(Some(mutation)) => {
                // Decided on this chunk: release everything in order.
                self.hold(chunk, end_of_stream);
                self.release(mutation, out);
            }
            Ok(None) if self.decided || self.phase == Phase::Flowing => {
                self.forward(chunk, end_of_stream, out);
            }
            Ok(None) => self.hold(chunk, end_of_stream),
            Err(_) => unreachable!("handled above"),
        }
        Ok(())
    }

    fn on_request_trailers(&mut self, out: &mut Vec<ProcessingResponse>) -> Result<(), Error> {
        match self.phase {
            Phase::Holding | Phase::Flowing => {
                self.phase = Phase::Ended;
                match self.scan_end() {
                    Err(rejection) => {
                        self.reject(rejection, out);
                        return Ok(());
                    }
                    Ok(Some(mutation)) => self.release(mutation, out),
                    Ok(None) => {}
                }
            }
            Phase::AwaitBuffered => {
                // Trailers without a body.
                self.phase = Phase::Ended;
                self.decided = true;
                self.report.verdict = Some(Verdict::NoBody);
                out.push(body_reply(
                    Direction::Request,
                    routing_common(self.strip_spoofed()),
                ));
            }
            Phase::BufferedDone => self.phase = Phase::Ended,
            Phase::AwaitHeaders | Phase::Ended => return Err(self.unexpected("request trailers")),
        }
        out.push(trailers_reply(Direction::Request));
        Ok(())
    }

    /// Feeds one streamed chunk; `Ok(Some(mutation))` when this chunk took
    /// the routing decision.
    fn scan_chunk(
        &mut self,
        chunk: &Bytes,
        end_of_stream: bool,
    ) -> Result<Option<HeaderMutation>, Rejection> {
        if self.body_checked && chunk.is_empty() {
            // The end of stream after a sized body was already checked.
            return Ok(None);
        }
        let progress = self.feed(chunk)?;
        let mut decision = match progress {
            Progress::Found(model) if !self.decided => Some(self.accept(Outcome::Found(model))?),
            Progress::Absent if !self.decided => Some(self.accept(Outcome::Absent)?),
            _ => None,
        };
        if !self.decided {
            // Memory per stream is bounded by the scan limit, whatever the
            // duplicate-key policy.
            let limit = self.settings.limits.max_scan_bytes();
            if self.held_bytes + chunk.len() as u64 > limit
                && !matches!(self.mode, Mode::Streamed { .. })
            {
                return Err(bbr_core::ExtractError::new(
                    bbr_core::ErrorKind::ScanLimit { limit },
                    self.extractor.bytes_consumed(),
                )
                .into());
            }
        }
        let complete = end_of_stream
            || self
                .content_length
                .is_some_and(|length| self.extractor.bytes_consumed() >= length);
        if complete && let Some(end) = self.scan_end()? {
            decision = Some(end);
        }
        Ok(decision)
    }

    /// End of the request body: the final verdict, or the validation of the
    /// tail after an earlier decision.
    fn scan_end(&mut self) -> Result<Option<HeaderMutation>, Rejection> {
        if std::mem::replace(&mut self.body_checked, true) {
            return Ok(None);
        }
        if !self.decided && self.extractor.bytes_consumed() == 0 {
            self.decided = true;
            self.report.verdict = Some(Verdict::NoBody);
            return Ok(Some(self.strip_spoofed()));
        }
        let outcome = self.finish()?;
        if self.decided {
            return Ok(None);
        }
        self.accept(outcome).map(Some)
    }

    fn feed(&mut self, chunk: &Bytes) -> Result<Progress, Rejection> {
        let start = Instant::now();
        let result = self.extractor.feed(chunk);
        self.report.extract_time += start.elapsed();
        result.map_err(|e| self.note_error(e))
    }

    fn finish(&mut self) -> Result<Outcome, Rejection> {
        let start = Instant::now();
        let result = self.extractor.finish();
        self.report.extract_time += start.elapsed();
        result.map_err(|e| self.note_error(e))
    }

    fn note_error(&mut self, error: bbr_core::ExtractError) -> Rejection {
        if error.kind() == bbr_core::ErrorKind::EmptyModel {
            self.report.empty_model = true;
        }
        Rejection::Extract(error)
    }

    /// Takes the routing decision and builds its header mutation.
    fn accept(&mut self, outcome: Outcome) -> Result<HeaderMutation, Rejection> {
        self.decided = true;
        self.report.bytes_before_decision = self.extractor.bytes_consumed();
        match outcome {
            Outcome::Found(model) => {
                let start = Instant::now();
                let mutation = self.model_mutation(&model);
                self.report.header_time = start.elapsed();
                self.report.verdict = Some(Verdict::Found(model));
                Ok(mutation)
            }
            Outcome::Absent if self.settings.on_missing == OnMissingModel::Reject => {
                Err(Rejection::MissingModel)
            }
            Outcome::Absent => {
                self.report.verdict = Some(Verdict::Absent);
                Ok(self.strip_spoofed())
            }
            // `Outcome` is non-exhaustive: a future kind of outcome routes
            // nothing.
            _ => {
                self.report.verdict = Some(Verdict::Absent);
                Ok(self.strip_spoofed())
            }
        }
    }

    fn model_mutation(&self, model: &Model) -> HeaderMutation {
        let routing = &self.settings.routing;
        let mut set_headers = Vec::new();
        let mut remove_headers = Vec::new();
        match routing.model() {
            Some(header) => {
                set_headers.push(mutation::set_header(header, model.bytes().clone()));
                if header != MODEL_HEADER && self.spoofed[0] {
                    remove_headers.push(MODEL_HEADER.to_owned());
                }
            }
            None if self.spoofed[0] => remove_headers.push(MODEL_HEADER.to_owned()),
            None => {}
        }
        let base = match &self.settings.base_models {
            Some(map) if routing.base_model() => map.lookup(model.as_str()),
            _ => None,
        };
        match base {
            Some(base) => set_headers.push(mutation::set_header(
                BASE_MODEL_HEADER,
                Bytes::copy_from_slice(base.as_bytes()),
            )),
            None if self.spoofed[1] => remove_headers.push(BASE_MODEL_HEADER.to_owned()),
            None => {}
        }
        HeaderMutation {
            set_headers,
            remove_headers,
        }
    }

    fn strip_spoofed(&self) -> HeaderMutation {
        let custom = self
            .settings
            .routing
            .model()
            .filter(|_| self.spoofed_custom);
        HeaderMutation {
            set_headers: Vec::new(),
            remove_headers: ROUTING_HEADERS
                .iter()
                .zip(self.spoofed)
                .filter(|(_, sent)| *sent)
                .map(|(name, _)| *name)
                .chain(custom)
                .map(str::to_owned)
                .collect(),
        }
    }

    fn hold(&mut self, chunk: Bytes, end_of_stream: bool) {
        self.held_bytes += chunk.len() as u64;
        match self.mode {
            Mode::FullDuplex => self.held.push((chunk, end_of_stream)),
            _ => self.owed_replies += 1,
        }
    }

    /// Sends the held headers reply with `mutation`, then every held chunk.
    fn release(&mut self, mutation: HeaderMutation, out: &mut Vec<ProcessingResponse>) {
        let common = routing_common(mutation);
        if self.report.unroutable_mode {
            // Headers already went upstream; nothing to mutate any more.
        } else {
            out.push(headers_reply(Direction::Request, common));
        }
        for (chunk, end_of_stream) in std::mem::take(&mut self.held) {
            push_streamed(out, Direction::Request, &chunk, end_of_stream);
        }
        for _ in 0..std::mem::take(&mut self.owed_replies) {
            out.push(body_reply(Direction::Request, None));
        }
        self.held_bytes = 0;
        if self.phase == Phase::Holding {
            self.phase = Phase::Flowing;
        }
    }

    fn forward(&mut self, chunk: Bytes, end_of_stream: bool, out: &mut Vec<ProcessingResponse>) {
        match self.mode {
            Mode::FullDuplex => push_streamed(out, Direction::Request, &chunk, end_of_stream),
            _ => out.push(body_reply(Direction::Request, None)),
        }
    }

    fn reject(&mut self, rejection: Rejection, out: &mut Vec<ProcessingResponse>) {
        self.decided = true;
        if self.report.bytes_before_decision == 0 {
            self.report.bytes_before_decision = self.extractor.bytes_consumed();
        }
        out.push(immediate_reply(rejection.immediate_response()));
        self.report.verdict = Some(Verdict::Rejected(rejection));
        self.held.clear();
        self.owed_replies = 0;
        self.held_bytes = 0;
        self.finished = true;
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
