//! What one fed chunk told the extractor.

use crate::Model;

/// The answer to [`ModelExtractor::feed`](crate::ModelExtractor::feed).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// No decision yet: feed the next chunk.
    NeedMore,
    /// This chunk completed the top-level `model` string. Reported once.
    Found(Model),
    /// This chunk closed the root object without a top-level `model`.
    /// Reported once.
    Absent,
    /// Already decided by an earlier chunk. Under
    /// [`DuplicateKeys::Reject`](crate::DuplicateKeys::Reject) this chunk was
    /// validated and is fine so far; under `FirstWins` it was only counted.
    Decided,
}

/// The final answer for a whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The top-level `model`.
    Found(Model),
    /// A valid object without a top-level `model`.
    Absent,
}

impl Outcome {
    /// The model, if one was found.
    pub fn model(&self) -> Option<&Model> {
        match self {
            Outcome::Found(m) => Some(m),
            Outcome::Absent => None,
        }
    }
}
