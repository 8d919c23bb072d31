//! What every extractor does around its state machine, written once: where
//! the scan and body limits cut a chunk, the sticky error, what `feed`
//! reports and what `finish` decides under each duplicate-key policy.

use bytes::Bytes;

use crate::{DuplicateKeys, ErrorKind, ExtractError, Limits, Model, Outcome, Progress};

/// The first error of a body. Once set, every later `feed` and `finish`
/// returns it: errors are found in byte order, so the first one is the
/// body's answer whatever the chunking, and nothing after it is parsed.
#[derive(Debug, Clone, Default)]
pub(crate) struct StickyError(Option<ExtractError>);

impl StickyError {
    /// Already failed: the body's answer is `error` before any byte.
    pub(crate) fn failed(error: ExtractError) -> Self {
        Self(Some(error))
    }

    /// The error already recorded, if any.
    pub(crate) fn check(&self) -> Result<(), ExtractError> {
        match &self.0 {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// Passes `result` through, keeping its error for later calls.
    pub(crate) fn record<T>(&mut self, result: Result<T, ExtractError>) -> Result<T, ExtractError> {
        if let Err(error) = &result {
            self.0 = Some(error.clone());
        }
        result
    }
}

/// An extractor whose state machine runs over a range of a chunk. The
/// provided methods apply the limits (`max_scan_bytes` before the
/// decision, `max_body_bytes` always) with the contract's offsets, keep the
/// first error, and turn the state into `Progress` and `Outcome`, so that
/// the JSON and the form extractor cannot disagree on any of it.
pub(crate) trait BoundedScan {
    /// The limits in force.
    fn limits(&self) -> &Limits;
    /// The early decision (reject, first-wins), once made.
    fn decision(&self) -> Option<&Outcome>;
    /// The latest top-level model under last-wins, or why it is invalid.
    fn candidate(&self) -> Option<&Result<Model, ExtractError>>;
    /// True when the body's syntax is complete (the root object or the
    /// form's close delimiter was read).
    fn complete(&self) -> bool;
    /// True when nothing after the decision is parsed (first-wins).
    fn halted(&self) -> bool;
    /// Bytes fed so far.
    fn consumed_mut(&mut self) -> &mut u64;
    /// The body's sticky error.
    fn sticky_mut(&mut self) -> &mut StickyError;
    /// Runs the state machine over `chunk[start..end]` (`chunk[0]` is at
    /// absolute offset `base`); returns where it stopped.
    fn run_range(
        &mut self,
        chunk: &Bytes,
        start: usize,
        end: usize,
        base: u64,
    ) -> Result<usize, ExtractError>;

    /// True once the model is decided (found or absent).
    fn decided(&self) -> bool {
        self.decision().is_some()
    }

    /// `feed` of every extractor: `Found` or `Absent` once, for the chunk
    /// that decided, `Decided` afterwards, `NeedMore` before; errors are
    /// sticky.
    fn feed_chunk(&mut self, chunk: &Bytes) -> Result<Progress, ExtractError> {
        self.sticky_mut().check()?;
        let was_decided = self.decided();
        let consumed = self.consumed_mut();
        let base = *consumed;
        *consumed = base.saturating_add(chunk.len() as u64);
        let fed = self.feed_bounded(chunk, base);
        self.sticky_mut().record(fed)?;
        Ok(match self.decision() {
            None => Progress::NeedMore,
            Some(_) if was_decided => Progress::Decided,
            Some(Outcome::Found(model)) => Progress::Found(model.clone()),
            Some(Outcome::Absent) => Progress::Absent,
        })
    }

    /// `finish` of every extractor: the verdict for the whole body, or
    /// the error (sticky too).
    fn finish_body(&mut self) -> Result<Outcome, ExtractError> {
        self.sticky_mut().check()?;
        let verdict = self.verdict();
        self.sticky_mut().record(verdict)
    }

    /// First-wins answers its decision; reject its decision once the body
    /// is complete; last-wins its last candidate once complete. Anything
    /// else is a body that ended early (`unexpected_end` at its length).
    fn verdict(&mut self) -> Result<Outcome, ExtractError> {
        let complete = self.complete();
        let end = *self.consumed_mut();
        match (self.decision(), self.limits().duplicate_keys()) {
            (Some(outcome), DuplicateKeys::FirstWins) => Ok(outcome.clone()),
            (Some(outcome), _) if complete => Ok(outcome.clone()),
            (None, DuplicateKeys::LastWins) if complete => match self.candidate() {
                None => Ok(Outcome::Absent),
                Some(Ok(model)) => Ok(Outcome::Found(model.clone())),
                Some(Err(error)) => Err(error.clone()),
            },
            _ => Err(ExtractError::new(ErrorKind::UnexpectedEnd, end)),
        }
    }

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
