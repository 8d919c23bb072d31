//! The extracted model name.

use std::ops::Range;

use bytes::Bytes;

/// A validated model name: non-empty UTF-8 without control characters, at
/// most `max_model_len` bytes.
///
/// When the value lies within one input chunk and has no escapes, it is a
/// slice of that chunk (no copy, [`Model::is_shared`] is true); otherwise it
/// is one small owned copy. Equality and hashing look at the name only,
/// not at whether it was copied.
///
/// ```
/// use bbr_core::{extract_model, Limits};
/// use bytes::Bytes;
/// let body = Bytes::from_static(br#"{"model":"food-review-1"}"#);
/// let model = extract_model(&body, &Limits::new()).unwrap().model().unwrap().clone();
/// assert_eq!(model.as_str(), "food-review-1");
/// assert!(model.is_shared()); // a slice of `body`, no copy
/// ```
#[derive(Clone)]
pub struct Model {
    bytes: Bytes,
    shared: bool,
    /// The JSON string token the name was read from, in the bytes fed to
    /// the extractor (opening quote to one past the closing quote).
    json_span: Option<Range<u64>>,
}

impl Model {
    /// Wraps bytes already checked to be a valid model (crate-internal).
    pub(crate) fn new_unchecked_utf8(bytes: Bytes, shared: bool) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self {
            bytes,
            shared,
            json_span: None,
        }
    }

    /// A model from a name given by configuration (a rewrite target, say),
    /// checked by the rules of a body's model ([`validate_model_name`]);
    /// a name with spaces or tabs around it is refused as well (it would
    /// not be the name the body carries), as `model_control_char` at the
    /// first of them. Not shared, no span.
    ///
    /// ```
    /// use bbr_core::{Limits, Model};
    /// assert_eq!(Model::from_name("food-review-2", &Limits::new()).unwrap().as_str(), "food-review-2");
    /// assert!(Model::from_name(" padded", &Limits::new()).is_err());
    /// assert!(Model::from_name("", &Limits::new()).is_err());
    /// ```
    ///
    /// [`validate_model_name`]: crate::validate_model_name
    pub fn from_name(name: &str, limits: &crate::Limits) -> Result<Self, crate::ExtractError> {
        let trimmed = crate::validate_model_name(name.as_bytes(), limits)?;
        if trimmed.len() != name.len() {
            let padded_front = name.starts_with([' ', '\t']);
            let at = if padded_front { 0 } else { trimmed.len() };
            return Err(crate::ExtractError::new(
                crate::ErrorKind::ModelControlChar,
                at as u64,
            ));
        }
        Ok(Self::new_unchecked_utf8(
            Bytes::copy_from_slice(name.as_bytes()),
            false,
        ))
    }

    /// Records where the JSON string token of the value lies (crate-internal).
    pub(crate) fn with_json_span(mut self, span: Range<u64>) -> Self {
        self.json_span = Some(span);
        self
    }

    /// Forgets the span: it is not in the bytes the adapter forwards
    /// (a decoded body) or not a JSON token (a form field).
    pub(crate) fn without_json_span(mut self) -> Self {
        self.json_span = None;
        self
    }

    /// The model as text.
    ///
    /// ```
    /// # use bbr_core::{extract_model, Limits};
    /// # use bytes::Bytes;
    /// # let body = Bytes::from_static(br#"{"model":"m"}"#);
    /// # let model = extract_model(&body, &Limits::new()).unwrap().model().unwrap().clone();
    /// assert_eq!(model.as_str(), "m");
    /// ```
    pub fn as_str(&self) -> &str {
        // Validated once, by the scan that found it.
        crate::simd::validated_str(&self.bytes)
    }

    /// The model's bytes.
    ///
    /// ```
    /// # use bbr_core::{extract_model, Limits};
    /// # use bytes::Bytes;
    /// # let body = Bytes::from_static(br#"{"model":"m"}"#);
    /// # let model = extract_model(&body, &Limits::new()).unwrap().model().unwrap().clone();
    /// assert_eq!(model.as_bytes(), b"m");
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The model as `Bytes` (a slice of the input chunk when shared).
    ///
    /// ```
    /// # use bbr_core::{extract_model, Limits};
    /// # use bytes::Bytes;
    /// # let body = Bytes::from_static(br#"{"model":"m"}"#);
    /// # let model = extract_model(&body, &Limits::new()).unwrap().model().unwrap().clone();
    /// assert_eq!(model.into_bytes(), Bytes::from_static(b"m"));
    /// ```
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The model as `Bytes`, borrowed.
    ///
    /// ```
    /// # use bbr_core::{extract_model, Limits};
    /// # use bytes::Bytes;
    /// # let body = Bytes::from_static(br#"{"model":"m"}"#);
    /// # let model = extract_model(&body, &Limits::new()).unwrap().model().unwrap().clone();
    /// assert_eq!(model.bytes().len(), 1);
    /// ```
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Where the JSON string token of the value lies in the body, as
    /// absolute byte offsets: from its opening quote to one past its
    /// closing quote, escapes and the spaces around the name included
    /// (`{"model":" m"}` gives `9..14`). This is exactly what
    /// [`rewrite`](crate::rewrite) replaces.
    ///
    /// `Some` for a model read by [`ModelExtractor`](crate::ModelExtractor)
    /// (under last-wins, the last value's token), and by
    /// [`BodyExtractor`](crate::BodyExtractor) from a plain JSON body;
    /// `None` when the offsets are not those of the forwarded bytes (a
    /// compressed body: they are in the decoded one) or the value is not a
    /// JSON token (a `multipart/form-data` field). Equality ignores it.
    ///
    /// ```
    /// use bbr_core::{extract_model, Limits};
    /// use bytes::Bytes;
    /// let body = Bytes::from_static(br#"{"stream":true,"model":"a\u0062"}"#);
    /// let outcome = extract_model(&body, &Limits::new()).unwrap();
    /// let span = outcome.model().unwrap().json_span().unwrap();
    /// assert_eq!(&body[span.start as usize..span.end as usize], br#""a\u0062""#);
    /// ```
    pub fn json_span(&self) -> Option<Range<u64>> {
        self.json_span.clone()
    }

    /// True when the value points into the caller's chunk (no copy was made).
    ///
    /// ```
    /// # use bbr_core::{extract_model, Limits};
    /// # use bytes::Bytes;
    /// # let body = Bytes::from_static(br#"{"model":"m"}"#);
    /// # let model = extract_model(&body, &Limits::new()).unwrap().model().unwrap().clone();
    /// assert!(model.is_shared());
    /// assert!(body.as_ptr_range().contains(&model.as_bytes().as_ptr()));
    /// ```
    pub fn is_shared(&self) -> bool {
        self.shared
    }
}

impl PartialEq for Model {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Model {}

impl std::hash::Hash for Model {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Model").field(&self.as_str()).finish()
    }
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Model {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}
