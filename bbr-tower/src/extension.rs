//! Request extensions set by the layer.

use std::sync::Arc;

use bbr_core::Model;

/// The model the layer found, as a request extension (so handlers need not
/// parse the header again). Set only when the header is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelName(Model);

impl ModelName {
    pub(crate) fn new(model: Model) -> Self {
        Self(model)
    }

    /// The model name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The extracted [`Model`] (shares the client's bytes when it could).
    pub fn model(&self) -> &Model {
        &self.0
    }
}

impl std::fmt::Display for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The base model from the adapter map, as a request extension. Set only
/// when the base model header is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseModelName(Arc<str>);

impl BaseModelName {
    pub(crate) fn new(base: Arc<str>) -> Self {
        Self(base)
    }

    /// The base model name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BaseModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
