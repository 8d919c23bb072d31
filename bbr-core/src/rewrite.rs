//! Replacing the `model` value of a JSON body while it streams, by splicing
//! only the bytes of its string token.
//!
//! A gateway that maps the name a client sent (`food-review`) onto what a
//! pool serves (`food-review-2`) must hand the model server the client's
//! body with that one value changed. Re-serialising the body would change
//! number formats, key order, escapes and whitespace, and cost a full parse
//! and a copy of every byte. [`ModelSplicer`] instead takes the span the
//! extractor reported ([`Model::json_span`]) and the forwarded chunks in
//! order, and gives back output pieces:
//!
//! - chunks before and after the token are the same `Bytes` (no copy);
//! - the chunk holding the opening quote is split around it with
//!   [`Bytes::slice`] (a reference count, no copy), the escaped target is
//!   put in its place, and the bytes of the old token are dropped, in as
//!   many chunks as it spans (a token split across 1-byte chunks included);
//! - the new body length is known before the first byte is sent
//!   ([`ModelSplicer::spliced_len`]), for `Content-Length`.
//!
//! The target is written as a JSON string ([`json_string_token`]): `"` and
//! `\` are escaped, control characters below U+0020 become `\n`, `\t`, ...
//! or `\u00XX`, and everything else (non-ASCII included) is kept as raw
//! UTF-8. The old token is replaced whole, escapes and the spaces around
//! the name included: the model server reads exactly the target.
//!
//! ```
//! use bbr_core::rewrite::ModelSplicer;
//! use bbr_core::{Limits, ModelExtractor, Progress};
//! use bytes::Bytes;
//!
//! let chunks = [
//!     Bytes::from_static(br#"{"messages":[],"model":"food-"#),
//!     Bytes::from_static(br#"review","stream":true}"#),
//! ];
//! let mut extractor = ModelExtractor::new(Limits::new());
//! extractor.feed(&chunks[0]).unwrap();
//! let Progress::Found(model) = extractor.feed(&chunks[1]).unwrap() else { panic!() };
//! let mut splicer = ModelSplicer::for_model(&model, "food-review-2").unwrap();
//! let mut out = Vec::new();
//! for chunk in &chunks {
//!     out.extend(splicer.push(chunk).unwrap());
//! }
//! splicer.finish().unwrap();
//! assert_eq!(out.concat(), br#"{"messages":[],"model":"food-review-2","stream":true}"#);
//! let original_len = chunks.iter().map(|c| c.len() as u64).sum::<u64>();
//! assert_eq!(splicer.spliced_len(original_len), out.concat().len() as u64);
//! // The untouched part of the deciding chunk is a slice of it.
//! assert_eq!(out.last().unwrap().as_ptr(), chunks[1][7..].as_ptr());
//! ```
//!
//! The splicer checks that the bytes at both ends of the span are quotes,
//! so a span that does not belong to these bytes (say, offsets in a
//! decoded body applied to the compressed one) is an error rather than a
//! corrupted body; [`Model::json_span`] is `None` in that case already.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};

use crate::Model;

/// Why a body cannot be spliced.
///
/// ```
/// use bbr_core::rewrite::{ModelSplicer, SpliceError};
/// assert_eq!(ModelSplicer::new(4..5, "m").unwrap_err(), SpliceError::NotAToken { start: 4, end: 5 });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpliceError {
    /// The model has no span in the forwarded bytes (a compressed body, a
    /// `multipart/form-data` field).
    #[error("the model has no JSON token in the forwarded bytes")]
    NoSpan,
    /// A span shorter than the two quotes of a JSON string.
    #[error("{start}..{end} is too short for a JSON string token")]
    NotAToken {
        /// Offset of the first byte of the span.
        start: u64,
        /// One past its last byte.
        end: u64,
    },
    /// The byte at an end of the span is not a quote: the span does not
    /// belong to these bytes.
    #[error("byte {offset} is not the quote a JSON string token starts or ends with")]
    NotAQuote {
        /// Offset of that byte.
        offset: u64,
    },
    /// The body ended before the end of the span.
    #[error("the body ended at byte {len}, before the token's end at {end}")]
    Truncated {
        /// Bytes pushed.
        len: u64,
        /// One past the token's last byte.
        end: u64,
    },
}

/// The JSON string token (quotes included) that reads back as `value`:
/// `"` and `\` escaped, control characters below U+0020 as `\b \f \n \r
/// \t` or `\u00XX`, everything else as raw UTF-8 (`/`, DEL and non-ASCII
/// included).
///
/// ```
/// use bbr_core::rewrite::json_string_token;
/// assert_eq!(json_string_token("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\u0001é""#);
/// ```
pub fn json_string_token(value: &str) -> Bytes {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = BytesMut::with_capacity(value.len() + 2);
    out.put_u8(b'"');
    let bytes = value.as_bytes();
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..0x20 => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.put_slice(&bytes[plain..i]);
        out.put_slice(escape);
        plain = i + 1;
    }
    out.put_slice(&bytes[plain..]);
    out.put_u8(b'"');
    out.freeze()
}

/// Replaces one JSON string token of a body, given by its absolute span,
/// with another, as the body's chunks are pushed in order. See the
/// [module docs](self).
///
/// Errors are sticky: after one, every later call returns it (the body
/// must not be forwarded).
#[derive(Debug, Clone)]
pub struct ModelSplicer {
    span: Range<u64>,
    token: Bytes,
    consumed: u64,
    error: Option<SpliceError>,
}

/// The output pieces of one pushed chunk: at most three (the bytes before
/// the token, the new token, the bytes after it), never an empty one.
///
/// ```
/// use bbr_core::rewrite::ModelSplicer;
/// use bytes::Bytes;
/// let mut splicer = ModelSplicer::new(1..4, "xy").unwrap();
/// let pieces = splicer.push(&Bytes::from_static(br#"["a"]"#)).unwrap();
/// assert_eq!(pieces.len(), 3);
/// assert_eq!(pieces.collect::<Vec<_>>(), [&b"["[..], &br#""xy""#[..], &b"]"[..]]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Pieces {
    items: [Option<Bytes>; 3],
    next: usize,
}

impl Pieces {
    fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        let slot = self
            .items
            .iter_mut()
            .find(|slot| slot.is_none())
            .expect("at most three pieces per chunk");
        *slot = Some(piece);
    }
}

impl Iterator for Pieces {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let item = self.items.get_mut(self.next)?.take();
        self.next += 1;
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.items[self.next.min(3)..]
            .iter()
            .filter(|slot| slot.is_some())
            .count();
        (left, Some(left))
    }
}

impl ExactSizeIterator for Pieces {}

impl ModelSplicer {
    /// A splicer putting `target` (escaped by [`json_string_token`]) in
    /// place of the bytes `span` of the body. The span must cover at least
    /// the two quotes.
    ///
    /// ```
    /// use bbr_core::rewrite::ModelSplicer;
    /// let splicer = ModelSplicer::new(9..12, "b\"").unwrap();
    /// assert_eq!(&splicer.token()[..], br#""b\"""#);
    /// ```
    pub fn new(span: Range<u64>, target: &str) -> Result<Self, SpliceError> {
        if span.end < span.start.saturating_add(2) {
            return Err(SpliceError::NotAToken {
                start: span.start,
                end: span.end,
            });
        }
        Ok(Self {
            span,
            token: json_string_token(target),
            consumed: 0,
            error: None,
        })
    }

    /// A splicer for the token `model` was read from
    /// ([`Model::json_span`]); [`SpliceError::NoSpan`] when it has none.
    ///
    /// ```
    /// use bbr_core::rewrite::ModelSplicer;
    /// use bbr_core::{extract_model, Limits};
    /// use bytes::Bytes;
    /// let body = Bytes::from_static(br#"{"model":"a"}"#);
    /// let outcome = extract_model(&body, &Limits::new()).unwrap();
    /// let splicer = ModelSplicer::for_model(outcome.model().unwrap(), "b").unwrap();
    /// assert_eq!(splicer.span(), 9..12);
    /// ```
    pub fn for_model(model: &Model, target: &str) -> Result<Self, SpliceError> {
        Self::new(model.json_span().ok_or(SpliceError::NoSpan)?, target)
    }

    /// The span replaced.
    ///
    /// ```
    /// # use bbr_core::rewrite::ModelSplicer;
    /// assert_eq!(ModelSplicer::new(3..5, "m").unwrap().span(), 3..5);
    /// ```
    pub fn span(&self) -> Range<u64> {
        self.span.clone()
    }

    /// The token put in its place (quotes included).
    ///
    /// ```
    /// # use bbr_core::rewrite::ModelSplicer;
    /// assert_eq!(&ModelSplicer::new(3..5, "m").unwrap().token()[..], b"\"m\"");
    /// ```
    pub fn token(&self) -> &Bytes {
        &self.token
    }

    /// The length of the spliced body, for a body of `original_len` bytes
    /// (which holds the span).
    ///
    /// ```
    /// # use bbr_core::rewrite::ModelSplicer;
    /// // `{"model":"a"}` (13 bytes) becomes `{"model":"abc"}`.
    /// assert_eq!(ModelSplicer::new(9..12, "abc").unwrap().spliced_len(13), 15);
    /// ```
    pub fn spliced_len(&self, original_len: u64) -> u64 {
        let removed = self.span.end - self.span.start;
        original_len.saturating_sub(removed) + self.token.len() as u64
    }

    /// Bytes pushed so far.
    ///
    /// ```
    /// # use bbr_core::rewrite::ModelSplicer;
    /// # use bytes::Bytes;
    /// let mut splicer = ModelSplicer::new(9..12, "b").unwrap();
    /// splicer.push(&Bytes::from_static(b"{")).unwrap();
    /// assert_eq!(splicer.bytes_consumed(), 1);
    /// ```
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed
    }

    /// The output for the next chunk of the body: the chunk itself when it
    /// does not touch the span, else the parts of it outside the span (as
    /// slices of it) and, in the chunk holding the opening quote, the new
    /// token. Nothing is returned for the bytes of the old token.
    ///
    /// ```
    /// use bbr_core::rewrite::{ModelSplicer, SpliceError};
    /// use bytes::Bytes;
    /// let mut splicer = ModelSplicer::new(1..3, "m").unwrap();
    /// let err = splicer.push(&Bytes::from_static(b"{x}")).unwrap_err();
    /// assert_eq!(err, SpliceError::NotAQuote { offset: 1 });
    /// ```
    pub fn push(&mut self, chunk: &Bytes) -> Result<Pieces, SpliceError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let base = self.consumed;
        let end = base + chunk.len() as u64;
        let Range {
            start: token_start,
            end: token_end,
        } = self.span;
        let mut pieces = Pieces::default();
        if end <= token_start || base >= token_end {
            self.consumed = end;
            pieces.push(chunk.clone());
            return Ok(pieces);
        }
        // Both quotes are checked before anything of this chunk is given out.
        for at in [token_start, token_end - 1] {
            if (base..end).contains(&at) && chunk[(at - base) as usize] != b'"' {
                let error = SpliceError::NotAQuote { offset: at };
                self.error = Some(error.clone());
                return Err(error);
            }
        }
        self.consumed = end;
        if base <= token_start {
            let split = (token_start - base) as usize;
            pieces.push(chunk.slice(..split));
            pieces.push(self.token.clone());
        }
        if token_end < end {
            pieces.push(chunk.slice((token_end - base) as usize..));
        }
        Ok(pieces)
    }

    /// Ends the body: an error if it ended before the span did.
    ///
    /// ```
    /// use bbr_core::rewrite::{ModelSplicer, SpliceError};
    /// use bytes::Bytes;
    /// let mut splicer = ModelSplicer::new(9..12, "b").unwrap();
    /// splicer.push(&Bytes::from_static(br#"{"model":"a"#)).unwrap();
    /// assert_eq!(splicer.finish().unwrap_err(), SpliceError::Truncated { len: 11, end: 12 });
    /// ```
    pub fn finish(&self) -> Result<(), SpliceError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        if self.consumed < self.span.end {
            return Err(SpliceError::Truncated {
                len: self.consumed,
                end: self.span.end,
            });
        }
        Ok(())
    }
}

/// A whole spliced body: its chunks and its length.
///
/// ```
/// use bbr_core::rewrite::splice;
/// use bytes::Bytes;
/// let spliced = splice(&[Bytes::from_static(br#"{"model":"a"}"#)], 9..12, "b").unwrap();
/// assert_eq!(spliced.len(), 13);
/// assert_eq!(spliced.into_chunks().concat(), br#"{"model":"b"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spliced {
    chunks: Vec<Bytes>,
    len: u64,
}

impl Spliced {
    /// The output chunks, in order (none empty).
    ///
    /// ```
    /// # use bbr_core::rewrite::splice;
    /// # use bytes::Bytes;
    /// let spliced = splice(&[Bytes::from_static(br#"{"model":"a"}"#)], 9..12, "b").unwrap();
    /// assert_eq!(spliced.chunks().len(), 3);
    /// ```
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The output chunks, owned.
    ///
    /// ```
    /// # use bbr_core::rewrite::splice;
    /// # use bytes::Bytes;
    /// let spliced = splice(&[Bytes::from_static(br#"["a"]"#)], 1..4, "").unwrap();
    /// assert_eq!(spliced.into_chunks().concat(), br#"[""]"#);
    /// ```
    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// The body's length in bytes (for `Content-Length`).
    ///
    /// ```
    /// # use bbr_core::rewrite::splice;
    /// # use bytes::Bytes;
    /// assert_eq!(splice(&[Bytes::from_static(br#"["a"]"#)], 1..4, "").unwrap().len(), 4);
    /// ```
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.len
    }
}

/// Splices a whole body given as chunks: [`ModelSplicer::push`] for each,
/// then [`ModelSplicer::finish`].
///
/// ```
/// use bbr_core::rewrite::splice;
/// use bytes::Bytes;
/// let body = [Bytes::from_static(br#"{"model":"gpt"#), Bytes::from_static(br#"-4o","n":1}"#)];
/// let spliced = splice(&body, 9..17, "llama-3").unwrap();
/// assert_eq!(spliced.into_chunks().concat(), br#"{"model":"llama-3","n":1}"#);
/// ```
pub fn splice(chunks: &[Bytes], span: Range<u64>, target: &str) -> Result<Spliced, SpliceError> {
    let mut splicer = ModelSplicer::new(span, target)?;
    let mut out = Vec::with_capacity(chunks.len() + 2);
    for chunk in chunks {
        out.extend(splicer.push(chunk)?);
    }
    splicer.finish()?;
    let len = out.iter().map(|c| c.len() as u64).sum();
    Ok(Spliced { chunks: out, len })
}

/// What a model rewrite rule decided for one request: the rule's name, the
/// name the client sent and the target routed on, for logs and metrics.
/// The tower layer sets it as a request extension and the ext_proc server
/// reports it per stream; both come from here, so a dashboard reads the
/// same decision from either.
///
/// ```
/// use bbr_core::rewrite::ModelRewrite;
/// let rewrite = ModelRewrite::new("ns/rollout/0", "food-review", "food-review-2");
/// assert_eq!(rewrite.rule(), "ns/rollout/0");
/// assert_eq!(rewrite.requested(), "food-review");
/// assert_eq!(rewrite.target(), "food-review-2");
/// assert!(rewrite.rewrote());
/// assert!(!ModelRewrite::new("0", "m", "m").rewrote());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRewrite {
    rule: Arc<str>,
    requested: Arc<str>,
    target: Arc<str>,
}

impl ModelRewrite {
    /// The decision of `rule` to send `target` for a request for `requested`.
    pub fn new(rule: &str, requested: &str, target: &str) -> Self {
        Self::from_shared(Arc::from(rule), Arc::from(requested), Arc::from(target))
    }

    /// The same from shared names (a rule's name and target are shared by
    /// every request it decides: no copy per request).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use bbr_core::rewrite::ModelRewrite;
    /// let target: Arc<str> = Arc::from("food-review-2");
    /// let rewrite = ModelRewrite::from_shared(Arc::from("0"), Arc::from("food-review"), target.clone());
    /// assert_eq!(rewrite.target(), &*target);
    /// ```
    pub fn from_shared(rule: Arc<str>, requested: Arc<str>, target: Arc<str>) -> Self {
        Self {
            rule,
            requested,
            target,
        }
    }

    /// The rule's name (`NAMESPACE/NAME/INDEX` of the resource it came
    /// from, or the index alone).
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// The name the client sent.
    pub fn requested(&self) -> &str {
        &self.requested
    }

    /// The name routed on and sent to the model server.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The body was changed (the target differs from the requested name).
    pub fn rewrote(&self) -> bool {
        self.target != self.requested
    }
}

/// Distinct requested names a rewrite metric labels
/// ([`RequestedModelLabels`]); the default of both servers.
pub const MAX_REQUESTED_MODEL_LABELS: usize = 1000;

/// The `model_name` label of rewrite decisions past
/// [`MAX_REQUESTED_MODEL_LABELS`] distinct names.
pub const OVERFLOW_MODEL_LABEL: &str = "__other__";

/// The `model_name` label of a rewrite decision. The requested name comes
/// from the client and a catch-all rule sees every name, so only the first
/// [`MAX_REQUESTED_MODEL_LABELS`] distinct names get their own label; the
/// rest share [`OVERFLOW_MODEL_LABEL`], which bounds the metric's series.
///
/// ```
/// use bbr_core::rewrite::{RequestedModelLabels, OVERFLOW_MODEL_LABEL};
/// let labels = RequestedModelLabels::with_capacity(1);
/// assert_eq!(labels.label("food-review"), "food-review");
/// assert_eq!(labels.label("other"), OVERFLOW_MODEL_LABEL);
/// assert_eq!(labels.label("food-review"), "food-review");
/// ```
#[derive(Debug)]
pub struct RequestedModelLabels {
    capacity: usize,
    seen: Mutex<HashSet<Arc<str>>>,
}

impl Default for RequestedModelLabels {
    fn default() -> Self {
        Self::with_capacity(MAX_REQUESTED_MODEL_LABELS)
    }
}

impl RequestedModelLabels {
    /// At most `capacity` distinct names get a label of their own.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// The label for a request for `model`.
    pub fn label(&self, model: &str) -> String {
        // A panic elsewhere while holding the lock leaves the set valid.
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !seen.contains(model) {
            if seen.len() >= self.capacity {
                return OVERFLOW_MODEL_LABEL.to_owned();
            }
            seen.insert(Arc::from(model));
        }
        model.to_owned()
    }
}
