//! Where the scan and body limits cut a chunk, once for every extractor.

use bytes::Bytes;

use crate::{ErrorKind, ExtractError, Limits};

/// An extractor whose state machine runs over a range of a chunk. The
/// provided [`feed_bounded`](Self::feed_bounded) applies the limits
/// (`max_scan_bytes` before the decision, `max_body_bytes` always) and
/// reports them with the contract's offsets, so that the JSON and the form
/// extractor cannot disagree on them.
pub(crate) trait BoundedScan {
    /// The limits in force.
    fn limits(&self) -> &Limits;
    /// True once the model is decided (found or absent).
    fn decided(&self) -> bool;
    /// True when nothing after the decision is parsed (first-wins).
    fn halted(&self) -> bool;
    /// Runs the state machine over `chunk[start..end]` (`chunk[0]` is at
    /// absolute offset `base`); returns where it stopped.
    fn run_range(
        &mut self,
        chunk: &Bytes,
        start: usize,
        end: usize,
        base: u64,
    ) -> Result<usize, ExtractError>;

    /// Feeds `chunk`, whose first byte is at absolute offset `base`.
    fn feed_bounded(&mut self, chunk: &Bytes, base: u64) -> Result<(), ExtractError> {
        let len = chunk.len();
        let limits = *self.limits();
        let body_room = limits.max_body_bytes().saturating_sub(base);
        let body_end = usize::try_from(body_room).map_or(len, |room| room.min(len));
        let mut i = 0;
        if !self.decided() {
            let scan_room = limits.max_scan_bytes().saturating_sub(base);
            let scan_end = usize::try_from(scan_room).map_or(body_end, |room| room.min(body_end));
            i = self.run_range(chunk, 0, scan_end, base)?;
            if !self.decided() && scan_end < len {
                return Err(if scan_end == body_end {
                    body_too_large(&limits)
                } else {
                    let limit = limits.max_scan_bytes();
                    ExtractError::new(ErrorKind::ScanLimit { limit }, base + scan_end as u64)
                });
            }
        }
        if !self.halted() && i < body_end {
            self.run_range(chunk, i, body_end, base)?;
        }
        if body_end < len {
            return Err(body_too_large(&limits));
        }
        Ok(())
    }
}

/// The body limit's error: at the limit, the first byte past it.
pub(crate) fn body_too_large(limits: &Limits) -> ExtractError {
    let limit = limits.max_body_bytes();
    ExtractError::new(ErrorKind::BodyTooLarge { limit }, limit)
}
