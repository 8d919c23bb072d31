//! The `stream_state` check: a body, cut into `request_body` messages, through
//! the bbr-extproc state machine in every body mode.

use std::sync::Arc;

use bbr_core::contract::{MODEL_HEADER, Refusal};
use bbr_core::{BodyExtractor, ErrorKind, ExtractError, Limits, Model, Outcome, Progress};
use bbr_extproc::proto::envoy::config::core::v3::{HeaderMap, HeaderValue};
use bbr_extproc::proto::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use bbr_extproc::proto::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest, ProcessingResponse,
    ProtocolConfiguration, body_mutation, processing_request::Request,
    processing_response::Response,
};
use bbr_extproc::{Settings, StreamState, Verdict};
use bytes::Bytes;

use crate::{MAX_INPUT, POLICIES, Split};

/// The request's `content-type` and `content-encoding`, from bits 2–4 of
/// the split header's flags byte (which [`Split`] leaves unused): 0 is a
/// JSON body without either header, as before.
const CONTENT: [(Option<&str>, Option<&str>); 8] = [
    (None, None),
    (Some("multipart/form-data; boundary=b"), None),
    (Some("multipart/form-data; boundary=\"--x y\""), None),
    (Some("application/json"), Some("gzip")),
    (None, Some("zstd")),
    (None, Some("br")),
    (Some("multipart/form-data; boundary=b"), Some("gzip")),
    // Not decoded: forwarded as a body without a model.
    (Some("application/json"), Some("compress")),
];

/// How Envoy talks to the processor, from the low three bits of byte 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    FullDuplex,
    StreamedEarly,
    StreamedLate,
    Buffered,
    /// `BUFFERED_PARTIAL`, the whole body in the one message.
    PartialWhole,
    /// `BUFFERED_PARTIAL`, only the first chunk (Envoy's buffer limit).
    PartialPrefix,
    NoBodyMode,
    /// No `protocol_config`: the default mode (full duplex).
    Unannounced,
}

impl Setup {
    fn from_bits(bits: u8) -> Self {
        [
            Setup::FullDuplex,
            Setup::StreamedEarly,
            Setup::StreamedLate,
            Setup::Buffered,
            Setup::PartialWhole,
            Setup::PartialPrefix,
            Setup::NoBodyMode,
            Setup::Unannounced,
        ][usize::from(bits & 7)]
    }

    fn protocol(self) -> Option<ProtocolConfiguration> {
        let (mode, early) = match self {
            Setup::FullDuplex => (BodySendMode::FullDuplexStreamed, false),
            Setup::StreamedEarly => (BodySendMode::Streamed, true),
            Setup::StreamedLate => (BodySendMode::Streamed, false),
            Setup::Buffered => (BodySendMode::Buffered, false),
            Setup::PartialWhole | Setup::PartialPrefix => (BodySendMode::BufferedPartial, false),
            Setup::NoBodyMode => (BodySendMode::None, false),
            Setup::Unannounced => return None,
        };
        Some(ProtocolConfiguration {
            request_body_mode: mode as i32,
            response_body_mode: mode as i32,
            send_body_without_waiting_for_header_response: early,
        })
    }

    fn full_duplex(self) -> bool {
        matches!(self, Setup::FullDuplex | Setup::Unannounced)
    }

    fn buffered(self) -> bool {
        matches!(
            self,
            Setup::Buffered | Setup::PartialWhole | Setup::PartialPrefix
        )
    }
}

/// The rewrite target of [`rewriting`]: every model becomes this name,
/// whose JSON token needs escapes.
pub const REWRITE_TARGET: &str = "r\"w\\ε";

/// Settings with a catch-all `InferenceModelRewrite` rule onto
/// [`REWRITE_TARGET`].
fn rewriting(limits: Limits) -> Settings {
    let rules = bbr_adapters::rewrite::RewriteRules::from_yaml_str(
        "kind: InferenceModelRewrite\nspec: {rules: [{targets: [{modelRewrite: 'r\"w\\ε'}]}]}",
        "fuzz",
    )
    .expect("valid rules");
    let store = bbr_adapters::rewrite::RewriteStore::from_rules(rules);
    Settings::new(limits).model_rewrites(bbr_adapters::rewrite::RewritePicker::new(store))
}

/// The `stream_state` target.
///
/// Byte 0: bits 0–2 the body mode ([`Setup`]), bit 3 trailers end the body
/// (instead of `end_of_stream`), bit 4 a spoofed `x-gateway-model-name`,
/// bit 5 a 64-byte scan limit, bits 6–7 the duplicate-key policy. Then a
/// [`Split`] header (bits 2–4 of its flags byte: the content headers,
/// [`CONTENT`]; bit 5: a catch-all model rewrite onto [`REWRITE_TARGET`])
/// and the body: each chunk is one `request_body` message
/// (`BUFFERED`: the whole body in one; `BUFFERED_PARTIAL` prefix: the first
/// chunk only, without `end_of_stream`).
///
/// Checks: no panic and no broken conversation; nothing owed to Envoy once
/// the body ended; in full duplex the headers reply comes before any body
/// chunk and the chunks come back as the exact bytes sent, in order (a
/// prefix of them when the request was refused); the verdict is the core's
/// one-shot verdict on the same bytes through [`BodyExtractor`] with the
/// same content headers (for a prefix: the core's progress on it, an
/// undecided prefix refused as 413; a decoding error's kind, as its offset
/// may move with the cuts), and a found model is the value of the model
/// header. With the rewrite, a model whose JSON token is in the forwarded
/// bytes (not a form field or a compressed body) is routed as the target
/// where the route can still change (not `STREAMED` without the early
/// body), and in full duplex the bytes forwarded are the body with exactly
/// that token replaced.
pub fn check_stream(data: &[u8]) {
    if data.len() > MAX_INPUT {
        return;
    }
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some(split) = Split::parse(rest) else {
        return;
    };
    let content = CONTENT[usize::from((rest[0] >> 2) & 7)];
    let rewrite = rest[0] & 0x20 != 0;
    let setup = Setup::from_bits(flags);
    let trailers = flags & 8 != 0;
    let spoof = flags & 16 != 0;
    let policy = POLICIES[usize::from(flags >> 6) % POLICIES.len()];
    let mut limits = Limits::new().with_duplicate_keys(policy);
    if flags & 32 != 0 {
        limits = limits.with_max_scan_bytes(64);
    }
    let body = Bytes::copy_from_slice(split.body);
    let mut chunks = split.chunks(&body);
    if setup == Setup::NoBodyMode {
        // Envoy sends no body in this mode.
        chunks.clear();
    } else if setup.buffered() {
        chunks = if setup == Setup::PartialPrefix {
            chunks.into_iter().take(1).collect()
        } else {
            vec![body.clone()]
        };
    }
    let context = format!(
        "{setup:?}, {content:?}, rewrite {rewrite}, trailers {trailers}, policy {}, limits {limits:?}, chunks {:?}",
        policy.as_str(),
        chunks.iter().map(Bytes::len).collect::<Vec<_>>()
    );

    let mut messages = vec![headers(
        setup,
        spoof,
        content,
        chunks.is_empty() && !trailers,
    )];
    let last = chunks.len();
    for (i, chunk) in chunks.iter().enumerate() {
        let end_of_stream = i + 1 == last && !trailers && setup != Setup::PartialPrefix;
        messages.push(request(Request::RequestBody(HttpBody {
            body: chunk.clone(),
            end_of_stream,
            ..HttpBody::default()
        })));
    }
    if trailers {
        messages.push(request(Request::RequestTrailers(HttpTrailers::default())));
    }

    let settings = if rewrite {
        rewriting(limits)
    } else {
        Settings::new(limits)
    };
    let mut state = StreamState::new(Arc::new(settings));
    let mut replies = Vec::new();
    for message in messages {
        let mut out = Vec::new();
        state
            .on_request(message, &mut out)
            .unwrap_or_else(|error| panic!("{context}: conversation broken: {error}"));
        replies.extend(out);
        if state.is_finished() {
            break;
        }
    }
    // Every message of the request side was sent (a prefix is all Envoy
    // sends in its one message).
    if !state.is_finished() {
        assert!(!state.is_holding(), "{context}: still owes Envoy a reply");
    }

    let verdict = state
        .report()
        .verdict
        .clone()
        .unwrap_or_else(|| panic!("{context}: no verdict"));
    let expected = expected_verdict(setup, trailers, content, &body, &chunks, limits);
    // What the upstream must get: the body, or with the token replaced.
    let mut forwarded = body.clone();
    let expected = match expected {
        Verdict::Found(model) if rewrite && setup != Setup::StreamedLate => {
            match model.json_span() {
                Some(span) => {
                    let mut out = body[..span.start as usize].to_vec();
                    out.extend_from_slice(&bbr_core::rewrite::json_string_token(REWRITE_TARGET));
                    out.extend_from_slice(&body[span.end as usize..]);
                    forwarded = out.into();
                    let target = Model::from_name(REWRITE_TARGET, &Limits::new());
                    Verdict::Found(target.expect("a valid name"))
                }
                None => Verdict::Found(model),
            }
        }
        other => {
            if let Some(spliced) = spliced_after_refusal(&state, content, &body, limits) {
                forwarded = spliced;
            }
            other
        }
    };
    assert!(
        same_verdict(&verdict, &expected, content.1.is_some()),
        "{context}: got {verdict:?}, the core says {expected:?}"
    );

    if setup.full_duplex() {
        check_full_duplex(
            &replies,
            &forwarded,
            &verdict,
            state.is_finished(),
            &context,
        );
    }
}

/// A request refused after a rewrite was decided (the rest of the body
/// broke the rules): the bytes forwarded before the refusal are a prefix of
/// the body with the first model's token replaced.
fn spliced_after_refusal(
    state: &StreamState,
    content: (Option<&str>, Option<&str>),
    body: &Bytes,
    limits: Limits,
) -> Option<Bytes> {
    if !state.report().rewrite.as_ref()?.rewrote() {
        return None;
    }
    let first = limits.with_duplicate_keys(bbr_core::DuplicateKeys::FirstWins);
    let Ok(Progress::Found(model)) = extractor(content, first).feed(body) else {
        return None;
    };
    let span = model.json_span()?;
    let mut out = body[..span.start as usize].to_vec();
    out.extend_from_slice(&bbr_core::rewrite::json_string_token(REWRITE_TARGET));
    out.extend_from_slice(&body[span.end as usize..]);
    Some(out.into())
}

/// The core's verdict on the same bytes.
/// `trailers`: the body message of a `BUFFERED_PARTIAL` stream then ends
/// without `end_of_stream`, so the processor cannot tell a whole body from a
/// prefix and judges it as a prefix.
fn expected_verdict(
    setup: Setup,
    trailers: bool,
    content: (Option<&str>, Option<&str>),
    body: &Bytes,
    chunks: &[Bytes],
    limits: Limits,
) -> Verdict {
    if chunks.iter().all(Bytes::is_empty) {
        return Verdict::NoBody;
    }
    if setup == Setup::PartialPrefix || (setup == Setup::PartialWhole && trailers) {
        let prefix = &chunks[0];
        let mut extractor = extractor(content, limits);
        return match extractor.feed(prefix) {
            Ok(Progress::Found(model)) => Verdict::Found(model),
            Ok(Progress::Absent) => Verdict::Absent,
            Ok(_) => {
                let length = prefix.len() as u64;
                Verdict::Rejected(Refusal::Extract(ExtractError::new(
                    ErrorKind::ScanLimit { limit: length },
                    length,
                )))
            }
            Err(error) => Verdict::Rejected(Refusal::Extract(error)),
        };
    }
    let mut extractor = extractor(content, limits);
    match extractor.feed(body).and_then(|_| extractor.finish()) {
        Ok(Outcome::Found(model)) => Verdict::Found(model),
        Ok(_) => Verdict::Absent,
        Err(error) => Verdict::Rejected(Refusal::Extract(error)),
    }
}

fn extractor(content: (Option<&str>, Option<&str>), limits: Limits) -> BodyExtractor {
    BodyExtractor::for_content(
        content.0.map(str::as_bytes),
        content.1.map(str::as_bytes),
        limits,
    )
}

/// `encoded`: decoding errors are compared by kind (the encoded bytes read
/// when one is found depend on the cuts).
fn same_verdict(got: &Verdict, expected: &Verdict, encoded: bool) -> bool {
    match (got, expected) {
        (Verdict::Found(a), Verdict::Found(b)) => a.as_str() == b.as_str(),
        (Verdict::Rejected(Refusal::Extract(a)), Verdict::Rejected(Refusal::Extract(b)))
            if encoded =>
        {
            a.kind() == b.kind()
        }
        (a, b) => a == b,
    }
}

/// Full duplex: the headers reply first, then exactly the bytes sent.
fn check_full_duplex(
    replies: &[ProcessingResponse],
    body: &Bytes,
    verdict: &Verdict,
    refused: bool,
    context: &str,
) {
    let mut returned = Vec::new();
    let mut headers_seen = false;
    for reply in replies {
        match reply.response.as_ref().expect("a reply") {
            Response::RequestHeaders(headers) => {
                assert!(!headers_seen, "{context}: two headers replies");
                headers_seen = true;
                let set = headers
                    .response
                    .as_ref()
                    .and_then(|common| common.header_mutation.as_ref())
                    .map(|mutation| mutation.set_headers.clone())
                    .unwrap_or_default();
                let model = set
                    .iter()
                    .filter_map(|option| option.header.as_ref())
                    .find(|header| header.key == MODEL_HEADER);
                if let Verdict::Found(found) = verdict {
                    let model = model.unwrap_or_else(|| panic!("{context}: no model header"));
                    assert_eq!(&model.raw_value[..], found.as_bytes(), "{context}");
                } else if !refused {
                    assert!(model.is_none(), "{context}: a model header without a model");
                }
            }
            Response::RequestBody(body_reply) => {
                assert!(
                    headers_seen,
                    "{context}: a body chunk before the headers reply"
                );
                let streamed = body_reply
                    .response
                    .as_ref()
                    .and_then(|common| common.body_mutation.as_ref())
                    .and_then(|mutation| mutation.mutation.as_ref());
                let Some(body_mutation::Mutation::StreamedResponse(chunk)) = streamed else {
                    panic!("{context}: a full-duplex body reply without a streamed body");
                };
                returned.extend_from_slice(&chunk.body);
            }
            _ => {}
        }
    }
    if refused {
        assert!(
            body.starts_with(&returned),
            "{context}: the bytes forwarded before the refusal are not a prefix of the body"
        );
    } else {
        assert_eq!(&returned[..], &body[..], "{context}: body bytes changed");
    }
}

fn headers(
    setup: Setup,
    spoof: bool,
    content: (Option<&str>, Option<&str>),
    end_of_stream: bool,
) -> ProcessingRequest {
    let mut list = vec![(":method", "POST"), (":path", "/v1/chat/completions")];
    if spoof {
        list.push((MODEL_HEADER, "spoofed"));
    }
    if let Some(content_type) = content.0 {
        list.push(("content-type", content_type));
    }
    if let Some(encoding) = content.1 {
        list.push(("content-encoding", encoding));
    }
    ProcessingRequest {
        request: Some(Request::RequestHeaders(HttpHeaders {
            headers: Some(HeaderMap {
                headers: list
                    .into_iter()
                    .map(|(key, value)| HeaderValue {
                        key: key.to_owned(),
                        value: String::new(),
                        raw_value: Bytes::copy_from_slice(value.as_bytes()),
                    })
                    .collect(),
            }),
            end_of_stream,
            ..HttpHeaders::default()
        })),
        protocol_config: setup.protocol(),
        ..ProcessingRequest::default()
    }
}

fn request(request: Request) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(request),
        ..ProcessingRequest::default()
    }
}
