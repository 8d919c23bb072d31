//! Incremental, zero-copy extraction of the top-level `model` from JSON
//! request bodies fed chunk by chunk.
//!
//! (Crate docs are being written.)
#![forbid(unsafe_code)]

#[doc(hidden)]
pub mod cli;
mod error;
mod extractor;
mod limits;
mod model;
mod progress;

pub use error::{ErrorClass, ErrorKind, ExtractError};
pub use extractor::{ModelExtractor, extract_model};
pub use limits::{DuplicateKeys, Limits, UnknownPolicy};
pub use model::Model;
pub use progress::{Outcome, Progress};

#[cfg(test)]
mod tests;
