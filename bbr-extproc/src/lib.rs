//! bbr-extproc (being written).
mod error;
mod mutation;
pub mod proto;
mod stream;

pub use error::{Error, Rejection, StartError};
pub use mutation::{BASE_MODEL_HEADER, MAX_CHUNK_BYTES, MODEL_HEADER, ROUTING_HEADERS};
pub use stream::{BodyMode, OnMissingModel, Report, Settings, StreamState, Verdict};
