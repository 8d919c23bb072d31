//! Typed extraction errors.

/// Why a body was refused, with the absolute byte offset in the stream where
/// the problem was detected.
///
/// ```
/// use bbr_core::{extract_model, ErrorKind, ExtractError, Limits};
/// use bytes::Bytes;
/// let err = extract_model(&Bytes::from_static(br#"{"model":""}"#), &Limits::new()).unwrap_err();
/// assert_eq!(err, ExtractError::new(ErrorKind::EmptyModel, 9));
/// assert_eq!(err.to_string(), "model is empty at byte 9");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
#[non_exhaustive]
pub struct ExtractError {
    kind: ErrorKind,
    offset: u64,
}

impl ExtractError {
    /// Creates an error of `kind` at absolute `offset`.
    ///
    /// ```
    /// use bbr_core::{ErrorKind, ExtractError};
    /// let err = ExtractError::new(ErrorKind::UnexpectedEnd, 42);
    /// assert_eq!((err.kind(), err.offset()), (ErrorKind::UnexpectedEnd, 42));
    /// ```
    pub const fn new(kind: ErrorKind, offset: u64) -> Self {
        Self { kind, offset }
    }

    /// What went wrong.
    ///
    /// ```
    /// use bbr_core::{ErrorKind, ExtractError};
    /// assert_eq!(ExtractError::new(ErrorKind::InvalidJson, 0).kind(), ErrorKind::InvalidJson);
    /// ```
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Absolute byte offset in the body (not within a chunk) where the
    /// problem was detected.
    ///
    /// ```
    /// use bbr_core::{ErrorKind, ExtractError};
    /// assert_eq!(ExtractError::new(ErrorKind::InvalidJson, 7).offset(), 7);
    /// ```
    pub const fn offset(&self) -> u64 {
        self.offset
    }
}

/// The kinds of extraction error. Each has a stable snake_case name
/// ([`ErrorKind::as_str`]) and belongs to one [`ErrorClass`].
///
/// ```
/// use bbr_core::{ErrorClass, ErrorKind};
/// let kind = ErrorKind::TooDeep { limit: 128 };
/// assert_eq!(kind.to_string(), "nesting deeper than 128");
/// assert_eq!(kind.class(), ErrorClass::InvalidJson);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The bytes are not JSON (a syntax error).
    #[error("invalid json")]
    InvalidJson,
    /// A string holds a malformed escape sequence (`\x`, bad `\u`, lone surrogate).
    #[error("invalid escape sequence")]
    InvalidEscape,
    /// A string holds bytes that are not UTF-8.
    #[error("invalid utf-8")]
    InvalidUtf8,
    /// The body ended before the JSON value was complete (including an empty body).
    #[error("unexpected end of body")]
    UnexpectedEnd,
    /// The top-level value is not an object.
    #[error("top-level value is not an object")]
    NotAnObject,
    /// Nesting deeper than the configured limit.
    #[error("nesting deeper than {limit}")]
    TooDeep {
        /// The configured `max_depth`.
        limit: u32,
    },
    /// The top-level `model` is not a string (null, number, bool, object, array).
    #[error("model is not a string")]
    ModelNotAString,
    /// The top-level `model` is empty after trimming spaces and tabs.
    #[error("model is empty")]
    EmptyModel,
    /// The model holds a control character after unescaping and trimming: C0
    /// (including CR/LF/NUL and a tab inside the name), DEL or C1 (U+0080–U+009F).
    #[error("model contains a control character")]
    ModelControlChar,
    /// The model is longer than the configured limit (bytes, after unescaping).
    #[error("model longer than {limit} bytes")]
    ModelTooLong {
        /// The configured `max_model_len`.
        limit: usize,
    },
    /// A second top-level `model` key (under [`DuplicateKeys::Reject`](crate::DuplicateKeys::Reject)).
    #[error("duplicate top-level model key")]
    DuplicateModel,
    /// No decision within the configured scan limit.
    #[error("no decision within {limit} bytes")]
    ScanLimit {
        /// The configured `max_scan_bytes`.
        limit: u64,
    },
    /// The body is longer than the configured body limit.
    #[error("body longer than {limit} bytes")]
    BodyTooLarge {
        /// The configured `max_body_bytes`.
        limit: u64,
    },
    /// A `multipart/form-data` body is malformed: no usable boundary, a bad
    /// delimiter line, a part header that is not `name: value`, a part
    /// without `Content-Disposition: form-data; name=...`.
    #[error("malformed multipart/form-data body")]
    InvalidMultipart,
    /// One part's header block is longer than the configured limit.
    #[error("multipart part headers longer than {limit} bytes")]
    PartHeadersTooLarge {
        /// The configured `max_header_bytes` of [`PartLimits`](crate::multipart::PartLimits).
        limit: usize,
    },
    /// One part has more header lines than the configured limit.
    #[error("more than {limit} headers in a multipart part")]
    TooManyPartHeaders {
        /// The configured `max_headers` of [`PartLimits`](crate::multipart::PartLimits).
        limit: usize,
    },
    /// A compressed body (`Content-Encoding`) is corrupt or truncated.
    #[error("corrupt or truncated compressed body")]
    InvalidEncoding,
    /// The decoded body grew more than the configured ratio over the encoded bytes.
    #[error("decoded body more than {limit} times larger than its encoding")]
    ExpansionRatio {
        /// The configured `max_ratio` of [`DecodeLimits`](crate::encoding::DecodeLimits).
        limit: u32,
    },
    /// A compressed stream asks for a decoder window over the configured cap.
    #[error("compression window larger than {limit} bytes")]
    DecoderWindow {
        /// The configured `max_window` of [`DecodeLimits`](crate::encoding::DecodeLimits).
        limit: u64,
    },
}

/// How an adapter should answer an error: the three rows of the contract's table.
///
/// ```
/// use bbr_core::{ErrorClass, ErrorKind};
/// assert_eq!(ErrorKind::DuplicateModel.class(), ErrorClass::InvalidModel);
/// assert_eq!(ErrorClass::TooLarge.code(), "request_too_large");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Not JSON, truncated, top-level not an object, too deep; a malformed
    /// form or compressed stream (HTTP 400, `invalid_json`).
    InvalidJson,
    /// Model not a string, empty, control characters, too long, duplicate (HTTP 400, `invalid_model`).
    InvalidModel,
    /// Scan limit or body limit exceeded, a decompression bomb (HTTP 413, `request_too_large`).
    TooLarge,
}

impl ErrorClass {
    /// The OpenAI-style error `code` for this class.
    ///
    /// ```
    /// assert_eq!(bbr_core::ErrorClass::InvalidJson.code(), "invalid_json");
    /// ```
    pub const fn code(self) -> &'static str {
        match self {
            ErrorClass::InvalidJson => "invalid_json",
            ErrorClass::InvalidModel => "invalid_model",
            ErrorClass::TooLarge => "request_too_large",
        }
    }
}

impl ErrorKind {
    /// Stable snake_case name, used in logs, metrics labels and the CLI output.
    ///
    /// ```
    /// use bbr_core::ErrorKind;
    /// assert_eq!(ErrorKind::ModelNotAString.as_str(), "model_not_a_string");
    /// assert_eq!(ErrorKind::ScanLimit { limit: 1 }.as_str(), "scan_limit");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::InvalidEscape => "invalid_escape",
            ErrorKind::InvalidUtf8 => "invalid_utf8",
            ErrorKind::UnexpectedEnd => "unexpected_end",
            ErrorKind::NotAnObject => "not_an_object",
            ErrorKind::TooDeep { .. } => "too_deep",
            ErrorKind::ModelNotAString => "model_not_a_string",
            ErrorKind::EmptyModel => "empty_model",
            ErrorKind::ModelControlChar => "model_control_char",
            ErrorKind::ModelTooLong { .. } => "model_too_long",
            ErrorKind::DuplicateModel => "duplicate_model",
            ErrorKind::ScanLimit { .. } => "scan_limit",
            ErrorKind::BodyTooLarge { .. } => "body_too_large",
            ErrorKind::InvalidMultipart => "invalid_multipart",
            ErrorKind::PartHeadersTooLarge { .. } => "part_headers_too_large",
            ErrorKind::TooManyPartHeaders { .. } => "too_many_part_headers",
            ErrorKind::InvalidEncoding => "invalid_encoding",
            ErrorKind::ExpansionRatio { .. } => "expansion_ratio",
            ErrorKind::DecoderWindow { .. } => "decoder_window",
        }
    }

    /// Which row of the contract's table this kind belongs to.
    ///
    /// ```
    /// use bbr_core::{ErrorClass, ErrorKind};
    /// assert_eq!(ErrorKind::BodyTooLarge { limit: 1 }.class(), ErrorClass::TooLarge);
    /// ```
    pub const fn class(self) -> ErrorClass {
        match self {
            ErrorKind::InvalidJson
            | ErrorKind::InvalidEscape
            | ErrorKind::InvalidUtf8
            | ErrorKind::UnexpectedEnd
            | ErrorKind::NotAnObject
            | ErrorKind::TooDeep { .. }
            | ErrorKind::InvalidMultipart
            | ErrorKind::PartHeadersTooLarge { .. }
            | ErrorKind::TooManyPartHeaders { .. }
            | ErrorKind::InvalidEncoding => ErrorClass::InvalidJson,
            ErrorKind::ModelNotAString
            | ErrorKind::EmptyModel
            | ErrorKind::ModelControlChar
            | ErrorKind::ModelTooLong { .. }
            | ErrorKind::DuplicateModel => ErrorClass::InvalidModel,
            ErrorKind::ScanLimit { .. }
            | ErrorKind::BodyTooLarge { .. }
            | ErrorKind::ExpansionRatio { .. }
            | ErrorKind::DecoderWindow { .. } => ErrorClass::TooLarge,
        }
    }
}

/// An error and its chain of [`source`](std::error::Error::source)s,
/// `: `-separated when displayed: the one line a log or a binary's exit
/// message shows (an I/O error's text, a YAML error's line and column, are
/// in a cause, not in the error's own message). Nothing is allocated.
///
/// ```
/// use bbr_core::ErrorChain;
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot load adapters.yaml")]
/// struct Load(#[source] std::io::Error);
///
/// let error = Load(std::io::Error::other("permission denied"));
/// assert_eq!(
///     ErrorChain::new(&error).to_string(),
///     "cannot load adapters.yaml: permission denied"
/// );
/// assert_eq!(ErrorChain::causes_of(&error).to_string(), "permission denied");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a> {
    first: Option<&'a (dyn std::error::Error + 'a)>,
}

impl<'a> ErrorChain<'a> {
    /// `error`'s message, then each of its causes.
    pub fn new(error: &'a (dyn std::error::Error + 'a)) -> Self {
        Self { first: Some(error) }
    }

    /// Only `error`'s causes (empty when it has none): for a message that
    /// already says what failed.
    ///
    /// ```
    /// let error = std::io::Error::other("disk full");
    /// assert_eq!(bbr_core::ErrorChain::causes_of(&error).to_string(), "");
    /// ```
    pub fn causes_of(error: &'a (dyn std::error::Error + 'a)) -> Self {
        Self {
            first: error.source(),
        }
    }

    /// The first error in the chain, from this one down, that is a `T`
    /// (hyper, axum and tower wrap a body's error in their own).
    ///
    /// ```
    /// use bbr_core::ErrorChain;
    /// let inner = std::io::Error::other("reset");
    /// let outer = std::io::Error::other(inner);
    /// let found = ErrorChain::find::<std::io::Error>(&outer).unwrap();
    /// assert!(std::ptr::eq(found, &outer));
    /// assert!(ErrorChain::find::<std::fmt::Error>(&outer).is_none());
    /// ```
    pub fn find<T: std::error::Error + 'static>(
        error: &'a (dyn std::error::Error + 'static),
    ) -> Option<&'a T> {
        std::iter::successors(Some(error), |error| error.source())
            .find_map(|error| error.downcast_ref::<T>())
    }
}

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut separator = "";
        for error in std::iter::successors(self.first, |error| error.source()) {
            write!(f, "{separator}{error}")?;
            separator = ": ";
        }
        Ok(())
    }
}
