//! A 256 MiB form upload through the gateway binary (its own process, so
//! its memory is measured alone) to a simulated model server in the test
//! process. The upload is generated and hashed as it is sent; nothing holds
//! 256 MiB in the test.
//!
//! - `model` first: the server reads the field while the client is still
//!   sending (the client waits for it after 1 MiB), and the gateway's peak
//!   RSS (`VmHWM`) grows by a few MiB at most.
//! - `model` last: the gateway must hold the body until the field (the
//!   scan limit is raised past the upload for that). Past the spool
//!   threshold (4 MiB, the default) it holds it on disk, in an unlinked
//!   temp file: the file arrives byte for byte and the peak RSS grows by a
//!   few MiB, not by the body. With `spool: false` the whole body is held in
//!   memory once (never copied) and the peak grows by the body.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::GatewayProcess;

use bbr_model_sim::{SimConfig, upload};
use bytes::Bytes;
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

const FILE_BYTES: u64 = 256 << 20;
const CHUNK: usize = 64 << 10;
const BOUNDARY: &str = "large-upload-boundary";
const DEADLINE: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;

/// The gateway binary, configured to route `whisper-1` to `sim`, its spool
/// (when on) in the build's temp directory: a 256 MiB spool file does not
/// fit every machine's `$TMPDIR` (a small tmpfs answers 503).
async fn start_gateway(sim: SocketAddr, scan_limit: &str, spool: bool) -> GatewayProcess {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "bbr-large-{}-{scan_limit}-{spool}",
        std::process::id()
    ));
    let spool_dir = dir.join("spool");
    std::fs::create_dir_all(&spool_dir).unwrap();
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "pools:\n  - name: asr\n    endpoints: [{sim}]\nroutes:\n  - {{name: a, pool: asr, matches: [{{model: whisper-1}}]}}\n\
             bbr: {{max_scan_bytes: {scan_limit}, max_body_bytes: 512MiB, spool: {spool}, spool_dir: {}}}\n",
            spool_dir.display()
        ),
    )
    .unwrap();
    let mut gateway = GatewayProcess::start(["--config".as_ref(), config.as_os_str()]).await;
    gateway.keep_reading();
    gateway
}

/// What one upload did.
struct Upload {
    answer: serde_json::Value,
    file_sha256: String,
    /// File bytes sent when the server had read the `model` field (model
    /// first only).
    sent_when_model_seen: Option<u64>,
}

async fn upload(gateway: SocketAddr, sim: &bbr_model_sim::SimHandle, model_first: bool) -> Upload {
    let model_part = [
        upload::part_head(BOUNDARY, "model", None),
        b"whisper-1\r\n".to_vec(),
    ]
    .concat();
    let file_head = upload::part_head(BOUNDARY, "file", Some("long.wav"));
    let tail = upload::closing(BOUNDARY);
    let length =
        model_part.len() as u64 + file_head.len() as u64 + FILE_BYTES + 2 + tail.len() as u64;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(8);
    let body = StreamBody::new(tokio_stream_from(rx));
    let request = Request::post(format!("http://{gateway}/v1/audio/transcriptions"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("content-length", length)
        .body(body)
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::spawn(async move {
        let response = client.request(request).await.expect("an answer");
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    let mut seen = sim.observer().form_models_seen();
    let mut hash = Sha256::new();
    let mut sent_when_model_seen = None;
    // `false` once the client stopped taking the body: the gateway answered
    // early (a refusal), which the status below then shows.
    let sent = async {
        let send = |bytes: Bytes| tx.send(Ok(Frame::data(bytes)));
        if model_first {
            send(Bytes::from(model_part.clone())).await.ok()?;
        }
        send(Bytes::from(file_head)).await.ok()?;
        for i in 0..FILE_BYTES / CHUNK as u64 {
            let chunk = Bytes::from(upload::file_chunk(i, CHUNK));
            hash.update(&chunk);
            send(chunk).await.ok()?;
            if model_first && (i + 1) * CHUNK as u64 == MIB {
                // The rest is sent only once the server read the field.
                tokio::time::timeout(DEADLINE, seen.changed())
                    .await
                    .expect("the model field reached the server while the upload went on")
                    .unwrap();
                sent_when_model_seen = Some(MIB);
            }
        }
        send(Bytes::from_static(b"\r\n")).await.ok()?;
        if !model_first {
            send(Bytes::from(model_part)).await.ok()?;
        }
        send(Bytes::from(tail)).await.ok()
    }
    .await
    .is_some();
    drop(tx);
    let (status, body) = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("answer in time")
        .unwrap();
    assert!(
        sent,
        "the gateway stopped reading the upload and answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    Upload {
        answer: serde_json::from_slice(&body).unwrap(),
        file_sha256: hex(&hash.finalize()),
        sent_when_model_seen,
    }
}

fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A small upload first, so the baseline includes the gateway's warm-up
/// allocations (connection pools, buffers).
async fn warm_up(gateway: SocketAddr) {
    let body = [
        upload::part_head(BOUNDARY, "model", None),
        b"whisper-1\r\n".to_vec(),
        upload::part_head(BOUNDARY, "file", Some("a.wav")),
        b"RIFF\r\n".to_vec(),
        upload::closing(BOUNDARY),
    ]
    .concat();
    let request = Request::post(format!("http://{gateway}/v1/audio/transcriptions"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_first_reaches_the_server_mid_upload_with_a_few_mib_of_gateway_memory() {
    let sim = bbr_model_sim::spawn(SimConfig::new("whisper-1"))
        .await
        .unwrap();
    let gateway = start_gateway(sim.addr(), "32MiB", true).await;
    warm_up(gateway.addr).await;
    let before = gateway.peak_rss();
    let upload = upload(gateway.addr, &sim, true).await;
    let grown = gateway.peak_rss().saturating_sub(before);
    eprintln!(
        "model first: gateway VmHWM {} MiB before, grew by {} KiB",
        before / MIB,
        grown / 1024
    );
    assert_eq!(upload.sent_when_model_seen, Some(MIB));
    assert_eq!(upload.answer["model"], "whisper-1");
    assert_eq!(upload.answer["file"]["bytes"], FILE_BYTES);
    assert_eq!(upload.answer["file"]["sha256"], upload.file_sha256);
    assert!(
        grown <= 8 * MIB,
        "the gateway's peak RSS grew by {grown} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_last_is_forwarded_byte_identical_with_a_few_mib_of_gateway_memory() {
    let sim = bbr_model_sim::spawn(SimConfig::new("whisper-1"))
        .await
        .unwrap();
    let gateway = start_gateway(sim.addr(), "300MiB", true).await;
    warm_up(gateway.addr).await;
    let before = gateway.peak_rss();
    let upload = upload(gateway.addr, &sim, false).await;
    let grown = gateway.peak_rss().saturating_sub(before);
    eprintln!(
        "model last: gateway VmHWM {} MiB before, grew by {} KiB",
        before / MIB,
        grown / 1024
    );
    assert_eq!(upload.answer["model"], "whisper-1");
    assert_eq!(upload.answer["file"]["bytes"], FILE_BYTES);
    assert_eq!(upload.answer["file"]["sha256"], upload.file_sha256);
    // The spool threshold (4 MiB) plus its write and read buffers and the
    // proxy's own: far below the 256 MiB it would cost held in memory.
    assert!(
        grown <= 12 * MIB,
        "the gateway's peak RSS grew by {grown} bytes for a {FILE_BYTES}-byte body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_last_without_the_spool_holds_the_body_in_memory_once() {
    let sim = bbr_model_sim::spawn(SimConfig::new("whisper-1"))
        .await
        .unwrap();
    let gateway = start_gateway(sim.addr(), "300MiB", false).await;
    warm_up(gateway.addr).await;
    let before = gateway.peak_rss();
    let upload = upload(gateway.addr, &sim, false).await;
    let grown = gateway.peak_rss().saturating_sub(before);
    eprintln!(
        "model last, spool off: gateway VmHWM {} MiB before, grew by {} KiB",
        before / MIB,
        grown / 1024
    );
    assert_eq!(upload.answer["model"], "whisper-1");
    assert_eq!(upload.answer["file"]["sha256"], upload.file_sha256);
    // Held whole until the field: the peak grows by the body, and by less
    // than twice it (the held frames are replayed, never copied).
    assert!(
        (FILE_BYTES..FILE_BYTES + 32 * MIB).contains(&grown),
        "the gateway's peak RSS grew by {grown} bytes for a {FILE_BYTES}-byte body"
    );
}
