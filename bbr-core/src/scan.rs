//! Skipping string contents: the hot loop of every body.
//!
//! A string is skipped to its closing quote in 64-byte blocks. For each
//! block one bitmask marks the bytes that stop the skip (`"`, `\` and
//! control bytes below 0x20) and a second one the non-ASCII bytes. The set
//! bits of the first are walked inside the block: a valid escape is stepped
//! over with table lookups and the walk goes on in the same mask, so dense
//! text does not leave the block loop at every escape. Non-ASCII bytes do
//! not stop the skip at all: the skip reports a range from the block of
//! the first of them to where it stopped, and that range of raw bytes is
//! validated as UTF-8 in one call (escapes are ASCII, so they cannot hide
//! or break a sequence; neither can the ASCII bytes before the range).
//! Once a non-ASCII byte is seen the second mask is no longer computed.
//! Before that, after a block with neither mask set (base64, plain ASCII
//! text), the following ones are each stepped over with one combined
//! test (after a non-ASCII byte that test misses too often to pay).
//!
//! The masks come from [`Masks`]: [`Swar`] here (portable, eight bytes per
//! step), SSE2, AVX2 and AVX-512 in [`crate::simd`] (the only `unsafe` of
//! the crate, chosen at run time). All give the same masks; the tests check each
//! against a byte-by-byte oracle.

/// The two bitmasks of a 64-byte block: bit `k` is byte `k`.
pub(crate) trait Masks {
    /// `(stops, non_ascii)`: `stops` marks `"`, `\` and bytes below 0x20,
    /// `non_ascii` marks bytes of 0x80 and above.
    fn masks(block: &[u8; 64]) -> (u64, u64);

    /// The `stops` mask alone (once a skip has seen a non-ASCII byte, it
    /// needs no more of them).
    #[inline(always)]
    fn stops(block: &[u8; 64]) -> u64 {
        Self::masks(block).0
    }

    /// [`masks`](Masks::masks), or `None` when both are empty (a block of
    /// plain printable ASCII): one test for such a block, and the masks
    /// from the same compares for any other.
    #[inline(always)]
    fn masks_unless_plain(block: &[u8; 64]) -> Option<(u64, u64)> {
        let (stops, high) = Self::masks(block);
        (stops | high != 0).then_some((stops, high))
    }

    /// Whether this level has vector classes for [`escapes_in_block`]:
    /// every whole block with a stop is then taken by
    /// [`escapes_in_block`], not stop by stop.
    const ESCAPE_CLASSES: bool = false;

    /// The backslashes and escape letters of `block`, for
    /// [`escapes_in_block`].
    #[inline(always)]
    fn letter_classes(block: &[u8; 64]) -> LetterClasses {
        LetterClasses::of(block)
    }

    /// The hex digits of `block`, for the `\\uXXXX` escapes of
    /// [`escapes_in_block`].
    #[inline(always)]
    fn hex_classes(block: &[u8; 64]) -> HexClasses {
        HexClasses::of(block)
    }

    /// Whether `span` is valid UTF-8: [`crate::extractor::valid_utf8`]
    /// unless the level has a validator of its own.
    #[inline(always)]
    fn valid_utf8(span: &[u8]) -> bool {
        crate::extractor::valid_utf8(span)
    }
}

/// Bitmasks of a 64-byte block's backslashes and escape letters (bit `k`
/// is byte `k`), for [`escapes_in_block`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LetterClasses {
    /// `\\`.
    pub(crate) backslash: u64,
    /// The letters of a two-byte escape: `"`, `\\`, `/`, `b`, `f`, `n`,
    /// `r`, `t`.
    pub(crate) simple: u64,
    /// `u`.
    pub(crate) u: u64,
}

/// Bitmasks of a 64-byte block's hex digits, for the `\\uXXXX` escapes
/// of [`escapes_in_block`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HexClasses {
    /// Hex digits, either case.
    pub(crate) hex: u64,
    /// Hex digits of 8 and above (`8`, `9`, `a`–`f`, `A`–`F`).
    pub(crate) high: u64,
    /// `d` and `D` (a unit from `D800` to `DFFF` is a surrogate).
    pub(crate) d: u64,
}

/// One bit per byte of `block` for which `class` holds: the byte-by-byte
/// oracle of the vector classes.
fn bytewise(block: &[u8; 64], class: impl Fn(u8) -> bool) -> u64 {
    block
        .iter()
        .enumerate()
        .filter(|&(_, &b)| class(b))
        .fold(0, |mask, (k, _)| mask | 1 << k)
}

impl LetterClasses {
    /// The classes byte by byte.
    pub(crate) fn of(block: &[u8; 64]) -> Self {
        Self {
            backslash: bytewise(block, |b| b == b'\\'),
            simple: bytewise(block, |b| b"\"\\/bfnrt".contains(&b)),
            u: bytewise(block, |b| b == b'u'),
        }
    }
}

impl HexClasses {
    /// The classes byte by byte.
    pub(crate) fn of(block: &[u8; 64]) -> Self {
        Self {
            hex: bytewise(block, |b| b.is_ascii_hexdigit()),
            high: bytewise(block, |b| {
                b.is_ascii_hexdigit() && !(b'0'..=b'7').contains(&b)
            }),
            d: bytewise(block, |b| b == b'd' || b == b'D'),
        }
    }
}

/// The bytes escaped by a backslash in a block that does not start inside
/// an escape: bit `k` set when byte `k` follows an odd run of backslashes.
/// The flag is true when the block's last byte is such a backslash (its
/// escaped byte is the next block's first). Branch-free (simdjson's
/// method): a run's starts at odd positions are added to the run, which
/// carries through it and flips where the run's parity says.
#[inline(always)]
pub(crate) fn escaped_bytes(backslash: u64) -> (u64, bool) {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let follows = backslash << 1;
    let odd_starts = backslash & !EVEN & !follows;
    let (even_runs, carry) = odd_starts.overflowing_add(backslash);
    let invert = even_runs << 1;
    ((EVEN ^ invert) & follows, carry)
}

/// [`walk`] for a whole block (no padding) that does not start inside an
/// escape, from the block's masks at once: the escaped bytes, where a
/// `\uXXXX` has its four hex digits, which unit is a surrogate. The first
/// quote or control byte that is not escaped ends the skip; the first
/// escape that is not a simple one or a complete non-surrogate `\uXXXX`
/// in this block (an error, a surrogate pair, one crossing the block
/// end) is left to [`walk`], from its backslash. The answer is
/// [`walk`]'s, but for an escape from the block's last byte, which is
/// left to the next block (tested on every kind of escape at every
/// position, and through the whole skip).
#[inline(always)]
pub(crate) fn escapes_in_block<M: Masks>(bytes: &[u8], i: usize, stops: u64) -> Walk {
    let block: &[u8; 64] = bytes[i..i + 64].try_into().expect("64 bytes");
    let letters = M::letter_classes(block);
    let (escaped, carry) = escaped_bytes(letters.backslash);
    let units = escaped & letters.u;
    // The hex classes every time: a branch on whether the block has a
    // `\u` mispredicts about once in three blocks of prose.
    let hex = M::hex_classes(block);
    let four_hex = (hex.hex >> 1) & (hex.hex >> 2) & (hex.hex >> 3) & (hex.hex >> 4);
    let surrogate = (hex.d >> 1) & (hex.high >> 2);
    let unusual = (escaped & !letters.simple & !letters.u) | (units & !(four_hex & !surrogate));
    let ends = (stops & !letters.backslash & !escaped) | unusual;
    if ends == 0 {
        if carry {
            return escape_carried_over(i);
        }
        return Walk::Next(i + 64);
    }
    let k = ends.trailing_zeros() as usize;
    if unusual & (1 << k) == 0 {
        return Walk::Stop(k);
    }
    // An escaped byte is never the block's first: its backslash is at k - 1.
    walk(bytes, i, stops & (u64::MAX << (k - 1)), 64)
}

/// The next block after one whose last byte is a backslash that escapes
/// the next block's first: from that backslash. Out of line, so that the
/// common answer, `i + 64`, is a branch the processor predicts and does
/// not wait for: the next block's loads need not wait for this block's
/// backslash mask.
#[cold]
#[inline(never)]
fn escape_carried_over(i: usize) -> Walk {
    Walk::Next(i + 63)
}

/// The walk of one block: [`escapes_in_block`] for a whole block with a
/// stop where `M` has [`ESCAPE_CLASSES`](Masks::ESCAPE_CLASSES), [`walk`]
/// otherwise. Every such block takes the classes, however few its stops:
/// on bodies the branch predictor has not seen before (a server's every
/// body), the walk's branches per stop and per escape letter mispredicted
/// often enough to cost more than the classes (prose 16 KiB, 64 distinct
/// bodies: 9.5 µs walked, 6.6 µs taken whole); on one body repeated the
/// walk is faster, having been learnt. Inlined into the skip, which is
/// compiled with the level's target features.
#[inline(always)]
fn walk_block<M: Masks>(bytes: &[u8], i: usize, stops: u64, valid: usize) -> Walk {
    if M::ESCAPE_CLASSES && valid == 64 && stops != 0 {
        return escapes_in_block::<M>(bytes, i, stops);
    }
    walk(bytes, i, stops, valid)
}

/// Where a skip stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stop {
    /// Index of the first byte the skip could not take: a `"`, a `\` that
    /// does not start a complete valid escape, a control byte, or the end
    /// of the slice.
    pub(crate) at: usize,
    /// When a non-ASCII byte lies between the start and `at`: a range of
    /// the skipped bytes that holds all of them and ends at `at`, starting
    /// at most 63 ASCII bytes before the first one. Only this range needs
    /// UTF-8 validation (the ASCII bytes before it can neither continue
    /// nor start a sequence).
    pub(crate) non_ascii: Option<(usize, usize)>,
}

/// Eight-bytes-at-a-time masks without SIMD instructions. Exact per byte
/// (no borrow or carry crosses a byte), so every set bit is real.
pub(crate) struct Swar;

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const TOPS: u64 = 0x8080_8080_8080_8080;

/// Top bit of each byte of `word` that is zero.
#[inline(always)]
const fn zero_bytes(word: u64) -> u64 {
    !(((word & LOW7) + LOW7) | word) & TOPS
}

/// One bit per byte, from the top bits of the bytes of `word`.
#[inline(always)]
const fn gather_tops(word: u64) -> u64 {
    ((word >> 7) & ONES).wrapping_mul(0x0102_0408_1020_4080) >> 56
}

impl Masks for Swar {
    #[inline(always)]
    fn masks(block: &[u8; 64]) -> (u64, u64) {
        let (mut stops, mut high) = (0u64, 0u64);
        for (k, word) in block.chunks_exact(8).enumerate() {
            let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            let quotes = zero_bytes(word ^ (ONES * u64::from(b'"')));
            let backslashes = zero_bytes(word ^ (ONES * u64::from(b'\\')));
            // (b & 0x7f) + 0x60 reaches the top bit iff b & 0x7f >= 0x20.
            let controls = !(((word & LOW7) + ONES * 0x60) | word) & TOPS;
            stops |= gather_tops(quotes | backslashes | controls) << (8 * k);
            high |= gather_tops(word & TOPS) << (8 * k);
        }
        (stops, high)
    }
}

/// The quotes of `block` (bit `k` is byte `k`), eight bytes per step: the
/// portable half of [`crate::simd::specials_and_quotes`].
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(crate) fn quotes(block: &[u8; 64]) -> u64 {
    block
        .chunks_exact(8)
        .enumerate()
        .fold(0, |mask, (k, word)| {
            let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            mask | gather_tops(zero_bytes(word ^ (ONES * u64::from(b'"')))) << (8 * k)
        })
}

/// The portable [`crate::simd::short_string_end`] mask: one bit per byte
/// of `window` that is `"`, `\\`, below 0x20 or 0x80 and above.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(crate) fn special16(window: &[u8; 16]) -> u32 {
    let (low, high) = window.split_at(8);
    let word_mask = |word: &[u8]| {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let quotes = zero_bytes(word ^ (ONES * u64::from(b'"')));
        let backslashes = zero_bytes(word ^ (ONES * u64::from(b'\\')));
        let controls = !(((word & LOW7) + ONES * 0x60) | word) & TOPS;
        gather_tops(quotes | backslashes | controls | (word & TOPS)) as u32
    };
    word_mask(low) | word_mask(high) << 8
}

/// What the byte after a backslash starts: 2 for a complete two-byte
/// escape, 6 for `u` (four hex digits to check), 0 for anything invalid.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let simple = *b"\"\\/bfnrt";
    let mut i = 0;
    while i < simple.len() {
        table[simple[i] as usize] = 2;
        i += 1;
    }
    table[b'u' as usize] = 6;
    table
};

/// Value of a hex digit, or 0x10 and above for anything else.
static HEX: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            d @ b'0'..=b'9' => d - b'0',
            d @ b'a'..=b'f' => d - b'a' + 10,
            d @ b'A'..=b'F' => d - b'A' + 10,
            _ => 0xff,
        };
        b += 1;
    }
    table
};

/// The four hex digits at the start of `digits` (at least 4 bytes).
#[inline(always)]
fn hex4(digits: &[u8]) -> Option<u16> {
    let [a, b, c, d] = [0, 1, 2, 3].map(|k| HEX[digits[k] as usize]);
    if (a | b | c | d) & 0xf0 != 0 {
        return None;
    }
    Some(u16::from(a) << 12 | u16::from(b) << 8 | u16::from(c) << 4 | u16::from(d))
}

/// Length of the escape at the start of `rest` (which starts with `\`)
/// when it is complete and valid; surrogate pairs only as a whole. `None`
/// leaves it to the byte-at-a-time path, which reports it or carries it
/// over a chunk boundary.
#[inline(always)]
pub(crate) fn escape_len(rest: &[u8]) -> Option<usize> {
    match ESCAPE[*rest.get(1)? as usize] {
        2 => Some(2),
        0 => None,
        _ => {
            let unit = hex4(rest.get(2..6)?)?;
            if !(0xd800..=0xdfff).contains(&unit) {
                return Some(6);
            }
            if unit >= 0xdc00 {
                return None;
            }
            let low = rest.get(6..12)?;
            if low[0] != b'\\' || low[1] != b'u' {
                return None;
            }
            matches!(hex4(&low[2..])?, 0xdc00..=0xdfff).then_some(12)
        }
    }
}

/// Skips string contents from `i`: see [`Stop`]. Blocks that reach past
/// the end of `bytes` are padded with spaces (and the padding masked off),
/// so short strings and chunk tails take the same path.
#[inline(always)]
pub(crate) fn skip<M: Masks>(bytes: &[u8], mut i: usize) -> Stop {
    let len = bytes.len();
    // Until the first block with a non-ASCII byte: both masks.
    let first = loop {
        if i >= len {
            return Stop {
                at: len,
                non_ascii: None,
            };
        }
        let (stops, high, valid) = match block_masks::<M>(bytes, i) {
            (0, 0, 64) => {
                // A plain block: the run may go on (base64, ASCII text),
                // one test per block while it does.
                i += 64;
                match plain_run::<M>(bytes, &mut i) {
                    Some((stops, high)) => (stops, high, 64),
                    None => continue,
                }
            }
            masks => masks,
        };
        match walk_block::<M>(bytes, i, stops, valid) {
            Walk::Stop(k) => {
                let before = high & ((1u64 << k) - 1);
                return Stop {
                    at: i + k,
                    non_ascii: (before != 0).then_some((i, i + k)),
                };
            }
            Walk::Next(next) => {
                // An escape that crossed into the next block is ASCII, so
                // `high` holds only bytes before it.
                let block = i;
                i = next;
                if high != 0 {
                    break block;
                }
            }
        }
    };
    // Then the stops alone: the range starts at `first` whatever follows.
    while i < len {
        let (stops, valid) = block_stops::<M>(bytes, i);
        match walk_block::<M>(bytes, i, stops, valid) {
            Walk::Stop(k) => {
                return Stop {
                    at: i + k,
                    non_ascii: Some((first, i + k)),
                };
            }
            Walk::Next(next) => i = next,
        }
    }
    Stop {
        at: len,
        non_ascii: Some((first, len)),
    }
}

/// [`skip`] and the UTF-8 check of its non-ASCII range, for a string
/// from `i` with no UTF-8 sequence pending: `Ok` with the index of the
/// closing quote, or of the first byte left to the byte-at-a-time path
/// (an escape that is invalid or cut by the end of `bytes`, the start of
/// an invalid UTF-8 sequence or of one cut by the end, which that path
/// reports or carries over exactly), or `bytes.len()`; `Err` with the
/// index of a control byte (invalid in a string).
#[inline(always)]
pub(crate) fn skip_string<M: Masks>(bytes: &[u8], i: usize) -> Result<usize, usize> {
    let stop = skip::<M>(bytes, i);
    if let Some((first, last)) = stop.non_ascii {
        let span = span_to_validate(bytes, first, last);
        if !valid_span::<M>(bytes, first, span) {
            // Rare: where the bad sequence starts (std's answer).
            let valid = std::str::from_utf8(span).map_or_else(|e| e.valid_up_to(), str::len);
            return Ok(first + valid);
        }
        if span.len() < last - first {
            return Ok(first + span.len());
        }
    }
    match bytes.get(stop.at) {
        Some(&b) if b < 0x20 => Err(stop.at),
        _ => Ok(stop.at),
    }
}

/// The raw bytes of a skip's non-ASCII range `first..last` that are
/// validated as UTF-8: all of them, less a sequence cut by the end of
/// `bytes`. That one is left to the byte path, which carries it over a
/// chunk boundary: validating it here would fail and cost a second pass
/// over the range once per chunk.
#[inline(always)]
pub(crate) fn span_to_validate(bytes: &[u8], first: usize, last: usize) -> &[u8] {
    let span = &bytes[first..last];
    if last == bytes.len() {
        &span[..crate::extractor::complete_prefix(span)]
    } else {
        span
    }
}

/// Whether `span`, the bytes of `bytes` from `first` to a stop byte or
/// to a sequence cut by the end of `bytes`, is valid UTF-8. The
/// validator takes whole 64-byte blocks without a padded copy of a tail,
/// so when the span ends before an ASCII stop byte and `bytes` goes on
/// to the next multiple of 64 bytes from `first` and a character's first
/// byte there (the range cuts no character), that range is checked
/// instead. A valid range is a valid span: the span ends before an ASCII
/// byte, a character boundary. An invalid range (a defect in what follows
/// the string) leaves the span to the exact check.
#[inline(always)]
fn valid_span<M: Masks>(bytes: &[u8], first: usize, span: &[u8]) -> bool {
    let end = first + span.len();
    let blocks = span.len().next_multiple_of(64);
    let starts_character = |at: usize| bytes.get(at).is_some_and(|&b| !(0x80..0xc0).contains(&b));
    if bytes.get(end).is_some_and(u8::is_ascii)
        && starts_character(first + blocks)
        && M::valid_utf8(&bytes[first..first + blocks])
    {
        return true;
    }
    M::valid_utf8(span)
}

/// Steps `i` over whole blocks with neither mask set; returns the masks
/// of the first whole block that has one, or `None` when fewer than 64
/// bytes are left.
#[inline(always)]
fn plain_run<M: Masks>(bytes: &[u8], i: &mut usize) -> Option<(u64, u64)> {
    while let Some(block) = bytes.get(*i..*i + 64) {
        match M::masks_unless_plain(block.try_into().expect("64 bytes")) {
            None => *i += 64,
            masks => return masks,
        }
    }
    None
}

/// How a walk over one block's stops ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// At the stop at this index within the block: the skip ends there.
    Stop(usize),
    /// Every stop was a valid escape: go on from this index.
    Next(usize),
}

/// Steps over the valid escapes among the `stops` of the block at `i`
/// (`valid` bytes of it are real), in the same mask.
#[inline(always)]
pub(crate) fn walk(bytes: &[u8], i: usize, mut stops: u64, valid: usize) -> Walk {
    while stops != 0 {
        let k = stops.trailing_zeros() as usize;
        let at = i + k;
        if bytes[at] == b'\\'
            && let Some(n) = escape_len(&bytes[at..])
        {
            let next = k + n;
            if next >= 64 {
                // The escape reaches into the next block.
                return Walk::Next(at + n);
            }
            stops &= u64::MAX << next;
            continue;
        }
        return Walk::Stop(k);
    }
    Walk::Next(i + valid)
}

/// Both masks of the block at `i`, and how many of its bytes are real:
/// a block that reaches past the end is padded with spaces.
#[inline(always)]
fn block_masks<M: Masks>(bytes: &[u8], i: usize) -> (u64, u64, usize) {
    match bytes.get(i..i + 64) {
        Some(block) => {
            let (stops, high) = M::masks(block.try_into().expect("64 bytes"));
            (stops, high, 64)
        }
        None => {
            let mut block = [b' '; 64];
            let valid = bytes.len() - i;
            block[..valid].copy_from_slice(&bytes[i..]);
            let (stops, high) = M::masks(&block);
            (stops, high, valid)
        }
    }
}

/// [`block_masks`] without the non-ASCII mask.
#[inline(always)]
fn block_stops<M: Masks>(bytes: &[u8], i: usize) -> (u64, usize) {
    match bytes.get(i..i + 64) {
        Some(block) => (M::stops(block.try_into().expect("64 bytes")), 64),
        None => {
            let mut block = [b' '; 64];
            let valid = bytes.len() - i;
            block[..valid].copy_from_slice(&bytes[i..]);
            (M::stops(&block), valid)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The masks byte by byte.
    pub(crate) fn naive_masks(block: &[u8; 64]) -> (u64, u64) {
        let (mut stops, mut high) = (0, 0);
        for (k, &b) in block.iter().enumerate() {
            if b == b'"' || b == b'\\' || b < 0x20 {
                stops |= 1 << k;
            }
            if b >= 0x80 {
                high |= 1 << k;
            }
        }
        (stops, high)
    }

    /// Blocks that put every byte value at every position, alone and next
    /// to other special bytes (whose carries must not leak).
    pub(crate) fn blocks() -> impl Iterator<Item = [u8; 64]> {
        (0..64).flat_map(|at| {
            (0..=255u8).flat_map(move |b| {
                [b'a', 0x00, b'"', 0xff, b'\\', 0x1f, 0x20, 0x7f, 0x80]
                    .into_iter()
                    .map(move |around| {
                        let mut block = [b'a'; 64];
                        block[at] = b;
                        if at > 0 {
                            block[at - 1] = around;
                        }
                        if at < 63 {
                            block[at + 1] = around;
                        }
                        block
                    })
            })
        })
    }

    /// The escaped bytes one backslash at a time.
    fn naive_escaped(backslash: u64) -> (u64, bool) {
        let (mut escaped, mut k) = (0u64, 0);
        while k < 64 {
            if backslash & (1 << k) != 0 {
                if k == 63 {
                    return (escaped, true);
                }
                escaped |= 1 << (k + 1);
                k += 2;
            } else {
                k += 1;
            }
        }
        (escaped, false)
    }

    #[test]
    fn escaped_bytes_agree_with_one_backslash_at_a_time() {
        // Every pattern of the low 16 bits, shifted to every offset, and
        // runs of every length at every position.
        let mut checked = 0;
        for pattern in 0..=u16::MAX {
            for shift in [0, 7, 24, 48] {
                let backslash = u64::from(pattern) << shift;
                assert_eq!(
                    escaped_bytes(backslash),
                    naive_escaped(backslash),
                    "{backslash:#x}"
                );
                checked += 1;
            }
        }
        for start in 0..64 {
            for len in 1..=64 - start {
                let backslash = (u64::MAX >> (64 - len)) << start;
                assert_eq!(
                    escaped_bytes(backslash),
                    naive_escaped(backslash),
                    "{backslash:#x}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 65_536 * 4 + 64 * 65 / 2);
    }

    #[test]
    fn swar_masks_agree_with_the_bytewise_oracle() {
        let mut checked = 0;
        for block in blocks() {
            assert_eq!(Swar::masks(&block), naive_masks(&block), "{block:?}");
            assert_eq!(Swar::stops(&block), naive_masks(&block).0, "{block:?}");
            checked += 1;
        }
        assert_eq!(checked, 64 * 256 * 9);
    }

    /// The skip byte by byte.
    pub(crate) fn naive_skip(bytes: &[u8], mut i: usize) -> Stop {
        let mut non_ascii: Option<(usize, usize)> = None;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'\\' => match escape_len(&bytes[i..]) {
                    Some(n) => i += n,
                    None => break,
                },
                b'"' | 0..=0x1f => break,
                _ => {
                    if b >= 0x80 && non_ascii.is_none() {
                        non_ascii = Some((i, 0));
                    }
                    i += 1;
                }
            }
        }
        Stop {
            at: i,
            non_ascii: non_ascii.map(|(first, _)| (first, i)),
        }
    }

    /// `got` stops where the byte-wise `naive` skip from `start` does, and
    /// its non-ASCII range ends there too and holds the first non-ASCII
    /// byte, starting at most 63 bytes before it (a block start).
    pub(crate) fn same_stop(got: Stop, naive: Stop, start: usize) -> bool {
        got.at == naive.at
            && match (got.non_ascii, naive.non_ascii) {
                (None, None) => true,
                (Some((from, end)), Some((first, _))) => {
                    end == got.at && start <= from && from <= first && first - from < 64
                }
                _ => false,
            }
    }

    #[test]
    fn the_portable_skip_agrees_with_the_bytewise_one() {
        let mut text = Vec::new();
        for n in [1, 7, 63, 64, 65, 130] {
            text.extend(std::iter::repeat_n(b'x', n));
            text.extend_from_slice(br#"\n\u00e9\ud83d\ude00"#);
            text.extend_from_slice("é日😀".as_bytes());
            text.extend_from_slice(br#"\\\"\x"#);
            text.push(0x05);
        }
        let mut checked = 0;
        for end in (0..=text.len()).step_by(5) {
            for start in 0..=end {
                let bytes = &text[..end];
                let (got, naive) = (skip::<Swar>(bytes, start), naive_skip(bytes, start));
                assert!(
                    same_stop(got, naive, start),
                    "{start}..{end}: {got:?} {naive:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 10_000);
    }

    /// Every `\uXXXX` unit, in lower and upper case, alone and before a
    /// low surrogate, and every high surrogate before a low one, a high
    /// one, a non-surrogate and a cut pair: `escape_len` accepts exactly
    /// what `char::decode_utf16` does.
    #[test]
    fn escape_len_agrees_with_decode_utf16_on_every_unit() {
        let spec = |units: &[u16]| {
            char::decode_utf16(units.iter().copied())
                .collect::<Result<String, _>>()
                .ok()
                .filter(|text| text.chars().count() == 1)
        };
        let mut checked = 0;
        for unit in 0..=u16::MAX {
            for upper in [false, true] {
                let hex = |u: u16| {
                    let text = format!("\\u{u:04x}");
                    if upper {
                        text.to_uppercase().replace("\\U", "\\u")
                    } else {
                        text
                    }
                };
                let single = hex(unit);
                let expected = spec(&[unit]).map(|_| 6);
                assert_eq!(escape_len(single.as_bytes()), expected, "{single}");
                // Followed by a low surrogate: a pair after a high one,
                // still one escape after any other unit.
                let then_low = format!("{single}{}", hex(0xdc00));
                let expected = match spec(&[unit, 0xdc00]) {
                    Some(_) => Some(12),
                    None => spec(&[unit]).map(|_| 6),
                };
                assert_eq!(escape_len(then_low.as_bytes()), expected, "{then_low}");
                checked += 1;
                if !(0xd800..0xdc00).contains(&unit) {
                    continue;
                }
                for low in [
                    0xdc00, 0xdfff, 0xde00, 0xdbff, 0xd800, 0xe000, 0xd7ff, 0x0041,
                ] {
                    let pair = format!("{single}{}", hex(low));
                    let expected = spec(&[unit, low]).map(|_| 12);
                    assert_eq!(escape_len(pair.as_bytes()), expected, "{pair}");
                    assert_eq!(escape_len(&pair.as_bytes()[..11]), None, "{pair} cut");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 2 * (65_536 + 1024 * 8));
    }

    #[test]
    fn escape_lengths() {
        for (escape, len) in [
            (&br#"\n"#[..], Some(2)),
            (br#"\""#, Some(2)),
            (br#"\/"#, Some(2)),
            (br#"\x"#, None),
            (br#"\"#, None),
            (br#"\u00e9"#, Some(6)),
            (br#"\u00E"#, None),
            (br#"\u00eg"#, None),
            (br#"\ud83d\ude00"#, Some(12)),
            (br#"\ud83d\u0041"#, None),
            (br#"\ud83d"#, None),
            (br#"\ude00"#, None),
            (br#"\uD83D\uDE00x"#, Some(12)),
        ] {
            assert_eq!(
                escape_len(escape),
                len,
                "{}",
                String::from_utf8_lossy(escape)
            );
        }
    }
}
