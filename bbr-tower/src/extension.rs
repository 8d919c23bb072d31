//! Request extensions set by the layer.

use bbr_core::Model;
use http::HeaderValue;
use http::header::InvalidHeaderValue;

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

/// A base model name, ready to be the `x-gateway-base-model-name` header
/// value: what a [`BaseModels`](crate::BaseModels) lookup returns, and the
/// request extension the layer sets beside the header.
///
/// Built once (when the map is loaded); cloning it shares the bytes, so a
/// lookup copies nothing per request.
///
/// ```
/// use bbr_tower::BaseModelName;
/// let base = BaseModelName::new("deepseek/vllm-deepseek-r1")?;
/// assert_eq!(base.as_str(), "deepseek/vllm-deepseek-r1");
/// assert_eq!(base.header_value(), "deepseek/vllm-deepseek-r1");
/// assert!(BaseModelName::new("two\nlines").is_err());
/// # Ok::<(), http::header::InvalidHeaderValue>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseModelName(HeaderValue);

impl BaseModelName {
    /// `name` as a header value; fails where a header value cannot carry it
    /// (control characters).
    pub fn new(name: &str) -> Result<Self, InvalidHeaderValue> {
        HeaderValue::from_str(name).map(Self)
    }

    /// The base model name.
    pub fn as_str(&self) -> &str {
        // Only built from a `&str`, so the bytes are UTF-8.
        std::str::from_utf8(self.0.as_bytes()).unwrap_or_default()
    }

    /// The header value (clone it: that shares the bytes).
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl std::fmt::Display for BaseModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
