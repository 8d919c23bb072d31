//! Limits, the duplicate-key policy and the name of the routed field.

use crate::contract::UnknownPolicy;

/// The top-level key whose string value is the model: `model` by default,
/// another name for gateways configured like the upstream
/// `body-field-to-header` plugin with a `fieldName` of their own.
///
/// Stored inline (at most [`FieldName::MAX_LEN`] bytes), so it is `Copy`,
/// [`Limits`] stays `Copy`, and no request allocates for it. Keys in the body
/// are compared with it after unescaping, exactly and case-sensitively, as
/// for `model`. The name itself must be non-empty UTF-8 without control
/// characters (C0, DEL, C1), `"` or `\`, so that it matches a key of the
/// body only by its unescaped value.
///
/// ```
/// use bbr_core::{extract_model, FieldName, Limits};
/// use bytes::Bytes;
///
/// let field: FieldName = "model_name".parse().unwrap();
/// let limits = Limits::new().with_field(field);
/// let body = Bytes::from_static(br#"{"model":"ignored","model_n\u0061me":"food-review-1"}"#);
/// let outcome = extract_model(&body, &limits).unwrap();
/// assert_eq!(outcome.model().unwrap().as_str(), "food-review-1");
///
/// assert_eq!(Limits::new().field().as_str(), "model");
/// assert!("".parse::<FieldName>().is_err());
/// assert!("a\"b".parse::<FieldName>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldName {
    bytes: [u8; FieldName::MAX_LEN],
    len: u8,
}

/// Why a string cannot be a [`FieldName`].
///
/// ```
/// use bbr_core::{FieldName, InvalidFieldName};
/// assert_eq!(FieldName::new(""), Err(InvalidFieldName::Empty));
/// assert_eq!(FieldName::new(&"x".repeat(65)), Err(InvalidFieldName::TooLong { limit: 64 }));
/// assert_eq!(FieldName::new("a\tb"), Err(InvalidFieldName::ForbiddenChar { at: 1 }));
/// assert_eq!(
///     FieldName::new("").unwrap_err().to_string(),
///     "the body field name is empty"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidFieldName {
    /// The name is the empty string.
    #[error("the body field name is empty")]
    Empty,
    /// The name is longer than [`FieldName::MAX_LEN`] bytes.
    #[error("the body field name is longer than {limit} bytes")]
    TooLong {
        /// [`FieldName::MAX_LEN`].
        limit: usize,
    },
    /// A control character, `"` or `\` at this byte of the name.
    #[error("the body field name holds a control character, '\"' or '\\' at byte {at}")]
    ForbiddenChar {
        /// Byte index in the name.
        at: usize,
    },
}

impl FieldName {
    /// Longest field name: 64 bytes.
    pub const MAX_LEN: usize = 64;

    /// `model`, the default.
    pub const MODEL: FieldName = FieldName::from_static("model");

    /// Checks and stores `name`.
    ///
    /// ```
    /// use bbr_core::FieldName;
    /// assert_eq!(FieldName::new("model").unwrap(), FieldName::MODEL);
    /// assert_eq!(FieldName::new(&"x".repeat(64)).unwrap().as_str().len(), 64);
    /// assert!(FieldName::new(&"x".repeat(65)).is_err());
    /// ```
    pub const fn new(name: &str) -> Result<Self, InvalidFieldName> {
        let src = name.as_bytes();
        if src.is_empty() {
            return Err(InvalidFieldName::Empty);
        }
        if src.len() > Self::MAX_LEN {
            return Err(InvalidFieldName::TooLong {
                limit: Self::MAX_LEN,
            });
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        let mut i = 0;
        while i < src.len() {
            let b = src[i];
            // C1 controls are U+0080..=U+009F: 0xC2 followed by 0x80..=0x9F.
            let c1 = b == 0xc2 && i + 1 < src.len() && src[i + 1] < 0xa0;
            if b < 0x20 || b == 0x7f || b == b'"' || b == b'\\' || c1 {
                return Err(InvalidFieldName::ForbiddenChar { at: i });
            }
            bytes[i] = b;
            i += 1;
        }
        Ok(Self {
            bytes,
            len: src.len() as u8,
        })
    }

    const fn from_static(name: &'static str) -> Self {
        match Self::new(name) {
            Ok(field) => field,
            Err(_) => panic!("invalid built-in field name"),
        }
    }

    /// The name as text.
    ///
    /// ```
    /// assert_eq!(bbr_core::FieldName::MODEL.as_str(), "model");
    /// ```
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("FieldName holds a checked &str")
    }

    /// The name's bytes.
    ///
    /// ```
    /// assert_eq!(bbr_core::FieldName::MODEL.as_bytes(), b"model");
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The first 16 bytes of the inline buffer (the name, then whatever
    /// follows it): short keys are compared with it in two words.
    pub(crate) fn head16(&self) -> &[u8; 16] {
        self.bytes.first_chunk().expect("64 bytes")
    }
}

impl Default for FieldName {
    fn default() -> Self {
        Self::MODEL
    }
}

impl std::fmt::Debug for FieldName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FieldName").field(&self.as_str()).finish()
    }
}

impl std::fmt::Display for FieldName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FieldName {
    type Err = InvalidFieldName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

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
/// It also names the routed field ([`Limits::with_field`], `model` by
/// default); the error kinds keep their names whatever the field is called.
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
    field: FieldName,
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
            field: FieldName::MODEL,
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

    /// The top-level key to read instead of `model` (for a gateway whose
    /// clients put the routed name under another key, like the upstream
    /// `body-field-to-header` plugin's `fieldName`). Every rule for `model`
    /// applies to it: top level only, compared after unescaping,
    /// duplicates per [`DuplicateKeys`], the value a [`Model`](crate::Model).
    ///
    /// ```
    /// use bbr_core::{extract_model, ErrorKind, FieldName, Limits};
    /// use bytes::Bytes;
    /// let limits = Limits::new().with_field(FieldName::new("target").unwrap());
    /// assert_eq!(limits.field().as_str(), "target");
    /// let body = Bytes::from_static(br#"{"model":"a","target":"ski-resorts"}"#);
    /// assert_eq!(extract_model(&body, &limits).unwrap().model().unwrap().as_str(), "ski-resorts");
    /// let body = Bytes::from_static(br#"{"target":"a","target":"b"}"#);
    /// assert_eq!(extract_model(&body, &limits).unwrap_err().kind(), ErrorKind::DuplicateModel);
    /// ```
    pub const fn with_field(mut self, field: FieldName) -> Self {
        self.field = field;
        self
    }

    /// The configured field name (`model` unless set).
    ///
    /// ```
    /// assert_eq!(bbr_core::Limits::new().field(), &bbr_core::FieldName::MODEL);
    /// ```
    pub const fn field(&self) -> &FieldName {
        &self.field
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
