//! Values below the top level, and the root object's other members, in
//! one tight loop.
//!
//! Everything inside a nested container (depth 2 and deeper) is only
//! validated and skipped: no key is compared, no value is kept. At the top
//! level the same holds for every member whose key is plain ASCII and not
//! the field name (`model`). The general machine pays a dispatch on its
//! stored state for every token of these; this loop keeps the position in
//! the grammar in the program counter and a few locals instead.
//!
//! It only ever *accepts*: whatever it does not take at once (a byte that
//! is an error, a token cut by the chunk end, an escape or UTF-8 sequence
//! the string skip leaves to the byte path, the depth limit) ends the loop
//! at the start of that token, with the state the general machine has
//! there, and the general machine reads it. The two cannot disagree on an
//! error or its offset, and every chunking gives the same answer: the
//! property tests and the seed suites compare this mode with the
//! byte-at-a-time reference mode ([`ModelExtractor::new_reference`]),
//! which never enters this loop.

use bytes::Bytes;

use super::{ModelExtractor, State, StrKind, is_field, is_ws};
use crate::simd::{self, plain_string_end};

/// Where the loop is in the grammar; the general machine's structural
/// states, in a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Value,
    ArrFirst,
    ObjFirst,
    ObjKey,
    Colon,
    AfterValue,
}

impl Phase {
    fn from_state(state: State) -> Option<Self> {
        Some(match state {
            State::Value => Phase::Value,
            State::ArrFirst => Phase::ArrFirst,
            State::ObjFirst => Phase::ObjFirst,
            State::ObjKey => Phase::ObjKey,
            State::Colon => Phase::Colon,
            State::AfterValue => Phase::AfterValue,
            _ => return None,
        })
    }

    const fn state(self) -> State {
        match self {
            Phase::Value => State::Value,
            Phase::ArrFirst => State::ArrFirst,
            Phase::ObjFirst => State::ObjFirst,
            Phase::ObjKey => State::ObjKey,
            Phase::Colon => State::Colon,
            Phase::AfterValue => State::AfterValue,
        }
    }
}

/// End of the number at the start of `bytes` (RFC 8259 grammar), or
/// `None` when it is not a complete one there (invalid, or it may go on
/// past the end of `bytes`).
#[inline(always)]
fn number_end(bytes: &[u8]) -> Option<usize> {
    let digits = |from: usize| {
        from + bytes[from..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(bytes.len() - from)
    };
    let mut j = usize::from(bytes[0] == b'-');
    match bytes.get(j)? {
        b'0' => j += 1,
        b'1'..=b'9' => j = digits(j + 1),
        _ => return None,
    }
    if bytes.get(j) == Some(&b'.') {
        let end = digits(j + 1);
        if end == j + 1 {
            return None;
        }
        j = end;
    }
    if matches!(bytes.get(j), Some(b'e' | b'E')) {
        j += 1;
        if matches!(bytes.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let end = digits(j);
        if end == j {
            return None;
        }
        j = end;
    }
    // At the end of the chunk the number may go on in the next one.
    (j < bytes.len()).then_some(j)
}

impl ModelExtractor {
    /// Validates and skips values from chunk index `i` while the machine
    /// is inside the root object in a structural state (not in a string,
    /// number or literal, no model value pending). Returns where it
    /// stopped, with `state`, `depth` and the container stack as the
    /// general machine would have them there: at the chunk end, or at the
    /// start of the first token it leaves to the general machine (a
    /// top-level key that may be the field, the root's closing brace, any
    /// defect; `i` itself when that is the very first one).
    #[inline(never)]
    pub(super) fn skip_nested(
        &mut self,
        chunk: &Bytes,
        end: usize,
        mut i: usize,
        base: u64,
    ) -> usize {
        let Some(mut phase) = Phase::from_state(self.state) else {
            return i;
        };
        let bytes = &chunk[..end];
        // Only what the loop reads (a copy of all of `Limits` costs more
        // than the loop's setup otherwise).
        let max_depth = self.limits.max_depth();
        let field_len = self.limits.field().as_bytes().len();
        let mut depth = self.depth;
        let mut in_object = self.containers.is_object(depth - 1);
        // Hands the rest to the general machine, in the state it has at `at`.
        macro_rules! leave {
            ($at:expr, $state:expr) => {{
                self.depth = depth;
                self.state = $state;
                return $at;
            }};
        }
        // A string from its opening quote at `i`: the index of its closing
        // quote, or leaves the rest of it to the byte path. Plain strings
        // that end in the block they start in or the next (keys, names,
        // tool descriptions) are read from the blocks' masks; only longer
        // or escaped ones pay the call of the full skip.
        let mut blocks = BlockMasks::NONE;
        macro_rules! string {
            ($kind:expr) => {{
                let from = i + 1;
                match blocks.plain_string_end(bytes, from) {
                    Some(close) => close,
                    None => match long_string(self.level, bytes, from) {
                        Ok(close) if close < end && bytes[close] == b'"' => close,
                        Ok(at) => leave!(at, State::Str($kind)),
                        Err(_) => leave!(from, State::Str($kind)),
                    },
                }
            }};
        }
        // One value (with its key in an object) per turn: the phase is
        // only looked at where a turn starts, so a member costs one
        // dispatch rather than one per token.
        loop {
            if matches!(phase, Phase::ObjFirst | Phase::ObjKey) {
                i = skip_ws(bytes, i);
                match bytes.get(i) {
                    Some(b'"') if depth == 1 => {
                        // A key of the root object: taken only when it is
                        // plain ASCII and plainly not the field; the field
                        // itself, an escaped or non-ASCII key and one cut
                        // by the chunk end go to the general machine, which
                        // compares them after unescaping.
                        match plain_string_end(bytes, i + 1) {
                            Some(close)
                                if close - (i + 1) != field_len
                                    || !is_field(bytes, i + 1, self.limits.field()) =>
                            {
                                i = close + 1;
                                phase = Phase::Colon;
                            }
                            // The field, first seen, with a plain value
                            // right after `:`: decided here (a second one
                            // is the general machine's, which refuses it).
                            Some(close)
                                if self.decision.is_none()
                                    && bytes.get(close + 1..close + 3) == Some(b":\"") =>
                            {
                                let Some(next) = self.plain_model(chunk, close + 3, end, base)
                                else {
                                    leave!(i, phase.state());
                                };
                                i = next;
                                if self.halted {
                                    leave!(i, State::AfterValue);
                                }
                                phase = Phase::AfterValue;
                            }
                            _ => leave!(i, phase.state()),
                        }
                    }
                    Some(b'"') => {
                        i = string!(StrKind::Key) + 1;
                        phase = Phase::Colon;
                    }
                    // Closing the root object decides: the general machine's.
                    Some(b'}') if phase == Phase::ObjFirst && depth > 1 => {
                        i += 1;
                        depth -= 1;
                        in_object = self.containers.is_object(depth - 1);
                        phase = Phase::AfterValue;
                    }
                    _ => leave!(i, phase.state()),
                }
            }
            if phase == Phase::Colon {
                // The colon nearly always follows the key at once.
                if bytes.get(i) != Some(&b':') {
                    i = skip_ws(bytes, i);
                    if bytes.get(i) != Some(&b':') {
                        leave!(i, State::Colon);
                    }
                }
                i += 1;
                phase = Phase::Value;
            }
            if matches!(phase, Phase::Value | Phase::ArrFirst) {
                i = skip_ws(bytes, i);
                let Some(&b) = bytes.get(i) else {
                    leave!(i, phase.state());
                };
                match b {
                    b'"' => i = string!(StrKind::Value) + 1,
                    b'{' | b'[' => {
                        if depth >= max_depth {
                            // The general machine reports it.
                            leave!(i, phase.state());
                        }
                        in_object = b == b'{';
                        self.containers.set(depth, in_object);
                        depth += 1;
                        i += 1;
                        phase = if in_object {
                            Phase::ObjFirst
                        } else {
                            Phase::ArrFirst
                        };
                        continue;
                    }
                    b']' if phase == Phase::ArrFirst => {
                        i += 1;
                        depth -= 1;
                        in_object = self.containers.is_object(depth - 1);
                    }
                    b'-' | b'0'..=b'9' => match number_end(&bytes[i..]) {
                        Some(len) => i += len,
                        None => leave!(i, phase.state()),
                    },
                    b't' | b'f' | b'n' => match literal_len(&bytes[i..]) {
                        Some(len) => i += len,
                        None => leave!(i, phase.state()),
                    },
                    _ => leave!(i, phase.state()),
                }
            }
            // After a value: most often a comma at once.
            if bytes.get(i) == Some(&b',') {
                i += 1;
                phase = if in_object {
                    Phase::ObjKey
                } else {
                    Phase::Value
                };
                continue;
            }
            // Otherwise closing brackets, then a comma or the end.
            loop {
                i = skip_ws(bytes, i);
                match bytes.get(i) {
                    Some(b',') => {
                        i += 1;
                        phase = if in_object {
                            Phase::ObjKey
                        } else {
                            Phase::Value
                        };
                        break;
                    }
                    Some(b'}') if in_object && depth > 1 => {}
                    Some(b']') if !in_object => {}
                    _ => leave!(i, State::AfterValue),
                }
                i += 1;
                depth -= 1;
                in_object = self.containers.is_object(depth - 1);
            }
        }
    }
}

/// The masks of one 64-byte block of the slice the nested loop reads
/// (blocks start at multiples of 64 from the slice's start): where plain
/// strings end. Consecutive short strings mostly fall in one block, and
/// the next block's address is known before the string that reaches it
/// is read, so its masks are computed off the chain of dependent loads
/// that one 16-byte test per string sits on (each string's test waited
/// for the previous string's end).
struct BlockMasks {
    /// The block's first index, or `usize::MAX` for none yet.
    start: usize,
    /// `"`, `\\`, control and non-ASCII bytes; past the slice's end,
    /// none.
    specials: u64,
    /// `"`.
    quotes: u64,
}

impl BlockMasks {
    const NONE: Self = Self {
        start: usize::MAX,
        specials: 0,
        quotes: 0,
    };

    /// The masks of the block at `start` (within `bytes`); a block that
    /// reaches past the end is padded with spaces.
    #[inline(always)]
    fn of(bytes: &[u8], start: usize) -> Self {
        let (specials, quotes) = match bytes.get(start..start + 64) {
            Some(block) => simd::specials_and_quotes(block.try_into().expect("64 bytes")),
            None => {
                let mut block = [b' '; 64];
                block[..bytes.len() - start].copy_from_slice(&bytes[start..]);
                simd::specials_and_quotes(&block)
            }
        };
        Self {
            start,
            specials,
            quotes,
        }
    }

    /// The closing quote of a plain string (no `\\`, control or
    /// non-ASCII byte) whose contents start at `from`, when it ends in
    /// the block `from` is in or the next: as
    /// [`simd::plain_string_end`], from the blocks' masks. `None` when
    /// something else comes first, the string goes on past the next
    /// block, or the slice ends first.
    #[inline(always)]
    fn plain_string_end(&mut self, bytes: &[u8], from: usize) -> Option<usize> {
        let mut at = from;
        for _ in 0..2 {
            let start = at & !63;
            if self.start != start {
                if start >= bytes.len() {
                    return None;
                }
                *self = Self::of(bytes, start);
            }
            let specials = self.specials >> (at - start);
            if specials != 0 {
                let k = at - start + specials.trailing_zeros() as usize;
                return (self.quotes >> k & 1 != 0).then_some(start + k);
            }
            at = start + 64;
        }
        None
    }
}

/// The string skip past the 16-byte test, out of line and marked cold:
/// the loop's registers are then saved only on this path, not on every
/// short string's. Its answer comes back in registers (the loop leaves
/// at the string's start on an error, and needs nothing more of it).
#[cold]
#[inline(never)]
fn long_string(level: simd::Level, bytes: &[u8], from: usize) -> Result<usize, usize> {
    simd::skip_string(level, bytes, from)
}

/// The first index at or after `i` that is not JSON whitespace.
#[inline(always)]
fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while let Some(&b) = bytes.get(i) {
        if b > b' ' || !is_ws(b) {
            break;
        }
        i += 1;
    }
    i
}

/// Length of the `true`, `false` or `null` at the start of `bytes`, or
/// `None` when it is not one there in full.
#[inline(always)]
fn literal_len(bytes: &[u8]) -> Option<usize> {
    let word = |from: usize| {
        bytes
            .get(from..from + 4)
            .map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")))
    };
    match bytes[0] {
        b't' => (word(0)? == u32::from_le_bytes(*b"true")).then_some(4),
        b'n' => (word(0)? == u32::from_le_bytes(*b"null")).then_some(4),
        _ => (word(1)? == u32::from_le_bytes(*b"alse")).then_some(5),
    }
}

#[cfg(test)]
mod tests {
    use super::{BlockMasks, literal_len, number_end};

    /// The block masks' string end against the byte-wise one, from every
    /// start, with the masks of the block before kept (as the loop keeps
    /// them), of another block, and none, on text with every kind of
    /// special byte near and across block boundaries and the slice's end.
    #[test]
    fn block_masks_end_plain_strings_as_the_bytewise_scan_does() {
        let naive = |bytes: &[u8], from: usize| {
            let k = (from..bytes.len())
                .find(|&k| matches!(bytes[k], b'"' | b'\\' | 0..=0x1f | 0x80..))?;
            (bytes[k] == b'"' && k < (from & !63) + 128).then_some(k)
        };
        let mut text = Vec::new();
        for (n, special) in [
            (3, &b"\""[..]),
            (60, b"\""),
            (64, b"\\n\""),
            (1, "é\"".as_bytes()),
            (70, b"\x01\""),
            (130, b"\""),
            (0, b"\""),
            (62, "日\"".as_bytes()),
        ] {
            text.extend(std::iter::repeat_n(b'a', n));
            text.extend_from_slice(special);
        }
        let mut checked = 0;
        for end in [text.len(), text.len() - 1, 200, 129, 64, 63, 1] {
            let bytes = &text[..end];
            let mut kept = BlockMasks::NONE;
            for from in 0..=end {
                let expected = naive(bytes, from);
                assert_eq!(
                    kept.plain_string_end(bytes, from),
                    expected,
                    "{from}..{end}"
                );
                let mut fresh = BlockMasks::NONE;
                assert_eq!(
                    fresh.plain_string_end(bytes, from),
                    expected,
                    "{from}..{end}"
                );
                let mut other = BlockMasks::of(bytes, 0);
                if from >= 128 {
                    assert_eq!(
                        other.plain_string_end(bytes, from),
                        expected,
                        "{from}..{end}"
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 1_200, "{checked}");
    }

    #[test]
    fn literals_whole_or_not_at_all() {
        for (text, len) in [
            (&b"true,"[..], Some(4)),
            (b"null", Some(4)),
            (b"false]", Some(5)),
            (b"fals", None),
            (b"tru", None),
            (b"trUe", None),
            (b"nul1", None),
            (b"falsy", None),
        ] {
            assert_eq!(literal_len(text), len, "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn numbers_end_where_the_grammar_does() {
        for (text, end) in [
            (&b"0,"[..], Some(1)),
            (b"-0]", Some(2)),
            (b"05", Some(1)),
            (b"123}", Some(3)),
            (b"1.5e+3 ", Some(6)),
            (b"1E9,", Some(3)),
            (b"-12.25,", Some(6)),
            (b"123", None),
            (b"1.", None),
            (b"1.,", None),
            (b"1e,", None),
            (b"1e+,", None),
            (b"-,", None),
            (b"-", None),
            (b".5,", None),
        ] {
            assert_eq!(number_end(text), end, "{}", String::from_utf8_lossy(text));
        }
    }
}
