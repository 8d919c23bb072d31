//! Limits and the duplicate-key policy.

use crate::contract::UnknownPolicy;

/// What to do when the top-level object holds `model` more than once.
///
/// ```
/// use bbr_core::{extract_model, DuplicateKeys, Limits};
/// use bytes::Bytes;
/// let body = Bytes::from_static(br#"{"model":"a","model":"b"}"#);
/// let last = Limits::new().with_duplicate_keys("last-wins".parse().unwrap());
/// assert_eq!(extract_model(&body, &last).unwrap().model().unwrap().as_str(), "b");
/// assert!(extract_model(&body, &Limits::new()).is_err());
/// ```
///
/// The gateway and the model server must never disagree on the model, so the
/// default refuses such bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum DuplicateKeys {
    /// Decide on the first `model`, then keep validating the rest of the body
    /// as it streams through (valid JSON, no second top-level `model`) without
    /// holding it. A violation is reported with its offset. The default.
    #[default]
    Reject,
    /// Decide on the first `model`; the rest of the body is not checked.
    FirstWins,
    /// Decide only at the end of the body, on the last `model` (what Go's and
    /// Python's JSON decoders do).
    LastWins,
}

impl DuplicateKeys {
    /// Stable kebab-case name: `reject`, `first-wins`, `last-wins`.
    ///
    /// ```
    /// assert_eq!(bbr_core::DuplicateKeys::LastWins.as_str(), "last-wins");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            DuplicateKeys::Reject => "reject",
            DuplicateKeys::FirstWins => "first-wins",
            DuplicateKeys::LastWins => "last-wins",
        }
    }
}

impl std::str::FromStr for DuplicateKeys {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reject" => Ok(DuplicateKeys::Reject),
            "first-wins" => Ok(DuplicateKeys::FirstWins),
            "last-wins" => Ok(DuplicateKeys::LastWins),
            _ => Err(UnknownPolicy::new(
                "duplicate-key",
                "reject, first-wins or last-wins",
                s,
            )),
        }
    }
}

/// Bounds on what one extraction may read and return.
///
/// | limit | default | error past it |
/// | --- | --- | --- |
/// | [`max_model_len`](Limits::max_model_len) | 256 bytes | `model_too_long` |
/// | [`max_depth`](Limits::max_depth) | 128 | `too_deep` |
/// | [`max_scan_bytes`](Limits::max_scan_bytes) | 32 MiB | `scan_limit` |
/// | [`max_body_bytes`](Limits::max_body_bytes) | 128 MiB | `body_too_large` |
///
/// ```
/// use bbr_core::{DuplicateKeys, Limits};
/// let limits = Limits::new().with_max_model_len(64).with_duplicate_keys(DuplicateKeys::FirstWins);
/// assert_eq!(limits.max_model_len(), 64);
/// assert_eq!(limits.max_depth(), 128);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Limits {
    max_model_len: usize,
    max_depth: u32,
    max_scan_bytes: u64,
    max_body_bytes: u64,
    duplicate_keys: DuplicateKeys,
}

impl Limits {
    /// Default `max_model_len`: 256 bytes.
    pub const DEFAULT_MAX_MODEL_LEN: usize = 256;
    /// Default `max_depth`: 128 levels.
    pub const DEFAULT_MAX_DEPTH: u32 = 128;
    /// Default `max_scan_bytes`: 32 MiB (a chat body with several base64 images
    /// before `model` still decides).
    pub const DEFAULT_MAX_SCAN_BYTES: u64 = 32 * 1024 * 1024;
    /// Default `max_body_bytes`: 128 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: u64 = 128 * 1024 * 1024;

    /// The defaults above, with [`DuplicateKeys::Reject`].
    ///
    /// ```
    /// assert_eq!(bbr_core::Limits::new(), bbr_core::Limits::default());
    /// ```
    pub const fn new() -> Self {
        Self {
            max_model_len: Self::DEFAULT_MAX_MODEL_LEN,
            max_depth: Self::DEFAULT_MAX_DEPTH,
            max_scan_bytes: Self::DEFAULT_MAX_SCAN_BYTES,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            duplicate_keys: DuplicateKeys::Reject,
        }
    }

    /// Longest accepted model, in bytes after unescaping. A model of exactly
    /// this length is accepted; one byte more is `model_too_long`.
    ///
    /// ```
    /// assert_eq!(bbr_core::Limits::new().with_max_model_len(64).max_model_len(), 64);
    /// ```
    pub const fn with_max_model_len(mut self, bytes: usize) -> Self {
        self.max_model_len = bytes;
        self
    }

    /// Deepest accepted nesting; the root object is depth 1. A body nested
    /// exactly this deep is accepted; one level more is `too_deep`.
    ///
    /// ```
    /// assert_eq!(bbr_core::Limits::new().with_max_depth(16).max_depth(), 16);
    /// ```
    pub const fn with_max_depth(mut self, depth: u32) -> Self {
        self.max_depth = depth;
        self
    }

    /// Most bytes read before a decision. A decision that needs exactly this
    /// many bytes is reached; needing one more is `scan_limit`.
    ///
    /// ```
    /// assert_eq!(bbr_core::Limits::new().with_max_scan_bytes(1 << 20).max_scan_bytes(), 1 << 20);
    /// ```
    pub const fn with_max_scan_bytes(mut self, bytes: u64) -> Self {
        self.max_scan_bytes = bytes;
        self
    }

    /// Longest accepted body. Exactly this many bytes is accepted; one more is
    /// `body_too_large` (counted on every policy, also after the decision).
    ///
    /// ```
    /// assert_eq!(bbr_core::Limits::new().with_max_body_bytes(1 << 20).max_body_bytes(), 1 << 20);
    /// ```
    pub const fn with_max_body_bytes(mut self, bytes: u64) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// What to do with a second top-level `model`.
    ///
    /// ```
    /// use bbr_core::{DuplicateKeys, Limits};
    /// let limits = Limits::new().with_duplicate_keys(DuplicateKeys::FirstWins);
    /// assert_eq!(limits.duplicate_keys(), DuplicateKeys::FirstWins);
    /// ```
    pub const fn with_duplicate_keys(mut self, policy: DuplicateKeys) -> Self {
        self.duplicate_keys = policy;
        self
    }

    /// The configured `max_model_len`.
    ///
    /// ```
    /// assert_eq!(bbr_core::Limits::new().max_model_len(), 256);
    /// ```
    pub const fn max_model_len(&self) -> usize {
        self.max_model_len
    }

    /// The configured `max_depth`.
    ///
    /// ```
    /// assert_eq!(bbr_core::Limits::new().max_depth(), 128);
    /// ```
    pub const fn max_depth(&self) -> u32 {
        self.max_depth
    }

    /// The configured `max_scan_bytes`.
    ///
    /// ```
    /// assert_eq!(bbr_core::Limits::new().max_scan_bytes(), 32 * 1024 * 1024);
    /// ```
    pub const fn max_scan_bytes(&self) -> u64 {
        self.max_scan_bytes
    }

    /// The configured `max_body_bytes`.
    ///
    /// ```
    /// assert_eq!(bbr_core::Limits::new().max_body_bytes(), 128 * 1024 * 1024);
    /// ```
    pub const fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    /// The configured duplicate-key policy.
    ///
    /// ```
    /// assert_eq!(bbr_core::Limits::new().duplicate_keys(), bbr_core::DuplicateKeys::Reject);
    /// ```
    pub const fn duplicate_keys(&self) -> DuplicateKeys {
        self.duplicate_keys
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new()
    }
}
