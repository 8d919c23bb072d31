//! Streaming decoders for compressed request bodies (`Content-Encoding`),
//! bounded against decompression bombs.
//!
//! The core takes the encoding as a value parsed from the header's bytes
//! ([`ContentEncoding::parse`]); [`Decoder`] turns encoded chunks into
//! decoded pieces for an extractor, while the caller forwards the original
//! bytes. Most adapters use [`BodyExtractor`](crate::BodyExtractor), which
//! does the plumbing. See the [crate docs](crate#compressed-bodies) for the
//! choice of decoders and the limits.
//!
//! ```
//! use bbr_core::encoding::{Coding, ContentEncoding, DecodeLimits, Decoder};
//!
//! let encoding = ContentEncoding::parse(b"gzip").unwrap();
//! assert_eq!(encoding.codings(), &[Coding::Gzip]);
//! # #[cfg(feature = "flate2")] {
//! let gzipped: &[u8] = &[
//!     0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3, 0xab, 0x56, 0xca, 0xcd, 0x4f, 0x49, 0xcd, 0x51, 0xb2,
//!     0x52, 0xca, 0x55, 0xaa, 0x05, 0x00, 0x9b, 0x6c, 0xba, 0xaa, 0x0d, 0x00, 0x00, 0x00,
//! ];
//! let mut decoder = Decoder::new(encoding, DecodeLimits::new());
//! let mut decoded = Vec::new();
//! decoder
//!     .decode(gzipped, &mut |piece| {
//!         decoded.extend_from_slice(piece);
//!         Ok(true)
//!     })
//!     .unwrap();
//! decoder.finish().unwrap();
//! assert_eq!(decoded, br#"{"model":"m"}"#);
//! # }
//! ```

use crate::{ErrorKind, ExtractError};

/// One content coding that bbr can decode.
///
/// ```
/// use bbr_core::encoding::Coding;
/// assert_eq!(Coding::Zstd.as_str(), "zstd");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Coding {
    /// `gzip` (and its alias `x-gzip`): RFC 1952, members may be concatenated.
    Gzip,
    /// `deflate`: the zlib format of RFC 1950, as RFC 9110 defines it.
    Deflate,
    /// `br`: Brotli, RFC 7932.
    Br,
    /// `zstd`: Zstandard, RFC 8878 (frames may be concatenated).
    Zstd,
}

impl Coding {
    /// The token as it appears in `Content-Encoding`.
    ///
    /// ```
    /// assert_eq!(bbr_core::encoding::Coding::Br.as_str(), "br");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// Whether this build decodes it (its cargo feature is on).
    ///
    /// ```
    /// assert_eq!(bbr_core::encoding::Coding::Gzip.is_built(), cfg!(feature = "flate2"));
    /// ```
    pub const fn is_built(self) -> bool {
        match self {
            Coding::Gzip | Coding::Deflate => cfg!(feature = "flate2"),
            Coding::Br => cfg!(feature = "brotli"),
            Coding::Zstd => cfg!(feature = "zstd"),
        }
    }
}

/// Why a `Content-Encoding` is not decoded. Adapters treat such a body as
/// one without a model (forwarded unrouted, or the missing-model refusal):
/// it may be valid traffic that bbr cannot read, so it is never a 400.
///
/// ```
/// use bbr_core::encoding::{ContentEncoding, NotDecoded};
/// assert_eq!(ContentEncoding::parse(b"compress"), Err(NotDecoded::Unknown));
/// assert_eq!(ContentEncoding::parse(b"gzip, gzip, gzip"), Err(NotDecoded::TooMany));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum NotDecoded {
    /// A coding token bbr does not know (`compress`, `exi`, a typo).
    #[error("unknown content coding")]
    Unknown,
    /// More than [`ContentEncoding::MAX_CODINGS`] codings.
    #[error("more than two content codings")]
    TooMany,
    /// A known coding whose decoder is not in this build (cargo feature off).
    #[error("content coding {} is not built in", .0.as_str())]
    NotBuilt(Coding),
}

/// The codings of a `Content-Encoding` value, in the order they were
/// applied (the header's order); decoding goes in reverse.
///
/// ```
/// use bbr_core::encoding::{Coding, ContentEncoding};
/// let encoding = ContentEncoding::parse(b" GZIP , identity,br").unwrap();
/// assert_eq!(encoding.codings(), &[Coding::Gzip, Coding::Br]);
/// assert!(ContentEncoding::parse(b"identity").unwrap().is_identity());
/// assert!(ContentEncoding::parse(b"").unwrap().is_identity());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentEncoding {
    /// Slots past `len` are unused.
    codings: [Coding; ContentEncoding::MAX_CODINGS],
    len: usize,
}

impl Default for ContentEncoding {
    fn default() -> Self {
        Self::identity()
    }
}

impl ContentEncoding {
    /// Most codings decoded in one body: 2 (one is what clients send; two
    /// covers a proxy that compresses again). More is refused as not
    /// decoded: each layer multiplies a bomb's expansion.
    pub const MAX_CODINGS: usize = 2;

    /// No coding (`identity`).
    ///
    /// ```
    /// assert!(bbr_core::encoding::ContentEncoding::identity().is_identity());
    /// ```
    pub const fn identity() -> Self {
        Self {
            codings: [Coding::Gzip; Self::MAX_CODINGS],
            len: 0,
        }
    }

    /// Parses a `Content-Encoding` value: a comma-separated list of
    /// case-insensitive tokens (empty elements and `identity` skipped,
    /// `x-gzip` is `gzip`). Several header fields:
    /// [`parse_fields`](Self::parse_fields).
    ///
    /// ```
    /// use bbr_core::encoding::{Coding, ContentEncoding};
    /// assert_eq!(ContentEncoding::parse(b"x-gzip").unwrap().codings(), &[Coding::Gzip]);
    /// assert_eq!(ContentEncoding::parse(b"deflate,zstd").unwrap().codings(), &[Coding::Deflate, Coding::Zstd]);
    /// ```
    pub fn parse(value: &[u8]) -> Result<Self, NotDecoded> {
        Self::parse_fields([value])
    }

    /// Parses the values of several `Content-Encoding` fields as the one
    /// list they are (RFC 9110, section 5.3: a recipient may combine
    /// fields with commas), in field order, without joining them. No
    /// fields at all is `identity`.
    ///
    /// ```
    /// use bbr_core::encoding::{Coding, ContentEncoding, NotDecoded};
    /// let fields: [&[u8]; 2] = [b"gzip", b" br"];
    /// assert_eq!(ContentEncoding::parse_fields(fields).unwrap().codings(), &[Coding::Gzip, Coding::Br][..]);
    /// assert_eq!(ContentEncoding::parse_fields(["gzip", "gzip", "zstd"]), Err(NotDecoded::TooMany));
    /// assert!(ContentEncoding::parse_fields(None::<&[u8]>).unwrap().is_identity());
    /// ```
    pub fn parse_fields<I>(fields: I) -> Result<Self, NotDecoded>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut encoding = Self::identity();
        for field in fields {
            encoding.push_list(field.as_ref())?;
        }
        Ok(encoding)
    }

    fn push_list(&mut self, value: &[u8]) -> Result<(), NotDecoded> {
        let encoding = self;
        for token in value.split(|&b| b == b',') {
            let token = trim(token);
            let coding = if token.is_empty() || token.eq_ignore_ascii_case(b"identity") {
                continue;
            } else if token.eq_ignore_ascii_case(b"gzip") || token.eq_ignore_ascii_case(b"x-gzip") {
                Coding::Gzip
            } else if token.eq_ignore_ascii_case(b"deflate") {
                Coding::Deflate
            } else if token.eq_ignore_ascii_case(b"br") {
                Coding::Br
            } else if token.eq_ignore_ascii_case(b"zstd") {
                Coding::Zstd
            } else {
                return Err(NotDecoded::Unknown);
            };
            if encoding.len == Self::MAX_CODINGS {
                return Err(NotDecoded::TooMany);
            }
            if !coding.is_built() {
                return Err(NotDecoded::NotBuilt(coding));
            }
            encoding.codings[encoding.len] = coding;
            encoding.len += 1;
        }
        Ok(())
    }

    /// The codings, in the order they were applied.
    ///
    /// ```
    /// assert!(bbr_core::encoding::ContentEncoding::identity().codings().is_empty());
    /// ```
    pub fn codings(&self) -> &[Coding] {
        &self.codings[..self.len]
    }

    /// True when nothing is to be decoded.
    ///
    /// ```
    /// assert!(!bbr_core::encoding::ContentEncoding::parse(b"br").unwrap().is_identity());
    /// ```
    pub fn is_identity(&self) -> bool {
        self.len == 0
    }
}

fn trim(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Bounds on decoding, against decompression bombs.
///
/// | limit | default | exactly at it | one past it | HTTP class |
/// | --- | --- | --- | --- | --- |
/// | [`max_ratio`](Self::max_ratio) | 100 decoded bytes per encoded byte, checked once more than [`ratio_floor`](Self::ratio_floor) (1 MiB) is decoded | accepted | [`ExpansionRatio`](ErrorKind::ExpansionRatio) | 413 `request_too_large` |
/// | [`max_window`](Self::max_window) | 8 MiB (the most RFC 9659 lets a zstd encoder use for HTTP) | accepted | [`DecoderWindow`](ErrorKind::DecoderWindow) | 413 `request_too_large` |
///
/// Decoded bytes also count against [`Limits`](crate::Limits)'
/// `max_scan_bytes` and `max_body_bytes`, as the extractor sees them.
///
/// ```
/// use bbr_core::encoding::DecodeLimits;
/// let limits = DecodeLimits::new().with_max_ratio(20);
/// assert_eq!((limits.max_ratio(), limits.max_window()), (20, 8 << 20));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct DecodeLimits {
    max_ratio: u32,
    ratio_floor: u64,
    max_window: u64,
}

impl DecodeLimits {
    /// Default `max_ratio`: 100. JSON chat bodies compress 5–20 times,
    /// repetitive agent histories rarely past 50; zeros and bombs go from
    /// 1,000 (gzip) to millions (zstd, brotli).
    pub const DEFAULT_MAX_RATIO: u32 = 100;
    /// Default `ratio_floor`: 1 MiB decoded before the ratio is checked
    /// (small bodies compress best, and the scan limit bounds them anyway).
    pub const DEFAULT_RATIO_FLOOR: u64 = 1024 * 1024;
    /// Default `max_window`: 8 MiB.
    pub const DEFAULT_MAX_WINDOW: u64 = 8 * 1024 * 1024;

    /// The defaults above.
    ///
    /// ```
    /// assert_eq!(bbr_core::encoding::DecodeLimits::new(), Default::default());
    /// ```
    pub const fn new() -> Self {
        Self {
            max_ratio: Self::DEFAULT_MAX_RATIO,
            ratio_floor: Self::DEFAULT_RATIO_FLOOR,
            max_window: Self::DEFAULT_MAX_WINDOW,
        }
    }

    /// Most decoded bytes per encoded byte read so far. Exactly this ratio
    /// is accepted; one decoded byte more is `expansion_ratio`.
    ///
    /// ```
    /// assert_eq!(bbr_core::encoding::DecodeLimits::new().with_max_ratio(10).max_ratio(), 10);
    /// ```
    pub const fn with_max_ratio(mut self, ratio: u32) -> Self {
        self.max_ratio = ratio;
        self
    }

    /// Decoded bytes below which the ratio is not checked.
    ///
    /// ```
    /// assert_eq!(bbr_core::encoding::DecodeLimits::new().with_ratio_floor(0).ratio_floor(), 0);
    /// ```
    pub const fn with_ratio_floor(mut self, bytes: u64) -> Self {
        self.ratio_floor = bytes;
        self
    }

    /// Largest decoder window a stream may ask for (zstd's window
    /// descriptor or frame size, brotli's WBITS); gzip and deflate use
    /// 32 KiB. A window of exactly this size is accepted; larger is
    /// `decoder_window`.
    ///
    /// ```
    /// assert_eq!(bbr_core::encoding::DecodeLimits::new().with_max_window(1 << 20).max_window(), 1 << 20);
    /// ```
    pub const fn with_max_window(mut self, bytes: u64) -> Self {
        self.max_window = bytes;
        self
    }

    /// The configured `max_ratio`.
    ///
    /// ```
    /// assert_eq!(bbr_core::encoding::DecodeLimits::new().max_ratio(), 100);
    /// ```
    pub const fn max_ratio(&self) -> u32 {
        self.max_ratio
    }

    /// The configured `ratio_floor`.
    ///
    /// ```
    /// assert_eq!(bbr_core::encoding::DecodeLimits::new().ratio_floor(), 1 << 20);
    /// ```
    pub const fn ratio_floor(&self) -> u64 {
        self.ratio_floor
    }

    /// The configured `max_window`.
    ///
    /// ```
    /// assert_eq!(bbr_core::encoding::DecodeLimits::new().max_window(), 8 << 20);
    /// ```
    pub const fn max_window(&self) -> u64 {
        self.max_window
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes of decoded output produced per decoder step: decoding stops at
/// each such piece to check the limits, so a bomb never gets further.
const PIECE: usize = 32 * 1024;

/// A failure inside one stage, before its offset is known.
#[cfg_attr(
    not(any(feature = "flate2", feature = "brotli", feature = "zstd")),
    allow(dead_code)
)]
#[derive(Debug, Clone, Copy)]
enum StageError {
    Corrupt,
    /// The stream asks for a window over this cap.
    Window(u64),
}

/// One decoding step's result.
#[cfg_attr(
    not(any(feature = "flate2", feature = "brotli", feature = "zstd")),
    allow(dead_code)
)]
struct Step {
    consumed: usize,
    produced: usize,
}

#[derive(Debug)]
enum Stage {
    #[cfg(feature = "flate2")]
    Gzip(Box<gzip::GzipStage>),
    #[cfg(feature = "flate2")]
    Zlib(Box<gzip::ZlibStage>),
    #[cfg(feature = "brotli")]
    Br(Box<brotli::BrotliStage>),
    #[cfg(feature = "zstd")]
    Zstd(Box<zstd::ZstdStage>),
}

impl Stage {
    fn new(coding: Coding, limits: &DecodeLimits) -> Self {
        let _ = limits;
        match coding {
            #[cfg(feature = "flate2")]
            Coding::Gzip => Stage::Gzip(Box::default()),
            #[cfg(feature = "flate2")]
            Coding::Deflate => Stage::Zlib(Box::default()),
            #[cfg(feature = "brotli")]
            Coding::Br => Stage::Br(Box::new(brotli::BrotliStage::new(limits.max_window))),
            #[cfg(feature = "zstd")]
            Coding::Zstd => Stage::Zstd(Box::new(zstd::ZstdStage::new(limits.max_window))),
            #[allow(unreachable_patterns)]
            _ => unreachable!("ContentEncoding::parse refuses codings not built in"),
        }
    }

    fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<Step, StageError> {
        let _ = (&input, &output);
        match self {
            #[cfg(feature = "flate2")]
            Stage::Gzip(stage) => stage.step(input, output),
            #[cfg(feature = "flate2")]
            Stage::Zlib(stage) => stage.step(input, output),
            #[cfg(feature = "brotli")]
            Stage::Br(stage) => stage.step(input, output),
            #[cfg(feature = "zstd")]
            Stage::Zstd(stage) => stage.step(input, output),
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
    }

    /// The input so far ends where a whole stream may end.
    fn at_end(&self) -> bool {
        match self {
            #[cfg(feature = "flate2")]
            Stage::Gzip(stage) => stage.at_end(),
            #[cfg(feature = "flate2")]
            Stage::Zlib(stage) => stage.at_end(),
            #[cfg(feature = "brotli")]
            Stage::Br(stage) => stage.at_end(),
            #[cfg(feature = "zstd")]
            Stage::Zstd(stage) => stage.at_end(),
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
    }
}

#[derive(Debug)]
struct Slot {
    stage: Stage,
    out: Box<[u8]>,
}

/// A streaming decoder for one body: up to two stages, the last applied
/// coding first.
///
/// Memory: per stage a 32 KiB output buffer and the decoder's own state
/// (gzip/deflate: ~45 KiB with the 32 KiB window; brotli and zstd: their
/// window, at most [`DecodeLimits::max_window`], and tables).
///
/// ```
/// use bbr_core::encoding::{ContentEncoding, DecodeLimits, Decoder};
/// use bbr_core::ErrorKind;
/// # #[cfg(feature = "flate2")] {
/// let mut decoder = Decoder::new(ContentEncoding::parse(b"gzip").unwrap(), DecodeLimits::new());
/// let err = decoder.decode(b"not gzip", &mut |_| Ok(true)).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidEncoding);
/// # }
/// ```
#[derive(Debug)]
pub struct Decoder {
    slots: Vec<Slot>,
    limits: DecodeLimits,
    /// Encoded bytes the outermost stage has consumed.
    encoded: u64,
    decoded: u64,
    error: Option<ExtractError>,
}

impl Decoder {
    /// A decoder for `encoding` (identity passes bytes through).
    ///
    /// ```
    /// use bbr_core::encoding::{ContentEncoding, DecodeLimits, Decoder};
    /// let mut decoder = Decoder::new(ContentEncoding::identity(), DecodeLimits::new());
    /// let mut out = Vec::new();
    /// decoder.decode(b"{}", &mut |piece| { out.extend_from_slice(piece); Ok(true) }).unwrap();
    /// assert_eq!(out, b"{}");
    /// ```
    pub fn new(encoding: ContentEncoding, limits: DecodeLimits) -> Self {
        let slots = encoding
            .codings()
            .iter()
            .rev()
            .map(|&coding| Slot {
                stage: Stage::new(coding, &limits),
                out: vec![0; PIECE].into_boxed_slice(),
            })
            .collect();
        Self {
            slots,
            limits,
            encoded: 0,
            decoded: 0,
            error: None,
        }
    }

    /// Decodes `input`, handing each decoded piece (at most 32 KiB) to
    /// `sink`, in order. `sink` returns `Ok(false)` to stop decoding (the
    /// rest of `input` is then not decoded), or an error, which is
    /// returned. Decoding errors carry the number of encoded bytes read
    /// when they were found. Errors are sticky.
    ///
    /// ```
    /// use bbr_core::encoding::{ContentEncoding, DecodeLimits, Decoder};
    /// let mut decoder = Decoder::new(ContentEncoding::identity(), DecodeLimits::new());
    /// let mut pieces = 0;
    /// decoder.decode(b"abc", &mut |_| { pieces += 1; Ok(false) }).unwrap();
    /// assert_eq!(pieces, 1);
    /// ```
    pub fn decode(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<bool, ExtractError>,
    ) -> Result<(), ExtractError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let result = self.decode_inner(input, sink);
        if let Err(error) = &result {
            self.error = Some(error.clone());
        }
        result.map(|_| ())
    }

    fn decode_inner(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<bool, ExtractError>,
    ) -> Result<bool, ExtractError> {
        let limits = self.limits;
        let encoded = &mut self.encoded;
        let decoded = &mut self.decoded;
        let mut checked = |piece: &[u8], encoded: u64| -> Result<bool, ExtractError> {
            *decoded += piece.len() as u64;
            let allowed = encoded.saturating_mul(u64::from(limits.max_ratio));
            if *decoded > limits.ratio_floor && *decoded > allowed {
                return Err(ExtractError::new(
                    ErrorKind::ExpansionRatio {
                        limit: limits.max_ratio,
                    },
                    encoded,
                ));
            }
            sink(piece)
        };
        if self.slots.is_empty() {
            *encoded += input.len() as u64;
            return checked(input, *encoded);
        }
        pump(&mut self.slots, input, encoded, true, &mut checked)
    }

    /// Ends the body: an error if the encoded stream is incomplete
    /// (truncated, or no stream at all), [`ErrorKind::InvalidEncoding`] at
    /// the encoded length.
    ///
    /// ```
    /// use bbr_core::encoding::{ContentEncoding, DecodeLimits, Decoder};
    /// # #[cfg(feature = "zstd")] {
    /// let mut decoder = Decoder::new(ContentEncoding::parse(b"zstd").unwrap(), DecodeLimits::new());
    /// decoder.decode(&[0x28, 0xb5, 0x2f, 0xfd], &mut |_| Ok(true)).unwrap();
    /// assert_eq!(decoder.finish().unwrap_err().offset(), 4);
    /// # }
    /// ```
    pub fn finish(&mut self) -> Result<(), ExtractError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        if self.slots.iter().all(|slot| slot.stage.at_end()) {
            return Ok(());
        }
        let error = ExtractError::new(ErrorKind::InvalidEncoding, self.encoded);
        self.error = Some(error.clone());
        Err(error)
    }

    /// Decoded bytes handed out so far.
    ///
    /// ```
    /// use bbr_core::encoding::{ContentEncoding, DecodeLimits, Decoder};
    /// let decoder = Decoder::new(ContentEncoding::identity(), DecodeLimits::new());
    /// assert_eq!(decoder.decoded_bytes(), 0);
    /// ```
    pub fn decoded_bytes(&self) -> u64 {
        self.decoded
    }

    /// Encoded bytes the decoder has read so far.
    ///
    /// ```
    /// use bbr_core::encoding::{ContentEncoding, DecodeLimits, Decoder};
    /// let mut decoder = Decoder::new(ContentEncoding::identity(), DecodeLimits::new());
    /// decoder.decode(b"abc", &mut |_| Ok(true)).unwrap();
    /// assert_eq!(decoder.encoded_bytes(), 3);
    /// ```
    pub fn encoded_bytes(&self) -> u64 {
        self.encoded
    }
}

/// Where decoded pieces go, with the encoded bytes read so far.
type Sink<'a> = dyn FnMut(&[u8], u64) -> Result<bool, ExtractError> + 'a;

/// Runs `input` through the first stage and its output through the rest.
/// Returns `Ok(false)` when the sink asked to stop.
fn pump(
    slots: &mut [Slot],
    input: &[u8],
    encoded: &mut u64,
    outermost: bool,
    sink: &mut Sink<'_>,
) -> Result<bool, ExtractError> {
    let Some((first, rest)) = slots.split_first_mut() else {
        return sink(input, *encoded);
    };
    let mut i = 0;
    loop {
        let remaining = input.len() - i;
        let step = first
            .stage
            .step(&input[i..], &mut first.out)
            .map_err(|error| {
                let kind = match error {
                    StageError::Corrupt => ErrorKind::InvalidEncoding,
                    StageError::Window(limit) => ErrorKind::DecoderWindow { limit },
                };
                ExtractError::new(kind, *encoded)
            })?;
        if step.consumed == 0 && step.produced == 0 && remaining > 0 {
            // A decoder given input and a whole output buffer always moves.
            return Err(ExtractError::new(ErrorKind::InvalidEncoding, *encoded));
        }
        i += step.consumed;
        if outermost {
            *encoded += step.consumed as u64;
        }
        if step.produced > 0 && !pump(rest, &first.out[..step.produced], encoded, false, sink)? {
            return Ok(false);
        }
        if step.consumed == 0 && step.produced == 0 {
            return Ok(true);
        }
    }
}

#[cfg(feature = "flate2")]
mod gzip {
    //! gzip (RFC 1952) and zlib (RFC 1950) on flate2's raw inflater.

    use flate2::{Crc, Decompress, FlushDecompress, Status};

    use super::{StageError, Step};

    /// zlib: flate2 checks the header and the Adler-32 trailer.
    #[derive(Debug)]
    pub(super) struct ZlibStage {
        inflate: Decompress,
        ended: bool,
    }

    impl Default for ZlibStage {
        fn default() -> Self {
            Self {
                inflate: Decompress::new(true),
                ended: false,
            }
        }
    }

    impl ZlibStage {
        pub(super) fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<Step, StageError> {
            if self.ended {
                // Nothing may follow the stream.
                return if input.is_empty() {
                    Ok(Step {
                        consumed: 0,
                        produced: 0,
                    })
                } else {
                    Err(StageError::Corrupt)
                };
            }
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self
                .inflate
                .decompress(input, output, FlushDecompress::None)
                .map_err(|_| StageError::Corrupt)?;
            self.ended = status == Status::StreamEnd;
            Ok(Step {
                consumed: (self.inflate.total_in() - in_before) as usize,
                produced: (self.inflate.total_out() - out_before) as usize,
            })
        }

        pub(super) fn at_end(&self) -> bool {
            self.ended
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Header {
        /// The fixed 10 bytes, `n` read.
        Fixed(u8),
        /// FEXTRA's length, `n` bytes read.
        ExtraLen(u8),
        /// FEXTRA's data, this many bytes left.
        Extra(u16),
        /// FNAME, up to its NUL.
        Name,
        /// FCOMMENT, up to its NUL.
        Comment,
        /// FHCRC, `n` bytes read.
        Crc(u8),
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Member {
        /// Between members (before the first, or after a trailer).
        Between,
        Header(Header),
        Deflate,
        /// The CRC-32 and ISIZE, `n` bytes read.
        Trailer(u8),
    }

    /// gzip members, concatenated; header fields skipped, CRC-32 and
    /// length checked.
    #[derive(Debug)]
    pub(super) struct GzipStage {
        inflate: Decompress,
        crc: Crc,
        member: Member,
        members: u32,
        flags: u8,
        extra_len: u16,
        fixed: [u8; 10],
        trailer: [u8; 8],
    }

    impl Default for GzipStage {
        fn default() -> Self {
            Self {
                inflate: Decompress::new(false),
                crc: Crc::new(),
                member: Member::Between,
                members: 0,
                flags: 0,
                extra_len: 0,
                fixed: [0; 10],
                trailer: [0; 8],
            }
        }
    }

    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;

    impl GzipStage {
        pub(super) fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<Step, StageError> {
            let mut i = 0;
            // Header and trailer bytes are taken here; deflate data returns
            // with its output (also with no input: the inflater may hold
            // output that did not fit the last buffer).
            loop {
                if self.member == Member::Deflate {
                    let (in_before, out_before) =
                        (self.inflate.total_in(), self.inflate.total_out());
                    let status = self
                        .inflate
                        .decompress(&input[i..], output, FlushDecompress::None)
                        .map_err(|_| StageError::Corrupt)?;
                    let consumed = (self.inflate.total_in() - in_before) as usize;
                    let produced = (self.inflate.total_out() - out_before) as usize;
                    self.crc.update(&output[..produced]);
                    if status == Status::StreamEnd {
                        self.member = Member::Trailer(0);
                        if consumed == 0 && produced == 0 {
                            // The end was only reported now: go on with the trailer.
                            continue;
                        }
                    }
                    return Ok(Step {
                        consumed: i + consumed,
                        produced,
                    });
                }
                let Some(&b) = input.get(i) else {
                    return Ok(Step {
                        consumed: i,
                        produced: 0,
                    });
                };
                i += 1;
                self.member = match self.member {
                    Member::Between => self.header_byte(Header::Fixed(0), b)?,
                    Member::Header(header) => self.header_byte(header, b)?,
                    Member::Trailer(n) => self.trailer_byte(n, b)?,
                    Member::Deflate => unreachable!("handled above"),
                };
            }
        }

        fn header_byte(&mut self, header: Header, b: u8) -> Result<Member, StageError> {
            Ok(match header {
                Header::Fixed(n) => {
                    self.fixed[n as usize] = b;
                    let ok = match n {
                        0 => b == 0x1f,
                        1 => b == 0x8b,
                        2 => b == 8,        // deflate
                        3 => b & 0xe0 == 0, // reserved flags
                        _ => true,
                    };
                    if !ok {
                        return Err(StageError::Corrupt);
                    }
                    if n < 9 {
                        return Ok(Member::Header(Header::Fixed(n + 1)));
                    }
                    self.flags = self.fixed[3];
                    self.next_field(FEXTRA)
                }
                Header::ExtraLen(0) => {
                    self.extra_len = u16::from(b);
                    Member::Header(Header::ExtraLen(1))
                }
                Header::ExtraLen(_) => {
                    self.extra_len |= u16::from(b) << 8;
                    match self.extra_len {
                        0 => self.next_field(FNAME),
                        len => Member::Header(Header::Extra(len)),
                    }
                }
                Header::Extra(1) => self.next_field(FNAME),
                Header::Extra(left) => Member::Header(Header::Extra(left - 1)),
                Header::Name if b == 0 => self.next_field(FCOMMENT),
                Header::Comment if b == 0 => self.next_field(FHCRC),
                Header::Name | Header::Comment => Member::Header(header),
                Header::Crc(0) => Member::Header(Header::Crc(1)),
                Header::Crc(_) => Member::Deflate,
            })
        }

        /// The first optional header field from `from` on (in the order
        /// of RFC 1952: extra, name, comment, header CRC) that the flags
        /// announce, else the deflate data.
        fn next_field(&self, from: u8) -> Member {
            // The flag bits do not follow the field order: FHCRC is lowest.
            let order = |flag: u8| match flag {
                FEXTRA => 0,
                FNAME => 1,
                FCOMMENT => 2,
                _ => 3,
            };
            let from_rank = order(from);
            let wants = |flag: u8| order(flag) >= from_rank && self.flags & flag != 0;
            if wants(FEXTRA) {
                Member::Header(Header::ExtraLen(0))
            } else if wants(FNAME) {
                Member::Header(Header::Name)
            } else if wants(FCOMMENT) {
                Member::Header(Header::Comment)
            } else if wants(FHCRC) {
                Member::Header(Header::Crc(0))
            } else {
                Member::Deflate
            }
        }

        fn trailer_byte(&mut self, n: u8, b: u8) -> Result<Member, StageError> {
            self.trailer[n as usize] = b;
            if n < 7 {
                return Ok(Member::Trailer(n + 1));
            }
            let crc = u32::from_le_bytes([
                self.trailer[0],
                self.trailer[1],
                self.trailer[2],
                self.trailer[3],
            ]);
            let size = u32::from_le_bytes([
                self.trailer[4],
                self.trailer[5],
                self.trailer[6],
                self.trailer[7],
            ]);
            if crc != self.crc.sum() || size != self.crc.amount() {
                return Err(StageError::Corrupt);
            }
            self.members += 1;
            self.crc.reset();
            self.inflate.reset(false);
            Ok(Member::Between)
        }

        pub(super) fn at_end(&self) -> bool {
            self.member == Member::Between && self.members > 0
        }
    }
}

#[cfg(feature = "brotli")]
mod brotli {
    //! Brotli (RFC 7932) on brotli-decompressor (pure Rust).

    use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};

    use super::{StageError, Step};

    pub(super) struct BrotliStage {
        state: BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
        pub(super) max_window: u64,
        checked_window: bool,
        finished: bool,
    }

    impl std::fmt::Debug for BrotliStage {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("BrotliStage")
                .field("max_window", &self.max_window)
                .field("finished", &self.finished)
                .finish_non_exhaustive()
        }
    }

    /// The window a brotli stream declares in its first byte (RFC 7932
    /// section 9.1), or None for the non-standard large-window flag.
    fn declared_window(first: u8) -> Option<u64> {
        let wbits = if first & 1 == 0 {
            16
        } else if (first >> 1) & 7 != 0 {
            17 + u32::from((first >> 1) & 7)
        } else {
            match (first >> 4) & 7 {
                0 => 17,
                1 => return None,
                m => 8 + u32::from(m),
            }
        };
        Some((1u64 << wbits) - 16)
    }

    impl BrotliStage {
        pub(super) fn new(max_window: u64) -> Self {
            Self {
                state: BrotliState::new_strict(
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                ),
                max_window,
                checked_window: false,
                finished: false,
            }
        }

        pub(super) fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<Step, StageError> {
            if !self.checked_window && !input.is_empty() {
                match declared_window(input[0]) {
                    Some(window) if window <= self.max_window => self.checked_window = true,
                    _ => return Err(StageError::Window(self.max_window)),
                }
            }
            if self.finished {
                return if input.is_empty() {
                    Ok(Step {
                        consumed: 0,
                        produced: 0,
                    })
                } else {
                    Err(StageError::Corrupt)
                };
            }
            let (mut available_in, mut input_offset) = (input.len(), 0);
            let (mut available_out, mut output_offset, mut total_out) = (output.len(), 0, 0);
            let result = BrotliDecompressStream(
                &mut available_in,
                &mut input_offset,
                input,
                &mut available_out,
                &mut output_offset,
                output,
                &mut total_out,
                &mut self.state,
            );
            match result {
                BrotliResult::ResultFailure => return Err(StageError::Corrupt),
                BrotliResult::ResultSuccess => self.finished = true,
                BrotliResult::NeedsMoreInput | BrotliResult::NeedsMoreOutput => {}
            }
            Ok(Step {
                consumed: input_offset,
                produced: output_offset,
            })
        }

        pub(super) fn at_end(&self) -> bool {
            self.finished
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn declared_windows() {
            // WBITS 16 .. 24 and the large-window escape.
            assert_eq!(super::declared_window(0x00), Some((1 << 16) - 16));
            assert_eq!(super::declared_window(0x0b), Some((1 << 22) - 16));
            assert_eq!(super::declared_window(0x0f), Some((1 << 24) - 16));
            assert_eq!(super::declared_window(0x01), Some((1 << 17) - 16));
            assert_eq!(super::declared_window(0x21), Some((1 << 10) - 16));
            assert_eq!(super::declared_window(0x11), None);
        }
    }
}

#[cfg(feature = "zstd")]
mod zstd {
    //! Zstandard (RFC 8878) on libzstd through zstd-safe.

    use zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};

    use super::{StageError, Step};

    pub(super) struct ZstdStage {
        context: DCtx<'static>,
        pub(super) max_window: u64,
        /// Inside a frame (input read since the last frame ended).
        in_frame: bool,
        frames: u64,
    }

    impl std::fmt::Debug for ZstdStage {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ZstdStage")
                .field("max_window", &self.max_window)
                .field("in_frame", &self.in_frame)
                .finish_non_exhaustive()
        }
    }

    impl ZstdStage {
        pub(super) fn new(max_window: u64) -> Self {
            let mut context = DCtx::create();
            // The largest power of two within the cap (zstd windows
            // beyond the descriptor's are refused by libzstd as well).
            let log = 63 - max_window.max(1 << 10).leading_zeros();
            context
                .set_parameter(DParameter::WindowLogMax(log))
                .expect("a window log between 10 and 63 is accepted");
            Self {
                context,
                max_window,
                in_frame: false,
                frames: 0,
            }
        }

        pub(super) fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<Step, StageError> {
            let mut in_buffer = InBuffer::around(input);
            let mut out_buffer = OutBuffer::around(output);
            let result = self
                .context
                .decompress_stream(&mut out_buffer, &mut in_buffer);
            let (consumed, produced) = (in_buffer.pos(), out_buffer.pos());
            match result {
                Err(code) => {
                    return Err(
                        if zstd_safe::get_error_name(code)
                            == "Frame requires too much memory for decoding"
                        {
                            StageError::Window(self.max_window)
                        } else {
                            StageError::Corrupt
                        },
                    );
                }
                Ok(0) if consumed > 0 || self.in_frame => {
                    self.in_frame = false;
                    self.frames += 1;
                }
                Ok(_) => self.in_frame |= consumed > 0,
            }
            Ok(Step { consumed, produced })
        }

        pub(super) fn at_end(&self) -> bool {
            !self.in_frame && self.frames > 0
        }
    }
}
