//! The upload endpoints (multipart forms) and compressed completion
//! bodies, over real sockets.

mod common;

use bbr_model_sim::{SimConfig, sha256_hex};
use common::{client, collect, send};
use http::Method;

const FORM_TYPE: &str = "multipart/form-data; boundary=sim-boundary";

fn form(fields: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, value) in fields {
        body.extend_from_slice(b"--sim-boundary\r\nContent-Disposition: form-data; name=\"");
        body.extend_from_slice(name.as_bytes());
        body.push(b'"');
        if let Some(filename) = filename {
            body.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--sim-boundary--\r\n");
    body
}

#[tokio::test]
async fn each_upload_endpoint_names_the_model_and_the_files_length_and_hash() {
    let sim = bbr_model_sim::spawn(SimConfig::new("whisper-1").lora("food-review-1"))
        .await
        .unwrap();
    let file: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let client = client();
    for (path, model, model_first) in [
        ("/v1/audio/transcriptions", "whisper-1", true),
        ("/v1/audio/translations", "food-review-1", false),
        ("/v1/images/edits", "whisper-1", false),
    ] {
        let model_field = ("model", None, model.as_bytes());
        let file_field = ("file", Some("clip.wav"), &file[..]);
        let prompt = ("prompt", None, &b"a prompt"[..]);
        let body = if model_first {
            form(&[model_field, file_field, prompt])
        } else {
            form(&[file_field, prompt, model_field])
        };
        let url = format!("{}{path}", sim.url());
        let answer = collect(
            send(
                &client,
                Method::POST,
                &url,
                &[("content-type", FORM_TYPE)],
                body.clone(),
            )
            .await,
        )
        .await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        let json = answer.json();
        assert_eq!(json["model"], model, "{path}");
        assert_eq!(json["file"]["name"], "clip.wav");
        assert_eq!(json["file"]["bytes"], file.len());
        assert_eq!(json["file"]["sha256"], sha256_hex(&file));
        assert_eq!(json["body"]["bytes"], body.len());
        assert_eq!(json["body"]["sha256"], sha256_hex(&body));
        if path.starts_with("/v1/audio") {
            assert!(json["text"].as_str().unwrap().contains(model), "{json}");
        } else {
            assert_eq!(json["data"][0]["b64_json"].as_str().unwrap().len() % 4, 0);
        }
        let recorded = sim.observer().last_request().unwrap();
        assert_eq!(recorded.path, path);
        assert_eq!(recorded.model.as_deref(), Some(model));
        assert_eq!(recorded.body_sha256, sha256_hex(&body));
    }
    assert_eq!(*sim.observer().form_models_seen().borrow(), 3);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_forms_are_refused_like_a_model_server() {
    let sim = bbr_model_sim::spawn(SimConfig::new("whisper-1"))
        .await
        .unwrap();
    let client = client();
    let url = format!("{}/v1/audio/transcriptions", sim.url());
    let cases: [(&str, Vec<u8>, u16); 5] = [
        (FORM_TYPE, form(&[("file", Some("a.wav"), b"x")]), 400),
        (
            FORM_TYPE,
            form(&[("model", None, b"a"), ("model", None, b"b")]),
            400,
        ),
        (FORM_TYPE, form(&[("model", None, b"other")]), 404),
        (
            "application/json",
            br#"{"model":"whisper-1"}"#.to_vec(),
            400,
        ),
        (
            FORM_TYPE,
            form(&[("model", None, b"whisper-1")])[..30].to_vec(),
            400,
        ),
    ];
    for (content_type, body, status) in cases {
        let answer = collect(
            send(
                &client,
                Method::POST,
                &url,
                &[("content-type", content_type)],
                body,
            )
            .await,
        )
        .await;
        assert_eq!(answer.status, status, "{}", answer.text());
        assert!(answer.json()["error"]["message"].is_string());
    }
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn compressed_completion_bodies_are_decoded_and_recorded_as_received() {
    use std::io::Write;
    let sim = bbr_model_sim::spawn(SimConfig::new("m")).await.unwrap();
    let client = client();
    let url = format!("{}/v1/chat/completions", sim.url());
    let json = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(json).unwrap();
    let gzip = gzip.finish().unwrap();
    let zstd = zstd::encode_all(&json[..], 3).unwrap();
    let gzip_then_zstd = zstd::encode_all(&gzip[..], 3).unwrap();
    for (encoding, body, status) in [
        ("gzip", gzip.clone(), 200),
        ("zstd", zstd, 200),
        ("gzip, zstd", gzip_then_zstd, 200),
        ("compress", gzip.clone(), 415),
        ("zstd", gzip[..gzip.len() - 4].to_vec(), 400),
    ] {
        let headers = [
            ("content-type", "application/json"),
            ("content-encoding", encoding),
        ];
        let answer = collect(send(&client, Method::POST, &url, &headers, body.clone()).await).await;
        assert_eq!(answer.status, status, "{encoding}: {}", answer.text());
        let recorded = sim.observer().last_request().unwrap();
        assert_eq!(recorded.body_sha256, sha256_hex(&body), "{encoding}");
        if status == 200 {
            assert_eq!(answer.json()["model"], "m");
            assert_eq!(recorded.model.as_deref(), Some("m"));
        }
    }
    sim.shutdown().await.unwrap();
}
