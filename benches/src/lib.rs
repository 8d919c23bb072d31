//! Deterministic, realistic request bodies for the bbr benchmarks and load
//! tests, and a chunker that cuts them the way a network would.
//!
//! Every body is built from a fixed seed, so two runs (and two machines)
//! measure exactly the same bytes. The bodies look like what OpenAI-style
//! clients send:
//!
//! - **chat** (`/v1/chat/completions`): a system turn, alternating user and
//!   assistant turns, user turns with base64 `image_url` parts, an assistant
//!   tool call with its tool answer, a `tools` array whose function
//!   parameters hold a nested `model` property (which must be ignored), and
//!   text with JSON escapes (`\n`, `\"`, `\\`, `\u00e9`, surrogate pairs) and
//!   raw UTF-8 (accents, CJK, emoji);
//! - **completions** (`/v1/completions`): one long `prompt` string with the
//!   same kind of text;
//! - **prose** (`/v1/chat/completions`): dense multilingual turns as in chat
//!   histories and RAG prompts: raw UTF-8 (accented Latin, Greek, Cyrillic,
//!   CJK, emoji) and escapes (`\n`, `\"`, `\\`, `\uXXXX`), one such byte
//!   every 8–20 bytes on average, no base64;
//! - **tools** (`/v1/chat/completions`): an agent loop of short turns,
//!   several tool definitions, assistant tool calls whose arguments are
//!   escaped JSON, and tool results (escaped JSON again): short strings and
//!   structure dominate.
//!
//! [`MatrixSpec`] builds the synthetic per-special-byte bodies: one 1 MiB
//! string with one special every N bytes (`\n`, `\u00e9`, raw `é`, raw
//! `日`), which shows the cost of one special byte directly.
//!
//! The top-level `model` ([`MODEL`]) is either the first key or the last one
//! ([`Position`]), and each body is exactly the requested size in bytes (the
//! last turn, or the prompt, is padded to fit).
//!
//! ```
//! use bbr_benches::{BodySpec, Chunking, Position, Shape, chunks, MODEL};
//!
//! let body = BodySpec::new(Shape::Chat, Position::Last, 16 * 1024).build();
//! assert_eq!(body.len(), 16 * 1024);
//! let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(value["model"], MODEL);
//!
//! let pieces = chunks(&body, Chunking::Fixed(4096));
//! assert_eq!(pieces.len(), 4);
//! assert_eq!(pieces.concat(), body.to_vec());
//! ```
//!
//! The [`loadgen`] module is the closed-loop HTTP load generator behind the
//! `loadgen` binary, used for the proxy load benchmarks.

pub mod loadgen;
pub mod soak;

use bytes::Bytes;

/// The top-level model every generated body names.
pub const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// A model name that appears only nested (in the tool definition and in tool
/// call arguments); an extractor that returns it has read the wrong key.
pub const NESTED_MODEL: &str = "deepseek/vllm-deepseek-r1";

/// One kibibyte.
pub const KIB: usize = 1024;
/// One mebibyte.
pub const MIB: usize = 1024 * 1024;

/// The body sizes the benchmarks use: 1 KiB, 16 KiB, 256 KiB, 1 MiB, 8 MiB.
pub const SIZES: [usize; 5] = [KIB, 16 * KIB, 256 * KIB, MIB, 8 * MIB];

/// Smallest size [`BodySpec::build`] accepts for any shape: the fixed parts
/// of a chat body (system turn, tool definition, options) plus a short turn.
pub const MIN_SIZE: usize = 900;

/// Which endpoint's request body to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// `/v1/chat/completions`: messages, images, tools.
    Chat,
    /// `/v1/completions`: one long prompt.
    Completions,
    /// `/v1/chat/completions`: dense multilingual prose with escapes.
    Prose,
    /// `/v1/chat/completions`: an agent loop of short turns with tool calls.
    Tools,
}

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 4] = [Shape::Chat, Shape::Completions, Shape::Prose, Shape::Tools];

    /// `chat`, `completions`, `prose` or `tools`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Shape::Chat => "chat",
            Shape::Completions => "completions",
            Shape::Prose => "prose",
            Shape::Tools => "tools",
        }
    }

    /// The shape [`Shape::as_str`] names, or `None`.
    ///
    /// ```
    /// use bbr_benches::Shape;
    /// assert_eq!(Shape::from_name("prose"), Some(Shape::Prose));
    /// assert_eq!(Shape::from_name("Prose"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A size as the command lines write it: a number of bytes, or a number
/// followed by `B`, `KiB` or `MiB` (the inverse of [`size_label`]).
///
/// ```
/// use bbr_benches::{parse_size, KIB, MIB};
/// assert_eq!(parse_size("16KiB"), Ok(16 * KIB));
/// assert_eq!(parse_size("8MiB"), Ok(8 * MIB));
/// assert_eq!(parse_size("1000"), Ok(1000));
/// assert!(parse_size("1GiB").is_err());
/// assert!(parse_size("KiB").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<usize, String> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: usize = number
        .parse()
        .map_err(|_| format!("not a size: {text:?} (a number, then B, KiB or MiB)"))?;
    let scale = match unit {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        _ => return Err(format!("unknown unit in {text:?} (B, KiB, MiB)")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Where the top-level `model` key sits in the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// `{"model": ..., "messages": ...}`: the best case, decided at once.
    First,
    /// `{"messages": ..., "model": ...}`: the whole body is scanned first.
    Last,
}

impl Position {
    /// Both positions.
    pub const ALL: [Position; 2] = [Position::First, Position::Last];

    /// `first` or `last`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Position::First => "first",
            Position::Last => "last",
        }
    }
}

/// A human label for a byte size: `1KiB`, `16KiB`, `1MiB`, or `1000B` when
/// it is not a whole number of KiB.
///
/// ```
/// assert_eq!(bbr_benches::size_label(8 * 1024 * 1024), "8MiB");
/// assert_eq!(bbr_benches::size_label(1024), "1KiB");
/// assert_eq!(bbr_benches::size_label(1000), "1000B");
/// ```
pub fn size_label(bytes: usize) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{}MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{}KiB", bytes / KIB)
    } else {
        format!("{bytes}B")
    }
}

/// What body to build: shape, model position and exact size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BodySpec {
    /// Chat or completions.
    pub shape: Shape,
    /// Model first or last.
    pub position: Position,
    /// Exact length of the body in bytes (at least [`MIN_SIZE`]).
    pub size: usize,
}

impl BodySpec {
    /// A spec; nothing is built until [`BodySpec::build`].
    pub const fn new(shape: Shape, position: Position, size: usize) -> Self {
        Self {
            shape,
            position,
            size,
        }
    }

    /// Builds the body: valid JSON, exactly `size` bytes, top-level `model`
    /// equal to [`MODEL`]. The same spec always gives the same bytes.
    ///
    /// # Panics
    ///
    /// When `size` is below [`MIN_SIZE`].
    ///
    /// ```
    /// use bbr_benches::{BodySpec, Position, Shape};
    /// let spec = BodySpec::new(Shape::Completions, Position::First, 4096);
    /// let body = spec.build();
    /// assert!(body.starts_with(br#"{"model":"#));
    /// assert_eq!(body, spec.build());
    /// ```
    pub fn build(&self) -> Bytes {
        self.build_variant(0)
    }

    /// Another body of the same spec: the same class, size and model
    /// position, another text (variant 0 is [`build`](Self::build)'s).
    /// Benchmarks take several in turn, so the branch predictor cannot
    /// learn one body's branches, as it can when one body is repeated
    /// (a server sees each body once).
    ///
    /// ```
    /// use bbr_benches::{BodySpec, Position, Shape};
    /// let spec = BodySpec::new(Shape::Prose, Position::Last, 4096);
    /// let other = spec.build_variant(1);
    /// assert_eq!(other.len(), 4096);
    /// assert_ne!(other, spec.build());
    /// assert_eq!(spec.build_variant(0), spec.build());
    /// ```
    pub fn build_variant(&self, variant: u64) -> Bytes {
        let (size, position) = (self.size, self.position);
        match self.shape {
            Shape::Chat => chat_body_variant(size, position, variant),
            Shape::Completions => completions_body_variant(size, position, variant),
            Shape::Prose => prose_body_variant(size, position, variant),
            Shape::Tools => tools_body_variant(size, position, variant),
        }
    }

    /// The spec the example programs' `CLASS SIZE` arguments name:
    /// `CLASS` is a [`Shape`] name with the model last, or the name and
    /// `:first` for the model first; `SIZE` as [`parse_size`] reads it, at
    /// least [`MIN_SIZE`].
    ///
    /// ```
    /// use bbr_benches::{BodySpec, Position, Shape, KIB};
    /// assert_eq!(
    ///     BodySpec::from_args("tools:first", "16KiB"),
    ///     Ok(BodySpec::new(Shape::Tools, Position::First, 16 * KIB))
    /// );
    /// assert_eq!(BodySpec::from_args("chat", "1KiB").unwrap().position, Position::Last);
    /// assert!(BodySpec::from_args("chat:middle", "1KiB").is_err());
    /// assert!(BodySpec::from_args("chat", "100").is_err());
    /// ```
    pub fn from_args(class: &str, size: &str) -> Result<Self, String> {
        let (name, position) = match class.strip_suffix(":first") {
            Some(name) => (name, Position::First),
            None => (class, Position::Last),
        };
        let shape = Shape::from_name(name).ok_or_else(|| {
            let names: Vec<_> = Shape::ALL.iter().map(|s| s.as_str()).collect();
            format!(
                "unknown class {class:?} (one of {}, optionally with :first)",
                names.join(", ")
            )
        })?;
        let size = parse_size(size)?;
        if size < MIN_SIZE {
            return Err(format!("size must be at least {MIN_SIZE} bytes"));
        }
        Ok(Self::new(shape, position, size))
    }

    /// `chat/16KiB/first`: the benchmark id prefix.
    pub fn label(&self) -> String {
        format!(
            "{}/{}/{}",
            self.shape.as_str(),
            size_label(self.size),
            self.position.as_str()
        )
    }
}

/// A chat completions body of exactly `size` bytes with the model at
/// `position`. See the crate docs for what it contains.
///
/// # Panics
///
/// When `size` is below [`MIN_SIZE`].
pub fn chat_body(size: usize, position: Position) -> Bytes {
    chat_body_variant(size, position, 0)
}

/// [`chat_body`]'s `variant`th text (0 is [`chat_body`]'s).
fn chat_body_variant(size: usize, position: Position, variant: u64) -> Bytes {
    assert!(
        size >= MIN_SIZE,
        "body size {size} is below MIN_SIZE ({MIN_SIZE})"
    );
    let mut rng = SplitMix64::new(0x6262_725f_6368_6174 ^ size as u64 ^ variant << 40);
    let (head, tail) = envelope(
        position,
        "{\"messages\":[",
        &format!("],\"tools\":[{TOOL}],\"max_tokens\":256,\"temperature\":0,\"stream\":false"),
    );

    let mut messages: Vec<String> = vec![format!(
        "{{\"role\":\"system\",\"content\":\"{SYSTEM_PROMPT}\"}}"
    )];
    // Bytes used so far: envelope, messages, and one comma after each (the
    // padded last turn follows them all).
    let used = |messages: &[String]| {
        head.len() + tail.len() + messages.iter().map(|m| m.len() + 1).sum::<usize>()
    };
    // The last turn is a padded user message; keep room for its envelope
    // plus some text.
    let last_turn_overhead = LAST_TURN_PREFIX.len() + LAST_TURN_SUFFIX.len();
    let reserve = last_turn_overhead + 64;
    // Images scale with the body: thumbnails in small bodies, photos in big ones.
    let image_b64_len = (size / 10).clamp(512, 384 * KIB) / 4 * 4;

    let mut turn = 0usize;
    loop {
        let budget = size.saturating_sub(used(&messages) + reserve);
        let candidate = match turn % 5 {
            0 => {
                let n = rng.range(300, 1400);
                text_turn("user", &text(&mut rng, n))
            }
            1 => {
                let n = rng.range(600, 2400);
                text_turn("assistant", &text(&mut rng, n))
            }
            2 => {
                let n = rng.range(40, 160);
                let caption = text(&mut rng, n);
                image_turn(&caption, &base64_image(&mut rng, image_b64_len))
            }
            3 => tool_call_turns(&mut rng, turn),
            _ => {
                let n = rng.range(200, 900);
                text_turn("developer", &text(&mut rng, n))
            }
        };
        if candidate.len() + 1 > budget {
            break;
        }
        messages.push(candidate);
        turn += 1;
    }

    let pad = size - used(&messages) - last_turn_overhead;
    messages.push(format!(
        "{LAST_TURN_PREFIX}{}{LAST_TURN_SUFFIX}",
        text(&mut rng, pad)
    ));
    let body = format!("{head}{}{tail}", messages.join(","));
    debug_assert_eq!(body.len(), size);
    Bytes::from(body)
}

/// A completions body of exactly `size` bytes (one long `prompt`) with the
/// model at `position`.
///
/// # Panics
///
/// When `size` is below [`MIN_SIZE`].
pub fn completions_body(size: usize, position: Position) -> Bytes {
    completions_body_variant(size, position, 0)
}

/// [`completions_body`]'s `variant`th text (0 is [`completions_body`]'s).
fn completions_body_variant(size: usize, position: Position, variant: u64) -> Bytes {
    assert!(
        size >= MIN_SIZE,
        "body size {size} is below MIN_SIZE ({MIN_SIZE})"
    );
    let mut rng = SplitMix64::new(0x6262_725f_636f_6d70 ^ size as u64 ^ variant << 40);
    let (head, tail) = envelope(
        position,
        "{\"prompt\":\"",
        "\",\"max_tokens\":128,\"temperature\":0,\"stream\":true,\
         \"stream_options\":{\"include_usage\":true},\"stop\":[\"\\n\\n###\"]",
    );
    let prompt = text(&mut rng, size - head.len() - tail.len());
    let body = format!("{head}{prompt}{tail}");
    debug_assert_eq!(body.len(), size);
    Bytes::from(body)
}

/// A chat body of dense multilingual prose (see the crate docs), exactly
/// `size` bytes, model at `position`.
///
/// # Panics
///
/// When `size` is below [`MIN_SIZE`].
pub fn prose_body(size: usize, position: Position) -> Bytes {
    prose_body_variant(size, position, 0)
}

/// [`prose_body`]'s `variant`th text (0 is [`prose_body`]'s).
fn prose_body_variant(size: usize, position: Position, variant: u64) -> Bytes {
    assert!(
        size >= MIN_SIZE,
        "body size {size} is below MIN_SIZE ({MIN_SIZE})"
    );
    let mut rng = SplitMix64::new(0x6262_725f_7072_6f73 ^ size as u64 ^ variant << 40);
    let (head, tail) = envelope(
        position,
        "{\"messages\":[",
        "],\"max_tokens\":512,\"temperature\":0",
    );
    let roles = ["system", "user", "assistant", "user", "assistant"];
    let mut messages: Vec<String> = Vec::new();
    let used = |messages: &[String]| {
        head.len() + tail.len() + messages.iter().map(|m| m.len() + 1).sum::<usize>()
    };
    let reserve = LAST_TURN_PREFIX.len() + LAST_TURN_SUFFIX.len() + 64;
    for turn in 0.. {
        let budget = size.saturating_sub(used(&messages) + reserve);
        let n = rng.range(200, 4000);
        let candidate = text_turn(roles[turn % roles.len()], &prose(&mut rng, n));
        if candidate.len() + 1 > budget {
            break;
        }
        messages.push(candidate);
    }
    let pad = size - used(&messages) - LAST_TURN_PREFIX.len() - LAST_TURN_SUFFIX.len();
    messages.push(format!(
        "{LAST_TURN_PREFIX}{}{LAST_TURN_SUFFIX}",
        prose(&mut rng, pad)
    ));
    let body = format!("{head}{}{tail}", messages.join(","));
    debug_assert_eq!(body.len(), size);
    Bytes::from(body)
}

/// An agent-loop chat body (see the crate docs), exactly `size` bytes,
/// model at `position`.
///
/// # Panics
///
/// When `size` is below [`MIN_SIZE`].
pub fn tools_body(size: usize, position: Position) -> Bytes {
    tools_body_variant(size, position, 0)
}

/// [`tools_body`]'s `variant`th text (0 is [`tools_body`]'s).
fn tools_body_variant(size: usize, position: Position, variant: u64) -> Bytes {
    assert!(
        size >= MIN_SIZE,
        "body size {size} is below MIN_SIZE ({MIN_SIZE})"
    );
    let mut rng = SplitMix64::new(0x6262_725f_746f_6f6c ^ size as u64 ^ variant << 40);
    let small = size < 4 * KIB;
    let tools = if small {
        WEATHER_TOOL.to_owned()
    } else {
        format!("{TOOL},{WEATHER_TOOL},{SEARCH_TOOL}")
    };
    let (head, tail) = envelope(
        position,
        "{\"messages\":[",
        &format!(
            "],\"tools\":[{tools}],\"tool_choice\":\"auto\",\"temperature\":0,\"stream\":true"
        ),
    );
    let mut messages: Vec<String> = Vec::new();
    if !small {
        messages.push(text_turn(
            "system",
            "You are an agent. Call tools when useful.",
        ));
    }
    let used = |messages: &[String]| {
        head.len() + tail.len() + messages.iter().map(|m| m.len() + 1).sum::<usize>()
    };
    let reserve = LAST_TURN_PREFIX.len() + LAST_TURN_SUFFIX.len() + 32;
    for turn in 0.. {
        let budget = size.saturating_sub(used(&messages) + reserve);
        let candidate = match turn % 3 {
            0 => {
                let n = if small {
                    rng.range(20, 60)
                } else {
                    rng.range(30, 200)
                };
                text_turn("user", &text(&mut rng, n))
            }
            1 => agent_tool_call(&mut rng, turn),
            _ => {
                let n = rng.range(20, 120);
                text_turn("assistant", &text(&mut rng, n))
            }
        };
        if candidate.len() + 1 > budget {
            break;
        }
        messages.push(candidate);
    }
    let pad = size - used(&messages) - LAST_TURN_PREFIX.len() - LAST_TURN_SUFFIX.len();
    messages.push(format!(
        "{LAST_TURN_PREFIX}{}{LAST_TURN_SUFFIX}",
        text(&mut rng, pad)
    ));
    let body = format!("{head}{}{tail}", messages.join(","));
    debug_assert_eq!(body.len(), size);
    Bytes::from(body)
}

/// The special byte of a [`MatrixSpec`] body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Special {
    /// The escape `\n` (2 bytes).
    Newline,
    /// The escape `\u00e9` (6 bytes).
    EscapedE,
    /// A raw `é` (2 bytes of UTF-8).
    RawE,
    /// A raw `日` (3 bytes of UTF-8).
    Cjk,
}

impl Special {
    /// Every kind.
    pub const ALL: [Special; 4] = [
        Special::Newline,
        Special::EscapedE,
        Special::RawE,
        Special::Cjk,
    ];

    /// `newline`, `u00e9`, `raw_e`, `cjk`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Special::Newline => "newline",
            Special::EscapedE => "u00e9",
            Special::RawE => "raw_e",
            Special::Cjk => "cjk",
        }
    }

    /// The bytes as they appear in the JSON string.
    pub const fn encoded(self) -> &'static str {
        match self {
            Special::Newline => "\\n",
            Special::EscapedE => "\\u00e9",
            Special::RawE => "\u{e9}",
            Special::Cjk => "\u{65e5}",
        }
    }
}

/// A synthetic body: one string of plain ASCII with one [`Special`] every
/// `every` bytes, in `{"messages":[{"role":"user","content":"..."}]}` with
/// the model last, exactly `size` bytes.
///
/// ```
/// use bbr_benches::{MatrixSpec, Special, MODEL};
/// let spec = MatrixSpec { special: Special::Cjk, every: 32, size: 64 * 1024 };
/// let body = spec.build();
/// assert_eq!(body.len(), 64 * 1024);
/// let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(value["model"], MODEL);
/// assert_eq!(spec.label(), "matrix/cjk/every32/64KiB/last");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatrixSpec {
    /// Which special.
    pub special: Special,
    /// One special every this many bytes (at least the special's length + 1).
    pub every: usize,
    /// Exact body length.
    pub size: usize,
}

impl MatrixSpec {
    /// The periods the benchmark uses: 8, 32, 64, 256 bytes.
    pub const EVERY: [usize; 4] = [8, 32, 64, 256];

    /// Builds the body (deterministic).
    ///
    /// # Panics
    ///
    /// When `every` is not longer than the special or `size` is below 256.
    pub fn build(&self) -> Bytes {
        let special = self.special.encoded();
        assert!(self.every > special.len(), "period too short");
        assert!(self.size >= 256, "body too small");
        let head = "{\"messages\":[{\"role\":\"user\",\"content\":\"";
        let tail = format!("\"}}],\"model\":\"{MODEL}\"}}");
        let content_len = self.size - head.len() - tail.len();
        const FILLER: &[u8] = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do ";
        let mut content = String::with_capacity(content_len);
        let mut filler = FILLER.iter().cycle();
        while content.len() + self.every <= content_len {
            content.push_str(special);
            for _ in special.len()..self.every {
                content.push(char::from(*filler.next().expect("cycle")));
            }
        }
        while content.len() < content_len {
            content.push('.');
        }
        let body = format!("{head}{content}{tail}");
        debug_assert_eq!(body.len(), self.size);
        Bytes::from(body)
    }

    /// `matrix/raw_e/every8/1MiB/last`.
    pub fn label(&self) -> String {
        format!(
            "matrix/{}/every{}/{}/last",
            self.special.as_str(),
            self.every,
            size_label(self.size)
        )
    }
}

/// How to cut a body into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chunking {
    /// One chunk: the whole body.
    Contiguous,
    /// Chunks of this many bytes (the last one may be shorter). Must be > 0.
    Fixed(usize),
}

impl Chunking {
    /// 16 KiB chunks, what hyper typically hands over from a socket.
    pub const CHUNK_16K: Chunking = Chunking::Fixed(16 * KIB);
    /// 1-byte chunks, the worst case.
    pub const ONE_BYTE: Chunking = Chunking::Fixed(1);

    /// `contiguous`, `chunks16KiB`, `chunks1B`.
    pub fn label(self) -> String {
        match self {
            Chunking::Contiguous => "contiguous".to_owned(),
            Chunking::Fixed(n) => format!("chunks{}", size_label(n)),
        }
    }
}

/// Items taken in turn, one per call, round and round: a benchmark's
/// distinct bodies ([`BodySpec::build_variant`]).
///
/// ```
/// let bodies = ["a", "b"];
/// let turns = bbr_benches::Turns::new(&bodies);
/// assert_eq!([turns.next(), turns.next(), turns.next()], [&"a", &"b", &"a"]);
/// ```
#[derive(Debug)]
pub struct Turns<'a, T> {
    items: &'a [T],
    next: std::cell::Cell<usize>,
}

impl<'a, T> Turns<'a, T> {
    /// Starts at the first of `items`.
    ///
    /// # Panics
    ///
    /// [`next`](Self::next) panics when `items` is empty.
    pub fn new(items: &'a [T]) -> Self {
        Self {
            items,
            next: std::cell::Cell::new(0),
        }
    }

    /// The next item.
    #[inline(always)]
    pub fn next(&self) -> &'a T {
        let k = self.next.get();
        self.next
            .set(if k + 1 == self.items.len() { 0 } else { k + 1 });
        &self.items[k]
    }
}

/// Cuts `body` into chunks without copying: every chunk is a slice of
/// `body` (same allocation), in order, and their concatenation is `body`.
///
/// # Panics
///
/// On `Chunking::Fixed(0)`.
///
/// ```
/// use bbr_benches::{Chunking, chunks};
/// let body = bytes::Bytes::from_static(b"{\"model\":\"m\"}");
/// let pieces = chunks(&body, Chunking::ONE_BYTE);
/// assert_eq!(pieces.len(), body.len());
/// assert_eq!(pieces[0].as_ptr(), body.as_ptr());
/// assert_eq!(chunks(&body, Chunking::Contiguous), vec![body.clone()]);
/// ```
pub fn chunks(body: &Bytes, chunking: Chunking) -> Vec<Bytes> {
    match chunking {
        Chunking::Contiguous => vec![body.clone()],
        Chunking::Fixed(n) => {
            assert!(n > 0, "chunk size must be positive");
            (0..body.len())
                .step_by(n)
                .map(|start| body.slice(start..(start + n).min(body.len())))
                .collect()
        }
    }
}

// ---------------------------------------------------------------------------
// Building blocks.

const SYSTEM_PROMPT: &str = "You are a helpful assistant for a food review site. \
Answer briefly, cite the review you use, and never invent prices.\\nUse \\\"metric\\\" units.";

/// A tool whose parameters hold a nested `model` property: extractors must
/// ignore it (only the top-level key counts).
const TOOL: &str = "{\"type\":\"function\",\"function\":{\"name\":\"route_request\",\
\"description\":\"Send a sub-task to another model and return its answer.\",\
\"parameters\":{\"type\":\"object\",\"properties\":{\
\"model\":{\"type\":\"string\",\"description\":\"Which model handles the sub-task\",\
\"enum\":[\"deepseek/vllm-deepseek-r1\",\"ski-resorts\"]},\
\"query\":{\"type\":\"string\",\"description\":\"The sub-task, in plain words\"}},\
\"required\":[\"model\",\"query\"]}}}";

const WEATHER_TOOL: &str = "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\
\"description\":\"Current weather for a city.\",\"parameters\":{\"type\":\"object\",\
\"properties\":{\"city\":{\"type\":\"string\"},\"unit\":{\"type\":\"string\",\
\"enum\":[\"celsius\",\"fahrenheit\"]}},\"required\":[\"city\"]}}}";

const SEARCH_TOOL: &str = "{\"type\":\"function\",\"function\":{\"name\":\"search_reviews\",\
\"description\":\"Full-text search over the review index.\",\"parameters\":{\"type\":\"object\",\
\"properties\":{\"query\":{\"type\":\"string\"},\"limit\":{\"type\":\"integer\",\
\"minimum\":1,\"maximum\":50},\"filters\":{\"type\":\"object\",\"properties\":{\
\"stars\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}}}},\"required\":[\"query\"]}}}";

/// An assistant turn calling a tool (arguments: escaped JSON) and the
/// tool's answer (escaped JSON with numbers and nested objects).
fn agent_tool_call(rng: &mut SplitMix64, turn: usize) -> String {
    let city = ["Z\u{fc}rich", "Tokyo", "S\u{e3}o Paulo", "Oslo"][rng.below(4)];
    let temp = rng.range(0, 35);
    let stars = rng.range(1, 6);
    format!(
        "{{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{{\"id\":\"call_{turn:04}\",\
         \"type\":\"function\",\"function\":{{\"name\":\"get_weather\",\"arguments\":\
         \"{{\\\"city\\\":\\\"{city}\\\",\\\"unit\\\":\\\"celsius\\\"}}\"}}}}]}},\
         {{\"role\":\"tool\",\"tool_call_id\":\"call_{turn:04}\",\"content\":\
         \"{{\\\"temperature\\\":{temp}.5,\\\"conditions\\\":\\\"partly cloudy\\\",\
         \\\"reviews\\\":[{{\\\"stars\\\":{stars},\\\"text\\\":\\\"ok\\\"}}],\\\"ok\\\":true}}\"}}"
    )
}

const LAST_TURN_PREFIX: &str = "{\"role\":\"user\",\"content\":\"";
const LAST_TURN_SUFFIX: &str = "\"}";

/// Head and tail of the object, with `"model":MODEL` placed first or last.
fn envelope(position: Position, head: &str, tail: &str) -> (String, String) {
    match position {
        Position::First => (
            format!("{{\"model\":\"{MODEL}\",{}", &head[1..]),
            format!("{tail}}}"),
        ),
        Position::Last => (head.to_owned(), format!("{tail},\"model\":\"{MODEL}\"}}")),
    }
}

fn text_turn(role: &str, content: &str) -> String {
    format!("{{\"role\":\"{role}\",\"content\":\"{content}\"}}")
}

fn image_turn(caption: &str, b64: &str) -> String {
    format!(
        "{{\"role\":\"user\",\"content\":[{{\"type\":\"text\",\"text\":\"{caption}\"}},\
         {{\"type\":\"image_url\",\"image_url\":{{\"url\":\"data:image/png;base64,{b64}\",\
         \"detail\":\"auto\"}}}}]}}"
    )
}

/// An assistant tool call (arguments are an escaped JSON string holding a
/// nested `model`) followed by the tool's answer.
fn tool_call_turns(rng: &mut SplitMix64, turn: usize) -> String {
    let n = rng.range(200, 700);
    let answer = text(rng, n);
    format!(
        "{{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{{\"id\":\"call_{turn:04}\",\
         \"type\":\"function\",\"function\":{{\"name\":\"route_request\",\"arguments\":\
         \"{{\\\"model\\\":\\\"{NESTED_MODEL}\\\",\\\"query\\\":\\\"summarise turn {turn}\\\"}}\"}}}}]}},\
         {{\"role\":\"tool\",\"tool_call_id\":\"call_{turn:04}\",\"content\":\"{answer}\"}}"
    )
}

/// Pieces of JSON string content, each already escaped and valid on its own,
/// so any concatenation is a valid JSON string body.
const WORDS: &[&str] = &[
    "the", "review", "model", "sauce", "was", "crisp", "and", "the", "service", "slow", "but",
    "friendly", "price", "portion", "would", "order", "again", "dessert", "menu", "table",
    "kitchen", "wine", "pairing", "delivery", "fresh", "bread", "soup", "spicy", "noodles",
    "request", "gateway", "token", "prompt",
];
const SPECIAL: &[&str] = &[
    "\\n",
    "\\n\\n",
    "\\t",
    "\\\"quoted\\\"",
    "C:\\\\reviews\\\\2024",
    "caf\\u00e9",
    "na\\u00efve",
    "\\ud83d\\ude80",
    "\\u65e5\\u672c",
    "\\/",
    "café",
    "Grüße",
    "日本語のレビュー",
    "🍜🍣",
    "Ωμέγα",
    "{\\\"model\\\": \\\"not-this-one\\\"}",
];

/// Escaped JSON string content of exactly `len` bytes.
fn text(rng: &mut SplitMix64, len: usize) -> String {
    let mut out = String::with_capacity(len);
    loop {
        let piece = if rng.below(8) == 0 {
            SPECIAL[rng.below(SPECIAL.len())]
        } else {
            WORDS[rng.below(WORDS.len())]
        };
        if out.len() + piece.len() + 1 > len {
            break;
        }
        out.push_str(piece);
        out.push(if rng.below(12) == 0 { '.' } else { ' ' });
    }
    while out.len() < len {
        out.push('.');
    }
    out
}

/// Dense multilingual prose (escaped JSON string content) of exactly `len`
/// bytes: about a third of the words carry a raw non-ASCII character or an
/// escape.
fn prose(rng: &mut SplitMix64, len: usize) -> String {
    const PLAIN: &[&str] = &[
        "the", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "review",
        "kitchen", "night", "menu", "said", "which", "from", "their",
    ];
    const RICH: &[&str] = &[
        "caf\u{e9}",
        "na\u{ef}ve",
        "Gr\u{fc}\u{df}e",
        "\u{e9}l\u{e8}ve",
        "se\u{f1}or",
        "fa\u{e7}ade",
        "Z\u{fc}rich",
        "cr\u{e8}me br\u{fb}l\u{e9}e",
        "\u{3a9}\u{3bc}\u{3ad}\u{3b3}\u{3b1}",
        "\u{43f}\u{440}\u{438}\u{432}\u{435}\u{442}",
        "\u{65e5}\u{672c}\u{8a9e}",
        "\u{4e2d}\u{6587}",
        "\u{30ec}\u{30d3}\u{30e5}\u{30fc}",
        "\u{d55c}\u{ad6d}\u{c5b4}",
        "\u{1f35c}",
        "\u{1f600}",
        "\\n",
        "\\n\\n",
        "\\\"cited\\\"",
        "C:\\\\docs",
        "\\u00e9t\\u00e9",
        "\\u2014",
        "\\ud83d\\ude00",
        "\\t",
        "x\\/y",
    ];
    let mut out = String::with_capacity(len);
    loop {
        let piece = if rng.below(3) == 0 {
            RICH[rng.below(RICH.len())]
        } else {
            PLAIN[rng.below(PLAIN.len())]
        };
        if out.len() + piece.len() + 1 > len {
            break;
        }
        out.push_str(piece);
        out.push(if rng.below(10) == 0 { ',' } else { ' ' });
    }
    while out.len() < len {
        out.push('.');
    }
    out
}

/// `len` base64 characters (a multiple of 4) encoding a PNG-like blob.
fn base64_image(rng: &mut SplitMix64, len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw_len = len / 4 * 3;
    let mut raw = Vec::with_capacity(raw_len);
    raw.extend_from_slice(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    while raw.len() < raw_len {
        raw.extend_from_slice(&rng.next().to_le_bytes());
    }
    raw.truncate(raw_len);
    let mut out = String::with_capacity(len);
    for group in raw.chunks(3) {
        let n = (u32::from(group[0]) << 16) | (u32::from(group[1]) << 8) | u32::from(group[2]);
        for shift in [18, 12, 6, 0] {
            out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
        }
    }
    debug_assert_eq!(out.len(), len);
    out
}

/// Small fixed-seed generator (SplitMix64): deterministic across platforms.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` for test data.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn all_specs() -> Vec<BodySpec> {
        let mut specs = Vec::new();
        for shape in Shape::ALL {
            for position in Position::ALL {
                for size in SIZES {
                    specs.push(BodySpec::new(shape, position, size));
                }
            }
        }
        specs
    }

    #[test]
    fn every_body_is_valid_json_with_the_expected_model_and_size() {
        for spec in all_specs() {
            let body = spec.build();
            let value: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", spec.label()));
            assert_eq!(value["model"], MODEL, "{}", spec.label());
            // Exact by construction; the contract only needs "within a few %".
            let diff = body.len().abs_diff(spec.size) as f64 / spec.size as f64;
            assert!(diff <= 0.03, "{}: {} bytes", spec.label(), body.len());
            assert_eq!(body.len(), spec.size, "{}", spec.label());
        }
    }

    /// The variants the benchmarks take in turn are bodies of the same
    /// spec: valid, the model where asked, the exact size, and each text
    /// its own.
    #[test]
    fn variants_are_other_bodies_of_the_same_spec() {
        for spec in all_specs()
            .into_iter()
            .filter(|spec| spec.size <= 256 * KIB)
        {
            let first = spec.build_variant(0);
            assert_eq!(first, spec.build(), "{}", spec.label());
            for variant in 1..4 {
                let body = spec.build_variant(variant);
                let value: Value = serde_json::from_slice(&body)
                    .unwrap_or_else(|e| panic!("{} variant {variant}: {e}", spec.label()));
                assert_eq!(value["model"], MODEL, "{} variant {variant}", spec.label());
                assert_eq!(body.len(), spec.size, "{} variant {variant}", spec.label());
                assert_ne!(body, first, "{} variant {variant}", spec.label());
                let model_field = format!("\"model\":\"{MODEL}\"");
                let placed = match spec.position {
                    Position::First => body.starts_with(format!("{{{model_field}").as_bytes()),
                    Position::Last => body.ends_with(format!("{model_field}}}").as_bytes()),
                };
                assert!(placed, "{} variant {variant}", spec.label());
            }
        }
    }

    #[test]
    fn model_key_is_first_or_last_as_asked() {
        for spec in all_specs() {
            let body = spec.build();
            let model_field = format!("\"model\":\"{MODEL}\"");
            match spec.position {
                Position::First => assert!(body.starts_with(format!("{{{model_field}").as_bytes())),
                Position::Last => assert!(body.ends_with(format!("{model_field}}}").as_bytes())),
            }
        }
    }

    #[test]
    fn chat_bodies_hold_nested_models_images_escapes_and_unicode() {
        for size in SIZES {
            let body = chat_body(size, Position::Last);
            let value: Value = serde_json::from_slice(&body).unwrap();
            let nested = &value["tools"][0]["function"]["parameters"]["properties"]["model"];
            assert_eq!(nested["type"], "string");
            let roles: Vec<&str> = value["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["role"].as_str().unwrap())
                .collect();
            assert_eq!(roles[0], "system");
            assert!(roles.contains(&"user"));
            let text = std::str::from_utf8(&body).unwrap();
            assert!(text.contains("\\\""), "escaped quotes in {size}");
            if size >= 16 * KIB {
                assert!(roles.contains(&"assistant"), "{size}");
                assert!(text.contains("data:image/png;base64,iVBORw0KGgo"), "{size}");
                assert!(text.contains(NESTED_MODEL), "{size}");
                assert!(text.contains("\\u"), "{size}");
                assert!(!text.is_ascii(), "{size}");
            }
        }
    }

    #[test]
    fn big_chat_bodies_are_mostly_images_and_many_turns() {
        let body = chat_body(8 * MIB, Position::First);
        let value: Value = serde_json::from_slice(&body).unwrap();
        let messages = value["messages"].as_array().unwrap();
        assert!(messages.len() > 50, "{} turns", messages.len());
        let images = messages.iter().filter(|m| m["content"].is_array()).count();
        assert!(images >= 10, "{images} images");
    }

    #[test]
    fn completions_bodies_are_one_long_prompt() {
        let body = completions_body(MIB, Position::First);
        let value: Value = serde_json::from_slice(&body).unwrap();
        let prompt = value["prompt"].as_str().unwrap();
        assert!(prompt.len() > MIB * 9 / 10);
        assert_eq!(value["stream"], true);
    }

    /// Mean distance between special bytes (non-ASCII characters and
    /// escapes) inside the strings of `body`.
    fn mean_special_gap(body: &[u8]) -> f64 {
        let text = std::str::from_utf8(body).unwrap();
        let mut specials = 0usize;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\\' {
                specials += 1;
                chars.next();
            } else if !c.is_ascii() {
                specials += 1;
            }
        }
        body.len() as f64 / specials as f64
    }

    #[test]
    fn prose_has_a_special_byte_every_8_to_20_bytes() {
        for size in SIZES {
            for position in Position::ALL {
                let body = prose_body(size, position);
                let gap = mean_special_gap(&body);
                assert!(
                    (8.0..=20.0).contains(&gap),
                    "{size}: one special every {gap:.1} bytes"
                );
                let text = std::str::from_utf8(&body).unwrap();
                for needle in [
                    "\\n",
                    "\\\"",
                    "\\\\",
                    "\\u",
                    "\u{e9}",
                    "\u{65e5}",
                    "\u{1f600}",
                ] {
                    assert!(
                        text.contains(needle) || size < 16 * KIB,
                        "{needle} in {size}"
                    );
                }
                assert!(!text.contains("base64"));
            }
        }
    }

    #[test]
    fn tools_bodies_hold_tool_calls_and_results() {
        for size in [KIB, 16 * KIB] {
            let value: Value = serde_json::from_slice(&tools_body(size, Position::Last)).unwrap();
            let messages = value["messages"].as_array().unwrap();
            assert!(
                messages.iter().any(|m| m["tool_calls"].is_array()),
                "{size}"
            );
            assert!(messages.iter().any(|m| m["role"] == "tool"), "{size}");
            let call = messages
                .iter()
                .find(|m| m["tool_calls"].is_array())
                .unwrap();
            let arguments = call["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap();
            let _: Value = serde_json::from_str(arguments).expect("arguments are JSON");
        }
    }

    #[test]
    fn matrix_bodies_have_one_special_every_n_bytes() {
        for special in Special::ALL {
            for every in MatrixSpec::EVERY {
                let spec = MatrixSpec {
                    special,
                    every,
                    size: MIB,
                };
                let body = spec.build();
                assert_eq!(body.len(), MIB);
                let value: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(value["model"], MODEL);
                let text = std::str::from_utf8(&body).unwrap();
                let count = text.matches(special.encoded()).count();
                // The envelope takes ~100 bytes of the MiB.
                let expected = (MIB - 100) / every;
                assert!(count.abs_diff(expected) <= 2, "{}: {count}", spec.label());
            }
        }
    }

    #[test]
    fn bodies_are_deterministic() {
        let spec = BodySpec::new(Shape::Chat, Position::Last, 256 * KIB);
        assert_eq!(spec.build(), spec.build());
        assert_ne!(
            spec.build(),
            BodySpec::new(Shape::Chat, Position::First, 256 * KIB).build()
        );
    }

    #[test]
    fn smallest_size_builds() {
        for shape in Shape::ALL {
            for position in Position::ALL {
                let body = BodySpec::new(shape, position, MIN_SIZE).build();
                assert_eq!(body.len(), MIN_SIZE);
                let value: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(value["model"], MODEL);
            }
        }
    }

    #[test]
    #[should_panic(expected = "below MIN_SIZE")]
    fn below_min_size_panics() {
        let _ = chat_body(MIN_SIZE - 1, Position::First);
    }

    #[test]
    fn chunks_are_slices_of_the_body_in_order() {
        let body = chat_body(16 * KIB + 7, Position::First);
        for chunking in [
            Chunking::Contiguous,
            Chunking::CHUNK_16K,
            Chunking::Fixed(1000),
            Chunking::ONE_BYTE,
        ] {
            let pieces = chunks(&body, chunking);
            assert_eq!(pieces.concat(), body.to_vec(), "{chunking:?}");
            let mut offset = 0;
            for piece in &pieces {
                // Zero copy: each chunk points into the body's allocation.
                assert_eq!(piece.as_ptr(), body[offset..].as_ptr());
                offset += piece.len();
            }
            if let Chunking::Fixed(n) = chunking {
                assert_eq!(pieces.len(), body.len().div_ceil(n));
                assert!(pieces[..pieces.len() - 1].iter().all(|p| p.len() == n));
            }
        }
    }

    #[test]
    fn labels_name_shape_size_and_position() {
        let spec = BodySpec::new(Shape::Completions, Position::Last, MIB);
        assert_eq!(spec.label(), "completions/1MiB/last");
        assert_eq!(Chunking::CHUNK_16K.label(), "chunks16KiB");
        assert_eq!(Chunking::ONE_BYTE.label(), "chunks1B");
    }
}
