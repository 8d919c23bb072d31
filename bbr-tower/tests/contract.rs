//! Every row of the contract's table ("Adapters: what a request gets"),
//! through `oneshot` and through a real hyper server on 127.0.0.1.

mod common;

use bbr_core::Limits;
use bbr_core::contract::{ClientHeaders, MissingModel};
use bbr_tower::ModelRoutingLayer;
use bytes::Bytes;
use common::{AUDIO, Recorder, TestServer, brotli, form, gzip, oneshot, sha256, zstd};
use http::{Method, Request};
use http_body_util::Full;

const LLAMA: &str = "meta-llama/Llama-3.1-8B-Instruct";
const DEEPSEEK: &str = "deepseek/vllm-deepseek-r1";

/// The reference scenario's base models: from the ConfigMap store with the
/// `adapters` feature, from a plain map without it (the same answers).
#[cfg(feature = "adapters")]
fn with_base_models(layer: ModelRoutingLayer) -> ModelRoutingLayer {
    use bbr_adapters::{AdapterMap, AdapterStore};
    let yaml = format!(
        "kind: ConfigMap\ndata: {{baseModel: {LLAMA}, adapters: '[food-review-1]'}}\n---\n\
         kind: ConfigMap\ndata: {{baseModel: {DEEPSEEK}, adapters: '[ski-resorts, movie-critique]'}}\n"
    );
    layer.adapters(AdapterStore::from_map(
        AdapterMap::from_yaml_str(&yaml, "scenario").unwrap(),
    ))
}

#[cfg(not(feature = "adapters"))]
fn with_base_models(layer: ModelRoutingLayer) -> ModelRoutingLayer {
    use bbr_tower::BaseModelName;
    let llama = BaseModelName::new(LLAMA).unwrap();
    let deepseek = BaseModelName::new(DEEPSEEK).unwrap();
    let map: std::collections::HashMap<String, BaseModelName> = [
        (LLAMA, &llama),
        ("food-review-1", &llama),
        (DEEPSEEK, &deepseek),
        ("ski-resorts", &deepseek),
        ("movie-critique", &deepseek),
    ]
    .into_iter()
    .map(|(name, base)| (name.to_owned(), base.clone()))
    .collect();
    layer.base_models(map)
}

#[derive(Clone, Copy, Debug)]
enum Setup {
    Default,
    RejectMissing,
    RejectClientHeaders,
    ScanLimit64,
    BodyLimit32,
}

impl Setup {
    fn layer(self) -> ModelRoutingLayer {
        let layer = with_base_models(ModelRoutingLayer::new());
        match self {
            Setup::Default => layer,
            Setup::RejectMissing => layer.missing_model(MissingModel::Reject),
            Setup::RejectClientHeaders => layer.client_headers(ClientHeaders::Reject),
            Setup::ScanLimit64 => layer.limits(Limits::new().with_max_scan_bytes(64)),
            Setup::BodyLimit32 => layer.limits(Limits::new().with_max_body_bytes(32)),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Forwarded with these routing headers (or none).
    Forwarded {
        model: Option<&'static str>,
        base: Option<&'static str>,
    },
    /// Refused by the layer before the inner service was called.
    Refused { status: u16, code: &'static str },
}

struct Case {
    name: &'static str,
    setup: Setup,
    method: Method,
    headers: &'static [(&'static str, &'static str)],
    body: Vec<u8>,
    expect: Expect,
}

fn case(name: &'static str, body: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        name,
        setup: Setup::Default,
        method: Method::POST,
        headers: &[],
        body: body.into(),
        expect,
    }
}

fn found(model: &'static str, base: Option<&'static str>) -> Expect {
    Expect::Forwarded {
        model: Some(model),
        base,
    }
}

const UNROUTED: Expect = Expect::Forwarded {
    model: None,
    base: None,
};

fn refused(status: u16, code: &'static str) -> Expect {
    Expect::Refused { status, code }
}

const FORM: &[(&str, &str)] = &[("content-type", "multipart/form-data; boundary=x")];

/// A gzip body whose deflate data is garbage after the header.
fn corrupt_gzip() -> Vec<u8> {
    let mut body = gzip(br#"{"model":"food-review-1","messages":[]}"#);
    for byte in &mut body[10..20] {
        *byte ^= 0xa5;
    }
    body
}

/// 8 MiB of spaces before the model in about 8 KiB: past the default
/// expansion ratio (100) once the ratio floor (1 MiB) is decoded.
fn gzip_bomb() -> Vec<u8> {
    let mut body = b"{\"pad\":\"".to_vec();
    body.resize(8 << 20, b' ');
    body.extend_from_slice(b"\",\"model\":\"m\"}");
    gzip(&body)
}

/// `expect` when this build decodes the encoding, else the row of a body
/// not decoded: forwarded unrouted.
fn decoded(built: bool, expect: Expect) -> Expect {
    if built { expect } else { UNROUTED }
}

fn cases() -> Vec<Case> {
    let deep = format!(
        "{{\"a\":{}{},\"model\":\"m\"}}",
        "[".repeat(128),
        "]".repeat(128)
    );
    let long_model = format!("{{\"model\":\"{}\"}}", "x".repeat(257));
    let padded = format!("{{\"pad\":\"{}\",\"model\":\"m\"}}", "p".repeat(100));
    vec![
        // model found
        case(
            "adapter of the llama base",
            r#"{"model":"food-review-1","messages":[{"role":"user","content":"hi"}]}"#,
            found("food-review-1", Some(LLAMA)),
        ),
        case(
            "adapter of the deepseek base, model last",
            r#"{"messages":[{"role":"reviewer","content":"x"}],"max_tokens":5,"temperature":0,"model":"ski-resorts"}"#,
            found("ski-resorts", Some(DEEPSEEK)),
        ),
        case(
            "base model maps to itself",
            r#"{"model":"deepseek/vllm-deepseek-r1","stream":true}"#,
            found(DEEPSEEK, Some(DEEPSEEK)),
        ),
        case(
            "unknown model gets no base header",
            r#"{"model":"other-model"}"#,
            found("other-model", None),
        ),
        Case {
            headers: &[("content-type", "text/plain")],
            ..case(
                "content type is not needed",
                r#"{"model":"movie-critique"}"#,
                found("movie-critique", Some(DEEPSEEK)),
            )
        },
        // body valid, no model
        case(
            "no model is forwarded without the header",
            r#"{"messages":[]}"#,
            UNROUTED,
        ),
        Case {
            setup: Setup::RejectMissing,
            ..case(
                "no model refused when configured",
                r#"{"messages":[]}"#,
                refused(400, "missing_model"),
            )
        },
        // GET / no body
        Case {
            method: Method::GET,
            ..case("GET without a body", "", UNROUTED)
        },
        Case {
            headers: &[("content-length", "0")],
            ..case("POST with content-length 0", "", UNROUTED)
        },
        // invalid_json
        case("not JSON", "hello world", refused(400, "invalid_json")),
        case(
            "truncated before the model",
            r#"{"messages":["#,
            refused(400, "invalid_json"),
        ),
        case(
            "truncated after the model",
            r#"{"model":"food-review-1","#,
            // The body is complete when the model is decided, so it is
            // checked whole and never reaches the inner service.
            refused(400, "invalid_json"),
        ),
        case(
            "top level is an array",
            r#"[{"model":"a"}]"#,
            refused(400, "invalid_json"),
        ),
        case("nested deeper than 128", deep, refused(400, "invalid_json")),
        // invalid_model
        case(
            "model is a number",
            r#"{"model":1}"#,
            refused(400, "invalid_model"),
        ),
        case(
            "model is null",
            r#"{"model":null}"#,
            refused(400, "invalid_model"),
        ),
        case(
            "model is empty",
            r#"{"model":""}"#,
            refused(400, "invalid_model"),
        ),
        case(
            "model has a control character",
            r#"{"model":"a\nb"}"#,
            refused(400, "invalid_model"),
        ),
        case(
            "model longer than 256 bytes",
            long_model,
            refused(400, "invalid_model"),
        ),
        // In one frame the duplicate is seen before the decision is acted on;
        // a duplicate in a later frame is a violation (see streaming.rs).
        case(
            "duplicate model",
            r#"{"model":"food-review-1","model":"ski-resorts"}"#,
            refused(400, "invalid_model"),
        ),
        // request_too_large
        Case {
            setup: Setup::ScanLimit64,
            ..case(
                "no decision within the scan limit",
                padded,
                refused(413, "request_too_large"),
            )
        },
        Case {
            setup: Setup::BodyLimit32,
            ..case(
                "body over the body limit (content-length)",
                r#"{"model":"m","pad":"0123456789abcdef"}"#,
                refused(413, "request_too_large"),
            )
        },
        // multipart/form-data: the `model` field, before or after the file
        Case {
            headers: FORM,
            ..case(
                "multipart model before the file",
                form(&[("model", b"whisper-1"), ("file", AUDIO)]),
                found("whisper-1", None),
            )
        },
        Case {
            headers: FORM,
            ..case(
                "multipart model after the file",
                form(&[
                    ("file", AUDIO),
                    ("language", b"en"),
                    ("model", b"food-review-1"),
                ]),
                found("food-review-1", Some(LLAMA)),
            )
        },
        Case {
            headers: FORM,
            ..case(
                "multipart without a model field",
                form(&[("file", AUDIO)]),
                UNROUTED,
            )
        },
        Case {
            setup: Setup::RejectMissing,
            headers: FORM,
            ..case(
                "multipart without a model field refused when configured",
                form(&[("file", AUDIO)]),
                refused(400, "missing_model"),
            )
        },
        Case {
            headers: FORM,
            ..case(
                "multipart with two model fields",
                form(&[("model", b"a"), ("file", AUDIO), ("model", b"b")]),
                refused(400, "invalid_model"),
            )
        },
        Case {
            headers: FORM,
            ..case(
                "multipart without its closing boundary",
                form(&[("model", b"a"), ("file", AUDIO)])
                    .strip_suffix(b"--x--\r\n")
                    .unwrap(),
                refused(400, "invalid_json"),
            )
        },
        Case {
            headers: &[("content-type", "multipart/form-data")],
            ..case(
                "multipart without a boundary",
                form(&[("model", b"a")]),
                refused(400, "invalid_json"),
            )
        },
        // compressed bodies: decoded for the decision, forwarded compressed
        Case {
            headers: &[("content-encoding", "gzip")],
            ..case(
                "gzip body",
                gzip(br#"{"messages":[],"model":"food-review-1"}"#),
                decoded(cfg!(feature = "gzip"), found("food-review-1", Some(LLAMA))),
            )
        },
        Case {
            headers: &[("content-encoding", "zstd")],
            ..case(
                "zstd body",
                zstd(br#"{"model":"ski-resorts","messages":[]}"#),
                decoded(cfg!(feature = "zstd"), found("ski-resorts", Some(DEEPSEEK))),
            )
        },
        Case {
            headers: &[("content-encoding", "br")],
            ..case(
                "br body",
                brotli(br#"{"model":"other-model"}"#),
                decoded(cfg!(feature = "br"), found("other-model", None)),
            )
        },
        Case {
            headers: &[("content-encoding", "gzip"), ("content-encoding", "zstd")],
            ..case(
                "gzip then zstd, in two header fields",
                zstd(&gzip(br#"{"model":"other-model"}"#)),
                decoded(
                    cfg!(feature = "gzip") && cfg!(feature = "zstd"),
                    found("other-model", None),
                ),
            )
        },
        Case {
            headers: &[
                ("content-encoding", "gzip"),
                ("content-type", "multipart/form-data; boundary=x"),
            ],
            ..case(
                "gzip multipart body",
                gzip(&form(&[("file", AUDIO), ("model", b"whisper-1")])),
                decoded(cfg!(feature = "gzip"), found("whisper-1", None)),
            )
        },
        Case {
            headers: &[("content-encoding", "compress")],
            ..case(
                "unknown encoding is forwarded unrouted",
                &b"\x1f\x9d\x90"[..],
                UNROUTED,
            )
        },
        Case {
            setup: Setup::RejectMissing,
            headers: &[("content-encoding", "compress")],
            ..case(
                "unknown encoding refused as a missing model when configured",
                &b"\x1f\x9d\x90"[..],
                refused(400, "missing_model"),
            )
        },
        Case {
            headers: &[("content-encoding", "gzip")],
            ..case(
                "corrupt gzip body",
                corrupt_gzip(),
                decoded(cfg!(feature = "gzip"), refused(400, "invalid_json")),
            )
        },
        Case {
            headers: &[("content-encoding", "gzip")],
            ..case(
                "gzip bomb",
                gzip_bomb(),
                decoded(cfg!(feature = "gzip"), refused(413, "request_too_large")),
            )
        },
        // spoofed routing headers
        Case {
            headers: &[
                ("x-gateway-model-name", "evil"),
                ("x-gateway-base-model-name", "evil-base"),
            ],
            ..case(
                "spoofed headers are stripped without a model",
                r#"{"messages":[]}"#,
                UNROUTED,
            )
        },
        Case {
            headers: &[
                ("x-gateway-model-name", "evil"),
                ("x-gateway-base-model-name", "evil-base"),
            ],
            ..case(
                "spoofed headers are overwritten or removed with a model",
                r#"{"model":"other-model"}"#,
                found("other-model", None),
            )
        },
        Case {
            method: Method::GET,
            headers: &[("X-Gateway-Model-Name", "evil")],
            ..case("spoofed header stripped on GET", "", UNROUTED)
        },
        Case {
            setup: Setup::RejectClientHeaders,
            headers: &[("x-gateway-base-model-name", "evil")],
            ..case(
                "spoofed header refused when configured",
                r#"{"model":"food-review-1"}"#,
                refused(400, "routing_header_not_allowed"),
            )
        },
    ]
}

fn request(case: &Case) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(case.method.clone())
        .uri("/v1/chat/completions");
    for (name, value) in case.headers {
        builder = builder.header(*name, *value);
    }
    if !case.body.is_empty() {
        // As a client with a known length sends it (hyper adds it on the wire too).
        builder = builder.header("content-length", case.body.len());
    }
    builder
        .body(Full::new(Bytes::from(case.body.clone())))
        .unwrap()
}

fn check(
    case: &Case,
    transport: &str,
    answer: &common::Answer,
    recorder: &Recorder,
    calls_before: usize,
) {
    let what = format!("{} ({transport})", case.name);
    match case.expect {
        Expect::Forwarded { model, base } => {
            assert_eq!(answer.status, 200, "{what}: {answer:?}");
            let seen = recorder.last();
            assert_eq!(recorder.count(), calls_before + 1, "{what}");
            assert_eq!(seen.header("x-gateway-model-name"), model, "{what}");
            assert_eq!(seen.header("x-gateway-base-model-name"), base, "{what}");
            assert_eq!(seen.model_extension.as_deref(), model, "{what}");
            assert_eq!(seen.base_extension.as_deref(), base, "{what}");
            assert_eq!(
                common::hex(&seen.sha256),
                sha256(&[&case.body]),
                "{what}: body changed"
            );
            assert_eq!(seen.len, case.body.len() as u64, "{what}");
            assert!(
                seen.violation.is_none() && seen.other_error.is_none(),
                "{what}: {seen:?}"
            );
        }
        Expect::Refused { status, code } => {
            assert_eq!(answer.status, status, "{what}: {answer:?}");
            assert_eq!(answer.error_code(), code, "{what}");
            assert_eq!(
                recorder.count(),
                calls_before,
                "{what}: the inner service must not be called"
            );
            let json = answer.error_json();
            let message = json["error"]["message"].as_str().unwrap();
            if code == "routing_header_not_allowed" {
                assert_eq!(
                    json["error"]["param"], "x-gateway-base-model-name",
                    "{what}"
                );
            } else {
                assert_eq!(json["error"]["param"], "model", "{what}");
            }
            if !["missing_model", "routing_header_not_allowed"].contains(&code) {
                assert!(
                    message.contains("at byte "),
                    "{what}: message without an offset: {message}"
                );
            }
        }
    }
}

#[tokio::test]
async fn every_contract_row_through_oneshot() {
    for case in cases() {
        let layer = case.setup.layer();
        let recorder = Recorder::default();
        let answer = oneshot(&layer, &recorder, request(&case)).await;
        check(&case, "oneshot", &answer, &recorder, 0);
        let stats = layer.stats();
        match case.expect {
            Expect::Refused { .. } => assert_eq!(stats.refused(), 1, "{}", case.name),
            Expect::Forwarded { model: Some(_), .. } => {
                assert_eq!(stats.found(), 1, "{}", case.name)
            }
            Expect::Forwarded { model: None, .. } => {
                assert_eq!(stats.absent() + stats.unread(), 1, "{}", case.name)
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_contract_row_through_a_real_hyper_server() {
    for setup in [
        Setup::Default,
        Setup::RejectMissing,
        Setup::RejectClientHeaders,
        Setup::ScanLimit64,
        Setup::BodyLimit32,
    ] {
        let layer = setup.layer();
        let recorder = Recorder::default();
        let server = TestServer::start(&layer, &recorder).await;
        for case in cases()
            .into_iter()
            .filter(|case| std::mem::discriminant(&case.setup) == std::mem::discriminant(&setup))
        {
            let before = recorder.count();
            let answer = server.send(request(&case)).await;
            check(&case, "hyper", &answer, &recorder, before);
        }
    }
}

#[tokio::test]
async fn error_message_names_the_offset_and_never_echoes_the_body() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let body = r#"{"secret":"do-not-echo","model":42}"#;
    let answer = oneshot(
        &layer,
        &recorder,
        Request::post("/")
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "invalid_model");
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    assert!(!text.contains("do-not-echo"), "{text}");
    let message = answer.error_json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let offset: u64 = message
        .rsplit("at byte ")
        .next()
        .and_then(|tail| tail.trim().parse().ok())
        .unwrap_or_else(|| panic!("no offset in {message}"));
    // Somewhere between the `model` key (24) and the end of its value (34).
    assert!((24..=34).contains(&offset), "{message}");
}
