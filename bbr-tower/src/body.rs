//! Request and response bodies.
//!
//! Only `http-body` types appear here; `http-body-util` stays private so its
//! versions never become part of this crate's API.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bbr_core::BodyExtractor;
use bbr_core::contract::{ClientHeaders, Refusal};
use bbr_core::spool::{SpoolError, SpoolFile, SpoolRead};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::blocking::Blocking;
use crate::counters::{Counters, Reservation};
use crate::error::{BodyViolation, BoxError};
use crate::error_body::ErrorBody;
use crate::headers::guard_routing_headers;
use crate::scan::{Held, HeldFrame, HeldSpool};

/// Where a [`ReplayBody`] leaves the rest of a client upload after a
/// violation, for the layer's response future to drain once the inner
/// service answered (so the upstream request is not kept open meanwhile).
pub(crate) type Handoff<B> = Arc<Mutex<Option<B>>>;

/// The request body the inner service receives.
///
/// It first replays the frames the layer read before its routing decision
/// (the same bytes in the same order; the first frames as the same `Bytes`,
/// tiny later ones coalesced: see the crate docs, "Memory"), then passes the
/// rest of the client's body through as it arrives. It never polls the
/// client's body again after that ended.
///
/// While the rest streams through, the extractor keeps checking it under
/// [`DuplicateKeys::Reject`](bbr_core::DuplicateKeys::Reject) (valid JSON,
/// no second top-level `model`) and counts it against `max_body_bytes`
/// under every policy, without holding any of it. Client-sent routing
/// headers ([`routing_header`](bbr_core::contract::routing_header)) are
/// removed from the request trailers, or, under
/// [`ClientHeaders::Reject`], refused. A violation ends the body at once
/// with a [`BodyViolation`] error in place of the offending frame (find it
/// with [`BodyViolation::find`]); the rest of a client upload still in
/// flight is left to the layer, which drains it (within its drain budget)
/// after the inner service answered.
///
/// With the layer's disk spool (feature `spool`), the bytes that went to
/// disk are read back in order after the frames held in memory before
/// them, in chunks of at most
/// [`SPOOL_READ_BYTES`](bbr_core::spool::SPOOL_READ_BYTES) (fresh buffers:
/// the one copy back from disk), one read ahead on tokio's blocking pool; a
/// read error ends the body with that error (a
/// [`SpoolError`](bbr_core::spool::SpoolError)).
///
/// `size_hint` adds the held bytes to the client body's hint;
/// `is_end_stream` is true only when nothing is held and the client's body
/// ended and passed its final check.
///
/// The client's body must be `Unpin`, as for the layer.
#[derive(Debug)]
pub struct ReplayBody<B> {
    held: VecDeque<HeldFrame>,
    held_bytes: u64,
    reservation: Option<Reservation>,
    /// The spooled bytes, replayed once `before_spool` held frames are out.
    spool: Option<SpoolReplay>,
    before_spool: usize,
    /// The client's body; `None` once it ended, failed or was handed off.
    inner: Option<B>,
    validator: Option<BodyExtractor>,
    /// Reserved for the validator's decoders (a compressed body).
    decoder_cost: u64,
    /// `Some` when the layer guards the trailers.
    client_headers: Option<ClientHeaders>,
    handoff: Option<Handoff<B>>,
    counters: Option<Arc<Counters>>,
}

impl<B> ReplayBody<B> {
    /// Wraps `inner` unchanged: nothing held, nothing checked. This lets
    /// services be called without the layer (the layer itself still guards
    /// the trailers of the requests it does not read).
    pub fn new(inner: B) -> Self {
        Self {
            held: VecDeque::new(),
            held_bytes: 0,
            reservation: None,
            spool: None,
            before_spool: 0,
            inner: Some(inner),
            validator: None,
            decoder_cost: 0,
            client_headers: None,
            handoff: None,
            counters: None,
        }
    }

    /// A body the layer does not read (no body, `multipart/form-data`):
    /// passed through, only its trailers guarded.
    pub(crate) fn unread(inner: B, client_headers: ClientHeaders, counters: Arc<Counters>) -> Self {
        Self {
            client_headers: Some(client_headers),
            counters: Some(counters),
            ..Self::new(inner)
        }
    }

    pub(crate) fn replay(
        held: Held,
        inner: B,
        client_headers: ClientHeaders,
        handoff: Option<Handoff<B>>,
    ) -> Self {
        let counters = held.reservation.counters().clone();
        let before_spool = held.spool.as_ref().map_or(0, |spool| spool.at);
        Self {
            held: held.frames,
            held_bytes: held.bytes,
            reservation: Some(held.reservation),
            spool: held.spool.map(SpoolReplay::new),
            before_spool,
            inner: (!held.ended).then_some(inner),
            validator: held.validator,
            decoder_cost: held.decoder_cost,
            client_headers: Some(client_headers),
            handoff,
            counters: Some(counters),
        }
    }

    /// Bytes of held frames not yet handed out.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Ends the body with `refusal`. The rest of the client's upload, if
    /// any, goes to the layer to be drained.
    fn violation(&mut self, refusal: Refusal) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
    where
        B: Body,
    {
        self.hand_off();
        if let Some(counters) = &self.counters {
            counters.record_violation();
        }
        crate::trace::debug_event!(code = refusal.code(), error = %refusal, "request body violation");
        Poll::Ready(Some(Err(Box::new(BodyViolation::new(refusal)))))
    }

    /// Stops checking, and leaves the rest of the client's upload to the
    /// layer to be drained.
    fn hand_off(&mut self)
    where
        B: Body,
    {
        self.drop_validator();
        if let Some(inner) = self.inner.take()
            && !inner.is_end_stream()
            && let Some(handoff) = &self.handoff
        {
            *handoff.lock().unwrap_or_else(PoisonError::into_inner) = Some(inner);
        }
    }

    /// The client's body ended: the last check of the rest.
    fn finish(&mut self) -> Result<(), Refusal> {
        self.inner = None;
        let finished = match self.validator.as_mut() {
            Some(validator) => validator.finish().map(drop).map_err(Refusal::from),
            None => Ok(()),
        };
        self.drop_validator();
        finished
    }

    /// Frees the validator and gives back what its decoders were accounted.
    fn drop_validator(&mut self) {
        self.validator = None;
        if let Some(reservation) = self.reservation.as_mut() {
            reservation.shrink(std::mem::take(&mut self.decoder_cost));
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.before_spool == 0
            && let Some(spool) = this.spool.as_mut()
        {
            match ready!(spool.poll_next(cx)) {
                Some(Ok(data)) => {
                    this.held_bytes -= data.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                None => this.spool = None,
                Some(Err(error)) => {
                    this.spool = None;
                    this.held.clear();
                    this.hand_off();
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
        if let Some(held) = this.held.pop_front() {
            this.before_spool = this.before_spool.saturating_sub(1);
            if let Some(data) = held.frame.data_ref() {
                this.held_bytes -= data.len() as u64;
            }
            if let Some(reservation) = this.reservation.as_mut() {
                reservation.shrink(held.cost);
            }
            return Poll::Ready(Some(Ok(held.frame)));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match ready!(Pin::new(&mut *inner).poll_frame(cx)) {
            None => {
                return match this.finish() {
                    Ok(()) => Poll::Ready(None),
                    Err(refusal) => this.violation(refusal),
                };
            }
            Some(Err(error)) => {
                this.inner = None;
                return Poll::Ready(Some(Err(error.into())));
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                if let Some(validator) = this.validator.as_mut()
                    && let Err(error) = validator.feed(&data)
                {
                    return this.violation(error.into());
                }
                // Finish as soon as the client's body knows it ended, so
                // `is_end_stream` is exact and a truncated body is refused in
                // place of its last frame.
                if inner.is_end_stream()
                    && let Err(refusal) = this.finish()
                {
                    return this.violation(refusal);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Err(frame) => {
                // Trailers end the body.
                let finished = this.finish();
                let Ok(mut trailers) = frame.into_trailers() else {
                    return Poll::Ready(None);
                };
                if let Some(policy) = this.client_headers
                    && let Err(refusal) = guard_routing_headers(&mut trailers, policy)
                {
                    return this.violation(refusal);
                }
                if let Err(refusal) = finished {
                    return this.violation(refusal);
                }
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty()
            && self.spool.is_none()
            && self
                .inner
                .as_ref()
                .is_none_or(|inner| self.validator.is_none() && inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let Some(inner) = &self.inner else {
            return SizeHint::with_exact(self.held_bytes);
        };
        let inner = inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(self.held_bytes));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(self.held_bytes));
        }
        hint
    }
}

/// Reads a [`HeldSpool`] back in order, one read ahead.
#[derive(Debug)]
struct SpoolReplay {
    /// The file, when no read holds it.
    file: Option<SpoolFile>,
    read: Option<Blocking<ReadBack>>,
    /// Given back as the bytes are handed out; in full when dropped.
    disk: Reservation,
}

/// What a [`SpoolRead`] gives back: the file, and the bytes read.
type ReadBack = (SpoolFile, Result<Option<Bytes>, SpoolError>);

impl SpoolReplay {
    fn new(spool: HeldSpool) -> Self {
        let mut replay = Self {
            file: Some(spool.file),
            read: None,
            disk: spool.disk,
        };
        replay.read_ahead();
        replay
    }

    /// Starts the next read when the file is idle and not finished.
    fn read_ahead(&mut self) {
        if let Some(file) = self.file.take_if(|file| file.remaining() > 0) {
            let read = SpoolRead::new(file);
            self.read = Some(crate::blocking::spawn(move || read.run()));
        }
    }

    /// The next spooled bytes; `None` once all were read.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        let Some(read) = self.read.as_mut() else {
            return Poll::Ready(None);
        };
        let done = ready!(read.poll(cx));
        self.read = None;
        let Some((file, read)) = done else {
            return Poll::Ready(Some(Err(Box::new(SpoolError::Read(
                std::io::Error::other("the spool read did not finish"),
            )))));
        };
        match read {
            Ok(Some(data)) => {
                self.disk.shrink(data.len() as u64);
                self.file = Some(file);
                self.read_ahead();
                Poll::Ready(Some(Ok(data)))
            }
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(Box::new(error)))),
        }
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
