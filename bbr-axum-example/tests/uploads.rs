//! Uploads and compressed bodies through the gateway, over real sockets:
//! forms routed by their `model` field (before or after the file) with the
//! file forwarded byte for byte, gzip and zstd chat bodies routed and
//! forwarded compressed, a decompression bomb refused, an encoding that is
//! not decoded forwarded unrouted.

mod common;

use std::io::Write;

use bbr_axum_example::RunningGateway;
use bbr_model_sim::sha256_hex;
use common::{full, send, start_yaml};
use http::Request;

/// Two pools told apart only by the model; a fallback route takes requests
/// without a model header.
const CONFIG: &str = r"
pools:
  - name: asr-a
    simulate: {replicas: 1, model: whisper-1, lora_modules: [food-review-1]}
  - name: asr-b
    simulate: {replicas: 1, model: gpt-4o-transcribe}
routes:
  - {name: a, pool: asr-a, matches: [{model: whisper-1}, {model: food-review-1}]}
  - {name: b, pool: asr-b, matches: [{model: gpt-4o-transcribe}]}
  - {name: unrouted, pool: asr-b, matches: [{path_prefix: /}]}
";

const BOUNDARY: &str = "----bbr-test-7f3a";

/// A hand-written form: the file (arbitrary bytes) and the text fields in
/// the given order.
fn form(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        write!(
            body,
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\""
        )
        .unwrap();
        if *name == "file" {
            body.extend_from_slice(b"; filename=\"speech.mp3\"\r\nContent-Type: audio/mpeg");
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{BOUNDARY}--\r\n").unwrap();
    body
}

fn audio() -> Vec<u8> {
    // Bytes of every value, CRLFs and dashes included, 200 KiB.
    (0..200 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

fn recorded(gateway: &RunningGateway, pool: &str) -> Vec<bbr_model_sim::RecordedRequest> {
    gateway.simulators().pool(pool)[0]
        .observer()
        .recent_requests()
}

#[tokio::test]
async fn forms_are_routed_by_the_model_field_before_or_after_the_file() {
    let gateway = start_yaml(CONFIG).await;
    let file = audio();
    for (path, model, pool, model_first) in [
        ("/v1/audio/transcriptions", "whisper-1", "asr-a", true),
        (
            "/v1/audio/transcriptions",
            "gpt-4o-transcribe",
            "asr-b",
            false,
        ),
        ("/v1/audio/translations", "food-review-1", "asr-a", false),
        ("/v1/images/edits", "gpt-4o-transcribe", "asr-b", true),
    ] {
        let fields: Vec<(&str, &[u8])> = if model_first {
            vec![
                ("model", model.as_bytes()),
                ("file", &file),
                ("language", b"en"),
            ]
        } else {
            vec![
                ("file", &file),
                ("language", b"en"),
                ("model", model.as_bytes()),
            ]
        };
        let body = form(&fields);
        let before = recorded(&gateway, pool).len();
        let request = Request::post(path)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(full(body.clone()))
            .unwrap();
        let answer = send(gateway.addr, request).await;
        let what = format!("{path} {model} (model first: {model_first})");
        assert_eq!(
            answer.status,
            200,
            "{what}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        let json = answer.json();
        assert_eq!(json["model"], model, "{what}");
        assert_eq!(json["file"]["bytes"], file.len(), "{what}");
        assert_eq!(json["file"]["sha256"], sha256_hex(&file), "{what}");
        assert_eq!(json["body"]["sha256"], sha256_hex(&body), "{what}");
        let seen = recorded(&gateway, pool);
        assert_eq!(seen.len(), before + 1, "{what}: not on {pool}");
        let last = seen.last().unwrap();
        assert_eq!(last.header("x-gateway-model-name"), Some(model), "{what}");
        assert_eq!(last.path, path);
    }
}

#[tokio::test]
async fn gzip_and_zstd_chat_bodies_are_routed_and_forwarded_compressed() {
    let gateway = start_yaml(CONFIG).await;
    let chat = |model: &str| {
        format!(
            r#"{{"messages":[{{"role":"user","content":"{}"}}],"max_tokens":3,"model":"{model}"}}"#,
            "hello ".repeat(300)
        )
    };
    let gzipped = gzip(chat("whisper-1").as_bytes());
    let zstded = zstd::encode_all(chat("gpt-4o-transcribe").as_bytes(), 3).unwrap();
    for (encoding, body, model, pool) in [
        ("gzip", gzipped, "whisper-1", "asr-a"),
        ("zstd", zstded, "gpt-4o-transcribe", "asr-b"),
    ] {
        let request = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(full(body.clone()))
            .unwrap();
        let answer = send(gateway.addr, request).await;
        assert_eq!(
            answer.status,
            200,
            "{encoding}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.json()["model"], model);
        let last = recorded(&gateway, pool).pop().unwrap();
        assert_eq!(last.header("x-gateway-model-name"), Some(model));
        assert_eq!(last.header("content-encoding"), Some(encoding));
        // The compressed bytes, as the client sent them.
        assert_eq!(last.body_sha256, sha256_hex(&body), "{encoding}");
        assert_eq!(last.body_len, body.len());
    }
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_with_the_contract_413() {
    let gateway = start_yaml(CONFIG).await;
    // 64 MiB of spaces before the model, about 64 KiB compressed.
    let mut json = b"{\"pad\":\"".to_vec();
    json.resize(64 << 20, b' ');
    json.extend_from_slice(b"\",\"model\":\"whisper-1\"}");
    let bomb = gzip(&json);
    drop(json);
    assert!(bomb.len() < 256 << 10, "{}", bomb.len());
    let request = Request::post("/v1/chat/completions")
        .header("content-encoding", "gzip")
        .body(full(bomb))
        .unwrap();
    send(gateway.addr, request)
        .await
        .assert_error(413, "request_too_large");
    assert!(recorded(&gateway, "asr-a").is_empty());
    assert!(recorded(&gateway, "asr-b").is_empty());
}

#[tokio::test]
async fn an_encoding_not_decoded_is_forwarded_unrouted() {
    let gateway = start_yaml(CONFIG).await;
    let body = b"\x1f\x9d\x90{\"model\":\"whisper-1\"}".to_vec();
    let request = Request::post("/v1/chat/completions")
        .header("content-encoding", "compress")
        .body(full(body.clone()))
        .unwrap();
    let answer = send(gateway.addr, request).await;
    // The simulator does not decode `compress` either: its own 415.
    assert_eq!(
        answer.status,
        415,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(recorded(&gateway, "asr-a").is_empty());
    let last = recorded(&gateway, "asr-b")
        .pop()
        .expect("forwarded to the fallback");
    assert_eq!(last.header("x-gateway-model-name"), None);
    assert_eq!(last.body_sha256, sha256_hex(&body));
}
