//! The differential test: the upstream BBR binary (GAIE v1.5.0, built by
//! `scripts/install-go-tools` into `.tools/bin/bbr`) and the bbr-extproc
//! binary, each behind its own copy of the same Envoy configuration (the
//! upstream chart's ext_proc filter, `tests/envoy/upstream-chart.yaml`),
//! both pointed at one stand-in Kubernetes API serving the same adapter
//! ConfigMaps, get the same corpus. For every case the client's status, the
//! pool, the routing headers the pool receives and the body bytes it
//! receives are compared. Every difference must be a row of the table in
//! `bbr-extproc/UPSTREAM-DIFFERENCES.md`, with exactly the outcomes seen on
//! each side; any other difference, and any stale row, fails the test.
#![cfg(feature = "kube")]

mod go_tools;
mod kube_standin;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use kube_standin::KubeStandin;
use support::{Body, Envoy, Upstreams, empty, free_port, full, http1_client, send, sha256};

const LLAMA: &str = "meta-llama/Llama-3.1-8B-Instruct";
const DEEPSEEK: &str = "deepseek/vllm-deepseek-r1";
const ENVOY_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/envoy/upstream-chart.yaml"
);
const NAMESPACE: &str = "default";
/// The header each request carries so a pool's records can be told apart.
const CASE_HEADER: &str = "x-differential-case";

/// A processor process, killed on drop.
struct Processor {
    name: &'static str,
    child: Child,
    grpc: SocketAddr,
    metrics: u16,
    log: PathBuf,
}

impl Processor {
    fn start(name: &'static str, program: &Path, extra: &[&str], standin: &KubeStandin) -> Self {
        let (grpc, health, metrics) = (free_port(), free_port(), free_port());
        let log = std::env::temp_dir().join(format!(
            "bbr-differential-{name}-{}-{grpc}.log",
            std::process::id()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(program);
        // The upstream chart's arguments (defaults of values.yaml), with
        // free ports, plaintext, and no metrics auth (no TokenReview API).
        command
            .args(["--streaming", "--v=3", "--tracing=false", "--secure-serving=false"])
            .args(["--metrics-endpoint-auth=false", "--enable-pprof=false"])
            .arg(format!("--grpc-port={grpc}"))
            .arg(format!("--grpc-health-port={health}"))
            .arg(format!("--metrics-port={metrics}"))
            .args([
                "--plugin",
                r#"body-field-to-header:model-extractor:{"fieldName":"model","headerName":"X-Gateway-Model-Name"}"#,
                "--plugin",
                "base-model-to-header:base-model-mapper",
            ])
            .args(extra)
            .env("KUBECONFIG", standin.kubeconfig())
            .env("NAMESPACE", NAMESPACE)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Self {
            name,
            child,
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc)),
            metrics,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One processor behind its Envoy, with its own recording pools.
struct Side {
    processor: Processor,
    upstreams: Upstreams,
    envoy: Envoy,
}

impl Side {
    async fn start(processor: Processor) -> Self {
        let upstreams = Upstreams::start().await;
        let envoy = Envoy::start(ENVOY_CONFIG, Some(processor.grpc), &upstreams).await;
        Self {
            processor,
            upstreams,
            envoy,
        }
    }

    /// Sends one request and sums up what happened.
    async fn observe(&mut self, case: &Case, tag: &str) -> String {
        let mut builder = Request::builder()
            .method(case.method)
            .uri(self.envoy.url(case.path))
            .header(CASE_HEADER, tag);
        if case.method == "POST" {
            builder = builder.header("content-type", "application/json");
        }
        for (name, value) in &case.headers {
            builder = builder.header(*name, value.as_str());
        }
        let request: Request<Body> = builder.body(full(case.body.clone())).expect("request");
        let client = http1_client();
        let response = tokio::time::timeout(Duration::from_secs(60), client.request(request))
            .await
            .unwrap_or_else(|_| {
                panic!("{}: {}: no answer in 60 s", self.processor.name, case.name)
            });
        let Ok(response) = response else {
            return "connection error".to_owned();
        };
        let status = response.status().as_u16();
        let answer = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let records: Vec<_> = self
            .upstreams
            .take()
            .into_iter()
            .filter(|r| r.header(CASE_HEADER) == Some(tag))
            .collect();
        let reached = records
            .first()
            .filter(|_| status == 200 && !records.is_empty());
        match reached {
            Some(record) => {
                let show = |name: &str| match record.headers.get(name) {
                    None => "-".to_owned(),
                    Some(values) => values
                        .iter()
                        .map(|v| format!("{v:?}"))
                        .collect::<Vec<_>>()
                        .join("+"),
                };
                let body = if record.body_sha256 == sha256(&case.body) {
                    String::new()
                } else {
                    format!(" body-changed({} bytes)", record.body_len)
                };
                format!(
                    "{status} {} model={} base={}{body}",
                    record.pool,
                    show("x-gateway-model-name"),
                    show("x-gateway-base-model-name")
                )
            }
            None => {
                let kind = match serde_json::from_slice::<serde_json::Value>(&answer) {
                    Ok(json) => match json["error"]["code"].as_str() {
                        Some(code) => format!("json:{code}"),
                        None => "json".to_owned(),
                    },
                    Err(_) if answer.is_empty() => "empty".to_owned(),
                    Err(_) => "text".to_owned(),
                };
                format!("{status} {kind}")
            }
        }
    }

    /// Sends probes until `model` gets `base` (None: no base header), at
    /// most 60 s: a ConfigMap change reaches each processor by its watch.
    async fn wait_for_base(&mut self, model: &str, base: Option<&str>) {
        let probe = Case::post(
            "probe",
            "/v1/completions",
            format!(r#"{{"model":"{model}","prompt":"probe"}}"#),
        );
        let want = match base {
            Some(base) => format!("base={base:?}"),
            None => "base=-".to_owned(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.processor.child.try_wait() {
                panic!(
                    "{} exited ({status}):\n{}",
                    self.processor.name,
                    self.processor.log_text()
                );
            }
            last = self.observe(&probe, "probe").await;
            if last.starts_with("200 ") && last.contains(&want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{}: {model} never got {want} (last: {last})\nprocessor log:\n{}\nenvoy log:\n{}",
            self.processor.name,
            self.processor.log_text(),
            self.envoy.log_text()
        );
    }
}

#[derive(Debug, Clone)]
struct Case {
    name: String,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Case {
    fn post(name: impl Into<String>, path: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            method: "POST",
            path,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// A body of `total` bytes with `model` before or after a long message.
fn padded(model: &str, total: usize, model_first: bool) -> String {
    let frame = if model_first {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":""}}]}}"#)
    } else {
        format!(r#"{{"messages":[{{"role":"user","content":""}}],"model":"{model}"}}"#)
    };
    let pad = "lorem ipsum ".repeat((total - frame.len()) / 12 + 1);
    let pad = &pad[..total - frame.len()];
    let body = if model_first {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"{pad}"}}]}}"#)
    } else {
        format!(r#"{{"messages":[{{"role":"user","content":"{pad}"}}],"model":"{model}"}}"#)
    };
    assert_eq!(body.len(), total);
    body
}

/// Every case but the ConfigMap changes, which the test runs in between.
fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    for (i, (path, body, _, _)) in support::reference_requests().into_iter().enumerate() {
        cases.push(Case::post(format!("guide call {i}"), path, body));
    }
    let chat = "/v1/chat/completions";
    let text = "/v1/completions";
    cases.extend([
        Case::post(
            "streaming chat",
            chat,
            r#"{"model":"ski-resorts","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        Case::post(
            "nested model ignored",
            chat,
            r#"{"metadata":{"model":"ski-resorts"},"messages":[{"role":"user","content":"hi","model":"x"}],"model":"food-review-1"}"#,
        ),
        Case::post(
            "nested model only",
            chat,
            r#"{"messages":[{"role":"user","content":"hi","model":"ski-resorts"}]}"#,
        ),
        Case::post("escaped key", text, r#"{"mod\u0065l":"ski-resorts","prompt":"x"}"#),
        Case::post("escaped value", text, r#"{"model":"movie\u002dcritique","prompt":"x"}"#),
        Case::post("escaped slash", text, r#"{"model":"deepseek\/vllm-deepseek-r1","prompt":"x"}"#),
        Case::post("non-ascii model", text, r#"{"model":"caf\u00e9","prompt":"x"}"#),
        Case::post("model with spaces", text, r#"{"model":" ski-resorts ","prompt":"x"}"#),
        Case::post("model first, 1 MiB", chat, padded("movie-critique", 1 << 20, true)),
        Case::post("model last, 1 MiB", chat, padded("food-review-1", 1 << 20, false)),
        Case::post("model first, 8 MiB", chat, padded("ski-resorts", 8 << 20, true)),
        Case::post("missing model", text, r#"{"prompt":"no model"}"#),
        Case::post("empty model", text, r#"{"model":"","prompt":"x"}"#),
        Case::post("model a number", text, r#"{"model":1,"prompt":"x"}"#),
        Case::post("model a fraction", text, r#"{"model":0.5,"prompt":"x"}"#),
        Case::post("model null", text, r#"{"model":null,"prompt":"x"}"#),
        Case::post("model true", text, r#"{"model":true,"prompt":"x"}"#),
        Case::post("model an array", text, r#"{"model":["ski-resorts"],"prompt":"x"}"#),
        Case::post("model an object", text, r#"{"model":{"name":"ski-resorts"},"prompt":"x"}"#),
        Case::post("not json", chat, "malformed json"),
        Case::post("top-level array", chat, r#"[{"model":"food-review-1"}]"#),
        Case::post("truncated", chat, r#"{"model":"food-review-1","messages":["#),
        Case::post("empty body", chat, ""),
        Case {
            name: "GET /v1/models".to_owned(),
            method: "GET",
            path: "/v1/models",
            headers: Vec::new(),
            body: Bytes::new(),
        },
        Case::post(
            "duplicate model",
            text,
            r#"{"model":"food-review-1","prompt":"x","model":"ski-resorts"}"#,
        ),
        Case::post("unknown model", text, r#"{"model":"foo","prompt":"x"}"#),
        Case::post("spoofed headers, no model", text, r#"{"prompt":"x"}"#)
            .with_header("x-gateway-model-name", "ski-resorts")
            .with_header("x-gateway-base-model-name", DEEPSEEK),
        Case::post("spoofed headers, with model", text, r#"{"model":"food-review-1","prompt":"x"}"#)
            .with_header("x-gateway-model-name", "ski-resorts")
            .with_header("x-gateway-base-model-name", DEEPSEEK),
    ]);
    cases
}

/// The table of intended differences: case → (upstream, bbr-extproc).
fn intended_differences() -> BTreeMap<String, (String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("UPSTREAM-DIFFERENCES.md");
    let text = std::fs::read_to_string(&path).expect("read UPSTREAM-DIFFERENCES.md");
    let code = |cell: &str| -> Vec<String> {
        cell.split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s.to_owned())
            .collect()
    };
    let mut table = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.len() < 4 || !cells[0].starts_with('`') {
            continue;
        }
        let (upstream, ours) = (code(cells[1]), code(cells[2]));
        assert!(
            upstream.len() == 1 && ours.len() == 1,
            "a row needs one outcome per side: {line}"
        );
        for name in code(cells[0]) {
            let previous = table.insert(name.clone(), (upstream[0].clone(), ours[0].clone()));
            assert!(previous.is_none(), "{name} is in the table twice");
        }
    }
    table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_bbr_and_bbr_extproc_differ_only_as_documented() {
    let Some(upstream_bbr) = go_tools::go_tool("bbr") else {
        return;
    };
    let standin = KubeStandin::start().await;
    standin.apply_adapters(NAMESPACE, "llama-adapters", LLAMA, &["food-review-1"]);
    standin.apply_adapters(
        NAMESPACE,
        "deepseek-adapters",
        DEEPSEEK,
        &["ski-resorts", "movie-critique"],
    );
    // Not labelled: neither may use it.
    standin.apply(
        NAMESPACE,
        "unrelated",
        &[],
        &[("baseModel", "unlabelled-base")],
    );

    let upstream = Processor::start("upstream-bbr", &upstream_bbr, &[], &standin);
    let ours = Processor::start(
        "bbr-extproc",
        Path::new(env!("CARGO_BIN_EXE_bbr-extproc")),
        &["--adapters-from=kubernetes", "--bind-address=127.0.0.1"],
        &standin,
    );
    let mut sides = [Side::start(upstream).await, Side::start(ours).await];
    for side in &mut sides {
        side.wait_for_base("food-review-1", Some(LLAMA)).await;
        side.wait_for_base("movie-critique", Some(DEEPSEEK)).await;
    }
    // The evidence that client-go (the upstream binary) and kube-rs speak
    // the protocol the stand-in serves: each listed and watched ConfigMaps.
    let requests = standin.requests();
    // client-go names the program in its User-Agent; kube-rs sends none.
    for (client, is_upstream) in [("the upstream binary", true), ("bbr-extproc", false)] {
        let by_client = |r: &&String| r.contains("ua=bbr/") == is_upstream;
        // client-go lists through a watch (`sendInitialEvents=true`, the
        // WatchList feature); kube-rs lists, then watches.
        let list = requests.iter().filter(by_client).any(|r| {
            r.contains("/configmaps?")
                && (!r.contains("watch=true") || r.contains("sendInitialEvents=true"))
        });
        let watch = requests
            .iter()
            .filter(by_client)
            .any(|r| r.contains("/configmaps?") && r.contains("watch=true"));
        assert!(
            list && watch,
            "{client}: list {list}, watch {watch}: {requests:#?}"
        );
    }

    let mut seen: Vec<(String, [String; 2])> = Vec::new();
    for (i, case) in corpus().iter().enumerate() {
        let tag = i.to_string();
        let upstream = sides[0].observe(case, &tag).await;
        let ours = sides[1].observe(case, &tag).await;
        seen.push((case.name.clone(), [upstream, ours]));
    }

    // A ConfigMap added while running: a new adapter of the Llama base.
    let added = Case::post(
        "ConfigMap added: its adapter",
        "/v1/completions",
        r#"{"model":"food-review-2","prompt":"x"}"#,
    );
    standin.apply_adapters(NAMESPACE, "extra-adapters", LLAMA, &["food-review-2"]);
    for side in &mut sides {
        side.wait_for_base("food-review-2", Some(LLAMA)).await;
    }
    let observed = [
        sides[0].observe(&added, "added").await,
        sides[1].observe(&added, "added").await,
    ];
    seen.push((added.name.clone(), observed));

    // ... and deleted. A later change both must see (the watch delivers in
    // order) shows that each processor has had the delete.
    let deleted = Case::post(
        "ConfigMap deleted: its adapter",
        "/v1/completions",
        r#"{"model":"food-review-2","prompt":"x"}"#,
    );
    assert!(standin.delete(NAMESPACE, "extra-adapters"));
    standin.apply_adapters(NAMESPACE, "marker-adapters", DEEPSEEK, &["marker-lora"]);
    for side in &mut sides {
        side.wait_for_base("marker-lora", Some(DEEPSEEK)).await;
    }
    let observed = [
        sides[0].observe(&deleted, "deleted").await,
        sides[1].observe(&deleted, "deleted").await,
    ];
    seen.push((deleted.name.clone(), observed));

    // bbr-extproc counted each update of the ConfigMaps as a reload of the
    // adapter map: the first list, the add, the delete and the marker.
    let request = Request::get(format!(
        "http://127.0.0.1:{}/metrics",
        sides[1].processor.metrics
    ))
    .body(empty())
    .expect("request");
    let scraped = send(&http1_client(), request).await;
    assert_eq!(scraped.status, 200);
    let text = String::from_utf8_lossy(&scraped.body).into_owned();
    let sample = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    let applied = sample(r#"bbr_config_reloads_total{config="adapters",result="success"}"#);
    assert!(applied.is_some_and(|n| n >= 4), "{applied:?}\n{text}");
    assert_eq!(
        sample(r#"bbr_config_reloads_total{config="adapters",result="failure"}"#),
        Some(0),
        "{text}"
    );
    assert_eq!(
        sample(r#"bbr_config_last_reload_successful{config="adapters"}"#),
        Some(1),
        "{text}"
    );

    let table = intended_differences();
    let mut failures = Vec::new();
    let mut report = String::new();
    for (name, [upstream, ours]) in &seen {
        report.push_str(&format!("| `{name}` | `{upstream}` | `{ours}` |\n"));
        match (upstream == ours, table.get(name)) {
            (true, None) => {}
            (true, Some(_)) => failures.push(format!(
                "{name}: listed as a difference, but both give `{ours}`"
            )),
            (false, None) => failures.push(format!(
                "{name}: undocumented difference: upstream `{upstream}`, bbr-extproc `{ours}`"
            )),
            (false, Some((want_upstream, want_ours))) => {
                if (want_upstream, want_ours) != (upstream, ours) {
                    failures.push(format!(
                        "{name}: the table says upstream `{want_upstream}` / bbr-extproc `{want_ours}`, \
                         seen `{upstream}` / `{ours}`"
                    ));
                }
            }
        }
    }
    let names: BTreeSet<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    for name in table.keys() {
        if !names.contains(name.as_str()) {
            failures.push(format!(
                "{name}: a table row for a case the corpus does not have"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\nall outcomes (case | upstream | bbr-extproc):\n{report}",
        failures.join("\n")
    );
    eprintln!("case | upstream | bbr-extproc\n{report}");
}
