//! Unit tests of the stream state machine, per body mode, without gRPC.

use std::sync::Arc;

use bbr_adapters::{AdapterMap, AdapterStore};
use bbr_core::contract::MODEL_HEADER;
use bbr_core::{DuplicateKeys, Limits};
use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::held::HeldBudget;
use crate::mutation::MAX_CHUNK_BYTES;
use crate::proto::envoy::config::core::v3::{HeaderMap, HeaderValue};
use crate::proto::envoy::service::ext_proc::v3::{
    CommonResponse, HttpTrailers, ProtocolConfiguration, body_mutation, processing_response,
};

// ---------------------------------------------------------------- helpers

fn settings() -> Arc<Settings> {
    Arc::new(Settings::default())
}

fn with_adapters() -> Arc<Settings> {
    let map = AdapterMap::from_yaml_str(
        "data: {baseModel: deepseek/vllm-deepseek-r1, adapters: '[ski-resorts, movie-critique]'}",
        "inline",
    )
    .expect("valid map");
    Arc::new(Settings::default().base_models(AdapterStore::from_map(map)))
}

fn headers_msg(
    mode: BodySendMode,
    early: bool,
    eos: bool,
    extra: &[(&str, &str)],
) -> ProcessingRequest {
    let mut list = vec![
        (":method", if eos { "GET" } else { "POST" }),
        (":path", "/v1/chat/completions"),
        ("content-type", "application/json"),
    ];
    list.extend_from_slice(extra);
    ProcessingRequest {
        request: Some(Request::RequestHeaders(HttpHeaders {
            headers: Some(HeaderMap {
                headers: list
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: (*k).to_owned(),
                        value: String::new(),
                        raw_value: Bytes::copy_from_slice(v.as_bytes()),
                    })
                    .collect(),
            }),
            end_of_stream: eos,
            ..HttpHeaders::default()
        })),
        protocol_config: Some(ProtocolConfiguration {
            request_body_mode: mode as i32,
            response_body_mode: mode as i32,
            send_body_without_waiting_for_header_response: early,
        }),
        ..ProcessingRequest::default()
    }
}

fn post(mode: BodySendMode) -> ProcessingRequest {
    headers_msg(mode, true, false, &[])
}

fn body_msg(bytes: &Bytes, eos: bool) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Request::RequestBody(HttpBody {
            body: bytes.clone(),
            end_of_stream: eos,
            ..HttpBody::default()
        })),
        ..ProcessingRequest::default()
    }
}

fn trailers_msg() -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Request::RequestTrailers(HttpTrailers::default())),
        ..ProcessingRequest::default()
    }
}

/// A header mutation, flattened: (header set, value), removed headers, clear_route_cache.
type Flat = (Vec<(String, String)>, Vec<String>, bool);

/// What one reply does, flattened for assertions.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// Request headers reply: (header set, value), removed headers, clear_route_cache.
    Headers(Vec<(String, String)>, Vec<String>, bool),
    /// Request body reply without a streamed body (optionally with a mutation).
    Body(Option<Flat>),
    /// Request streamed body chunk.
    Streamed(Bytes, bool),
    Trailers,
    Immediate(u16, serde_json::Value),
    RespHeaders,
    RespBody,
    RespStreamed(Bytes, bool),
    RespTrailers,
}

fn mutation_of(common: &Option<CommonResponse>) -> Option<Flat> {
    let common = common.as_ref()?;
    let mutation = common.header_mutation.clone().unwrap_or_default();
    Some((
        mutation
            .set_headers
            .iter()
            .map(|h| {
                let h = h.header.as_ref().expect("header");
                (
                    h.key.clone(),
                    String::from_utf8(h.raw_value.to_vec()).expect("utf8"),
                )
            })
            .collect(),
        mutation.remove_headers.clone(),
        common.clear_route_cache,
    ))
}

fn streamed_of(common: &Option<CommonResponse>) -> Option<(Bytes, bool)> {
    match common.as_ref()?.body_mutation.as_ref()?.mutation.as_ref()? {
        body_mutation::Mutation::StreamedResponse(s) => Some((s.body.clone(), s.end_of_stream)),
        _ => None,
    }
}

fn seen(out: &[ProcessingResponse]) -> Vec<Seen> {
    use processing_response::Response as R;
    out.iter()
        .map(|r| match r.response.as_ref().expect("a response") {
            R::RequestHeaders(h) => match mutation_of(&h.response) {
                Some((set, remove, clear)) => Seen::Headers(set, remove, clear),
                None => Seen::Headers(vec![], vec![], false),
            },
            R::RequestBody(b) => match streamed_of(&b.response) {
                Some((bytes, eos)) => Seen::Streamed(bytes, eos),
                None => Seen::Body(mutation_of(&b.response)),
            },
            R::RequestTrailers(_) => Seen::Trailers,
            R::ImmediateResponse(i) => Seen::Immediate(
                i.status.as_ref().expect("status").code as u16,
                serde_json::from_slice(&i.body).expect("json body"),
            ),
            R::ResponseHeaders(_) => Seen::RespHeaders,
            R::ResponseBody(b) => match streamed_of(&b.response) {
                Some((bytes, eos)) => Seen::RespStreamed(bytes, eos),
                None => Seen::RespBody,
            },
            R::ResponseTrailers(_) => Seen::RespTrailers,
            other => panic!("unexpected reply {other:?}"),
        })
        .collect()
}

fn step(state: &mut StreamState, request: ProcessingRequest) -> Vec<Seen> {
    let mut out = Vec::new();
    state
        .on_request(request, &mut out)
        .expect("a valid conversation");
    seen(&out)
}

fn model_set(model: &str) -> Vec<(String, String)> {
    vec![(MODEL_HEADER.to_owned(), model.to_owned())]
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

// ------------------------------------------------------ full duplex mode

#[test]
fn full_duplex_holds_headers_until_the_model_then_releases_every_chunk() {
    let mut s = StreamState::new(settings());
    assert!(step(&mut s, post(BodySendMode::FullDuplexStreamed)).is_empty());
    let first = b(r#"{"messages":[{"role":"user","content":"hi"}],"#);
    assert!(step(&mut s, body_msg(&first, false)).is_empty());
    assert!(s.is_holding());
    assert_eq!(s.held_bytes(), first.len() as u64);
    let second = b(r#""model":"food-review-1","max_tokens":1}"#);
    let out = step(&mut s, body_msg(&second, true));
    assert_eq!(
        out,
        vec![
            Seen::Headers(model_set("food-review-1"), vec![], true),
            Seen::Streamed(first.clone(), false),
            Seen::Streamed(second.clone(), true),
        ]
    );
    assert!(!s.is_holding());
    assert_eq!(
        s.report().verdict.as_ref().map(Verdict::label),
        Some("found")
    );
    assert_eq!(
        s.report().bytes_before_decision,
        (first.len() + second.len()) as u64
    );
}

#[test]
fn full_duplex_forwards_chunks_after_the_decision_at_once_without_copying() {
    let mut s = StreamState::new(settings());
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    let first = b(r#"{"model":"ski-resorts","messages":["#);
    let out = step(&mut s, body_msg(&first, false));
    assert_eq!(
        out[0],
        Seen::Headers(model_set("ski-resorts"), vec![], true)
    );
    assert_eq!(out[1], Seen::Streamed(first.clone(), false));
    let second = b(r#"{"role":"user","content":"x"}]}"#);
    let mut raw = Vec::new();
    s.on_request(body_msg(&second, true), &mut raw)
        .expect("valid");
    let Seen::Streamed(forwarded, true) = &seen(&raw)[0] else {
        panic!("expected the chunk back");
    };
    // Same buffer, not a copy.
    assert_eq!(forwarded.as_ptr(), second.as_ptr());
    assert_eq!(forwarded.len(), second.len());
}

#[test]
fn full_duplex_splits_chunks_at_62000_bytes_as_slices_of_the_same_buffer() {
    let mut s = StreamState::new(settings());
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    let head = format!(r#"{{"model":"m","pad":"{}"#, "x".repeat(150_000));
    let chunk = Bytes::from(head);
    let out = step(&mut s, body_msg(&chunk, false));
    let pieces: Vec<_> = out[1..]
        .iter()
        .map(|s| match s {
            Seen::Streamed(b, eos) => (b.clone(), *eos),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(pieces.len(), 3);
    assert!(
        pieces
            .iter()
            .all(|(p, eos)| p.len() <= MAX_CHUNK_BYTES && !eos)
    );
    assert_eq!(pieces[0].0.len(), MAX_CHUNK_BYTES);
    assert_eq!(pieces[0].0.as_ptr(), chunk.as_ptr());
    assert_eq!(pieces[1].0.as_ptr(), chunk[MAX_CHUNK_BYTES..].as_ptr());
    let joined: Vec<u8> = pieces.iter().flat_map(|(p, _)| p.to_vec()).collect();
    assert_eq!(joined, chunk.to_vec());
}

#[test]
fn full_duplex_chunk_of_exactly_62000_bytes_is_one_message() {
    let mut s = StreamState::new(settings());
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    step(&mut s, body_msg(&b(r#"{"model":"m","pad":""#), false));
    let exact = Bytes::from(vec![b'a'; MAX_CHUNK_BYTES]);
    assert_eq!(step(&mut s, body_msg(&exact, false)).len(), 1);
    let over = Bytes::from(vec![b'a'; MAX_CHUNK_BYTES + 1]);
    let out = step(&mut s, body_msg(&over, false));
    assert_eq!(out.len(), 2);
    assert_eq!(out[1], Seen::Streamed(over.slice(MAX_CHUNK_BYTES..), false));
}

#[test]
fn trailers_end_the_body_like_end_of_stream() {
    let mut s = StreamState::new(settings());
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    let body = b(r#"{"prompt":"p","model":"movie-critique"}"#);
    // Split so the root object is still open until the last byte.
    let (a, c) = (body.slice(..10), body.slice(10..));
    let out1 = step(&mut s, body_msg(&a, false));
    assert!(out1.is_empty());
    let out2 = step(&mut s, body_msg(&c, false));
    let out3 = step(&mut s, trailers_msg());
    let all: Vec<_> = out2.into_iter().chain(out3).collect();
    assert_eq!(
        all,
        vec![
            Seen::Headers(model_set("movie-critique"), vec![], true),
            Seen::Streamed(a, false),
            Seen::Streamed(c, false),
            Seen::Trailers,
        ]
    );
    assert!(!s.is_holding());
}

#[test]
fn body_of_zero_bytes_is_treated_like_no_body() {
    let mut s = StreamState::new(settings());
    step(
        &mut s,
        headers_msg(
            BodySendMode::FullDuplexStreamed,
            false,
            false,
            &[(MODEL_HEADER, "x")],
        ),
    );
    let out = step(&mut s, body_msg(&Bytes::new(), true));
    assert_eq!(
        out,
        vec![
            Seen::Headers(vec![], vec![MODEL_HEADER.to_owned()], true),
            Seen::Streamed(Bytes::new(), true),
        ]
    );
    assert_eq!(s.report().verdict, Some(Verdict::NoBody));
}

// ---------------------------------------------------------- streamed mode

#[test]
fn streamed_with_early_body_holds_headers_and_owes_one_reply_per_chunk() {
    let mut s = StreamState::new(settings());
    assert!(
        step(
            &mut s,
            headers_msg(BodySendMode::Streamed, true, false, &[])
        )
        .is_empty()
    );
    assert!(step(&mut s, body_msg(&b(r#"{"max_tokens":20,"#), false)).is_empty());
    let out = step(
        &mut s,
        body_msg(&b(r#""model":"deepseek/vllm-deepseek-r1","#), false),
    );
    assert_eq!(
        out,
        vec![
            Seen::Headers(model_set("deepseek/vllm-deepseek-r1"), vec![], true),
            Seen::Body(None),
            Seen::Body(None),
        ]
    );
    assert_eq!(
        step(&mut s, body_msg(&b(r#""prompt":"x"}"#), true)),
        vec![Seen::Body(None)]
    );
    assert!(!s.is_holding());
}

#[test]
fn streamed_without_early_body_answers_headers_at_once_and_strips_spoofed_headers() {
    let mut s = StreamState::new(settings());
    let out = step(
        &mut s,
        headers_msg(
            BodySendMode::Streamed,
            false,
            false,
            &[(MODEL_HEADER, "evil")],
        ),
    );
    assert_eq!(
        out,
        vec![Seen::Headers(vec![], vec![MODEL_HEADER.to_owned()], true)]
    );
    assert!(s.report().unroutable_mode);
    assert_eq!(
        step(&mut s, body_msg(&b(r#"{"model":"a"}"#), true)),
        vec![Seen::Body(None)]
    );
    assert!(!s.is_holding());
}

// ---------------------------------------------------------- buffered mode

#[test]
fn buffered_answers_headers_then_routes_in_the_body_reply() {
    let mut s = StreamState::new(with_adapters());
    assert_eq!(
        step(
            &mut s,
            headers_msg(BodySendMode::Buffered, false, false, &[])
        ),
        vec![Seen::Headers(vec![], vec![], false)]
    );
    let out = step(
        &mut s,
        body_msg(&b(r#"{"model":"ski-resorts","prompt":"x"}"#), true),
    );
    assert_eq!(
        out,
        vec![Seen::Body(Some((
            vec![
                (MODEL_HEADER.to_owned(), "ski-resorts".to_owned()),
                (
                    BASE_MODEL_HEADER.to_owned(),
                    "deepseek/vllm-deepseek-r1".to_owned()
                ),
            ],
            vec![],
            true
        )))]
    );
}

#[test]
fn buffered_with_trailers_answers_the_body_then_the_trailers() {
    let mut s = StreamState::new(settings());
    step(
        &mut s,
        headers_msg(BodySendMode::Buffered, false, false, &[]),
    );
    let out = step(&mut s, body_msg(&b(r#"{"model":"a"}"#), false));
    assert!(matches!(out[..], [Seen::Body(Some(_))]));
    assert_eq!(step(&mut s, trailers_msg()), vec![Seen::Trailers]);
}

#[test]
fn buffered_error_is_an_immediate_response() {
    let mut s = StreamState::new(settings());
    step(
        &mut s,
        headers_msg(BodySendMode::Buffered, false, false, &[]),
    );
    let out = step(&mut s, body_msg(&b("malformed json"), true));
    assert!(
        matches!(&out[..], [Seen::Immediate(400, body)] if body["error"]["code"] == "invalid_json")
    );
    assert!(s.is_finished());
}

// ------------------------------------------------- spoofing, GET, adapters

#[test]
fn get_is_answered_at_once_and_spoofed_headers_are_removed() {
    let mut s = StreamState::new(settings());
    let out = step(
        &mut s,
        headers_msg(
            BodySendMode::FullDuplexStreamed,
            false,
            true,
            &[("X-Gateway-Model-Name", "a"), (BASE_MODEL_HEADER, "b")],
        ),
    );
    assert_eq!(
        out,
        vec![Seen::Headers(
            vec![],
            vec![MODEL_HEADER.to_owned(), BASE_MODEL_HEADER.to_owned()],
            true
        )]
    );
    assert!(!s.is_holding());
}

#[test]
fn get_without_spoofed_headers_gets_an_empty_reply_and_keeps_the_route() {
    let mut s = StreamState::new(settings());
    let out = step(
        &mut s,
        headers_msg(BodySendMode::FullDuplexStreamed, false, true, &[]),
    );
    assert_eq!(out, vec![Seen::Headers(vec![], vec![], false)]);
}

#[test]
fn spoofed_model_header_is_overwritten_and_spoofed_base_header_removed() {
    let mut s = StreamState::new(settings());
    step(
        &mut s,
        headers_msg(
            BodySendMode::FullDuplexStreamed,
            false,
            false,
            &[(MODEL_HEADER, "evil"), (BASE_MODEL_HEADER, "evil-base")],
        ),
    );
    let out = step(&mut s, body_msg(&b(r#"{"model":"food-review-1"}"#), true));
    assert_eq!(
        out[0],
        Seen::Headers(
            model_set("food-review-1"),
            vec![BASE_MODEL_HEADER.to_owned()],
            true
        )
    );
}

#[test]
fn adapter_map_sets_the_base_model_and_unknown_names_set_none() {
    let mut s = StreamState::new(with_adapters());
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    let out = step(&mut s, body_msg(&b(r#"{"model":"movie-critique"}"#), true));
    assert_eq!(
        out[0],
        Seen::Headers(
            vec![
                (MODEL_HEADER.to_owned(), "movie-critique".to_owned()),
                (
                    BASE_MODEL_HEADER.to_owned(),
                    "deepseek/vllm-deepseek-r1".to_owned()
                ),
            ],
            vec![],
            true
        )
    );
    let mut s = StreamState::new(with_adapters());
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    let out = step(&mut s, body_msg(&b(r#"{"model":"unknown"}"#), true));
    assert_eq!(out[0], Seen::Headers(model_set("unknown"), vec![], true));
}

// --------------------------------------------------------- missing model

#[test]
fn missing_model_passes_through_without_a_header_by_default() {
    let mut s = StreamState::new(settings());
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    let body = b(r#"{"messages":[]}"#);
    let out = step(&mut s, body_msg(&body, true));
    assert_eq!(
        out,
        vec![
            Seen::Headers(vec![], vec![], false),
            Seen::Streamed(body, true)
        ]
    );
    assert_eq!(s.report().verdict, Some(Verdict::Absent));
}

#[test]
fn missing_model_is_400_when_the_policy_refuses() {
    let settings = Arc::new(Settings::default().missing_model(MissingModel::Reject));
    let mut s = StreamState::new(settings);
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    let out = step(&mut s, body_msg(&b(r#"{"messages":[]}"#), true));
    assert!(
        matches!(&out[..], [Seen::Immediate(400, body)] if body["error"]["code"] == "missing_model")
    );
}

// ------------------------------------------------------------- error rows

fn outcome_of(limits: Limits, chunks: &[&str]) -> (Vec<Seen>, StreamState) {
    let mut s = StreamState::new(Arc::new(Settings::new(limits)));
    let mut out = step(&mut s, post(BodySendMode::FullDuplexStreamed));
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend(step(&mut s, body_msg(&b(chunk), i + 1 == chunks.len())));
    }
    (out, s)
}

fn assert_rejected(limits: Limits, chunks: &[&str], status: u16, code: &str) {
    let (out, s) = outcome_of(limits, chunks);
    let Some(Seen::Immediate(got, body)) = out.last() else {
        panic!("{chunks:?}: expected an immediate response, got {out:?}");
    };
    assert_eq!(
        (*got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{chunks:?}"
    );
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "model");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("byte"))
    );
    assert!(s.is_finished());
    assert!(!s.is_holding());
}

#[test]
fn every_error_row_of_the_contract_is_an_immediate_response() {
    let d = Limits::new();
    assert_rejected(d, &["not json"], 400, "invalid_json");
    assert_rejected(d, &[r#"{"messages":["#], 400, "invalid_json");
    assert_rejected(d, &["[1,2]"], 400, "invalid_json");
    assert_rejected(
        d,
        &[&format!("{}{}", "[".repeat(200), "]".repeat(200))],
        400,
        "invalid_json",
    );
    assert_rejected(d, &[r#"{"model":1}"#], 400, "invalid_model");
    assert_rejected(d, &[r#"{"model":null}"#], 400, "invalid_model");
    assert_rejected(d, &[r#"{"model":""}"#], 400, "invalid_model");
    assert_rejected(d, &[r#"{"model":"a\nb"}"#], 400, "invalid_model");
    assert_rejected(
        d.with_max_model_len(4),
        &[r#"{"model":"abcde"}"#],
        400,
        "invalid_model",
    );
    assert_rejected(
        d,
        &[r#"{"model":"a","#, r#""model":"b"}"#],
        400,
        "invalid_model",
    );
    assert_rejected(
        d.with_max_scan_bytes(64),
        &[&format!(r#"{{"pad":"{}","model":"a"}}"#, "x".repeat(100))],
        413,
        "request_too_large",
    );
    assert_rejected(
        d.with_max_body_bytes(64),
        &[
            r#"{"model":"a","#,
            &format!(r#""pad":"{}"}}"#, "x".repeat(100)),
        ],
        413,
        "request_too_large",
    );
}

#[test]
fn empty_model_is_reported_for_the_field_empty_counter() {
    let (_, s) = outcome_of(Limits::new(), &[r#"{"model":""}"#]);
    assert!(s.report().empty_model);
}

#[test]
fn model_at_max_len_is_routed_and_one_more_byte_is_refused() {
    let (out, _) = outcome_of(
        Limits::new().with_max_model_len(4),
        &[r#"{"model":"abcd"}"#],
    );
    assert_eq!(out[0], Seen::Headers(model_set("abcd"), vec![], true));
    assert_rejected(
        Limits::new().with_max_model_len(4),
        &[r#"{"model":"abcde"}"#],
        400,
        "invalid_model",
    );
}

#[test]
fn a_violation_after_the_decision_still_gets_a_400() {
    let (out, s) = outcome_of(Limits::new(), &[r#"{"model":"a","#, r#""x":}"#]);
    assert_eq!(out[0], Seen::Headers(model_set("a"), vec![], true));
    assert!(
        matches!(out.last(), Some(Seen::Immediate(400, body)) if body["error"]["code"] == "invalid_json")
    );
    assert_eq!(
        s.report().verdict.as_ref().map(Verdict::label),
        Some("invalid_json")
    );
}

#[test]
fn first_wins_does_not_check_the_rest() {
    let limits = Limits::new().with_duplicate_keys(DuplicateKeys::FirstWins);
    let (out, _) = outcome_of(limits, &[r#"{"model":"a","#, r#""model":"b"}"#]);
    assert!(
        !out.iter().any(|s| matches!(s, Seen::Immediate(..))),
        "{out:?}"
    );
}

#[test]
fn last_wins_holds_the_whole_body_and_routes_on_the_last_model() {
    let limits = Limits::new().with_duplicate_keys(DuplicateKeys::LastWins);
    let (out, _) = outcome_of(limits, &[r#"{"model":"a","#, r#""model":"b"}"#]);
    assert_eq!(out[0], Seen::Headers(model_set("b"), vec![], true));
    assert_eq!(out.len(), 3);
}

// --------------------------------------------------------- response path

#[test]
fn response_messages_pass_through_at_once() {
    let mut s = StreamState::new(settings());
    step(
        &mut s,
        headers_msg(BodySendMode::FullDuplexStreamed, false, true, &[]),
    );
    let resp_headers = ProcessingRequest {
        request: Some(Request::ResponseHeaders(HttpHeaders::default())),
        ..ProcessingRequest::default()
    };
    assert_eq!(step(&mut s, resp_headers), vec![Seen::RespHeaders]);
    let chunk = b("data: {\"x\":1}\n\n");
    let resp_body = ProcessingRequest {
        request: Some(Request::ResponseBody(HttpBody {
            body: chunk.clone(),
            end_of_stream: true,
            ..HttpBody::default()
        })),
        ..ProcessingRequest::default()
    };
    assert_eq!(
        step(&mut s, resp_body),
        vec![Seen::RespStreamed(chunk, true)]
    );
    let resp_trailers = ProcessingRequest {
        request: Some(Request::ResponseTrailers(HttpTrailers::default())),
        ..ProcessingRequest::default()
    };
    assert_eq!(step(&mut s, resp_trailers), vec![Seen::RespTrailers]);
}

#[test]
fn response_body_in_streamed_mode_gets_an_empty_reply() {
    let mut s = StreamState::new(settings());
    step(&mut s, headers_msg(BodySendMode::Streamed, true, true, &[]));
    let resp_body = ProcessingRequest {
        request: Some(Request::ResponseBody(HttpBody {
            body: b("x"),
            end_of_stream: false,
            ..HttpBody::default()
        })),
        ..ProcessingRequest::default()
    };
    assert_eq!(step(&mut s, resp_body), vec![Seen::RespBody]);
}

// ------------------------------------------------------- broken streams

#[test]
fn broken_conversations_are_errors_not_panics() {
    let mut s = StreamState::new(settings());
    let mut out = Vec::new();
    assert_eq!(
        s.on_request(ProcessingRequest::default(), &mut out),
        Err(Error::UnknownRequestType)
    );
    assert!(matches!(
        s.on_request(body_msg(&b("{}"), true), &mut out),
        Err(Error::UnexpectedMessage { .. })
    ));
    s.on_request(post(BodySendMode::FullDuplexStreamed), &mut out)
        .expect("headers");
    assert!(matches!(
        s.on_request(post(BodySendMode::FullDuplexStreamed), &mut out),
        Err(Error::UnexpectedMessage { .. })
    ));
    let grpc = headers_msg(BodySendMode::Grpc, false, false, &[]);
    assert_eq!(
        StreamState::new(settings()).on_request(grpc, &mut out),
        Err(Error::UnsupportedBodyMode(BodySendMode::Grpc as i32))
    );
}

#[test]
fn without_protocol_config_the_configured_default_mode_is_used() {
    let settings = Arc::new(Settings::default().default_body_mode(BodyMode::Buffered));
    let mut s = StreamState::new(settings);
    let mut headers = post(BodySendMode::FullDuplexStreamed);
    headers.protocol_config = None;
    assert_eq!(
        step(&mut s, headers),
        vec![Seen::Headers(vec![], vec![], false)]
    );
}

// -------------------------------------------- chunking and random sequences

const BODIES: [&str; 6] = [
    r#"{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":100,"temperature":0,"messages":[{"role":"developer","content":"You are a helpful assistant."}]}"#,
    r#"{"messages":[{"role":"reviewer","content":"model"}],"model":"food-review-1"}"#,
    r#"{"prompt":"What is the best ski resort in Austria?","max_tokens":20,"temperature":0,"model":"ski-resorts"}"#,
    r#"{"messages":[]}"#,
    r#"{"model":"a","model":"b"}"#,
    r#"{"model":"x","#,
];

fn oracle(body: &str) -> Result<Option<String>, ()> {
    let value: serde_json::Value = serde_json::from_str(body).map_err(|_| ())?;
    match value.get("model") {
        None => Ok(None),
        Some(serde_json::Value::String(m)) => Ok(Some(m.clone())),
        Some(_) => Err(()),
    }
}

#[test]
fn every_split_point_gives_the_oracle_model_and_the_same_bytes_back() {
    for body in BODIES.iter().take(4) {
        let expected = oracle(body).expect("valid test body");
        for split in 0..=body.len() {
            let (a, c) = (b(&body[..split]), b(&body[split..]));
            let mut s = StreamState::new(settings());
            let mut out = step(&mut s, post(BodySendMode::FullDuplexStreamed));
            out.extend(step(&mut s, body_msg(&a, false)));
            out.extend(step(&mut s, body_msg(&c, true)));
            let Seen::Headers(set, _, _) = &out[0] else {
                panic!("headers first: {out:?}");
            };
            assert_eq!(
                set.first().map(|(_, v)| v.clone()),
                expected,
                "{body} split at {split}"
            );
            let forwarded: Vec<u8> = out
                .iter()
                .filter_map(|s| match s {
                    Seen::Streamed(bytes, _) => Some(bytes.to_vec()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(forwarded, body.as_bytes(), "{body} split at {split}");
            assert!(!s.is_holding());
        }
    }
}

#[derive(Debug, Clone)]
enum Msg {
    Headers {
        mode: u8,
        early: bool,
        eos: bool,
    },
    Body {
        body: usize,
        cut: usize,
        part: u8,
        eos: bool,
    },
    Trailers,
    RespHeaders,
    RespBody(bool),
    RespTrailers,
    Unknown,
}

fn msg_strategy() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (0u8..5, any::<bool>(), any::<bool>()).prop_map(|(mode, early, eos)| Msg::Headers {
            mode,
            early,
            eos
        }),
        (0..BODIES.len(), 0usize..200, 0u8..2, any::<bool>()).prop_map(|(body, cut, part, eos)| {
            Msg::Body {
                body,
                cut,
                part,
                eos,
            }
        }),
        Just(Msg::Trailers),
        Just(Msg::RespHeaders),
        any::<bool>().prop_map(Msg::RespBody),
        Just(Msg::RespTrailers),
        Just(Msg::Unknown),
    ]
}

fn to_request(msg: &Msg) -> ProcessingRequest {
    match msg {
        Msg::Headers { mode, early, eos } => {
            let mode = [
                BodySendMode::FullDuplexStreamed,
                BodySendMode::Streamed,
                BodySendMode::Buffered,
                BodySendMode::None,
                BodySendMode::BufferedPartial,
            ][*mode as usize];
            headers_msg(mode, *early, *eos, &[(MODEL_HEADER, "spoof")])
        }
        Msg::Body {
            body,
            cut,
            part,
            eos,
        } => {
            let text = BODIES[*body];
            let cut = cut % (text.len() + 1);
            let piece = if *part == 0 {
                &text[..cut]
            } else {
                &text[cut..]
            };
            body_msg(&b(piece), *eos)
        }
        Msg::Trailers => trailers_msg(),
        Msg::RespHeaders => ProcessingRequest {
            request: Some(Request::ResponseHeaders(HttpHeaders::default())),
            ..ProcessingRequest::default()
        },
        Msg::RespBody(eos) => ProcessingRequest {
            request: Some(Request::ResponseBody(HttpBody {
                body: b("chunk"),
                end_of_stream: *eos,
                ..HttpBody::default()
            })),
            ..ProcessingRequest::default()
        },
        Msg::RespTrailers => ProcessingRequest {
            request: Some(Request::ResponseTrailers(HttpTrailers::default())),
            ..ProcessingRequest::default()
        },
        Msg::Unknown => ProcessingRequest::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
    ))]

    /// No message sequence panics; once the request body has ended (end of
    /// stream or trailers) without a broken conversation, nothing is owed to
    /// Envoy; every body byte that was answered in full duplex comes back in
    /// order; and memory held stays within the scan limit.
    #[test]
    fn no_sequence_panics_or_leaves_the_stream_hung(
        msgs in proptest::collection::vec(msg_strategy(), 0..12),
        rewrite in any::<bool>(),
    ) {
        let limits = Limits::new().with_max_scan_bytes(128);
        let mut settings = Settings::new(limits);
        if rewrite {
            // A catch-all rule: every model is rewritten.
            let rules = RewriteRules::from_yaml_str(
                "kind: InferenceModelRewrite\nspec: {rules: [{targets: [{modelRewrite: 'a\"b'}]}]}",
                "inline",
            ).expect("valid rules");
            settings = settings.model_rewrites(RewritePicker::new(RewriteStore::from_rules(rules)));
        }
        let mut s = StreamState::new(Arc::new(settings));
        let mut ended = false;
        let mut sent = Vec::new();
        let mut returned = Vec::new();
        let mut broken = false;
        let mut full_duplex = None;
        for msg in &msgs {
            if let (Msg::Headers { mode, .. }, None) = (msg, full_duplex) {
                full_duplex = Some(*mode == 0);
            }
            let request = to_request(msg);
            let body_bytes = match &request.request {
                Some(Request::RequestBody(body)) => Some(body.body.clone()),
                _ => None,
            };
            let ends = matches!(&request.request, Some(Request::RequestBody(body)) if body.end_of_stream)
                || matches!(&request.request, Some(Request::RequestTrailers(_)))
                || matches!(&request.request, Some(Request::RequestHeaders(h)) if h.end_of_stream);
            let mut out = Vec::new();
            match s.on_request(request, &mut out) {
                Ok(()) => {
                    if let Some(bytes) = body_bytes { sent.extend_from_slice(&bytes); }
                    if ends { ended = true; }
                }
                Err(_) => { broken = true; break; }
            }
            for seen in seen(&out) {
                if let Seen::Streamed(bytes, _) = seen { returned.extend_from_slice(&bytes); }
            }
            prop_assert!(s.held_bytes() <= 128 + 200);
            if s.is_finished() { break; }
        }
        if ended && !broken {
            prop_assert!(!s.is_holding(), "hung after {:?}", msgs);
        }
        let rewritten = s.report().rewrite.as_ref().is_some_and(ModelRewrite::rewrote);
        if full_duplex == Some(true) && !s.is_finished() && !broken && !s.is_holding() && !rewritten {
            // In full duplex every body byte Envoy sent came back, in order.
            prop_assert_eq!(&returned, &sent);
        }
    }
}

#[test]
fn a_sized_body_is_checked_to_its_end_before_its_last_chunk_is_forwarded() {
    // Envoy may send the last bytes without end_of_stream and the end in an
    // empty message; with content-length the truncation is caught first.
    let body = r#"{"model":"a","messages":["#;
    let length = body.len().to_string();
    let mut s = StreamState::new(settings());
    step(
        &mut s,
        headers_msg(
            BodySendMode::FullDuplexStreamed,
            false,
            false,
            &[("content-length", &length)],
        ),
    );
    let out = step(&mut s, body_msg(&b(body), false));
    assert!(
        matches!(&out[..], [Seen::Immediate(400, json)] if json["error"]["code"] == "invalid_json"),
        "{out:?}"
    );

    let body = r#"{"model":"a","messages":[]}"#;
    let length = body.len().to_string();
    let mut s = StreamState::new(settings());
    step(
        &mut s,
        headers_msg(
            BodySendMode::FullDuplexStreamed,
            false,
            false,
            &[("content-length", &length)],
        ),
    );
    let out = step(&mut s, body_msg(&b(body), false));
    assert_eq!(out.len(), 2, "{out:?}");
    // The empty end-of-stream message is forwarded as such.
    assert_eq!(
        step(&mut s, body_msg(&Bytes::new(), true)),
        vec![Seen::Streamed(Bytes::new(), true)]
    );
    assert!(!s.is_holding());
}

#[test]
fn observability_mode_gets_no_replies_but_is_still_decided() {
    let mut s = StreamState::new(settings());
    let mut headers = post(BodySendMode::FullDuplexStreamed);
    headers.observability_mode = true;
    assert!(step(&mut s, headers).is_empty());
    let mut body = body_msg(&b(r#"{"model":"a"}"#), true);
    body.observability_mode = true;
    assert!(step(&mut s, body).is_empty());
    assert_eq!(
        s.report().verdict.as_ref().map(Verdict::label),
        Some("found")
    );
}

// ------------------------------------------------------ buffered partial

fn partial(settings: Arc<Settings>, body: &str, eos: bool) -> (Vec<Seen>, StreamState) {
    let mut s = StreamState::new(settings);
    let mut out = step(&mut s, post(BodySendMode::BufferedPartial));
    out.extend(step(&mut s, body_msg(&b(body), eos)));
    (out, s)
}

#[test]
fn buffered_partial_prefix_that_holds_the_model_is_routed() {
    // Envoy's buffer limit cut the body inside `messages`: a prefix, not a
    // truncated body.
    let (out, s) = partial(
        settings(),
        r#"{"model":"food-review-1","messages":[{"role":"user","content":"a long"#,
        false,
    );
    assert_eq!(
        out,
        vec![
            Seen::Headers(vec![], vec![], false),
            Seen::Body(Some((model_set("food-review-1"), vec![], true))),
        ]
    );
    assert!(!s.is_finished());
    assert!(matches!(s.report().verdict, Some(Verdict::Found(_))));
}

#[test]
fn buffered_partial_prefix_that_proves_absence_is_forwarded() {
    let (out, s) = partial(settings(), r#"{"prompt":"x"}"#, false);
    assert_eq!(out[1], Seen::Body(None));
    assert_eq!(s.report().verdict, Some(Verdict::Absent));
}

#[test]
fn buffered_partial_undecided_prefix_is_413_by_default_and_forwarded_by_policy() {
    let prefix = r#"{"messages":[{"role":"user","content":"model last"#;
    let (out, s) = partial(settings(), prefix, false);
    let Some(Seen::Immediate(413, body)) = out.last() else {
        panic!("expected 413, got {out:?}");
    };
    assert_eq!(body["error"]["code"], "request_too_large");
    assert!(s.is_finished());

    let forward = Arc::new(Settings::default().undecided_prefix(UndecidedPrefix::Forward));
    let mut s = StreamState::new(forward);
    step(
        &mut s,
        headers_msg(
            BodySendMode::BufferedPartial,
            false,
            false,
            &[(MODEL_HEADER, "spoof")],
        ),
    );
    let out = step(&mut s, body_msg(&b(prefix), false));
    assert_eq!(
        out,
        vec![Seen::Body(Some((
            vec![],
            vec![MODEL_HEADER.to_owned()],
            true
        )))]
    );
    assert_eq!(s.report().verdict, Some(Verdict::Absent));
    assert!(!s.is_finished());
}

#[test]
fn buffered_partial_whole_body_is_checked_to_its_end() {
    let (out, _) = partial(settings(), r#"{"model":"a","messages":[]}"#, true);
    assert_eq!(out[1], Seen::Body(Some((model_set("a"), vec![], true))));
    let (out, _) = partial(settings(), r#"{"model":"a","messages":["#, true);
    assert!(
        matches!(&out[1], Seen::Immediate(400, body) if body["error"]["code"] == "invalid_json")
    );
}

// ------------------------------------------------- client routing headers

#[test]
fn underscored_routing_headers_are_removed_by_the_name_they_were_sent_as() {
    let mut s = StreamState::new(settings());
    step(
        &mut s,
        headers_msg(
            BodySendMode::FullDuplexStreamed,
            true,
            false,
            &[
                ("x_gateway_model_name", "evil"),
                ("X_Gateway-Base_Model-Name", "evil-base"),
                (MODEL_HEADER, "evil"),
            ],
        ),
    );
    let out = step(&mut s, body_msg(&b(r#"{"model":"a"}"#), true));
    assert_eq!(
        out[0],
        Seen::Headers(
            model_set("a"),
            vec![
                "x_gateway_model_name".to_owned(),
                "x_gateway-base_model-name".to_owned(),
            ],
            true
        )
    );
}

#[test]
fn routing_headers_are_refused_under_the_reject_policy() {
    let reject = Arc::new(Settings::default().client_headers(ClientHeaders::Reject));
    for name in ["X_Gateway_Base_Model_Name", BASE_MODEL_HEADER] {
        let mut s = StreamState::new(reject.clone());
        let out = step(
            &mut s,
            headers_msg(
                BodySendMode::FullDuplexStreamed,
                true,
                false,
                &[(name, "x")],
            ),
        );
        let [Seen::Immediate(400, body)] = &out[..] else {
            panic!("{name}: expected a 400, got {out:?}");
        };
        assert_eq!(body["error"]["code"], "routing_header_not_allowed");
        assert_eq!(body["error"]["param"], BASE_MODEL_HEADER);
        assert!(s.is_finished());
        assert!(!s.is_holding());
    }
    let mut s = StreamState::new(reject);
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    let out = step(&mut s, body_msg(&b(r#"{"model":"a"}"#), true));
    assert_eq!(out[0], Seen::Headers(model_set("a"), vec![], true));
}

#[test]
fn every_refusal_is_answered_with_the_contract_status_type_and_body() {
    let refusals = [
        Refusal::MissingModel,
        Refusal::RoutingHeader(MODEL_HEADER),
        Refusal::BodyRead { offset: 3 },
        Refusal::DecisionTimeout {
            deadline: Duration::from_secs(30),
        },
        Refusal::Overloaded,
        Refusal::Extract(ExtractError::new(ErrorKind::ScanLimit { limit: 8 }, 8)),
    ];
    for refusal in refusals {
        let answer = immediate_response(&refusal);
        assert_eq!(answer.status.unwrap().code, i32::from(refusal.status()));
        assert_eq!(answer.body, refusal.json_body());
        let headers: Vec<(String, Bytes)> = answer
            .headers
            .unwrap()
            .set_headers
            .into_iter()
            .map(|h| {
                let h = h.header.unwrap();
                (h.key, h.raw_value)
            })
            .collect();
        let mut expected = vec![(
            "content-type".to_owned(),
            Bytes::from_static(b"application/json"),
        )];
        if let Some(seconds) = refusal.retry_after() {
            expected.push(("retry-after".to_owned(), Bytes::from(seconds.to_string())));
        }
        assert_eq!(headers, expected, "{refusal:?}");
    }
}

// ------------------------------------------------------------- model name

#[test]
fn model_and_base_model_headers_come_from_the_name_the_core_decided() {
    let store = with_adapters().base_models.clone().expect("a map");
    for body in [
        r#"{"model":" ski-resorts"}"#,
        r#"{"model":"ski-resorts "}"#,
        r#"{"model":"ski resorts"}"#,
        r#"{"model":"\u0020movie-critique\t"}"#,
    ] {
        let core = match bbr_core::extract_model(&b(body), &Limits::new()) {
            Ok(Outcome::Found(model)) => model,
            other => {
                // The core refuses it (for example a tab): so must we.
                let (out, _) = outcome_of(Limits::new(), &[body]);
                assert!(
                    matches!(out.last(), Some(Seen::Immediate(400, _))),
                    "{body}: {other:?}"
                );
                continue;
            }
        };
        let mut s = StreamState::new(with_adapters());
        step(&mut s, post(BodySendMode::FullDuplexStreamed));
        let out = step(&mut s, body_msg(&b(body), true));
        let Seen::Headers(set, _, true) = &out[0] else {
            panic!("{body}: {out:?}");
        };
        let mut expected = model_set(core.as_str());
        if let Some(base) = store.lookup(core.as_str()) {
            expected.push((BASE_MODEL_HEADER.to_owned(), base.to_string()));
        }
        assert_eq!(*set, expected, "{body}");
    }
}

// ---------------------------------------------------------- hostile clients

fn trailers_with(headers: &[(&str, &str)]) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Request::RequestTrailers(HttpTrailers {
            trailers: Some(HeaderMap {
                headers: headers
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: (*k).to_owned(),
                        value: String::new(),
                        raw_value: Bytes::copy_from_slice(v.as_bytes()),
                    })
                    .collect(),
            }),
        })),
        ..ProcessingRequest::default()
    }
}

fn trailers_removed(out: &[ProcessingResponse]) -> Vec<String> {
    out.iter()
        .find_map(|reply| match reply.response.as_ref()? {
            processing_response::Response::RequestTrailers(t) => Some(
                t.header_mutation
                    .as_ref()
                    .map(|m| m.remove_headers.clone())
                    .unwrap_or_default(),
            ),
            _ => None,
        })
        .expect("a request trailers reply")
}

#[test]
fn routing_headers_in_request_trailers_are_removed_in_every_mode() {
    let smuggled = [
        ("x-gateway-model-name", "evil"),
        ("X_Gateway_Base_Model_Name", "evil-base"),
        ("x-request-checksum", "kept"),
    ];
    for mode in [
        BodySendMode::FullDuplexStreamed,
        BodySendMode::Streamed,
        BodySendMode::Buffered,
        BodySendMode::None,
    ] {
        let mut s = StreamState::new(settings());
        let mut out = Vec::new();
        s.on_request(post(mode), &mut out).unwrap();
        if mode != BodySendMode::None {
            s.on_request(body_msg(&b(r#"{"model":"a"}"#), false), &mut out)
                .unwrap();
        }
        let mut trailers_out = Vec::new();
        s.on_request(trailers_with(&smuggled), &mut trailers_out)
            .unwrap();
        assert_eq!(
            trailers_removed(&trailers_out),
            vec![
                "x-gateway-model-name".to_owned(),
                "x_gateway_base_model_name".to_owned()
            ],
            "{mode:?}"
        );
        assert!(!s.is_holding(), "{mode:?}");
    }
    // Trailers without routing headers get a reply without a mutation.
    let mut s = StreamState::new(settings());
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    let out = step(&mut s, trailers_with(&[("x-checksum", "1")]));
    assert_eq!(out.last(), Some(&Seen::Trailers));
}

#[test]
fn routing_headers_in_request_trailers_are_refused_under_the_reject_policy() {
    let reject = Arc::new(Settings::default().client_headers(ClientHeaders::Reject));
    let mut s = StreamState::new(reject);
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    let first = step(&mut s, body_msg(&b(r#"{"model":"a"}"#), false));
    assert_eq!(first[0], Seen::Headers(model_set("a"), vec![], true));
    let out = step(&mut s, trailers_with(&[("x-gateway-model-name", "evil")]));
    let [Seen::Immediate(400, body)] = &out[..] else {
        panic!("expected a 400, got {out:?}");
    };
    assert_eq!(body["error"]["code"], "routing_header_not_allowed");
    assert!(s.is_finished());
}

#[test]
fn content_length_over_the_body_limit_is_refused_at_the_headers() {
    let limits = Limits::new().with_max_body_bytes(1000);
    for mode in [
        BodySendMode::FullDuplexStreamed,
        BodySendMode::Streamed,
        BodySendMode::Buffered,
    ] {
        let mut s = StreamState::new(Arc::new(Settings::new(limits)));
        let out = step(
            &mut s,
            headers_msg(mode, true, false, &[("content-length", "1001")]),
        );
        let [Seen::Immediate(413, body)] = &out[..] else {
            panic!("{mode:?}: expected a 413 at the headers, got {out:?}");
        };
        assert_eq!(body["error"]["code"], "request_too_large");
        assert!(s.is_finished());
        // At the limit: accepted, routed from the body.
        let mut s = StreamState::new(Arc::new(Settings::new(limits)));
        let out = step(
            &mut s,
            headers_msg(mode, true, false, &[("content-length", "1000")]),
        );
        assert!(!s.is_finished(), "{mode:?}: {out:?}");
    }
}

#[test]
fn the_deadline_refuses_an_undecided_body_with_408_and_nothing_else() {
    let deadline = Duration::from_millis(1500);
    let settings = Arc::new(Settings::default().decision_deadline(deadline));
    let mut s = StreamState::new(settings.clone());
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    assert!(
        !s.awaiting_decision(),
        "the deadline runs from the first body byte"
    );
    let mut out = Vec::new();
    assert!(!s.on_deadline(&mut out));
    assert!(out.is_empty());
    step(&mut s, body_msg(&Bytes::new(), false));
    assert!(!s.awaiting_decision(), "an empty chunk is no body byte");
    step(&mut s, body_msg(&b(r#"{"messages":["#), false));
    assert!(s.awaiting_decision());
    assert!(s.on_deadline(&mut out));
    let seen = seen(&out);
    let [Seen::Immediate(408, body)] = &seen[..] else {
        panic!("expected a 408, got {seen:?}");
    };
    assert_eq!(body["error"]["code"], "request_timeout");
    assert_eq!(
        body["error"]["message"],
        "no routing decision within 1500 ms of the first body byte"
    );
    assert!(s.is_finished() && !s.is_holding() && s.held_bytes() == 0);

    // Decided: the deadline no longer applies.
    let mut s = StreamState::new(settings);
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    step(&mut s, body_msg(&b(r#"{"model":"a","#), false));
    assert!(!s.awaiting_decision());
    let mut out = Vec::new();
    assert!(!s.on_deadline(&mut out));
    assert!(out.is_empty());
}

#[test]
fn the_global_cap_refuses_with_503_and_retry_after_and_is_given_back() {
    let chunk = b(r#"{"messages":["aaaaaaaa"#);
    let one = {
        let mut s = StreamState::new(settings());
        step(&mut s, post(BodySendMode::FullDuplexStreamed));
        step(&mut s, body_msg(&chunk, false));
        s.held_memory()
    };
    assert!(one >= chunk.len() as u64);
    // Room for exactly two streams' chunks.
    let budget = Arc::new(HeldBudget::new(2 * one));
    let mut streams: Vec<StreamState> = (0..3)
        .map(|_| StreamState::with_budget(settings(), budget.clone()))
        .collect();
    let mut outs = Vec::new();
    for s in &mut streams {
        step(s, post(BodySendMode::FullDuplexStreamed));
        outs.push(step(s, body_msg(&chunk, false)));
    }
    assert!(outs[0].is_empty() && outs[1].is_empty(), "at the cap: held");
    let [Seen::Immediate(503, body)] = &outs[2][..] else {
        panic!("one past the cap: expected a 503, got {:?}", outs[2]);
    };
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!((budget.held(), budget.refused()), (2 * one, 1));
    // A decision gives the bytes back; so does a stream dropped mid-body.
    step(&mut streams[0], body_msg(&b(r#"],"model":"a"}"#), true));
    assert_eq!(budget.held(), one);
    streams.truncate(1);
    assert_eq!(budget.held(), 0);
}

#[test]
fn many_tiny_body_messages_hold_memory_bounded_by_the_bytes_not_the_messages() {
    // As tonic decodes them, chunks are slices of one receive buffer.
    let prefix = format!(r#"{{"messages":["{}"#, "x".repeat(200_000));
    let receive_buffer = Bytes::from(prefix.clone().into_bytes());
    let mut s = StreamState::new(settings());
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    for i in 0..receive_buffer.len() {
        let out = step(&mut s, body_msg(&receive_buffer.slice(i..i + 1), false));
        assert!(out.is_empty());
    }
    let bytes = receive_buffer.len() as u64;
    assert_eq!(s.held_bytes(), bytes);
    assert!(
        s.held_memory() <= bytes + bytes / 4 + 4096,
        "{} bytes held take {} bytes",
        bytes,
        s.held_memory()
    );
    assert!(s.held_pieces() <= 1 + receive_buffer.len() / 30_000);
    // Nothing points into the receive buffer any more: it can be freed.
    assert!(
        receive_buffer.is_unique(),
        "held chunks pin the receive buffer"
    );
    let out = step(&mut s, body_msg(&b(r#""],"model":"m"}"#), true));
    let mut returned = Vec::new();
    for seen in &out[1..] {
        let Seen::Streamed(bytes, _) = seen else {
            panic!("{seen:?}");
        };
        assert!(bytes.len() <= MAX_CHUNK_BYTES);
        returned.extend_from_slice(bytes);
    }
    assert_eq!(
        returned,
        format!(r#"{prefix}"],"model":"m"}}"#).into_bytes()
    );
}

// ------------------------------------ forms and compressed bodies (issue 12)

/// Request headers of an upload: `content-type` (and `content-encoding`
/// fields, one per entry) as Envoy sends them, in `raw_value`.
fn content_headers(
    mode: BodySendMode,
    content_type: &str,
    encodings: &[&str],
    extra: &[(&str, &str)],
) -> ProcessingRequest {
    let mut list = vec![
        (":method", "POST"),
        (":path", "/v1/audio/transcriptions"),
        ("content-type", content_type),
    ];
    list.extend(encodings.iter().map(|e| ("content-encoding", *e)));
    list.extend_from_slice(extra);
    let mut request = headers_msg(mode, true, false, &[]);
    let Some(Request::RequestHeaders(headers)) = &mut request.request else {
        unreachable!()
    };
    headers.headers = Some(HeaderMap {
        headers: list
            .iter()
            .map(|(k, v)| HeaderValue {
                key: (*k).to_owned(),
                value: String::new(),
                raw_value: Bytes::copy_from_slice(v.as_bytes()),
            })
            .collect(),
    });
    request
}

/// Sends `body` in messages of `chunk` bytes (the last one with
/// `end_of_stream`; `BUFFERED`: one message), returns every reply.
fn send_body(
    settings: Arc<Settings>,
    headers: ProcessingRequest,
    body: &Bytes,
    chunk: usize,
) -> (Vec<Seen>, StreamState) {
    let buffered = matches!(
        &headers.protocol_config,
        Some(config) if config.request_body_mode == BodySendMode::Buffered as i32
    );
    let mut s = StreamState::new(settings);
    let mut out = step(&mut s, headers);
    let chunks: Vec<Bytes> = if buffered {
        vec![body.clone()]
    } else {
        (0..body.len())
            .step_by(chunk)
            .map(|start| body.slice(start..(start + chunk).min(body.len())))
            .collect()
    };
    for (i, piece) in chunks.iter().enumerate() {
        if s.is_finished() {
            break;
        }
        out.extend(step(&mut s, body_msg(piece, i + 1 == chunks.len())));
    }
    (out, s)
}

fn forwarded(out: &[Seen]) -> Vec<u8> {
    out.iter()
        .filter_map(|s| match s {
            Seen::Streamed(bytes, _) => Some(bytes.to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The routing decision of a reply list: the model header set by the
/// first headers (or buffered body) reply that clears the route cache.
fn routed(out: &[Seen]) -> Option<Option<String>> {
    out.iter().find_map(|s| match s {
        Seen::Headers(set, _, true) | Seen::Body(Some((set, _, true))) => Some(
            set.iter()
                .find(|(k, _)| k == MODEL_HEADER)
                .map(|(_, v)| v.clone()),
        ),
        _ => None,
    })
}

const BOUNDARY: &str = "----bbr7MA4YWxkTrZu0gW";

/// A transcription upload as curl `-F` sends it: `fields` in order, then
/// the close delimiter (unless `close` is false). A `None` value is the
/// file part.
fn form(boundary: &str, fields: &[(&str, Option<&str>)], close: bool) -> Bytes {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match value {
            Some(value) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            ),
            None => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"a.wav\"\r\n\
                         Content-Type: audio/wav\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(&audio(boundary));
                body.extend_from_slice(b"\r\n");
            }
        }
    }
    if close {
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    }
    Bytes::from(body)
}

/// File content that looks like the start of a delimiter in places (the
/// search must carry it across chunk ends) and holds every byte value.
fn audio(boundary: &str) -> Vec<u8> {
    let mut file = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
    file.extend(0..=255u8);
    file.extend_from_slice(format!("\r\n--{}", &boundary[..boundary.len() - 1]).as_bytes());
    file.extend_from_slice(b"\r\n-\r\n--\r");
    file.extend(0..=255u8);
    file
}

fn form_type(boundary: &str, quoted: bool) -> String {
    if quoted {
        format!("multipart/form-data; boundary=\"{boundary}\"")
    } else {
        format!("multipart/form-data; boundary={boundary}")
    }
}

#[test]
fn a_form_upload_is_routed_by_its_model_field_at_every_chunking_with_the_bytes_untouched() {
    let model_first = [("model", Some("whisper-1")), ("file", None)];
    let model_last = [
        ("file", None),
        ("language", Some("en")),
        ("model", Some("whisper-1")),
    ];
    for (fields, quoted) in [(&model_first[..], false), (&model_last[..], true)] {
        let body = form(BOUNDARY, fields, true);
        let content_type = form_type(BOUNDARY, quoted);
        for chunk in 1..=64 {
            let context = format!("{fields:?}, quoted {quoted}, {chunk}-byte chunks");
            let headers =
                content_headers(BodySendMode::FullDuplexStreamed, &content_type, &[], &[]);
            let (out, s) = send_body(settings(), headers, &body, chunk);
            assert_eq!(
                out[0],
                Seen::Headers(model_set("whisper-1"), vec![], true),
                "{context}"
            );
            assert_eq!(forwarded(&out), &body[..], "{context}");
            assert!(!s.is_holding() && !s.is_finished(), "{context}");
            assert_eq!(s.report().body_kind, Some(BodyKind::Multipart));

            // STREAMED with the early body: Envoy keeps the bytes, one
            // empty reply per chunk, the headers reply first.
            let headers = content_headers(BodySendMode::Streamed, &content_type, &[], &[]);
            let (out, s) = send_body(settings(), headers, &body, chunk);
            assert_eq!(
                out[0],
                Seen::Headers(model_set("whisper-1"), vec![], true),
                "{context}"
            );
            assert_eq!(out.len(), 1 + body.len().div_ceil(chunk), "{context}");
            assert!(out[1..].iter().all(|s| *s == Seen::Body(None)), "{context}");
            assert!(!s.is_holding(), "{context}");
        }
        let headers = content_headers(BodySendMode::Buffered, &content_type, &[], &[]);
        let (out, _) = send_body(settings(), headers, &body, body.len());
        assert_eq!(
            out,
            vec![
                Seen::Headers(vec![], vec![], false),
                Seen::Body(Some((model_set("whisper-1"), vec![], true))),
            ]
        );
    }
}

#[test]
fn a_form_with_the_model_first_is_decided_before_the_file_arrives() {
    let body = form(
        BOUNDARY,
        &[("model", Some("whisper-1")), ("file", None)],
        true,
    );
    let file_at = body
        .windows(8)
        .position(|w| w == b"RIFF\0\0\0\0")
        .expect("the file");
    let headers = content_headers(
        BodySendMode::FullDuplexStreamed,
        &form_type(BOUNDARY, false),
        &[],
        &[],
    );
    let mut s = StreamState::new(settings());
    step(&mut s, headers);
    let out = step(&mut s, body_msg(&body.slice(..file_at), false));
    assert_eq!(out[0], Seen::Headers(model_set("whisper-1"), vec![], true));
    assert!(!s.awaiting_decision());
    assert!(s.report().bytes_before_decision <= file_at as u64);
}

#[test]
fn a_second_model_field_under_reject_is_refused_at_every_chunking() {
    let body = form(
        BOUNDARY,
        &[
            ("model", Some("whisper-1")),
            ("file", None),
            ("model", Some("other")),
        ],
        true,
    );
    for chunk in 1..=64 {
        let headers = content_headers(
            BodySendMode::FullDuplexStreamed,
            &form_type(BOUNDARY, false),
            &[],
            &[],
        );
        let (out, s) = send_body(settings(), headers, &body, chunk);
        assert_eq!(out[0], Seen::Headers(model_set("whisper-1"), vec![], true));
        let Some(Seen::Immediate(400, error)) = out.last() else {
            panic!("{chunk}: expected a 400 last, got {out:?}");
        };
        assert_eq!(error["error"]["code"], "invalid_model", "{chunk}");
        assert!(body.starts_with(&forwarded(&out)), "{chunk}");
        assert!(s.is_finished());
    }
    // First-wins does not read on.
    let limits = Limits::new().with_duplicate_keys(DuplicateKeys::FirstWins);
    let headers = content_headers(
        BodySendMode::FullDuplexStreamed,
        &form_type(BOUNDARY, false),
        &[],
        &[],
    );
    let (out, s) = send_body(Arc::new(Settings::new(limits)), headers, &body, 7);
    assert_eq!(forwarded(&out), &body[..]);
    assert!(!s.is_finished());
}

#[test]
fn a_form_without_its_closing_boundary_is_refused_at_every_chunking() {
    for fields in [
        &[("model", Some("whisper-1")), ("file", None)][..],
        &[("file", None), ("model", Some("whisper-1"))][..],
    ] {
        let body = form(BOUNDARY, fields, false);
        for chunk in 1..=64 {
            let headers = content_headers(
                BodySendMode::FullDuplexStreamed,
                &form_type(BOUNDARY, true),
                &[],
                &[],
            );
            let (out, s) = send_body(settings(), headers, &body, chunk);
            let Some(Seen::Immediate(400, error)) = out.last() else {
                panic!("{chunk}: expected a 400 last, got {out:?}");
            };
            assert_eq!(error["error"]["code"], "invalid_json", "{fields:?} {chunk}");
            assert!(s.is_finished());
            assert!(!s.is_holding());
        }
    }
}

#[test]
fn a_form_without_a_model_field_follows_the_missing_model_policy() {
    let body = form(BOUNDARY, &[("file", None), ("language", Some("en"))], true);
    let content_type = form_type(BOUNDARY, false);
    let headers = content_headers(
        BodySendMode::FullDuplexStreamed,
        &content_type,
        &[],
        &[(MODEL_HEADER, "spoof")],
    );
    let (out, s) = send_body(settings(), headers, &body, 13);
    assert_eq!(
        out[0],
        Seen::Headers(vec![], vec![MODEL_HEADER.to_owned()], true)
    );
    assert_eq!(forwarded(&out), &body[..]);
    assert_eq!(s.report().verdict, Some(Verdict::Absent));

    let reject = Arc::new(Settings::default().missing_model(MissingModel::Reject));
    let headers = content_headers(BodySendMode::FullDuplexStreamed, &content_type, &[], &[]);
    let (out, _) = send_body(reject, headers, &body, 13);
    assert!(
        matches!(out.last(), Some(Seen::Immediate(400, e)) if e["error"]["code"] == "missing_model"),
        "{out:?}"
    );
}

#[test]
fn a_form_without_a_boundary_is_refused_not_forwarded() {
    let body = form(BOUNDARY, &[("model", Some("whisper-1"))], true);
    let headers = content_headers(
        BodySendMode::FullDuplexStreamed,
        "multipart/form-data",
        &[],
        &[],
    );
    let (out, _) = send_body(settings(), headers, &body, 64);
    assert!(
        matches!(&out[..], [Seen::Immediate(400, e)] if e["error"]["code"] == "invalid_json"),
        "{out:?}"
    );
}

#[test]
fn part_limits_come_from_the_settings() {
    // Two part header lines: at a limit of two accepted, of one refused.
    let body = form(BOUNDARY, &[("file", None), ("model", Some("m"))], true);
    for (max, routed_as) in [(2, Some(Some("m".to_owned()))), (1, None)] {
        let settings = Settings::default().part_limits(PartLimits::new().with_max_headers(max));
        let headers = content_headers(
            BodySendMode::FullDuplexStreamed,
            &form_type(BOUNDARY, false),
            &[],
            &[],
        );
        let (out, _) = send_body(Arc::new(settings), headers, &body, 64);
        assert_eq!(routed(&out), routed_as, "max_headers {max}: {out:?}");
        if routed_as.is_none() {
            assert!(
                matches!(&out[..], [Seen::Immediate(400, e)] if e["error"]["code"] == "invalid_json"),
                "{out:?}"
            );
        }
    }
}

#[test]
fn buffered_partial_prefix_of_a_form_is_routed_when_the_field_comes_first() {
    let first = form(
        BOUNDARY,
        &[("model", Some("whisper-1")), ("file", None)],
        true,
    );
    let last = form(
        BOUNDARY,
        &[("file", None), ("model", Some("whisper-1"))],
        true,
    );
    for (body, expected) in [(&first, Some(Some("whisper-1".to_owned()))), (&last, None)] {
        let mut s = StreamState::new(settings());
        step(
            &mut s,
            content_headers(
                BodySendMode::BufferedPartial,
                &form_type(BOUNDARY, false),
                &[],
                &[],
            ),
        );
        // Envoy's buffer limit cut the upload inside the file.
        let out = step(&mut s, body_msg(&body.slice(..body.len() - 200), false));
        assert_eq!(routed(&out), expected, "{out:?}");
        if expected.is_none() {
            assert!(
                matches!(&out[..], [Seen::Immediate(413, _)]),
                "an undecided prefix: {out:?}"
            );
        }
    }
}

#[test]
fn content_headers_are_read_from_value_as_well_as_raw_value_and_in_any_case() {
    let body = form(BOUNDARY, &[("model", Some("whisper-1"))], true);
    let mut headers = content_headers(BodySendMode::FullDuplexStreamed, "x", &[], &[]);
    let Some(Request::RequestHeaders(h)) = &mut headers.request else {
        unreachable!()
    };
    let map = h.headers.as_mut().expect("headers");
    map.headers.retain(|h| h.key != "content-type");
    map.headers.push(HeaderValue {
        key: "Content-Type".to_owned(),
        value: form_type(BOUNDARY, true),
        raw_value: Bytes::new(),
    });
    let (out, s) = send_body(settings(), headers, &body, 5);
    assert_eq!(out[0], Seen::Headers(model_set("whisper-1"), vec![], true));
    assert_eq!(s.report().body_kind, Some(BodyKind::Multipart));
}

// ------------------------------------------------------ compressed bodies

const CHAT: &str = r#"{"messages":[{"role":"user","content":"Review this place: the soup was cold and the service slow."}],"max_tokens":32,"model":"food-review-1"}"#;

#[cfg(feature = "flate2")]
fn gzip(data: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    Bytes::from(encoder.finish().expect("gzip"))
}

#[cfg(feature = "flate2")]
fn deflate(data: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("deflate");
    Bytes::from(encoder.finish().expect("deflate"))
}

#[cfg(feature = "brotli")]
fn brotli(data: &[u8]) -> Bytes {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams::default();
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).expect("brotli");
    Bytes::from(out)
}

#[cfg(feature = "zstd")]
fn zstd(data: &[u8]) -> Bytes {
    Bytes::from(zstd::bulk::compress(data, 3).expect("zstd"))
}

/// An encoder of one coding.
type Encoder = fn(&[u8]) -> Bytes;

/// Every coding built, with its encoder.
fn codings() -> Vec<(&'static str, Encoder)> {
    #[allow(unused_mut)]
    let mut list: Vec<(&'static str, Encoder)> = Vec::new();
    #[cfg(feature = "flate2")]
    list.extend([("gzip", gzip as Encoder), ("deflate", deflate)]);
    #[cfg(feature = "brotli")]
    list.push(("br", brotli));
    #[cfg(feature = "zstd")]
    list.push(("zstd", zstd));
    list
}

#[test]
fn a_compressed_body_is_routed_at_every_chunking_and_forwarded_compressed() {
    for (coding, encode) in codings() {
        let body = encode(CHAT.as_bytes());
        for chunk in 1..=64 {
            let context = format!("{coding}, {chunk}-byte chunks");
            let headers = content_headers(
                BodySendMode::FullDuplexStreamed,
                "application/json",
                &[coding],
                &[],
            );
            let (out, s) = send_body(settings(), headers, &body, chunk);
            assert_eq!(
                out[0],
                Seen::Headers(model_set("food-review-1"), vec![], true),
                "{context}"
            );
            assert_eq!(forwarded(&out), &body[..], "{context}: bytes changed");
            assert!(!s.is_holding() && !s.is_finished(), "{context}");
            assert_eq!(s.report().body_kind, Some(BodyKind::Json));
        }
        for mode in [BodySendMode::Buffered, BodySendMode::BufferedPartial] {
            let headers = content_headers(mode, "application/json", &[coding], &[]);
            let (out, _) = send_body(settings(), headers, &body, body.len());
            assert_eq!(
                out[1],
                Seen::Body(Some((model_set("food-review-1"), vec![], true))),
                "{coding} {mode:?}"
            );
        }
    }
}

#[cfg(all(feature = "flate2", feature = "brotli"))]
#[test]
fn two_content_encoding_fields_are_one_list_decoded_in_reverse_order() {
    // `content-encoding: gzip` then `content-encoding: br`: gzip was
    // applied first, so br is undone first.
    let body = brotli(&gzip(CHAT.as_bytes()));
    for chunk in [1, 9, 64] {
        let headers = content_headers(
            BodySendMode::FullDuplexStreamed,
            "application/json",
            &["gzip", "br"],
            &[],
        );
        let (out, _) = send_body(settings(), headers, &body, chunk);
        assert_eq!(
            out[0],
            Seen::Headers(model_set("food-review-1"), vec![], true)
        );
        assert_eq!(forwarded(&out), &body[..]);
    }
}

#[cfg(feature = "flate2")]
#[test]
fn a_gzip_form_upload_is_routed_by_its_field() {
    let plain = form(
        BOUNDARY,
        &[("file", None), ("model", Some("whisper-1"))],
        true,
    );
    let body = gzip(&plain);
    for chunk in 1..=64 {
        let headers = content_headers(
            BodySendMode::FullDuplexStreamed,
            &form_type(BOUNDARY, true),
            &["gzip"],
            &[],
        );
        let (out, _) = send_body(settings(), headers, &body, chunk);
        assert_eq!(out[0], Seen::Headers(model_set("whisper-1"), vec![], true));
        assert_eq!(forwarded(&out), &body[..], "{chunk}");
    }
}

/// `{` and `len` spaces: valid JSON as far as it goes, compressing ~1000:1.
fn blank_object(len: usize) -> Vec<u8> {
    let mut body = vec![b' '; len];
    body[0] = b'{';
    body
}

#[test]
fn a_decompression_bomb_is_413_with_little_held() {
    for (coding, encode) in codings() {
        let body = encode(&blank_object(16 << 20));
        assert!(body.len() < 64 << 10, "{coding}: {} bytes", body.len());
        let headers = content_headers(
            BodySendMode::FullDuplexStreamed,
            "application/json",
            &[coding],
            &[],
        );
        let mut s = StreamState::new(settings());
        step(&mut s, headers);
        let mut out = Vec::new();
        let mut most_held = 0;
        for piece in body.chunks(1024) {
            out.extend(step(
                &mut s,
                body_msg(&Bytes::copy_from_slice(piece), false),
            ));
            most_held = most_held.max(s.held_bytes());
            if s.is_finished() {
                break;
            }
        }
        let [Seen::Immediate(413, error)] = &out[..] else {
            panic!("{coding}: expected only a 413, got {out:?}");
        };
        assert_eq!(error["error"]["code"], "request_too_large", "{coding}");
        assert!(s.is_finished());
        assert_eq!(s.held_memory(), 0, "{coding}: the budget is given back");
        // Refused by the ratio after ~1 MiB decoded: a few KiB read.
        assert!(most_held < 32 << 10, "{coding}: {most_held} bytes held");
    }
}

#[test]
fn decode_limits_come_from_the_settings() {
    // A highly compressible 1 MiB body: refused at a max ratio of 2 past
    // a 64 KiB floor, routed when the ratio allowed is huge.
    let mut plain = br#"{"model":"m","pad":""#.to_vec();
    plain.extend(std::iter::repeat_n(b'a', 1 << 20));
    plain.extend_from_slice(br#""}"#);
    for (coding, encode) in codings() {
        let body = encode(&plain);
        for (ratio, expected_status) in [(1_000_000, None), (2, Some(413))] {
            let limits = DecodeLimits::new()
                .with_max_ratio(ratio)
                .with_ratio_floor(64 << 10);
            let headers = content_headers(
                BodySendMode::FullDuplexStreamed,
                "application/json",
                &[coding],
                &[],
            );
            let settings = Arc::new(Settings::default().decode_limits(limits));
            let (out, _) = send_body(settings, headers, &body, 4096);
            let status = out.iter().find_map(|s| match s {
                Seen::Immediate(status, _) => Some(*status),
                _ => None,
            });
            assert_eq!(status, expected_status, "{coding}, ratio {ratio}");
        }
    }
}

#[test]
fn corrupt_and_truncated_compressed_bodies_are_400() {
    for (coding, encode) in codings() {
        let body = encode(CHAT.as_bytes());
        let truncated = body.slice(..body.len() - 4);
        let mut corrupt = body.to_vec();
        corrupt[body.len() / 2] ^= 0x55;
        for (what, bytes) in [("truncated", truncated), ("corrupt", Bytes::from(corrupt))] {
            let headers = content_headers(
                BodySendMode::FullDuplexStreamed,
                "application/json",
                &[coding],
                &[],
            );
            let (out, s) = send_body(settings(), headers, &bytes, 16);
            let Some(Seen::Immediate(400, error)) = out.last() else {
                panic!("{coding} {what}: expected a 400 last, got {out:?}");
            };
            assert_eq!(error["error"]["code"], "invalid_json", "{coding} {what}");
            assert!(s.is_finished());
        }
    }
}

#[cfg(feature = "flate2")]
#[test]
fn a_sized_compressed_body_is_checked_to_its_end_before_its_last_chunk_is_forwarded() {
    // A gzip body whose CRC is wrong, with a content-length: the chunk
    // that completes it is checked first, so the upstream never gets the
    // whole (bad) body.
    let mut body = gzip(CHAT.as_bytes()).to_vec();
    let crc_at = body.len() - 8;
    body[crc_at] ^= 1;
    let body = Bytes::from(body);
    let length = body.len().to_string();
    let headers = content_headers(
        BodySendMode::FullDuplexStreamed,
        "application/json",
        &["gzip"],
        &[("content-length", &length)],
    );
    let mut s = StreamState::new(settings());
    step(&mut s, headers);
    let (head, tail) = (body.slice(..body.len() - 8), body.slice(body.len() - 8..));
    let mut out = step(&mut s, body_msg(&head, false));
    assert_eq!(
        out[0],
        Seen::Headers(model_set("food-review-1"), vec![], true)
    );
    out.extend(step(&mut s, body_msg(&tail, false)));
    assert!(
        matches!(out.last(), Some(Seen::Immediate(400, _))),
        "{out:?}"
    );
    assert_eq!(forwarded(&out), &head[..], "the last chunk was held back");
}

#[test]
fn an_encoding_not_decoded_is_forwarded_unrouted_or_refused_as_missing_model() {
    // Unknown, three codings, and those whose feature is off.
    let undecoded: Vec<&str> = ["compress", "gzip, gzip, gzip"]
        .into_iter()
        .chain(cfg!(not(feature = "zstd")).then_some("zstd"))
        .chain(cfg!(not(feature = "flate2")).then_some("gzip"))
        .collect();
    let body = Bytes::from_static(b"\x1f\x9d\x90{\"model\":\"not-read\"}");
    for encoding in undecoded {
        for mode in [
            BodySendMode::FullDuplexStreamed,
            BodySendMode::Streamed,
            BodySendMode::Buffered,
        ] {
            let headers = content_headers(
                mode,
                "application/json",
                &[encoding],
                &[(MODEL_HEADER, "spoof")],
            );
            let (out, s) = send_body(settings(), headers, &body, 3);
            assert_eq!(
                routed(&out),
                Some(None),
                "{encoding} {mode:?}: no model header: {out:?}"
            );
            assert!(!out.iter().any(|s| matches!(s, Seen::Immediate(..))));
            assert_eq!(s.report().verdict, Some(Verdict::Absent));
            assert!(matches!(
                s.report().body_kind,
                Some(BodyKind::NotDecoded(_))
            ));
            if mode == BodySendMode::FullDuplexStreamed {
                // Decided on the first chunk: nothing held.
                assert_eq!(
                    out[0],
                    Seen::Headers(vec![], vec![MODEL_HEADER.to_owned()], true)
                );
                assert_eq!(forwarded(&out), &body[..]);
            }
        }
        let reject = Arc::new(Settings::default().missing_model(MissingModel::Reject));
        let headers = content_headers(
            BodySendMode::FullDuplexStreamed,
            "application/json",
            &[encoding],
            &[],
        );
        let (out, _) = send_body(reject, headers, &body, 3);
        assert!(
            matches!(&out[..], [Seen::Immediate(400, e)] if e["error"]["code"] == "missing_model"),
            "{encoding}: {out:?}"
        );
    }
}

#[test]
fn an_empty_body_in_an_encoding_not_decoded_is_no_body_not_a_missing_model() {
    let reject = Arc::new(Settings::default().missing_model(MissingModel::Reject));
    for trailers in [false, true] {
        let mut s = StreamState::new(reject.clone());
        step(
            &mut s,
            content_headers(
                BodySendMode::FullDuplexStreamed,
                "application/json",
                &["compress"],
                &[],
            ),
        );
        let mut out = step(&mut s, body_msg(&Bytes::new(), false));
        if trailers {
            out.extend(step(&mut s, trailers_msg()));
        } else {
            out.extend(step(&mut s, body_msg(&Bytes::new(), true)));
        }
        assert!(
            !out.iter().any(|s| matches!(s, Seen::Immediate(..))),
            "{out:?}"
        );
        assert_eq!(s.report().verdict, Some(Verdict::NoBody));
    }
}

// ------------------------------------------------------------- rewrites

use bbr_adapters::rewrite::{RewritePicker, RewriteRules, RewriteStore};
use bbr_core::contract::REQUESTED_MODEL_HEADER;

/// Rules: `food-review` split 90/10, `gpt-4o` an alias onto a target that
/// needs escaping, `canary` kept on itself, and a compressed-only name.
const RULES: &str = r#"
kind: InferenceModelRewrite
metadata: {name: rollout, namespace: ns}
spec:
  rules:
  - matches: [{model: {value: food-review}}]
    targets: [{modelRewrite: food-review-1, weight: 90}, {modelRewrite: food-review-2, weight: 10}]
  - matches: [{model: {value: gpt-4o}}]
    targets: [{modelRewrite: 'llama "β" 3\8b'}]
  - matches: [{model: {value: canary}}]
    targets: [{modelRewrite: canary}]
"#;

fn rewriting(sticky: Option<&str>) -> Arc<Settings> {
    let rules = RewriteRules::from_yaml_str(RULES, "inline").expect("valid rules");
    let mut picker = RewritePicker::new(RewriteStore::from_rules(rules));
    if let Some(header) = sticky {
        picker = picker.sticky_by(header);
    }
    Arc::new(Settings::default().model_rewrites(picker))
}

/// What an upstream behind Envoy receives, replaying Envoy's side of the
/// protocol: the headers after every mutation, and the body (streamed
/// pieces in full duplex, each chunk or its replacement in `STREAMED`, the
/// one body or its replacement in `BUFFERED`).
#[derive(Debug, Default)]
struct Upstream {
    headers: std::collections::BTreeMap<String, String>,
    body: Vec<u8>,
    immediate: Option<u16>,
}

fn through_envoy(
    settings: Arc<Settings>,
    mode: BodySendMode,
    chunks: &[Bytes],
    extra: &[(&str, &str)],
) -> (Upstream, StreamState) {
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let length = total.to_string();
    let mut headers = vec![("content-length", length.as_str())];
    headers.extend_from_slice(extra);
    let mut up = Upstream::default();
    for (k, v) in &headers {
        up.headers.insert((*k).to_owned(), (*v).to_owned());
    }
    let mut s = StreamState::new(settings);
    let mut pending: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
    let apply = |up: &mut Upstream,
                 out: Vec<ProcessingResponse>,
                 pending: &mut std::collections::VecDeque<Bytes>| {
        use processing_response::Response as R;
        for reply in out {
            let common = match reply.response.expect("a response") {
                R::RequestHeaders(h) => h.response,
                R::RequestBody(b) => {
                    let common = b.response;
                    let body = common.as_ref().and_then(|c| c.body_mutation.clone());
                    match body.and_then(|m| m.mutation) {
                        Some(body_mutation::Mutation::StreamedResponse(part)) => {
                            up.body.extend_from_slice(&part.body)
                        }
                        Some(body_mutation::Mutation::Body(replaced)) => {
                            pending.pop_front().expect("a chunk awaits its reply");
                            up.body.extend_from_slice(&replaced);
                        }
                        Some(body_mutation::Mutation::ClearBody(_)) => {
                            pending.pop_front().expect("a chunk awaits its reply");
                        }
                        None => {
                            if let Some(chunk) = pending.pop_front() {
                                up.body.extend_from_slice(&chunk);
                            }
                        }
                    }
                    common
                }
                R::ImmediateResponse(i) => {
                    up.immediate = Some(i.status.expect("status").code as u16);
                    None
                }
                R::RequestTrailers(_) => None,
                other => panic!("unexpected reply {other:?}"),
            };
            if let Some(mutation) = common.and_then(|c| c.header_mutation) {
                for removed in mutation.remove_headers {
                    up.headers.remove(&removed);
                }
                for set in mutation.set_headers {
                    let h = set.header.expect("header");
                    up.headers.insert(
                        h.key,
                        String::from_utf8(h.raw_value.to_vec()).expect("utf8"),
                    );
                }
            }
        }
    };
    let mut out = Vec::new();
    let mut request = headers_msg(mode, true, false, &headers);
    if extra.iter().any(|(k, _)| *k == "content-type")
        && let Some(Request::RequestHeaders(h)) = &mut request.request
        && let Some(map) = &mut h.headers
    {
        // The caller's content type, not the default JSON one.
        let first = map.headers.iter().position(|h| h.key == "content-type");
        map.headers.remove(first.expect("the default content type"));
    }
    s.on_request(request, &mut out).expect("valid");
    apply(&mut up, std::mem::take(&mut out), &mut pending);
    let messages: Vec<Bytes> = match mode {
        BodySendMode::Buffered => vec![chunks.concat().into()],
        _ => chunks.to_vec(),
    };
    let count = messages.len();
    for (i, chunk) in messages.into_iter().enumerate() {
        if mode != BodySendMode::FullDuplexStreamed {
            pending.push_back(chunk.clone());
        }
        s.on_request(body_msg(&chunk, i + 1 == count), &mut out)
            .expect("valid");
        apply(&mut up, std::mem::take(&mut out), &mut pending);
    }
    assert!(
        pending.is_empty() || up.immediate.is_some(),
        "every chunk answered"
    );
    (up, s)
}

/// Bodies with the model first, last, escaped, and spaces around it.
const REWRITE_BODIES: [&str; 4] = [
    r#"{"model":"food-review","messages":[{"role":"user","content":"é \" x"}],"n":1.50}"#,
    r#"{"messages":[{"role":"user","content":"a\nb"}],"max_tokens":7,"model" : "gpt-\u0034o" }"#,
    r#"{"stream":true,"model":"g\u0070t-4o","temperature":0}"#,
    r#"  {"model":"food-review"}  "#,
];

fn targets_of(requested: &str) -> &'static [&'static str] {
    match requested {
        "food-review" => &["food-review-1", "food-review-2"],
        _ => &["llama \"β\" 3\\8b"],
    }
}

/// The client's body with exactly the model token replaced.
fn expected_body(body: &str, target: &str) -> Vec<u8> {
    let outcome = bbr_core::extract_model(&b(body), &Limits::new()).expect("valid");
    let span = outcome.model().expect("model").json_span().expect("span");
    let mut out = body.as_bytes()[..span.start as usize].to_vec();
    out.extend_from_slice(&bbr_core::rewrite::json_string_token(target));
    out.extend_from_slice(&body.as_bytes()[span.end as usize..]);
    out
}

fn check_rewritten(body: &str, up: &Upstream, s: &StreamState, what: &str) {
    let requested = oracle(body).expect("valid").expect("a model");
    assert_eq!(up.immediate, None, "{what}");
    let target = up.headers.get(MODEL_HEADER).expect("model header").clone();
    assert!(
        targets_of(&requested).contains(&target.as_str()),
        "{what}: {target}"
    );
    assert_eq!(
        up.headers.get(REQUESTED_MODEL_HEADER),
        Some(&requested),
        "{what}"
    );
    assert_eq!(up.body, expected_body(body, &target), "{what}");
    assert_eq!(
        up.headers.get("content-length").map(String::as_str),
        Some(up.body.len().to_string().as_str()),
        "{what}: content-length"
    );
    // Parsed, the two bodies are equal except `model`.
    let mut sent: serde_json::Value = serde_json::from_str(body).expect("json");
    let got: serde_json::Value = serde_json::from_slice(&up.body).expect("json");
    sent["model"] = serde_json::Value::String(target.clone());
    assert_eq!(got, sent, "{what}");
    let rewrite = s.report().rewrite.as_ref().expect("a rewrite");
    assert_eq!(
        (rewrite.requested(), rewrite.target()),
        (requested.as_str(), target.as_str())
    );
    assert!(matches!(&s.report().verdict, Some(Verdict::Found(m)) if m.as_str() == target));
}

const MODES: [BodySendMode; 3] = [
    BodySendMode::FullDuplexStreamed,
    BodySendMode::Streamed,
    BodySendMode::Buffered,
];

#[test]
fn rewrites_replace_only_the_token_under_every_single_and_double_cut_in_every_mode() {
    let settings = rewriting(None);
    for body in REWRITE_BODIES {
        let bytes = b(body);
        for mode in MODES {
            for i in 0..=bytes.len() {
                for j in i..=bytes.len() {
                    let chunks = [bytes.slice(..i), bytes.slice(i..j), bytes.slice(j..)];
                    let (up, s) = through_envoy(settings.clone(), mode, &chunks, &[]);
                    check_rewritten(body, &up, &s, &format!("{mode:?} {body} cut {i},{j}"));
                }
            }
        }
    }
}

#[test]
fn rewrites_in_one_byte_chunks_in_every_mode() {
    let settings = rewriting(None);
    for body in REWRITE_BODIES {
        let bytes = b(body);
        let chunks: Vec<Bytes> = (0..bytes.len()).map(|i| bytes.slice(i..i + 1)).collect();
        for mode in MODES {
            let (up, s) = through_envoy(settings.clone(), mode, &chunks, &[]);
            check_rewritten(body, &up, &s, &format!("{mode:?} {body} 1-byte"));
        }
    }
}

#[test]
fn full_duplex_rewrite_sends_slices_of_the_client_chunks_and_the_new_token() {
    let mut s = StreamState::new(rewriting(None));
    step(&mut s, post(BodySendMode::FullDuplexStreamed));
    // Over the coalescing size, so the held chunk is kept as it is.
    let pad = "x".repeat(crate::held::COALESCE_BELOW);
    let first = b(&format!(r#"{{"messages":["{pad}"],"model":"gpt-"#));
    assert!(step(&mut s, body_msg(&first, false)).is_empty());
    let second = b(r#"4o","stream":true}"#);
    let mut raw = Vec::new();
    s.on_request(body_msg(&second, true), &mut raw)
        .expect("valid");
    let out = seen(&raw);
    let pieces: Vec<Bytes> = out
        .iter()
        .filter_map(|s| match s {
            Seen::Streamed(bytes, _) => Some(bytes.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(pieces.len(), 3, "{out:?}");
    assert_eq!(pieces[0].as_ptr(), first.as_ptr());
    assert_eq!(
        &pieces[0][..],
        format!(r#"{{"messages":["{pad}"],"model":"#).as_bytes()
    );
    assert_eq!(&pieces[1][..], r#""llama \"β\" 3\\8b""#.as_bytes());
    assert_eq!(pieces[2].as_ptr(), second[3..].as_ptr());
    assert_eq!(out.last(), Some(&Seen::Streamed(second.slice(3..), true)));
}

#[test]
fn a_client_requested_model_header_never_passes_and_is_set_from_the_body() {
    for (body, requested) in [
        (r#"{"model":"food-review"}"#, Some("food-review")),
        (r#"{"model":"ski-resorts"}"#, Some("ski-resorts")),
        (r#"{"prompt":"x"}"#, None),
    ] {
        for mode in MODES {
            let (up, s) = through_envoy(
                rewriting(None),
                mode,
                &[b(body)],
                &[(REQUESTED_MODEL_HEADER, "spoofed")],
            );
            assert_eq!(
                up.headers.get(REQUESTED_MODEL_HEADER).map(String::as_str),
                requested,
                "{mode:?} {body}"
            );
            if requested == Some("ski-resorts") {
                // No rule: the body and its length are the client's.
                assert_eq!(up.body, body.as_bytes());
                assert_eq!(up.headers["content-length"], body.len().to_string());
                assert_eq!(s.report().rewrite, None);
            }
        }
    }
    // Without rewrites configured the header is none of this server's business.
    let (up, _) = through_envoy(
        settings(),
        BodySendMode::FullDuplexStreamed,
        &[b(r#"{"model":"food-review"}"#)],
        &[(REQUESTED_MODEL_HEADER, "client")],
    );
    assert_eq!(up.headers[REQUESTED_MODEL_HEADER], "client");
}

#[test]
fn a_rule_keeping_the_requested_name_changes_no_byte_but_is_reported() {
    for mode in MODES {
        let body = r#"{"model":"canary","n":1}"#;
        let (up, s) = through_envoy(rewriting(None), mode, &[b(body)], &[]);
        assert_eq!(up.body, body.as_bytes());
        assert_eq!(up.headers[MODEL_HEADER], "canary");
        assert_eq!(up.headers["content-length"], body.len().to_string());
        let rewrite = s.report().rewrite.as_ref().expect("decided by a rule");
        assert!(!rewrite.rewrote());
        assert_eq!(rewrite.rule(), "ns/rollout/2");
    }
}

#[test]
fn a_refused_body_is_never_rewritten() {
    for mode in MODES {
        // A duplicate model: refused before any byte goes upstream.
        let body = r#"{"model":"food-review","model":"x"}"#;
        let (up, s) = through_envoy(rewriting(None), mode, &[b(body)], &[]);
        assert_eq!(up.immediate, Some(400), "{mode:?}");
        assert!(up.body.is_empty(), "{mode:?}");
        assert!(!up.headers.contains_key(MODEL_HEADER));
        assert!(matches!(s.report().verdict, Some(Verdict::Rejected(_))));
    }
}

#[test]
fn sticky_picks_follow_the_header_and_fall_back_to_random_without_it() {
    let settings = rewriting(Some("x-session-id"));
    let body = r#"{"model":"food-review"}"#;
    let mut seen_targets = std::collections::BTreeSet::new();
    for user in 0..200 {
        let id = format!("user-{user}");
        let mut first = None;
        for mode in MODES {
            let (up, _) = through_envoy(
                settings.clone(),
                mode,
                &[b(body)],
                &[("X-Session-Id", id.as_str())],
            );
            let target = up.headers[MODEL_HEADER].clone();
            assert_eq!(
                first.get_or_insert(target.clone()),
                &target,
                "{id} {mode:?}"
            );
            seen_targets.insert(target);
        }
    }
    // 200 sessions over 90/10: both targets appear (the chance of not is
    // 0.9^200 + 0.1^200, about 7e-10).
    assert_eq!(seen_targets.len(), 2);
    let (up, _) = through_envoy(settings, BodySendMode::FullDuplexStreamed, &[b(body)], &[]);
    assert!(targets_of("food-review").contains(&up.headers[MODEL_HEADER].as_str()));
}

#[test]
fn compressed_bodies_and_form_fields_are_routed_as_requested_without_a_rewrite() {
    let form =
        "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nfood-review\r\n--b--\r\n";
    let (up, s) = through_envoy(
        rewriting(None),
        BodySendMode::FullDuplexStreamed,
        &[b(form)],
        &[("content-type", "multipart/form-data; boundary=b")],
    );
    assert_eq!(up.headers[MODEL_HEADER], "food-review");
    assert_eq!(up.headers[REQUESTED_MODEL_HEADER], "food-review");
    assert_eq!(up.body, form.as_bytes());
    assert_eq!(up.headers["content-length"], form.len().to_string());
    assert_eq!(s.report().rewrite, None);
}

#[test]
fn streamed_with_rewrites_holds_chunks_within_the_budget_and_frees_them() {
    let budget = Arc::new(HeldBudget::new(1 << 20));
    let mut s = StreamState::with_budget(rewriting(None), budget.clone());
    step(
        &mut s,
        headers_msg(BodySendMode::Streamed, true, false, &[]),
    );
    assert!(step(&mut s, body_msg(&b(r#"{"messages":[],"#), false)).is_empty());
    assert!(budget.held() > 0);
    let out = step(&mut s, body_msg(&b(r#""model":"gpt-4o"}"#), true));
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(budget.held(), 0);
    // Without rewrites nothing is held here in STREAMED mode.
    let mut s = StreamState::with_budget(settings(), budget.clone());
    step(
        &mut s,
        headers_msg(BodySendMode::Streamed, true, false, &[]),
    );
    step(&mut s, body_msg(&b(r#"{"messages":[],"#), false));
    assert_eq!(budget.held(), 0);
}

#[test]
fn rechunk_gives_the_original_chunks_back_from_coalesced_pieces() {
    let pieces = vec![b("abcdef"), b("gh"), b("ijk")];
    let chunks = rechunk(pieces.clone(), &[2, 0, 4, 3, 2]);
    assert_eq!(chunks, vec![b("ab"), b(""), b("cdef"), b("ghi"), b("jk")]);
    // Slices where a chunk lies in one piece.
    assert_eq!(chunks[2].as_ptr(), pieces[0][2..].as_ptr());
}

// ------------------------------------------------------------ disk spool

use bbr_core::spool::SpoolConfig;

/// Full duplex with a spool of `threshold` bytes in the temp dir (these
/// bodies are a few KiB).
fn spooling(threshold: u64) -> Settings {
    Settings::default().spool(Some(
        SpoolConfig::new()
            .with_memory_threshold(threshold)
            .with_dir(std::env::temp_dir()),
    ))
}

/// A JSON body of `len` bytes with `model` last.
fn model_last(len: usize) -> Bytes {
    let head = br#"{"pad":""#;
    let tail = br#"","model":"food-review-1"}"#;
    let mut body = head.to_vec();
    body.extend((0..len - head.len() - tail.len()).map(|i| b'a' + (i % 26) as u8));
    body.extend_from_slice(tail);
    Bytes::from(body)
}

/// Runs every spool job the stream has, as the server does (in order, one
/// at a time), collecting the replies.
fn run_spool_jobs(s: &mut StreamState, out: &mut Vec<ProcessingResponse>) {
    while let Some(job) = s.next_spool_job() {
        s.on_spool_done(job.run(), out);
    }
}

/// Sends `chunks` (the last with `end_of_stream` unless `trailers`), running
/// the spool's jobs after the chunks `run_after` says; the replies in order.
fn spool_conversation(
    s: &mut StreamState,
    chunks: &[Bytes],
    trailers: bool,
    run_after: impl Fn(usize) -> bool,
) -> Vec<Seen> {
    let mut out = Vec::new();
    s.on_request(post(BodySendMode::FullDuplexStreamed), &mut out)
        .unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        let eos = !trailers && i + 1 == chunks.len();
        s.on_request(body_msg(chunk, eos), &mut out).unwrap();
        if run_after(i) || s.replay.is_some() {
            run_spool_jobs(s, &mut out);
        }
    }
    if trailers {
        s.on_request(trailers_msg(), &mut out).unwrap();
        run_spool_jobs(s, &mut out);
    }
    seen(&out)
}

/// The streamed body of `replies` and whether exactly the last streamed
/// piece ends the stream.
fn streamed_body(replies: &[Seen]) -> (Vec<u8>, Vec<bool>) {
    let mut body = Vec::new();
    let mut ends = Vec::new();
    for reply in replies {
        if let Seen::Streamed(bytes, eos) = reply {
            body.extend_from_slice(bytes);
            ends.push(*eos);
        }
    }
    (body, ends)
}

fn assert_overloaded(replies: &[Seen]) {
    let Some(Seen::Immediate(503, body)) = replies.last() else {
        panic!("expected a 503, got {replies:?}");
    };
    assert_eq!(body["error"]["code"], "overloaded");
}

#[test]
fn spool_threshold_at_the_limit_stays_in_memory_and_one_byte_past_spools() {
    let body = model_last(4000);
    let threshold = 1000;
    for (held, spools) in [(threshold, false), (threshold + 1, true)] {
        let mut s = StreamState::new(Arc::new(spooling(threshold as u64)));
        let mut out = Vec::new();
        s.on_request(post(BodySendMode::FullDuplexStreamed), &mut out)
            .unwrap();
        s.on_request(body_msg(&body.slice(..held), false), &mut out)
            .unwrap();
        assert!(out.is_empty());
        assert_eq!(s.next_spool_job().is_some(), spools, "{held} bytes held");
        assert_eq!(s.spooled_bytes(), u64::from(spools) * held as u64);
        assert_eq!(s.held_bytes(), if spools { 0 } else { held as u64 });
        assert_eq!(s.report().spooled_bytes, s.spooled_bytes());
    }
    // Once spooling, every later chunk spools, even one that would fit.
    let mut s = StreamState::new(Arc::new(spooling(threshold as u64)));
    let chunks = [
        body.slice(..600),
        body.slice(600..1001),
        body.slice(1001..1002),
    ];
    let mut out = Vec::new();
    s.on_request(post(BodySendMode::FullDuplexStreamed), &mut out)
        .unwrap();
    for chunk in &chunks {
        s.on_request(body_msg(chunk, false), &mut out).unwrap();
    }
    assert_eq!((s.held_bytes(), s.spooled_bytes()), (600, 402));
}

#[test]
fn a_spooled_body_replays_memory_then_file_then_unwritten_then_the_deciding_chunk() {
    let body = model_last(60_000);
    let chunks: Vec<Bytes> = (0..body.len())
        .step_by(5000)
        .map(|at| body.slice(at..(at + 5000).min(body.len())))
        .collect();
    let budget = Arc::new(HeldBudget::new(1 << 20));
    let disk = Arc::new(HeldBudget::new(1 << 20));
    let mut s = StreamState::with_budget(Arc::new(spooling(15_000)), budget.clone())
        .with_disk_budget(disk.clone());
    // Writes run after some chunks only: chunks 8 to 10 are still
    // unwritten at the decision (chunk 11) and follow the file from memory.
    let replies = spool_conversation(&mut s, &chunks, false, |i| i % 4 == 3 && i < 8);
    assert_eq!(
        replies[0],
        Seen::Headers(model_set("food-review-1"), vec![], true)
    );
    // The chunks held in memory come first, as they came (no copy).
    for (i, reply) in replies[1..4].iter().enumerate() {
        assert_eq!(reply, &Seen::Streamed(chunks[i].clone(), false));
    }
    let (forwarded, ends) = streamed_body(&replies);
    assert_eq!(forwarded, body);
    assert_eq!(ends.iter().filter(|end| **end).count(), 1);
    assert_eq!(ends.last(), Some(&true), "the deciding chunk ends the body");
    assert_eq!(
        replies.last(),
        Some(&Seen::Streamed(chunks.last().unwrap().clone(), true))
    );
    assert_eq!(
        s.report().spooled_bytes,
        (body.len() - 15_000 - 5000) as u64
    );
    assert!(s.wants_request() && !s.is_holding());
    assert_eq!((budget.held(), disk.held(), s.spooled_bytes()), (0, 0, 0));
}

#[test]
fn a_spooled_body_ended_by_trailers_sends_the_trailers_reply_after_every_byte() {
    let body = model_last(10_000);
    let chunks: Vec<Bytes> = body.chunks(700).map(Bytes::copy_from_slice).collect();
    let mut s = StreamState::new(Arc::new(spooling(2000)));
    let replies = spool_conversation(&mut s, &chunks, true, |_| true);
    let (forwarded, ends) = streamed_body(&replies);
    assert_eq!(forwarded, body);
    assert!(ends.iter().all(|end| !end), "trailers end the body");
    assert_eq!(replies.last(), Some(&Seen::Trailers));
    assert_eq!(
        replies
            .iter()
            .filter(|r| matches!(r, Seen::Trailers))
            .count(),
        1
    );
}

#[test]
fn one_byte_chunks_spool_and_replay_byte_identical() {
    let body = model_last(6000);
    let chunks: Vec<Bytes> = body.chunks(1).map(Bytes::copy_from_slice).collect();
    let budget = Arc::new(HeldBudget::new(1 << 20));
    let mut s = StreamState::with_budget(Arc::new(spooling(100)), budget.clone());
    let replies = spool_conversation(&mut s, &chunks, false, |i| i % 97 == 0);
    let (forwarded, ends) = streamed_body(&replies);
    assert_eq!(forwarded, body);
    assert_eq!(ends.last(), Some(&true));
    // Tiny chunks are coalesced on their way to disk and read back in
    // large pieces: far fewer messages than chunks.
    assert!(replies.len() < 400, "{} replies", replies.len());
    assert_eq!(budget.held(), 0);
}

#[test]
fn the_disk_cap_at_the_limit_spools_and_one_byte_past_is_overloaded() {
    let body = model_last(5000);
    let threshold = 1000u64;
    // The last chunk holds `model` and decides; the one before it spools.
    let tail = body.len() - r#"","model":"food-review-1"}"#.len();
    let spooled = tail as u64 - threshold;
    let chunks = [
        body.slice(..threshold as usize),
        body.slice(threshold as usize..tail),
        body.slice(tail..),
    ];
    for (cap, refused) in [(spooled, false), (spooled - 1, true)] {
        let disk = Arc::new(HeldBudget::new(cap));
        let mut s = StreamState::new(Arc::new(spooling(threshold))).with_disk_budget(disk.clone());
        let replies = spool_conversation(&mut s, &chunks, false, |_| true);
        if refused {
            assert_overloaded(&replies);
            assert_eq!(replies.len(), 1, "nothing was sent before the refusal");
            assert_eq!(disk.refused(), 1);
        } else {
            assert_eq!(streamed_body(&replies).0, body);
        }
        assert_eq!(disk.held(), 0, "cap {cap}");
    }
}

#[test]
fn a_spool_file_that_cannot_be_created_is_overloaded() {
    let missing = std::env::temp_dir().join("bbr-extproc-no-such-dir/nested");
    let settings = Settings::default().spool(Some(
        SpoolConfig::new()
            .with_memory_threshold(10)
            .with_dir(missing),
    ));
    let budget = Arc::new(HeldBudget::new(1 << 20));
    let mut s = StreamState::with_budget(Arc::new(settings), budget.clone());
    let body = model_last(200);
    let replies = spool_conversation(
        &mut s,
        &[body.slice(..100), body.slice(100..)],
        false,
        |_| true,
    );
    assert_eq!(replies.len(), 1);
    assert_overloaded(&replies);
    assert!(s.is_finished() && s.next_spool_job().is_none());
    assert_eq!((budget.held(), s.spooled_bytes()), (0, 0));
}

#[test]
fn a_failed_or_lost_spool_write_is_overloaded() {
    let body = model_last(3000);
    for lost in [false, true] {
        let mut s = StreamState::new(Arc::new(spooling(0)));
        let mut out = Vec::new();
        s.on_request(post(BodySendMode::FullDuplexStreamed), &mut out)
            .unwrap();
        s.on_request(body_msg(&body.slice(..1000), false), &mut out)
            .unwrap();
        // The first write succeeds, the second fails.
        run_spool_jobs(&mut s, &mut out);
        s.on_request(body_msg(&body.slice(1000..2000), false), &mut out)
            .unwrap();
        let Some(SpoolJob::Write(write)) = s.next_spool_job() else {
            panic!("a write");
        };
        let done = if lost {
            SpoolDone::Lost
        } else {
            SpoolDone::Written(write.fail(std::io::Error::other("no space left on device")))
        };
        s.on_spool_done(done, &mut out);
        assert_overloaded(&seen(&out));
        assert_eq!(out.len(), 1);
        assert!(s.is_finished() && !s.wants_request());
        assert_eq!(s.spooled_bytes(), 0);
    }
}

#[test]
fn a_write_behind_stops_reading_until_it_is_back() {
    let mut s = StreamState::new(Arc::new(spooling(0)));
    let mut out = Vec::new();
    s.on_request(post(BodySendMode::FullDuplexStreamed), &mut out)
        .unwrap();
    s.on_request(body_msg(&b(r#"{"pad":"x"#), false), &mut out)
        .unwrap();
    let job = s.next_spool_job().expect("the first write");
    assert!(s.next_spool_job().is_none(), "one job at a time");
    let pad = Bytes::from(vec![b'x'; bbr_core::spool::SPOOL_COALESCE_BYTES - 1]);
    s.on_request(body_msg(&pad, false), &mut out).unwrap();
    assert!(s.wants_request(), "under a buffer's worth behind the write");
    s.on_request(body_msg(&b("x"), false), &mut out).unwrap();
    assert!(!s.wants_request(), "a buffer's worth behind the write");
    s.on_spool_done(job.run(), &mut out);
    assert!(s.wants_request());
    // What waits for its write is reserved from the held budget.
    assert!(s.held_memory() >= bbr_core::spool::SPOOL_COALESCE_BYTES as u64);
    run_spool_jobs(&mut s, &mut out);
    assert_eq!(s.held_memory(), 0);
    assert!(out.is_empty());
}

#[test]
fn chunks_sent_during_a_replay_follow_it() {
    // A caller that reads on although `wants_request` is false still gets
    // the replies in order.
    let body = model_last(3000);
    let mut s = StreamState::new(Arc::new(spooling(0)));
    let mut out = Vec::new();
    s.on_request(post(BodySendMode::FullDuplexStreamed), &mut out)
        .unwrap();
    // Undecided chunks spool ...
    let first = body.slice(..2000);
    s.on_request(body_msg(&first, false), &mut out).unwrap();
    run_spool_jobs(&mut s, &mut out);
    let rest = body.slice(2000..);
    s.on_request(body_msg(&rest, false), &mut out).unwrap();
    // ... the decision starts the replay, which waits for its read.
    assert!(!s.wants_request() && s.is_holding());
    let later = b("");
    s.on_request(body_msg(&later, true), &mut out).unwrap();
    run_spool_jobs(&mut s, &mut out);
    let replies = seen(&out);
    let (forwarded, ends) = streamed_body(&replies);
    assert_eq!(forwarded, body);
    assert_eq!(ends.last(), Some(&true));
    assert_eq!(ends.iter().filter(|end| **end).count(), 1);
}

#[test]
fn a_spooled_body_is_routed_as_requested_and_not_rewritten() {
    let rules = RewriteRules::from_yaml_str(RULES, "inline").unwrap();
    let picker = RewritePicker::new(RewriteStore::from_rules(rules));
    let settings = spooling(100).model_rewrites(picker);
    let body = br#"{"pad":"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789","model":"gpt-4o"}"#;
    let chunks = [
        Bytes::from_static(&body[..110]),
        Bytes::from_static(&body[110..]),
    ];
    let mut s = StreamState::new(Arc::new(settings));
    let replies = spool_conversation(&mut s, &chunks, false, |_| true);
    let Seen::Headers(set, _, true) = &replies[0] else {
        panic!("{replies:?}");
    };
    assert!(set.contains(&(MODEL_HEADER.to_owned(), "gpt-4o".to_owned())));
    assert!(set.contains(&(REQUESTED_MODEL_HEADER.to_owned(), "gpt-4o".to_owned())));
    assert_eq!(streamed_body(&replies).0, body);
    assert_eq!(s.report().rewrite, None);
    // The same body held in memory is rewritten.
    let mut s = StreamState::new(rewriting(None));
    let replies = spool_conversation(&mut s, &chunks, false, |_| true);
    assert_ne!(streamed_body(&replies).0, body);
}

#[test]
fn streamed_mode_never_spools() {
    let mut s = StreamState::new(Arc::new(spooling(0)));
    let mut out = Vec::new();
    s.on_request(
        headers_msg(BodySendMode::Streamed, true, false, &[]),
        &mut out,
    )
    .unwrap();
    s.on_request(body_msg(&model_last(500).slice(..400), false), &mut out)
        .unwrap();
    assert!(s.next_spool_job().is_none());
    assert_eq!(s.spooled_bytes(), 0);
}
