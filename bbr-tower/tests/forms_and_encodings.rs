//! Forms and compressed bodies through the layer: every chunking from 1 to
//! 64 bytes, the original bytes forwarded, violations after the decision,
//! an early decision while the upload goes on, and the decoders' share of
//! the global cap at and one past its value.

mod common;

use bbr_tower::ModelRoutingLayer;
use bytes::Bytes;
use common::{
    AUDIO, FramesBody, Recorder, TEST_TIMEOUT, TestServer, brotli, channel_body, form, gzip,
    oneshot, sha256, split, zstd,
};
use http::Request;
use http_body::Frame;
use tower::ServiceExt;

const FORM_TYPE: &str = "multipart/form-data; boundary=x";

/// A small body, its headers, and the model it routes to.
struct Upload {
    name: &'static str,
    content_type: Option<&'static str>,
    content_encoding: Option<&'static str>,
    body: Bytes,
    model: &'static str,
}

fn uploads() -> Vec<Upload> {
    let chat_last =
        br#"{"messages":[{"role":"user","content":"hi \"there\""}],"model":"food-review-1"}"#;
    let form_first = form(&[("model", b"whisper-1"), ("file", AUDIO)]);
    let form_last = form(&[
        ("file", AUDIO),
        ("language", b"en"),
        ("model", b"whisper-1"),
    ]);
    let upload = |name, content_type, content_encoding, body: Vec<u8>, model| Upload {
        name,
        content_type,
        content_encoding,
        body: Bytes::from(body),
        model,
    };
    vec![
        upload(
            "form, model first",
            Some(FORM_TYPE),
            None,
            form_first,
            "whisper-1",
        ),
        upload(
            "form, model last",
            Some(FORM_TYPE),
            None,
            form_last.clone(),
            "whisper-1",
        ),
        upload(
            "gzip chat, model last",
            None,
            Some("gzip"),
            gzip(chat_last),
            "food-review-1",
        ),
        upload(
            "zstd chat, model last",
            None,
            Some("zstd"),
            zstd(chat_last),
            "food-review-1",
        ),
        upload(
            "br chat, model last",
            None,
            Some("br"),
            brotli(chat_last),
            "food-review-1",
        ),
        upload(
            "gzip form, model last",
            Some(FORM_TYPE),
            Some("gzip"),
            gzip(&form_last),
            "whisper-1",
        ),
    ]
}

/// Whether this build decodes `encoding` (its feature is on).
fn built(encoding: &str) -> bool {
    [
        ("gzip", cfg!(feature = "gzip")),
        ("br", cfg!(feature = "br")),
        ("zstd", cfg!(feature = "zstd")),
    ]
    .contains(&(encoding, true))
}

fn request(upload: &Upload, body: FramesBody) -> Request<FramesBody> {
    let mut builder = Request::post("/v1/audio/transcriptions");
    if let Some(value) = upload.content_type {
        builder = builder.header("content-type", value);
    }
    if let Some(value) = upload.content_encoding {
        builder = builder.header("content-encoding", value);
    }
    builder.body(body).unwrap()
}

#[tokio::test]
async fn every_chunking_routes_and_forwards_the_original_bytes() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let mut requests = 0;
    for upload in uploads()
        .into_iter()
        .filter(|upload| upload.content_encoding.is_none_or(built))
    {
        for size in 1..=64 {
            let what = format!("{} in {size}-byte chunks", upload.name);
            let body = FramesBody::chunked(split(&upload.body, size));
            let answer = oneshot(&layer, &recorder, request(&upload, body)).await;
            assert_eq!(answer.status, 200, "{what}: {answer:?}");
            let seen = recorder.last();
            assert_eq!(
                seen.header("x-gateway-model-name"),
                Some(upload.model),
                "{what}"
            );
            assert_eq!(
                seen.model_extension.as_deref(),
                Some(upload.model),
                "{what}"
            );
            assert_eq!(common::hex(&seen.sha256), sha256(&[&upload.body]), "{what}");
            assert_eq!(seen.len, upload.body.len() as u64, "{what}");
            assert!(
                seen.violation.is_none() && seen.other_error.is_none(),
                "{what}: {seen:?}"
            );
            requests += 1;
        }
    }
    let stats = layer.stats();
    assert_eq!(stats.found(), requests);
    // Every decoder reservation was given back.
    assert_eq!(stats.held_bytes(), 0);
}

#[cfg(feature = "gzip")]
#[tokio::test]
async fn every_chunking_of_a_bad_tail_is_refused_or_ends_the_forwarded_body() {
    let chat = br#"{"model":"food-review-1","messages":[{"role":"user","content":"hi"}]}"#;
    let mut truncated_gzip = gzip(chat);
    truncated_gzip.truncate(truncated_gzip.len() - 6);
    let cases = [
        (
            "second model field",
            Some(FORM_TYPE),
            None,
            form(&[("model", b"a"), ("file", AUDIO), ("model", b"b")]),
            "invalid_model",
        ),
        (
            "form without its closing boundary",
            Some(FORM_TYPE),
            None,
            form(&[("model", b"a"), ("file", AUDIO)])[..60].to_vec(),
            "invalid_json",
        ),
        (
            "truncated gzip",
            None,
            Some("gzip"),
            truncated_gzip,
            "invalid_json",
        ),
    ];
    let layer = ModelRoutingLayer::new();
    for (name, content_type, content_encoding, body, code) in cases {
        let upload = Upload {
            name,
            content_type,
            content_encoding,
            body: Bytes::from(body),
            model: "",
        };
        for size in 1..=64 {
            let what = format!("{name} in {size}-byte chunks");
            let recorder = Recorder::default();
            let body = FramesBody::chunked(split(&upload.body, size));
            let answer = oneshot(&layer, &recorder, request(&upload, body)).await;
            if recorder.count() == 0 {
                // Seen before the decision was acted on.
                assert_eq!(answer.status, 400, "{what}: {answer:?}");
                assert_eq!(answer.error_code(), code, "{what}");
            } else {
                // Seen after: the forwarded body ends with the violation.
                let seen = recorder.last();
                let violation = seen
                    .violation
                    .as_ref()
                    .unwrap_or_else(|| panic!("{what}: {seen:?}"));
                assert_eq!(violation.refusal().code(), code, "{what}");
            }
        }
    }
}

#[tokio::test]
async fn the_model_field_first_calls_the_inner_service_before_the_file_is_sent() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let called = recorder.on_call();
    let (tx, body) = channel_body();
    let request = Request::post("/v1/audio/transcriptions")
        .header("content-type", FORM_TYPE)
        .body(body)
        .unwrap();
    let response = tokio::spawn(recorder.service(&layer).oneshot(request));
    let head = b"--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--x\r\n";
    tx.send(Frame::data(Bytes::from_static(head)))
        .await
        .unwrap();
    let seen = tokio::time::timeout(TEST_TIMEOUT, called)
        .await
        .expect("inner service not called before the file")
        .unwrap();
    assert_eq!(seen.header("x-gateway-model-name"), Some("whisper-1"));
    let file = b"Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n--x--\r\n";
    tx.send(Frame::data(Bytes::from_static(file)))
        .await
        .unwrap();
    drop(tx);
    let response = response.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let seen = recorder.last();
    assert_eq!(common::hex(&seen.sha256), sha256(&[head, file]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_and_gzip_over_a_real_socket() {
    let layer = ModelRoutingLayer::new();
    let recorder = Recorder::default();
    let server = TestServer::start(&layer, &recorder).await;
    for upload in uploads()
        .into_iter()
        .filter(|upload| upload.content_encoding.is_none_or(built))
    {
        for size in [1, 7, 64] {
            let body = FramesBody::chunked(split(&upload.body, size));
            let answer = server.send(request(&upload, body)).await;
            assert_eq!(answer.status, 200, "{}: {answer:?}", upload.name);
            let seen = recorder.last();
            assert_eq!(seen.header("x-gateway-model-name"), Some(upload.model));
            assert_eq!(common::hex(&seen.sha256), sha256(&[&upload.body]));
        }
    }
}

#[cfg(feature = "gzip")]
#[tokio::test]
async fn a_gzip_body_reserves_its_decoder_against_the_global_cap_at_and_one_past() {
    use bbr_tower::FRAME_OVERHEAD;
    let upload = &uploads()[2];
    assert_eq!(upload.content_encoding, Some("gzip"));
    // One frame: the decoder (64 KiB) and the frame with its overhead.
    let needed = (64 << 10) + upload.body.len() as u64 + FRAME_OVERHEAD;
    for (cap, status) in [(needed, 200), (needed - 1, 503)] {
        let layer = ModelRoutingLayer::new().max_held_bytes(cap);
        let recorder = Recorder::default();
        let body = FramesBody::chunked([upload.body.clone()]);
        let answer = oneshot(&layer, &recorder, request(upload, body)).await;
        assert_eq!(answer.status, status, "cap {cap}: {answer:?}");
        assert_eq!(layer.stats().held_bytes(), 0);
    }
    // A plain body of the same bytes reserves no decoder.
    let layer = ModelRoutingLayer::new().max_held_bytes(needed - (64 << 10));
    let recorder = Recorder::default();
    let plain = Upload {
        content_encoding: None,
        body: Bytes::from_static(br#"{"model":"food-review-1"}"#),
        ..uploads().remove(2)
    };
    let body = FramesBody::chunked([plain.body.clone()]);
    assert_eq!(
        oneshot(&layer, &recorder, request(&plain, body))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn an_encoding_not_decoded_is_forwarded_unread_or_refused_as_a_missing_model() {
    let body = Bytes::from_static(b"\x1f\x9d\x90compressed");
    for (policy, status) in [
        (bbr_core::contract::MissingModel::Forward, 200),
        (bbr_core::contract::MissingModel::Reject, 400),
    ] {
        let layer = ModelRoutingLayer::new().missing_model(policy);
        let recorder = Recorder::default();
        let request = Request::post("/v1/chat/completions")
            .header("content-encoding", "gzip, br, zstd")
            .body(FramesBody::chunked(split(&body, 3)))
            .unwrap();
        let answer = oneshot(&layer, &recorder, request).await;
        assert_eq!(answer.status, status, "{policy:?}: {answer:?}");
        if status == 200 {
            let seen = recorder.last();
            assert_eq!(seen.header("x-gateway-model-name"), None);
            assert_eq!(common::hex(&seen.sha256), sha256(&[&body]));
            assert_eq!(layer.stats().absent(), 1);
        } else {
            assert_eq!(answer.error_code(), "missing_model");
            assert_eq!(recorder.count(), 0);
        }
    }
}
