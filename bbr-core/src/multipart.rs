//! Streaming extraction of the `model` form field from `multipart/form-data`
//! bodies (RFC 7578), for uploads such as `/v1/audio/transcriptions`.
//!
//! [`MultipartExtractor`] has the [`ModelExtractor`](crate::ModelExtractor)'s
//! interface and semantics ([`Progress`], [`Outcome`], [`ExtractError`] with
//! absolute offsets, [`Limits`], [`DuplicateKeys`]); what differs is the
//! framing. See the [crate docs](crate#multipartform-data) for the rules.
//!
//! ```
//! use bbr_core::multipart::MultipartExtractor;
//! use bbr_core::{Limits, Outcome, Progress};
//! use bytes::Bytes;
//!
//! let content_type = b"multipart/form-data; boundary=XyZ";
//! let mut extractor = MultipartExtractor::from_content_type(content_type, Limits::new());
//! let head = Bytes::from_static(
//!     b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ\r\n",
//! );
//! let Progress::Found(model) = extractor.feed(&head).unwrap() else { panic!() };
//! assert_eq!(model.as_str(), "whisper-1");
//! assert!(model.is_shared()); // a slice of `head`
//! // The file part is skipped as it streams, never held.
//! let file = Bytes::from_static(
//!     b"Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF....\r\n--XyZ--\r\n",
//! );
//! assert_eq!(extractor.feed(&file).unwrap(), Progress::Decided);
//! assert_eq!(extractor.finish().unwrap(), Outcome::Found(model));
//! ```

use std::borrow::Cow;

use bytes::Bytes;
use memchr::memmem;

use crate::bounded::{BoundedScan, StickyError};

use crate::model_name::{HEAD_SLACK, check_prefix};
use crate::{DuplicateKeys, ErrorKind, ExtractError, Limits, Model, Outcome, Progress};

/// Why a `Content-Type` value gives no usable boundary.
///
/// ```
/// use bbr_core::multipart::{Boundary, ContentTypeError};
/// assert_eq!(Boundary::from_content_type(b"application/json"), Err(ContentTypeError::NotFormData));
/// assert_eq!(Boundary::from_content_type(b"multipart/form-data"), Err(ContentTypeError::MissingBoundary));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContentTypeError {
    /// The media type is not `multipart/form-data`.
    #[error("the content type is not multipart/form-data")]
    NotFormData,
    /// No `boundary` parameter.
    #[error("multipart/form-data without a boundary parameter")]
    MissingBoundary,
    /// The boundary is empty, longer than 70 bytes, ends with a space or
    /// holds a byte outside printable ASCII.
    #[error("the multipart boundary is empty, longer than 70 bytes or not printable ASCII")]
    InvalidBoundary,
    /// The parameters are not `; name=value` pairs, or `boundary` is given twice.
    #[error("malformed content-type parameters")]
    MalformedParameters,
}

/// True when `content_type` (a `Content-Type` header value) names
/// `multipart/form-data`, whatever its parameters. Case-insensitive.
///
/// ```
/// use bbr_core::multipart::is_form_data;
/// assert!(is_form_data(b"Multipart/Form-Data; boundary=x"));
/// assert!(!is_form_data(b"multipart/mixed; boundary=x"));
/// assert!(!is_form_data(b"application/json"));
/// ```
pub fn is_form_data(content_type: &[u8]) -> bool {
    let media = split_media_type(content_type).0;
    media.eq_ignore_ascii_case(b"multipart/form-data")
}

fn split_media_type(value: &[u8]) -> (&[u8], &[u8]) {
    let value = trim_ows(value);
    let end = value.iter().position(|&b| b == b';').unwrap_or(value.len());
    (trim_ows(&value[..end]), &value[end..])
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Calls `each(name, value)` for every `; name=value` parameter of a header
/// value (the part after the media type or disposition type). Values are
/// tokens or quoted strings (with `\` quoted pairs undone). `Err(index)`
/// names the offending byte of `params`.
fn parse_params<'a>(
    params: &'a [u8],
    mut each: impl FnMut(&'a [u8], Cow<'a, [u8]>) -> Result<(), ()>,
) -> Result<(), usize> {
    let mut i = 0;
    let skip_ows = |i: &mut usize| {
        while matches!(params.get(*i), Some(b' ' | b'\t')) {
            *i += 1;
        }
    };
    loop {
        skip_ows(&mut i);
        match params.get(i) {
            None => return Ok(()),
            Some(b';') => i += 1,
            Some(_) => return Err(i),
        }
        skip_ows(&mut i);
        if i == params.len() {
            return Ok(()); // a trailing `;`, as browsers never send but some tools do
        }
        let name_start = i;
        while params.get(i).is_some_and(|&b| is_token(b)) {
            i += 1;
        }
        if i == name_start || params.get(i) != Some(&b'=') {
            return Err(i);
        }
        let name = &params[name_start..i];
        i += 1;
        let value = if params.get(i) == Some(&b'"') {
            i += 1;
            let start = i;
            let mut owned: Option<Vec<u8>> = None;
            loop {
                match params.get(i) {
                    None => return Err(i),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        let Some(&escaped) = params.get(i + 1) else {
                            return Err(i);
                        };
                        owned
                            .get_or_insert_with(|| params[start..i].to_vec())
                            .push(escaped);
                        i += 2;
                    }
                    Some(&b) => {
                        if let Some(owned) = &mut owned {
                            owned.push(b);
                        }
                        i += 1;
                    }
                }
            }
            let value = match owned {
                Some(owned) => Cow::Owned(owned),
                None => Cow::Borrowed(&params[start..i]),
            };
            i += 1;
            value
        } else {
            let start = i;
            while params.get(i).is_some_and(|&b| is_token(b)) {
                i += 1;
            }
            if i == start {
                return Err(i);
            }
            Cow::Borrowed(&params[start..i])
        };
        each(name, value).map_err(|()| name_start)?;
    }
}

/// RFC 9110 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A multipart boundary: 1 to 70 bytes of printable ASCII (space allowed,
/// not last), as RFC 2046 requires; stored inline.
///
/// ```
/// use bbr_core::multipart::Boundary;
/// let b = Boundary::from_content_type(b"multipart/form-data; boundary=\"a b:c\"").unwrap();
/// assert_eq!(b.as_bytes(), b"a b:c");
/// let b = Boundary::from_content_type(b"multipart/form-data; charset=utf-8; Boundary=----x1").unwrap();
/// assert_eq!(b.as_bytes(), b"----x1");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Boundary {
    bytes: [u8; Boundary::MAX_LEN],
    len: u8,
}

impl Boundary {
    /// Longest boundary RFC 2046 allows: 70 bytes.
    pub const MAX_LEN: usize = 70;

    /// Checks a boundary given on its own.
    ///
    /// ```
    /// use bbr_core::multipart::{Boundary, ContentTypeError};
    /// assert!(Boundary::new(b"x".repeat(70).as_slice()).is_ok());
    /// assert_eq!(Boundary::new(b"x".repeat(71).as_slice()), Err(ContentTypeError::InvalidBoundary));
    /// assert_eq!(Boundary::new(b"a\r\n"), Err(ContentTypeError::InvalidBoundary));
    /// assert_eq!(Boundary::new(b"ends "), Err(ContentTypeError::InvalidBoundary));
    /// ```
    pub fn new(boundary: &[u8]) -> Result<Self, ContentTypeError> {
        // No CR in the boundary is what lets the delimiter search restart
        // at the mismatching byte (the delimiter holds CR only first).
        if boundary.is_empty()
            || boundary.len() > Self::MAX_LEN
            || boundary.last() == Some(&b' ')
            || !boundary.iter().all(|b| (0x20..0x7f).contains(b))
        {
            return Err(ContentTypeError::InvalidBoundary);
        }
        let mut bytes = [0; Self::MAX_LEN];
        bytes[..boundary.len()].copy_from_slice(boundary);
        Ok(Self {
            bytes,
            len: boundary.len() as u8,
        })
    }

    /// The boundary of a `Content-Type: multipart/form-data; boundary=...`
    /// header value (the parameter quoted or not, names case-insensitive).
    ///
    /// ```
    /// use bbr_core::multipart::Boundary;
    /// let b = Boundary::from_content_type(b"multipart/form-data; boundary=abc123").unwrap();
    /// assert_eq!(b.as_bytes(), b"abc123");
    /// ```
    pub fn from_content_type(content_type: &[u8]) -> Result<Self, ContentTypeError> {
        let (media, params) = split_media_type(content_type);
        if !media.eq_ignore_ascii_case(b"multipart/form-data") {
            return Err(ContentTypeError::NotFormData);
        }
        let mut found: Option<Cow<'_, [u8]>> = None;
        parse_params(params, |name, value| {
            if name.eq_ignore_ascii_case(b"boundary") {
                if found.is_some() {
                    return Err(());
                }
                found = Some(value);
            }
            Ok(())
        })
        .map_err(|_| ContentTypeError::MalformedParameters)?;
        Self::new(&found.ok_or(ContentTypeError::MissingBoundary)?)
    }

    /// The boundary's bytes.
    ///
    /// ```
    /// assert_eq!(bbr_core::multipart::Boundary::new(b"b").unwrap().as_bytes(), b"b");
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for Boundary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Boundary")
            .field(&String::from_utf8_lossy(self.as_bytes()))
            .finish()
    }
}

/// Bounds on one part's header block (the lines between a delimiter and
/// the empty line that starts the part's content).
///
/// | limit | default | exactly at it | one past it | HTTP class |
/// | --- | --- | --- | --- | --- |
/// | [`max_header_bytes`](Self::max_header_bytes) | 8 KiB per part, every header line with its CRLF and the empty line | accepted | [`PartHeadersTooLarge`](ErrorKind::PartHeadersTooLarge) | 400 `invalid_json` |
/// | [`max_headers`](Self::max_headers) | 16 header lines per part | accepted | [`TooManyPartHeaders`](ErrorKind::TooManyPartHeaders) | 400 `invalid_json` |
///
/// ```
/// use bbr_core::multipart::PartLimits;
/// let limits = PartLimits::new().with_max_headers(4);
/// assert_eq!((limits.max_headers(), limits.max_header_bytes()), (4, 8192));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct PartLimits {
    max_header_bytes: usize,
    max_headers: usize,
}

impl PartLimits {
    /// Default `max_header_bytes`: 8 KiB (a long file name in a
    /// `Content-Disposition` is a few hundred bytes).
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 * 1024;
    /// Default `max_headers`: 16 (clients send one to three).
    pub const DEFAULT_MAX_HEADERS: usize = 16;

    /// The defaults above.
    ///
    /// ```
    /// assert_eq!(bbr_core::multipart::PartLimits::new(), Default::default());
    /// ```
    pub const fn new() -> Self {
        Self {
            max_header_bytes: Self::DEFAULT_MAX_HEADER_BYTES,
            max_headers: Self::DEFAULT_MAX_HEADERS,
        }
    }

    /// Longest header block of one part, CRLFs and the empty line included.
    ///
    /// ```
    /// let limits = bbr_core::multipart::PartLimits::new().with_max_header_bytes(512);
    /// assert_eq!(limits.max_header_bytes(), 512);
    /// ```
    pub const fn with_max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Most header lines in one part.
    ///
    /// ```
    /// assert_eq!(bbr_core::multipart::PartLimits::new().with_max_headers(2).max_headers(), 2);
    /// ```
    pub const fn with_max_headers(mut self, headers: usize) -> Self {
        self.max_headers = headers;
        self
    }

    /// The configured `max_header_bytes`.
    ///
    /// ```
    /// assert_eq!(bbr_core::multipart::PartLimits::new().max_header_bytes(), 8192);
    /// ```
    pub const fn max_header_bytes(&self) -> usize {
        self.max_header_bytes
    }

    /// The configured `max_headers`.
    ///
    /// ```
    /// assert_eq!(bbr_core::multipart::PartLimits::new().max_headers(), 16);
    /// ```
    pub const fn max_headers(&self) -> usize {
        self.max_headers
    }
}

impl Default for PartLimits {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter (the preamble is ignored).
    Preamble,
    /// Right after a delimiter: `--` closes, padding and CRLF open a part.
    AfterDelimiter,
    /// After the first `-` of a close delimiter.
    CloseDash,
    /// Transport padding (spaces, tabs) after a delimiter.
    Padding,
    /// The CR of the CRLF after a delimiter.
    PaddingCr,
    /// A part's header lines.
    Headers,
    /// A part's content, up to the next delimiter.
    Body,
    /// After the close delimiter (the epilogue is ignored).
    Epilogue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Any field or file other than the model field: skipped.
    Skip,
    /// The model field: its value is captured.
    Model,
}

/// What a part's `Content-Disposition` says.
struct Disposition {
    is_model: bool,
    has_filename: bool,
}

/// Incremental extractor of the `model` field of a `multipart/form-data`
/// body, fed `Bytes` chunks of any size; the same interface as
/// [`ModelExtractor`](crate::ModelExtractor).
///
/// Memory is bounded whatever the upload: the model value (at most
/// `max_model_len` bytes), one part header line (at most
/// [`PartLimits::max_header_bytes`]) when it is cut by a chunk end, and the
/// delimiter (at most 74 bytes) with its searcher. File contents are never
/// held.
///
/// ```
/// use bbr_core::multipart::{Boundary, MultipartExtractor};
/// use bbr_core::{ErrorKind, Limits};
/// use bytes::Bytes;
///
/// let boundary = Boundary::new(b"b").unwrap();
/// let mut extractor = MultipartExtractor::new(boundary, Limits::new());
/// let body = Bytes::from_static(
///     b"--b\r\ncontent-disposition: form-data; name=model\r\n\r\nm\r\n--b\r\ncontent-disposition: form-data; name=model\r\n\r\nn\r\n--b--",
/// );
/// let err = extractor.feed(&body).unwrap_err();
/// assert_eq!((err.kind(), err.offset()), (ErrorKind::DuplicateModel, 59));
/// ```
#[derive(Debug)]
pub struct MultipartExtractor {
    limits: Limits,
    part_limits: PartLimits,
    /// `\r\n--` and the boundary.
    delimiter: [u8; Boundary::MAX_LEN + 4],
    delimiter_len: usize,
    finder: memmem::Finder<'static>,
    consumed: u64,
    state: State,
    /// Bytes of the delimiter matched at the end of the previous chunk.
    matched: usize,
    part: Part,
    header_bytes: usize,
    header_count: usize,
    disposition_seen: bool,
    /// A header line cut by a chunk end, and where it starts.
    line: Vec<u8>,
    line_start: u64,
    value_start: u64,
    /// A value that lies so far within the current chunk: its range.
    value_slice: Option<(usize, usize)>,
    value_buf: Vec<u8>,
    /// The value went past `max_model_len` (its error is the candidate).
    value_longer: bool,
    seen_model: bool,
    decision: Option<Outcome>,
    candidate: Option<Result<Model, ExtractError>>,
    halted: bool,
    error: StickyError,
}

impl MultipartExtractor {
    /// A fresh extractor for bodies framed by `boundary`.
    ///
    /// ```
    /// use bbr_core::multipart::{Boundary, MultipartExtractor};
    /// let extractor = MultipartExtractor::new(Boundary::new(b"x").unwrap(), bbr_core::Limits::new());
    /// assert_eq!(extractor.bytes_consumed(), 0);
    /// ```
    pub fn new(boundary: Boundary, limits: Limits) -> Self {
        let mut delimiter = [0; Boundary::MAX_LEN + 4];
        delimiter[..4].copy_from_slice(b"\r\n--");
        let delimiter_len = 4 + boundary.as_bytes().len();
        delimiter[4..delimiter_len].copy_from_slice(boundary.as_bytes());
        Self {
            limits,
            part_limits: PartLimits::new(),
            delimiter,
            delimiter_len,
            finder: memmem::Finder::new(&delimiter[..delimiter_len]).into_owned(),
            consumed: 0,
            state: State::Preamble,
            // The first delimiter may open the body without a CRLF before it.
            matched: 2,
            part: Part::Skip,
            header_bytes: 0,
            header_count: 0,
            disposition_seen: false,
            line: Vec::new(),
            line_start: 0,
            value_start: 0,
            value_slice: None,
            value_buf: Vec::new(),
            value_longer: false,
            seen_model: false,
            decision: None,
            candidate: None,
            halted: false,
            error: StickyError::default(),
        }
    }

    /// An extractor for a body of this `Content-Type`. A type without a
    /// usable boundary gives an extractor whose first `feed` or `finish`
    /// is [`ErrorKind::InvalidMultipart`] at offset 0 (a malformed form,
    /// 400).
    ///
    /// ```
    /// use bbr_core::multipart::MultipartExtractor;
    /// use bbr_core::{ErrorKind, Limits};
    /// let mut extractor = MultipartExtractor::from_content_type(b"multipart/form-data", Limits::new());
    /// assert_eq!(extractor.finish().unwrap_err().kind(), ErrorKind::InvalidMultipart);
    /// ```
    pub fn from_content_type(content_type: &[u8], limits: Limits) -> Self {
        match Boundary::from_content_type(content_type) {
            Ok(boundary) => Self::new(boundary, limits),
            Err(_) => {
                let mut extractor = Self::new(Boundary::new(b"-").expect("valid"), limits);
                extractor.error =
                    StickyError::failed(ExtractError::new(ErrorKind::InvalidMultipart, 0));
                extractor
            }
        }
    }

    /// Replaces the part header limits.
    ///
    /// ```
    /// use bbr_core::multipart::{Boundary, MultipartExtractor, PartLimits};
    /// let extractor = MultipartExtractor::new(Boundary::new(b"x").unwrap(), bbr_core::Limits::new())
    ///     .with_part_limits(PartLimits::new().with_max_headers(4));
    /// assert_eq!(extractor.part_limits().max_headers(), 4);
    /// ```
    #[must_use]
    pub fn with_part_limits(mut self, part_limits: PartLimits) -> Self {
        self.part_limits = part_limits;
        self
    }

    /// The limits this extractor enforces.
    ///
    /// ```
    /// use bbr_core::multipart::{Boundary, MultipartExtractor};
    /// let extractor = MultipartExtractor::new(Boundary::new(b"x").unwrap(), bbr_core::Limits::new());
    /// assert_eq!(extractor.limits(), &bbr_core::Limits::new());
    /// ```
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The part header limits this extractor enforces.
    ///
    /// ```
    /// use bbr_core::multipart::{Boundary, MultipartExtractor, PartLimits};
    /// let extractor = MultipartExtractor::new(Boundary::new(b"x").unwrap(), bbr_core::Limits::new());
    /// assert_eq!(extractor.part_limits(), &PartLimits::new());
    /// ```
    pub fn part_limits(&self) -> &PartLimits {
        &self.part_limits
    }

    /// Bytes fed so far (all of them, also those after a decision).
    ///
    /// ```
    /// use bbr_core::multipart::{Boundary, MultipartExtractor};
    /// use bytes::Bytes;
    /// let mut extractor = MultipartExtractor::new(Boundary::new(b"x").unwrap(), bbr_core::Limits::new());
    /// extractor.feed(&Bytes::from_static(b"--x\r\n")).unwrap();
    /// assert_eq!(extractor.bytes_consumed(), 5);
    /// ```
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed
    }

    /// Feeds the next chunk; the same contract as
    /// [`ModelExtractor::feed`](crate::ModelExtractor::feed): `Found` or
    /// `Absent` once, for the chunk that decided, `Decided` afterwards,
    /// `NeedMore` before; errors are sticky.
    ///
    /// ```
    /// use bbr_core::multipart::MultipartExtractor;
    /// use bbr_core::{Limits, Progress};
    /// use bytes::Bytes;
    /// let mut extractor = MultipartExtractor::from_content_type(b"multipart/form-data; boundary=x", Limits::new());
    /// assert_eq!(extractor.feed(&Bytes::from_static(b"--x\r\ncontent-disposition: form-data; name=\"prompt\"\r\n\r\nhi")).unwrap(), Progress::NeedMore);
    /// assert_eq!(extractor.feed(&Bytes::from_static(b"\r\n--x--\r\n")).unwrap(), Progress::Absent);
    /// ```
    pub fn feed(&mut self, chunk: &Bytes) -> Result<Progress, ExtractError> {
        self.feed_chunk(chunk)
    }

    /// Ends the body: the verdict, or the error (`unexpected_end` at the
    /// body length when the close delimiter never came, except under
    /// first-wins after a decision).
    ///
    /// ```
    /// use bbr_core::multipart::MultipartExtractor;
    /// use bbr_core::{ErrorKind, Limits};
    /// use bytes::Bytes;
    /// let mut extractor = MultipartExtractor::from_content_type(b"multipart/form-data; boundary=x", Limits::new());
    /// extractor.feed(&Bytes::from_static(b"--x\r\ncontent-disposition: form-data; name=model\r\n\r\nm\r\n--x\r\n")).unwrap();
    /// let err = extractor.finish().unwrap_err();
    /// assert_eq!((err.kind(), err.offset()), (ErrorKind::UnexpectedEnd, 59));
    /// ```
    pub fn finish(&mut self) -> Result<Outcome, ExtractError> {
        self.finish_body()
    }

    /// Runs the parser over `chunk[start..end]` (`chunk[0]` is at absolute
    /// offset `base`). Returns where it stopped: `end`, or just after the
    /// deciding delimiter under first-wins.
    fn run(
        &mut self,
        chunk: &Bytes,
        start: usize,
        end: usize,
        base: u64,
    ) -> Result<usize, ExtractError> {
        let mut i = start;
        while i < end && !self.halted {
            let b = chunk[i];
            let at = base + i as u64;
            let invalid = || Err(ExtractError::new(ErrorKind::InvalidMultipart, at));
            match self.state {
                State::Preamble | State::Body => i = self.scan_content(chunk, i, end, base)?,
                State::AfterDelimiter => {
                    self.state = match b {
                        b'-' => State::CloseDash,
                        b' ' | b'\t' => State::Padding,
                        b'\r' => State::PaddingCr,
                        _ => return invalid(),
                    };
                    i += 1;
                }
                State::CloseDash => {
                    if b != b'-' {
                        return invalid();
                    }
                    i += 1;
                    self.state = State::Epilogue;
                    if self.decision.is_none()
                        && self.limits.duplicate_keys() != DuplicateKeys::LastWins
                    {
                        self.decision = Some(Outcome::Absent);
                        self.halted = self.limits.duplicate_keys() == DuplicateKeys::FirstWins;
                    }
                }
                State::Padding => {
                    self.state = match b {
                        b' ' | b'\t' => State::Padding,
                        b'\r' => State::PaddingCr,
                        _ => return invalid(),
                    };
                    i += 1;
                }
                State::PaddingCr => {
                    if b != b'\n' {
                        return invalid();
                    }
                    i += 1;
                    self.state = State::Headers;
                    self.part = Part::Skip;
                    self.header_bytes = 0;
                    self.header_count = 0;
                    self.disposition_seen = false;
                    self.line.clear();
                    self.line_start = base + i as u64;
                }
                State::Headers => i = self.header_bytes_in(chunk, i, end, base)?,
                // The epilogue is ignored, as RFC 2046 says.
                State::Epilogue => i = end,
            }
        }
        // The chunk is not retained: a value cut by its end is copied.
        if let Some((from, to)) = self.value_slice.take() {
            self.value_buf.extend_from_slice(&chunk[from..to]);
        }
        Ok(i)
    }

    /// Header bytes from `chunk[i..end]`, a line at a time.
    fn header_bytes_in(
        &mut self,
        chunk: &Bytes,
        i: usize,
        end: usize,
        base: u64,
    ) -> Result<usize, ExtractError> {
        let max = self.part_limits.max_header_bytes();
        let room = max - self.header_bytes;
        let window = &chunk[i..end.min(i.saturating_add(room))];
        let Some(lf) = memchr::memchr(b'\n', window) else {
            if end - i > room {
                return Err(ExtractError::new(
                    ErrorKind::PartHeadersTooLarge { limit: max },
                    base + (i + room) as u64,
                ));
            }
            self.line.extend_from_slice(&chunk[i..end]);
            self.header_bytes += end - i;
            return Ok(end);
        };
        self.header_bytes += lf + 1;
        let next = i + lf + 1;
        let line_start = self.line_start;
        self.line_start = base + next as u64;
        if self.line.is_empty() {
            self.header_line(&chunk[i..next], line_start)?;
        } else {
            let mut line = std::mem::take(&mut self.line);
            line.extend_from_slice(&chunk[i..next]);
            let result = self.header_line(&line, line_start);
            line.clear();
            self.line = line;
            result?;
        }
        if self.state == State::Body {
            self.value_start = base + next as u64;
        }
        Ok(next)
    }

    /// One whole header line, LF included, starting at absolute `at`.
    fn header_line(&mut self, line: &[u8], at: u64) -> Result<(), ExtractError> {
        let invalid = |index: usize| {
            Err(ExtractError::new(
                ErrorKind::InvalidMultipart,
                at + index as u64,
            ))
        };
        let len = line.len();
        if len < 2 || line[len - 2] != b'\r' {
            return invalid(len - 1);
        }
        let content = &line[..len - 2];
        if let Some(cr) = memchr::memchr(b'\r', content) {
            return invalid(cr);
        }
        if content.is_empty() {
            if !self.disposition_seen {
                return invalid(0);
            }
            self.state = State::Body;
            self.matched = 0;
            return Ok(());
        }
        self.header_count += 1;
        if self.header_count > self.part_limits.max_headers() {
            return Err(ExtractError::new(
                ErrorKind::TooManyPartHeaders {
                    limit: self.part_limits.max_headers(),
                },
                at,
            ));
        }
        // No folded continuation lines (obsolete in RFC 9112) and a token name.
        let colon = content
            .iter()
            .position(|&b| !is_token(b))
            .unwrap_or(content.len());
        if colon == 0 || content.get(colon) != Some(&b':') {
            return invalid(colon);
        }
        if !content[..colon].eq_ignore_ascii_case(b"content-disposition") {
            return Ok(());
        }
        if self.disposition_seen {
            return invalid(0);
        }
        self.disposition_seen = true;
        let value_at = colon + 1;
        let field = *self.limits.field();
        let disposition =
            parse_disposition(&content[value_at..], field.as_bytes()).map_err(|index| {
                ExtractError::new(ErrorKind::InvalidMultipart, at + (value_at + index) as u64)
            })?;
        if !disposition.is_model {
            return Ok(());
        }
        if self.seen_model && self.limits.duplicate_keys() == DuplicateKeys::Reject {
            return Err(ExtractError::new(ErrorKind::DuplicateModel, at));
        }
        self.seen_model = true;
        if disposition.has_filename {
            // A file named `model` is not a string value.
            self.model_result(Err(ExtractError::new(ErrorKind::ModelNotAString, at)))?;
        } else {
            self.part = Part::Model;
            self.value_buf.clear();
            self.value_longer = false;
        }
        Ok(())
    }

    /// Part content up to the next delimiter (or the preamble up to the
    /// first). Returns the index after the delimiter, or `end`.
    fn scan_content(
        &mut self,
        chunk: &Bytes,
        mut i: usize,
        end: usize,
        base: u64,
    ) -> Result<usize, ExtractError> {
        let delimiter_len = self.delimiter_len;
        if self.matched > 0 {
            let matched = self.matched;
            let need = &self.delimiter[matched..delimiter_len];
            let avail = &chunk[i..end];
            let common = need.iter().zip(avail).take_while(|(a, b)| a == b).count();
            if common == need.len() {
                self.matched = 0;
                return self.delimiter_end(chunk, i + common, base);
            }
            if common == avail.len() {
                self.matched += common;
                return Ok(end);
            }
            // Not a delimiter after all: what matched was content. The
            // delimiter holds CR only first, so the search restarts at the
            // mismatching byte.
            self.matched = 0;
            if self.state == State::Body {
                let carried = self.delimiter;
                self.content(chunk, &carried[..matched], None)?;
                self.content(chunk, &chunk[i..i + common], Some((i, i + common)))?;
            }
            i += common;
        }
        let haystack = &chunk[i..end];
        if let Some(at) = self.finder.find(haystack) {
            self.content(chunk, &haystack[..at], Some((i, i + at)))?;
            return self.delimiter_end(chunk, i + at + delimiter_len, base);
        }
        let tail = end - haystack.len().min(delimiter_len - 1);
        let partial = memchr::memrchr(b'\r', &chunk[tail..end])
            .map(|r| tail + r)
            .filter(|&r| chunk[r..end] == self.delimiter[..end - r]);
        let content_end = partial.unwrap_or(end);
        self.content(chunk, &chunk[i..content_end], Some((i, content_end)))?;
        self.matched = end - content_end;
        Ok(end)
    }

    /// Content bytes of the current part (`range`: where they lie in the
    /// current chunk, if they do).
    fn content(
        &mut self,
        chunk: &Bytes,
        bytes: &[u8],
        range: Option<(usize, usize)>,
    ) -> Result<(), ExtractError> {
        if self.state != State::Body
            || self.part != Part::Model
            || self.value_longer
            || bytes.is_empty()
        {
            return Ok(());
        }
        let max = self.limits.max_model_len();
        let cap = max.saturating_add(HEAD_SLACK);
        if let (Some(range), None, true) = (range, self.value_slice, self.value_buf.is_empty())
            && bytes.len() <= cap
        {
            self.value_slice = Some(range);
            return Ok(());
        }
        if let Some((from, to)) = self.value_slice.take() {
            self.value_buf.extend_from_slice(&chunk[from..to]);
        }
        let room = cap - self.value_buf.len();
        if bytes.len() <= room {
            self.value_buf.extend_from_slice(bytes);
            return Ok(());
        }
        self.value_buf.extend_from_slice(&bytes[..room]);
        self.value_longer = true;
        let error = check_prefix(&self.value_buf, true, max)
            .map(|_| unreachable!("a value longer than its head is an error"))
            .unwrap_or_else(|e| self.absolute(e));
        self.value_buf.clear();
        self.model_result(Err(error))
    }

    fn absolute(&self, error: ExtractError) -> ExtractError {
        ExtractError::new(error.kind(), self.value_start + error.offset())
    }

    /// A delimiter ended at `chunk[next - 1]`.
    fn delimiter_end(
        &mut self,
        chunk: &Bytes,
        next: usize,
        _base: u64,
    ) -> Result<usize, ExtractError> {
        if self.state == State::Body && self.part == Part::Model && !self.value_longer {
            let (bytes, shared) = match self.value_slice.take() {
                Some((from, to)) => (chunk.slice(from..to), true),
                None => (Bytes::from(std::mem::take(&mut self.value_buf)), false),
            };
            let result = match check_prefix(&bytes, false, self.limits.max_model_len()) {
                Ok(name) => Ok(Model::new_unchecked_utf8(bytes.slice(name), shared)),
                Err(error) => Err(self.absolute(error)),
            };
            self.model_result(result)?;
        }
        self.part = Part::Skip;
        self.state = State::AfterDelimiter;
        Ok(next)
    }

    /// A model field ended (or was found invalid): decide, or remember it
    /// under last-wins.
    fn model_result(&mut self, result: Result<Model, ExtractError>) -> Result<(), ExtractError> {
        match self.limits.duplicate_keys() {
            DuplicateKeys::LastWins => {
                self.candidate = Some(result);
                Ok(())
            }
            policy => {
                self.decision = Some(Outcome::Found(result?));
                self.halted = policy == DuplicateKeys::FirstWins;
                Ok(())
            }
        }
    }
}

/// Parses a `Content-Disposition` value: `form-data`, whether its `name`
/// is `field` (and whether a `filename` is given). `Err(index)` in `value`.
fn parse_disposition(value: &[u8], field: &[u8]) -> Result<Disposition, usize> {
    let lead = value
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let kind_end = lead + value[lead..].iter().take_while(|&&b| is_token(b)).count();
    if !value[lead..kind_end].eq_ignore_ascii_case(b"form-data") {
        return Err(lead);
    }
    let mut name: Option<bool> = None;
    let mut has_filename = false;
    parse_params(&value[kind_end..], |param, param_value| {
        if param.eq_ignore_ascii_case(b"name") {
            // Two names, or an RFC 5987 `name*`, could be read differently
            // by the model server: refused.
            if name.is_some() {
                return Err(());
            }
            name = Some(param_value.as_ref() == field);
        } else if param.eq_ignore_ascii_case(b"name*") {
            return Err(());
        } else if param.eq_ignore_ascii_case(b"filename")
            || param.eq_ignore_ascii_case(b"filename*")
        {
            has_filename = true;
        }
        Ok(())
    })
    .map_err(|index| kind_end + index)?;
    match name {
        Some(is_model) => Ok(Disposition {
            is_model,
            has_filename,
        }),
        None => Err(0),
    }
}

impl crate::bounded::BoundedScan for MultipartExtractor {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn decision(&self) -> Option<&Outcome> {
        self.decision.as_ref()
    }

    fn candidate(&self) -> Option<&Result<Model, ExtractError>> {
        self.candidate.as_ref()
    }

    fn complete(&self) -> bool {
        self.state == State::Epilogue
    }

    fn halted(&self) -> bool {
        self.halted
    }

    fn consumed_mut(&mut self) -> &mut u64 {
        &mut self.consumed
    }

    fn sticky_mut(&mut self) -> &mut StickyError {
        &mut self.error
    }

    fn run_range(
        &mut self,
        chunk: &Bytes,
        start: usize,
        end: usize,
        base: u64,
    ) -> Result<usize, ExtractError> {
        self.run(chunk, start, end, base)
    }
}

#[cfg(test)]
#[path = "tests/multipart.rs"]
mod tests;
