//! The per-stream state machine: one ext_proc stream (one HTTP request) in,
//! the replies Envoy needs out. Pure and synchronous; the gRPC glue in
//! `server.rs` only moves messages.
//!
//! # What each body mode gets
//!
//! | mode (from `protocol_config`, else the configured default) | request headers reply | body replies |
//! | --- | --- | --- |
//! | `FULL_DUPLEX_STREAMED` | held until the model is decided, then sent with the routing mutation and `clear_route_cache` | the held chunks and every later chunk as `streamed_response` (≤ 62,000 bytes each, same buffers, no copy) |
//! | `STREAMED` with `send_body_without_waiting_for_header_response` | held until decided, as above | one empty `BodyResponse` per chunk (Envoy keeps the bytes; nothing is echoed) |
//! | `STREAMED` without it | sent at once (Envoy sends no body before it), so only spoofed headers are removed: the request cannot be routed by body; configure the flag | one empty `BodyResponse` per chunk |
//! | `BUFFERED` | sent at once, empty | the one body message is the whole body; its reply carries the routing mutation and `clear_route_cache` |
//! | `BUFFERED_PARTIAL` | sent at once, empty | the one body message is the whole body (`end_of_stream`) or a prefix of it (Envoy's buffer limit was reached); a prefix that decides (found or absent) routes like `BUFFERED`; one that does not is answered by [`UndecidedPrefix`]: 413 `request_too_large` (the default) or forwarded unrouted |
//! | `NONE` | sent at once, spoofed headers removed | — |
//!
//! # What a body is read as
//!
//! The request headers message gives `content-type` and
//! `content-encoding` (from `raw_value`, or `value` when that is empty);
//! [`BodyExtractor::for_headers`] picks the extractor from all their
//! fields, in every body mode:
//!
//! - `multipart/form-data; boundary=...` (quoted or not): the `model` form
//!   field, wherever it is in the form (uploads to
//!   `/v1/audio/transcriptions`, `/v1/audio/translations`,
//!   `/v1/images/edits`). File parts are skipped as they stream; with the
//!   field first the decision comes before the file, with it last the
//!   file's bytes are held (full duplex) until then, within the scan
//!   limit and the [`HeldBudget`] like any undecided body. Under the
//!   `reject` duplicate-key policy the rest is still checked: a second
//!   `model` field (400 `invalid_model`), a missing closing boundary or
//!   malformed framing (400 `invalid_json`). Part header limits:
//!   [`Settings::part_limits`] (400 past them).
//! - Anything else: a JSON object, as before.
//! - `content-encoding: gzip`, `deflate`, `br`, `zstd`, or a list of two
//!   (several fields are one list): decoded as it streams into the
//!   extractor, while the original compressed bytes go upstream, never
//!   changed. Decoded bytes count against the scan and body limits, raw
//!   bytes against the body limit (and `content-length` at the headers);
//!   [`Settings::decode_limits`] bounds the expansion ratio and the
//!   decoder window (a bomb is 413 `request_too_large` after about 1 MiB
//!   of decoding). A corrupt or truncated stream is 400 `invalid_json`.
//!   [`Report::bytes_before_decision`] counts raw (compressed) bytes.
//! - An encoding that is not decoded (unknown, more than two codings, or
//!   one whose cargo feature is off: `flate2` for gzip and deflate,
//!   `brotli`, `zstd`) is not read: the first body chunk decides "no
//!   model", so the request is forwarded unrouted (spoofed headers still
//!   removed) or refused by [`MissingModel::Reject`], never a 400.
//! - Should a client send two `content-type` fields, the first is used.
//!
//! Trailers end the body like `end_of_stream` does; client-sent routing
//! headers in the request trailers are removed in the trailers reply (or
//! the request is refused under [`ClientHeaders::Reject`]), so an HTTP/2
//! client cannot smuggle them to the upstream there either.
//!
//! # Hostile clients
//!
//! - A `content-length` over the body limit is refused (413) at the
//!   request headers, before any body byte reaches the upstream.
//! - Decision deadline ([`Settings::decision_deadline`], default 30 s): a
//!   body whose model is not decided within it of its first byte (a slow
//!   upload, model last) is refused with 408 `request_timeout`. The state
//!   machine has no clock: the server arms a timer when
//!   [`StreamState::awaiting_decision`] turns true and calls
//!   [`StreamState::on_deadline`] when it fires.
//! - Global cap ([`HeldBudget`], default [`HeldBudget::DEFAULT_CAP`]): the
//!   chunks a full-duplex stream holds before its decision are reserved
//!   from one budget per server; over it the request is refused with 503
//!   and `Retry-After` instead of holding more. In `STREAMED` mode Envoy
//!   holds the chunks itself and nothing is reserved here.
//! - Disk spool ([`Settings::spool`], on in the binary): in full duplex the
//!   held bytes past its threshold (4 MiB) go to an unlinked file, within a
//!   disk cap shared by every stream ([`Settings::max_spooled_bytes`],
//!   4 GiB; past it, or a failed write: 503 `overloaded`). The state
//!   machine hands out the file I/O as [`SpoolJob`]s
//!   ([`StreamState::next_spool_job`]) and takes the results back
//!   ([`StreamState::on_spool_done`]); [`StreamState::wants_request`] is
//!   the back-pressure. A spooled body is replayed in order at the decision
//!   and never rewritten. See [`held`](crate::held).
//! - Many tiny `request_body` messages: held chunks under
//!   [`COALESCE_BELOW`](crate::held::COALESCE_BELOW) bytes are copied into
//!   shared buffers (see [`held`](crate::held)), so memory is bounded by the
//!   bytes held, not by the number of messages.
//!
//! Response headers, body and trailers are answered at once and never held
//! (in `FULL_DUPLEX_STREAMED` the response body is echoed as it comes).
//!
//! # Model rewrites
//!
//! With [`Settings::rewrites`] (`--model-rewrites`), a request whose model
//! a rule matches is routed by the picked target: `x-gateway-model-name`
//! (and the base-model header) name the target, [`REQUESTED_MODEL_HEADER`]
//! the name the client sent (set for every request with a model; a
//! client's own value is removed, in the trailers too), and the body the
//! model server gets is the client's with only the `model` string token
//! replaced by the target's JSON token ([`ModelSplicer`]: escapes and the
//! spaces inside the old token go, every other byte stays). A refused
//! body is never rewritten (the refusal comes first); a compressed body or
//! a form field is routed as requested and not rewritten (the token is not
//! in the forwarded bytes); a `STREAMED` request without
//! `send_body_without_waiting_for_header_response` is not rewritten (its
//! headers left before the body). The response is passed on unchanged, so
//! its `model` field names the model that served it, as the upstream
//! gateways do. The rules are reloaded when their files change; each
//! request reads the rules current at its decision.
//!
//! How each mode carries the change, and its length:
//!
//! | mode | body | `content-length` |
//! | --- | --- | --- |
//! | `FULL_DUPLEX_STREAMED` | the held chunks and the deciding one as `streamed_response`; the chunk holding the token goes as up to three messages (the slice before it, the new token, the slice after it): no copy | set to the new length in the held headers reply when the client sent one |
//! | `STREAMED` (early body) | with rewrites configured the undecided chunks are held here as well (within the [`HeldBudget`]; Envoy holds them too); a chunk the token touches gets its replacement as its reply's body mutation (one copy of that chunk: a reply carries one body), the others an empty reply | as above, in the held headers reply |
//! | `BUFFERED`, `BUFFERED_PARTIAL` | the body reply's body mutation (one copy of the body) | set in the body reply's header mutation: Envoy refuses a mutated body whose length differs from a kept `content-length` |
//!
//! Envoy ≥ 1.29 removes `content-length` itself in `STREAMED`,
//! `BUFFERED_PARTIAL` and `FULL_DUPLEX_STREAMED` when body mutation is on,
//! unless `allow_content_length_header: true` (set in `deploy/envoy/`, so
//! the client's length reaches the upstream when nothing changes); with it,
//! the new length set here is what the upstream gets. Without a
//! `content-length` (chunked or HTTP/2 clients) none is set and the
//! upstream reads the body to its end.
//!
//! # Decisions where the spec is silent
//!
//! - A request whose body is empty (zero bytes, then end of stream or
//!   trailers) is treated like a request without a body: forwarded untouched
//!   (spoofed routing headers still removed), not a JSON error.
//! - Client-sent `x-gateway-model-name` / `x-gateway-base-model-name`
//!   (matched by [`contract::routing_header`], so `X_Gateway_Model_Name`
//!   too) are always removed or overwritten, whatever the outcome, or the
//!   request is refused under [`ClientHeaders::Reject`].
//! - `BUFFERED_PARTIAL` prefix: the rest of the body never reaches this
//!   server, so only the prefix is validated (under the `reject`
//!   duplicate-key policy a second `model` after the prefix goes unseen),
//!   and a prefix that does not decide cannot be told from a truncated
//!   body. Refusing it (413, like a body that does not decide within the
//!   scan limit) is the default because forwarding it sends the request to
//!   the default route; [`UndecidedPrefix::Forward`] does that on purpose
//!   (spoofed headers still removed). The model is never taken from an
//!   unfinished value: the decision is the core's on the prefix.
//! - Without a rewrite the body is never changed, so `content-length` is
//!   left as the client sent it (Envoy keeps it only with
//!   `allow_content_length_header: true`, which the configs in
//!   `deploy/envoy/` set).
//! - After the decision the rest of the body is still validated (under the
//!   `reject` duplicate-key policy); a violation ends the stream with an
//!   `ImmediateResponse` 400 instead of the remaining chunks. The body is
//!   not held for this, so the chunks before the violation have reached
//!   the upstream; with a `content-length` the upstream never sees the body
//!   complete (the chunk that completes it is checked to the end first),
//!   without one (HTTP/2 or chunked clients) a violation detected only at
//!   the end of stream (a truncated body) may come after the last byte was
//!   forwarded. The client gets the 400 either way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::held::{HeldBudget, HeldChunks, SpoolDone, SpoolJob};

use bbr_core::contract::{
    self, BASE_MODEL_HEADER, ClientHeaders, MissingModel, REQUESTED_MODEL_HEADER, Refusal,
};
use bbr_core::encoding::DecodeLimits;
use bbr_core::multipart::PartLimits;
use bbr_core::rewrite::ModelSplicer;
use bbr_core::spool::{Hold, ReservedCost, Spool, SpoolConfig, SpoolFile};
use bbr_core::{
    BodyExtractor, BodyKind, ErrorKind, ExtractError, Limits, Model, Outcome, Progress,
};
use bytes::Bytes;

use crate::error::{Error, UnknownValue, immediate_response};
use crate::mutation::{
    self, Direction, body_reply, headers_reply, immediate_reply, push_streamed, routing_common,
    trailers_reply,
};
use crate::proto::envoy::config::core::v3::{HeaderMap, HeaderValue};
use crate::proto::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use crate::proto::envoy::service::ext_proc::v3::{
    CommonResponse, HeaderMutation, HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest,
    ProcessingResponse, processing_request::Request,
};
use bbr_adapters::AdapterStore;
use bbr_adapters::rewrite::RewritePicker;

use crate::routing::RoutingHeaders;

/// How request bodies arrive when Envoy does not say (`protocol_config` is
/// sent by Envoy ≥ 1.33 on the first message of each stream).
///
/// ```
/// use bbr_extproc::BodyMode;
/// assert_eq!("buffered".parse::<BodyMode>().unwrap(), BodyMode::Buffered);
/// assert_eq!(BodyMode::default().as_str(), "full-duplex-streamed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum BodyMode {
    /// `FULL_DUPLEX_STREAMED`, what the upstream charts configure. The default.
    #[default]
    FullDuplexStreamed,
    /// `STREAMED` (needs `send_body_without_waiting_for_header_response`).
    Streamed,
    /// `BUFFERED`: the whole body in one message.
    Buffered,
}

impl BodyMode {
    /// Stable name: `full-duplex-streamed`, `streamed` or `buffered`.
    ///
    /// ```
    /// assert_eq!(bbr_extproc::BodyMode::Streamed.as_str(), "streamed");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            BodyMode::FullDuplexStreamed => "full-duplex-streamed",
            BodyMode::Streamed => "streamed",
            BodyMode::Buffered => "buffered",
        }
    }
}

impl std::str::FromStr for BodyMode {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            BodyMode::FullDuplexStreamed,
            BodyMode::Streamed,
            BodyMode::Buffered,
        ]
        .into_iter()
        .find(|mode| mode.as_str() == s)
        .ok_or_else(|| {
            UnknownValue::new("body mode", "full-duplex-streamed, streamed or buffered", s)
        })
    }
}

impl std::fmt::Display for BodyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with a `BUFFERED_PARTIAL` prefix (Envoy's buffer limit was
/// reached before the end of the body) that does not decide the model.
///
/// ```
/// use bbr_extproc::UndecidedPrefix;
/// assert_eq!(UndecidedPrefix::default(), UndecidedPrefix::Reject);
/// assert_eq!("forward".parse::<UndecidedPrefix>().unwrap().as_str(), "forward");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum UndecidedPrefix {
    /// 413 `request_too_large`, as for a body that does not decide within
    /// the scan limit. The default.
    #[default]
    Reject,
    /// Forward the request without the model header (default route).
    Forward,
}

impl UndecidedPrefix {
    /// Stable name: `reject` or `forward`.
    ///
    /// ```
    /// assert_eq!(bbr_extproc::UndecidedPrefix::Reject.as_str(), "reject");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            UndecidedPrefix::Reject => "reject",
            UndecidedPrefix::Forward => "forward",
        }
    }
}

impl std::str::FromStr for UndecidedPrefix {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reject" => Ok(UndecidedPrefix::Reject),
            "forward" => Ok(UndecidedPrefix::Forward),
            _ => Err(UnknownValue::new(
                "undecided-prefix policy",
                "reject or forward",
                s,
            )),
        }
    }
}

impl std::fmt::Display for UndecidedPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-process policy shared by every stream.
///
/// ```
/// use bbr_core::contract::{ClientHeaders, MissingModel};
/// use bbr_extproc::{BodyMode, Settings};
/// let settings = Settings::default()
///     .missing_model(MissingModel::Reject)
///     .client_headers(ClientHeaders::Reject)
///     .default_body_mode(BodyMode::Buffered);
/// assert_eq!(settings.missing_model, MissingModel::Reject);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// Extraction limits and the duplicate-key policy.
    pub limits: Limits,
    /// Missing-model policy (default: forward).
    pub missing_model: MissingModel,
    /// Client-sent routing headers: strip (default) or refuse.
    pub client_headers: ClientHeaders,
    /// Body mode assumed when Envoy sends no `protocol_config`.
    pub default_body_mode: BodyMode,
    /// A `BUFFERED_PARTIAL` prefix without a decision: 413 (default) or forward.
    pub undecided_prefix: UndecidedPrefix,
    /// Adapter map for `x-gateway-base-model-name`; `None` sets no base header.
    pub base_models: Option<AdapterStore>,
    /// The headers a decision sets (the plugin chain).
    pub routing: RoutingHeaders,
    /// Time allowed from the first body byte to the routing decision
    /// (default [`Settings::DEFAULT_DECISION_DEADLINE`]); past it: 408.
    pub decision_deadline: Duration,
    /// Cap on body bytes held across every stream of one server (default
    /// [`HeldBudget::DEFAULT_CAP`]); past it: 503 with `Retry-After`.
    pub max_held_bytes: u64,
    /// Bounds on decoding a compressed body (expansion ratio, decoder
    /// window; defaults [`DecodeLimits::new`]); past them: 413.
    pub decode_limits: DecodeLimits,
    /// Bounds on a `multipart/form-data` part's headers (defaults
    /// [`PartLimits::new`]); past them: 400.
    pub part_limits: PartLimits,
    /// Model aliases and weighted rewrites (`InferenceModelRewrite`
    /// rules); `None` rewrites nothing. See [the crate docs](crate).
    pub rewrites: Option<RewritePicker>,
    /// The disk spool of `FULL_DUPLEX_STREAMED` streams: held bytes past
    /// its memory threshold go to a file (see [`held`](crate::held)).
    /// `None` (the library default: whoever drives a [`StreamState`] must
    /// run its [`SpoolJob`]s) holds everything in memory; the binary turns
    /// it on (`--spool-threshold`, 4 MiB).
    pub spool: Option<SpoolConfig>,
    /// Cap on bytes spooled to disk across every stream of one server
    /// (default [`DEFAULT_MAX_SPOOLED_BYTES`](bbr_core::spool::DEFAULT_MAX_SPOOLED_BYTES),
    /// 4 GiB); past it: 503 with `Retry-After`.
    pub max_spooled_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            missing_model: MissingModel::default(),
            client_headers: ClientHeaders::default(),
            default_body_mode: BodyMode::default(),
            undecided_prefix: UndecidedPrefix::default(),
            base_models: None,
            routing: RoutingHeaders::default(),
            decision_deadline: Self::DEFAULT_DECISION_DEADLINE,
            max_held_bytes: HeldBudget::DEFAULT_CAP,
            decode_limits: DecodeLimits::new(),
            part_limits: PartLimits::new(),
            rewrites: None,
            spool: None,
            max_spooled_bytes: bbr_core::spool::DEFAULT_MAX_SPOOLED_BYTES,
        }
    }
}

impl Settings {
    /// 30 s from the first body byte to the decision.
    pub const DEFAULT_DECISION_DEADLINE: Duration = bbr_core::contract::DEFAULT_DECISION_DEADLINE;

    /// Default settings with these limits.
    ///
    /// ```
    /// let settings = bbr_extproc::Settings::new(bbr_core::Limits::new().with_max_scan_bytes(1024));
    /// assert_eq!(settings.limits.max_scan_bytes(), 1024);
    /// ```
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Sets the missing-model policy.
    ///
    /// ```
    /// # use bbr_core::contract::MissingModel;
    /// assert_eq!(bbr_extproc::Settings::default().missing_model(MissingModel::Reject).missing_model, MissingModel::Reject);
    /// ```
    #[must_use]
    pub fn missing_model(mut self, policy: MissingModel) -> Self {
        self.missing_model = policy;
        self
    }

    /// Sets the client-header policy.
    ///
    /// ```
    /// # use bbr_core::contract::ClientHeaders;
    /// assert_eq!(bbr_extproc::Settings::default().client_headers(ClientHeaders::Reject).client_headers, ClientHeaders::Reject);
    /// ```
    #[must_use]
    pub fn client_headers(mut self, policy: ClientHeaders) -> Self {
        self.client_headers = policy;
        self
    }

    /// Sets the body mode assumed without `protocol_config`.
    ///
    /// ```
    /// # use bbr_extproc::BodyMode;
    /// assert_eq!(bbr_extproc::Settings::default().default_body_mode(BodyMode::Streamed).default_body_mode, BodyMode::Streamed);
    /// ```
    #[must_use]
    pub fn default_body_mode(mut self, mode: BodyMode) -> Self {
        self.default_body_mode = mode;
        self
    }

    /// Sets the policy for a `BUFFERED_PARTIAL` prefix that does not decide.
    ///
    /// ```
    /// # use bbr_extproc::UndecidedPrefix;
    /// assert_eq!(bbr_extproc::Settings::default().undecided_prefix(UndecidedPrefix::Forward).undecided_prefix, UndecidedPrefix::Forward);
    /// ```
    #[must_use]
    pub fn undecided_prefix(mut self, policy: UndecidedPrefix) -> Self {
        self.undecided_prefix = policy;
        self
    }

    /// Sets the decision deadline.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let settings = bbr_extproc::Settings::default().decision_deadline(Duration::from_secs(5));
    /// assert_eq!(settings.decision_deadline, Duration::from_secs(5));
    /// ```
    #[must_use]
    pub fn decision_deadline(mut self, deadline: Duration) -> Self {
        self.decision_deadline = deadline;
        self
    }

    /// Sets the cap on bytes held across all streams.
    ///
    /// ```
    /// assert_eq!(bbr_extproc::Settings::default().max_held_bytes(1 << 20).max_held_bytes, 1 << 20);
    /// ```
    #[must_use]
    pub fn max_held_bytes(mut self, cap: u64) -> Self {
        self.max_held_bytes = cap;
        self
    }

    /// Sets the decoding limits for compressed bodies.
    ///
    /// ```
    /// use bbr_core::encoding::DecodeLimits;
    /// let settings = bbr_extproc::Settings::default().decode_limits(DecodeLimits::new().with_max_ratio(20));
    /// assert_eq!(settings.decode_limits.max_ratio(), 20);
    /// ```
    #[must_use]
    pub fn decode_limits(mut self, limits: DecodeLimits) -> Self {
        self.decode_limits = limits;
        self
    }

    /// Sets the part header limits for `multipart/form-data` bodies.
    ///
    /// ```
    /// use bbr_core::multipart::PartLimits;
    /// let settings = bbr_extproc::Settings::default().part_limits(PartLimits::new().with_max_headers(4));
    /// assert_eq!(settings.part_limits, PartLimits::new().with_max_headers(4));
    /// ```
    #[must_use]
    pub fn part_limits(mut self, limits: PartLimits) -> Self {
        self.part_limits = limits;
        self
    }

    /// Sets the headers a decision sets.
    ///
    /// ```
    /// let routing = bbr_extproc::RoutingHeaders::new(Some("x-model"), false).unwrap();
    /// let settings = bbr_extproc::Settings::default().routing(routing);
    /// assert_eq!(settings.routing.model(), Some("x-model"));
    /// ```
    #[must_use]
    pub fn routing(mut self, routing: RoutingHeaders) -> Self {
        self.routing = routing;
        self
    }

    /// Sets the adapter map.
    ///
    /// ```
    /// let store = bbr_adapters::AdapterStore::from_map(bbr_adapters::AdapterMap::new());
    /// assert!(bbr_extproc::Settings::default().base_models(store).base_models.is_some());
    /// ```
    #[must_use]
    pub fn base_models(mut self, map: AdapterStore) -> Self {
        self.base_models = Some(map);
        self
    }

    /// Spools held bytes past `config`'s memory threshold to disk
    /// (`FULL_DUPLEX_STREAMED`); `None` holds them in memory.
    ///
    /// ```
    /// use bbr_core::spool::SpoolConfig;
    /// let settings = bbr_extproc::Settings::default().spool(Some(SpoolConfig::new()));
    /// assert_eq!(settings.spool.unwrap().memory_threshold(), 4 << 20);
    /// ```
    #[must_use]
    pub fn spool(mut self, config: Option<SpoolConfig>) -> Self {
        self.spool = config;
        self
    }

    /// Sets the cap on bytes spooled to disk across all streams.
    ///
    /// ```
    /// assert_eq!(bbr_extproc::Settings::default().max_spooled_bytes(1 << 30).max_spooled_bytes, 1 << 30);
    /// ```
    #[must_use]
    pub fn max_spooled_bytes(mut self, cap: u64) -> Self {
        self.max_spooled_bytes = cap;
        self
    }

    /// Rewrites the requested model by these rules (reloads are seen at
    /// once): routing headers from the target, the requested name in
    /// [`REQUESTED_MODEL_HEADER`], only the `model` token of the body
    /// replaced, `content-length` corrected.
    ///
    /// ```
    /// use bbr_adapters::rewrite::{RewritePicker, RewriteRules, RewriteStore};
    /// let rules = RewriteRules::from_yaml_str(
    ///     "kind: InferenceModelRewrite\nspec: {rules: [{matches: [{model: {value: gpt-4o}}], targets: [{modelRewrite: llama-3}]}]}",
    ///     "inline",
    /// )?;
    /// let picker = RewritePicker::new(RewriteStore::from_rules(rules));
    /// let settings = bbr_extproc::Settings::default().model_rewrites(picker);
    /// assert!(settings.rewrites.is_some());
    /// # Ok::<(), bbr_adapters::LoadError>(())
    /// ```
    #[must_use]
    pub fn model_rewrites(mut self, picker: RewritePicker) -> Self {
        self.rewrites = Some(picker);
        self
    }
}

/// A rewrite rule that decided a request's model (the core's record, as
/// the tower layer's extension is).
pub use bbr_core::rewrite::ModelRewrite;

/// How a request ended, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Routed by this model.
    Found(Model),
    /// A valid body without `model`, forwarded without the header.
    Absent,
    /// No body (GET, empty body, or a body mode that sends none).
    NoBody,
    /// Refused with an HTTP error.
    Rejected(Refusal),
}

impl Verdict {
    /// Stable label: `found`, `absent`, `no_body`, or the error code.
    ///
    /// ```
    /// use bbr_extproc::Verdict;
    /// assert_eq!(Verdict::Rejected(bbr_core::contract::Refusal::MissingModel).label(), "missing_model");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Found(_) => "found",
            Verdict::Absent => "absent",
            Verdict::NoBody => "no_body",
            Verdict::Rejected(r) => r.code(),
        }
    }
}

/// What the stream did, read by the server when the stream ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The final verdict (`None` if the stream ended before one).
    pub verdict: Option<Verdict>,
    /// Body bytes read when the routing decision was taken.
    pub bytes_before_decision: u64,
    /// Time spent inside the extractor (all chunks).
    pub extract_time: Duration,
    /// Time spent building the routing headers once the model was found
    /// (the adapter-map lookup included): the `base-model-to-header`
    /// plugin's share, for `bbr_plugin_duration_seconds`.
    pub header_time: Duration,
    /// The body had an empty `model` (counted like upstream's `field_empty`).
    pub empty_model: bool,
    /// True when a `STREAMED` request arrived without
    /// `send_body_without_waiting_for_header_response`, so it could not be
    /// routed by body.
    pub unroutable_mode: bool,
    /// How the body was read, from the request's `content-type` and
    /// `content-encoding` (`None` before the request headers).
    pub body_kind: Option<BodyKind>,
    /// The rewrite rule that decided the model routed on, if one matched
    /// and applied ([`Verdict::Found`] holds the target).
    pub rewrite: Option<ModelRewrite>,
    /// Body bytes that went to the disk spool before the decision.
    pub spooled_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    Streamed { early_body: bool },
    Buffered,
    BufferedPartial,
    FullDuplex,
}

impl Mode {
    fn from_proto(raw: i32) -> Result<Self, Error> {
        match BodySendMode::try_from(raw) {
            Ok(BodySendMode::None) => Ok(Mode::None),
            Ok(BodySendMode::Streamed) => Ok(Mode::Streamed { early_body: false }),
            Ok(BodySendMode::Buffered) => Ok(Mode::Buffered),
            Ok(BodySendMode::BufferedPartial) => Ok(Mode::BufferedPartial),
            Ok(BodySendMode::FullDuplexStreamed) => Ok(Mode::FullDuplex),
            _ => Err(Error::UnsupportedBodyMode(raw)),
        }
    }

    fn from_default(mode: BodyMode) -> Self {
        match mode {
            BodyMode::FullDuplexStreamed => Mode::FullDuplex,
            // Without protocol_config there is no way to know; assume Envoy
            // is configured as documented.
            BodyMode::Streamed => Mode::Streamed { early_body: true },
            BodyMode::Buffered => Mode::Buffered,
        }
    }
}

/// Where the request side of the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing received yet.
    AwaitHeaders,
    /// Headers reply held until the decision (full duplex, early streamed).
    Holding,
    /// Headers reply sent; body chunks answered as they come.
    Flowing,
    /// `BUFFERED`: headers answered, the whole body comes in one message.
    AwaitBuffered,
    /// Body answered (`BUFFERED`) or none coming (`NONE`); only trailers
    /// may follow.
    AwaitTrailers,
    /// Request side complete.
    Ended,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::AwaitHeaders => "awaiting request headers",
            Phase::Holding => "holding the headers reply",
            Phase::Flowing => "streaming the request body",
            Phase::AwaitBuffered => "awaiting the buffered body",
            Phase::AwaitTrailers => "awaiting request trailers",
            Phase::Ended => "the request was complete",
        }
    }
}

/// The state of one ext_proc stream. Feed each `ProcessingRequest` to
/// [`StreamState::on_request`]; send the replies it pushes, in order.
///
/// ```
/// use bbr_extproc::{Settings, StreamState};
/// use bbr_extproc::proto::envoy::service::ext_proc::v3::{HttpHeaders, ProcessingRequest, processing_request::Request};
///
/// let mut stream = StreamState::new(Settings::default().into());
/// let mut out = Vec::new();
/// // A GET: headers with end_of_stream are answered at once.
/// let get = ProcessingRequest {
///     request: Some(Request::RequestHeaders(HttpHeaders { end_of_stream: true, ..Default::default() })),
///     ..Default::default()
/// };
/// stream.on_request(get, &mut out).unwrap();
/// assert_eq!(out.len(), 1);
/// assert_eq!(stream.report().verdict.as_ref().unwrap().label(), "no_body");
/// ```
#[derive(Debug)]
pub struct StreamState {
    settings: Arc<Settings>,
    /// Chosen again from the request headers' content headers.
    extractor: BodyExtractor,
    phase: Phase,
    mode: Mode,
    response_full_duplex: bool,
    /// Client-sent routing headers: (canonical name, name as sent).
    spoofed: Vec<(&'static str, String)>,
    /// The client sent the configured model header (when it is not one of
    /// the contract's routing headers), lower case.
    spoofed_custom: Option<String>,
    /// The client's `content-length`: a sized body is known complete (and
    /// checked to its end) on the chunk that reaches it, before that chunk
    /// is forwarded, even if Envoy signals the end in a later message.
    content_length: Option<u64>,
    /// `finish()` was called: the end of the body was validated.
    body_checked: bool,
    /// Full duplex: chunks held until the decision.
    held: HeldChunks,
    /// Shared by every stream of a server; `reserved` is this stream's part.
    budget: Arc<HeldBudget>,
    reserved: ReservedCost,
    /// A body byte arrived (the decision deadline runs from here).
    body_started: bool,
    /// Streamed: body replies owed to Envoy (it holds the bytes itself).
    owed_replies: usize,
    decided: bool,
    finished: bool,
    report: Report,
    /// Rewrites: the sticky header's value, if the client sent it.
    sticky_value: Option<Bytes>,
    /// Rewrites: the client sent [`REQUESTED_MODEL_HEADER`] (lower case).
    spoofed_requested: Option<String>,
    /// Rewrites: the splice still to apply to the held and deciding chunks.
    splicer: Option<ModelSplicer>,
    /// `STREAMED` with rewrites: the length of each held chunk, so that each
    /// gets its own reply (Envoy answers chunk by chunk).
    held_lengths: Vec<usize>,
    /// Full duplex with a spool: held chunks past its threshold.
    spool: Option<Spool>,
    /// Shared by every stream of a server (the disk cap); `disk_reserved`
    /// is this stream's part.
    disk: Arc<HeldBudget>,
    disk_reserved: u64,
    /// After a decision on a spooled body: what is still to be sent.
    replay: Option<Replay>,
}

/// The replay of a spooled body after its decision: the file, then the
/// chunks whose write had not run, then `tail`.
#[derive(Debug)]
struct Replay {
    /// The spool until the write that was out at the decision is back.
    spool: Option<Spool>,
    /// The file, while no read is out and bytes remain.
    file: Option<SpoolFile>,
    reading: bool,
    /// Spooled chunks never written: they follow the file.
    rest: Vec<Bytes>,
    /// Replies after the spooled bytes: the deciding chunk, later chunks,
    /// the trailers reply.
    tail: Vec<ProcessingResponse>,
}

impl StreamState {
    /// A new stream with a budget of its own (`settings.max_held_bytes`).
    ///
    /// ```
    /// let stream = bbr_extproc::StreamState::new(Default::default());
    /// assert_eq!(stream.held_bytes(), 0);
    /// ```
    pub fn new(settings: Arc<Settings>) -> Self {
        let budget = Arc::new(HeldBudget::new(settings.max_held_bytes));
        Self::with_budget(settings, budget)
    }

    /// A new stream holding its chunks in `budget`, shared with other streams.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use bbr_extproc::{HeldBudget, Settings, StreamState};
    /// let budget = Arc::new(HeldBudget::new(1 << 20));
    /// let stream = StreamState::with_budget(Arc::new(Settings::default()), budget.clone());
    /// assert_eq!(budget.held(), stream.held_memory());
    /// ```
    pub fn with_budget(settings: Arc<Settings>, budget: Arc<HeldBudget>) -> Self {
        let extractor = BodyExtractor::for_content(None, None, settings.limits);
        let disk = Arc::new(HeldBudget::new(settings.max_spooled_bytes));
        Self {
            settings,
            extractor,
            phase: Phase::AwaitHeaders,
            mode: Mode::FullDuplex,
            response_full_duplex: false,
            spoofed: Vec::new(),
            spoofed_custom: None,
            content_length: None,
            body_checked: false,
            held: HeldChunks::default(),
            budget,
            reserved: ReservedCost::new(),
            body_started: false,
            owed_replies: 0,
            decided: false,
            finished: false,
            report: Report::default(),
            sticky_value: None,
            spoofed_requested: None,
            splicer: None,
            held_lengths: Vec::new(),
            spool: None,
            disk,
            disk_reserved: 0,
            replay: None,
        }
    }

    /// Spools into `disk`, the disk cap shared with other streams (instead
    /// of a cap of its own of `settings.max_spooled_bytes`).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use bbr_extproc::{HeldBudget, StreamState};
    /// let disk = Arc::new(HeldBudget::new(1 << 30));
    /// let stream = StreamState::new(Default::default()).with_disk_budget(disk);
    /// assert_eq!(stream.spooled_bytes(), 0);
    /// ```
    #[must_use]
    pub fn with_disk_budget(mut self, disk: Arc<HeldBudget>) -> Self {
        self.disk = disk;
        self
    }

    /// Body bytes of this stream on disk or bound for it (reserved from
    /// the disk cap): 0 unless the stream spools, and going down as the
    /// file is read back.
    pub fn spooled_bytes(&self) -> u64 {
        self.disk_reserved
    }

    /// The next blocking job of the disk spool, if one can run now: a
    /// write while holding, a read during the replay. At most one is out:
    /// the next comes after [`on_spool_done`](Self::on_spool_done).
    pub fn next_spool_job(&mut self) -> Option<SpoolJob> {
        if self.finished {
            return None;
        }
        if let Some(replay) = &mut self.replay {
            if replay.spool.is_some() || replay.reading {
                return None;
            }
            let file = replay.file.take()?;
            replay.reading = true;
            return Some(SpoolJob::Read(file));
        }
        self.spool.as_mut()?.next_write().map(SpoolJob::Write)
    }

    /// Takes back a [`SpoolJob`] that ran, pushing the replies it allows
    /// (during the replay: the bytes read, and once the file is read, the
    /// rest). A failed or lost job refuses the request with 503
    /// `overloaded`, logged at `warn`.
    pub fn on_spool_done(&mut self, done: SpoolDone, out: &mut Vec<ProcessingResponse>) {
        if self.finished {
            return;
        }
        match done {
            SpoolDone::Written(written) => {
                let spool = match &mut self.replay {
                    Some(replay) => replay.spool.as_mut(),
                    None => self.spool.as_mut(),
                };
                let Some(spool) = spool else {
                    return;
                };
                let written = spool.write_done(written);
                let cost = spool.memory_cost();
                if let Err(error) = written {
                    self.spool_failed(&error, out);
                    return;
                }
                if self.replay.is_some() {
                    self.advance_replay(out);
                } else if !self.reserve_exactly(self.held.memory() + cost) {
                    self.reject(Refusal::Overloaded, out);
                }
            }
            SpoolDone::Read(file, read) => {
                let Some(replay) = self.replay.as_mut() else {
                    return;
                };
                replay.reading = false;
                match read {
                    Ok(Some(bytes)) => {
                        let len = bytes.len() as u64;
                        push_streamed(out, Direction::Request, &bytes, false);
                        replay.file = Some(file);
                        self.release_disk(len);
                    }
                    Ok(None) => {}
                    Err(error) => return self.spool_failed(&error, out),
                }
                self.advance_replay(out);
            }
            SpoolDone::Lost => {
                tracing::warn!("a spool job did not finish; refusing the request (503)");
                self.reject(Refusal::Overloaded, out);
            }
        }
    }

    /// False while the server should not read the next message of the
    /// stream: a spool write is behind (back-pressure), or a spooled body
    /// is being replayed. A job is out or available whenever it is false.
    pub fn wants_request(&self) -> bool {
        !self.finished
            && self.replay.is_none()
            && !self.spool.as_ref().is_some_and(Spool::must_wait)
    }

    fn spool_failed(
        &mut self,
        error: &bbr_core::spool::SpoolError,
        out: &mut Vec<ProcessingResponse>,
    ) {
        let source = error.cause().to_string();
        tracing::warn!(%error, source = source.as_str(), "disk spool failed; refusing the request (503)");
        self.reject(Refusal::Overloaded, out);
    }

    fn release_disk(&mut self, bytes: u64) {
        let bytes = bytes.min(self.disk_reserved);
        self.disk.release(bytes);
        self.disk_reserved -= bytes;
    }

    /// Keeps the stream's reservation from the held budget at `want`.
    fn reserve_exactly(&mut self, want: u64) -> bool {
        self.reserved.reserve_exactly(&mut &*self.budget, want)
    }

    /// Moves the replay on as far as it goes without I/O: takes the file
    /// once the last write is back, and sends the rest once it is read.
    fn advance_replay(&mut self, out: &mut Vec<ProcessingResponse>) {
        let Some(replay) = self.replay.as_mut() else {
            return;
        };
        let mut unwritten = 0;
        if let Some(spool) = replay.spool.take_if(|spool| !spool.is_writing()) {
            let (file, rest) = spool.into_parts();
            // Sent from memory: no longer on (or bound for) the disk.
            unwritten = rest.iter().map(|chunk| chunk.len() as u64).sum();
            replay.file = file.filter(|file| file.remaining() > 0);
            replay.rest = rest;
        }
        let waiting = replay.spool.is_some() || replay.reading || replay.file.is_some();
        self.release_disk(unwritten);
        if waiting {
            return;
        }
        let Some(replay) = self.replay.take() else {
            return;
        };
        for chunk in &replay.rest {
            push_streamed(out, Direction::Request, chunk, false);
        }
        out.extend(replay.tail);
        self.release_disk(self.disk_reserved);
        self.release_budget();
    }

    /// True once an `ImmediateResponse` was sent: the stream should end.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// True while Envoy is owed a reply for something it sent (held headers
    /// or body). After the end of the request body this is always false.
    pub fn is_holding(&self) -> bool {
        !self.finished
            && (self.held.pieces() > 0
                || self.owed_replies > 0
                || self.phase == Phase::Holding
                || self.replay.is_some())
    }

    /// Body bytes this process holds for the stream (full duplex, before
    /// the decision; bounded by the scan limit).
    pub fn held_bytes(&self) -> u64 {
        self.held.bytes()
    }

    /// Memory those bytes take (buffers and per-piece overhead included):
    /// what is reserved from the [`HeldBudget`].
    pub fn held_memory(&self) -> u64 {
        self.reserved.bytes()
    }

    /// Held pieces (chunks of at least
    /// [`COALESCE_BELOW`](crate::held::COALESCE_BELOW) bytes, and buffers of
    /// smaller ones).
    pub fn held_pieces(&self) -> usize {
        self.held.pieces()
    }

    /// True from the first body byte until the decision: the decision
    /// deadline runs.
    pub fn awaiting_decision(&self) -> bool {
        self.body_started && !self.decided && !self.finished
    }

    /// The decision deadline passed: refuses the request with 408 if it is
    /// still [awaiting its decision](Self::awaiting_decision), and returns
    /// whether it did.
    pub fn on_deadline(&mut self, out: &mut Vec<ProcessingResponse>) -> bool {
        if !self.awaiting_decision() {
            return false;
        }
        let deadline = self.settings.decision_deadline;
        self.reject(Refusal::DecisionTimeout { deadline }, out);
        true
    }

    /// What happened so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Handles one message from Envoy, pushing zero or more replies to `out`.
    ///
    /// An `Err` means the conversation is broken (unknown or out-of-order
    /// message): end the stream with the error's gRPC status.
    pub fn on_request(
        &mut self,
        request: ProcessingRequest,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Error> {
        if self.finished {
            // After an ImmediateResponse Envoy no longer listens.
            return Ok(());
        }
        if request.observability_mode {
            // Envoy only observes: it expects no replies and applies none.
            let mut ignored = Vec::new();
            let result = self.on_message(request, &mut ignored);
            return result;
        }
        self.on_message(request, out)
    }

    fn on_message(
        &mut self,
        request: ProcessingRequest,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Error> {
        let Some(message) = request.request else {
            return Err(Error::UnknownRequestType);
        };
        match message {
            Request::RequestHeaders(headers) => {
                self.learn_modes(&request.protocol_config)?;
                self.on_request_headers(&headers, out)
            }
            Request::RequestBody(body) => self.on_request_body(body, out),
            Request::RequestTrailers(trailers) => self.on_request_trailers(&trailers, out),
            Request::ResponseHeaders(_) => {
                out.push(headers_reply(Direction::Response, None));
                Ok(())
            }
            Request::ResponseBody(body) => {
                if self.response_full_duplex {
                    push_streamed(out, Direction::Response, &body.body, body.end_of_stream);
                } else {
                    out.push(body_reply(Direction::Response, None));
                }
                Ok(())
            }
            Request::ResponseTrailers(_) => {
                out.push(trailers_reply(
                    Direction::Response,
                    HeaderMutation::default(),
                ));
                Ok(())
            }
        }
    }

    fn learn_modes(
        &mut self,
        config: &Option<crate::proto::envoy::service::ext_proc::v3::ProtocolConfiguration>,
    ) -> Result<(), Error> {
        match config {
            Some(config) => {
                self.mode = match Mode::from_proto(config.request_body_mode)? {
                    Mode::Streamed { .. } => Mode::Streamed {
                        early_body: config.send_body_without_waiting_for_header_response,
                    },
                    other => other,
                };
                self.response_full_duplex =
                    config.response_body_mode == BodySendMode::FullDuplexStreamed as i32;
            }
            None => {
                self.mode = Mode::from_default(self.settings.default_body_mode);
                self.response_full_duplex = self.mode == Mode::FullDuplex;
            }
        }
        Ok(())
    }

    fn unexpected(&self, got: &'static str) -> Error {
        Error::UnexpectedMessage {
            got,
            state: self.phase.name(),
        }
    }

    fn on_request_headers(
        &mut self,
        headers: &HttpHeaders,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Error> {
        if self.phase != Phase::AwaitHeaders {
            return Err(self.unexpected("request headers"));
        }
        self.spoofed = routing_headers_in(&headers.headers);
        self.spoofed_custom = self.custom_header_in(&headers.headers);
        let fields = |name: &'static str| {
            headers
                .headers
                .iter()
                .flat_map(|map| &map.headers)
                .filter(move |header| header.key.eq_ignore_ascii_case(name))
                .map(header_value)
        };
        if let Some(value) = fields("content-length").last() {
            self.content_length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        }
        let settings = &self.settings;
        // Which content-type and content-encoding fields count: the core's rule.
        self.extractor = BodyExtractor::for_headers(
            fields("content-type"),
            fields("content-encoding"),
            settings.limits,
        )
        .with_decode_limits(settings.decode_limits)
        .with_part_limits(settings.part_limits);
        self.report.body_kind = Some(self.extractor.kind());
        self.learn_rewrite_headers(headers);
        if self.settings.client_headers == ClientHeaders::Reject
            && let Some(canonical) = self.spoofed.first().map(|(canonical, _)| *canonical)
        {
            self.phase = Phase::Ended;
            self.reject(Refusal::RoutingHeader(canonical), out);
            return Ok(());
        }
        if headers.end_of_stream {
            self.decide_without_body(out);
            self.phase = Phase::Ended;
            return Ok(());
        }
        let limit = self.settings.limits.max_body_bytes();
        if self.content_length.is_some_and(|length| length > limit) {
            // Refused before Envoy sends (or buffers) a single body byte.
            self.phase = Phase::Ended;
            let error = ExtractError::new(ErrorKind::BodyTooLarge { limit }, limit);
            self.reject(error.into(), out);
            return Ok(());
        }
        match self.mode {
            // No body comes; trailers may.
            Mode::None => self.decide_without_body(out),
            Mode::Buffered | Mode::BufferedPartial => {
                out.push(headers_reply(Direction::Request, None));
                self.phase = Phase::AwaitBuffered;
            }
            Mode::Streamed { early_body: false } => {
                // Envoy sends no body before this reply, so the route cannot
                // wait for the model; at least strip spoofed headers.
                self.report.unroutable_mode = true;
                out.push(headers_reply(
                    Direction::Request,
                    routing_common(self.strip_spoofed()),
                ));
                self.phase = Phase::Flowing;
            }
            Mode::Streamed { early_body: true } | Mode::FullDuplex => self.phase = Phase::Holding,
        }
        Ok(())
    }

    /// With rewrites configured: the sticky header's value, and whether the
    /// client sent its own [`REQUESTED_MODEL_HEADER`] (always removed).
    fn learn_rewrite_headers(&mut self, headers: &HttpHeaders) {
        let Some(picker) = &self.settings.rewrites else {
            return;
        };
        let sticky = picker.sticky_header();
        for header in headers.headers.iter().flat_map(|map| &map.headers) {
            let key = header.key.as_str();
            if key.eq_ignore_ascii_case(REQUESTED_MODEL_HEADER) {
                self.spoofed_requested = Some(key.to_ascii_lowercase());
            } else if sticky.is_some_and(|name| key.eq_ignore_ascii_case(name))
                && self.sticky_value.is_none()
            {
                self.sticky_value = Some(Bytes::copy_from_slice(header_value(header)));
            }
        }
    }

    fn decide_without_body(&mut self, out: &mut Vec<ProcessingResponse>) {
        self.decided = true;
        self.report.verdict = Some(Verdict::NoBody);
        out.push(headers_reply(
            Direction::Request,
            routing_common(self.strip_spoofed()),
        ));
        self.phase = Phase::AwaitTrailers;
    }

    fn on_request_body(
        &mut self,
        body: HttpBody,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Error> {
        match self.phase {
            Phase::AwaitBuffered => self.on_buffered_body(body, out),
            Phase::Holding | Phase::Flowing => self.on_streamed_body(body, out),
            Phase::AwaitHeaders | Phase::AwaitTrailers | Phase::Ended => {
                Err(self.unexpected("request body"))
            }
        }
    }

    /// `BUFFERED`: the one body message is the whole body (trailers may
    /// still follow, so `end_of_stream` may be false). `BUFFERED_PARTIAL`
    /// without `end_of_stream`: a prefix, decided from what it holds.
    fn on_buffered_body(
        &mut self,
        body: HttpBody,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Error> {
        self.phase = if body.end_of_stream {
            Phase::Ended
        } else {
            Phase::AwaitTrailers
        };
        if body.body.is_empty() {
            self.decided = true;
            self.report.verdict = Some(Verdict::NoBody);
            out.push(body_reply(
                Direction::Request,
                routing_common(self.strip_spoofed()),
            ));
            return Ok(());
        }
        let result = if self.mode == Mode::BufferedPartial && !body.end_of_stream {
            self.decide_prefix(&body.body)
        } else {
            self.feed(&body.body)
                .and_then(|_| self.finish())
                .and_then(|outcome| self.accept(outcome))
        };
        let result = result.and_then(|mutation| {
            let body = self.splice_whole(&body.body)?;
            Ok((mutation, body))
        });
        match result {
            Ok((mutation, None)) => {
                out.push(body_reply(Direction::Request, routing_common(mutation)));
            }
            Ok((mutation, Some(spliced))) => {
                let mut common = routing_common(mutation).unwrap_or_default();
                common.body_mutation = Some(mutation::replace_body(spliced));
                out.push(body_reply(Direction::Request, Some(common)));
            }
            Err(refusal) => self.reject(refusal, out),
        }
        Ok(())
    }

    /// `BUFFERED` / `BUFFERED_PARTIAL`: the one body message with the
    /// model token replaced, when a rewrite was decided (one copy: a reply
    /// carries one body).
    fn splice_whole(&mut self, body: &Bytes) -> Result<Option<Bytes>, Refusal> {
        let Some(mut splicer) = self.splicer.take() else {
            return Ok(None);
        };
        match splicer.push(body) {
            Ok(pieces) => Ok(Some(pieces.collect::<Vec<_>>().concat().into())),
            Err(_) => Err(splice_failed(body.len() as u64)),
        }
    }

    /// A `BUFFERED_PARTIAL` prefix: the core's decision on it, or the
    /// [`UndecidedPrefix`] policy. Never `finish()`: the body goes on.
    fn decide_prefix(&mut self, prefix: &Bytes) -> Result<HeaderMutation, Refusal> {
        match self.feed(prefix)? {
            Progress::Found(model) => self.accept(Outcome::Found(model)),
            Progress::Absent => self.accept(Outcome::Absent),
            _ => match self.settings.undecided_prefix {
                UndecidedPrefix::Forward => {
                    self.decided = true;
                    self.report.bytes_before_decision = self.extractor.bytes_consumed();
                    self.report.verdict = Some(Verdict::Absent);
                    Ok(self.strip_spoofed())
                }
                UndecidedPrefix::Reject => {
                    let length = self.extractor.bytes_consumed();
                    Err(ExtractError::new(ErrorKind::ScanLimit { limit: length }, length).into())
                }
            },
        }
    }

    /// `FULL_DUPLEX_STREAMED` and `STREAMED`.
    fn on_streamed_body(
        &mut self,
        body: HttpBody,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Error> {
        let HttpBody {
            body: chunk,
            end_of_stream,
            ..
        } = body;
        if !chunk.is_empty() {
            self.body_started = true;
        }
        let verdict = self.scan_chunk(&chunk, end_of_stream);
        if let Err(refusal) = verdict {
            self.reject(refusal, out);
            return Ok(());
        }
        if end_of_stream {
            self.phase = Phase::Ended;
        }
        match verdict {
            Ok(Some(mutation)) => {
                // Decided on this chunk: release everything in order.
                self.release(mutation, Some((chunk, end_of_stream)), out);
            }
            Ok(None) if self.decided || self.phase == Phase::Flowing => {
                self.forward(chunk, end_of_stream, out);
            }
            Ok(None) => self.hold(chunk, out),
            Err(_) => unreachable!("handled above"),
        }
        Ok(())
    }

    fn on_request_trailers(
        &mut self,
        trailers: &HttpTrailers,
        out: &mut Vec<ProcessingResponse>,
    ) -> Result<(), Error> {
        if matches!(self.phase, Phase::AwaitHeaders | Phase::Ended) {
            return Err(self.unexpected("request trailers"));
        }
        let smuggled = routing_headers_in(&trailers.trailers);
        if self.settings.client_headers == ClientHeaders::Reject
            && let Some(canonical) = smuggled.first().map(|(canonical, _)| *canonical)
        {
            self.phase = Phase::Ended;
            self.reject(Refusal::RoutingHeader(canonical), out);
            return Ok(());
        }
        match self.phase {
            Phase::Holding | Phase::Flowing => {
                self.phase = Phase::Ended;
                match self.scan_end() {
                    Err(refusal) => {
                        self.reject(refusal, out);
                        return Ok(());
                    }
                    Ok(Some(mutation)) => self.release(mutation, None, out),
                    Ok(None) => {}
                }
            }
            Phase::AwaitBuffered => {
                // Trailers without a body.
                self.phase = Phase::Ended;
                self.decided = true;
                self.report.verdict = Some(Verdict::NoBody);
                out.push(body_reply(
                    Direction::Request,
                    routing_common(self.strip_spoofed()),
                ));
            }
            Phase::AwaitTrailers => self.phase = Phase::Ended,
            Phase::AwaitHeaders | Phase::Ended => unreachable!("refused above"),
        }
        let mutation = HeaderMutation {
            set_headers: Vec::new(),
            remove_headers: smuggled
                .into_iter()
                .map(|(_, sent)| sent)
                .chain(self.custom_header_in(&trailers.trailers))
                .chain(self.requested_header_in(&trailers.trailers))
                .collect(),
        };
        self.request_replies(out)
            .push(trailers_reply(Direction::Request, mutation));
        Ok(())
    }

    /// Feeds one streamed chunk; `Ok(Some(mutation))` when this chunk took
    /// the routing decision.
    fn scan_chunk(
        &mut self,
        chunk: &Bytes,
        end_of_stream: bool,
    ) -> Result<Option<HeaderMutation>, Refusal> {
        if self.body_checked && chunk.is_empty() {
            // The end of stream after a sized body was already checked.
            return Ok(None);
        }
        // An empty chunk says nothing (and an encoding not decoded would
        // take it for a body without a model).
        let progress = if chunk.is_empty() {
            Progress::NeedMore
        } else {
            self.feed(chunk)?
        };
        let mut decision = match progress {
            Progress::Found(model) if !self.decided => Some(self.accept(Outcome::Found(model))?),
            Progress::Absent if !self.decided => Some(self.accept(Outcome::Absent)?),
            _ => None,
        };
        let complete = end_of_stream
            || self
                .content_length
                .is_some_and(|length| self.extractor.bytes_consumed() >= length);
        if complete && let Some(end) = self.scan_end()? {
            decision = Some(end);
        }
        Ok(decision)
    }

    /// End of the request body: the final verdict, or the validation of the
    /// tail after an earlier decision.
    fn scan_end(&mut self) -> Result<Option<HeaderMutation>, Refusal> {
        if std::mem::replace(&mut self.body_checked, true) {
            return Ok(None);
        }
        if !self.decided && self.extractor.bytes_consumed() == 0 {
            self.decided = true;
            self.report.verdict = Some(Verdict::NoBody);
            return Ok(Some(self.strip_spoofed()));
        }
        let outcome = self.finish()?;
        if self.decided {
            return Ok(None);
        }
        self.accept(outcome).map(Some)
    }

    fn feed(&mut self, chunk: &Bytes) -> Result<Progress, Refusal> {
        let start = Instant::now();
        let result = self.extractor.feed(chunk);
        self.report.extract_time += start.elapsed();
        result.map_err(|e| self.note_error(e))
    }

    fn finish(&mut self) -> Result<Outcome, Refusal> {
        let start = Instant::now();
        let result = self.extractor.finish();
        self.report.extract_time += start.elapsed();
        result.map_err(|e| self.note_error(e))
    }

    fn note_error(&mut self, error: ExtractError) -> Refusal {
        if error.kind() == ErrorKind::EmptyModel {
            self.report.empty_model = true;
        }
        Refusal::Extract(error)
    }

    /// Takes the routing decision and builds its header mutation.
    fn accept(&mut self, outcome: Outcome) -> Result<HeaderMutation, Refusal> {
        self.decided = true;
        self.report.bytes_before_decision = self.extractor.bytes_consumed();
        match outcome {
            Outcome::Found(model) => {
                let start = Instant::now();
                let requested = model.bytes().clone();
                let model = self.pick_rewrite(model);
                let mut mutation = self.model_mutation(&model);
                if self.settings.rewrites.is_some() {
                    self.rewrite_headers(&mut mutation, requested);
                }
                self.report.header_time = start.elapsed();
                self.report.verdict = Some(Verdict::Found(model));
                Ok(mutation)
            }
            Outcome::Absent if self.settings.missing_model == MissingModel::Reject => {
                Err(Refusal::MissingModel)
            }
            Outcome::Absent => {
                self.report.verdict = Some(Verdict::Absent);
                Ok(self.strip_spoofed())
            }
            // `Outcome` is non-exhaustive: a future kind of outcome routes
            // nothing.
            _ => {
                self.report.verdict = Some(Verdict::Absent);
                Ok(self.strip_spoofed())
            }
        }
    }

    /// The model to route on: a rewrite rule's target when one matches,
    /// applies (the requested name's token is in the forwarded bytes: not a
    /// compressed body or a form field) and the route can still change;
    /// the splice is kept for the body.
    fn pick_rewrite(&mut self, model: Model) -> Model {
        let Some(picker) = &self.settings.rewrites else {
            return model;
        };
        if self.report.unroutable_mode {
            return model;
        }
        if self.spool.as_ref().is_some_and(Spool::is_spooling) {
            // Its bytes are on disk: routed as requested (see `held`).
            return model;
        }
        let Some(decision) = picker.pick(model.as_str(), self.sticky_value.as_deref()) else {
            return model;
        };
        if decision.target() == model.as_str() {
            self.report.rewrite = Some(ModelRewrite::from_shared(
                decision.rule_shared(),
                Arc::from(model.as_str()),
                decision.target_shared(),
            ));
            return model;
        }
        let Ok(splicer) = ModelSplicer::for_model(&model, decision.target()) else {
            return model;
        };
        // Rule targets are validated when the rules load.
        let Ok(target) = Model::from_name(decision.target(), &Limits::new()) else {
            return model;
        };
        self.splicer = Some(splicer);
        self.report.rewrite = Some(ModelRewrite::from_shared(
            decision.rule_shared(),
            Arc::from(model.as_str()),
            decision.target_shared(),
        ));
        target
    }

    /// With rewrites configured: the requested name in
    /// [`REQUESTED_MODEL_HEADER`] (overwriting the client's), and the new
    /// `content-length` when the body changes.
    fn rewrite_headers(&self, mutation: &mut HeaderMutation, requested: Bytes) {
        mutation
            .remove_headers
            .retain(|sent| sent != REQUESTED_MODEL_HEADER);
        mutation
            .set_headers
            .push(mutation::set_header(REQUESTED_MODEL_HEADER, requested));
        if let (Some(splicer), Some(length)) = (&self.splicer, self.content_length) {
            let length = splicer.spliced_len(length).to_string();
            mutation
                .set_headers
                .push(mutation::set_header("content-length", length.into()));
        }
    }

    /// Both headers come from the one name the core decided (or the
    /// rewrite target): this server never trims or otherwise changes it.
    fn model_mutation(&self, model: &Model) -> HeaderMutation {
        let routing = &self.settings.routing;
        let mut set_headers = Vec::new();
        if let Some(header) = routing.model() {
            set_headers.push(mutation::set_header(header, model.bytes().clone()));
        }
        let base = match &self.settings.base_models {
            Some(map) if routing.base_model() => map.lookup(model.as_str()),
            _ => None,
        };
        if let Some(base) = base {
            set_headers.push(mutation::set_header(
                BASE_MODEL_HEADER,
                Bytes::copy_from_slice(base.as_bytes()),
            ));
        }
        let mut mutation = self.strip_spoofed();
        // A header set here overwrites the client's value of that exact
        // name; its other spellings (underscores) are still removed.
        mutation.remove_headers.retain(|sent| {
            !set_headers
                .iter()
                .any(|set| set.header.as_ref().is_some_and(|h| h.key == *sent))
        });
        mutation.set_headers = set_headers;
        mutation
    }

    /// Removes every client-sent routing header (and the configured model
    /// header), by the name it was sent as.
    fn strip_spoofed(&self) -> HeaderMutation {
        HeaderMutation {
            set_headers: Vec::new(),
            remove_headers: self
                .spoofed
                .iter()
                .map(|(_, sent)| sent.clone())
                .chain(self.spoofed_custom.clone())
                .chain(self.spoofed_requested.clone())
                .collect(),
        }
    }

    /// The configured model header in `map` when it is not one of the
    /// contract's routing headers (those are found by
    /// [`routing_headers_in`]), lower case. Always stripped, never refused:
    /// [`ClientHeaders::Reject`] is about the contract's headers.
    fn custom_header_in(&self, map: &Option<HeaderMap>) -> Option<String> {
        let routing = &self.settings.routing;
        map.iter()
            .flat_map(|map| &map.headers)
            .find(|header| routing.is_custom_model_header(&header.key))
            .map(|header| header.key.to_ascii_lowercase())
    }

    /// With rewrites configured, a client-sent [`REQUESTED_MODEL_HEADER`]
    /// in `map` (request trailers), lower case: only this server says what
    /// was requested.
    fn requested_header_in(&self, map: &Option<HeaderMap>) -> Option<String> {
        self.settings.rewrites.as_ref()?;
        map.iter()
            .flat_map(|map| &map.headers)
            .find(|header| header.key.eq_ignore_ascii_case(REQUESTED_MODEL_HEADER))
            .map(|header| header.key.to_ascii_lowercase())
    }

    /// Holds an undecided chunk (never the end of the stream: the end
    /// always decides), within the shared budget.
    fn hold(&mut self, mut chunk: Bytes, out: &mut Vec<ProcessingResponse>) {
        if self.mode != Mode::FullDuplex {
            // Envoy holds the bytes; it is owed a reply. With rewrites the
            // chunks holding the token must be sent back changed, so they
            // are held here too (within the budget).
            self.owed_replies += 1;
            if self.settings.rewrites.is_none() {
                return;
            }
            self.held_lengths.push(chunk.len());
        } else if let Some(config) = &self.settings.spool
            && !chunk.is_empty()
        {
            let spool = self.spool.get_or_insert_with(|| Spool::new(config.clone()));
            let len = chunk.len() as u64;
            if spool.would_spool(chunk.len()) {
                // The disk is reserved before the spool takes the bytes.
                if !self.disk.try_reserve(len) {
                    return self.reject(Refusal::Overloaded, out);
                }
                self.disk_reserved += len;
                self.report.spooled_bytes += len;
            }
            match spool.hold(chunk) {
                Hold::Memory(kept) => chunk = kept,
                Hold::Spooled => {
                    let cost = spool.memory_cost();
                    if !self.reserve_exactly(self.held.memory() + cost) {
                        self.reject(Refusal::Overloaded, out);
                    }
                    return;
                }
            }
        }
        self.held.push(chunk);
        let spooling = self.spool.as_ref().map_or(0, Spool::memory_cost);
        if !self.reserve_exactly(self.held.memory() + spooling) {
            self.reject(Refusal::Overloaded, out);
        }
    }

    fn release_budget(&mut self) {
        self.reserve_exactly(0);
    }

    /// Sends the held headers reply with `mutation`, every held chunk, then
    /// the chunk that decided (not held, so never copied), with the model
    /// token replaced when a rewrite was decided. The splice is done before
    /// anything goes out, so a failure is a clean refusal.
    fn release(
        &mut self,
        mutation: HeaderMutation,
        deciding: Option<(Bytes, bool)>,
        out: &mut Vec<ProcessingResponse>,
    ) {
        if let Some(spool) = self.spool.take_if(|spool| spool.is_spooling()) {
            return self.release_spooled(mutation, spool, deciding, out);
        }
        // Nothing went to disk: everything is in `held`.
        self.spool = None;
        let held = self.held.take();
        self.release_budget();
        let owed = std::mem::take(&mut self.owed_replies);
        let lengths = std::mem::take(&mut self.held_lengths);
        let splicer = self.splicer.take();
        let body = match self.mode {
            Mode::FullDuplex => streamed_pieces(held, deciding, splicer),
            _ => chunk_replies(held, &lengths, owed, deciding.map(|(c, _)| c), splicer),
        };
        let body = match body {
            Ok(body) => body,
            Err(refusal) => return self.reject(refusal, out),
        };
        if self.report.unroutable_mode {
            // Headers already went upstream; nothing to mutate any more.
        } else {
            out.push(headers_reply(Direction::Request, routing_common(mutation)));
        }
        out.extend(body);
        if self.phase == Phase::Holding {
            self.phase = Phase::Flowing;
        }
    }

    /// Full duplex, the body spooled: the headers reply and the chunks held
    /// in memory now, then the replay (see [`held`](crate::held)); the
    /// deciding chunk follows the spooled bytes. Never rewritten (the
    /// rewrite was not picked: [`Self::pick_rewrite`]).
    fn release_spooled(
        &mut self,
        mutation: HeaderMutation,
        spool: Spool,
        deciding: Option<(Bytes, bool)>,
        out: &mut Vec<ProcessingResponse>,
    ) {
        let held = self.held.take();
        // Only the chunks still waiting for their write stay reserved.
        self.reserve_exactly(spool.memory_cost());
        out.push(headers_reply(Direction::Request, routing_common(mutation)));
        for chunk in &held {
            push_streamed(out, Direction::Request, chunk, false);
        }
        let mut tail = Vec::new();
        if let Some((chunk, end_of_stream)) = deciding {
            push_streamed(&mut tail, Direction::Request, &chunk, end_of_stream);
        }
        self.replay = Some(Replay {
            spool: Some(spool),
            file: None,
            reading: false,
            rest: Vec::new(),
            tail,
        });
        if self.phase == Phase::Holding {
            self.phase = Phase::Flowing;
        }
        self.advance_replay(out);
    }

    /// Where request-side replies go: after the replay while one runs.
    fn request_replies<'a>(
        &'a mut self,
        out: &'a mut Vec<ProcessingResponse>,
    ) -> &'a mut Vec<ProcessingResponse> {
        match &mut self.replay {
            Some(replay) => &mut replay.tail,
            None => out,
        }
    }

    fn forward(&mut self, chunk: Bytes, end_of_stream: bool, out: &mut Vec<ProcessingResponse>) {
        let mode = self.mode;
        let out = self.request_replies(out);
        match mode {
            Mode::FullDuplex => push_streamed(out, Direction::Request, &chunk, end_of_stream),
            _ => out.push(body_reply(Direction::Request, None)),
        }
    }

    fn reject(&mut self, refusal: Refusal, out: &mut Vec<ProcessingResponse>) {
        self.decided = true;
        if self.report.bytes_before_decision == 0 {
            self.report.bytes_before_decision = self.extractor.bytes_consumed();
        }
        out.push(immediate_reply(immediate_response(&refusal)));
        self.report.verdict = Some(Verdict::Rejected(refusal));
        drop(self.held.take());
        self.spool = None;
        self.replay = None;
        self.release_disk(self.disk_reserved);
        self.release_budget();
        self.owed_replies = 0;
        self.held_lengths.clear();
        self.splicer = None;
        self.finished = true;
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        // A stream Envoy reset mid-body gives its bytes back too.
        self.release_budget();
        self.release_disk(self.disk_reserved);
    }
}

/// A header's value as sent: Envoy puts it in `raw_value`, older versions
/// in `value`.
pub(crate) fn header_value(header: &HeaderValue) -> &[u8] {
    if header.raw_value.is_empty() {
        header.value.as_bytes()
    } else {
        &header.raw_value
    }
}

/// The refusal for a splice that does not fit the bytes (never expected: the
/// span comes from the extractor that read these bytes).
fn splice_failed(offset: u64) -> Refusal {
    ExtractError::new(ErrorKind::InvalidJson, offset).into()
}

/// Full duplex: the held chunks then the deciding one as `streamed_response`
/// messages; with a splicer, each chunk's pieces as messages of their own
/// (slices of the chunk and the new token: no copy).
fn streamed_pieces(
    held: Vec<Bytes>,
    deciding: Option<(Bytes, bool)>,
    mut splicer: Option<ModelSplicer>,
) -> Result<Vec<ProcessingResponse>, Refusal> {
    let mut out = Vec::new();
    for (chunk, end_of_stream) in held.into_iter().map(|c| (c, false)).chain(deciding) {
        let Some(splicer) = &mut splicer else {
            push_streamed(&mut out, Direction::Request, &chunk, end_of_stream);
            continue;
        };
        let pieces = splicer
            .push(&chunk)
            .map_err(|_| splice_failed(splicer.bytes_consumed()))?;
        let count = pieces.len();
        if count == 0 && end_of_stream {
            push_streamed(&mut out, Direction::Request, &Bytes::new(), true);
        }
        for (i, piece) in pieces.enumerate() {
            push_streamed(
                &mut out,
                Direction::Request,
                &piece,
                end_of_stream && i + 1 == count,
            );
        }
    }
    Ok(out)
}

/// `STREAMED`: one reply per chunk Envoy sent (`owed` held, then the
/// deciding one): empty, or, with a splicer, the chunk's replacement when
/// the token touches it (one copy of that chunk: a reply carries one body).
fn chunk_replies(
    held: Vec<Bytes>,
    lengths: &[usize],
    owed: usize,
    deciding: Option<Bytes>,
    splicer: Option<ModelSplicer>,
) -> Result<Vec<ProcessingResponse>, Refusal> {
    let Some(mut splicer) = splicer else {
        let count = owed + usize::from(deciding.is_some());
        return Ok((0..count)
            .map(|_| body_reply(Direction::Request, None))
            .collect());
    };
    let mut out = Vec::with_capacity(owed + 1);
    for chunk in rechunk(held, lengths).into_iter().chain(deciding) {
        let pieces: Vec<Bytes> = splicer
            .push(&chunk)
            .map_err(|_| splice_failed(splicer.bytes_consumed()))?
            .collect();
        let unchanged = matches!(&pieces[..], [only] if only.len() == chunk.len());
        let common = (!unchanged).then(|| CommonResponse {
            body_mutation: Some(mutation::replace_body(pieces.concat().into())),
            ..CommonResponse::default()
        });
        out.push(body_reply(Direction::Request, common));
    }
    Ok(out)
}

/// The chunks of `lengths` again from the held pieces (which may have
/// coalesced small ones): slices where a chunk lies in one piece, a copy
/// where it spans two.
fn rechunk(pieces: Vec<Bytes>, lengths: &[usize]) -> Vec<Bytes> {
    let mut pieces = pieces.into_iter();
    let mut current = Bytes::new();
    let mut out = Vec::with_capacity(lengths.len());
    for &len in lengths {
        while current.is_empty() && len > 0 {
            match pieces.next() {
                Some(piece) => current = piece,
                None => break,
            }
        }
        if current.len() >= len {
            out.push(current.split_to(len));
            continue;
        }
        let mut joined = bytes::BytesMut::with_capacity(len);
        while joined.len() < len {
            if current.is_empty() {
                match pieces.next() {
                    Some(piece) => current = piece,
                    None => break,
                }
            }
            let take = (len - joined.len()).min(current.len());
            joined.extend_from_slice(&current.split_to(take));
        }
        out.push(joined.freeze());
    }
    out
}

/// The routing headers in `map`: (canonical name, name as sent, lower case),
/// each sent name once.
fn routing_headers_in(map: &Option<HeaderMap>) -> Vec<(&'static str, String)> {
    let mut found: Vec<(&'static str, String)> = Vec::new();
    for header in map.iter().flat_map(|map| &map.headers) {
        if let Some(canonical) = contract::routing_header(header.key.as_bytes()) {
            let sent = header.key.to_ascii_lowercase();
            if !found.iter().any(|(_, seen)| *seen == sent) {
                found.push((canonical, sent));
            }
        }
    }
    found
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
