//! One table, three adapters: every row of the README's "What a request
//! gets" table is sent through the tower layer (in process), the example
//! gateway (real sockets) and Envoy + bbr-extproc (a real Envoy), and all
//! three must answer with the same status, `content-type` and body bytes —
//! which must be the core contract's own answer — or forward the request
//! with the same routing headers and the same body bytes.

mod support;

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bbr_core::Limits;
use bbr_core::contract::{self, ClientHeaders, MissingModel, Refusal};
use bbr_extproc::Tls;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use support::{Envoy, ExtProc, Upstreams};
use tower::{Layer, ServiceExt};

const MAX_SCAN: u64 = 4096;
const MAX_BODY: u64 = 8192;

fn limits() -> Limits {
    Limits::new()
        .with_max_scan_bytes(MAX_SCAN)
        .with_max_body_bytes(MAX_BODY)
}

/// What a row must get.
#[derive(Debug, Clone)]
enum Expect {
    /// Forwarded; the upstream sees this routing header (or none) and the
    /// body unchanged.
    Forward(Option<&'static str>),
    /// Refused with this answer.
    Refuse(Refusal),
}

#[derive(Debug, Clone)]
struct Row {
    name: &'static str,
    /// The adapters' policies: default, or refusing (missing model,
    /// client-sent routing headers).
    refusing: bool,
    get: bool,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    expect: Expect,
}

fn extract_error(body: &[u8]) -> Refusal {
    let error = bbr_core::extract_model(&Bytes::copy_from_slice(body), &limits())
        .expect_err("the row's body breaks the contract");
    Refusal::Extract(error)
}

fn rows() -> Vec<Row> {
    let post = |name, body: &[u8], expect| Row {
        name,
        refusing: false,
        get: false,
        headers: Vec::new(),
        body: body.to_vec(),
        expect,
    };
    let refused = |name, body: &[u8]| post(name, body, Expect::Refuse(extract_error(body)));
    let chat = br#"{"messages":[{"role":"user","content":"hi, \"model\": \u00e9"}],"model":"food-review-1","stream":false}"#;
    let deep = {
        let mut body = br#"{"a":"#.to_vec();
        body.extend(std::iter::repeat_n(b'[', 200));
        body
    };
    let long_model = format!(r#"{{"model":"{}"}}"#, "m".repeat(257));
    let scan = format!(r#"{{"messages":"{}","model":"m"}}"#, "x".repeat(5000));
    let body_over = format!(r#"{{"model":"m","pad":"{}"}}"#, "x".repeat(9000));
    let mut rows = vec![
        post("model found", chat, Expect::Forward(Some("food-review-1"))),
        post(
            "model with spaces is routed trimmed",
            br#"{"model":"  food-review-1 "}"#,
            Expect::Forward(Some("food-review-1")),
        ),
        post(
            "body valid, no model (forward)",
            br#"{"prompt":"hello"}"#,
            Expect::Forward(None),
        ),
        refused("not JSON", b"hello"),
        refused("truncated", br#"{"model":"food-review-1","messages":["#),
        refused("top level not an object", br#"["model"]"#),
        refused("nested deeper than the limit", &deep),
        refused("model not a string", br#"{"model":42}"#),
        refused("model empty", br#"{"model":""}"#),
        refused("model with a control character", br#"{"model":"a\u0001b"}"#),
        refused("model too long", long_model.as_bytes()),
        refused(
            "duplicate model",
            br#"{"model":"food-review-1","model":"ski-resorts"}"#,
        ),
        refused("no decision within the scan limit", scan.as_bytes()),
        refused("body over the body limit", body_over.as_bytes()),
    ];
    rows.push(Row {
        name: "GET without a body",
        get: true,
        body: Vec::new(),
        ..post("", b"", Expect::Forward(None))
    });
    rows.push(Row {
        name: "client-sent routing header (strip)",
        headers: vec![(contract::MODEL_HEADER, "movie-critique")],
        ..post("", chat, Expect::Forward(Some("food-review-1")))
    });
    rows.push(Row {
        name: "body valid, no model (reject)",
        refusing: true,
        ..post(
            "",
            br#"{"prompt":"hello"}"#,
            Expect::Refuse(Refusal::MissingModel),
        )
    });
    rows.push(Row {
        name: "client-sent routing header (reject)",
        refusing: true,
        headers: vec![(
            "X-Gateway-Base-Model-Name",
            "meta-llama/Llama-3.1-8B-Instruct",
        )],
        ..post(
            "",
            chat,
            Expect::Refuse(Refusal::RoutingHeader(contract::BASE_MODEL_HEADER)),
        )
    });
    rows
}

/// What one adapter did with one row.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The adapter answered itself.
    Answered {
        status: u16,
        content_type: Option<String>,
        body: Bytes,
    },
    /// The upstream got the request.
    Forwarded {
        model: Option<String>,
        base_model: Option<String>,
        body: Bytes,
    },
}

fn policies(refusing: bool) -> (MissingModel, ClientHeaders) {
    if refusing {
        (MissingModel::Reject, ClientHeaders::Reject)
    } else {
        (MissingModel::Forward, ClientHeaders::Strip)
    }
}

fn request(row: &Row, uri: &str) -> Request<Full<Bytes>> {
    let mut builder = if row.get {
        Request::get(uri)
    } else {
        Request::post(uri).header("content-type", "application/json")
    };
    for (name, value) in &row.headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(row.body.clone())))
        .expect("request")
}

async fn answered(
    response: Response<impl hyper::body::Body<Data = Bytes, Error: std::fmt::Debug>>,
) -> Seen {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Seen::Answered {
        status,
        content_type,
        body,
    }
}

fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_owned())
}

async fn through_tower(row: &Row) -> Seen {
    let (missing_model, client_headers) = policies(row.refusing);
    let forwarded: Arc<Mutex<Option<Seen>>> = Arc::default();
    let record = forwarded.clone();
    let inner = tower::service_fn(
        move |request: Request<bbr_tower::ReplayBody<Full<Bytes>>>| {
            let record = record.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.expect("forwarded body").to_bytes();
                *record.lock().unwrap() = Some(Seen::Forwarded {
                    model: header(&parts.headers, contract::MODEL_HEADER),
                    base_model: header(&parts.headers, contract::BASE_MODEL_HEADER),
                    body,
                });
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        },
    );
    let service = bbr_tower::ModelRoutingLayer::new()
        .limits(limits())
        .missing_model(missing_model)
        .client_headers(client_headers)
        .layer(inner);
    let response = service
        .oneshot(request(row, "/v1/chat/completions"))
        .await
        .expect("the layer answers");
    if response.status() == 200 {
        let seen = forwarded.lock().unwrap().take();
        return seen.expect("a 200 comes from the inner service");
    }
    answered(response).await
}

fn forwarded_by(upstreams: &Upstreams, row: &Row) -> Seen {
    let mut received = upstreams.take();
    assert_eq!(
        received.len(),
        1,
        "{}: one request reaches the upstream",
        row.name
    );
    let received = received.remove(0);
    assert_eq!(received.body_len, row.body.len(), "{}", row.name);
    assert_eq!(
        received.body_sha256,
        support::sha256(&row.body),
        "{}: the body reaches the upstream unchanged",
        row.name
    );
    Seen::Forwarded {
        model: received.header(contract::MODEL_HEADER).map(str::to_owned),
        base_model: received
            .header(contract::BASE_MODEL_HEADER)
            .map(str::to_owned),
        body: Bytes::from(row.body.clone()),
    }
}

async fn through_http(url: &str, upstreams: &Upstreams, row: &Row) -> Seen {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let response = client
        .request(request(row, url))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", row.name));
    let status = response.status().as_u16();
    let seen = answered(response).await;
    if upstreams.received.lock().unwrap().is_empty() {
        return seen;
    }
    assert_eq!(
        status, 200,
        "{}: the upstream's answer reaches the client",
        row.name
    );
    forwarded_by(upstreams, row)
}

async fn start_gateway(upstreams: &Upstreams, refusing: bool) -> bbr_axum_example::RunningGateway {
    let (missing_model, client_headers) = policies(refusing);
    let yaml = format!(
        "pools:\n  - name: recording\n    endpoints: [\"{}\"]\nroutes:\n  - pool: recording\n    matches:\n      - path_prefix: /\nbbr:\n  max_scan_bytes: {MAX_SCAN}B\n  max_body_bytes: {MAX_BODY}B\n  missing_model: {}\n  client_headers: {}\n",
        upstreams.default,
        missing_model.as_str(),
        client_headers.as_str(),
    );
    let config = bbr_axum_example::Config::from_yaml_str(&yaml, Path::new("."))
        .expect("the test's gateway config is valid");
    bbr_axum_example::Gateway::new(config)
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("gateway starts")
}

async fn start_extproc(refusing: bool) -> ExtProc {
    let (missing_model, client_headers) = policies(refusing);
    let mut settings = bbr_extproc::Settings::new(limits());
    settings.missing_model = missing_model;
    settings.client_headers = client_headers;
    ExtProc::start(settings, Tls::Plaintext).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_gets_the_same_answer_from_every_adapter() {
    let upstreams = Upstreams::start().await;
    let mut gateways = Vec::new();
    let mut envoys = Vec::new();
    let mut extprocs = Vec::new();
    for refusing in [false, true] {
        gateways.push(start_gateway(&upstreams, refusing).await);
        let extproc = start_extproc(refusing).await;
        envoys.push(Envoy::start("bbr-full-duplex.yaml", Some(extproc.grpc), &upstreams).await);
        extprocs.push(extproc);
    }
    let mut checked = 0;
    for row in rows() {
        let config = usize::from(row.refusing);
        let by_tower = through_tower(&row).await;
        let gateway_url = format!("http://{}/v1/chat/completions", gateways[config].addr);
        let by_gateway = through_http(&gateway_url, &upstreams, &row).await;
        let by_envoy = through_http(
            &envoys[config].url("/v1/chat/completions"),
            &upstreams,
            &row,
        )
        .await;

        let expected = match &row.expect {
            Expect::Refuse(refusal) => Seen::Answered {
                status: refusal.status(),
                content_type: Some(contract::JSON_CONTENT_TYPE.to_owned()),
                body: Bytes::from(refusal.json_body()),
            },
            Expect::Forward(model) => Seen::Forwarded {
                model: model.map(str::to_owned),
                base_model: None,
                body: Bytes::from(row.body.clone()),
            },
        };
        assert_eq!(by_tower, expected, "{}: tower layer", row.name);
        assert_eq!(by_gateway, expected, "{}: example gateway", row.name);
        assert_eq!(by_envoy, expected, "{}: Envoy + bbr-extproc", row.name);
        checked += 1;
    }
    assert_eq!(checked, rows().len());
    // Sanity: the table covers every class of the contract.
    let codes: std::collections::BTreeSet<&str> = rows()
        .iter()
        .filter_map(|row| match &row.expect {
            Expect::Refuse(refusal) => Some(refusal.code()),
            Expect::Forward(_) => None,
        })
        .collect();
    for code in [
        "invalid_json",
        "invalid_model",
        "request_too_large",
        "missing_model",
        "routing_header_not_allowed",
    ] {
        assert!(codes.contains(code), "the table has a {code} row");
    }
}
