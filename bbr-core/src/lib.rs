//! Incremental, zero-copy extraction of the top-level `model` from JSON
//! request bodies fed chunk by chunk; also from `multipart/form-data`
//! uploads and compressed bodies ([`BodyExtractor`]).
//!
//! OpenAI-style clients name the model in the body (`{"model": "food-review-1",
//! ...}`). A gateway that routes on it must read the body while it streams
//! through, decide as early as possible, and never disagree with the model
//! server about which model was asked for. This crate does that part and
//! knows only bytes: [`ModelExtractor`] takes [`bytes::Bytes`] chunks of any
//! size (down to one byte) and gives a [`Model`] or a typed
//! [`ExtractError`]; [`extract_model`] does the same for a whole buffer.
//! The answer never depends on where the chunk boundaries fall.
//!
//! ```
//! use bbr_core::{ErrorKind, Limits, ModelExtractor, Outcome, Progress};
//! use bytes::Bytes;
//!
//! let chunks = [
//!     Bytes::from_static(br#"{"messages":[{"role":"user","model":"nested, ignored"}],"mo"#),
//!     Bytes::from_static(br#"del":"food-review-1","stream":true"#),
//!     Bytes::from_static(b"}\n"),
//! ];
//! let mut extractor = ModelExtractor::new(Limits::new());
//! assert_eq!(extractor.feed(&chunks[0]).unwrap(), Progress::NeedMore);
//! // The model is known as soon as its value is complete...
//! let Progress::Found(model) = extractor.feed(&chunks[1]).unwrap() else { panic!() };
//! assert_eq!(model.as_str(), "food-review-1");
//! assert!(model.is_shared()); // a slice of chunks[1], no copy
//! // ...and the rest of the body is still validated as it streams through.
//! assert_eq!(extractor.feed(&chunks[2]).unwrap(), Progress::Decided);
//! assert_eq!(extractor.finish().unwrap(), Outcome::Found(model));
//!
//! // Errors carry their kind and the absolute byte offset.
//! let mut extractor = ModelExtractor::new(Limits::new());
//! let err = extractor.feed(&Bytes::from_static(br#"{"model":42}"#)).unwrap_err();
//! assert_eq!((err.kind(), err.offset()), (ErrorKind::ModelNotAString, 9));
//! assert_eq!(err.kind().class().code(), "invalid_model");
//! ```
//!
//! # What "top-level `model`" means
//!
//! The body must be one JSON object (RFC 8259), with optional JSON
//! whitespace (space, tab, CR, LF) before and after it. Only a key of that
//! root object (depth 1) counts; `model` keys anywhere deeper (inside
//! `messages`, tool schemas, ...) are validated and ignored. Keys are
//! compared after unescaping, so `"mod\u0065l"` is `model`; the comparison
//! is exact and case-sensitive (`Model` and `model2` are other keys).
//!
//! The key is `model` unless [`Limits::with_field`] names another one
//! (like the upstream `body-field-to-header` plugin's `fieldName`); every
//! rule below applies to that key instead.
//!
//! # What a model name is
//!
//! One rule, here, for every adapter (the routing header, the base-model
//! lookup and the logs all see the same name):
//!
//! 1. The value is a JSON string; it is unescaped (`"a\u0062"` is `ab`).
//! 2. Leading and trailing ASCII spaces and tabs of the unescaped value are
//!    trimmed: `" food-review-1\t"` is `food-review-1`. The found [`Model`]
//!    is the trimmed name, still a slice of the chunk when the value has no
//!    escape and lies in one chunk (no copy).
//! 3. Nothing left (`""`, `"  "`, `"\t"`) is [`ErrorKind::EmptyModel`].
//! 4. A control character anywhere in what is left is
//!    [`ErrorKind::ModelControlChar`]: C0 (U+0000–U+001F, including a tab
//!    inside the name, CR, LF, NUL), DEL (U+007F) and C1 (U+0080–U+009F),
//!    raw or escaped. None of them is safe in an HTTP header value.
//! 5. At most [`Limits::max_model_len`] bytes of UTF-8 after unescaping,
//!    counted before trimming (the bound is on what is held while the value
//!    streams in), else [`ErrorKind::ModelTooLong`].
//! 6. Anything but a string ([`ErrorKind::ModelNotAString`]: `null`,
//!    numbers, booleans, objects, arrays).
//!
//! Problems are reported in stream order: a name too long before its
//! control character is `model_too_long`, and a tab is known to be inside
//! the name (an error at its offset) only when more text follows it.
//! Other Unicode (spaces such as U+00A0 or U+2028, format characters) is
//! kept as sent: it is valid in a header value as UTF-8 bytes, and the
//! model server sees the same string.
//!
//! # Duplicate keys
//!
//! The gateway and the model server must never disagree on the model, and
//! JSON parsers disagree on duplicate keys, so [`DuplicateKeys`] is explicit:
//!
//! | policy | decides | reads after the decision |
//! | --- | --- | --- |
//! | [`Reject`](DuplicateKeys::Reject) (default) | on the first top-level `model` | everything, validating it without holding it: invalid JSON or a second top-level `model` ([`ErrorKind::DuplicateModel`]) is an error |
//! | [`FirstWins`](DuplicateKeys::FirstWins) | on the first top-level `model` | nothing: later bytes are only counted against the body limit |
//! | [`LastWins`](DuplicateKeys::LastWins) | at [`ModelExtractor::finish`], on the last top-level `model` (like Go's and Python's decoders) | — (the whole body is validated before the decision) |
//!
//! Under last-wins only the last `model` value counts: an earlier invalid one
//! (say `"model":1`) is forgotten when a later valid one follows, as a
//! decoder into a map would do. Under reject and first-wins, the first
//! `model` value decides, and an invalid one is the error at once.
//!
//! # Escapes and validation
//!
//! Every string in the body (keys and values, at any depth) is validated
//! while it is skipped: the escapes `\" \\ \/ \b \f \n \r \t \uXXXX`, with
//! UTF-16 surrogate pairs joined (`"\ud83d\ude00"` is one character); a
//! lone or mismatched surrogate is [`ErrorKind::InvalidEscape`]. Raw bytes
//! must be UTF-8 ([`ErrorKind::InvalidUtf8`], same rules as
//! [`std::str::from_utf8`]: no overlongs, no encoded surrogates) and raw
//! control characters below 0x20 are [`ErrorKind::InvalidJson`]. Numbers
//! follow the RFC 8259 grammar (no leading zeros, digits after `.` and
//! `e`); their range is not checked (serde_json refuses `1e400`, this crate
//! accepts it, as RFC 8259 allows). `true`, `false` and `null` are matched
//! exactly. A byte order mark, a second value or anything but whitespace
//! after the root object is [`ErrorKind::InvalidJson`] (as in serde_json).
//! A top-level value that starts like another JSON value (`[`, `"`, a digit,
//! `-`, `t`, `f`, `n`) is [`ErrorKind::NotAnObject`]; any other first byte
//! is [`ErrorKind::InvalidJson`]; an empty or all-whitespace body is
//! [`ErrorKind::UnexpectedEnd`].
//!
//! The parser is a state machine with an explicit depth counter and a bit
//! stack of open containers, never recursion: a body of a million `[` is
//! refused with [`ErrorKind::TooDeep`] at the 128th level (the root object
//! is depth 1) without growing the call stack.
//!
//! # How much input is read
//!
//! The decision is made by the byte that completes it: the closing quote of
//! the top-level `model` value ([`Progress::Found`]), or the closing brace
//! of the root object when there is no `model` ([`Progress::Absent`]).
//! Under first-wins nothing after that byte is parsed. Under reject the rest
//! is parsed as it is fed (the adapters feed every chunk they forward) and
//! [`ModelExtractor::finish`] reports a truncated body. Under last-wins
//! every byte is parsed before [`ModelExtractor::finish`] decides.
//! [`ModelExtractor::bytes_consumed`] counts every byte fed.
//!
//! # When a copy happens
//!
//! A model without escapes that lies within one chunk is a slice of that
//! chunk ([`Model::is_shared`] is true; `Bytes::slice`, a reference count,
//! no allocation for shared `Bytes`). A model split across chunks, or with
//! an escape, is unescaped into one owned buffer of at most `max_model_len`
//! bytes. Nothing else is kept: chunks are never concatenated or retained;
//! the only input the extractor holds after `feed` returns is the found
//! model itself (a slice of its chunk, until [`ModelExtractor::finish`]
//! hands it out) and at most three bytes of a UTF-8 sequence cut by a chunk
//! boundary (as decoder state). An extraction with a shared model does no
//! heap allocation at all (the `allocations` test counts them).
//!
//! # Limits
//!
//! | limit | default | exactly at it | one past it | HTTP class |
//! | --- | --- | --- | --- | --- |
//! | [`max_model_len`](Limits::max_model_len) | 256 bytes (after unescaping) | found | [`ModelTooLong`](ErrorKind::ModelTooLong) | 400 `invalid_model` |
//! | [`max_depth`](Limits::max_depth) | 128 (root object = 1) | accepted | [`TooDeep`](ErrorKind::TooDeep) | 400 `invalid_json` |
//! | [`max_scan_bytes`](Limits::max_scan_bytes) | 32 MiB before a decision (last-wins: the whole body) | decided | [`ScanLimit`](ErrorKind::ScanLimit) | 413 `request_too_large` |
//! | [`max_body_bytes`](Limits::max_body_bytes) | 128 MiB, every policy, also after a decision | accepted | [`BodyTooLarge`](ErrorKind::BodyTooLarge) | 413 `request_too_large` |
//!
//! When the scan and body limits are passed at the same byte, the error is
//! [`ErrorKind::BodyTooLarge`].
//!
//! # Error offsets
//!
//! [`ExtractError::offset`] is absolute in the body. Errors are found in
//! byte order, so the first error of a body is reported whatever the
//! chunking, and it is sticky: every later `feed` and `finish` returns it.
//!
//! | kind | offset |
//! | --- | --- |
//! | `invalid_json`, `not_an_object` | the offending byte |
//! | `invalid_escape` | the backslash that starts the escape (the high half's, for a surrogate pair) |
//! | `invalid_utf8` | the first byte of the invalid sequence |
//! | `unexpected_end` | the body length |
//! | `too_deep` | the bracket that opens one level too many |
//! | `model_not_a_string` | the first byte of the value |
//! | `empty_model`, `model_too_long` | the opening quote of the value (also when only spaces were sent) |
//! | `model_control_char` | the control byte (the lead byte of a raw C1 character), the backslash of its escape, or for a tab inside the name that tab |
//! | `duplicate_model` | the opening quote of the second `model` key |
//! | `scan_limit`, `body_too_large` | the limit (the first byte past it) |
//!
//! # multipart/form-data
//!
//! Uploads (`/v1/audio/transcriptions`, `/v1/images/edits`) name the model
//! in a form field. [`multipart::MultipartExtractor`] reads it with the same
//! interface, policies, limits and offsets as [`ModelExtractor`], streaming:
//!
//! - The boundary comes from the `Content-Type` value
//!   ([`multipart::Boundary::from_content_type`]: media type
//!   `multipart/form-data`, case-insensitive; `boundary` quoted or not;
//!   1–70 bytes of printable ASCII, as RFC 2046 allows). Without a usable
//!   one the body is [`ErrorKind::InvalidMultipart`] at 0.
//! - The body is a preamble (ignored), delimiters `--boundary` (the first
//!   may open the body; later ones follow a CRLF), transport padding and a
//!   CRLF, then each part's header lines (CRLF-terminated, `name: value`,
//!   no folding), an empty line and the content; `--boundary--` closes the
//!   form and the epilogue after it is ignored.
//! - A part needs one `Content-Disposition: form-data; name=...` (quoted or
//!   token, quoted pairs undone; two `name`s, a `name*`, or two such
//!   headers are refused, because the model server could read them
//!   differently). The field whose name is exactly `model` is the model;
//!   its content (up to the CRLF before the next delimiter) is checked by
//!   [`validate_model_name`], the rules of a JSON `model` string (see
//!   "What a model name is": spaces and tabs around it trimmed, UTF-8, no
//!   control characters, not empty, at most `max_model_len` bytes). With
//!   [`Limits::with_field`] the form field of that name is read instead. A
//!   `model` part with a `filename` is [`ErrorKind::ModelNotAString`].
//!   Other parts, files included, are skipped as they stream: the
//!   delimiter search (memchr's `memmem`) carries at most the delimiter's
//!   length across a chunk end, and nothing of a file is held.
//! - The decision is made by the last byte of the delimiter that ends the
//!   `model` value (found), or by the `--` of the close delimiter (absent),
//!   wherever the field is in the form. Under reject the rest is still
//!   parsed: a second `model` field ([`ErrorKind::DuplicateModel`], at the
//!   start of its `Content-Disposition` line), malformed framing
//!   ([`ErrorKind::InvalidMultipart`], at the offending byte) and a body
//!   that ends before the close delimiter ([`ErrorKind::UnexpectedEnd`] at
//!   the body length, from `finish`) are errors. First-wins stops reading
//!   at the decision; last-wins decides at `finish` on the last `model`.
//! - The model is a slice of the chunk when its value lies within one
//!   chunk (not cut by the chunk end, nor followed by a partial delimiter
//!   at it), otherwise one copy of at most `max_model_len` bytes.
//!
//! | limit ([`multipart::PartLimits`]) | default | exactly at it | one past it | HTTP class |
//! | --- | --- | --- | --- | --- |
//! | `max_header_bytes` | 8 KiB per part (header lines, CRLFs, the empty line) | accepted | [`PartHeadersTooLarge`](ErrorKind::PartHeadersTooLarge), at the first byte past it | 400 `invalid_json` |
//! | `max_headers` | 16 lines per part | accepted | [`TooManyPartHeaders`](ErrorKind::TooManyPartHeaders), at the line | 400 `invalid_json` |
//!
//! [`Limits`] apply as to JSON: `max_scan_bytes` before the decision,
//! `max_body_bytes` always. Part header limits are structural, like
//! `max_depth`, so they answer 400; size limits answer 413.
//!
//! # Compressed bodies
//!
//! A body with `Content-Encoding: gzip`, `deflate`, `br` or `zstd`, or a
//! list of two (`gzip, br`: decoded in reverse order, `br` first), is
//! decoded chunk by chunk into the extractor ([`encoding::Decoder`]);
//! the adapter forwards the original compressed bytes. The core takes the
//! encoding as a value parsed from the header's bytes
//! ([`encoding::ContentEncoding::parse`]: case-insensitive tokens,
//! `identity` and empty elements skipped, `x-gzip` is `gzip`).
//!
//! - An encoding that is not decoded (an unknown token, more than two, or
//!   a coding whose feature is off) is [`BodyKind::NotDecoded`]: the body
//!   is not read and counts as one without a model, so the adapter
//!   forwards it unrouted or applies its missing-model refusal — never a
//!   400 for what may be valid traffic.
//! - Decoded bytes count against `max_scan_bytes` and `max_body_bytes`
//!   (the extractor sees the decoded body); raw bytes count against
//!   `max_body_bytes` too.
//! - Bombs: decoding stops at every 32 KiB of output to check the
//!   expansion ratio (decoded over encoded bytes read, default at most
//!   100 once more than 1 MiB is decoded) and a stream's declared window
//!   (zstd's window descriptor or frame size, brotli's WBITS) is checked
//!   against a cap (default 8 MiB, what RFC 9659 lets zstd encoders use
//!   for HTTP; brotli's largest standard window, 16 MiB, needs the cap
//!   raised). Over either: 413 ([`ErrorKind::ExpansionRatio`],
//!   [`ErrorKind::DecoderWindow`]). A gibibyte of zeros in a few KiB stops
//!   after ~1 MiB of decoding, in every coding.
//! - A corrupt or truncated stream (bad header, bad data, a checksum or
//!   length mismatch, bytes after the end of a zlib or brotli stream, a
//!   stream that ends early) is [`ErrorKind::InvalidEncoding`], class
//!   `invalid_json` (400: the body is not the JSON it claims to be),
//!   at the count of encoded bytes read when it was found. gzip members and
//!   zstd frames may be concatenated.
//! - Offsets of extraction errors are in the decoded body.
//! - Under first-wins decoding stops at the decision; under reject the
//!   whole stream is decoded and checked, like a plain body.
//!
//! | limit ([`encoding::DecodeLimits`]) | default | exactly at it | one past it | HTTP class |
//! | --- | --- | --- | --- | --- |
//! | `max_ratio` (above `ratio_floor`, 1 MiB decoded) | 100 | accepted | [`ExpansionRatio`](ErrorKind::ExpansionRatio) | 413 `request_too_large` |
//! | `max_window` | 8 MiB | accepted | [`DecoderWindow`](ErrorKind::DecoderWindow) | 413 `request_too_large` |
//!
//! Decoders, each behind its own cargo feature (all on by default):
//! `flate2` (gzip and deflate on miniz_oxide, pure Rust; the gzip framing,
//! CRC-32 and length check are ours, on flate2's raw inflater), `brotli`
//! (brotli-decompressor, pure Rust), `zstd` (libzstd, C, through
//! zstd-safe). For zstd the pure-Rust ruzstd was measured beside libzstd
//! (the `body` benchmark, `decode_only_*` rows): libzstd decodes the
//! 8 MiB chat body in 35 ms, ruzstd in 161 ms (4.6 times slower), and ruzstd's push interface
//! needs whole 128 KiB blocks buffered before it makes progress, where
//! libzstd takes any chunk; libzstd also enforces the window cap itself
//! (`ZSTD_d_windowLogMax`) before allocating. Memory per decoded body:
//! 32 KiB of output buffer per coding plus the decoder's state (gzip and
//! deflate ~45 KiB; brotli and zstd up to their window, at most the cap).
//!
//! Measured with `BBR_BENCH_QUICK=1 cargo bench -p bbr-benches --bench
//! body` on the shared 2-core machine (busy with other builds: absolute
//! numbers are low, ratios hold), against decoding the whole body and
//! then serde_json into a struct, what peers do:
//!
//! | body | bbr first-wins | bbr reject (all decoded and checked) | decode, then serde_json |
//! | --- | --- | --- | --- |
//! | gzip, 8 MiB chat, model first | 0.33 ms | 143 ms | 144 ms |
//! | gzip, 8 MiB chat, model last | 139 ms | 140 ms | 167 ms (decoding alone: 134 ms) |
//! | zstd, 8 MiB chat, model first | 0.51 ms | 39 ms | 42 ms |
//! | zstd, 8 MiB chat, model last | 36 ms | 35 ms | 41 ms (decoding alone: 35 ms) |
//! | form, `model` then a 16 MiB file | 2.2 µs | 1.3 ms (11.6 GiB/s) | multer: 32 ms |
//! | form, a 16 MiB file then `model` | 1.6 ms (9.7 GiB/s) | 2.6 ms (5.9 GiB/s) | multer: 75 ms |
//!
//! With a compressed body the decoder is the cost and extraction adds
//! nothing measurable; the gain is the early decision and never holding
//! the decoded body. Inflate (miniz_oxide) is the slowest part; flate2's
//! `zlib-rs` backend (also pure Rust) is the next thing to measure.
//!
//! # One entry point for adapters
//!
//! [`BodyExtractor::for_headers`]`(content_types, content_encodings, limits)`
//! takes the values of every `Content-Type` and every `Content-Encoding`
//! field of the request, as bytes or `str` (an http `HeaderMap`'s
//! `get_all(..)` as it is, or a filtered list of Envoy's header entries),
//! and returns one type for every body: JSON, `multipart/form-data`,
//! compressed or not, or not decoded. Which fields count is decided there,
//! once: the first `Content-Type`, every `Content-Encoding` as one list in
//! field order. [`BodyExtractor::for_content`] is the same for at most one
//! field of each. Adapters call [`feed`](BodyExtractor::feed) with every
//! chunk they forward and [`finish`](BodyExtractor::finish) at the end,
//! exactly as with [`ModelExtractor`], and map errors with
//! [`contract::Refusal`]. Only `multipart/form-data` is read as a form;
//! any other content type, or none, is read as JSON (as upstream does).
//!
//! The three extractors share what surrounds their state machines (one
//! internal module): where the scan and body limits cut a chunk, the
//! sticky first error, what `feed` reports and what `finish` decides
//! under each duplicate-key policy.
//!
//! # Speed, and where simd-json is used
//!
//! Strings, which are nearly all of a chat body, are skipped in 64-byte
//! blocks. One bitmask per block marks what stops the skip (`"`, `\` and
//! control bytes); its set bits are walked inside the block, a valid escape
//! stepped over with table lookups, so dense text does not leave the block
//! loop at every escape. Non-ASCII bytes do not stop the skip: the raw
//! bytes of each skipped span, from the block of its first non-ASCII byte
//! on, are validated as UTF-8 in one call (with AVX-512 our own vector
//! validator, else `simdutf8`, or std for spans under 32 bytes; escapes are
//! ASCII, so they cannot hide or break a sequence). Anything invalid, or
//! cut by the chunk end, is left to the byte-at-a-time path, which reports
//! it at its exact offset or carries it over to the next chunk. Short plain
//! strings (most keys and names) end at a bit of the masks of the 64-byte
//! block they lie in, computed once for all the strings in it. Everything
//! inside the root object other than the `model` member (and every
//! top-level key that is not plain ASCII) is read by one accept-only loop
//! that keeps its place in the grammar in registers; the `model` member
//! itself, when its value is plain, is decided there too. The string skip's
//! masks use AVX-512 or AVX2 when the CPU has them (detected at run time),
//! else SSE2 (x86_64) or portable word arithmetic; that module is the only
//! `unsafe` code of the crate, and each implementation is tested against a
//! byte-by-byte oracle on every byte value at every position. A body that
//! starts with `{"model":"` and a plain name is decided in one step. A
//! byte-at-a-time reference mode of the same state machine is checked
//! against the fast one in the tests (every seed under every chunking and
//! every mask implementation, and the property tests).
//!
//! Measured with callgrind (instructions per extraction, model last, the
//! whole body validated; `benches/RESULTS.md` has the table and the
//! commands): dense multilingual prose 1 MiB 2.79 M (sonic-rs `get` 4.21 M),
//! the completions prompt 1 MiB 1.68 M (3.10 M), the base64-heavy chat body
//! 1 MiB 0.76 M (1.65 M); structure-heavy bodies are still behind: the
//! 1 KiB chat body 11.1 k (8.4 k), agent turns with tool calls 1 MiB
//! 12.2 M (10.8 M).
//!
//! simd-json is used in the tests only, as a second, independent oracle
//! for JSON validity next to serde_json. It is not used for extraction: it
//! parses in place, so a whole-buffer path would first copy the body (an
//! allocation as large as the body), and it cannot stop at the model, so
//! it loses to the streaming scanner both with the model first (1.4 µs for
//! the 1 KiB chat body, against ~75 ns) and last (2.8 GiB/s on 1 MiB,
//! 2.6 GiB/s on 8 MiB, without the copy; the `simd_json_struct` rows of
//! the same benchmark).
//!
//! # The `extract` example
//!
//! `cargo run --release -p bbr-core --example extract -- [--chunk N]
//! [--policy reject|first-wins|last-wins] [--field NAME] FILE...` prints one line per file:
//! `{"file":F,"outcome":"found","model":M}`, `{"file":F,"outcome":"absent"}`
//! or `{"file":F,"outcome":"error","kind":K,"offset":N}`, the verdict after
//! the whole file was fed in `N`-byte chunks (64 KiB by default). This
//! format is stable: it is the black-box interface of the core.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `flate2` | on | `Content-Encoding: gzip` and `deflate` (flate2 on miniz_oxide, pure Rust) |
//! | `brotli` | on | `Content-Encoding: br` (brotli-decompressor, pure Rust) |
//! | `zstd` | on | `Content-Encoding: zstd` (libzstd through zstd-safe; builds C) |
//!
//! A coding whose feature is off is [`BodyKind::NotDecoded`].
//!
//! # Disk spool
//!
//! [`spool`] (std only, no feature) is the synchronous state machine an
//! adapter uses to hold what it must hold before a late decision on disk
//! instead of in memory: a per-request memory threshold, batched writes to
//! an anonymous temp file, reads back in order. The adapter runs its blocking
//! file I/O off its event loop.
// `unsafe` only in `simd` (SIMD intrinsics behind run-time detection, and
// the unchecked text view of a model the scan validated).
#![deny(unsafe_code)]

mod body;
mod bounded;
pub mod contract;
pub mod encoding;
mod error;
mod extractor;
mod limits;
mod model;
mod model_name;
pub mod multipart;
mod progress;
pub mod rewrite;
mod scan;
mod simd;
pub mod spool;

pub use body::{BodyExtractor, BodyKind};
pub use contract::UnknownPolicy;
pub use error::{ErrorChain, ErrorClass, ErrorKind, ExtractError};
pub use extractor::{ModelExtractor, extract_model};
pub use limits::{DuplicateKeys, FieldName, InvalidFieldName, Limits};
pub use model::Model;
pub use model_name::validate_model_name;
pub use progress::{Outcome, Progress};
pub use simd::{SIMD_LEVEL_ENV, simd_level};

#[cfg(test)]
mod tests;
