//! The incremental extractor: a non-recursive JSON state machine.
//!
//! Every byte goes through one state machine whose only memory is a handful
//! of scalars, a bit stack of open containers (inline up to 256 levels) and,
//! only when the model value is split across chunks or escaped, one small
//! buffer bounded by `max_model_len`. Input chunks are never concatenated or
//! retained. Errors are detected in byte order, so the first error of a body
//! (kind and offset) does not depend on where the chunk boundaries fall.
//!
//! Two modes share the state machine: the default one skips string
//! contents in 64-byte blocks to the next quote, backslash or control byte
//! (`scan.rs`), validates the raw UTF-8 of each skipped span in one call,
//! and reads the root object's members other than the field, and
//! everything below them, in one tight loop (`nested.rs`); the reference
//! mode ([`ModelExtractor::new_reference`]) steps byte by byte and exists
//! so tests can check the fast paths against it.

use bytes::Bytes;

use crate::bounded::{BoundedScan, StickyError};

use crate::simd::{self, Level};
use crate::{DuplicateKeys, ErrorKind, ExtractError, Limits, Model, Outcome, Progress};

mod nested;

/// `key_match` value once the key can no longer be the field name.
const KEY_MISMATCH: u8 = u8::MAX;
const LITERALS: [&[u8]; 3] = [b"true", b"false", b"null"];

/// What the current string is, which decides what its contents are used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrKind {
    /// A key below the top level: validated, then skipped.
    Key,
    /// A key of the root object: compared with the field name after unescaping.
    TopKey,
    /// A value that is not the top-level model: validated, then skipped.
    Value,
    /// The value of the top-level field: captured.
    Model,
}

/// Where a number is in the RFC 8259 grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpInt,
}

impl Num {
    /// A number may end here.
    const fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpInt)
    }

    const fn next(self, b: u8) -> Option<Num> {
        Some(match (self, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, b'1'..=b'9') => Num::Int,
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
            (Num::Int, b'0'..=b'9') => Num::Int,
            (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
            (Num::Exp, b'+' | b'-') => Num::ExpSign,
            (Num::Exp | Num::ExpSign | Num::ExpInt, b'0'..=b'9') => Num::ExpInt,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the root value.
    Start,
    /// After `{`: a key or `}`.
    ObjFirst,
    /// After `,` in an object: a key.
    ObjKey,
    /// After a key: `:`.
    Colon,
    /// After `:` or after `,` in an array: a value.
    Value,
    /// After `[`: a value or `]`.
    ArrFirst,
    /// After a value: `,` or the closing bracket.
    AfterValue,
    /// Inside a string.
    Str(StrKind),
    /// After a backslash.
    Esc(StrKind),
    /// Inside `\uXXXX`; `low` is true for the second half of a surrogate pair.
    Hex {
        kind: StrKind,
        digits: u8,
        acc: u16,
        low: bool,
    },
    /// After a high surrogate escape: expecting `\`.
    SurrBackslash(StrKind),
    /// After a high surrogate escape and `\`: expecting `u`.
    SurrU(StrKind),
    /// Inside a number.
    Num(Num),
    /// Inside `true`, `false` or `null` (index into `LITERALS`, next byte).
    Lit { lit: u8, idx: u8 },
    /// After the root object: only whitespace may follow.
    Done,
}

impl State {
    /// Between tokens: not inside a string, number or literal.
    const fn is_structural(self) -> bool {
        matches!(
            self,
            State::Value
                | State::ArrFirst
                | State::ObjFirst
                | State::ObjKey
                | State::Colon
                | State::AfterValue
        )
    }
}

/// Where the bytes of the model value are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// Still a slice of the current chunk, starting at this index (no escape
    /// seen, no chunk boundary crossed).
    Slice(usize),
    /// In `model_buf` (unescaped).
    Owned,
}

/// Which kind of container each open level is: one bit per level, 256
/// levels inline (no allocation for the default `max_depth` of 128), more
/// on the heap only if a caller raises `max_depth` that far.
#[derive(Debug, Default)]
struct Containers {
    inline: [u64; 4],
    spill: Vec<u64>,
}

impl Containers {
    fn set(&mut self, level: u32, is_object: bool) {
        let word = (level / 64) as usize;
        let mask = 1u64 << (level % 64);
        let slot = if word < self.inline.len() {
            &mut self.inline[word]
        } else {
            let idx = word - self.inline.len();
            if self.spill.len() <= idx {
                self.spill.resize(idx + 1, 0);
            }
            &mut self.spill[idx]
        };
        if is_object {
            *slot |= mask;
        } else {
            *slot &= !mask;
        }
    }

    fn is_object(&self, level: u32) -> bool {
        let word = (level / 64) as usize;
        let mask = 1u64 << (level % 64);
        let slot = if word < self.inline.len() {
            self.inline[word]
        } else {
            self.spill[word - self.inline.len()]
        };
        slot & mask != 0
    }
}

const fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

const fn hex_value(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some((b - b'0') as u16),
        b'a'..=b'f' => Some((b - b'a' + 10) as u16),
        b'A'..=b'F' => Some((b - b'A' + 10) as u16),
        _ => None,
    }
}

/// Printable ASCII other than `"` and `\\`: nothing to check in a string.
const fn is_plain(b: u8) -> bool {
    b >= 0x20 && b < 0x7f && b != b'"' && b != b'\\'
}

const ONES: u64 = 0x0101_0101_0101_0101;
const TOPS: u64 = 0x8080_8080_8080_8080;

/// The top bit of each byte of `word` (little-endian) that is not plain
/// printable ASCII: `"`, `\\`, a control byte, DEL or a non-ASCII byte.
/// Exact up to and including the first flagged byte: a borrow only ever
/// runs upward from a byte that is itself flagged (`x ^ q` is zero only for
/// `q`, `x - 0x20` borrows only below 0x20), and a non-ASCII byte has its
/// top bit set already, so the lowest set bit always marks a real one.
#[inline(always)]
const fn special_mask(word: u64) -> u64 {
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    const DELS: u64 = ONES * 0x7f;
    const SPACES: u64 = ONES * 0x20;
    ((word ^ QUOTES).wrapping_sub(ONES)
        | (word ^ BACKSLASHES).wrapping_sub(ONES)
        | (word ^ DELS).wrapping_sub(ONES)
        | word.wrapping_sub(SPACES)
        | word)
        & TOPS
}

#[inline(always)]
fn word_at(bytes: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"))
}

/// Index of the first byte of `bytes` that is not plain printable ASCII (see
/// [`special_mask`]), or `bytes.len()`. One pass, eight bytes at a time:
/// word by word for the first 32 bytes (most strings and most runs between
/// escapes are short), then in 64-byte blocks of byte compares the compiler
/// vectorizes, and only a flagged block is looked into, word by word.
/// The portable scan behind [`simd::printable_run`].
#[inline]
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(crate) fn first_special(bytes: &[u8]) -> usize {
    let len = bytes.len();
    let mut i = 0;
    while i + 8 <= len && i < 32 {
        let mask = special_mask(word_at(bytes, i));
        if mask != 0 {
            return i + (mask.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i + 64 <= len {
        // Byte compares the compiler turns into vector compares (cheaper
        // per byte than the word arithmetic on long runs); one signed
        // compare catches control and non-ASCII bytes.
        let any = bytes[i..i + 64].iter().fold(0u8, |acc, &b| {
            acc | u8::from((b as i8) < 0x20)
                | u8::from(b == b'"')
                | u8::from(b == b'\\')
                | u8::from(b == 0x7f)
        });
        if any != 0 {
            break;
        }
        i += 64;
    }
    while i + 8 <= len {
        let mask = special_mask(word_at(bytes, i));
        if mask != 0 {
            return i + (mask.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < len && is_plain(bytes[i]) {
        i += 1;
    }
    i
}

/// Length of `span` without a UTF-8 sequence cut by its end: the index of
/// that sequence's lead byte, or `span.len()` when the last sequence is
/// complete (or not a sequence at all: the validator judges it).
pub(crate) fn complete_prefix(span: &[u8]) -> usize {
    let len = span.len();
    for back in 1..=len.min(4) {
        let b = span[len - back];
        if b & 0xc0 != 0x80 {
            let need = match b {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                _ => 1,
            };
            return if need > back { len - back } else { len };
        }
    }
    len
}

/// The skip of a string past the 16-byte test, out of line: one call
/// does the skip and its UTF-8 check (with AVX2 or AVX-512 enabled for
/// both); a
/// control byte where it stops is the error at its offset.
#[inline(never)]
fn long_string_run(
    level: simd::Level,
    bytes: &[u8],
    i: usize,
    base: u64,
) -> Result<usize, ExtractError> {
    simd::skip_string(level, bytes, i)
        .map_err(|at| ExtractError::new(ErrorKind::InvalidJson, base + at as u64))
}

/// Whether `span` (raw string bytes from one non-ASCII byte to another) is
/// valid UTF-8: std for the short spans of mostly-ASCII text, where the
/// setup of a vector validator costs more than the bytes, `simdutf8` for
/// long ones.
#[inline]
pub(crate) fn valid_utf8(span: &[u8]) -> bool {
    if span.len() < 32 {
        std::str::from_utf8(span).is_ok()
    } else {
        simdutf8::basic::from_utf8(span).is_ok()
    }
}

/// Whether the bytes of `bytes` from `at` start with the field name; the
/// caller has checked that the key is as long as the name and lies within
/// `bytes`. Two masked word compares when the name is at most 16 bytes and
/// 16 bytes can be read from `at`, a slice compare otherwise (the library
/// call of a slice compare costs more than the key's bytes).
#[inline(always)]
fn is_field(bytes: &[u8], at: usize, field: &crate::FieldName) -> bool {
    let name = field.as_bytes();
    let len = name.len();
    match bytes.get(at..).and_then(<[u8]>::first_chunk::<16>) {
        Some(window) if len <= 16 => {
            let head = field.head16();
            let word = |b: &[u8; 16], k: usize| {
                u64::from_le_bytes(b[k..k + 8].try_into().expect("8 bytes"))
            };
            let keep = |bytes: usize| match bytes {
                0 => 0,
                1..=7 => (1u64 << (8 * bytes)) - 1,
                _ => u64::MAX,
            };
            let low = (word(window, 0) ^ word(head, 0)) & keep(len);
            let high = (word(window, 8) ^ word(head, 8)) & keep(len.saturating_sub(8));
            low | high == 0
        }
        _ => &bytes[at..at + len] == name,
    }
}

/// Length of the leading run of bytes that can go into a model unchanged:
/// printable ASCII other than `"` and `\`.
fn plain_model_run(bytes: &[u8]) -> usize {
    simd::printable_run(bytes)
}

/// Incremental extractor of the top-level `model` of a JSON object, fed
/// `Bytes` chunks of any size.
///
/// Feed chunks with [`feed`](Self::feed) until it reports a decision (or
/// keep feeding the rest of the body to have it validated, under
/// [`DuplicateKeys::Reject`]), then call [`finish`](Self::finish) at the end
/// of the body for the final verdict. The answer does not depend on how the
/// body is split into chunks. See the [crate docs](crate) for the exact
/// semantics.
///
/// ```
/// use bbr_core::{ModelExtractor, Limits, Outcome, Progress};
/// use bytes::Bytes;
///
/// let mut extractor = ModelExtractor::new(Limits::new());
/// assert_eq!(extractor.feed(&Bytes::from_static(b"{\"mod")).unwrap(), Progress::NeedMore);
/// let progress = extractor.feed(&Bytes::from_static(b"el\":\"food-review-1\",")).unwrap();
/// assert!(matches!(progress, Progress::Found(ref m) if m.as_str() == "food-review-1"));
/// // The rest is still validated under the default policy (reject).
/// assert_eq!(extractor.feed(&Bytes::from_static(b"\"stream\":true}")).unwrap(), Progress::Decided);
/// let outcome = extractor.finish().unwrap();
/// assert_eq!(outcome.model().unwrap().as_str(), "food-review-1");
/// ```
#[derive(Debug)]
pub struct ModelExtractor {
    limits: Limits,
    /// Byte-at-a-time reference mode (no fast paths).
    reference: bool,
    /// The string-skip masks this CPU runs best.
    level: Level,
    consumed: u64,
    state: State,
    /// Open containers; the root object is depth 1.
    depth: u32,
    containers: Containers,
    /// The last top-level key was `model`: the next value is the model.
    pending_model: bool,
    /// Prefix of `model` matched by the current top-level key so far.
    key_match: u8,
    key_start: u64,
    /// Offset of the backslash of the current escape (of the high half for
    /// a surrogate pair).
    esc_start: u64,
    high_surrogate: u16,
    /// UTF-8 sequence in progress: continuation bytes still needed, allowed
    /// range of the next one, offset of the lead byte.
    utf8_need: u8,
    utf8_lo: u8,
    utf8_hi: u8,
    utf8_lead: u64,
    /// The model value being read: offset of its opening quote, unescaped
    /// bytes so far (surrounding spaces included, as they are held).
    model_start: u64,
    model_len: usize,
    /// Leading spaces and tabs (trimmed), trailing ones so far (trimmed if
    /// nothing else follows), whether anything else was seen yet, and the
    /// offset of the first tab of the trailing run: a tab inside the name
    /// is a control character, known only once more text follows it.
    model_lead: usize,
    model_trail: usize,
    model_text: bool,
    model_tab: Option<u64>,
    /// Lead byte of the UTF-8 sequence in progress (C1 controls are
    /// `0xC2 0x80..=0x9F`).
    utf8_first: u8,
    capture: Capture,
    model_buf: Vec<u8>,
    /// The early decision (reject, first-wins).
    decision: Option<Outcome>,
    /// The latest top-level model under last-wins (or why it is invalid).
    candidate: Option<Result<Model, ExtractError>>,
    /// Decided under first-wins: later bytes are only counted.
    halted: bool,
    error: StickyError,
}

impl ModelExtractor {
    /// A fresh extractor with these limits. Does not allocate.
    ///
    /// ```
    /// use bbr_core::{DuplicateKeys, Limits, ModelExtractor};
    /// let extractor = ModelExtractor::new(Limits::new().with_duplicate_keys(DuplicateKeys::LastWins));
    /// assert_eq!(extractor.bytes_consumed(), 0);
    /// ```
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            reference: false,
            level: Level::detect(),
            consumed: 0,
            state: State::Start,
            depth: 0,
            containers: Containers::default(),
            pending_model: false,
            key_match: 0,
            key_start: 0,
            esc_start: 0,
            high_surrogate: 0,
            utf8_need: 0,
            utf8_lo: 0x80,
            utf8_hi: 0xbf,
            utf8_lead: 0,
            model_start: 0,
            model_len: 0,
            model_lead: 0,
            model_trail: 0,
            model_text: false,
            model_tab: None,
            utf8_first: 0,
            capture: Capture::Owned,
            model_buf: Vec::new(),
            decision: None,
            candidate: None,
            halted: false,
            error: StickyError::default(),
        }
    }

    /// The fast mode with the string-skip masks of `level` (tests run
    /// every level this CPU has).
    #[cfg(test)]
    pub(crate) fn with_level(limits: Limits, level: Level) -> Self {
        Self {
            level,
            ..Self::new(limits)
        }
    }

    /// The byte-at-a-time reference implementation of the same state
    /// machine, without the fast paths for strings, nested values and the model-first prefix. Slower; used by
    /// tests as a second oracle for the fast paths.
    ///
    /// ```
    /// use bbr_core::{Limits, ModelExtractor, extract_model};
    /// use bytes::Bytes;
    /// let body = Bytes::from_static(b"{\"model\":\"m\"}");
    /// let mut reference = ModelExtractor::new_reference(Limits::new());
    /// reference.feed(&body).unwrap();
    /// assert_eq!(reference.finish(), extract_model(&body, &Limits::new()));
    /// ```
    #[doc(hidden)]
    pub fn new_reference(limits: Limits) -> Self {
        Self {
            reference: true,
            ..Self::new(limits)
        }
    }

    /// The limits this extractor enforces.
    ///
    /// ```
    /// use bbr_core::{Limits, ModelExtractor};
    /// assert_eq!(ModelExtractor::default().limits(), &Limits::new());
    /// ```
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Feeds the next chunk. After an error every later call returns the same
    /// error. Chunks are never retained; a found model may be a slice of
    /// `chunk`.
    ///
    /// Returns [`Progress::Found`] or [`Progress::Absent`] once, for the
    /// chunk that decided, [`Progress::Decided`] for later chunks, and
    /// [`Progress::NeedMore`] before a decision.
    ///
    /// ```
    /// use bbr_core::{ErrorKind, Limits, ModelExtractor, Progress};
    /// use bytes::Bytes;
    /// let mut extractor = ModelExtractor::new(Limits::new());
    /// assert!(matches!(extractor.feed(&Bytes::from_static(b"{\"model\":\"a\"")), Ok(Progress::Found(_))));
    /// // A second top-level `model` is refused under the default policy.
    /// let err = extractor.feed(&Bytes::from_static(b",\"model\":\"b\"}")).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::DuplicateModel);
    /// assert_eq!(err.offset(), 13);
    /// // Errors are sticky.
    /// assert_eq!(extractor.feed(&Bytes::from_static(b" ")).unwrap_err(), err);
    /// ```
    pub fn feed(&mut self, chunk: &Bytes) -> Result<Progress, ExtractError> {
        self.feed_chunk(chunk)
    }

    /// Ends the body and returns the final verdict (found or absent), or the
    /// error (for example `unexpected_end` on a truncated body).
    ///
    /// ```
    /// use bbr_core::{ErrorKind, Limits, ModelExtractor};
    /// use bytes::Bytes;
    /// let mut extractor = ModelExtractor::new(Limits::new());
    /// extractor.feed(&Bytes::from_static(b"{\"model\":\"m\",\"messages\":[")).unwrap();
    /// let err = extractor.finish().unwrap_err();
    /// assert_eq!((err.kind(), err.offset()), (ErrorKind::UnexpectedEnd, 25));
    /// ```
    pub fn finish(&mut self) -> Result<Outcome, ExtractError> {
        self.finish_body()
    }

    /// Bytes fed so far (all of them, also those after a decision).
    ///
    /// ```
    /// use bbr_core::ModelExtractor;
    /// use bytes::Bytes;
    /// let mut extractor = ModelExtractor::default();
    /// extractor.feed(&Bytes::from_static(b"  {")).unwrap();
    /// assert_eq!(extractor.bytes_consumed(), 3);
    /// ```
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed
    }

    /// Runs the state machine over `chunk[start..end]` (absolute offset of
    /// `chunk[0]` is `base`). Returns where it stopped: `end`, or just after
    /// the deciding byte under first-wins.
    fn run(
        &mut self,
        chunk: &Bytes,
        start: usize,
        end: usize,
        base: u64,
    ) -> Result<usize, ExtractError> {
        let bytes = &chunk[..end];
        let mut i = start;
        let invalid = |i: usize| ExtractError::new(ErrorKind::InvalidJson, base + i as u64);
        while i < end {
            // Between tokens: the tight loop (`nested.rs`), which leaves
            // what it does not take (the field's key and value among them)
            // to the match below, at once: entered again where it left, it
            // would only leave again.
            if self.depth >= 1
                && !self.reference
                && !self.pending_model
                && self.state.is_structural()
            {
                i = self.skip_nested(chunk, end, i, base);
                if self.halted {
                    return Ok(i);
                }
                if i == end {
                    break;
                }
            }
            let b = bytes[i];
            match self.state {
                State::Str(_)
                | State::Esc(_)
                | State::Hex { .. }
                | State::SurrBackslash(_)
                | State::SurrU(_) => {
                    i = self.string(chunk, i, end, base)?;
                    if self.halted {
                        return Ok(i);
                    }
                }
                _ if is_ws(b) && !matches!(self.state, State::Num(_) | State::Lit { .. }) => {
                    i += 1;
                    while i < end && is_ws(bytes[i]) {
                        i += 1;
                    }
                }
                State::Start => match b {
                    b'{' if !self.reference && self.limits.max_depth() > 0 => {
                        i = self.model_first(chunk, i, end, base);
                        if self.halted {
                            return Ok(i);
                        }
                    }
                    b'{' => {
                        self.open(true, base + i as u64)?;
                        self.state = State::ObjFirst;
                        i += 1;
                    }
                    b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                        return Err(ExtractError::new(ErrorKind::NotAnObject, base + i as u64));
                    }
                    _ => return Err(invalid(i)),
                },
                State::ObjFirst | State::ObjKey => match b {
                    b'"' => {
                        if self.depth == 1 {
                            self.key_match = 0;
                            self.key_start = base + i as u64;
                            self.state = State::Str(StrKind::TopKey);
                        } else {
                            self.state = State::Str(StrKind::Key);
                        }
                        i += 1;
                    }
                    b'}' if self.state == State::ObjFirst => {
                        i += 1;
                        self.close();
                        if self.halted {
                            return Ok(i);
                        }
                    }
                    _ => return Err(invalid(i)),
                },
                State::Colon => match b {
                    b':' => {
                        self.state = State::Value;
                        i += 1;
                    }
                    _ => return Err(invalid(i)),
                },
                State::ArrFirst if b == b']' => {
                    i += 1;
                    self.close();
                }
                State::Value | State::ArrFirst => {
                    self.begin_value(b, i, base)?;
                    i += 1;
                }
                State::AfterValue => {
                    let in_object = self.containers.is_object(self.depth - 1);
                    match b {
                        b',' => {
                            self.state = if in_object {
                                State::ObjKey
                            } else {
                                State::Value
                            };
                        }
                        b'}' if in_object => self.close(),
                        b']' if !in_object => self.close(),
                        _ => return Err(invalid(i)),
                    }
                    i += 1;
                    if self.halted {
                        return Ok(i);
                    }
                }
                State::Num(num) => match num.next(b) {
                    Some(next) => {
                        i += 1;
                        if matches!(next, Num::Int | Num::Frac | Num::ExpInt) {
                            while i < end && bytes[i].is_ascii_digit() {
                                i += 1;
                            }
                        }
                        self.state = State::Num(next);
                    }
                    // The number ended: this byte belongs to what follows.
                    None if num.complete() => self.state = State::AfterValue,
                    None => return Err(invalid(i)),
                },
                State::Lit { lit, idx } => {
                    let literal = LITERALS[lit as usize];
                    if b != literal[idx as usize] {
                        return Err(invalid(i));
                    }
                    i += 1;
                    self.state = if idx as usize + 1 == literal.len() {
                        State::AfterValue
                    } else {
                        State::Lit { lit, idx: idx + 1 }
                    };
                }
                State::Done => return Err(invalid(i)),
            }
        }
        // The chunk ends inside the model value: keep what was read of it
        // (the chunk itself is not retained).
        if let (Capture::Slice(from), State::Str(StrKind::Model)) = (self.capture, self.state) {
            self.model_buf.clear();
            self.model_buf
                .reserve(self.limits.max_model_len().min(1024));
            self.model_buf.extend_from_slice(&bytes[from..end]);
            self.capture = Capture::Owned;
        }
        Ok(i)
    }

    /// The common case in one step: the body opens with `{"model":"` and a
    /// plain model (printable ASCII, no escapes) that ends within this
    /// chunk. Reads it with slice comparisons and leaves the machine in the
    /// state the byte-at-a-time path would reach. Anything else (other
    /// first key, escapes, whitespace, a chunk boundary, a limit) changes
    /// nothing and leaves the body to the general path from `i` (the `{`),
    /// so errors and offsets are unaffected.
    fn model_first(&mut self, chunk: &Bytes, i: usize, end: usize, base: u64) -> usize {
        let bytes = &chunk[..end];
        let key_end = i + 2 + self.limits.field().as_bytes().len();
        let from = key_end + 3;
        if bytes.get(i..i + 2) != Some(b"{\"")
            || bytes.get(key_end..from) != Some(b"\":\"")
            || !is_field(bytes, i + 2, self.limits.field())
        {
            return self.open_root(i);
        }
        self.containers.set(0, true);
        self.depth = 1;
        match self.plain_model(chunk, from, end, base) {
            Some(next) => next,
            None => self.open_root(i),
        }
    }

    /// The model value whose contents start at chunk index `from` (after
    /// its opening quote), in one step when it is plain: printable ASCII
    /// without escapes, within the model limit, not only spaces, closed
    /// within `chunk[..end]`. Then it is decided (or the last-wins
    /// candidate) exactly as the byte-at-a-time path would have it, the
    /// state is `AfterValue`, and the index after the closing quote is
    /// returned. `None` changes nothing: the general path reads the value
    /// and reports whatever is wrong with it.
    #[inline]
    fn plain_model(&mut self, chunk: &Bytes, from: usize, end: usize, base: u64) -> Option<usize> {
        let max = self.limits.max_model_len();
        let window = chunk.get(from..end.min(from.saturating_add(max).saturating_add(1)))?;
        let len = plain_model_run(window);
        if len > max || window.get(len) != Some(&b'"') {
            return None;
        }
        // Spaces around the name are trimmed; only spaces is empty (left to
        // the general path, which reports it).
        let name = &window[..len];
        let (first, last) = match (name.first(), name.last()) {
            (Some(&a), Some(&z)) if a != b' ' && z != b' ' => (0, len - 1),
            _ => {
                let first = name.iter().position(|&b| b != b' ')?;
                let last = name
                    .iter()
                    .rposition(|&b| b != b' ')
                    .expect("one non-space");
                (first, last)
            }
        };
        self.state = State::AfterValue;
        let model = Model::new_unchecked_utf8(chunk.slice(from + first..from + last + 1), true)
            .with_json_span(base + from as u64 - 1..base + (from + len + 1) as u64);
        match self.limits.duplicate_keys() {
            DuplicateKeys::LastWins => self.candidate = Some(Ok(model)),
            policy => {
                self.halted = policy == DuplicateKeys::FirstWins;
                self.decision = Some(Outcome::Found(model));
            }
        }
        Some(from + len + 1)
    }

    /// Opens the root object at chunk index `i` (the `{`, with `max_depth`
    /// at least 1, checked by the caller); returns the next index.
    fn open_root(&mut self, i: usize) -> usize {
        self.containers.set(0, true);
        self.depth = 1;
        self.state = State::ObjFirst;
        i + 1
    }

    /// Opens a container at absolute offset `at`.
    fn open(&mut self, is_object: bool, at: u64) -> Result<(), ExtractError> {
        let limit = self.limits.max_depth();
        if self.depth >= limit {
            return Err(ExtractError::new(ErrorKind::TooDeep { limit }, at));
        }
        self.containers.set(self.depth, is_object);
        self.depth += 1;
        Ok(())
    }

    /// Closes the innermost container (the caller checked its kind).
    fn close(&mut self) {
        self.depth -= 1;
        if self.depth > 0 {
            self.state = State::AfterValue;
            return;
        }
        self.state = State::Done;
        let policy = self.limits.duplicate_keys();
        if self.decision.is_none() && policy != DuplicateKeys::LastWins {
            self.decision = Some(Outcome::Absent);
            self.halted = policy == DuplicateKeys::FirstWins;
        }
    }

    /// The first byte `b` of a value at chunk index `i`.
    fn begin_value(&mut self, b: u8, i: usize, base: u64) -> Result<(), ExtractError> {
        let at = base + i as u64;
        let is_model = std::mem::take(&mut self.pending_model);
        if is_model && b != b'"' {
            if !matches!(b, b'{' | b'[' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') {
                return Err(ExtractError::new(ErrorKind::InvalidJson, at));
            }
            self.model_error(ErrorKind::ModelNotAString, at)?;
        }
        self.state = match b {
            b'"' if is_model => {
                self.model_start = at;
                self.model_len = 0;
                self.model_lead = 0;
                self.model_trail = 0;
                self.model_text = false;
                self.model_tab = None;
                self.capture = Capture::Slice(i + 1);
                State::Str(StrKind::Model)
            }
            b'"' => State::Str(StrKind::Value),
            b'{' => {
                self.open(true, at)?;
                State::ObjFirst
            }
            b'[' => {
                self.open(false, at)?;
                State::ArrFirst
            }
            b'-' => State::Num(Num::Minus),
            b'0' => State::Num(Num::Zero),
            b'1'..=b'9' => State::Num(Num::Int),
            b't' => State::Lit { lit: 0, idx: 1 },
            b'f' => State::Lit { lit: 1, idx: 1 },
            b'n' => State::Lit { lit: 2, idx: 1 },
            _ => return Err(ExtractError::new(ErrorKind::InvalidJson, at)),
        };
        Ok(())
    }

    /// A problem with the top-level model value. Under last-wins it only
    /// becomes the candidate (a later `model` may replace it) and the value
    /// is read on as an ordinary one; otherwise it is the error.
    fn model_error(&mut self, kind: ErrorKind, at: u64) -> Result<(), ExtractError> {
        let error = ExtractError::new(kind, at);
        if self.limits.duplicate_keys() != DuplicateKeys::LastWins {
            return Err(error);
        }
        self.candidate = Some(Err(error));
        self.state = match self.state {
            State::Str(StrKind::Model) => State::Str(StrKind::Value),
            State::Esc(StrKind::Model) => State::Esc(StrKind::Value),
            other => other,
        };
        Ok(())
    }

    /// Processes string states from chunk index `i`; returns where it
    /// stopped (after the closing quote, or `end`).
    fn string(
        &mut self,
        chunk: &Bytes,
        mut i: usize,
        end: usize,
        base: u64,
    ) -> Result<usize, ExtractError> {
        let bytes = &chunk[..end];
        while i < end {
            let b = bytes[i];
            let at = base + i as u64;
            match self.state {
                State::Str(kind) => {
                    if self.utf8_need > 0 {
                        self.utf8_continuation(b)?;
                        self.content_byte(kind, b, at)?;
                        i += 1;
                        continue;
                    }
                    if !self.reference {
                        match kind {
                            StrKind::Key | StrKind::Value => {
                                i = self.skip_string_run(bytes, i, base)?;
                            }
                            StrKind::Model => i = self.model_run(bytes, i)?,
                            StrKind::TopKey => i = self.top_key_run(bytes, i),
                        }
                        if i == end {
                            break;
                        }
                        // The state may have changed (last-wins model error).
                        if self.state != State::Str(kind) {
                            continue;
                        }
                    }
                    let b = bytes[i];
                    let at = base + i as u64;
                    match b {
                        b'"' => {
                            self.end_string(kind, chunk, i, at)?;
                            return Ok(i + 1);
                        }
                        b'\\' => {
                            self.esc_start = at;
                            if let Capture::Slice(from) = self.capture
                                && kind == StrKind::Model
                            {
                                self.model_buf.clear();
                                self.model_buf
                                    .reserve(self.limits.max_model_len().min(1024));
                                self.model_buf.extend_from_slice(&bytes[from..i]);
                                self.capture = Capture::Owned;
                            }
                            self.state = State::Esc(kind);
                        }
                        0..=0x1f => {
                            return Err(ExtractError::new(ErrorKind::InvalidJson, at));
                        }
                        0x80.. => {
                            self.utf8_lead(b, at)?;
                            self.content_byte(kind, b, at)?;
                        }
                        _ => self.content_byte(kind, b, at)?,
                    }
                    i += 1;
                }
                State::Esc(kind) => {
                    let unescaped = match b {
                        b'"' | b'\\' | b'/' => b,
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            self.state = State::Hex {
                                kind,
                                digits: 0,
                                acc: 0,
                                low: false,
                            };
                            i += 1;
                            continue;
                        }
                        _ => return Err(self.invalid_escape()),
                    };
                    self.state = State::Str(kind);
                    self.escaped_char(kind, u32::from(unescaped))?;
                    i += 1;
                }
                State::Hex {
                    kind,
                    digits,
                    acc,
                    low,
                } => {
                    let Some(value) = hex_value(b) else {
                        return Err(self.invalid_escape());
                    };
                    let acc = (acc << 4) | value;
                    i += 1;
                    if digits < 3 {
                        self.state = State::Hex {
                            kind,
                            digits: digits + 1,
                            acc,
                            low,
                        };
                        continue;
                    }
                    if low {
                        if !(0xdc00..=0xdfff).contains(&acc) {
                            return Err(self.invalid_escape());
                        }
                        let high = u32::from(self.high_surrogate - 0xd800);
                        let code = 0x10000 + (high << 10) + u32::from(acc - 0xdc00);
                        self.state = State::Str(kind);
                        self.escaped_char(kind, code)?;
                    } else if (0xd800..=0xdbff).contains(&acc) {
                        self.high_surrogate = acc;
                        self.state = State::SurrBackslash(kind);
                    } else if (0xdc00..=0xdfff).contains(&acc) {
                        return Err(self.invalid_escape());
                    } else {
                        self.state = State::Str(kind);
                        self.escaped_char(kind, u32::from(acc))?;
                    }
                }
                State::SurrBackslash(kind) => {
                    if b != b'\\' {
                        return Err(self.invalid_escape());
                    }
                    self.state = State::SurrU(kind);
                    i += 1;
                }
                State::SurrU(kind) => {
                    if b != b'u' {
                        return Err(self.invalid_escape());
                    }
                    self.state = State::Hex {
                        kind,
                        digits: 0,
                        acc: 0,
                        low: true,
                    };
                    i += 1;
                }
                _ => return Ok(i),
            }
        }
        Ok(i)
    }

    fn invalid_escape(&self) -> ExtractError {
        ExtractError::new(ErrorKind::InvalidEscape, self.esc_start)
    }

    /// Fast path for a skipped string from chunk index `i` (no UTF-8
    /// sequence pending): [`simd::skip_string`] to the closing quote,
    /// stepping over complete valid escapes, with one UTF-8 validation of
    /// the raw span when it holds non-ASCII bytes. Returns the index of the
    /// closing quote, or of the first byte it leaves to the byte-at-a-time
    /// path (an escape that is invalid or cut by the chunk end, the start of
    /// an invalid UTF-8 sequence or of one cut by the chunk end, which that
    /// path reports or carries over exactly), or the chunk end.
    #[inline]
    fn skip_string_run(&self, bytes: &[u8], i: usize, base: u64) -> Result<usize, ExtractError> {
        // Most keys and many values are short: one 16-byte test finds their
        // closing quote without setting up a block.
        if let Some(close) = simd::short_string_end(bytes, i) {
            return Ok(close);
        }
        long_string_run(self.level, bytes, i, base)
    }

    /// Fast path for a top-level key: matches its leading run of printable
    /// ASCII (no escape, no control or non-ASCII byte) against the rest of
    /// `model` at once, as `key_byte` would byte by byte.
    fn top_key_run(&mut self, bytes: &[u8], i: usize) -> usize {
        let run = &bytes[i..i + plain_model_run(&bytes[i..])];
        let matched = self.key_match as usize;
        let field = self.limits.field().as_bytes();
        self.key_match = match field.get(matched..matched + run.len()) {
            Some(expected) if expected == run => self.key_match + run.len() as u8,
            _ => KEY_MISMATCH,
        };
        i + run.len()
    }

    /// Fast path for the model value: takes the leading run of plain ASCII
    /// (no escapes, no control characters), bounded by the model limit.
    fn model_run(&mut self, bytes: &[u8], i: usize) -> Result<usize, ExtractError> {
        let max = self.limits.max_model_len();
        let room = max - self.model_len;
        let window = &bytes[i..bytes.len().min(i.saturating_add(room).saturating_add(1))];
        let run = plain_model_run(window);
        let fit = run.min(room);
        if fit > 0 {
            let text = &bytes[i..i + fit];
            self.model_ascii_run(text)?;
            if self.state != State::Str(StrKind::Model) {
                // Refused under last-wins: the rest is read as a value.
                return Ok(i);
            }
            self.model_len += fit;
            if self.capture == Capture::Owned {
                self.model_buf.extend_from_slice(text);
            }
        }
        if run > room {
            // The byte past the limit is text after a held-back tab: the
            // tab is reported first, as `model_char` does.
            if let Some(tab) = self.model_tab
                && bytes[i + fit] != b' '
            {
                self.model_error(ErrorKind::ModelControlChar, tab)?;
                return Ok(i + fit);
            }
            self.model_error(ErrorKind::ModelTooLong { limit: max }, self.model_start)?;
        }
        Ok(i + fit)
    }

    /// Trim bookkeeping for a run of printable ASCII model bytes (spaces
    /// are the only whitespace it can hold); the caller counts and stores
    /// them.
    fn model_ascii_run(&mut self, text: &[u8]) -> Result<(), ExtractError> {
        let Some(last) = text.iter().rposition(|&b| b != b' ') else {
            if self.model_text {
                self.model_trail += text.len();
            } else {
                self.model_lead += text.len();
            }
            return Ok(());
        };
        if !self.model_text {
            self.model_lead += text.iter().position(|&b| b != b' ').expect("one non-space");
        } else if let Some(tab) = self.model_tab {
            return self.model_error(ErrorKind::ModelControlChar, tab);
        }
        self.model_text = true;
        self.model_trail = text.len() - 1 - last;
        Ok(())
    }

    /// One complete character `code` (`len` bytes of UTF-8) of the model
    /// after unescaping; `at` is where a control character is reported (the
    /// byte itself, the lead byte of its sequence or the backslash of its
    /// escape). Checks in stream order: a tab held back before it, control
    /// characters (C0, DEL, C1), the length. The caller stores the bytes.
    fn model_char(&mut self, code: u32, len: usize, at: u64) -> Result<(), ExtractError> {
        let max = self.limits.max_model_len();
        let is_space = code == u32::from(b' ') || code == u32::from(b'\t');
        if !is_space {
            if let Some(tab) = self.model_tab {
                return self.model_error(ErrorKind::ModelControlChar, tab);
            }
            if code < 0x20 || (0x7f..=0x9f).contains(&code) {
                return self.model_error(ErrorKind::ModelControlChar, at);
            }
        }
        if self.model_len + len > max {
            return self.model_error(ErrorKind::ModelTooLong { limit: max }, self.model_start);
        }
        self.model_len += len;
        if !is_space {
            self.model_text = true;
            self.model_trail = 0;
        } else if !self.model_text {
            self.model_lead += len;
        } else {
            self.model_trail += len;
            if code == u32::from(b'\t') && self.model_tab.is_none() {
                self.model_tab = Some(at);
            }
        }
        Ok(())
    }

    fn utf8_lead(&mut self, b: u8, at: u64) -> Result<(), ExtractError> {
        let (need, lo, hi) = match b {
            0xc2..=0xdf => (1, 0x80, 0xbf),
            0xe0 => (2, 0xa0, 0xbf),
            0xe1..=0xec | 0xee | 0xef => (2, 0x80, 0xbf),
            0xed => (2, 0x80, 0x9f),
            0xf0 => (3, 0x90, 0xbf),
            0xf1..=0xf3 => (3, 0x80, 0xbf),
            0xf4 => (3, 0x80, 0x8f),
            _ => return Err(ExtractError::new(ErrorKind::InvalidUtf8, at)),
        };
        self.utf8_need = need;
        self.utf8_first = b;
        self.utf8_lo = lo;
        self.utf8_hi = hi;
        self.utf8_lead = at;
        Ok(())
    }

    fn utf8_continuation(&mut self, b: u8) -> Result<(), ExtractError> {
        if b < self.utf8_lo || b > self.utf8_hi {
            // Like `str::from_utf8`: the error is where the sequence starts.
            return Err(ExtractError::new(ErrorKind::InvalidUtf8, self.utf8_lead));
        }
        self.utf8_need -= 1;
        self.utf8_lo = 0x80;
        self.utf8_hi = 0xbf;
        Ok(())
    }

    /// A raw (not escaped) content byte of a string, already checked to be
    /// neither a quote, a backslash nor below 0x20.
    fn content_byte(&mut self, kind: StrKind, b: u8, at: u64) -> Result<(), ExtractError> {
        match kind {
            StrKind::Key | StrKind::Value => Ok(()),
            StrKind::TopKey => {
                self.key_byte(b);
                Ok(())
            }
            StrKind::Model => {
                if self.capture == Capture::Owned {
                    self.model_buf.push(b);
                }
                if b < 0x80 {
                    return self.model_char(u32::from(b), 1, at);
                }
                if self.utf8_need > 0 {
                    return Ok(());
                }
                // The last byte of a sequence: the character is complete.
                let len = (at - self.utf8_lead + 1) as usize;
                // Only C1 matters here: the code of `0xC2 b` is `b`.
                let code = if self.utf8_first == 0xc2 {
                    u32::from(b)
                } else {
                    0x100
                };
                self.model_char(code, len, self.utf8_lead)
            }
        }
    }

    /// An unescaped character `code` from an escape sequence.
    fn escaped_char(&mut self, kind: StrKind, code: u32) -> Result<(), ExtractError> {
        match kind {
            StrKind::Key | StrKind::Value => Ok(()),
            StrKind::TopKey | StrKind::Model => {
                let ch = char::from_u32(code).expect("surrogates were rejected before");
                let mut utf8 = [0u8; 4];
                let encoded = ch.encode_utf8(&mut utf8).as_bytes();
                if kind == StrKind::TopKey {
                    encoded.iter().for_each(|&b| self.key_byte(b));
                    return Ok(());
                }
                self.model_char(code, encoded.len(), self.esc_start)?;
                if self.capture == Capture::Owned {
                    self.model_buf.extend_from_slice(encoded);
                }
                Ok(())
            }
        }
    }

    fn key_byte(&mut self, b: u8) {
        let matched = self.key_match as usize;
        let field = self.limits.field().as_bytes();
        self.key_match = if field.get(matched) == Some(&b) {
            self.key_match + 1
        } else {
            KEY_MISMATCH
        };
    }

    /// The closing quote of a string at chunk index `i` (absolute offset `at`).
    fn end_string(
        &mut self,
        kind: StrKind,
        chunk: &Bytes,
        i: usize,
        at: u64,
    ) -> Result<(), ExtractError> {
        match kind {
            StrKind::Key => self.state = State::Colon,
            StrKind::Value => self.state = State::AfterValue,
            StrKind::TopKey => {
                self.state = State::Colon;
                if self.key_match as usize == self.limits.field().as_bytes().len() {
                    if self.decision.is_some() {
                        // Only reachable under reject: first-wins stops
                        // reading at the decision, last-wins never decides
                        // early.
                        return Err(ExtractError::new(ErrorKind::DuplicateModel, self.key_start));
                    }
                    self.pending_model = true;
                }
            }
            StrKind::Model => {
                self.state = State::AfterValue;
                if !self.model_text {
                    return self.model_error(ErrorKind::EmptyModel, self.model_start);
                }
                let (lead, trail) = (self.model_lead, self.model_trail);
                let model = match self.capture {
                    Capture::Slice(from) => {
                        Model::new_unchecked_utf8(chunk.slice(from + lead..i - trail), true)
                    }
                    Capture::Owned => {
                        let mut name = std::mem::take(&mut self.model_buf);
                        name.truncate(name.len() - trail);
                        name.drain(..lead);
                        Model::new_unchecked_utf8(Bytes::from(name), false)
                    }
                }
                .with_json_span(self.model_start..at + 1);
                if self.limits.duplicate_keys() == DuplicateKeys::LastWins {
                    self.candidate = Some(Ok(model));
                } else {
                    self.halted = self.limits.duplicate_keys() == DuplicateKeys::FirstWins;
                    self.decision = Some(Outcome::Found(model));
                }
            }
        }
        Ok(())
    }
}

impl Default for ModelExtractor {
    fn default() -> Self {
        Self::new(Limits::new())
    }
}

/// One-shot extraction from a whole body: [`ModelExtractor::feed`] with the
/// whole body, then [`ModelExtractor::finish`].
///
/// ```
/// use bbr_core::{extract_model, ErrorKind, Limits};
/// use bytes::Bytes;
/// let body = Bytes::from_static(br#"{"messages":[{"role":"user","content":"hi"}],"model":"ski-resorts"}"#);
/// let outcome = extract_model(&body, &Limits::new()).unwrap();
/// assert_eq!(outcome.model().unwrap().as_str(), "ski-resorts");
///
/// let err = extract_model(&Bytes::from_static(b"[1]"), &Limits::new()).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::NotAnObject);
/// ```
pub fn extract_model(body: &Bytes, limits: &Limits) -> Result<Outcome, ExtractError> {
    let mut extractor = ModelExtractor::new(*limits);
    extractor.consumed = body.len() as u64;
    extractor.feed_bounded(body, 0)?;
    // Hand out the decision without the clones `feed` and `finish` make.
    let complete = extractor.state == State::Done;
    match limits.duplicate_keys() {
        DuplicateKeys::FirstWins if extractor.decision.is_some() => {
            Ok(extractor.decision.take().expect("checked"))
        }
        DuplicateKeys::Reject if complete && extractor.decision.is_some() => {
            Ok(extractor.decision.take().expect("checked"))
        }
        _ => extractor.finish(),
    }
}

impl crate::bounded::BoundedScan for ModelExtractor {
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
        self.state == State::Done
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
mod scan_tests {
    use super::{complete_prefix, first_special, is_field};
    use crate::FieldName;

    /// The word compare against the slice compare: field names of 1 to
    /// 20 bytes, keys as long as the name or up to two bytes longer (the
    /// name is then a prefix or not) that differ from it at each byte (or
    /// not at all), with 16 bytes readable after the key or fewer (the
    /// slice ends right after it).
    #[test]
    fn is_field_agrees_with_the_slice_compare() {
        let mut checked = 0;
        for field_len in 1..=20 {
            let name: String = ('a'..='z').take(field_len).collect();
            let field = FieldName::new(&name).expect("a valid name");
            for key_len in field_len..=field_len + 2 {
                let mut key: Vec<u8> = ('a'..='z').take(key_len).map(|c| c as u8).collect();
                for flip in std::iter::once(None).chain((0..key_len).map(Some)) {
                    if let Some(at) = flip {
                        key[at] ^= 0x20;
                    }
                    for tail in [0, 1, 15, 16, 40] {
                        let mut bytes = vec![b'"'];
                        bytes.extend_from_slice(&key);
                        bytes.extend(std::iter::repeat_n(b'"', tail));
                        let expected = key.starts_with(name.as_bytes());
                        assert_eq!(
                            is_field(&bytes, 1, &field),
                            expected,
                            "{name} {:?} tail {tail}",
                            String::from_utf8_lossy(&key)
                        );
                        checked += 1;
                    }
                    if let Some(at) = flip {
                        key[at] ^= 0x20;
                    }
                }
            }
        }
        assert_eq!(checked, 3_750);
    }

    #[test]
    fn a_sequence_cut_by_the_end_is_left_out() {
        for (span, len) in [
            (&b""[..], 0),
            (b"abc", 3),
            (b"a\xc3\xa9", 3),
            (b"a\xc3", 1),
            (b"a\xe6\x97", 1),
            (b"a\xe6\x97\xa5", 4),
            (b"a\xf0\x9f\x98", 1),
            (b"a\xf0\x9f\x98\x80", 5),
            // Not sequences: left to the validator, which reports them.
            (b"a\x80", 2),
            (b"a\xff", 2),
            (b"\x80\x80\x80\x80\x80", 5),
        ] {
            assert_eq!(complete_prefix(span), len, "{span:?}");
        }
    }

    /// The bytes a string cannot skip, one at a time.
    fn naive(bytes: &[u8]) -> usize {
        bytes
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
            .unwrap_or(bytes.len())
    }

    /// Every byte value at every position of runs that cross the word and
    /// block boundaries, alone and followed by a second special byte (whose
    /// borrows must not move the answer), against the byte-wise oracle.
    #[test]
    fn first_special_agrees_with_the_bytewise_oracle() {
        let mut checked = 0;
        for len in [
            0, 1, 7, 8, 9, 31, 32, 33, 40, 63, 64, 65, 95, 96, 97, 100, 161,
        ] {
            let plain = vec![b'a'; len];
            assert_eq!(first_special(&plain), len);
            for at in 0..len {
                for b in 0..=u8::MAX {
                    let mut run = plain.clone();
                    run[at] = b;
                    assert_eq!(first_special(&run), naive(&run), "{b:#x} at {at} of {len}");
                    for (next, b2) in [
                        (at + 1, 0x00),
                        (at + 1, b'"'),
                        (at + 3, 0xff),
                        (at + 2, b'\\'),
                    ] {
                        if next < len {
                            run[next] = b2;
                            assert_eq!(first_special(&run), naive(&run), "{b:#x} at {at}, {b2:#x}");
                            run[next] = b'a';
                        }
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 100_000);
    }
}
