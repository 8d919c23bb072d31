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
//! - With a spool (feature `spool`), the data frame that would take the
//!   held body bytes past its memory threshold, and every later one, go to
//!   the [`Spool`] instead of the queue; their memory is accounted (as the
//!   spool reports it) until their write ran, their bytes against the disk
//!   cap. The queue remembers where the spooled bytes go (`HeldSpool::at`);
//!   frames not yet written at the decision, and trailers read while
//!   spooling, follow them.

use std::collections::VecDeque;

use bbr_core::contract::{ClientHeaders, Refusal};
use bbr_core::encoding::{Coding, DecodeLimits};
use bbr_core::spool::{Hold, ReservedCost, Spool, SpoolFile, SpoolWrite, SpoolWritten};
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
    /// The disk spool (feature `spool`), when configured.
    spool: Option<Spooling>,
}

/// A scan's spool and its accounting.
#[derive(Debug)]
struct Spooling {
    spool: Spool,
    /// Bytes handed to the spool, against the disk cap.
    disk: Reservation,
    /// Memory reserved for the spool's chunks not yet written.
    memory_cost: ReservedCost,
    /// Held frames that come before the spooled bytes.
    at: usize,
    /// Trailers read while spooling: they come after everything spooled.
    trailers: Option<HeldFrame>,
}

/// The spooled part of a held body: the file, and where it goes.
#[derive(Debug)]
pub(crate) struct HeldSpool {
    /// Held frames handed out before the file's bytes.
    pub(crate) at: usize,
    pub(crate) file: SpoolFile,
    /// The file's bytes, against the disk cap; shrunk as they are read.
    pub(crate) disk: Reservation,
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
    /// The bytes that went to disk, replayed after the first `at` frames.
    pub(crate) spool: Option<HeldSpool>,
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
            spool: None,
        }
    }

    /// Holds what passes the spool's memory threshold on disk, against the
    /// disk cap `disk`.
    pub(crate) fn with_spool(mut self, spool: Spool, disk: Reservation) -> Self {
        self.spool = Some(Spooling {
            spool,
            disk,
            memory_cost: ReservedCost::new(),
            at: 0,
            trailers: None,
        });
        self
    }

    /// The next spool write to run (when none runs and chunks wait).
    pub(crate) fn next_write(&mut self) -> Option<SpoolWrite> {
        self.spool.as_mut()?.spool.next_write()
    }

    /// A spool write ran; `None` when it could not finish. A failed write
    /// refuses the request like an overload: the gateway cannot hold it.
    pub(crate) fn write_done(&mut self, done: Option<SpoolWritten>) -> Result<(), Refusal> {
        let Some(spooling) = self.spool.as_mut() else {
            return Ok(());
        };
        let Some(done) = done else {
            return Err(Refusal::Overloaded);
        };
        if let Err(error) = spooling.spool.write_done(done) {
            // A full or unwritable disk: the operator's to fix, so a warning
            // with the whole cause chain, not a debug event.
            crate::trace::warn_event!(
                error = %error,
                cause = %error.cause(),
                "spool write failed; answering 503"
            );
            let _ = &error;
            return Err(Refusal::Overloaded);
        }
        self.sync_spool_cost()
    }

    /// True when the scan should wait for the running write before reading
    /// more (the spool's back-pressure).
    pub(crate) fn must_wait(&self) -> bool {
        self.spool
            .as_ref()
            .is_some_and(|spooling| spooling.spool.must_wait())
    }

    /// Bytes handed to the spool so far.
    #[cfg_attr(not(any(feature = "adapters", test)), allow(dead_code))]
    pub(crate) fn spooled_bytes(&self) -> u64 {
        self.spool
            .as_ref()
            .map_or(0, |spooling| spooling.spool.taken_bytes())
    }

    /// Keeps the memory reservation of the spool's waiting chunks exact.
    fn sync_spool_cost(&mut self) -> Result<(), Refusal> {
        let Some(spooling) = self.spool.as_mut() else {
            return Ok(());
        };
        let cost = spooling.spool.memory_cost();
        if !spooling
            .memory_cost
            .reserve_exactly(&mut self.reservation, cost)
        {
            return Err(Refusal::Overloaded);
        }
        Ok(())
    }

    /// Hands `data` to the spool when it goes to disk; gives it back when
    /// it stays in memory.
    fn spool(&mut self, data: Bytes) -> Result<Option<Bytes>, Refusal> {
        let Some(spooling) = self.spool.as_mut() else {
            return Ok(Some(data));
        };
        if !spooling.spool.would_spool(data.len()) {
            return Ok(match spooling.spool.hold(data) {
                Hold::Memory(data) => Some(data),
                Hold::Spooled => None,
            });
        }
        if !spooling.spool.is_spooling() {
            self.flush();
            let spooling = self.spool.as_mut().expect("checked above");
            spooling.at = self.held.len();
            self.reservation.counters().record_spooling();
        }
        let spooling = self.spool.as_mut().expect("checked above");
        if !spooling.disk.try_grow(data.len() as u64) {
            return Err(Refusal::Overloaded);
        }
        let _ = spooling.spool.hold(data);
        self.sync_spool_cost()?;
        Ok(None)
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
                let held = HeldFrame {
                    frame: Frame::trailers(trailers),
                    cost: FRAME_OVERHEAD,
                };
                match self.spool.as_mut() {
                    Some(spooling) if spooling.spool.is_spooling() => {
                        spooling.trailers = Some(held);
                    }
                    _ => self.held.push_back(held),
                }
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
        let Some(data) = self.spool(data)? else {
            return Ok(());
        };
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

    /// What the scan held, for the replay body.
    ///
    /// # Panics
    ///
    /// If a spool write is still running: the caller waits for it first.
    pub(crate) fn into_held(mut self) -> Held {
        self.flush();
        let spool = self.spool.take().and_then(|spooling| {
            let Spooling {
                spool,
                mut disk,
                memory_cost,
                at,
                trailers,
            } = spooling;
            let written = spool.spooled_bytes();
            let (file, rest) = spool.into_parts();
            // The chunks not written stay in memory, after the file, with
            // the memory already reserved for them (the first carries the
            // slack of a coalescing buffer) ...
            let mut slack = memory_cost.bytes() - rest.iter().map(|c| c.len() as u64).sum::<u64>();
            for chunk in rest {
                let cost = chunk.len() as u64 + std::mem::take(&mut slack);
                self.held.push_back(HeldFrame {
                    frame: Frame::data(chunk),
                    cost,
                });
            }
            if slack > 0 {
                self.reservation.shrink(slack);
            }
            self.held.extend(trailers);
            // ... and no longer count against the disk cap.
            disk.shrink(disk.bytes() - written);
            let file = file?;
            Some(HeldSpool { at, file, disk })
        });
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
            spool,
        }
    }
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
