//! The incremental extractor.

use bytes::Bytes;

use crate::{ExtractError, Limits, Outcome, Progress};

/// Incremental extractor of the top-level `model` of a JSON object, fed
/// `Bytes` chunks of any size.
///
/// PLACEHOLDER: the API is fixed; the implementation is being written.
#[derive(Debug)]
pub struct ModelExtractor {
    limits: Limits,
    consumed: u64,
}

impl ModelExtractor {
    /// A fresh extractor with these limits.
    pub fn new(limits: Limits) -> Self {
        Self { limits, consumed: 0 }
    }

    /// The limits this extractor enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Feeds the next chunk. After an error every later call returns the same
    /// error. Chunks are never retained; a found model may be a slice of
    /// `chunk`.
    pub fn feed(&mut self, chunk: &Bytes) -> Result<Progress, ExtractError> {
        self.consumed += chunk.len() as u64;
        Ok(Progress::NeedMore)
    }

    /// Ends the body and returns the final verdict (found or absent), or the
    /// error (for example `unexpected_end` on a truncated body).
    pub fn finish(&mut self) -> Result<Outcome, ExtractError> {
        Ok(Outcome::Absent)
    }

    /// Bytes fed so far.
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed
    }
}

impl Default for ModelExtractor {
    fn default() -> Self {
        Self::new(Limits::new())
    }
}

/// One-shot extraction from a whole body.
pub fn extract_model(body: &Bytes, limits: &Limits) -> Result<Outcome, ExtractError> {
    let mut extractor = ModelExtractor::new(*limits);
    extractor.feed(body)?;
    extractor.finish()
}
