//! One extractor for every request body: JSON or `multipart/form-data`,
//! plain or compressed, chosen from the request's headers.

use bytes::{Bytes, BytesMut};

use crate::bounded::StickyError;
use crate::encoding::{ContentEncoding, DecodeLimits, Decoder, NotDecoded};
use crate::multipart::{self, MultipartExtractor, PartLimits};
use crate::{DuplicateKeys, ErrorKind, ExtractError, Limits, ModelExtractor, Outcome, Progress};

/// How a body is read, as [`BodyExtractor::for_content`] chose from the
/// headers.
///
/// ```
/// use bbr_core::{BodyExtractor, BodyKind, Limits};
/// let body = BodyExtractor::for_content(Some(b"multipart/form-data; boundary=x"), None, Limits::new());
/// assert_eq!(body.kind(), BodyKind::Multipart);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BodyKind {
    /// A JSON object (any content type but `multipart/form-data`, or none).
    Json,
    /// A `multipart/form-data` form.
    Multipart,
    /// Not read: a `Content-Encoding` that is not decoded. The body is
    /// forwarded without a model (the missing-model way).
    NotDecoded(NotDecoded),
}

// The JSON extractor stays inline: a plain JSON body costs no allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Inner {
    Json(ModelExtractor),
    Multipart(Box<MultipartExtractor>),
    NotDecoded(NotDecoded),
}

/// The one type an adapter needs for every request body: it reads the
/// `Content-Type` and `Content-Encoding` header values (bytes, as they
/// came) and dispatches to [`ModelExtractor`] (JSON) or
/// [`MultipartExtractor`](crate::multipart::MultipartExtractor), behind a
/// streaming [`Decoder`] when the body is compressed. The interface is
/// the extractors' own: [`feed`](Self::feed) every chunk the adapter
/// forwards (the original bytes, compressed or not), then
/// [`finish`](Self::finish).
///
/// - `feed` counts the raw bytes against `max_body_bytes` and hands the
///   decoded bytes to the extractor, whose limits (`max_scan_bytes`,
///   `max_body_bytes`) count decoded bytes. Offsets of extraction errors
///   are in the decoded body; decoding errors
///   ([`InvalidEncoding`](ErrorKind::InvalidEncoding),
///   [`ExpansionRatio`](ErrorKind::ExpansionRatio),
///   [`DecoderWindow`](ErrorKind::DecoderWindow)) carry the number of
///   encoded bytes read when they were found.
/// - A `Content-Encoding` that is not decoded ([`BodyKind::NotDecoded`],
///   known from the headers) decides at once: the first `feed` (or
///   `finish`) says [`Progress::Absent`] / [`Outcome::Absent`], and the
///   adapter applies its missing-model policy. It can check
///   [`kind`](Self::kind) before reading the body at all.
/// - Under first-wins, decoding stops at the decision; under reject the
///   whole stream is decoded and checked (a corrupt or truncated tail is
///   an error); under last-wins nothing is decided before `finish`.
///
/// ```
/// use bbr_core::{BodyExtractor, Limits, Outcome, Progress};
/// use bytes::Bytes;
///
/// // What an adapter does for every request (here a plain JSON body).
/// let mut body = BodyExtractor::for_content(Some(b"application/json"), None, Limits::new());
/// let progress = body.feed(&Bytes::from_static(br#"{"model":"food-review-1"}"#)).unwrap();
/// assert!(matches!(progress, Progress::Found(ref m) if m.as_str() == "food-review-1"));
/// assert!(matches!(body.finish(), Ok(Outcome::Found(_))));
///
/// // A form upload: the model field, wherever it is.
/// let mut body = BodyExtractor::for_content(
///     Some(b"multipart/form-data; boundary=b"), None, Limits::new());
/// body.feed(&Bytes::from_static(b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b--\r\n")).unwrap();
/// assert_eq!(body.finish().unwrap().model().unwrap().as_str(), "whisper-1");
///
/// // An encoding bbr does not decode: no model, the body is not read.
/// let mut body = BodyExtractor::for_content(None, Some(b"compress"), Limits::new());
/// assert_eq!(body.feed(&Bytes::from_static(b"\x1f\x9d...")).unwrap(), Progress::Absent);
/// assert_eq!(body.finish().unwrap(), Outcome::Absent);
/// ```
///
/// A gzip-compressed body (needs the `flate2` feature, on by default):
///
/// ```
/// # #[cfg(feature = "flate2")] {
/// use bbr_core::{BodyExtractor, Limits, Progress};
/// use bytes::Bytes;
/// // `{"model":"m"}` gzipped.
/// let gzipped = Bytes::from_static(&[
///     0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3, 0xab, 0x56, 0xca, 0xcd, 0x4f, 0x49, 0xcd, 0x51, 0xb2,
///     0x52, 0xca, 0x55, 0xaa, 0x05, 0x00, 0x9b, 0x6c, 0xba, 0xaa, 0x0d, 0x00, 0x00, 0x00,
/// ]);
/// let mut body = BodyExtractor::for_content(None, Some(b"gzip"), Limits::new());
/// for chunk in [gzipped.slice(..9), gzipped.slice(9..)] {
///     // The adapter forwards `chunk` itself, compressed, and feeds it here.
///     if let Progress::Found(model) = body.feed(&chunk).unwrap() {
///         assert_eq!(model.as_str(), "m");
///     }
/// }
/// assert_eq!(body.finish().unwrap().model().unwrap().as_str(), "m");
/// # }
/// ```
#[derive(Debug)]
pub struct BodyExtractor {
    inner: Inner,
    decoder: Option<Decoder>,
    limits: Limits,
    decode_limits: DecodeLimits,
    encoding: ContentEncoding,
    /// Raw (encoded) bytes fed.
    consumed: u64,
    /// Reusable buffer for decoded pieces handed to the extractor.
    decoded: BytesMut,
    decided: bool,
    /// Decoding stopped at a first-wins decision: later bytes are counted.
    halted: bool,
    error: StickyError,
}

impl BodyExtractor {
    /// The extractor for a request, from the values of all its
    /// `Content-Type` fields and all its `Content-Encoding` fields, in the
    /// order they came (bytes or `str`, anything `AsRef<[u8]>`: an http
    /// `HeaderMap`'s `get_all(..)` can be passed as it is). This is the
    /// one place that says how header fields choose the extractor, so
    /// every adapter reads them alike:
    ///
    /// - The first `Content-Type` field counts. It is a singleton field
    ///   (RFC 9110, section 8.3); a client that sends two is malformed, and
    ///   the first is what the common HTTP stacks hand a handler
    ///   (`HeaderMap::get`, Envoy's first entry), so the model server
    ///   reads the body the same way. No field: the body is read as JSON.
    /// - Every `Content-Encoding` field counts, as one list in field order
    ///   (RFC 9110, section 5.3), parsed without joining them
    ///   ([`ContentEncoding::parse_fields`]). No field: not encoded.
    ///
    /// Never fails: a form without a usable boundary is an error at the
    /// first `feed` ([`ErrorKind::InvalidMultipart`], 400), an encoding
    /// that is not decoded is [`BodyKind::NotDecoded`].
    ///
    /// ```
    /// use bbr_core::encoding::{Coding, NotDecoded};
    /// use bbr_core::{BodyExtractor, BodyKind, Limits};
    ///
    /// // Two content types: the first is used.
    /// let types = ["multipart/form-data; boundary=b", "application/json"];
    /// let body = BodyExtractor::for_headers(types, None::<&str>, Limits::new());
    /// assert_eq!(body.kind(), BodyKind::Multipart);
    ///
    /// // Two content-encoding fields are one list of two codings...
    /// let encodings: [&[u8]; 2] = [b"gzip", b"br"];
    /// let body = BodyExtractor::for_headers(None::<&[u8]>, encodings, Limits::new());
    /// # #[cfg(all(feature = "flate2", feature = "brotli"))]
    /// assert_eq!(body.encoding().codings(), &[Coding::Gzip, Coding::Br][..]);
    ///
    /// // ...and three codings, however they are split, are not decoded.
    /// let body = BodyExtractor::for_headers(None::<&str>, ["gzip, br", "zstd"], Limits::new());
    /// assert_eq!(body.kind(), BodyKind::NotDecoded(NotDecoded::TooMany));
    ///
    /// // No headers at all: JSON.
    /// let none: [&str; 0] = [];
    /// assert_eq!(BodyExtractor::for_headers(none, none, Limits::new()).kind(), BodyKind::Json);
    /// ```
    pub fn for_headers<T, E>(content_types: T, content_encodings: E, limits: Limits) -> Self
    where
        T: IntoIterator,
        T::Item: AsRef<[u8]>,
        E: IntoIterator,
        E::Item: AsRef<[u8]>,
    {
        let content_type = content_types.into_iter().next();
        let content_type = content_type.as_ref().map(AsRef::as_ref);
        let encoding = ContentEncoding::parse_fields(content_encodings);
        Self::for_parsed(content_type, encoding, limits)
    }

    /// The extractor for one `Content-Type` and one `Content-Encoding`
    /// value (`None` for an absent header): [`for_headers`](Self::for_headers)
    /// with at most one field of each.
    ///
    /// ```
    /// use bbr_core::encoding::NotDecoded;
    /// use bbr_core::{BodyExtractor, BodyKind, Limits};
    /// let body = BodyExtractor::for_content(None, Some(b"gzip, gzip, gzip"), Limits::new());
    /// assert_eq!(body.kind(), BodyKind::NotDecoded(NotDecoded::TooMany));
    /// let body = BodyExtractor::for_content(Some(b"text/plain"), Some(b"identity"), Limits::new());
    /// assert_eq!(body.kind(), BodyKind::Json);
    /// ```
    pub fn for_content(
        content_type: Option<&[u8]>,
        content_encoding: Option<&[u8]>,
        limits: Limits,
    ) -> Self {
        Self::for_headers(content_type, content_encoding, limits)
    }

    fn for_parsed(
        content_type: Option<&[u8]>,
        encoding: Result<ContentEncoding, NotDecoded>,
        limits: Limits,
    ) -> Self {
        let inner = match (encoding, content_type) {
            (Err(not_decoded), _) => Inner::NotDecoded(not_decoded),
            (Ok(_), Some(content_type)) if multipart::is_form_data(content_type) => {
                Inner::Multipart(Box::new(MultipartExtractor::from_content_type(
                    content_type,
                    limits,
                )))
            }
            (Ok(_), _) => Inner::Json(ModelExtractor::new(limits)),
        };
        let encoding = encoding.unwrap_or_default();
        let decode_limits = DecodeLimits::new();
        Self {
            inner,
            decoder: (!encoding.is_identity()).then(|| Decoder::new(encoding, decode_limits)),
            limits,
            decode_limits,
            encoding,
            consumed: 0,
            decoded: BytesMut::new(),
            decided: false,
            halted: false,
            error: StickyError::default(),
        }
    }

    /// Replaces the decoding limits (before the first `feed`).
    ///
    /// ```
    /// use bbr_core::encoding::DecodeLimits;
    /// use bbr_core::{BodyExtractor, Limits};
    /// let body = BodyExtractor::for_content(None, Some(b"br"), Limits::new())
    ///     .with_decode_limits(DecodeLimits::new().with_max_ratio(20));
    /// assert_eq!(body.decode_limits().max_ratio(), 20);
    /// ```
    #[must_use]
    pub fn with_decode_limits(mut self, decode_limits: DecodeLimits) -> Self {
        debug_assert_eq!(self.consumed, 0, "limits are set before the body");
        self.decode_limits = decode_limits;
        if self.decoder.is_some() {
            self.decoder = Some(Decoder::new(self.encoding, decode_limits));
        }
        self
    }

    /// Replaces the multipart part header limits (before the first `feed`).
    ///
    /// ```
    /// use bbr_core::multipart::PartLimits;
    /// use bbr_core::{BodyExtractor, Limits};
    /// let body = BodyExtractor::for_content(Some(b"multipart/form-data; boundary=x"), None, Limits::new())
    ///     .with_part_limits(PartLimits::new().with_max_headers(4));
    /// # let _ = body;
    /// ```
    #[must_use]
    pub fn with_part_limits(mut self, part_limits: PartLimits) -> Self {
        if let Inner::Multipart(extractor) = self.inner {
            self.inner = Inner::Multipart(Box::new(extractor.with_part_limits(part_limits)));
        }
        self
    }

    /// How this body is read.
    ///
    /// ```
    /// use bbr_core::{BodyExtractor, BodyKind, Limits};
    /// assert_eq!(BodyExtractor::for_content(None, None, Limits::new()).kind(), BodyKind::Json);
    /// ```
    pub fn kind(&self) -> BodyKind {
        match &self.inner {
            Inner::Json(_) => BodyKind::Json,
            Inner::Multipart(_) => BodyKind::Multipart,
            Inner::NotDecoded(reason) => BodyKind::NotDecoded(*reason),
        }
    }

    /// The codings decoded before extraction (empty for a plain body).
    ///
    /// ```
    /// use bbr_core::encoding::Coding;
    /// use bbr_core::{BodyExtractor, Limits};
    /// let body = BodyExtractor::for_content(None, Some(b"zstd"), Limits::new());
    /// assert_eq!(body.encoding().codings(), &[Coding::Zstd][..cfg!(feature = "zstd") as usize]);
    /// ```
    pub fn encoding(&self) -> &ContentEncoding {
        &self.encoding
    }

    /// The limits the extractor enforces.
    ///
    /// ```
    /// use bbr_core::{BodyExtractor, Limits};
    /// assert_eq!(BodyExtractor::for_content(None, None, Limits::new()).limits(), &Limits::new());
    /// ```
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The decoding limits.
    ///
    /// ```
    /// use bbr_core::encoding::DecodeLimits;
    /// use bbr_core::{BodyExtractor, Limits};
    /// assert_eq!(BodyExtractor::for_content(None, None, Limits::new()).decode_limits(), &DecodeLimits::new());
    /// ```
    pub fn decode_limits(&self) -> &DecodeLimits {
        &self.decode_limits
    }

    /// Raw bytes fed so far (compressed, as forwarded).
    ///
    /// ```
    /// use bbr_core::{BodyExtractor, Limits};
    /// use bytes::Bytes;
    /// let mut body = BodyExtractor::for_content(None, None, Limits::new());
    /// body.feed(&Bytes::from_static(b"{")).unwrap();
    /// assert_eq!(body.bytes_consumed(), 1);
    /// ```
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed
    }

    /// Decoded bytes handed to the extractor so far (the raw count for a
    /// plain body).
    ///
    /// ```
    /// use bbr_core::{BodyExtractor, Limits};
    /// assert_eq!(BodyExtractor::for_content(None, None, Limits::new()).decoded_bytes(), 0);
    /// ```
    pub fn decoded_bytes(&self) -> u64 {
        match &self.decoder {
            Some(decoder) => decoder.decoded_bytes(),
            None => self.consumed,
        }
    }

    /// Feeds the next raw chunk (what the adapter forwards). The same
    /// contract as [`ModelExtractor::feed`]: `Found` or `Absent` once,
    /// `Decided` afterwards, `NeedMore` before; errors are sticky.
    ///
    /// ```
    /// use bbr_core::{BodyExtractor, ErrorKind, Limits};
    /// use bytes::Bytes;
    /// let mut body = BodyExtractor::for_content(None, None, Limits::new());
    /// let err = body.feed(&Bytes::from_static(b"[]")).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotAnObject);
    /// ```
    pub fn feed(&mut self, chunk: &Bytes) -> Result<Progress, ExtractError> {
        self.error.check()?;
        let fed = self.feed_inner(chunk);
        let progress = self.error.record(fed)?;
        if matches!(progress, Progress::Found(_) | Progress::Absent) {
            self.decided = true;
        }
        Ok(progress)
    }

    fn feed_inner(&mut self, chunk: &Bytes) -> Result<Progress, ExtractError> {
        let base = self.consumed;
        self.consumed = base.saturating_add(chunk.len() as u64);
        let limit = self.limits.max_body_bytes();
        let too_large = ExtractError::new(ErrorKind::BodyTooLarge { limit }, limit);
        let Some(decoder) = &mut self.decoder else {
            // A plain body: the extractor counts it (reporting errors in
            // byte order, the body limit included).
            return match &mut self.inner {
                Inner::Json(extractor) => extractor.feed(chunk),
                Inner::Multipart(extractor) => extractor.feed(chunk),
                Inner::NotDecoded(_) if self.consumed > limit => Err(too_large),
                Inner::NotDecoded(_) => Ok(self.undecoded_progress()),
            };
        };
        // The raw bytes count too (what the adapter forwards).
        if self.consumed > limit {
            return Err(too_large);
        }
        if self.halted {
            return Ok(Progress::Decided);
        }
        let mut progress = if self.decided {
            Progress::Decided
        } else {
            Progress::NeedMore
        };
        let first_wins = self.limits.duplicate_keys() == DuplicateKeys::FirstWins;
        let inner = &mut self.inner;
        let buffer = &mut self.decoded;
        let mut halted = false;
        decoder.decode(chunk, &mut |piece| {
            buffer.extend_from_slice(piece);
            let piece = buffer.split().freeze();
            let step = match inner {
                Inner::Json(extractor) => extractor.feed(&piece)?,
                Inner::Multipart(extractor) => extractor.feed(&piece)?,
                Inner::NotDecoded(_) => unreachable!("a body not decoded has no decoder"),
            };
            if matches!(step, Progress::Found(_) | Progress::Absent) {
                // Offsets in the decoded body say nothing about the
                // forwarded (encoded) bytes.
                progress = match step {
                    Progress::Found(model) => Progress::Found(model.without_json_span()),
                    other => other,
                };
                halted = first_wins;
            }
            Ok(!halted)
        })?;
        self.halted = halted;
        Ok(progress)
    }

    fn undecoded_progress(&self) -> Progress {
        if self.decided {
            Progress::Decided
        } else {
            Progress::Absent
        }
    }

    /// Ends the body: the verdict, or the error. A compressed stream that
    /// is incomplete is [`ErrorKind::InvalidEncoding`] (unless first-wins
    /// decided before it).
    ///
    /// ```
    /// use bbr_core::{BodyExtractor, ErrorKind, Limits};
    /// use bytes::Bytes;
    /// let mut body = BodyExtractor::for_content(None, None, Limits::new());
    /// body.feed(&Bytes::from_static(b"{\"model\":\"m\"")).unwrap();
    /// assert_eq!(body.finish().unwrap_err().kind(), ErrorKind::UnexpectedEnd);
    /// ```
    pub fn finish(&mut self) -> Result<Outcome, ExtractError> {
        self.error.check()?;
        let finished = self.finish_inner();
        self.error.record(finished)
    }

    fn finish_inner(&mut self) -> Result<Outcome, ExtractError> {
        if let (Some(decoder), false) = (&mut self.decoder, self.halted) {
            decoder.finish()?;
        }
        let outcome = match &mut self.inner {
            Inner::Json(extractor) => extractor.finish(),
            Inner::Multipart(extractor) => extractor.finish(),
            Inner::NotDecoded(_) => Ok(Outcome::Absent),
        }?;
        Ok(match outcome {
            Outcome::Found(model) if self.decoder.is_some() => {
                Outcome::Found(model.without_json_span())
            }
            other => other,
        })
    }
}

#[cfg(all(test, feature = "flate2", feature = "brotli", feature = "zstd"))]
#[path = "tests/body.rs"]
mod tests;
