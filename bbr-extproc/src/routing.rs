//! Which headers a routing decision sets: what the upstream's plugin chain
//! (`body-field-to-header`, `base-model-to-header`) configures.

use std::sync::Arc;

use bbr_core::contract::{BASE_MODEL_HEADER, MODEL_HEADER, routing_header};

/// The headers a decision sets: the one carrying the extracted field (the
/// `headerName` of `body-field-to-header`; none when the chain has only
/// `base-model-to-header`) and whether the base-model header is set from
/// the adapter map (`base-model-to-header`).
///
/// A client-sent copy of the model header is removed like the contract's
/// routing headers, which are always removed whatever is configured.
///
/// ```
/// use bbr_extproc::RoutingHeaders;
/// let default = RoutingHeaders::default();
/// assert_eq!(default.model(), Some("x-gateway-model-name"));
/// assert!(default.base_model());
/// let custom = RoutingHeaders::new(Some("X-Foo"), false).unwrap();
/// assert_eq!(custom.model(), Some("x-foo"));
/// assert!(RoutingHeaders::new(Some("bad header"), false).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingHeaders {
    model: Option<Arc<str>>,
    base_model: bool,
}

impl Default for RoutingHeaders {
    /// The upstream default chain: the model into `x-gateway-model-name`,
    /// and the base-model header.
    fn default() -> Self {
        Self {
            model: Some(MODEL_HEADER.into()),
            base_model: true,
        }
    }
}

/// A header name a decision cannot set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidHeaderName {
    /// Empty, or a character outside the HTTP token set.
    #[error("`{0}` is not a valid HTTP header name")]
    Syntax(Box<str>),
    /// A pseudo-header, hop-by-hop or framing header that Envoy does not
    /// let an ext_proc server set, or the base-model header.
    #[error("`{0}` cannot carry the model (reserved header)")]
    Reserved(Box<str>),
}

/// Headers Envoy refuses to let ext_proc mutate, or that frame the message.
const RESERVED: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    BASE_MODEL_HEADER,
];

impl RoutingHeaders {
    /// The model into `model` (lower-cased, as HTTP/2 requires; `None`: no
    /// model header), and the base-model header on or off.
    pub fn new(model: Option<&str>, base_model: bool) -> Result<Self, InvalidHeaderName> {
        let model = model
            .map(|name| {
                let is_token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
                if name.is_empty() || !name.bytes().all(is_token) {
                    return Err(InvalidHeaderName::Syntax(name.into()));
                }
                let lower = name.to_ascii_lowercase();
                if RESERVED.contains(&lower.as_str()) {
                    return Err(InvalidHeaderName::Reserved(name.into()));
                }
                Ok(Arc::<str>::from(lower))
            })
            .transpose()?;
        Ok(Self { model, base_model })
    }

    /// The header carrying the model, lower case.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// True when the base-model header is set.
    pub fn base_model(&self) -> bool {
        self.base_model
    }

    /// True when `name` is the configured model header but not one of the
    /// contract's routing headers (those are matched separately).
    pub(crate) fn is_custom_model_header(&self, name: &str) -> bool {
        self.model.as_deref().is_some_and(|model| {
            routing_header(model.as_bytes()).is_none() && model.eq_ignore_ascii_case(name)
        })
    }
}
