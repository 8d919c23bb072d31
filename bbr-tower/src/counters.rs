//! What a layer counts, and the global budget of held bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by a layer, its clones and every service it builds.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    found: AtomicU64,
    absent: AtomicU64,
    unread: AtomicU64,
    refused: AtomicU64,
    violations: AtomicU64,
    decision_timeouts: AtomicU64,
    overloaded: AtomicU64,
    held_peak: AtomicU64,
    /// Bytes held right now by every request of the layer (the global cap
    /// applies to this).
    held_now: AtomicU64,
    /// Bytes spooled to disk right now by every request of the layer (the
    /// disk cap applies to this).
    spooled_now: AtomicU64,
    /// Requests that spooled anything.
    spooled_requests: AtomicU64,
}

impl Counters {
    pub(crate) fn record_found(&self, held: u64) {
        self.found.fetch_add(1, Ordering::Relaxed);
        self.held_peak.fetch_max(held, Ordering::Relaxed);
    }

    pub(crate) fn record_absent(&self, held: u64) {
        self.absent.fetch_add(1, Ordering::Relaxed);
        self.held_peak.fetch_max(held, Ordering::Relaxed);
    }

    pub(crate) fn record_unread(&self) {
        self.unread.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_refused(&self, held: u64) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.held_peak.fetch_max(held, Ordering::Relaxed);
    }

    pub(crate) fn record_decision_timeout(&self) {
        self.decision_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_violation(&self) {
        self.violations.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_spooling(&self) {
        self.spooled_requests.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn violations_for_tests(&self) -> u64 {
        self.violations.load(Ordering::Relaxed)
    }
}

/// What one request holds against one of the layer's global caps (memory,
/// or disk for the spool). Released as the held bytes are handed out, and
/// in full when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    counters: Arc<Counters>,
    cap: u64,
    bytes: u64,
    disk: bool,
}

impl Reservation {
    /// Against the memory cap.
    pub(crate) fn new(counters: Arc<Counters>, cap: u64) -> Self {
        Self {
            counters,
            cap,
            bytes: 0,
            disk: false,
        }
    }

    /// Against the disk cap of the spool.
    pub(crate) fn disk(counters: Arc<Counters>, cap: u64) -> Self {
        Self {
            counters,
            cap,
            bytes: 0,
            disk: true,
        }
    }

    fn now(&self) -> &AtomicU64 {
        if self.disk {
            &self.counters.spooled_now
        } else {
            &self.counters.held_now
        }
    }

    /// Reserves `bytes` more, or returns false (and counts an overload)
    /// when that would take all requests together over the cap.
    pub(crate) fn try_grow(&mut self, bytes: u64) -> bool {
        let before = self.now().fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.cap {
            self.now().fetch_sub(bytes, Ordering::Relaxed);
            self.counters.overloaded.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.bytes += bytes;
        true
    }

    /// Gives back `bytes` (a held frame was handed out).
    pub(crate) fn shrink(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        self.now().fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes reserved now.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

/// A scan reserves its spool's waiting chunks from its own reservation.
impl bbr_core::spool::MemoryBudget for Reservation {
    fn try_reserve(&mut self, bytes: u64) -> bool {
        self.try_grow(bytes)
    }

    fn release(&mut self, bytes: u64) {
        self.shrink(bytes);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.now().fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// What a [`ModelRoutingLayer`](crate::ModelRoutingLayer) did so far. Cheap
/// to clone; all clones read the same counters.
///
/// ```
/// let stats = bbr_tower::ModelRoutingLayer::new().stats();
/// assert_eq!((stats.found(), stats.decision_timeouts(), stats.overloaded(), stats.held_bytes()), (0, 0, 0, 0));
/// ```
#[derive(Debug, Clone)]
pub struct RoutingStats {
    counters: Arc<Counters>,
}

impl RoutingStats {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        Self { counters }
    }

    /// Requests forwarded with the model header.
    pub fn found(&self) -> u64 {
        self.counters.found.load(Ordering::Relaxed)
    }

    /// Requests with a valid body but no `model`, forwarded without the header.
    pub fn absent(&self) -> u64 {
        self.counters.absent.load(Ordering::Relaxed)
    }

    /// Requests forwarded without reading the body (no body, empty body).
    /// A body whose `Content-Encoding` is not decoded is counted as
    /// [`absent`](Self::absent).
    pub fn unread(&self) -> u64 {
        self.counters.unread.load(Ordering::Relaxed)
    }

    /// Requests the layer answered itself (every refusal, including the
    /// decision timeouts and overloads counted below).
    pub fn refused(&self) -> u64 {
        self.counters.refused.load(Ordering::Relaxed)
    }

    /// Requests refused with 408 because no decision came within the
    /// decision deadline.
    pub fn decision_timeouts(&self) -> u64 {
        self.counters.decision_timeouts.load(Ordering::Relaxed)
    }

    /// Requests refused with 503 because the bytes held across all requests
    /// would have gone over the global cap, or the bytes spooled over the
    /// disk cap (feature `spool`), or the spool could not write.
    pub fn overloaded(&self) -> u64 {
        self.counters.overloaded.load(Ordering::Relaxed)
    }

    /// Forwarded bodies ended with a [`BodyViolation`](crate::BodyViolation).
    pub fn body_violations(&self) -> u64 {
        self.counters.violations.load(Ordering::Relaxed)
    }

    /// The most memory any one request had held before its decision, as the
    /// layer accounts it: held bytes plus a fixed overhead per held frame
    /// and the decoders of a compressed body (see the crate docs, "Memory").
    pub fn held_bytes_peak(&self) -> u64 {
        self.counters.held_peak.load(Ordering::Relaxed)
    }

    /// The memory held right now by all requests of the layer, accounted
    /// the same way; the global cap applies to it.
    pub fn held_bytes(&self) -> u64 {
        self.counters.held_now.load(Ordering::Relaxed)
    }

    /// Bytes spooled to disk right now by all requests of the layer
    /// (feature `spool`); the disk cap
    /// ([`ModelRoutingLayer::max_spooled_bytes`](crate::ModelRoutingLayer)) applies to it.
    pub fn spooled_bytes(&self) -> u64 {
        self.counters.spooled_now.load(Ordering::Relaxed)
    }

    /// Requests whose held bytes passed the spool's memory threshold and
    /// went (partly) to disk.
    pub fn spooled_requests(&self) -> u64 {
        self.counters.spooled_requests.load(Ordering::Relaxed)
    }
}
