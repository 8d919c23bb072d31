//! The synchronous state machine of the phase before the routing decision:
//! feed each frame to the extractor and hold it until the extractor
//! decides, accounting what is held against the layer's global cap. The
//! async glue in [`future`](crate::future) only polls the body and calls
//! [`Scan::push`] / [`Scan::end`].
//!
//! # What is held, and when a copy happens
//!
//! - The first [`ZERO_COPY_FRAMES`] data frames are held as they came (the
//!   same `Bytes`), whatever their size: most bodies decide within them,
//!   and nothing is copied.
//! - After those, a data frame of [`COPY_BELOW`] bytes or more is still held
//!   as is. A smaller one is copied into a coalescing buffer of
//!   [`COALESCE_BYTES`] (a frame may be split across two buffers), and the
//!   client's `Bytes` is dropped at once. These copies are the only ones:
//!   the model is sliced from the client's frame before the copy, and
//!   nothing is copied after the decision.
//! - Every held frame is accounted as its bytes (a coalescing buffer as its
//!   whole capacity) plus [`FRAME_OVERHEAD`]. Per request that is at most
//!   `max_scan_bytes × (1 + FRAME_OVERHEAD / COPY_BELOW)` plus one
//!   coalescing buffer and the first frames' overhead; tiny frames no
//!   longer cost ~100 bytes of bookkeeping per byte.
//! - A compressed body also reserves its decoders' state at its first data
//!   frame ([`decoder_cost`]), held until the body is no longer decoded.

use std::collections::VecDeque;

use bbr_core::contract::{ClientHeaders, Refusal};
use bbr_core::encoding::{Coding, DecodeLimits};
use bbr_core::{BodyExtractor, Model, Outcome, Progress};
use bytes::{Bytes, BytesMut};
use http_body::Frame;

use crate::counters::Reservation;
use crate::headers::guard_routing_headers;

/// Data frames held as they came before small ones are coalesced: 16.
pub const ZERO_COPY_FRAMES: usize = 16;

/// Data frames shorter than this, past the first [`ZERO_COPY_FRAMES`], are
/// copied into a coalescing buffer: 4 KiB.
pub const COPY_BELOW: usize = 4 << 10;

/// Capacity of one coalescing buffer: 16 KiB.
pub const COALESCE_BYTES: usize = 16 << 10;

/// What one held frame costs beyond its bytes: its slot in the queue and the
/// frame itself (the `Bytes` handle, or a trailers map's fixed part).
pub const FRAME_OVERHEAD: u64 = size_of::<HeldFrame>() as u64;

/// What the decoders of one compressed body are accounted as against the
/// global cap: 64 KiB per gzip or deflate stage (its 32 KiB window and the
/// inflate state), the window cap ([`DecodeLimits::max_window`], 8 MiB by
/// default) per brotli or zstd stage, whose window the stream chooses.
/// Nothing for a plain body.
pub(crate) fn decoder_cost(extractor: &BodyExtractor) -> u64 {
    decoding_cost(extractor.encoding().codings(), extractor.decode_limits())
}

fn decoding_cost(codings: &[Coding], limits: &DecodeLimits) -> u64 {
    codings
        .iter()
        .map(|coding| match coding {
            Coding::Gzip | Coding::Deflate => 64 << 10,
            _ => limits.max_window(),
        })
        .sum()
}

/// A held frame and what it costs against the global cap.
#[derive(Debug)]
pub(crate) struct HeldFrame {
    pub(crate) frame: Frame<Bytes>,
    pub(crate) cost: u64,
}

/// Frames read before the decision, and the extractor reading them.
#[derive(Debug)]
pub(crate) struct Scan {
    extractor: BodyExtractor,
    /// Reserved for the decoders at the first data frame (0 until then,
    /// and for a plain body).
    decoder_cost: u64,
    held: VecDeque<HeldFrame>,
    held_bytes: u64,
    data_frames: usize,
    /// The coalescing buffer being filled (its capacity is reserved).
    pending: BytesMut,
    reservation: Reservation,
    client_headers: ClientHeaders,
    ended: bool,
}

/// What the scan knows after a frame.
#[derive(Debug)]
pub(crate) enum Step {
    /// No decision yet: read the next frame.
    NeedMore,
    /// Decided; call the inner service.
    Decided(Decision),
    /// Refuse the request.
    Failed(Refusal),
}

/// The routing decision.
#[derive(Debug)]
pub(crate) enum Decision {
    /// The top-level `model`.
    Found(Model),
    /// A valid object without a top-level `model`.
    Absent,
    /// The body ended without a single byte: there is nothing to route on.
    Empty,
}

/// Everything the replay body needs after the decision.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) frames: VecDeque<HeldFrame>,
    pub(crate) bytes: u64,
    pub(crate) reservation: Reservation,
    /// The body ended during the scan (no more frames to read from it).
    pub(crate) ended: bool,
    /// The extractor, to keep validating the rest of the body; `None` when
    /// the body already ended and was finished.
    pub(crate) validator: Option<BodyExtractor>,
    /// Reserved for the validator's decoders: given back when it is done.
    pub(crate) decoder_cost: u64,
}

impl Scan {
    /// A scan reading the body with `extractor` (chosen from the request's
    /// `content-type` and `content-encoding`).
    pub(crate) fn new(
        extractor: BodyExtractor,
        client_headers: ClientHeaders,
        reservation: Reservation,
    ) -> Self {
        Self {
            extractor,
            decoder_cost: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            data_frames: 0,
            pending: BytesMut::new(),
            reservation,
            client_headers,
            ended: false,
        }
    }

    /// Body bytes read so far.
    pub(crate) fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// What is held, as accounted against the global cap.
    pub(crate) fn held_cost(&self) -> u64 {
        self.reservation.bytes()
    }

    /// Held frames, the coalescing buffer being filled counted as one.
    #[cfg(test)]
    pub(crate) fn held_frames(&self) -> usize {
        self.held.len() + usize::from(!self.pending.is_empty())
    }

    /// True once the body ended (no more frames to read from it).
    pub(crate) fn ended(&self) -> bool {
        self.ended
    }

    /// Feeds and holds one frame. A trailers frame ends the body; client
    /// routing headers in it are removed (or refused).
    pub(crate) fn push(&mut self, frame: Frame<Bytes>) -> Step {
        match frame.into_data() {
            Ok(data) => {
                if self.decoder_cost == 0 && !data.is_empty() {
                    let cost = decoder_cost(&self.extractor);
                    if cost > 0 && !self.reservation.try_grow(cost) {
                        return Step::Failed(Refusal::Overloaded);
                    }
                    self.decoder_cost = cost;
                }
                let progress = self.extractor.feed(&data);
                if let Err(refusal) = self.hold(data) {
                    return Step::Failed(refusal);
                }
                match progress {
                    Ok(Progress::Found(model)) => Step::Decided(Decision::Found(model)),
                    Ok(Progress::Absent) => Step::Decided(Decision::Absent),
                    // `Decided` only follows a `Found`/`Absent` we already acted on.
                    Ok(_) => Step::NeedMore,
                    Err(error) => Step::Failed(error.into()),
                }
            }
            Err(frame) => {
                let Ok(mut trailers) = frame.into_trailers() else {
                    return self.end();
                };
                if let Err(refusal) = guard_routing_headers(&mut trailers, self.client_headers) {
                    return Step::Failed(refusal);
                }
                self.flush();
                if !self.reservation.try_grow(FRAME_OVERHEAD) {
                    return Step::Failed(Refusal::Overloaded);
                }
                self.held.push_back(HeldFrame {
                    frame: Frame::trailers(trailers),
                    cost: FRAME_OVERHEAD,
                });
                self.end()
            }
        }
    }

    /// Holds one data frame: as is, or copied into a coalescing buffer (see
    /// the module docs).
    fn hold(&mut self, data: Bytes) -> Result<(), Refusal> {
        self.held_bytes += data.len() as u64;
        self.data_frames += 1;
        if data.is_empty() {
            return Ok(());
        }
        if self.data_frames <= ZERO_COPY_FRAMES || data.len() >= COPY_BELOW {
            self.flush();
            let cost = data.len() as u64 + FRAME_OVERHEAD;
            if !self.reservation.try_grow(cost) {
                return Err(Refusal::Overloaded);
            }
            self.held.push_back(HeldFrame {
                frame: Frame::data(data),
                cost,
            });
            return Ok(());
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            if self.pending.len() == self.pending.capacity() {
                self.flush();
                if !self
                    .reservation
                    .try_grow(COALESCE_BYTES as u64 + FRAME_OVERHEAD)
                {
                    return Err(Refusal::Overloaded);
                }
                self.pending = BytesMut::with_capacity(COALESCE_BYTES);
            }
            let take = rest.len().min(self.pending.capacity() - self.pending.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
        Ok(())
    }

    /// Moves the coalescing buffer being filled into the held frames.
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            // Whole, so the next buffer is a fresh allocation of its own and
            // the accounting (one capacity per buffer) stays exact.
            let bytes = std::mem::take(&mut self.pending).freeze();
            self.held.push_back(HeldFrame {
                frame: Frame::data(bytes),
                cost: COALESCE_BYTES as u64 + FRAME_OVERHEAD,
            });
        }
    }

    /// The body ended (no more frames).
    pub(crate) fn end(&mut self) -> Step {
        self.ended = true;
        if self.extractor.bytes_consumed() == 0 {
            return Step::Decided(Decision::Empty);
        }
        match self.extractor.finish() {
            Ok(Outcome::Found(model)) => Step::Decided(Decision::Found(model)),
            Ok(_) => Step::Decided(Decision::Absent),
            Err(error) => Step::Failed(error.into()),
        }
    }

    pub(crate) fn into_held(mut self) -> Held {
        self.flush();
        let decoder_cost = if self.ended {
            // Nothing left to decode.
            self.reservation.shrink(self.decoder_cost);
            0
        } else {
            self.decoder_cost
        };
        Held {
            decoder_cost,
            frames: self.held,
            bytes: self.held_bytes,
            reservation: self.reservation,
            ended: self.ended,
            validator: (!self.ended).then_some(self.extractor),
        }
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
