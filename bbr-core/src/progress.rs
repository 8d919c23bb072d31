//! What one fed chunk told the extractor.

use crate::Model;

/// The answer to [`ModelExtractor::feed`](crate::ModelExtractor::feed).
///
/// ```
/// use bbr_core::{ModelExtractor, Progress};
/// use bytes::Bytes;
/// let mut extractor = ModelExtractor::default();
/// assert_eq!(extractor.feed(&Bytes::from_static(b"{\"stream\":true")).unwrap(), Progress::NeedMore);
/// assert_eq!(extractor.feed(&Bytes::from_static(b"}")).unwrap(), Progress::Absent);
/// assert_eq!(extractor.feed(&Bytes::from_static(b"\n")).unwrap(), Progress::Decided);
/// ```
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
///
/// ```
/// use bbr_core::{extract_model, Limits, Outcome};
/// use bytes::Bytes;
/// let outcome = extract_model(&Bytes::from_static(b"{}"), &Limits::new()).unwrap();
/// assert_eq!(outcome, Outcome::Absent);
/// ```
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
    ///
    /// ```
    /// use bbr_core::{extract_model, Limits};
    /// use bytes::Bytes;
    /// let outcome = extract_model(&Bytes::from_static(br#"{"model":"m"}"#), &Limits::new()).unwrap();
    /// assert_eq!(outcome.model().map(|m| m.as_str()), Some("m"));
    /// ```
    pub fn model(&self) -> Option<&Model> {
        match self {
            Outcome::Found(m) => Some(m),
            Outcome::Absent => None,
        }
    }
}
