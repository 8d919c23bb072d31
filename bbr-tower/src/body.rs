//! Request and response bodies.
//!
//! Only `http-body` types appear here; `http-body-util` stays private so its
//! versions never become part of this crate's API.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bbr_core::{ErrorKind, ExtractError, ModelExtractor};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::error::{BodyViolation, BoxError};
use crate::layer::Counters;
use crate::scan::Held;

pin_project! {
    /// The request body the inner service receives.
    ///
    /// It first replays the frames the layer read before its routing
    /// decision (the same `Bytes`, in the same frame boundaries, trailers
    /// included), then passes the rest of the client's body through as it
    /// arrives. It never polls the client's body again after that ended.
    ///
    /// While the rest streams through, the extractor keeps checking it
    /// under [`DuplicateKeys::Reject`](bbr_core::DuplicateKeys::Reject)
    /// (valid JSON, no second top-level `model`) and counts it against
    /// `max_body_bytes` under every policy, without holding any of it. A
    /// violation ends the body with a [`BodyViolation`] error in place of
    /// the offending frame (find it with [`BodyViolation::find`]). Before
    /// raising it, the rest of a client upload still in flight is read and
    /// dropped (never handed out), up to `max_body_bytes` in all, so an
    /// HTTP/1.1 client reads the answer instead of a reset connection.
    ///
    /// `size_hint` adds the held bytes to the client body's hint;
    /// `is_end_stream` is true only when nothing is held and the client's
    /// body ended and passed its final check.
    #[derive(Debug)]
    pub struct ReplayBody<B> {
        held: VecDeque<Frame<Bytes>>,
        held_bytes: u64,
        #[pin]
        inner: B,
        inner_done: bool,
        validator: Option<ModelExtractor>,
        drain: Option<Drain>,
        counters: Option<Arc<Counters>>,
    }
}

/// A violation waiting for the rest of the upload to be dropped.
#[derive(Debug)]
struct Drain {
    error: ExtractError,
    read: u64,
    limit: u64,
}

/// Frames dropped in one poll while draining before yielding.
const DRAIN_FRAMES_PER_POLL: usize = 256;

impl<B> ReplayBody<B> {
    /// Wraps `inner` unchanged: nothing held, nothing checked. This is what
    /// the inner service gets for requests the layer does not read (no body,
    /// `multipart/form-data`), and lets services be called without the layer.
    pub fn new(inner: B) -> Self {
        Self {
            held: VecDeque::new(),
            held_bytes: 0,
            inner,
            inner_done: false,
            validator: None,
            drain: None,
            counters: None,
        }
    }

    pub(crate) fn replay(held: Held, inner: B, counters: Arc<Counters>) -> Self {
        Self {
            held: held.frames,
            held_bytes: held.bytes,
            inner,
            inner_done: held.ended,
            validator: held.validator,
            drain: None,
            counters: Some(counters),
        }
    }

    /// Bytes of held frames not yet handed out.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }
}

/// Reads and drops client frames until the body ends, fails, or passes
/// the drain limit.
fn poll_drain<B>(mut inner: Pin<&mut B>, cx: &mut Context<'_>, drain: &mut Drain) -> Poll<()>
where
    B: Body<Data = Bytes>,
{
    for _ in 0..DRAIN_FRAMES_PER_POLL {
        match ready!(inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => {
                drain.read += frame.data_ref().map_or(0, |data| data.len() as u64);
                if drain.read > drain.limit || inner.is_end_stream() {
                    return Poll::Ready(());
                }
            }
            Some(Err(_)) | None => return Poll::Ready(()),
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

fn violation(
    counters: &Option<Arc<Counters>>,
    error: ExtractError,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    if let Some(counters) = counters {
        counters.record_violation();
    }
    crate::trace::debug_event!(
        kind = error.kind().as_str(),
        offset = error.offset(),
        "request body violation"
    );
    Poll::Ready(Some(Err(Box::new(BodyViolation::new(error)))))
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(frame) = this.held.pop_front() {
            if let Some(data) = frame.data_ref() {
                *this.held_bytes -= data.len() as u64;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        let mut inner = this.inner;
        if let Some(drain) = this.drain.as_mut() {
            ready!(poll_drain(inner.as_mut(), cx, drain));
            *this.inner_done = true;
            let drain = this.drain.take().expect("draining");
            return violation(this.counters, drain.error);
        }
        if *this.inner_done {
            return Poll::Ready(None);
        }
        match ready!(inner.as_mut().poll_frame(cx)) {
            None => {
                *this.inner_done = true;
                if let Some(mut validator) = this.validator.take()
                    && let Err(error) = validator.finish()
                {
                    return violation(this.counters, error);
                }
                Poll::Ready(None)
            }
            Some(Err(error)) => {
                *this.inner_done = true;
                Poll::Ready(Some(Err(error.into())))
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(validator) = this.validator.as_mut()
                        && let Err(error) = validator.feed(data)
                    {
                        let read = validator.bytes_consumed();
                        let limit = validator.limits().max_body_bytes();
                        *this.validator = None;
                        let over_limit = matches!(error.kind(), ErrorKind::BodyTooLarge { .. });
                        if over_limit || inner.is_end_stream() {
                            *this.inner_done = true;
                            return violation(this.counters, error);
                        }
                        // Drop the rest of the upload first (see the type docs).
                        let drain = this.drain.insert(Drain { error, read, limit });
                        ready!(poll_drain(inner.as_mut(), cx, drain));
                        *this.inner_done = true;
                        let drain = this.drain.take().expect("draining");
                        return violation(this.counters, drain.error);
                    }
                    // Finish as soon as the client's body knows it ended, so
                    // `is_end_stream` is exact and a truncated body is refused
                    // in place of its last frame.
                    if inner.is_end_stream() {
                        *this.inner_done = true;
                        if let Some(mut validator) = this.validator.take()
                            && let Err(error) = validator.finish()
                        {
                            return violation(this.counters, error);
                        }
                    }
                } else {
                    // Trailers end the body.
                    *this.inner_done = true;
                    if let Some(mut validator) = this.validator.take()
                        && let Err(error) = validator.finish()
                    {
                        return violation(this.counters, error);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty()
            && self.drain.is_none()
            && (self.inner_done || (self.validator.is_none() && self.inner.is_end_stream()))
    }

    fn size_hint(&self) -> SizeHint {
        if self.inner_done {
            return SizeHint::with_exact(self.held_bytes);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(self.held_bytes));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(self.held_bytes));
        }
        hint
    }
}

/// The body of the layer's own error responses: one JSON chunk.
#[derive(Debug, Clone, Default)]
pub struct ErrorBody {
    bytes: Option<Bytes>,
}

impl ErrorBody {
    pub(crate) fn new(bytes: Bytes) -> Self {
        Self { bytes: Some(bytes) }
    }

    /// The JSON text (empty once the body was polled).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_deref().unwrap_or_default()
    }
}

impl Body for ErrorBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.get_mut()
                .bytes
                .take()
                .map(|bytes| Ok(Frame::data(bytes))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.as_ref().map_or(0, |bytes| bytes.len() as u64))
    }
}

pin_project! {
    /// The response body of [`ModelRouting`](crate::ModelRouting): the inner
    /// service's body, or the layer's own [`ErrorBody`] when it refused the
    /// request.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: ResponseBodyKind<B>,
    }
}

pin_project! {
    #[project = ResponseBodyProj]
    #[derive(Debug)]
    enum ResponseBodyKind<B> {
        Inner { #[pin] body: B },
        Refused { body: ErrorBody },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: ResponseBodyKind::Inner { body },
        }
    }

    pub(crate) fn refused(body: ErrorBody) -> Self {
        Self {
            kind: ResponseBodyKind::Refused { body },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            ResponseBodyProj::Inner { body } => body.poll_frame(cx),
            ResponseBodyProj::Refused { body } => {
                Poll::Ready(body.bytes.take().map(|bytes| Ok(Frame::data(bytes))))
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseBodyKind::Inner { body } => body.is_end_stream(),
            ResponseBodyKind::Refused { body } => body.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseBodyKind::Inner { body } => body.size_hint(),
            ResponseBodyKind::Refused { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
