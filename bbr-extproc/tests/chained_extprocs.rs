//! Two ext_proc filters chained in FULL_DUPLEX_STREAMED, as the guide's
//! gateway runs them: bbr-extproc first, then the endpoint picker's
//! position, held here by the no-op processor example
//! (`examples/noop_extproc.rs` with `--model ""`: it echoes every body chunk
//! and leaves the route alone). The upstream BBR's known failure is bodies
//! above ~6 KiB in this arrangement; bodies of 1 KiB, 7 KiB, 64 KiB and
//! 8 MiB, with `model` first and last, must reach the right pool byte for
//! byte. Config: `tests/envoy/chained-full-duplex.yaml`. The second
//! processor runs once echoing every chunk at once and once with `--hold`
//! (the load benchmark's holding floor: everything held until the body
//! ends), which must forward the same bytes.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use bbr_extproc::Tls;
use support::*;

/// The no-op processor, killed on drop.
struct Noop {
    child: Child,
    port: u16,
}

impl Drop for Noop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>/examples/noop_extproc`, built by `cargo test -p
/// bbr-extproc` (examples are built with the tests) or `cargo build -p
/// bbr-extproc --example noop_extproc`.
fn noop_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/examples/noop_extproc
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile_dir.join("examples").join("noop_extproc");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p bbr-extproc --example noop_extproc` \
         (or `cargo test -p bbr-extproc`, which builds the examples)",
        path.display()
    );
    path
}

/// Starts noop_extproc on a port it picks itself (`--port 0`) and reads
/// the port back from its first stderr line: a port picked here could be
/// bound by another test before the example binds it.
fn start_noop(hold: bool) -> Noop {
    use std::io::BufRead;
    let mut args = vec!["--port", "0", "--model", ""];
    if hold {
        args.push("--hold");
    }
    let mut child = Command::new(noop_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start noop_extproc");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("noop_extproc's stderr");
    // Whatever it writes later is drained, so no write of it can fail.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let port = line
        .trim()
        .strip_prefix("noop_extproc listening on ")
        .and_then(|addr| addr.parse::<std::net::SocketAddr>().ok())
        .unwrap_or_else(|| panic!("noop_extproc did not start: {line:?}"))
        .port();
    Noop { child, port }
}

/// A chat body of exactly `total` bytes, `model` first or last.
fn body(model: &str, total: usize, model_first: bool) -> Vec<u8> {
    let (head, tail) = if model_first {
        (
            format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":""#),
            r#""}]}"#.to_owned(),
        )
    } else {
        (
            r#"{"messages":[{"role":"user","content":""#.to_owned(),
            format!(r#""}}],"model":"{model}"}}"#),
        )
    };
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(head.as_bytes());
    // Varied content, so a lost, duplicated or reordered chunk changes the hash.
    let mut i = 0u32;
    while out.len() < total - tail.len() {
        out.push(b"abcdefghijklmnopqrstuvwxyz0123456789 "[(i % 37) as usize]);
        i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345) >> 1;
    }
    out.extend_from_slice(tail.as_bytes());
    assert_eq!(out.len(), total);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bbr_then_a_second_full_duplex_processor_routes_every_size_byte_identical() {
    chain_routes_every_size_byte_identical(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bbr_then_a_second_processor_that_holds_the_body_routes_every_size_byte_identical() {
    chain_routes_every_size_byte_identical(true).await;
}

async fn chain_routes_every_size_byte_identical(hold: bool) {
    let upstreams = Upstreams::start().await;
    // The default limits (32 MiB scan): the 8 MiB body with `model` last is
    // decided at its end.
    let extproc = ExtProc::start(bbr_extproc::Settings::default(), Tls::Plaintext).await;
    let noop = start_noop(hold);
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/envoy/chained-full-duplex.yaml"),
    )
    .expect("read the chained config");
    let config = std::env::temp_dir().join(format!(
        "bbr-chained-{}-{}.yaml",
        std::process::id(),
        noop.port
    ));
    std::fs::write(
        &config,
        template.replace("${NOOP_PORT}", &noop.port.to_string()),
    )
    .expect("write the config");
    // An absolute path replaces the deploy/envoy/ directory Envoy::start joins.
    let envoy = Envoy::start(
        config.to_str().expect("utf-8 path"),
        Some(extproc.grpc),
        &upstreams,
    )
    .await;

    let client = http1_client();
    let sizes = [1 << 10, 7 << 10, 64 << 10, 8 << 20];
    let mut sent = 0;
    for total in sizes {
        for (model, pool, model_first) in [
            ("ski-resorts", "pool-deepseek", true),
            ("food-review-1", "pool-llama", false),
        ] {
            let body = body(model, total, model_first);
            let hash = sha256(&body);
            let answer = send(&client, post(&envoy.url("/v1/chat/completions"), body, &[])).await;
            let place = if model_first { "first" } else { "last" };
            assert_eq!(
                answer.status,
                200,
                "{total} bytes, model {place}: {:?}\nenvoy log:\n{}",
                String::from_utf8_lossy(&answer.body),
                envoy.log_text()
            );
            let json = answer.json();
            assert_eq!(json["pool"], pool, "{total} bytes, model {place}");
            assert_eq!(json["model"], model, "{total} bytes, model {place}");
            assert_eq!(json["len"], total, "{total} bytes, model {place}");
            assert_eq!(
                json["sha256"],
                hash.as_str(),
                "{total} bytes, model {place}: body changed"
            );
            sent += 1;
        }
    }
    let received = upstreams.take();
    assert_eq!(
        received.len(),
        sent,
        "each request reached exactly one pool once"
    );
    // Both processors had every request: Envoy counts each filter's
    // streams (the second filter's stats carry its `stat_prefix`).
    let stats = envoy
        .admin_get("/stats?filter=streams_started")
        .await
        .expect("admin stats");
    let started: Vec<(&str, u64)> = stats
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(name, _)| name.contains("ext_proc"))
        .filter_map(|(name, value)| Some((name, value.trim().parse().ok()?)))
        .collect();
    assert_eq!(started.len(), 2, "one counter per ext_proc filter: {stats}");
    assert!(
        started
            .iter()
            .any(|(name, _)| name.contains("endpoint_picker")),
        "{stats}"
    );
    for (name, count) in &started {
        assert_eq!(*count, sent as u64, "{name}");
    }
    drop(envoy);
    let _ = std::fs::remove_file(&config);
}
