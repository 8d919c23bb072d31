//! The response future: reads frames until the decision, then calls the
//! inner service; drains refused uploads.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bbr_core::contract::{BASE_MODEL_HEADER, MODEL_HEADER, MissingModel, Refusal};
use bbr_core::{BodyExtractor, ErrorKind, ExtractError};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::blocking::Blocking;
use crate::body::{Handoff, ReplayBody, ResponseBody};
use crate::config::Config;
use crate::counters::Reservation;
use crate::deadline::Deadline;
use crate::drain::{Drain, FRAMES_PER_POLL};
use crate::error::BoxError;
use crate::error_body::{ErrorBody, refusal_response};
use crate::extension::ModelName;
use crate::scan::{Decision, Scan, Step};
use crate::trace::debug_event;

const MODEL: HeaderName = HeaderName::from_static(MODEL_HEADER);
const BASE_MODEL: HeaderName = HeaderName::from_static(BASE_MODEL_HEADER);

pin_project! {
    /// Response future of [`ModelRouting`](crate::ModelRouting).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S, B, S::Future, S::Response>,
    }
}

/// Everything the reading phase needs, taken whole at the decision.
struct Reading<S, B> {
    /// The ready inner service, called once the model is decided.
    service: S,
    parts: http::request::Parts,
    body: B,
    scan: Scan,
    /// Started at the first body byte.
    deadline: Option<Deadline>,
    config: Arc<Config>,
    /// The spool write that runs (at most one per request).
    write: Option<Blocking<bbr_core::spool::SpoolWritten>>,
    /// A decision made while a spool write ran: it waits for the write.
    decided: Option<Result<Decision, Refusal>>,
}

/// What goes out once a drain is over.
enum Answer<R> {
    Refused(Response<ErrorBody>),
    Inner(R),
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, F, R> {
        Reading {
            // `None` only while moving on to the next state.
            reading: Option<Reading<S, B>>,
        },
        Calling {
            #[pin]
            future: F,
            // Where the replay body leaves an upload refused mid-body.
            handoff: Option<Handoff<B>>,
            config: Option<Arc<Config>>,
        },
        // The rest of a refused upload is read and dropped (within the drain
        // budget) before the answer goes out.
        Answering {
            answer: Option<Answer<R>>,
            drain: Option<Drain<B>>,
        },
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Reading { .. } => "reading",
            State::Calling { .. } => "calling",
            State::Answering { .. } => "answering",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
    B: Body<Data = Bytes> + Unpin,
{
    pub(crate) fn reading(
        service: S,
        request: Request<B>,
        extractor: BodyExtractor,
        config: Arc<Config>,
    ) -> Self {
        let (parts, body) = request.into_parts();
        let reservation = Reservation::new(config.counters.clone(), config.max_held_bytes);
        let mut scan = Scan::new(extractor, config.client_headers, reservation);
        if let Some(spool) = &config.spool {
            let disk = Reservation::disk(config.counters.clone(), config.max_spooled_bytes);
            scan = scan.with_spool(bbr_core::spool::Spool::new(spool.clone()), disk);
        }
        Self {
            state: State::Reading {
                reading: Some(Reading {
                    service,
                    parts,
                    body,
                    scan,
                    deadline: None,
                    config,
                    write: None,
                    decided: None,
                }),
            },
        }
    }

    pub(crate) fn called(future: S::Future) -> Self {
        Self {
            state: State::Calling {
                future,
                handoff: None,
                config: None,
            },
        }
    }

    /// Answers `refusal`, after draining `body` when it is still sending.
    pub(crate) fn refused(refusal: &Refusal, body: Option<B>, config: &Config) -> Self {
        Self {
            state: State::Answering {
                answer: Some(Answer::Refused(refusal_response(refusal))),
                drain: body
                    .filter(|body| !body.is_end_stream())
                    .map(|body| Drain::new(body, config.drain)),
            },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResBody>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Calling {
                    future,
                    handoff,
                    config,
                } => {
                    let response = ready!(future.poll(cx))?;
                    // The replay body refused the upload mid-body: drain the
                    // rest now that the inner service answered.
                    let rest = handoff.take().and_then(|handoff| {
                        handoff
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .take()
                    });
                    match (rest, config.take()) {
                        (Some(body), Some(config)) => State::Answering {
                            answer: Some(Answer::Inner(response)),
                            drain: Some(Drain::new(body, config.drain)),
                        },
                        _ => return Poll::Ready(Ok(response.map(ResponseBody::inner))),
                    }
                }
                StateProj::Answering { answer, drain } => {
                    if let Some(body) = drain.as_mut() {
                        ready!(body.poll(cx));
                        *drain = None;
                    }
                    let response = match answer
                        .take()
                        .expect("ResponseFuture polled after completion")
                    {
                        Answer::Refused(response) => response.map(ResponseBody::refused),
                        Answer::Inner(response) => response.map(ResponseBody::inner),
                    };
                    return Poll::Ready(Ok(response));
                }
                StateProj::Reading { reading } => {
                    let state = reading.as_mut().expect("reading until the decision");
                    let decision = ready!(poll_decision(cx, state));
                    let reading = reading.take().expect("reading until the decision");
                    decide(reading, decision)
                }
            };
            this.state.set(next);
        }
    }
}

/// The state after the decision: the inner service called, or a refusal.
fn decide<S, B>(
    reading: Reading<S, B>,
    decision: Result<Decision, Refusal>,
) -> State<S, B, S::Future, S::Response>
where
    S: Service<Request<ReplayBody<B>>>,
    B: Body<Data = Bytes> + Unpin,
{
    let Reading {
        mut service,
        mut parts,
        body,
        scan,
        config,
        ..
    } = reading;
    let held_cost = scan.held_cost();
    let failed_body = matches!(decision, Err(Refusal::BodyRead { .. }));
    let ended = scan.ended();
    match decision.and_then(|decision| apply_decision(decision, &mut parts, &config, &scan)) {
        Ok(rewrite) => {
            let handoff = (!ended).then(|| Arc::new(Mutex::new(None)));
            #[cfg_attr(not(feature = "adapters"), allow(unused_mut))]
            let mut held = scan.into_held();
            #[cfg(feature = "adapters")]
            if let Some(mut rewrite) = rewrite {
                let original = held.bytes;
                // The span lies in the held frames (the decision was made
                // by its closing quote) and was checked by the extractor:
                // a splice error would be a bug, and the held frames would
                // be half spliced; refuse rather than forward that.
                if crate::rewrite::splice_held(&mut held, &mut rewrite.splicer).is_err() {
                    return refuse(
                        ExtractError::new(ErrorKind::InvalidJson, original).into(),
                        &config,
                        0,
                        true,
                        body,
                    );
                }
                let length = parts
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
                if let Some(length) = length {
                    parts.headers.insert(
                        http::header::CONTENT_LENGTH,
                        HeaderValue::from(rewrite.splicer.spliced_len(length)),
                    );
                }
            }
            #[cfg(not(feature = "adapters"))]
            let () = rewrite;
            let body = ReplayBody::replay(held, body, config.client_headers, handoff.clone());
            State::Calling {
                future: service.call(Request::from_parts(parts, body)),
                handoff,
                config: Some(config),
            }
        }
        Err(refusal) => {
            // Free what was held before draining.
            drop(scan);
            refuse(refusal, &config, held_cost, !failed_body && !ended, body)
        }
    }
}

/// The refusal state: the answer, and the rest of the upload drained when
/// `drain` (the body can still be read).
fn refuse<S, B>(
    refusal: Refusal,
    config: &Config,
    held_cost: u64,
    drain: bool,
    body: B,
) -> State<S, B, S::Future, S::Response>
where
    S: Service<Request<ReplayBody<B>>>,
    B: Body<Data = Bytes> + Unpin,
{
    config.counters.record_refused(held_cost);
    if matches!(refusal, Refusal::DecisionTimeout { .. }) {
        config.counters.record_decision_timeout();
    }
    debug_event!(code = refusal.code(), held_cost, error = %refusal, "request refused");
    let rest = (drain && !body.is_end_stream()).then_some(body);
    State::Answering {
        answer: Some(Answer::Refused(refusal_response(&refusal))),
        drain: rest.map(|body| Drain::new(body, config.drain)),
    }
}

/// The rewrite decided with the headers (feature `adapters`), if any.
#[cfg(feature = "adapters")]
type MaybeRewrite = Option<crate::rewrite::Rewrite>;
#[cfg(not(feature = "adapters"))]
type MaybeRewrite = ();
#[cfg(feature = "adapters")]
const NO_REWRITE: MaybeRewrite = None;
#[cfg(not(feature = "adapters"))]
const NO_REWRITE: MaybeRewrite = ();

#[cfg(feature = "adapters")]
const REQUESTED_MODEL: HeaderName =
    HeaderName::from_static(bbr_core::contract::REQUESTED_MODEL_HEADER);

/// Polls frames into the scan until it decides, fails, or runs out of time;
/// runs the scan's spool writes meanwhile, one at a time, and waits for the
/// one running before it answers a decision (the file is then complete).
fn poll_decision<S, B>(
    cx: &mut Context<'_>,
    reading: &mut Reading<S, B>,
) -> Poll<Result<Decision, Refusal>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let Reading {
        body,
        scan,
        deadline,
        config,
        write,
        decided,
        ..
    } = reading;
    let timeout = |deadline: &mut Option<Deadline>, cx: &mut Context<'_>| {
        deadline
            .as_mut()
            .is_some_and(|deadline| deadline.poll_expired(cx))
            .then_some(Refusal::DecisionTimeout {
                deadline: config.decision_deadline,
            })
    };
    for _ in 0..FRAMES_PER_POLL {
        if let Some(running) = write.as_mut()
            && let Poll::Ready(done) = running.poll(cx)
        {
            *write = None;
            if let Err(refusal) = scan.write_done(done) {
                return Poll::Ready(Err(refusal));
            }
        }
        // After the decision the chunks not written stay in memory.
        if write.is_none()
            && decided.is_none()
            && let Some(job) = scan.next_write()
        {
            *write = Some(crate::blocking::spawn(move || job.run()));
            // Polled at the top, which registers the waker.
            continue;
        }
        if write.is_some() && (decided.is_some() || scan.must_wait()) {
            // Woken by the write (polled above).
            if let Some(refusal) = timeout(deadline, cx) {
                return Poll::Ready(Err(refusal));
            }
            return Poll::Pending;
        }
        if let Some(decision) = decided.take() {
            return Poll::Ready(decision);
        }
        let polled = match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(polled) => polled,
            Poll::Pending => {
                if let Some(refusal) = timeout(deadline, cx) {
                    return Poll::Ready(Err(refusal));
                }
                return Poll::Pending;
            }
        };
        let step = match polled {
            Some(Ok(frame)) => {
                if deadline.is_none() && frame.data_ref().is_some_and(|data| !data.is_empty()) {
                    *deadline = Some(Deadline::after(config.decision_deadline));
                }
                scan.push(frame)
            }
            Some(Err(_)) => {
                // The body's own error may say anything; the contract's
                // message names only the offset.
                return Poll::Ready(Err(Refusal::BodyRead {
                    offset: scan.held_bytes(),
                }));
            }
            None => scan.end(),
        };
        match step {
            Step::NeedMore => {}
            Step::Decided(decision) => {
                // A body that is already complete is checked whole before
                // any of it is forwarded: an upstream must never receive a
                // complete body that the contract refuses (a truncated tail
                // in the frame that decided, say).
                if !scan.ended()
                    && body.is_end_stream()
                    && let Step::Failed(refusal) = scan.end()
                {
                    return Poll::Ready(Err(refusal));
                }
                if write.is_none() {
                    return Poll::Ready(Ok(decision));
                }
                *decided = Some(Ok(decision));
            }
            Step::Failed(refusal) => return Poll::Ready(Err(refusal)),
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// Sets the headers and extensions for a decision, or refuses it.
fn apply_decision(
    decision: Decision,
    parts: &mut http::request::Parts,
    config: &Config,
    scan: &Scan,
) -> Result<MaybeRewrite, Refusal> {
    let held_cost = scan.held_cost();
    #[cfg_attr(not(feature = "adapters"), allow(unused_mut, clippy::let_unit_value))]
    let mut rewrite = NO_REWRITE;
    #[cfg(feature = "adapters")]
    if config.rewrites.is_some() {
        // Only the layer says what was requested.
        parts.headers.remove(REQUESTED_MODEL);
    }
    match decision {
        #[cfg_attr(not(feature = "adapters"), allow(unused_mut))]
        Decision::Found(mut model) => {
            #[cfg(feature = "adapters")]
            if let Some(picker) = &config.rewrites {
                let requested =
                    HeaderValue::from_maybe_shared(model.bytes().clone()).map_err(|_| {
                        ExtractError::new(ErrorKind::ModelControlChar, scan.held_bytes())
                    })?;
                parts.headers.insert(REQUESTED_MODEL, requested);
                // A spooled body is forwarded as it came (its token may be
                // on disk): routed as requested, like a form or a
                // compressed body.
                if scan.spooled_bytes() == 0
                    && let Some(picked) = crate::rewrite::pick(picker, &model, &parts.headers)
                {
                    if let Some(spliced) = picked.rewrite {
                        debug_event!(
                            requested = model.as_str(),
                            target = spliced.target.as_str(),
                            "model rewritten"
                        );
                        model = spliced.target.clone();
                        rewrite = Some(spliced);
                    }
                    parts.extensions.insert(picked.record);
                }
            }
            // Shares the model's bytes (often a slice of the client's frame).
            // The extractor refuses every byte a header value cannot carry,
            // so this does not fail; if it ever did, the model is refused.
            let value = HeaderValue::from_maybe_shared(model.bytes().clone())
                .map_err(|_| ExtractError::new(ErrorKind::ModelControlChar, scan.held_bytes()))?;
            parts.headers.insert(MODEL, value);
            if let Some(base) = config
                .base_models
                .as_ref()
                .and_then(|lookup| lookup.base_model(model.as_str()))
            {
                parts
                    .headers
                    .insert(BASE_MODEL, base.header_value().clone());
                parts.extensions.insert(base);
            }
            debug_event!(model = model.as_str(), held_cost, "model found");
            parts.extensions.insert(ModelName::new(model));
            config.counters.record_found(held_cost);
            Ok(rewrite)
        }
        Decision::Absent => match config.missing_model {
            MissingModel::Forward => {
                config.counters.record_absent(held_cost);
                Ok(rewrite)
            }
            _ => Err(Refusal::MissingModel),
        },
        Decision::Empty => {
            config.counters.record_unread();
            Ok(rewrite)
        }
    }
}
