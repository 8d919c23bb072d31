//! SIMD masks for [`crate::scan`], and the unchecked text view of a
//! [`Model`](crate::Model)'s bytes ([`validated_str`]): the only module of
//! the crate that may use `unsafe`. The masks are x86_64 only; everything
//! else uses the portable [`Swar`](crate::scan::Swar) masks.
//!
//! Why own intrinsics rather than a crate: the skip needs two 64-bit masks
//! per block (stops and non-ASCII bytes) whose set bits it walks; memchr
//! finds one byte at a time and has no "below 0x20" class. The benchmark
//! in `benches/` (the `prose` and `matrix` classes) is the justification.
//!
//! SSE2 is part of the x86_64 baseline; AVX2 and AVX-512 are used only
//! when the CPU reports them at run time ([`Level::detect`]). Each level is checked
//! against the byte-by-byte oracle on every byte value at every position
//! (`tests` below), and the skip built on it against the portable one.
#![allow(unsafe_code)]

use crate::scan;
#[cfg(test)]
use crate::scan::Stop;

/// `bytes` as text without checking them a second time. For a model's
/// bytes only: the scan validated them as UTF-8 while it read them, and
/// `Model::new_unchecked_utf8` (crate-private) is given nothing else.
/// Checking again cost ~140 of the ~3,700 instructions of a 1 KiB
/// extraction read through [`Model::as_str`](crate::Model::as_str)
/// (callgrind, `benches/scripts/callgrind-table.sh`, prose 1 KiB).
#[inline]
pub(crate) fn validated_str(bytes: &[u8]) -> &str {
    // Every build with debug assertions (the tests, the property tests,
    // the fuzz targets) checks the promise here.
    debug_assert!(
        std::str::from_utf8(bytes).is_ok(),
        "unvalidated model bytes"
    );
    // SAFETY: the caller's bytes are valid UTF-8 (see above): each
    // constructor of a `Model` passes a range the scan validated, trimmed
    // only at ASCII spaces or tabs (character boundaries), or a `&str`.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// The environment variable that caps the vector level: see
/// [`simd_level`](crate::simd_level).
pub const SIMD_LEVEL_ENV: &str = "BBR_SIMD_LEVEL";

/// The name of the vector level this process's extractors run: the best
/// the CPU reports at run time, or the lower level that
/// [`SIMD_LEVEL_ENV`] (`BBR_SIMD_LEVEL`) names, one of `portable`,
/// `sse2`, `avx2` or `avx512` (any case). Chosen once, at the first
/// extractor of the process; a level above what the CPU has, or a name
/// that is none of these, leaves the best one. Every level gives the same
/// answers (the tests run each against the byte-by-byte oracle): the
/// setting is for comparing them on one machine, or for keeping 512-bit
/// work off a host where it costs clock speed.
///
/// ```
/// let level = bbr_core::simd_level();
/// assert!(["portable", "sse2", "avx2", "avx512"].contains(&level));
/// ```
pub fn simd_level() -> &'static str {
    Level::detect().name()
}

/// The best mask implementation this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// Portable masks (no SIMD instructions of our own).
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    Portable,
    /// 16-byte SSE2 compares (x86_64 baseline).
    #[cfg(target_arch = "x86_64")]
    Sse2,
    /// 32-byte AVX2 compares, detected at run time.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// One 64-byte AVX-512 register per block, compares straight into
    /// mask registers, and VBMI's byte permutes for the table lookups;
    /// detected at run time, and only where the CPU also has VBMI2 (Ice
    /// Lake, Sapphire Rapids, Zen 4 and later), as
    /// simdjson's AVX-512 kernel asks: the Skylake-SP generation before
    /// it lowers the core's clock for 512-bit work.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Level {
    /// The level of this process: [`best`](Level::best) capped by
    /// [`SIMD_LEVEL_ENV`], chosen at the first call.
    pub(crate) fn detect() -> Self {
        static CHOSEN: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            Self::capped(Self::best(), std::env::var(SIMD_LEVEL_ENV).ok().as_deref())
        })
    }

    /// `best`, or the lower level that `setting` names.
    fn capped(best: Self, setting: Option<&str>) -> Self {
        setting
            .and_then(Self::named)
            .map_or(best, |cap| cap.min(best))
    }

    /// The level of this name (any case, spaces around ignored).
    fn named(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .iter()
            .copied()
            .find(|level| level.name().eq_ignore_ascii_case(name))
    }

    /// Every level this architecture has code for, lowest first.
    const ALL: &[Self] = &[
        Level::Portable,
        #[cfg(target_arch = "x86_64")]
        Level::Sse2,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2,
        #[cfg(target_arch = "x86_64")]
        Level::Avx512,
    ];

    /// The level's name, as [`SIMD_LEVEL_ENV`] takes it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Level::Sse2 => "sse2",
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => "avx512",
        }
    }

    /// The best level the CPU runs (std caches the CPU query).
    fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if avx512_detected() {
                return Level::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") {
                return Level::Avx2;
            }
            Level::Sse2
        }
        #[cfg(not(target_arch = "x86_64"))]
        Level::Portable
    }

    /// Every level this CPU can run (for tests and benchmarks): each
    /// up to the best, as every CPU with a level has those below it.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Self> {
        let best = Self::best();
        Self::ALL
            .iter()
            .copied()
            .filter(|&level| level <= best)
            .collect()
    }
}

/// Whether this CPU runs [`Level::Avx512`]: AVX-512 F, BW and VBMI, and
/// VBMI2 as the mark of a generation that keeps its clock under 512-bit
/// work (every such CPU has VBMI).
#[cfg(target_arch = "x86_64")]
fn avx512_detected() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vbmi")
        && std::is_x86_feature_detected!("avx512vbmi2")
}

/// [`scan::skip`] with the masks of `level` (tests: the extractor takes
/// [`skip_string`]).
#[cfg(test)]
pub(crate) fn skip(level: Level, bytes: &[u8], i: usize) -> Stop {
    match level {
        Level::Portable => scan::skip::<scan::Swar>(bytes, i),
        #[cfg(target_arch = "x86_64")]
        Level::Sse2 => scan::skip::<x86::Sse2>(bytes, i),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx2` is only produced by `detect` (and
        // `available`) after `is_x86_feature_detected!("avx2")` said yes.
        Level::Avx2 => unsafe { x86::skip_avx2(bytes, i) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx512` is only produced by `detect` (and
        // `available`) after `avx512_detected` said yes.
        Level::Avx512 => unsafe { x86::skip_avx512(bytes, i) },
    }
}

/// [`scan::skip_string`] with the masks of `level`: the skip and its
/// UTF-8 check in one call, compiled with AVX2 or AVX-512 enabled when
/// `level` has it.
/// Each level is its own out-of-line function, so the caller is left
/// with the dispatch and one call (no registers saved for inlined arms).
#[inline]
pub(crate) fn skip_string(level: Level, bytes: &[u8], i: usize) -> Result<usize, usize> {
    match level {
        Level::Portable => skip_string_portable(bytes, i),
        #[cfg(target_arch = "x86_64")]
        Level::Sse2 => x86::skip_string_sse2(bytes, i),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx2` is only produced by `detect` (and
        // `available`) after `is_x86_feature_detected!("avx2")` said yes.
        Level::Avx2 => unsafe { x86::skip_string_avx2(bytes, i) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx512` is only produced by `detect` (and
        // `available`) after `avx512_detected` said yes.
        Level::Avx512 => unsafe { x86::skip_string_avx512(bytes, i) },
    }
}

/// [`scan::skip_string`] with the portable masks.
#[inline(never)]
fn skip_string_portable(bytes: &[u8], i: usize) -> Result<usize, usize> {
    scan::skip_string::<scan::Swar>(bytes, i)
}

/// The closing quote of a short string whose contents start at `from`:
/// `Some` when the first byte of `bytes[from..from + 16]` that is a quote,
/// a backslash, a control or a non-ASCII byte is a quote (its index).
/// `None` when it is another one, when there is none, or when fewer than
/// 16 bytes are left: the full skip decides then. One 16-byte compare
/// (SSE2 is in the x86_64 baseline), or two word tests elsewhere.
#[inline(always)]
pub(crate) fn short_string_end(bytes: &[u8], from: usize) -> Option<usize> {
    // `from` is at most the length (one after a quote within it): no
    // overflow check for `from + 16` this way.
    let window: &[u8; 16] = bytes.get(from..)?.first_chunk()?;
    #[cfg(target_arch = "x86_64")]
    let mask = x86::special16(window);
    #[cfg(not(target_arch = "x86_64"))]
    let mask = scan::special16(window);
    if mask == 0 {
        return None;
    }
    let at = from + mask.trailing_zeros() as usize;
    (bytes[at] == b'"').then_some(at)
}

/// The closing quote of a string of plain ASCII (no `\\`, control or
/// non-ASCII byte) whose contents start at `from` and end within 64 bytes:
/// its index, or `None` (something else comes first, no quote within 64
/// bytes, or the slice ends first). Top-level keys: the caller compares
/// the contents with the field name as they are, which is only right when
/// there is nothing to unescape or validate.
#[inline(always)]
pub(crate) fn plain_string_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    for _ in 0..4 {
        let Some(window) = bytes.get(at..at + 16) else {
            // Fewer than 16 bytes left: byte by byte.
            let tail = bytes.get(at..)?;
            let k = tail
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))?;
            return (tail[k] == b'"').then_some(at + k);
        };
        let window: &[u8; 16] = window.try_into().ok()?;
        #[cfg(target_arch = "x86_64")]
        let mask = x86::special16(window);
        #[cfg(not(target_arch = "x86_64"))]
        let mask = scan::special16(window);
        if mask != 0 {
            let k = at + mask.trailing_zeros() as usize;
            return (bytes[k] == b'"').then_some(k);
        }
        at += 16;
    }
    None
}

/// The bytes of a 64-byte block that end a plain string's run (`"`,
/// `\\`, below 0x20, 0x80 and above), and its quotes: bit `k` is byte
/// `k`. Four 16-byte compares on x86_64 (SSE2 is in its baseline), the
/// portable word masks elsewhere.
#[inline(always)]
pub(crate) fn specials_and_quotes(block: &[u8; 64]) -> (u64, u64) {
    #[cfg(target_arch = "x86_64")]
    {
        x86::specials_and_quotes(block)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let (stops, high) = <scan::Swar as scan::Masks>::masks(block);
        (stops | high, scan::quotes(block))
    }
}

/// Length of the leading run of printable ASCII other than `"` and `\\`
/// (the bytes a model name or a top-level key takes unchanged): the index
/// of the first byte that is a quote, a backslash, a control byte, DEL or
/// non-ASCII, or `bytes.len()`. Sixteen bytes per compare on x86_64 (SSE2
/// is in its baseline); the portable word-at-a-time scan elsewhere.
#[inline]
pub(crate) fn printable_run(bytes: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let mut at = 0;
        while let Some(window) = bytes.get(at..at + 16) {
            let mask = x86::unprintable16(window.try_into().expect("16 bytes"));
            if mask != 0 {
                return at + mask.trailing_zeros() as usize;
            }
            at += 16;
        }
        at + bytes[at..]
            .iter()
            .position(|&b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\')
            .unwrap_or(bytes.len() - at)
    }
    #[cfg(not(target_arch = "x86_64"))]
    crate::extractor::first_special(bytes)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, __m512i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm256_and_si256, _mm256_cmpeq_epi8,
        _mm256_loadu_si256, _mm256_max_epu8, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8, _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_slli_epi16,
        _mm256_srli_epi16, _mm256_xor_si256, _mm512_and_si512, _mm512_cmpeq_epi8_mask,
        _mm512_cmple_epu8_mask, _mm512_loadu_si512, _mm512_maskz_loadu_epi8, _mm512_movepi8_mask,
        _mm512_or_si512, _mm512_permutex2var_epi8, _mm512_permutexvar_epi8, _mm512_set1_epi8,
        _mm512_setzero_si512, _mm512_srli_epi16, _mm512_subs_epu8, _mm512_test_epi8_mask,
        _mm512_xor_si512,
    };

    #[cfg(test)]
    use crate::scan::Stop;
    use crate::scan::{self, Masks};

    /// `mask`, through an empty `asm!` the optimizer cannot see into.
    /// Without it LLVM fuses the movemask results into one 64-lane boolean
    /// vector, which AVX2 has no register for, and splits it back into 64
    /// single-bit extractions (~300 instructions per block, measured with
    /// callgrind).
    #[inline(always)]
    fn opaque(mut mask: u32) -> u32 {
        // SAFETY: the template is empty: no instruction runs, no memory,
        // stack or flag is touched; the register keeps its value.
        unsafe {
            std::arch::asm!("/* {0:e} */", inout(reg) mask, options(pure, nomem, nostack, preserves_flags));
        }
        mask
    }

    /// One bit per byte of `window` that is `"`, `\\`, below 0x20 or
    /// 0x80 and above.
    #[inline(always)]
    pub(super) fn special16(window: &[u8; 16]) -> u32 {
        // SAFETY: SSE2 is enabled on every x86_64 target (baseline), and
        // `window` holds 16 readable bytes; the load is unaligned-safe.
        unsafe {
            let v = _mm_loadu_si128(window.as_ptr().cast::<__m128i>());
            (_mm_movemask_epi8(stops16(v)) | _mm_movemask_epi8(v)) as u32
        }
    }

    /// [`super::specials_and_quotes`] with SSE2.
    #[inline(always)]
    pub(super) fn specials_and_quotes(block: &[u8; 64]) -> (u64, u64) {
        let (mut specials, mut quotes) = (0u64, 0u64);
        for k in 0..4 {
            // SAFETY: SSE2 is enabled on every x86_64 target (baseline), and
            // `block[16 * k..]` holds 16 readable bytes for k < 4; the load
            // is unaligned-safe.
            let (s, q) = unsafe {
                let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>());
                let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
                (
                    opaque(_mm_movemask_epi8(_mm_or_si128(stops16(v), v)) as u32),
                    opaque(_mm_movemask_epi8(quote) as u32),
                )
            };
            specials |= u64::from(s) << (16 * k);
            quotes |= u64::from(q) << (16 * k);
        }
        (specials, quotes)
    }

    /// One bit per byte of `window` that is `"`, `\\`, below 0x20, DEL
    /// or 0x80 and above: everything a model name cannot take unchanged.
    #[inline(always)]
    pub(super) fn unprintable16(window: &[u8; 16]) -> u32 {
        // SAFETY: SSE2 is enabled on every x86_64 target (baseline), and
        // `window` holds 16 readable bytes; the load is unaligned-safe.
        unsafe {
            let v = _mm_loadu_si128(window.as_ptr().cast::<__m128i>());
            let dels = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f));
            let any = _mm_or_si128(stops16(v), dels);
            (_mm_movemask_epi8(any) | _mm_movemask_epi8(v)) as u32
        }
    }

    /// SSE2 masks, 16 bytes per compare.
    pub(super) struct Sse2;

    impl Masks for Sse2 {
        #[inline(always)]
        fn masks(block: &[u8; 64]) -> (u64, u64) {
            let (mut stops, mut high) = (0u64, 0u64);
            for k in 0..4 {
                // SAFETY: SSE2 is enabled on every x86_64 target (it is in
                // the baseline), and `block[16 * k..]` holds 16 readable
                // bytes for k < 4; the load is unaligned-safe.
                let (s, h) = unsafe {
                    let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>());
                    (
                        opaque(_mm_movemask_epi8(stops16(v)) as u32),
                        opaque(_mm_movemask_epi8(v) as u32),
                    )
                };
                stops |= u64::from(s) << (16 * k);
                high |= u64::from(h) << (16 * k);
            }
            (stops, high)
        }

        #[inline(always)]
        fn stops(block: &[u8; 64]) -> u64 {
            let mut stops = 0u64;
            for k in 0..4 {
                // SAFETY: as in `masks` above.
                let s = unsafe {
                    let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>());
                    opaque(_mm_movemask_epi8(stops16(v)) as u32)
                };
                stops |= u64::from(s) << (16 * k);
            }
            stops
        }

        #[inline(always)]
        fn masks_unless_plain(block: &[u8; 64]) -> Option<(u64, u64)> {
            // SAFETY: as in `masks` above.
            unsafe {
                let v: [__m128i; 4] = std::array::from_fn(|k| {
                    _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>())
                });
                let s = v.map(stops16);
                let any = _mm_or_si128(
                    _mm_or_si128(_mm_or_si128(s[0], v[0]), _mm_or_si128(s[1], v[1])),
                    _mm_or_si128(_mm_or_si128(s[2], v[2]), _mm_or_si128(s[3], v[3])),
                );
                if _mm_movemask_epi8(any) == 0 {
                    return None;
                }
                let (mut stops, mut high) = (0u64, 0u64);
                for k in 0..4 {
                    stops |= u64::from(opaque(_mm_movemask_epi8(s[k]) as u32)) << (16 * k);
                    high |= u64::from(opaque(_mm_movemask_epi8(v[k]) as u32)) << (16 * k);
                }
                Some((stops, high))
            }
        }
    }

    /// `0xff` in each byte of `v` that is `"`, `\\` or below 0x20.
    #[inline(always)]
    fn stops16(v: __m128i) -> __m128i {
        // SAFETY: SSE2 is enabled on every x86_64 target (baseline); no
        // memory is touched.
        unsafe {
            let quotes = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslashes = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // b <= 0x1f exactly when max(b, 0x1f) == 0x1f (unsigned).
            let low = _mm_set1_epi8(0x1f);
            let controls = _mm_cmpeq_epi8(_mm_max_epu8(v, low), low);
            _mm_or_si128(_mm_or_si128(quotes, backslashes), controls)
        }
    }

    /// AVX2 masks, 32 bytes per compare. Only ever used inside
    /// [`skip_avx2`], which runs with AVX2 enabled.
    pub(super) struct Avx2;

    impl Masks for Avx2 {
        #[inline(always)]
        fn masks(block: &[u8; 64]) -> (u64, u64) {
            let (mut stops, mut high) = (0u64, 0u64);
            for k in 0..2 {
                // SAFETY: this impl is private to this module and only
                // instantiated by `skip_avx2`, whose callers checked that
                // the CPU has AVX2; `block[32 * k..]` holds 32 readable
                // bytes for k < 2; the load is unaligned-safe.
                let (s, h) = unsafe {
                    let v = _mm256_loadu_si256(block.as_ptr().add(32 * k).cast::<__m256i>());
                    (
                        opaque(_mm256_movemask_epi8(stops32(v)) as u32),
                        opaque(_mm256_movemask_epi8(v) as u32),
                    )
                };
                stops |= u64::from(s) << (32 * k);
                high |= u64::from(h) << (32 * k);
            }
            (stops, high)
        }

        #[inline(always)]
        fn stops(block: &[u8; 64]) -> u64 {
            let mut stops = 0u64;
            for k in 0..2 {
                // SAFETY: as in `masks` above (only instantiated by
                // `skip_avx2`, whose callers checked for AVX2).
                let s = unsafe {
                    let v = _mm256_loadu_si256(block.as_ptr().add(32 * k).cast::<__m256i>());
                    opaque(_mm256_movemask_epi8(stops32(v)) as u32)
                };
                stops |= u64::from(s) << (32 * k);
            }
            stops
        }

        #[inline(always)]
        fn masks_unless_plain(block: &[u8; 64]) -> Option<(u64, u64)> {
            // SAFETY: as in `masks` above (only instantiated by
            // `skip_avx2`, whose callers checked for AVX2).
            unsafe {
                let lo = _mm256_loadu_si256(block.as_ptr().cast::<__m256i>());
                let hi = _mm256_loadu_si256(block.as_ptr().add(32).cast::<__m256i>());
                let (slo, shi) = (stops32(lo), stops32(hi));
                let any = _mm256_or_si256(_mm256_or_si256(slo, lo), _mm256_or_si256(shi, hi));
                if _mm256_movemask_epi8(any) == 0 {
                    return None;
                }
                let stops = u64::from(opaque(_mm256_movemask_epi8(slo) as u32))
                    | u64::from(opaque(_mm256_movemask_epi8(shi) as u32)) << 32;
                let high = u64::from(opaque(_mm256_movemask_epi8(lo) as u32))
                    | u64::from(opaque(_mm256_movemask_epi8(hi) as u32)) << 32;
                Some((stops, high))
            }
        }

        const ESCAPE_CLASSES: bool = true;

        #[inline(always)]
        fn letter_classes(block: &[u8; 64]) -> scan::LetterClasses {
            // SAFETY: as in `masks` above (only instantiated by
            // `skip_avx2`, whose callers checked for AVX2).
            let [lo, hi] = unsafe {
                [
                    letter_classes32(_mm256_loadu_si256(block.as_ptr().cast::<__m256i>())),
                    letter_classes32(_mm256_loadu_si256(block.as_ptr().add(32).cast::<__m256i>())),
                ]
            };
            let join = |k: usize| u64::from(lo[k]) | u64::from(hi[k]) << 32;
            scan::LetterClasses {
                backslash: join(0),
                simple: join(1),
                u: join(2),
            }
        }

        #[inline(always)]
        fn hex_classes(block: &[u8; 64]) -> scan::HexClasses {
            // SAFETY: as in `masks` above (only instantiated by
            // `skip_avx2`, whose callers checked for AVX2).
            let [lo, hi] = unsafe {
                [
                    hex_classes32(_mm256_loadu_si256(block.as_ptr().cast::<__m256i>())),
                    hex_classes32(_mm256_loadu_si256(block.as_ptr().add(32).cast::<__m256i>())),
                ]
            };
            let join = |k: usize| u64::from(lo[k]) | u64::from(hi[k]) << 32;
            scan::HexClasses {
                hex: join(0),
                high: join(1),
                d: join(2),
            }
        }
    }

    /// Nibble tables for the letter and hex classes of [`Avx2`] and
    /// [`Avx512`], one 16-byte table per 128-bit lane of `vpshufb`. A
    /// byte's class is the AND of its low-nibble and high-nibble entries;
    /// each bit is one rectangle of (high, low) nibbles, so no two
    /// rectangles can combine into a false hit. Letters of two-byte
    /// escapes: bit 0 `"` `/`, bit 1 `\\`, bit 2 `b` `f` `n`, bit 3 `r`
    /// `t`; bit 7 `u`.
    const LETTERS_LOW: [u8; 16] = [
        0, 0, 0x0d, 0, 0x08, 0x80, 0x04, 0, 0, 0, 0, 0, 0x02, 0, 0x04, 0x01,
    ];
    const LETTERS_HIGH: [u8; 16] = [0, 0, 0x01, 0, 0, 0x02, 0x04, 0x88, 0, 0, 0, 0, 0, 0, 0, 0];
    /// Hex digits: bit 0 `0`–`9`, bit 1 `a`–`f` `A`–`F`, bit 2 `8` `9`,
    /// bit 3 `d` `D`.
    const HEX_LOW: [u8; 16] = [
        0x01, 0x03, 0x03, 0x03, 0x0b, 0x03, 0x03, 0x01, 0x05, 0x05, 0, 0, 0, 0, 0, 0,
    ];
    const HEX_HIGH: [u8; 16] = [0, 0, 0, 0x05, 0x0a, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    /// `table` once per 128-bit lane of an `N`-byte register.
    const fn lanes<const N: usize>(table: [u8; 16]) -> [u8; N] {
        let mut all = [0u8; N];
        let mut k = 0;
        while k < N {
            all[k] = table[k % 16];
            k += 1;
        }
        all
    }

    /// `(low, high)` nibbles of each byte of `v`.
    #[inline(always)]
    fn nibbles(v: __m256i) -> (__m256i, __m256i) {
        // SAFETY: only reached from `Avx2`'s methods, which run with AVX2
        // enabled and detected (see `skip_avx2`); no memory is touched.
        unsafe {
            let nibble = _mm256_set1_epi8(0x0f);
            (
                _mm256_and_si256(v, nibble),
                _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble),
            )
        }
    }

    const LETTERS_LOW32: [u8; 32] = lanes(LETTERS_LOW);
    const LETTERS_HIGH32: [u8; 32] = lanes(LETTERS_HIGH);
    const HEX_LOW32: [u8; 32] = lanes(HEX_LOW);
    const HEX_HIGH32: [u8; 32] = lanes(HEX_HIGH);

    /// Each byte's class from the nibble tables `lo` and `hi`.
    #[inline(always)]
    fn class(v: __m256i, lo: &[u8; 32], hi: &[u8; 32]) -> __m256i {
        // SAFETY: as in `nibbles`; the tables are 32-byte arrays, loaded
        // unaligned.
        unsafe {
            let (low, high) = nibbles(v);
            _mm256_and_si256(
                _mm256_shuffle_epi8(_mm256_loadu_si256(lo.as_ptr().cast()), low),
                _mm256_shuffle_epi8(_mm256_loadu_si256(hi.as_ptr().cast()), high),
            )
        }
    }

    /// One bit per byte of `class` that has any of `bits`.
    #[inline(always)]
    fn any(class: __m256i, bits: i8) -> u32 {
        // SAFETY: as in `nibbles`.
        unsafe {
            let none = _mm256_cmpeq_epi8(
                _mm256_and_si256(class, _mm256_set1_epi8(bits)),
                _mm256_setzero_si256(),
            );
            !opaque(_mm256_movemask_epi8(none) as u32)
        }
    }

    /// The [`scan::LetterClasses`] masks of 32 bytes: backslash, simple,
    /// `u`. Only used inside `Avx2`'s methods; no closures, which would
    /// not inherit the caller's target features.
    #[inline(always)]
    fn letter_classes32(v: __m256i) -> [u32; 3] {
        // SAFETY: as in `nibbles`.
        unsafe {
            let letters = class(v, &LETTERS_LOW32, &LETTERS_HIGH32);
            let backslash = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8));
            [
                opaque(_mm256_movemask_epi8(backslash) as u32),
                any(letters, 0x0f),
                opaque(_mm256_movemask_epi8(letters) as u32),
            ]
        }
    }

    /// The [`scan::HexClasses`] masks of 32 bytes: hex, 8 and above, `d`.
    #[inline(always)]
    fn hex_classes32(v: __m256i) -> [u32; 3] {
        // SAFETY: as in `nibbles`.
        unsafe {
            let hex = class(v, &HEX_LOW32, &HEX_HIGH32);
            [
                any(hex, 0x03),
                any(hex, 0x06),
                // Bit 3 moved to each byte's top bit (a 16-bit shift moves
                // no bit across a byte's top).
                opaque(_mm256_movemask_epi8(_mm256_slli_epi16(hex, 4)) as u32),
            ]
        }
    }

    /// `0xff` in each byte of `v` that is `"`, `\\` or below 0x20. Only
    /// used inside [`skip_avx2`] (and tests that detected AVX2).
    #[inline(always)]
    fn stops32(v: __m256i) -> __m256i {
        // SAFETY: only reached from `Avx2`'s methods, which run with AVX2
        // enabled and detected (see `skip_avx2`); no memory is touched.
        unsafe {
            // b ^ 2 <= 0x20 exactly for the bytes below 0x20 and for `"`
            // (0x22 ^ 2 = 0x20): one test for both, five operations where
            // `stops16` takes six. The 16-byte windows keep six: with the
            // extra constant the nested loop around them measured slower.
            let flipped = _mm256_xor_si256(v, _mm256_set1_epi8(2));
            let low = _mm256_set1_epi8(0x20);
            let quotes_controls = _mm256_cmpeq_epi8(_mm256_max_epu8(flipped, low), low);
            let backslashes = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8));
            _mm256_or_si256(quotes_controls, backslashes)
        }
    }

    /// AVX-512 masks: a block is one register, and each class one
    /// compare or test straight into a 64-bit mask register (no
    /// movemask, no joining of halves). Only ever used inside
    /// [`skip_string_avx512`], which runs with AVX-512 F, BW and VBMI enabled.
    pub(super) struct Avx512;

    /// The block in one register.
    #[inline(always)]
    fn load512(block: &[u8; 64]) -> __m512i {
        // SAFETY: only reached from `Avx512`'s methods, instantiated by
        // `skip_string_avx512` (and `skip_avx512`), whose callers checked
        // that the CPU has AVX-512 F, BW and VBMI; `block` holds 64 readable
        // bytes; the load is unaligned-safe.
        unsafe { _mm512_loadu_si512(block.as_ptr().cast()) }
    }

    /// The stops of `v`: `"`, `\\` and bytes below 0x20, as in [`stops32`].
    #[inline(always)]
    fn stops512(v: __m512i) -> u64 {
        // SAFETY: as in `load512`; no memory is touched.
        unsafe {
            let flipped = _mm512_xor_si512(v, _mm512_set1_epi8(2));
            _mm512_cmple_epu8_mask(flipped, _mm512_set1_epi8(0x20))
                | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'\\' as i8))
        }
    }

    /// Each byte's class of `v` from the nibble tables `lo` and `hi`.
    #[inline(always)]
    fn class512(v: __m512i, lo: &[u8; 64], hi: &[u8; 64]) -> __m512i {
        // SAFETY: as in `load512`; the tables are 64-byte arrays, loaded
        // unaligned.
        unsafe {
            let table = |t: &[u8; 64]| _mm512_loadu_si512(t.as_ptr().cast());
            _mm512_and_si512(
                low_nibble_lookup(table(lo), v),
                high_nibble_lookup(table(hi), v),
            )
        }
    }

    /// `table[v & 0x0f]` per byte, for a table of four equal 16-byte
    /// lanes ([`lanes`]). VBMI's permute reads six bits of each index, and
    /// the lanes make the two above the nibble not matter: no mask first.
    #[inline(always)]
    fn low_nibble_lookup(table: __m512i, v: __m512i) -> __m512i {
        // SAFETY: as in `load512`; no memory is touched.
        unsafe { _mm512_permutexvar_epi8(v, table) }
    }

    /// `table[v >> 4]` per byte, for a table as in [`low_nibble_lookup`]:
    /// the 16-bit shift brings the neighbour byte's low bits above the
    /// nibble of every other byte, and the lanes make them not matter.
    #[inline(always)]
    fn high_nibble_lookup(table: __m512i, v: __m512i) -> __m512i {
        // SAFETY: as in `load512`; no memory is touched.
        unsafe { _mm512_permutexvar_epi8(_mm512_srli_epi16::<4>(v), table) }
    }

    const LETTERS_LOW64: [u8; 64] = lanes(LETTERS_LOW);
    const LETTERS_HIGH64: [u8; 64] = lanes(LETTERS_HIGH);
    const HEX_LOW64: [u8; 64] = lanes(HEX_LOW);
    const HEX_HIGH64: [u8; 64] = lanes(HEX_HIGH);

    impl Masks for Avx512 {
        #[inline(always)]
        fn masks(block: &[u8; 64]) -> (u64, u64) {
            let v = load512(block);
            // SAFETY: as in `load512`; no memory is touched.
            (stops512(v), unsafe { _mm512_movepi8_mask(v) })
        }

        #[inline(always)]
        fn stops(block: &[u8; 64]) -> u64 {
            stops512(load512(block))
        }

        const ESCAPE_CLASSES: bool = true;

        #[inline(always)]
        fn letter_classes(block: &[u8; 64]) -> scan::LetterClasses {
            let v = load512(block);
            let letters = class512(v, &LETTERS_LOW64, &LETTERS_HIGH64);
            // SAFETY: as in `load512`; no memory is touched.
            unsafe {
                scan::LetterClasses {
                    backslash: _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'\\' as i8)),
                    simple: _mm512_test_epi8_mask(letters, _mm512_set1_epi8(0x0f)),
                    u: _mm512_movepi8_mask(letters),
                }
            }
        }

        #[inline(always)]
        fn valid_utf8(span: &[u8]) -> bool {
            valid_utf8_512(span)
        }

        #[inline(always)]
        fn hex_classes(block: &[u8; 64]) -> scan::HexClasses {
            let hex = class512(load512(block), &HEX_LOW64, &HEX_HIGH64);
            // SAFETY: as in `load512`; no memory is touched.
            unsafe {
                scan::HexClasses {
                    hex: _mm512_test_epi8_mask(hex, _mm512_set1_epi8(0x03)),
                    high: _mm512_test_epi8_mask(hex, _mm512_set1_epi8(0x06)),
                    d: _mm512_test_epi8_mask(hex, _mm512_set1_epi8(0x08)),
                }
            }
        }
    }

    /// UTF-8 validation, 64 bytes per step: the lookup algorithm of
    /// simdjson and simdutf8 (Keiser and Lemire, "Validating UTF-8 In Less
    /// Than One Instruction Per Byte", 2021), with AVX-512 registers
    /// (simdutf8 has no AVX-512 path). Each byte is classified with the
    /// byte before it by three nibble tables; an AND of the three is
    /// nonzero exactly where a two-byte pattern is an error (a missing or
    /// extra continuation, an overlong form, a surrogate, a value past
    /// U+10FFFF); the third and fourth bytes of a sequence are checked
    /// against the leads two and three bytes back. std's check is the
    /// oracle in the tests below.
    mod utf8 {
        /// Error classes, one bit each (the names are the paper's).
        const TOO_SHORT: u8 = 1 << 0;
        const TOO_LONG: u8 = 1 << 1;
        const OVERLONG_3: u8 = 1 << 2;
        const TOO_LARGE: u8 = 1 << 3;
        const SURROGATE: u8 = 1 << 4;
        const OVERLONG_2: u8 = 1 << 5;
        const TOO_LARGE_1000: u8 = 1 << 6;
        const OVERLONG_4: u8 = 1 << 6;
        const TWO_CONTS: u8 = 1 << 7;
        const CARRY: u8 = TOO_SHORT | TOO_LONG | TWO_CONTS;

        /// By the high nibble of the byte before.
        pub(super) const BYTE_1_HIGH: [u8; 16] = [
            // 0___: ASCII.
            TOO_LONG,
            TOO_LONG,
            TOO_LONG,
            TOO_LONG,
            TOO_LONG,
            TOO_LONG,
            TOO_LONG,
            TOO_LONG,
            // 10__: a continuation.
            TWO_CONTS,
            TWO_CONTS,
            TWO_CONTS,
            TWO_CONTS,
            // 1100, 1101: a two-byte lead.
            TOO_SHORT | OVERLONG_2,
            TOO_SHORT,
            // 1110: a three-byte lead.
            TOO_SHORT | OVERLONG_3 | SURROGATE,
            // 1111: a four-byte lead (or worse).
            TOO_SHORT | TOO_LARGE | TOO_LARGE_1000 | OVERLONG_4,
        ];
        /// By the low nibble of the byte before.
        pub(super) const BYTE_1_LOW: [u8; 16] = [
            CARRY | OVERLONG_3 | OVERLONG_2 | OVERLONG_4,
            CARRY | OVERLONG_2,
            CARRY,
            CARRY,
            CARRY | TOO_LARGE,
            CARRY | TOO_LARGE | TOO_LARGE_1000,
            CARRY | TOO_LARGE | TOO_LARGE_1000,
            CARRY | TOO_LARGE | TOO_LARGE_1000,
            CARRY | TOO_LARGE | TOO_LARGE_1000,
            CARRY | TOO_LARGE | TOO_LARGE_1000,
            CARRY | TOO_LARGE | TOO_LARGE_1000,
            CARRY | TOO_LARGE | TOO_LARGE_1000,
            CARRY | TOO_LARGE | TOO_LARGE_1000,
            CARRY | TOO_LARGE | TOO_LARGE_1000 | SURROGATE,
            CARRY | TOO_LARGE | TOO_LARGE_1000,
            CARRY | TOO_LARGE | TOO_LARGE_1000,
        ];
        /// By the high nibble of the byte itself.
        pub(super) const BYTE_2_HIGH: [u8; 16] = [
            // 0___: ASCII.
            TOO_SHORT,
            TOO_SHORT,
            TOO_SHORT,
            TOO_SHORT,
            TOO_SHORT,
            TOO_SHORT,
            TOO_SHORT,
            TOO_SHORT,
            // 1000, 1001, 101_: continuations.
            TOO_LONG | OVERLONG_2 | TWO_CONTS | OVERLONG_3 | TOO_LARGE_1000 | OVERLONG_4,
            TOO_LONG | OVERLONG_2 | TWO_CONTS | OVERLONG_3 | TOO_LARGE,
            TOO_LONG | OVERLONG_2 | TWO_CONTS | SURROGATE | TOO_LARGE,
            TOO_LONG | OVERLONG_2 | TWO_CONTS | SURROGATE | TOO_LARGE,
            // 11__: leads.
            TOO_SHORT,
            TOO_SHORT,
            TOO_SHORT,
            TOO_SHORT,
        ];
        /// A lead byte in one of the last three places of a register
        /// whose sequence does not end in it is above these.
        /// For `_mm512_permutex2var_epi8(input, back, previous)`: byte `k`
        /// takes byte `k - N` of `input`, or for `k < N` byte `64 + k - N`
        /// of `previous` (bit 6 of an index picks the second register).
        pub(super) const fn back_indexes<const N: usize>() -> [u8; 64] {
            let mut indexes = [0; 64];
            let mut k = 0;
            while k < 64 {
                indexes[k] = if k >= N { k - N } else { 128 + k - N } as u8;
                k += 1;
            }
            indexes
        }

        pub(super) const INCOMPLETE_ABOVE: [u8; 64] = {
            let mut max = [0xff; 64];
            max[61] = 0b1111_0000 - 1;
            max[62] = 0b1110_0000 - 1;
            max[63] = 0b1100_0000 - 1;
            max
        };
    }

    const BYTE_1_HIGH64: [u8; 64] = lanes(utf8::BYTE_1_HIGH);
    const BYTE_1_LOW64: [u8; 64] = lanes(utf8::BYTE_1_LOW);
    const BYTE_2_HIGH64: [u8; 64] = lanes(utf8::BYTE_2_HIGH);

    /// The registers of the UTF-8 check, loaded once per span.
    #[derive(Clone, Copy)]
    struct Utf8Check {
        byte_1_high: __m512i,
        byte_1_low: __m512i,
        byte_2_high: __m512i,
        incomplete_above: __m512i,
        /// Indexes for the byte one, two and three back: bytes of the
        /// register before (64 and above), then of this one.
        back: [__m512i; 3],
    }

    impl Utf8Check {
        /// Only reached from `valid_utf8_512`.
        #[inline(always)]
        fn new() -> Self {
            // SAFETY: as in `valid_utf8_512`; the tables are 64-byte
            // arrays, loaded unaligned.
            unsafe {
                let table = |t: &[u8; 64]| _mm512_loadu_si512(t.as_ptr().cast());
                Self {
                    byte_1_high: table(&BYTE_1_HIGH64),
                    byte_1_low: table(&BYTE_1_LOW64),
                    byte_2_high: table(&BYTE_2_HIGH64),
                    incomplete_above: table(&utf8::INCOMPLETE_ABOVE),
                    back: [
                        table(&utf8::back_indexes::<1>()),
                        table(&utf8::back_indexes::<2>()),
                        table(&utf8::back_indexes::<3>()),
                    ],
                }
            }
        }

        /// Nonzero bytes where `input`, after `previous`, breaks UTF-8.
        #[inline(always)]
        fn errors(&self, input: __m512i, previous: __m512i) -> __m512i {
            // SAFETY: as in `valid_utf8_512`; no memory is touched.
            unsafe {
                let prev1 = _mm512_permutex2var_epi8(input, self.back[0], previous);
                let special = _mm512_and_si512(
                    _mm512_and_si512(
                        high_nibble_lookup(self.byte_1_high, prev1),
                        low_nibble_lookup(self.byte_1_low, prev1),
                    ),
                    high_nibble_lookup(self.byte_2_high, input),
                );
                // Third and fourth bytes: a lead of 0xe0 and above two
                // bytes back, or of 0xf0 and above three back.
                let prev2 = _mm512_permutex2var_epi8(input, self.back[1], previous);
                let prev3 = _mm512_permutex2var_epi8(input, self.back[2], previous);
                let must_continue = _mm512_or_si512(
                    _mm512_subs_epu8(prev2, _mm512_set1_epi8(0xe0u8.wrapping_sub(0x80) as i8)),
                    _mm512_subs_epu8(prev3, _mm512_set1_epi8(0xf0u8.wrapping_sub(0x80) as i8)),
                );
                let must_continue = _mm512_and_si512(must_continue, _mm512_set1_epi8(0x80u8 as i8));
                _mm512_xor_si512(must_continue, special)
            }
        }

        /// Nonzero bytes where a sequence is left open at the end of
        /// `previous`.
        #[inline(always)]
        fn open_at_end(&self, previous: __m512i) -> __m512i {
            // SAFETY: as in `valid_utf8_512`; no memory is touched.
            unsafe { _mm512_subs_epu8(previous, self.incomplete_above) }
        }
    }

    /// Whether `span` is valid UTF-8 (see [`utf8`]). Only reached from
    /// `Avx512`'s methods. Two registers per step, stepped over when both
    /// are ASCII: a test per register mispredicts on dense multilingual
    /// text (prose 1 MiB 10 % slower), one per 128 bytes much less often,
    /// and text with a rare accent still steps over most of it.
    #[inline(always)]
    fn valid_utf8_512(span: &[u8]) -> bool {
        // SAFETY: only reached from `Avx512::valid_utf8`, instantiated by
        // `skip_string_avx512` (and the test entry points), whose callers
        // checked that the CPU has AVX-512 F, BW and VBMI. Every load reads
        // inside `span`: whole registers while 64 bytes are left, then a
        // masked load of the rest, which reads only the bytes its mask
        // selects (the others are zero, ASCII, and are not accessed).
        unsafe {
            let check = Utf8Check::new();
            let mut error = _mm512_setzero_si512();
            let mut previous = _mm512_setzero_si512();
            let mut at = 0;
            let ptr = span.as_ptr();
            while span.len() - at >= 128 {
                let first = _mm512_loadu_si512(ptr.add(at).cast());
                let second = _mm512_loadu_si512(ptr.add(at + 64).cast());
                if _mm512_movepi8_mask(_mm512_or_si512(first, second)) == 0 {
                    error = _mm512_or_si512(error, check.open_at_end(previous));
                } else {
                    error = _mm512_or_si512(error, check.errors(first, previous));
                    error = _mm512_or_si512(error, check.errors(second, first));
                }
                previous = second;
                at += 128;
            }
            while at < span.len() {
                let left = span.len() - at;
                let input = if left >= 64 {
                    _mm512_loadu_si512(ptr.add(at).cast())
                } else {
                    _mm512_maskz_loadu_epi8(u64::MAX >> (64 - left), ptr.add(at).cast())
                };
                error = _mm512_or_si512(error, check.errors(input, previous));
                previous = input;
                at += 64;
            }
            // A sequence cut by the end of `span`: the masked load's zeros
            // have caught one in a partial register; this, one that ends
            // a whole one.
            error = _mm512_or_si512(error, check.open_at_end(previous));
            _mm512_test_epi8_mask(error, error) == 0
        }
    }

    /// The skip compiled with AVX-512 enabled.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512 F, BW and VBMI.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn skip_avx512(bytes: &[u8], i: usize) -> Stop {
        scan::skip::<Avx512>(bytes, i)
    }

    /// [`scan::skip_string`] compiled with AVX-512 enabled.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512 F, BW and VBMI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn skip_string_avx512(bytes: &[u8], i: usize) -> Result<usize, usize> {
        scan::skip_string::<Avx512>(bytes, i)
    }

    /// The skip compiled with AVX2 enabled, so that the masks' intrinsics
    /// inline into it.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2.
    #[cfg(test)]
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn skip_avx2(bytes: &[u8], i: usize) -> Stop {
        scan::skip::<Avx2>(bytes, i)
    }

    /// [`scan::skip_string`] with SSE2 masks.
    #[inline(never)]
    pub(super) fn skip_string_sse2(bytes: &[u8], i: usize) -> Result<usize, usize> {
        scan::skip_string::<Sse2>(bytes, i)
    }

    /// [`scan::skip_string`] compiled with AVX2 enabled.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn skip_string_avx2(bytes: &[u8], i: usize) -> Result<usize, usize> {
        scan::skip_string::<Avx2>(bytes, i)
    }

    /// What a level's `masks`, `stops` and `masks_unless_plain` give for a
    /// block, side by side (tests).
    #[cfg(test)]
    pub(super) type LevelMasks = ((u64, u64), u64, Option<(u64, u64)>);

    /// Test entry points to one level's masks, classes and block walk,
    /// each asserting first that the CPU has the level (the intrinsics
    /// are only sound there) and running with its target features.
    #[cfg(test)]
    macro_rules! checked_entry_points {
        ($module:ident, $masks:ty, $features:literal, $detected:expr) => {
            pub(in crate::simd) mod $module {
                use super::*;

                /// Whether this CPU has the level.
                pub(in crate::simd) fn detected() -> bool {
                    $detected
                }

                /// `masks`, `stops` and `masks_unless_plain` of `block`.
                pub(in crate::simd) fn masks(block: &[u8; 64]) -> LevelMasks {
                    assert!(detected());
                    #[target_feature(enable = $features)]
                    fn inner(block: &[u8; 64]) -> LevelMasks {
                        (
                            <$masks>::masks(block),
                            <$masks>::stops(block),
                            <$masks>::masks_unless_plain(block),
                        )
                    }
                    // SAFETY: the level was detected just above.
                    unsafe { inner(block) }
                }

                /// The letter and hex classes of `block`.
                pub(in crate::simd) fn classes(
                    block: &[u8; 64],
                ) -> (scan::LetterClasses, scan::HexClasses) {
                    assert!(detected());
                    #[target_feature(enable = $features)]
                    fn inner(block: &[u8; 64]) -> (scan::LetterClasses, scan::HexClasses) {
                        (
                            <$masks>::letter_classes(block),
                            <$masks>::hex_classes(block),
                        )
                    }
                    // SAFETY: the level was detected just above.
                    unsafe { inner(block) }
                }

                /// The level's UTF-8 check of `span`.
                pub(in crate::simd) fn valid_utf8(span: &[u8]) -> bool {
                    assert!(detected());
                    #[target_feature(enable = $features)]
                    fn inner(span: &[u8]) -> bool {
                        <$masks>::valid_utf8(span)
                    }
                    // SAFETY: the level was detected just above.
                    unsafe { inner(span) }
                }

                /// [`scan::escapes_in_block`] with the level's classes.
                pub(in crate::simd) fn escapes_in_block(
                    bytes: &[u8],
                    i: usize,
                    stops: u64,
                ) -> scan::Walk {
                    assert!(detected());
                    #[target_feature(enable = $features)]
                    fn inner(bytes: &[u8], i: usize, stops: u64) -> scan::Walk {
                        scan::escapes_in_block::<$masks>(bytes, i, stops)
                    }
                    // SAFETY: the level was detected just above.
                    unsafe { inner(bytes, i, stops) }
                }
            }
        };
    }

    #[cfg(test)]
    checked_entry_points!(
        avx2,
        Avx2,
        "avx2,popcnt",
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt")
    );
    #[cfg(test)]
    checked_entry_points!(
        avx512,
        Avx512,
        "avx512f,avx512bw,avx512vbmi",
        crate::simd::avx512_detected()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Masks;
    use crate::scan::tests::{blocks, naive_masks};

    /// A deterministic pseudo-random sequence (xorshift64) from `seed`.
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// A vector level this CPU has: its name and test entry points.
    #[cfg(target_arch = "x86_64")]
    struct VectorLevel {
        name: &'static str,
        masks: fn(&[u8; 64]) -> x86::LevelMasks,
        classes: fn(&[u8; 64]) -> (crate::scan::LetterClasses, crate::scan::HexClasses),
        escapes_in_block: fn(&[u8], usize, u64) -> crate::scan::Walk,
        valid_utf8: fn(&[u8]) -> bool,
    }

    #[cfg(target_arch = "x86_64")]
    fn vector_levels() -> Vec<VectorLevel> {
        macro_rules! level {
            ($module:ident) => {
                VectorLevel {
                    name: stringify!($module),
                    masks: x86::$module::masks,
                    classes: x86::$module::classes,
                    escapes_in_block: x86::$module::escapes_in_block,
                    valid_utf8: x86::$module::valid_utf8,
                }
            };
        }
        let mut levels = Vec::new();
        if x86::avx2::detected() {
            levels.push(level!(avx2));
        }
        if x86::avx512::detected() {
            levels.push(level!(avx512));
        }
        levels
    }

    /// Every vector level's UTF-8 check against std's: every pair of
    /// bytes; every three- and four-byte lead with every second byte and
    /// the boundary values of the others; every code point encoded; each
    /// at offsets that put it across the 16-byte lanes and the 64-byte
    /// registers, ending the span or followed by ASCII; then random
    /// texts with one byte changed.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_setting_caps_the_level_and_never_raises_it() {
        let best = Level::best();
        assert_eq!(Level::capped(best, None), best);
        for &cap in Level::ALL {
            for name in [
                cap.name().to_owned(),
                cap.name().to_uppercase(),
                format!(" {}\n", cap.name()),
            ] {
                assert_eq!(Level::named(&name), Some(cap), "{name:?}");
                assert_eq!(Level::capped(best, Some(&name)), cap.min(best), "{name:?}");
            }
            // Any level is capped at a lower one, and a higher one leaves it.
            for &other in Level::ALL {
                assert_eq!(Level::capped(other, Some(cap.name())), cap.min(other));
            }
        }
        for unknown in ["", "avx", "avx-512", "neon", "sse2,avx2"] {
            assert_eq!(Level::named(unknown), None, "{unknown:?}");
            assert_eq!(Level::capped(best, Some(unknown)), best, "{unknown:?}");
        }
        assert_eq!(Level::available().last(), Some(&best));
        assert_eq!(Level::available().first(), Some(&Level::Portable));
    }

    #[test]
    fn vector_utf8_checks_agree_with_std() {
        let levels = vector_levels();
        let mut checked = 0;
        let mut check = |bytes: &[u8]| {
            let expected = std::str::from_utf8(bytes).is_ok();
            for VectorLevel {
                name, valid_utf8, ..
            } in &levels
            {
                assert_eq!(valid_utf8(bytes), expected, "{name} {bytes:x?}");
                checked += 1;
            }
        };
        let mut sequences: Vec<Vec<u8>> = Vec::new();
        for pair in 0..=u16::MAX {
            sequences.push(pair.to_be_bytes().to_vec());
        }
        let edges = [0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0];
        for lead in 0xe0..=0xf7u8 {
            for second in 0..=u8::MAX {
                for &third in &edges {
                    sequences.push(vec![lead, second, third]);
                    if lead >= 0xf0 {
                        for fourth in [0x41, 0x80, 0xbf, 0xc0] {
                            sequences.push(vec![lead, second, third, fourth]);
                        }
                    }
                }
            }
        }
        let offsets = [0, 1, 13, 14, 15, 31, 47, 60, 61, 62, 63, 64, 65, 127];
        let mut text = vec![b'a'; 256];
        for sequence in &sequences {
            for at in offsets {
                text[at..at + sequence.len()].copy_from_slice(sequence);
                check(&text[..at + sequence.len()]);
                check(&text[..at + sequence.len() + 3]);
                text[at..at + sequence.len()].fill(b'a');
            }
        }
        let mut encoded = [0u8; 4];
        for c in (0..=0x10_ffffu32).filter_map(char::from_u32) {
            let sequence = c.encode_utf8(&mut encoded).as_bytes();
            for at in [0, 15, 62, 63] {
                text[at..at + sequence.len()].copy_from_slice(sequence);
                check(&text[..at + sequence.len()]);
                text[at..at + sequence.len()].fill(b'a');
            }
        }
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        let alphabet = ["a", "\n", "é", "日本", "😀", "ß", " ", "Ω"];
        for _ in 0..20_000 {
            let mut random = String::new();
            let len = next() % 300;
            while (random.len() as u64) < len {
                random.push_str(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            let mut bytes = random.into_bytes();
            check(&bytes);
            if !bytes.is_empty() {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = next() as u8;
                check(&bytes);
            }
        }
        let per_level = sequences.len() * offsets.len() * 2 + 1_112_064 * 4;
        assert!(checked >= per_level * levels.len(), "{checked}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_escape_classes_agree_with_the_bytewise_oracle() {
        let levels = vector_levels();
        let mut checked = 0;
        for block in blocks() {
            for VectorLevel { name, classes, .. } in &levels {
                let (letters, hex) = classes(&block);
                assert_eq!(
                    letters,
                    crate::scan::LetterClasses::of(&block),
                    "{name} {block:?}"
                );
                assert_eq!(hex, crate::scan::HexClasses::of(&block), "{name} {block:?}");
                checked += 1;
            }
        }
        assert_eq!(checked, 64 * 256 * 9 * levels.len());
    }

    /// Blocks of escapes of every kind (valid, invalid, surrogates, cut
    /// by the block end, runs of backslashes) at every offset: the block
    /// taken whole answers as the escape-by-escape walk does, with the
    /// bytewise classes and with every vector level's.
    #[test]
    fn escapes_in_block_answers_as_the_walk_does() {
        let pieces: [&[u8]; 22] = [
            b"\\\"",
            b"\\n",
            b"\\\\",
            b"\\/",
            b"\\u00e9",
            b"\\uD83D\\uDE00",
            b"\\ud800",
            b"\\udc00x",
            b"\\u12g4",
            b"\\u12",
            b"\\x",
            b"\\\x01",
            b"\\\\\\\"",
            b"\"",
            b"ab",
            b"d8",
            b"u",
            "é".as_bytes(),
            b"\\",
            b"\\\\\\",
            b" ",
            b"\\uDBFF\\uDFFF",
        ];
        #[cfg(target_arch = "x86_64")]
        let levels = vector_levels();
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        let mut checked = 0;
        for _ in 0..40_000 {
            let mut bytes = Vec::new();
            while bytes.len() < 80 {
                bytes.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
            // Starts at a piece boundary, so never inside an escape.
            let (stops, _) = crate::scan::tests::naive_masks(bytes[..64].try_into().unwrap());
            let expected = crate::scan::walk(&bytes, 0, stops, 64);
            // An escape from the last byte on: the walk steps over it, the
            // block leaves it to the next block (which starts at its
            // backslash); the skip ends at the same place either way.
            let same = |got: crate::scan::Walk| {
                got == expected
                    || (got == crate::scan::Walk::Next(63)
                        && matches!(expected, crate::scan::Walk::Next(n) if n > 64))
            };
            let got = crate::scan::escapes_in_block::<crate::scan::Swar>(&bytes, 0, stops);
            assert!(
                same(got),
                "{:?}: {got:?}, walk {expected:?}",
                String::from_utf8_lossy(&bytes)
            );
            #[cfg(target_arch = "x86_64")]
            for VectorLevel {
                name,
                escapes_in_block,
                ..
            } in &levels
            {
                let got = escapes_in_block(&bytes, 0, stops);
                assert!(
                    same(got),
                    "{name} {:?}: {got:?}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            checked += 1;
        }
        assert_eq!(checked, 40_000);
        // A block without a stop (the skip walks those) gets the same
        // answer too.
        for bytes in [vec![b'a'; 80], "é日 uD800 ".repeat(8).into_bytes()] {
            let (stops, _) = crate::scan::tests::naive_masks(bytes[..64].try_into().unwrap());
            assert_eq!(stops, 0);
            let next = crate::scan::Walk::Next(64);
            assert_eq!(crate::scan::walk(&bytes, 0, stops, 64), next);
            let got = crate::scan::escapes_in_block::<crate::scan::Swar>(&bytes, 0, stops);
            assert_eq!(got, next);
            #[cfg(target_arch = "x86_64")]
            for VectorLevel {
                name,
                escapes_in_block,
                ..
            } in &levels
            {
                assert_eq!(escapes_in_block(&bytes, 0, stops), next, "{name}");
            }
        }
    }

    #[test]
    fn validated_str_is_the_checked_str_for_every_model_the_extractor_finds() {
        let names = [
            "m",
            "food-review-1",
            "meta-llama/Llama-3.1-8B-Instruct",
            "modèle-é",
            "模型-7b",
            "emoji-🦙",
            "\\u00e9 escaped",
        ];
        for name in names {
            for body in [
                format!(r#"{{"model":"{name}"}}"#),
                format!(r#"{{"model":"  {name}\t"}}"#),
                format!(r#"{{"messages":[{{"content":"é \" 模"}}],"model":"{name}\/x"}}"#),
            ] {
                let body = bytes::Bytes::from(body);
                let outcome = crate::extract_model(&body, &crate::Limits::new());
                let Ok(crate::Outcome::Found(model)) = outcome else {
                    panic!("{body:?}: {outcome:?}");
                };
                let parsed: serde_json::Value = serde_json::from_slice(&body).expect("json");
                let expected = parsed["model"].as_str().expect("a string");
                assert_eq!(
                    model.as_str(),
                    expected.trim_matches([' ', '\t']),
                    "{body:?}"
                );
                assert_eq!(
                    model.as_str(),
                    std::str::from_utf8(model.as_bytes()).expect("valid"),
                    "{body:?}"
                );
            }
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "unvalidated model bytes")]
    fn validated_str_refuses_unvalidated_bytes_when_debug_assertions_are_on() {
        validated_str(b"a\xffb");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sse2_and_vector_masks_agree_with_the_bytewise_oracle() {
        let levels = vector_levels();
        let mut checked = 0;
        for block in blocks().chain([[b'p'; 64], [0x80; 64]]) {
            let expected = naive_masks(&block);
            let unless = (expected != (0, 0)).then_some(expected);
            assert_eq!(x86::Sse2::masks(&block), expected, "sse2 {block:?}");
            assert_eq!(x86::Sse2::stops(&block), expected.0, "sse2 stops {block:?}");
            let sse2_unless = x86::Sse2::masks_unless_plain(&block);
            assert_eq!(sse2_unless, unless, "sse2 unless {block:?}");
            assert_eq!(scan::Swar::masks_unless_plain(&block), unless);
            for VectorLevel { name, masks, .. } in &levels {
                assert_eq!(
                    masks(&block),
                    (expected, expected.0, unless),
                    "{name} {block:?}"
                );
            }
            checked += 1;
        }
        assert_eq!(checked, 64 * 256 * 9 + 2);
    }

    #[test]
    fn specials_and_quotes_agree_with_the_bytewise_oracle() {
        let mut checked = 0;
        for block in blocks() {
            let (stops, high) = naive_masks(&block);
            let quotes = block
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'"')
                .fold(0u64, |mask, (k, _)| mask | 1 << k);
            assert_eq!(
                specials_and_quotes(&block),
                (stops | high, quotes),
                "{block:?}"
            );
            assert_eq!(scan::quotes(&block), quotes, "{block:?}");
            checked += 1;
        }
        assert_eq!(checked, 64 * 256 * 9);
    }

    /// The 16-byte test against the portable one and the byte-wise
    /// oracle, on every byte value at every position.
    #[test]
    fn short_string_end_agrees_with_the_bytewise_oracle() {
        let naive = |bytes: &[u8], from: usize| {
            let window = bytes.get(from..from + 16)?;
            let k = window
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))?;
            (window[k] == b'"').then_some(from + k)
        };
        let mut checked = 0;
        for block in blocks() {
            for from in [0, 1, 15, 47, 48, 49, 63] {
                let expected = naive(&block, from);
                assert_eq!(short_string_end(&block, from), expected, "{from} {block:?}");
                checked += 1;
                #[cfg(target_arch = "x86_64")]
                {
                    let window: &[u8; 16] = match block.get(from..from + 16) {
                        Some(w) => w.try_into().unwrap(),
                        None => continue,
                    };
                    assert_eq!(x86::special16(window), crate::scan::special16(window));
                }
            }
        }
        assert_eq!(checked, 64 * 256 * 9 * 7);
    }

    /// The printable run against the byte-wise oracle and the portable
    /// word-at-a-time scan: every byte value at every position of every
    /// block, from several starts, and runs longer than a block.
    #[test]
    fn printable_run_agrees_with_the_bytewise_oracle() {
        let naive = |bytes: &[u8]| {
            bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
                .unwrap_or(bytes.len())
        };
        let mut checked = 0;
        for block in blocks() {
            for from in [0, 1, 15, 16, 17, 47, 49, 63, 64] {
                let bytes = &block[from..];
                assert_eq!(printable_run(bytes), naive(bytes), "{from} {block:?}");
                assert_eq!(crate::extractor::first_special(bytes), naive(bytes));
                checked += 1;
            }
        }
        let long = [b'm'; 300];
        for len in 0..300 {
            assert_eq!(printable_run(&long[..len]), len);
        }
        assert_eq!(checked, 64 * 256 * 9 * 9);
    }

    /// The plain-key test against the byte-wise oracle: every byte value
    /// at every position, from several starts, in slices that end at every
    /// length (the tail is read byte by byte).
    #[test]
    fn plain_string_end_agrees_with_the_bytewise_oracle() {
        let naive = |bytes: &[u8], from: usize| {
            let window = &bytes[from.min(bytes.len())..bytes.len().min(from + 64)];
            let k = window
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))?;
            (window[k] == b'"').then_some(from + k)
        };
        let mut checked = 0;
        for block in blocks() {
            for (from, end) in [
                (0, 64),
                (1, 64),
                (0, 17),
                (3, 15),
                (47, 64),
                (63, 64),
                (64, 64),
            ] {
                let bytes = &block[..end];
                assert_eq!(
                    plain_string_end(bytes, from),
                    naive(bytes, from),
                    "{from}..{end} {block:?}"
                );
                checked += 1;
            }
        }
        // Runs longer than the 64 bytes it looks at.
        let mut long = vec![b'k'; 100];
        long[70] = b'"';
        assert_eq!(plain_string_end(&long, 0), None);
        assert_eq!(plain_string_end(&long, 6), None);
        assert_eq!(plain_string_end(&long, 7), Some(70));
        assert_eq!(checked, 64 * 256 * 9 * 7);
    }

    /// Plain runs of several blocks (the one-test-per-block path), before
    /// and after a first non-ASCII byte, ended by every kind of byte the
    /// skip stops at or steps over, at every offset: every level agrees
    /// with the byte-wise skip.
    #[test]
    fn long_plain_runs_skip_like_the_bytewise_one() {
        let levels = Level::available();
        let mut checked = 0;
        for lead in [&b""[..], "é".as_bytes(), b"\\n", "日".as_bytes()] {
            for run in (0..=300)
                .step_by(7)
                .chain([63, 64, 65, 127, 128, 129, 191, 192, 193])
            {
                for end in [
                    &b"\""[..],
                    b"\\u00e9\"",
                    b"\x01",
                    "ß\"".as_bytes(),
                    b"\\q",
                    b"",
                ] {
                    for start in [0, 1, 5] {
                        let mut text = b"xxxxx".to_vec();
                        text.extend_from_slice(lead);
                        text.extend(std::iter::repeat_n(b'p', run));
                        text.extend_from_slice(end);
                        text.extend_from_slice(b"tail after the stop, plain as well, \"");
                        let expected = crate::scan::tests::naive_skip(&text, start);
                        for &level in &levels {
                            let got = skip(level, &text, start);
                            assert!(
                                crate::scan::tests::same_stop(got, expected, start),
                                "{level:?} lead {lead:?} run {run} end {end:?}: {got:?} {expected:?}"
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1_000);
    }

    /// [`scan::skip_string`] byte by byte: the skip, then std's UTF-8
    /// answer over the raw bytes from the first non-ASCII one (a sequence
    /// cut by the end of `bytes` left to the byte path), then a control
    /// byte at the stop as an error.
    fn naive_skip_string(bytes: &[u8], start: usize) -> Result<usize, usize> {
        let stop = crate::scan::tests::naive_skip(bytes, start);
        if let Some((first, last)) = stop.non_ascii {
            let span = scan::span_to_validate(bytes, first, last);
            let valid = std::str::from_utf8(span).map_or_else(|e| e.valid_up_to(), str::len);
            if valid < last - first {
                return Ok(first + valid);
            }
        }
        match bytes.get(stop.at) {
            Some(&b) if b < 0x20 => Err(stop.at),
            _ => Ok(stop.at),
        }
    }

    /// The skip with its UTF-8 check, every level against the byte-wise
    /// reference: from every start to every end of a corpus of escapes,
    /// valid and invalid UTF-8 and control bytes, and with every byte
    /// value at every position of a block in a string of one to three
    /// blocks after multi-byte characters (the error offset included).
    #[test]
    fn every_level_skips_strings_like_the_bytewise_reference() {
        let levels = Level::available();
        let mut corpus: Vec<u8> = Vec::new();
        for piece in [
            &b"plain ascii text that runs for a while, longer than one block of sixty-four bytes"[..],
            br#"\n\"\\\/\u00e9\ud83d\ude00\t"#,
            "café 日本語 😀 Ωμέγα".as_bytes(),
            b"\xed\xa0\x80 \xc0\xaf \xf4\x90\x80\x80 \xe6\x97",
            b"\x01\x1f\x7f\x80\xff\xc3",
            br#"\x\u12\ud83d\u0041"#,
            b"\"",
        ] {
            corpus.extend_from_slice(piece);
        }
        let text = corpus.repeat(3);
        let mut checked = 0;
        for end in (0..=text.len()).step_by(5) {
            let bytes = &text[..end];
            for start in 0..=end {
                let expected = naive_skip_string(bytes, start);
                for &level in &levels {
                    let got = skip_string(level, bytes, start);
                    assert_eq!(got, expected, "{level:?} {start}..{end}");
                }
                checked += 1;
            }
        }
        for lead in 0..4 {
            for block in crate::scan::tests::blocks() {
                let mut string = "é".repeat(lead).into_bytes();
                string.extend_from_slice(&block);
                string.extend_from_slice("日 tail\"".as_bytes());
                for end in [string.len(), lead * 2 + 63, lead * 2 + 64] {
                    let bytes = &string[..end];
                    let expected = naive_skip_string(bytes, 0);
                    for &level in &levels {
                        assert_eq!(
                            skip_string(level, bytes, 0),
                            expected,
                            "{level:?} {bytes:?}"
                        );
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 100_000);
    }

    /// Every level skips every string of a corpus exactly like the
    /// byte-by-byte skip, from every start position to every end.
    #[test]
    fn every_level_skips_like_the_portable_one() {
        let mut corpus: Vec<u8> = Vec::new();
        for piece in [
            &br#"plain ascii text that runs for a while, longer than one block of sixty-four bytes"#[..],
            br#"\n\"\\\/\u00e9\ud83d\ude00\t"#,
            "café 日本語 😀 Ωμέγα".as_bytes(),
            b"\x01\x1f\x7f\x80\xff\xc3",
            br#"\x\u12\ud83d\u0041"#,
            b"\"",
        ] {
            corpus.extend_from_slice(piece);
        }
        let text = corpus.repeat(3);
        let levels = Level::available();
        let mut checked = 0;
        for end in (0..=text.len()).step_by(7) {
            let bytes = &text[..end];
            for start in 0..=end {
                let expected = crate::scan::tests::naive_skip(bytes, start);
                for &level in &levels {
                    let got = skip(level, bytes, start);
                    assert!(
                        crate::scan::tests::same_stop(got, expected, start),
                        "{level:?} {start}..{end}: {got:?} {expected:?}"
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 10_000);
    }
}
