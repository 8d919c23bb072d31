//! The response future: reads frames until the decision, then calls the
//! inner service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::{ErrorBody, ReplayBody, ResponseBody};
use crate::error::{BoxError, Error};
use crate::extension::{BaseModelName, ModelName};
use crate::layer::Config;
use crate::policy::{self, OnMissing};
use crate::scan::{Decision, Scan, Step};
use crate::trace::debug_event;

/// Frames read in one poll before yielding to the executor, so a body that
/// is always ready (in memory, tiny frames) cannot starve other tasks.
const FRAMES_PER_POLL: usize = 256;

pin_project! {
    /// Response future of [`ModelRouting`](crate::ModelRouting).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S, B, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, F> {
        // Reading frames into the extractor; `service` is the ready inner
        // service, called once the model is decided.
        Reading {
            service: Option<S>,
            parts: Option<http::request::Parts>,
            body: Option<B>,
            scan: Option<Scan>,
            config: Arc<Config>,
        },
        Calling {
            #[pin]
            future: F,
        },
        // Refused: the rest of the upload is read and dropped (up to
        // `drain_limit` bytes in all) before the answer goes out.
        Refused {
            response: Option<Response<ErrorBody>>,
            drain: Option<B>,
            drained: u64,
            drain_limit: u64,
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
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    pub(crate) fn reading(service: S, request: Request<B>, config: Arc<Config>) -> Self {
        let (parts, body) = request.into_parts();
        Self {
            state: State::Reading {
                service: Some(service),
                parts: Some(parts),
                body: Some(body),
                scan: Some(Scan::new(config.limits)),
                config,
            },
        }
    }

    pub(crate) fn called(future: S::Future) -> Self {
        Self {
            state: State::Calling { future },
        }
    }

    /// Answers `error` at once, without reading the body.
    pub(crate) fn refused(error: &Error) -> Self {
        Self {
            state: State::Refused {
                response: Some(policy::error_response(error)),
                drain: None,
                drained: 0,
                drain_limit: 0,
            },
        }
    }

    /// Answers `error` after reading the rest of `body`, up to `drain_limit`
    /// bytes in all (counting `drained`, already read).
    pub(crate) fn refused_after_draining(
        error: &Error,
        body: B,
        drained: u64,
        drain_limit: u64,
    ) -> Self {
        Self {
            state: State::Refused {
                response: Some(policy::error_response(error)),
                drain: Some(body),
                drained,
                drain_limit,
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
                StateProj::Calling { future } => {
                    return future
                        .poll(cx)
                        .map(|result| result.map(|response| response.map(ResponseBody::inner)));
                }
                StateProj::Refused {
                    response,
                    drain,
                    drained,
                    drain_limit,
                } => {
                    if let Some(body) = drain.as_mut() {
                        ready!(poll_drain(cx, body, drained, *drain_limit));
                        *drain = None;
                    }
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::refused)));
                }
                StateProj::Reading {
                    service,
                    parts,
                    body,
                    scan,
                    config,
                } => {
                    let scan_ref = scan.as_mut().expect("the scan lives until the decision");
                    let body_ref = body.as_mut().expect("the body lives until the decision");
                    let decision = ready!(poll_decision(cx, body_ref, scan_ref));
                    let scan = scan.take().expect("the scan lives until the decision");
                    let held_bytes = scan.held_bytes();
                    let counters = &config.counters;
                    match decision.and_then(|decision| {
                        let parts = parts.as_mut().expect("the parts live until the decision");
                        apply_decision(decision, parts, config, held_bytes)
                    }) {
                        Ok(()) => {
                            let parts = parts.take().expect("the parts live until the decision");
                            let body = body.take().expect("the body lives until the decision");
                            let body = ReplayBody::replay(scan.into_held(), body, counters.clone());
                            let service = service.take().expect("the service is called once");
                            let mut service = service;
                            State::Calling {
                                future: service.call(Request::from_parts(parts, body)),
                            }
                        }
                        Err(error) => {
                            counters.record_refused(held_bytes);
                            debug_event!(code = policy::code(&error), held_bytes, error = %error, "request refused");
                            // Drain unless the body already ended or failed.
                            let drain = match (&error, scan.ended()) {
                                (Error::Body { .. }, _) | (_, true) => None,
                                _ => body.take(),
                            };
                            State::Refused {
                                response: Some(policy::error_response(&error)),
                                drain,
                                drained: held_bytes,
                                drain_limit: config.limits.max_body_bytes(),
                            }
                        }
                    }
                }
            };
            this.state.set(next);
        }
    }
}

/// Polls frames into the scan until it decides (or fails).
fn poll_decision<B>(
    cx: &mut Context<'_>,
    body: &mut B,
    scan: &mut Scan,
) -> Poll<Result<Decision, Error>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    for _ in 0..FRAMES_PER_POLL {
        let step = match ready!(Pin::new(&mut *body).poll_frame(cx)) {
            Some(Ok(frame)) => scan.push(frame),
            Some(Err(error)) => {
                return Poll::Ready(Err(Error::Body {
                    offset: scan.held_bytes(),
                    source: error.into(),
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
                    && let Step::Failed(error) = scan.end()
                {
                    return Poll::Ready(Err(Error::Extract(error)));
                }
                return Poll::Ready(Ok(decision));
            }
            Step::Failed(error) => return Poll::Ready(Err(Error::Extract(error))),
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// Reads and drops the rest of a refused upload, so an HTTP/1.1 client
/// still sending it reads the answer instead of a reset connection. Stops
/// at the body's end, at an error, or past `limit` bytes in all (then the
/// connection may be closed on the client, as without draining).
fn poll_drain<B>(cx: &mut Context<'_>, body: &mut B, drained: &mut u64, limit: u64) -> Poll<()>
where
    B: Body<Data = Bytes> + Unpin,
{
    for _ in 0..FRAMES_PER_POLL {
        match ready!(Pin::new(&mut *body).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *drained += data.len() as u64;
                }
                if *drained > limit || body.is_end_stream() {
                    return Poll::Ready(());
                }
            }
            Some(Err(_)) | None => return Poll::Ready(()),
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
    held_bytes: u64,
) -> Result<(), Error> {
    match decision {
        Decision::Found(model) => {
            // Shares the model's bytes (often a slice of the client's frame).
            let value = HeaderValue::from_maybe_shared(model.bytes().clone())?;
            parts.headers.insert(config.model_header.clone(), value);
            if let Some(base) = config
                .adapters
                .as_ref()
                .and_then(|store| store.lookup(model.as_str()))
            {
                // A base model name that cannot be a header value (the map
                // does not restrict it) gets no header, like an unknown one.
                if let Ok(value) = HeaderValue::from_str(&base) {
                    parts
                        .headers
                        .insert(config.base_model_header.clone(), value);
                    parts.extensions.insert(BaseModelName::new(base));
                }
            }
            debug_event!(model = model.as_str(), held_bytes, "model found");
            parts.extensions.insert(ModelName::new(model));
            config.counters.record_found(held_bytes);
            Ok(())
        }
        Decision::Absent => match config.on_missing {
            OnMissing::Reject => Err(Error::MissingModel),
            OnMissing::PassThrough => {
                config.counters.record_absent(held_bytes);
                Ok(())
            }
        },
        Decision::Empty => {
            config.counters.record_unread();
            Ok(())
        }
    }
}
