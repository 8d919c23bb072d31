//! Request extensions set by the layer.

use bbr_core::encoding::ContentEncoding;
use bbr_core::{BodyExtractor, BodyKind, Model};
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

/// How the layer read a request body, as a request extension: set on every
/// request whose body the layer looked at (not on a request without a
/// body). The kind and codings come from the request's headers by the
/// core's one rule ([`BodyExtractor::for_headers`](bbr_core::BodyExtractor::for_headers)).
///
/// ```
/// use bbr_core::{BodyExtractor, Limits};
/// use bbr_tower::BodyFormat;
/// let gzip_form = BodyExtractor::for_headers(["multipart/form-data; boundary=b"], ["gzip"], Limits::new());
/// let format = BodyFormat::of(&gzip_form);
/// assert_eq!(format.label(), if cfg!(feature = "gzip") { "compressed" } else { "multipart" });
/// assert_eq!(BodyFormat::of(&BodyExtractor::for_content(None, None, Limits::new())).label(), "json");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyFormat {
    kind: BodyKind,
    encoding: ContentEncoding,
}

impl BodyFormat {
    /// What `extractor` reads.
    pub fn of(extractor: &BodyExtractor) -> Self {
        Self {
            kind: extractor.kind(),
            encoding: *extractor.encoding(),
        }
    }

    /// JSON, a form, or not read (an encoding not decoded).
    pub fn kind(&self) -> BodyKind {
        self.kind
    }

    /// The codings decoded for reading (empty for a plain body).
    pub fn encoding(&self) -> &ContentEncoding {
        &self.encoding
    }

    /// True for a body sent with a `Content-Encoding`, decoded or not.
    pub fn is_compressed(&self) -> bool {
        !self.encoding.is_identity() || matches!(self.kind, BodyKind::NotDecoded(_))
    }

    /// A metrics label: `compressed` (any `Content-Encoding`, a
    /// compressed form included: decoding is what it costs), else
    /// `multipart` or `json`.
    pub fn label(&self) -> &'static str {
        match self.kind {
            _ if self.is_compressed() => "compressed",
            BodyKind::Multipart => "multipart",
            _ => "json",
        }
    }
}

/// What a model rewrite rule decided for a request (feature `adapters`),
/// as a request extension: set whenever a rule picked the request's target,
/// also when the target is the requested name (a canary keeping part of
/// the traffic). Not set when no rule matched, nor for a compressed body or
/// a form field, which are routed as requested.
pub use bbr_core::rewrite::ModelRewrite;
