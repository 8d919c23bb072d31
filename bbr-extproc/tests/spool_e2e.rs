//! 256 MiB form uploads through a real Envoy (`deploy/envoy/bbr-full-duplex.yaml`,
//! `FULL_DUPLEX_STREAMED`) and the `bbr-extproc` binary as its own process
//! (so its memory is measured alone), to bbr-model-sim, which hashes the
//! file it receives. The upload is generated and hashed as it is sent:
//! nothing holds 256 MiB in the test.
//!
//! - `model` last: bbr-extproc must hold the body until the field. Past its
//!   spool threshold (4 MiB, the default) the bytes go to the disk spool in
//!   `--spool-dir` (under the target directory: CI's temp dir is small): the
//!   file arrives byte for byte, and bbr-extproc's peak RSS (`VmHWM`) grows
//!   by a few MiB (at most 20), not by the body.
//! - `model` first: the field reaches the model server while the client is
//!   still sending (the client waits for it after 1 MiB).
//!
//! Envoy's own peak RSS growth is printed, not asserted: in full duplex it
//! buffers what bbr-extproc has not answered yet, within its flow control.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bbr_model_sim::{SimConfig, upload};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Request;
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use support::{Binary, Envoy, Upstreams};

const FILE_BYTES: u64 = 256 << 20;
const CHUNK: usize = 64 << 10;
const BOUNDARY: &str = "spool-e2e-boundary";
const MODEL: &str = "food-review-1";
const DEADLINE: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;
/// Bound on bbr-extproc's peak RSS growth for a 256 MiB upload: 20 MiB,
/// less than a tenth of it. Measured on a shared 2-core machine, both tests
/// in parallel: 11–15 MiB with model last (spooled) and 12–14 MiB with
/// model first (nothing held) alike, so the spool adds no measurable peak
/// over streaming itself (HTTP/2 windows, replies in flight, glibc's
/// per-thread arenas: 8–10 MiB with `MALLOC_ARENA_MAX=1`).
const MAX_GROWTH: u64 = 20 * MIB;

/// `VmHWM` (peak resident set) of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

/// Envoy in front of bbr-extproc (its own process, spooling into a
/// directory of the target dir) and a model server for `food-review-1`.
struct Setup {
    sim: bbr_model_sim::SimHandle,
    extproc: Binary,
    envoy: Envoy,
    spool_dir: PathBuf,
}

impl Setup {
    /// With `usable_dir` false the spool directory is removed once
    /// bbr-extproc serves (it is checked at start), so no spool file can be
    /// created.
    async fn start(tag: &str, usable_dir: bool) -> Self {
        let sim = bbr_model_sim::spawn(SimConfig::new(MODEL))
            .await
            .expect("the model server starts");
        // Only the model's route leads to the model server; a request
        // routed anywhere else gets a recording stand-in.
        let mut upstreams = Upstreams::start().await;
        upstreams.llama = sim.addr();
        let spool_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("spool-e2e-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&spool_dir).expect("spool dir");
        let spool_arg = format!("--spool-dir={}", spool_dir.display());
        let extproc = Binary::spawn_serving(&[
            "--secure-serving=false",
            "--metrics-endpoint-auth=false",
            "--tracing=false",
            // The extractor must read the whole form to find `model`
            // last; the spool keeps that off the heap.
            "--max-scan-bytes=300MiB",
            "--max-body-bytes=512MiB",
            &spool_arg,
        ])
        .await;
        if !usable_dir {
            std::fs::remove_dir(&spool_dir).expect("an empty spool dir");
        }
        let envoy = Envoy::start("bbr-full-duplex.yaml", Some(extproc.addr()), &upstreams).await;
        Self {
            sim,
            extproc,
            envoy,
            spool_dir,
        }
    }

    /// A counter of bbr-extproc's `/metrics`, once the stream that counts
    /// it has ended (5 s at most).
    async fn counter(&self, name: &str) -> u64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.extproc.metrics);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let request = Request::get(&url).body(support::empty()).unwrap();
            let text = support::send(&support::http1_client(), request).await.body;
            let value = String::from_utf8_lossy(&text).lines().find_map(|line| {
                line.strip_prefix(&format!("{name} "))
                    .and_then(|v| v.trim().parse().ok())
            });
            match value {
                Some(value) if value > 0 => return value,
                _ if Instant::now() > deadline => return 0,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn url(&self) -> String {
        self.envoy.url("/v1/audio/transcriptions")
    }

    /// A whole form in one body, through Envoy.
    async fn post_form(&self, form: Vec<u8>) -> support::Answer {
        let request = Request::post(self.url())
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(support::full(form))
            .unwrap();
        support::send(&support::http1_client(), request).await
    }

    /// A small upload first, so the baselines include the processes'
    /// warm-up allocations (connections, buffers).
    async fn warm_up(&self) {
        let body = [
            upload::part_head(BOUNDARY, "model", None),
            format!("{MODEL}\r\n").into_bytes(),
            upload::part_head(BOUNDARY, "file", Some("a.wav")),
            b"RIFF\r\n".to_vec(),
            upload::closing(BOUNDARY),
        ]
        .concat();
        let answer = self.post_form(body).await;
        assert_eq!(
            answer.status,
            200,
            "{:?} / {}",
            answer.body,
            self.extproc.log_text()
        );
        assert_eq!(answer.json()["model"], MODEL);
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.spool_dir);
    }
}

/// What one upload did.
struct Upload {
    answer: serde_json::Value,
    file_sha256: String,
    took: Duration,
}

type Sender = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>;

async fn upload(setup: &Setup, model_first: bool) -> Upload {
    let model_part = [
        upload::part_head(BOUNDARY, "model", None),
        format!("{MODEL}\r\n").into_bytes(),
    ]
    .concat();
    let file_head = upload::part_head(BOUNDARY, "file", Some("long.wav"));
    let tail = upload::closing(BOUNDARY);
    let length =
        model_part.len() as u64 + file_head.len() as u64 + FILE_BYTES + 2 + tail.len() as u64;
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let body = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let request = Request::post(setup.url())
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("content-length", length)
        .body(body)
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let start = Instant::now();
    let response = tokio::spawn(async move {
        let response = client.request(request).await.expect("an answer");
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    let mut seen = setup.sim.observer().form_models_seen();
    let send = |tx: &Sender, bytes: Vec<u8>| {
        let tx = tx.clone();
        async move { tx.send(Ok(Frame::data(Bytes::from(bytes)))).await.unwrap() }
    };
    let mut hash = Sha256::new();
    if model_first {
        send(&tx, model_part.clone()).await;
    }
    send(&tx, file_head).await;
    for i in 0..FILE_BYTES / CHUNK as u64 {
        let chunk = Bytes::from(upload::file_chunk(i, CHUNK));
        hash.update(&chunk);
        tx.send(Ok(Frame::data(chunk))).await.unwrap();
        if model_first && (i + 1) * CHUNK as u64 == MIB {
            // The rest is sent only once the model server read the field.
            tokio::time::timeout(DEADLINE, seen.changed())
                .await
                .expect("the model field reached the server while the upload went on")
                .unwrap();
        }
    }
    send(&tx, b"\r\n".to_vec()).await;
    if !model_first {
        send(&tx, model_part).await;
    }
    send(&tx, tail).await;
    drop(tx);
    let (status, body) = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("answer in time")
        .unwrap();
    let took = start.elapsed();
    assert_eq!(
        status,
        200,
        "{} / {}",
        String::from_utf8_lossy(&body),
        setup.extproc.log_text()
    );
    Upload {
        answer: serde_json::from_slice(&body).unwrap(),
        file_sha256: hash.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        took,
    }
}

fn assert_forwarded_byte_identical(upload: &Upload) {
    assert_eq!(upload.answer["model"], MODEL, "{}", upload.answer);
    assert_eq!(upload.answer["file"]["bytes"], FILE_BYTES);
    assert_eq!(upload.answer["file"]["sha256"], upload.file_sha256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_last_is_spooled_and_forwarded_byte_identical_with_a_few_mib_of_extproc_memory() {
    let setup = Setup::start("last", true).await;
    setup.warm_up().await;
    let extproc_before = peak_rss(setup.extproc.child.id());
    let envoy_before = peak_rss(setup.envoy.pid());
    let upload = upload(&setup, false).await;
    let grown = peak_rss(setup.extproc.child.id()).saturating_sub(extproc_before);
    let envoy_grown = peak_rss(setup.envoy.pid()).saturating_sub(envoy_before);
    eprintln!(
        "model last, 256 MiB through Envoy: {:.1} s; bbr-extproc VmHWM {} MiB before, grew by {} KiB; \
         Envoy VmHWM {} MiB before, grew by {} KiB",
        upload.took.as_secs_f64(),
        extproc_before / MIB,
        grown / 1024,
        envoy_before / MIB,
        envoy_grown / 1024
    );
    assert_forwarded_byte_identical(&upload);
    // It went through the spool: everything but the first (up to 4 MiB,
    // the threshold) and the deciding message (Envoy's last, with `model`).
    let spooled = setup.counter("bbr_spooled_bytes_total").await;
    assert!(
        spooled > FILE_BYTES - 8 * MIB && spooled < FILE_BYTES,
        "{spooled} bytes spooled"
    );
    assert_eq!(setup.counter("bbr_spooled_requests_total").await, 1);
    // Nothing is left in the spool directory (the file was unlinked at
    // once) and nothing went wrong on the way.
    assert_eq!(
        std::fs::read_dir(&setup.spool_dir).unwrap().count(),
        0,
        "spool files left behind"
    );
    assert!(
        !setup.extproc.log_text().contains("WARN"),
        "{}",
        setup.extproc.log_text()
    );
    // Far below the 256 MiB it would cost held in memory: the spool
    // threshold (4 MiB), its write and read buffers, and what streaming
    // costs anyway (the replies in flight, HTTP/2 windows, allocator
    // arenas: the model-first test, which holds nothing, grows as much).
    assert!(
        grown <= MAX_GROWTH,
        "bbr-extproc's peak RSS grew by {grown} bytes for a {FILE_BYTES}-byte body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_first_reaches_the_model_server_while_the_upload_goes_on() {
    let setup = Setup::start("first", true).await;
    setup.warm_up().await;
    let extproc_before = peak_rss(setup.extproc.child.id());
    let upload = upload(&setup, true).await;
    let grown = peak_rss(setup.extproc.child.id()).saturating_sub(extproc_before);
    eprintln!(
        "model first, 256 MiB through Envoy: {:.1} s; bbr-extproc VmHWM grew by {} KiB",
        upload.took.as_secs_f64(),
        grown / 1024
    );
    // `upload` waited for the model server to read the field after 1 MiB
    // of the file, before sending the rest.
    assert_forwarded_byte_identical(&upload);
    assert_eq!(setup.counter("bbr_spooled_requests_total").await, 0);
    assert!(
        grown <= MAX_GROWTH,
        "bbr-extproc's peak RSS grew by {grown} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_that_cannot_be_written_is_503_overloaded_and_logged_at_warn() {
    let setup = Setup::start("unusable", false).await;
    // 8 MiB with `model` last: past the 4 MiB threshold it must spool.
    let body = [
        upload::part_head(BOUNDARY, "file", Some("a.wav")),
        vec![0x80; 8 << 20],
        b"\r\n".to_vec(),
        upload::part_head(BOUNDARY, "model", None),
        format!("{MODEL}\r\n--{BOUNDARY}--\r\n").into_bytes(),
    ]
    .concat();
    let answer = setup.post_form(body).await;
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert_eq!(answer.json()["error"]["code"], "overloaded");
    assert!(answer.retry_after.is_some(), "Retry-After expected");
    assert_eq!(setup.sim.observer().requests_received(), 0);
    // The operator sees why, with the I/O error.
    let log = setup.extproc.log_text();
    let line = log
        .lines()
        .find(|line| line.contains("disk spool failed"))
        .unwrap_or_else(|| panic!("no spool warning in {log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("No such file or directory"), "{line}");
}

#[tokio::test]
async fn a_spool_dir_that_cannot_hold_files_stops_the_start() {
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("spool-e2e-no-such-dir/nested");
    let mut binary = Binary::spawn(
        &[
            "--secure-serving=false",
            &format!("--spool-dir={}", missing.display()),
        ],
        None,
    );
    let log = binary.try_wait_serving().await.expect_err("no start");
    assert!(log.contains("exit status: 1"), "{log}");
    assert!(
        log.contains("--spool-dir: cannot create a spool file in"),
        "{log}"
    );
    // The default directory ($TMPDIR) unusable: a warning, and the spool
    // is off (held bytes in memory), so the drop-in still starts.
    let mut binary = Binary::spawn(
        &[
            "--secure-serving=false",
            "--metrics-endpoint-auth=false",
            "--tracing=false",
        ],
        Some(&[("TMPDIR", missing.display().to_string())]),
    );
    binary.wait_serving().await;
    let log = binary.log_text();
    assert!(
        log.lines()
            .any(|line| line.contains("WARN") && line.contains("the disk spool is off")),
        "{log}"
    );
    // With the spool off the directory is not needed.
    let mut binary = Binary::spawn(
        &[
            "--secure-serving=false",
            "--metrics-endpoint-auth=false",
            "--tracing=false",
            "--spool-threshold=off",
            &format!("--spool-dir={}", missing.display()),
        ],
        None,
    );
    binary.wait_serving().await;
}
