//! Body chunks held until the routing decision, and the memory they cost.
//!
//! Envoy coalesces socket reads, so a chunk is usually large; a hostile or
//! unlucky client can still make it send many tiny `request_body`
//! messages. Each decoded chunk is a slice of tonic's receive buffer, so
//! holding a 1-byte chunk as it is would keep that whole buffer (and a
//! `Bytes` handle per byte) alive. Hence:
//!
//! - a held chunk of at least [`COALESCE_BELOW`] bytes is kept as it is
//!   (no copy);
//! - a smaller one is copied into an open buffer of at most
//!   [`MAX_CHUNK_BYTES`], which is sealed when the
//!   next small chunk would not fit or a large chunk comes; so the memory
//!   held is the bytes held plus at most one partly filled buffer and
//!   [`PIECE_OVERHEAD`] per piece. Chunks that arrive after the decision are
//!   never held and never copied.
//!
//! What a stream holds is reserved from a [`HeldBudget`] shared by every
//! stream of a server; a stream whose reservation would exceed the cap is
//! refused with `503` and `Retry-After` ([`Refusal::Overloaded`]).
//!
//! # Who holds the bytes before the decision, per body mode
//!
//! - `FULL_DUPLEX_STREAMED`: bbr-extproc, here. Envoy passes each chunk on
//!   as it arrives and forwards nothing upstream until the replies come, so
//!   a `model` that comes late (a form field after the file) costs
//!   bbr-extproc the bytes before it, within `--max-scan-bytes` per request.
//!   Up to the spool threshold (`--spool-threshold`, 4 MiB by default) they
//!   are held in memory, against `--max-held-bytes` across streams; past it
//!   they go to a disk spool (below), so a 256 MiB upload with `model` last
//!   costs a few MiB of memory, not 256 MiB (`--max-scan-bytes` must still
//!   let the extractor read that far).
//! - `STREAMED` (with `send_body_without_waiting_for_header_response`):
//!   Envoy. Each chunk gets an empty reply at once and nothing is reserved
//!   here; Envoy keeps the chunks in its own request buffer until the
//!   headers reply, bounded by its buffer limits
//!   (`per_connection_buffer_limit_bytes` of the listener, 1 MiB by
//!   default, and its flow control watermarks). What Envoy does when the
//!   bytes before the field pass that limit was not measured here.
//! - `BUFFERED` / `BUFFERED_PARTIAL`: Envoy buffers the body (up to
//!   `per_connection_buffer_limit_bytes`; past it `BUFFERED` is Envoy's own
//!   413 and `BUFFERED_PARTIAL` sends the prefix) and sends it in one
//!   message; bbr-extproc reads that message and holds nothing across
//!   messages.
//!
//!
//! # The disk spool (`FULL_DUPLEX_STREAMED` only)
//!
//! With a [`SpoolConfig`](bbr_core::spool::SpoolConfig) in
//! [`Settings::spool`](crate::Settings::spool) (the binary's default: on,
//! 4 MiB, `$TMPDIR`), the held chunk that would take a stream's held body
//! bytes past the threshold, and every later undecided one, go to a
//! [`bbr_core::spool::Spool`]: one unlinked `0600` file per stream,
//! written by [`SpoolJob`]s that the server runs on tokio's blocking pool,
//! one at a time per stream. The state machine stays synchronous: it hands
//! the jobs out ([`StreamState::next_spool_job`](crate::StreamState::next_spool_job))
//! and takes their results back ([`StreamState::on_spool_done`](crate::StreamState::on_spool_done)).
//!
//! - Back-pressure: while a write runs and a further 64 KiB waits behind
//!   it, [`StreamState::wants_request`](crate::StreamState::wants_request)
//!   is false and the server stops reading the stream (HTTP/2 flow control
//!   then stops Envoy). The chunks waiting for their write are reserved
//!   from the [`HeldBudget`] like held chunks.
//! - Disk cap: spooled bytes are reserved from a second budget shared by
//!   every stream of the server (`--max-spooled-bytes`, 4 GiB by default),
//!   given back as they are read back. Past it, or when the file cannot be
//!   created or written, the request is refused like an overload (503
//!   `overloaded`, `Retry-After`), and a failed write is logged at `warn`
//!   with the I/O error.
//! - Replay, at the decision: the held-headers reply, the chunks held in
//!   memory, the file read back in pieces of
//!   [`SPOOL_READ_BYTES`](bbr_core::spool::SPOOL_READ_BYTES) (one read
//!   ahead of the replies being sent), the chunks whose write had not run
//!   yet, then the deciding chunk (with its `end_of_stream`) and the
//!   trailers reply, all as `streamed_response` messages of at most 62,000
//!   bytes. The server reads no further message until the replay is out.
//!   A read failing during the replay ends the request with the same 503
//!   (the upstream has part of the body by then).
//! - A spooled body is routed as requested and not rewritten by a model
//!   rewrite rule (the token would have to be spliced into bytes that are
//!   on disk), as in the tower layer; the requested-model header is still
//!   set.
//! - `STREAMED` with rewrites holds its chunks here too but never spools
//!   them: Envoy holds those bytes as well, within its own buffer limits.
//!
//! [`Refusal::Overloaded`]: bbr_core::contract::Refusal::Overloaded

use std::sync::atomic::{AtomicU64, Ordering};

use bbr_core::spool::{MemoryBudget, SpoolError, SpoolFile, SpoolRead, SpoolWrite, SpoolWritten};
use bytes::{Bytes, BytesMut};

use crate::mutation::MAX_CHUNK_BYTES;

/// Held chunks shorter than this are copied into a shared buffer.
pub const COALESCE_BELOW: usize = 4096;

/// Memory counted per held piece on top of its bytes: the `Bytes` handle,
/// its shared header and the `Vec` slot, rounded up.
pub const PIECE_OVERHEAD: u64 = 64;

/// The global cap on body bytes held across every stream of one server
/// (chunks held before the decision, counted with their overhead), with
/// the gauge and counter an operator needs.
///
/// ```
/// use bbr_extproc::HeldBudget;
/// let budget = HeldBudget::new(1 << 20);
/// assert_eq!((budget.cap(), budget.held(), budget.refused()), (1 << 20, 0, 0));
/// assert_eq!(HeldBudget::default().cap(), HeldBudget::DEFAULT_CAP);
/// ```
#[derive(Debug)]
pub struct HeldBudget {
    cap: u64,
    held: AtomicU64,
    refused: AtomicU64,
}

impl Default for HeldBudget {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAP)
    }
}

impl HeldBudget {
    /// 512 MiB: the contract's
    /// [`DEFAULT_MAX_HELD_BYTES`](bbr_core::contract::DEFAULT_MAX_HELD_BYTES),
    /// shared with the tower layer.
    pub const DEFAULT_CAP: u64 = bbr_core::contract::DEFAULT_MAX_HELD_BYTES;

    /// A budget of `cap` bytes.
    ///
    /// ```
    /// assert_eq!(bbr_extproc::HeldBudget::new(64).cap(), 64);
    /// ```
    pub fn new(cap: u64) -> Self {
        Self {
            cap,
            held: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The cap in bytes.
    ///
    /// ```
    /// assert_eq!(bbr_extproc::HeldBudget::new(7).cap(), 7);
    /// ```
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes held right now across every stream (a gauge).
    ///
    /// ```
    /// assert_eq!(bbr_extproc::HeldBudget::new(7).held(), 0);
    /// ```
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Requests refused because the cap was reached (a counter).
    ///
    /// ```
    /// assert_eq!(bbr_extproc::HeldBudget::new(7).refused(), 0);
    /// ```
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Reserves `bytes`, or counts a refusal and reserves nothing.
    pub(crate) fn try_reserve(&self, bytes: u64) -> bool {
        let reserved = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.cap)
            })
            .is_ok();
        if !reserved {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        reserved
    }

    pub(crate) fn release(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// A stream reserves from the budget it shares with the other streams.
impl MemoryBudget for &HeldBudget {
    fn try_reserve(&mut self, bytes: u64) -> bool {
        HeldBudget::try_reserve(self, bytes)
    }

    fn release(&mut self, bytes: u64) {
        HeldBudget::release(self, bytes);
    }
}

/// Blocking file work of one stream's disk spool, to run where blocking is
/// allowed (the server uses tokio's `spawn_blocking`), at most one at a
/// time per stream; its result goes back to
/// [`StreamState::on_spool_done`](crate::StreamState::on_spool_done).
///
/// ```
/// use bbr_extproc::held::{SpoolDone, SpoolJob};
/// let mut file = bbr_core::spool::SpoolFile::create_in(&std::env::temp_dir())?;
/// file.append(b"spooled")?;
/// let SpoolDone::Read(_, read) = SpoolJob::Read(file).run() else { unreachable!() };
/// assert_eq!(&read?.unwrap()[..], b"spooled");
/// # Ok::<(), bbr_core::spool::SpoolError>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum SpoolJob {
    /// Append chunks to the spool file (the first write creates it).
    Write(SpoolWrite),
    /// Read the next piece of the file back (a [`SpoolRead`]: at most
    /// [`SPOOL_READ_BYTES`](bbr_core::spool::SPOOL_READ_BYTES)), after the
    /// decision.
    Read(SpoolFile),
}

impl SpoolJob {
    /// Runs the job (blocking I/O).
    pub fn run(self) -> SpoolDone {
        match self {
            SpoolJob::Write(write) => SpoolDone::Written(write.run()),
            SpoolJob::Read(file) => {
                let (file, read) = SpoolRead::new(file).run();
                SpoolDone::Read(file, read)
            }
        }
    }
}

/// The result of a [`SpoolJob`].
#[derive(Debug)]
#[non_exhaustive]
pub enum SpoolDone {
    /// A write ran (or failed).
    Written(SpoolWritten),
    /// A read ran: the file back, and the bytes read (`None` at its end).
    Read(SpoolFile, Result<Option<Bytes>, SpoolError>),
    /// The job did not finish (its task panicked or the runtime is
    /// shutting down): handled like a failed write.
    Lost,
}

/// The chunks one stream holds, in order, coalescing small ones.
#[derive(Debug, Default)]
pub(crate) struct HeldChunks {
    pieces: Vec<Bytes>,
    open: BytesMut,
    bytes: u64,
    memory: u64,
}

impl HeldChunks {
    /// Holds `chunk` after everything held so far.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.bytes += chunk.len() as u64;
        if chunk.len() >= COALESCE_BELOW {
            self.seal();
            self.memory += chunk.len() as u64 + PIECE_OVERHEAD;
            self.pieces.push(chunk);
            return;
        }
        if self.open.len() + chunk.len() > MAX_CHUNK_BYTES {
            self.seal();
        }
        let before = self.open.capacity();
        if before - self.open.len() < chunk.len() {
            // Doubling, capped at one outgoing message.
            let want = (self.open.len() + chunk.len())
                .max(before * 2)
                .clamp(1024, MAX_CHUNK_BYTES);
            let mut grown = BytesMut::with_capacity(want);
            grown.extend_from_slice(&self.open);
            self.open = grown;
        }
        self.open.extend_from_slice(&chunk);
        self.memory += (self.open.capacity() - before) as u64;
        if before == 0 {
            self.memory += PIECE_OVERHEAD;
        }
    }

    /// Body bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Memory held: the bytes, buffer slack and per-piece overhead.
    pub(crate) fn memory(&self) -> u64 {
        self.memory
    }

    /// Pieces held (sealed plus the open buffer).
    pub(crate) fn pieces(&self) -> usize {
        self.pieces.len() + usize::from(!self.open.is_empty())
    }

    /// Everything held, in order, each piece at most `MAX_CHUNK_BYTES` when
    /// it was coalesced here; leaves nothing held.
    pub(crate) fn take(&mut self) -> Vec<Bytes> {
        self.seal();
        self.bytes = 0;
        self.memory = 0;
        std::mem::take(&mut self.pieces)
    }

    fn seal(&mut self) {
        if !self.open.is_empty() {
            self.pieces.push(std::mem::take(&mut self.open).freeze());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_chunks_are_held_as_they_are_and_small_ones_coalesced_in_order() {
        let mut held = HeldChunks::default();
        let big = Bytes::from(vec![b'x'; COALESCE_BELOW]);
        held.push(Bytes::from_static(b"ab"));
        held.push(Bytes::from_static(b"cd"));
        held.push(big.clone());
        held.push(Bytes::from_static(b"e"));
        assert_eq!(held.pieces(), 3);
        assert_eq!(held.bytes(), 5 + COALESCE_BELOW as u64);
        let pieces = held.take();
        assert_eq!(pieces[0], Bytes::from_static(b"abcd"));
        assert_eq!(pieces[1].as_ptr(), big.as_ptr(), "no copy of a large chunk");
        assert_eq!(pieces[2], Bytes::from_static(b"e"));
        assert_eq!((held.bytes(), held.memory(), held.pieces()), (0, 0, 0));
    }

    #[test]
    fn a_chunk_one_byte_under_the_threshold_is_copied_and_one_at_it_is_not() {
        let mut held = HeldChunks::default();
        let under = Bytes::from(vec![1; COALESCE_BELOW - 1]);
        let at = Bytes::from(vec![2; COALESCE_BELOW]);
        held.push(under.clone());
        held.push(at.clone());
        let pieces = held.take();
        assert_ne!(pieces[0].as_ptr(), under.as_ptr());
        assert_eq!(pieces[0], under);
        assert_eq!(pieces[1].as_ptr(), at.as_ptr());
    }

    #[test]
    fn coalesced_buffers_never_exceed_one_outgoing_message() {
        let mut held = HeldChunks::default();
        let chunk = Bytes::from(vec![7; 1000]);
        for _ in 0..200 {
            held.push(chunk.clone());
        }
        let memory = held.memory();
        let pieces = held.take();
        assert!(pieces.iter().all(|p| p.len() <= MAX_CHUNK_BYTES));
        assert_eq!(pieces.iter().map(Bytes::len).sum::<usize>(), 200_000);
        // The bytes plus at most the slack of the buffers and their overhead.
        assert!(memory <= 200_000 + 4 * (MAX_CHUNK_BYTES as u64 + PIECE_OVERHEAD));
    }

    #[test]
    fn the_budget_refuses_past_its_cap_and_counts_it() {
        let budget = HeldBudget::new(100);
        assert!(budget.try_reserve(60));
        assert!(budget.try_reserve(40), "exactly at the cap");
        assert!(!budget.try_reserve(1), "one past it");
        assert_eq!((budget.held(), budget.refused()), (100, 1));
        budget.release(100);
        assert_eq!(budget.held(), 0);
    }
}
