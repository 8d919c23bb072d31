//! A stand-in for the Kubernetes API server. TEST CODE ONLY: it is never
//! shipped, it is not a Kubernetes implementation, and it serves just enough
//! of the API, over plain HTTP on loopback, for two real clients to start and
//! follow ConfigMaps: client-go (controller-runtime, in the upstream BBR
//! binary) and kube-rs (bbr-adapters' `kube` feature).
//!
//! What it serves (everything is JSON; any other request is a 404 `Status`,
//! and every request is recorded, see [`KubeStandin::requests`]):
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /version` | a `version.Info` (v1.33.0) |
//! | `GET /api` | `APIVersions` with `v1` |
//! | `GET /api/v1` | `APIResourceList`: `configmaps` (namespaced; get, list, watch), `namespaces`, `events` |
//! | `GET /apis` | an empty `APIGroupList` (plain JSON, so clients that ask for aggregated discovery fall back to it) |
//! | `GET /api/v1/configmaps`, `GET /api/v1/namespaces/NS/configmaps` | a `ConfigMapList` with `metadata.resourceVersion`; `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated) filters; everything in one page |
//! | the same with `watch=true` (or `1`) | a chunked stream of watch events, one JSON object a line: `ADDED`, `MODIFIED`, `DELETED` (a change that makes an object enter or leave the label selector is `ADDED` or `DELETED`, as the real API does); from `resourceVersion` N: the events after N; without it (or `0`): the current objects as `ADDED`; `sendInitialEvents=true`: the current objects then a `BOOKMARK` annotated `k8s.io/initial-events-end`; `allowWatchBookmarks=true`: a `BOOKMARK` once the replay is sent; `timeoutSeconds` ends the stream |
//! | `GET /api/v1/namespaces/NS/configmaps/NAME` | the object, or a 404 `Status` |
//! | `POST /api/v1/namespaces/NS/events`, `POST /apis/events.k8s.io/v1/namespaces/NS/events` | 201 with the posted object (events are dropped) |
//!
//! Objects change only through the test's own calls ([`KubeStandin::apply`],
//! [`KubeStandin::delete`]); every change gets the next resource version.
//! The kubeconfig ([`KubeStandin::kubeconfig`]) points at it with no
//! credentials.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

type Body = BoxBody<Bytes, Infallible>;

/// The label the upstream base-model plugin selects.
pub const MANAGED_LABEL: &str = "inference.networking.k8s.io/bbr-managed";

/// Longest a watch stays open when the client names no `timeoutSeconds`.
const DEFAULT_WATCH_SECONDS: u64 = 600;

/// A change, as watchers see it.
#[derive(Debug, Clone)]
struct Change {
    resource_version: u64,
    kind: ChangeKind,
    /// The object after the change (for a delete: the last state, with the
    /// delete's resource version).
    object: Value,
    /// The object before the change (`None` for a create).
    old: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

#[derive(Debug)]
struct State {
    resource_version: u64,
    next_uid: u64,
    /// (namespace, name) → the ConfigMap as served.
    objects: BTreeMap<(String, String), Value>,
    /// Every change since the start, for watches from a resource version.
    history: Vec<Change>,
    changes: broadcast::Sender<Change>,
}

/// The running stand-in; stops serving when dropped.
pub struct KubeStandin {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    requests: Arc<Mutex<Vec<String>>>,
    kubeconfig: PathBuf,
    stop: watch::Sender<bool>,
}

impl KubeStandin {
    /// Binds 127.0.0.1 on a free port, writes the kubeconfig and serves.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in API");
        let addr = listener.local_addr().expect("addr");
        let (changes, _) = broadcast::channel(1024);
        let state = Arc::new(Mutex::new(State {
            resource_version: 100,
            next_uid: 1,
            objects: BTreeMap::new(),
            history: Vec::new(),
            changes,
        }));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = watch::channel(false);
        let kubeconfig = std::env::temp_dir().join(format!(
            "bbr-kube-standin-{}-{}.yaml",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(&kubeconfig, kubeconfig_text(addr)).expect("write kubeconfig");
        tokio::spawn(serve(listener, state.clone(), requests.clone(), stopped));
        Self {
            addr,
            state,
            requests,
            kubeconfig,
            stop,
        }
    }

    /// A kubeconfig file whose current context points at the stand-in.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Every request so far, as `METHOD /path?query ua=USER-AGENT`, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.state.lock().expect("lock").resource_version
    }

    /// Creates or replaces a ConfigMap (labels and data replaced whole).
    /// Returns its new resource version.
    pub fn apply(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        data: &[(&str, &str)],
    ) -> u64 {
        let mut state = self.state.lock().expect("lock");
        state.resource_version += 1;
        let rv = state.resource_version;
        let key = (namespace.to_owned(), name.to_owned());
        let old = state.objects.get(&key).cloned();
        let (uid, created) = match &old {
            Some(old) => (
                old["metadata"]["uid"].clone(),
                old["metadata"]["creationTimestamp"].clone(),
            ),
            None => {
                let uid = state.next_uid;
                state.next_uid += 1;
                // Creation order is visible to clients through the timestamp
                // (seconds, as the real API gives it; one per object here).
                let created = format!("2026-01-01T00:{:02}:{:02}Z", (uid / 60) % 60, uid % 60);
                (
                    json!(format!("00000000-0000-0000-0000-{uid:012}")),
                    json!(created),
                )
            }
        };
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let object = json!({
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uid,
                "resourceVersion": rv.to_string(),
                "creationTimestamp": created,
                "labels": labels,
            },
            "data": data,
        });
        state.objects.insert(key, object.clone());
        let kind = if old.is_some() {
            ChangeKind::Updated
        } else {
            ChangeKind::Created
        };
        record(
            &mut state,
            Change {
                resource_version: rv,
                kind,
                object,
                old,
            },
        );
        rv
    }

    /// A labelled adapter ConfigMap in the upstream format.
    pub fn apply_adapters(
        &self,
        namespace: &str,
        name: &str,
        base_model: &str,
        adapters: &[&str],
    ) -> u64 {
        let list: String = adapters.iter().map(|a| format!("- {a}\n")).collect();
        self.apply(
            namespace,
            name,
            &[(MANAGED_LABEL, "true")],
            &[("baseModel", base_model), ("adapters", &list)],
        )
    }

    /// Deletes a ConfigMap; false when there was none.
    pub fn delete(&self, namespace: &str, name: &str) -> bool {
        let mut state = self.state.lock().expect("lock");
        let Some(mut object) = state
            .objects
            .remove(&(namespace.to_owned(), name.to_owned()))
        else {
            return false;
        };
        state.resource_version += 1;
        let rv = state.resource_version;
        let old = object.clone();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        record(
            &mut state,
            Change {
                resource_version: rv,
                kind: ChangeKind::Deleted,
                object,
                old: Some(old),
            },
        );
        true
    }

    /// Waits until some request matches `predicate` (e.g. a watch has been
    /// opened), up to `timeout`. True when one did.
    pub async fn wait_for_request(
        &self,
        predicate: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.requests().iter().any(|r| predicate(r)) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for KubeStandin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

fn record(state: &mut State, change: Change) {
    state.history.push(change.clone());
    // No watcher is not an error.
    let _ = state.changes.send(change);
}

fn kubeconfig_text(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster:
    server: http://{addr}
users:
- name: standin
  user: {{}}
contexts:
- name: standin
  context:
    cluster: standin
    user: standin
    namespace: default
current-context: standin
"
    )
}

async fn serve(
    listener: TcpListener,
    state: Arc<Mutex<State>>,
    requests: Arc<Mutex<Vec<String>>>,
    stopped: watch::Receiver<bool>,
) {
    loop {
        let mut stop = stopped.clone();
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((socket, _)) = accepted else { continue };
        let state = state.clone();
        let requests = requests.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |request: Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    let requests = requests.clone();
                    let stopped = stopped.clone();
                    async move { Ok::<_, Infallible>(handle(request, &state, &requests, stopped).await) }
                },
            );
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

async fn handle(
    request: Request<hyper::body::Incoming>,
    state: &Arc<Mutex<State>>,
    requests: &Arc<Mutex<Vec<String>>>,
    stopped: watch::Receiver<bool>,
) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let agent = request
        .headers()
        .get(hyper::header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    requests.lock().expect("lock").push(if query.is_empty() {
        format!("{method} {path} ua={agent}")
    } else {
        format!("{method} {path}?{query} ua={agent}")
    });
    let params = parse_query(&query);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["version"]) => ok(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.26", "compiler": "gc",
            "platform": "linux/amd64",
        })),
        (&Method::GET, ["api"]) => ok(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        })),
        (&Method::GET, ["apis"]) => {
            ok(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))
        }
        (&Method::GET, ["api", "v1"]) => ok(json!({
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [
                {"name": "configmaps", "singularName": "configmap", "namespaced": true,
                 "kind": "ConfigMap", "verbs": ["get", "list", "watch"], "shortNames": ["cm"]},
                {"name": "namespaces", "singularName": "namespace", "namespaced": false,
                 "kind": "Namespace", "verbs": ["get", "list"]},
                {"name": "events", "singularName": "event", "namespaced": true,
                 "kind": "Event", "verbs": ["create", "patch"]},
            ],
        })),
        (&Method::GET, ["api", "v1", "configmaps"]) => collection(state, None, &params, stopped),
        (&Method::GET, ["api", "v1", "namespaces", namespace, "configmaps"]) => {
            collection(state, Some(namespace), &params, stopped)
        }
        (&Method::GET, ["api", "v1", "namespaces", namespace, "configmaps", name]) => {
            let object = state
                .lock()
                .expect("lock")
                .objects
                .get(&((*namespace).to_owned(), (*name).to_owned()))
                .cloned();
            match object {
                Some(object) => ok(object),
                None => not_found(&format!("configmaps \"{name}\" not found")),
            }
        }
        (&Method::POST, ["api", "v1", "namespaces", _, "events"])
        | (&Method::POST, ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
            let body = request
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let mut response = Response::new(full(body));
            *response.status_mut() = StatusCode::CREATED;
            json_type(response)
        }
        _ => not_found(&format!(
            "the server could not find the requested resource ({method} {path})"
        )),
    }
}

fn collection(
    state: &Arc<Mutex<State>>,
    namespace: Option<&str>,
    params: &BTreeMap<String, String>,
    stopped: watch::Receiver<bool>,
) -> Response<Body> {
    let selector = match params.get("labelSelector").map(|s| Selector::parse(s)) {
        None => Selector::default(),
        Some(Ok(selector)) => selector,
        Some(Err(text)) => return status(StatusCode::BAD_REQUEST, "BadRequest", &text),
    };
    let filter = Filter {
        namespace: namespace.map(str::to_owned),
        selector,
    };
    let watching = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    if !watching {
        let state = state.lock().expect("lock");
        let items: Vec<Value> = state
            .objects
            .values()
            .filter(|o| filter.matches(o))
            .map(|o| {
                let mut item = o.clone();
                // The real API leaves the envelope off list items.
                if let Some(map) = item.as_object_mut() {
                    map.remove("kind");
                    map.remove("apiVersion");
                }
                item
            })
            .collect();
        return ok(json!({
            "kind": "ConfigMapList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": state.resource_version.to_string()},
            "items": items,
        }));
    }
    let seconds = params
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_WATCH_SECONDS);
    let initial_events = params.get("sendInitialEvents").map(String::as_str) == Some("true");
    let bookmarks = params.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let from: Option<u64> = params
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty())
        .and_then(|rv| rv.parse().ok());
    // Subscribe and read the replay under one lock, so no change falls between.
    let (replay, mut live, mut sent_rv) = {
        let state = state.lock().expect("lock");
        let live = state.changes.subscribe();
        let mut replay = Vec::new();
        match from {
            Some(rv) if rv != 0 && !initial_events => {
                for change in state.history.iter().filter(|c| c.resource_version > rv) {
                    if let Some(event) = filter.event(change) {
                        replay.push(event);
                    }
                }
            }
            _ => {
                for object in state.objects.values().filter(|o| filter.matches(o)) {
                    replay.push(json!({"type": "ADDED", "object": object}));
                }
            }
        }
        if initial_events || bookmarks {
            let mut bookmark = json!({
                "type": "BOOKMARK",
                "object": {"kind": "ConfigMap", "apiVersion": "v1",
                           "metadata": {"resourceVersion": state.resource_version.to_string()}},
            });
            if initial_events {
                bookmark["object"]["metadata"]["annotations"] =
                    json!({"k8s.io/initial-events-end": "true"});
            }
            replay.push(bookmark);
        }
        (replay, live, state.resource_version)
    };
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    tokio::spawn(async move {
        let mut stopped = stopped;
        for event in replay {
            if tx.send(Ok(line(&event))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(seconds));
        tokio::pin!(deadline);
        loop {
            let change = tokio::select! {
                change = live.recv() => change,
                _ = &mut deadline => return,
                _ = stopped.wait_for(|s| *s) => return,
                _ = tx.closed() => return,
            };
            let change = match change {
                Ok(change) => change,
                // A watcher this far behind is closed, as the real API does.
                Err(_) => return,
            };
            if change.resource_version <= sent_rv {
                continue;
            }
            sent_rv = change.resource_version;
            if let Some(event) = filter.event(&change)
                && tx.send(Ok(line(&event))).await.is_err()
            {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    json_type(Response::new(BodyExt::boxed(StreamBody::new(stream))))
}

fn line(event: &Value) -> Frame<Bytes> {
    let mut text = event.to_string().into_bytes();
    text.push(b'\n');
    Frame::data(Bytes::from(text))
}

#[derive(Debug, Clone)]
struct Filter {
    namespace: Option<String>,
    selector: Selector,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        if let Some(namespace) = &self.namespace
            && object["metadata"]["namespace"].as_str() != Some(namespace)
        {
            return false;
        }
        self.selector.matches(&object["metadata"]["labels"])
    }

    /// The event this watcher sees for `change`, if any.
    fn event(&self, change: &Change) -> Option<Value> {
        let now = change.kind != ChangeKind::Deleted && self.matches(&change.object);
        let before = change.old.as_ref().is_some_and(|o| self.matches(o));
        let kind = match (change.kind, before, now) {
            (ChangeKind::Deleted, true, _) => "DELETED",
            (ChangeKind::Deleted, false, _) => return None,
            (_, false, true) => "ADDED",
            (_, true, true) => "MODIFIED",
            // Left the selector: gone for this watcher.
            (_, true, false) => "DELETED",
            (_, false, false) => return None,
        };
        Some(json!({"type": kind, "object": change.object}))
    }
}

/// Equality-based label selectors.
#[derive(Debug, Clone, Default)]
struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

impl Selector {
    fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let requirement = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().to_owned())
            } else if part.contains(' ') || part.contains('(') {
                return Err(format!(
                    "unsupported label selector {text:?} (stand-in: equality only)"
                ));
            } else {
                Requirement::Exists(part.to_owned())
            };
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    fn matches(&self, labels: &Value) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels[k].as_str() == Some(v),
            Requirement::NotEquals(k, v) => labels[k].as_str() != Some(v),
            Requirement::Exists(k) => labels.get(k).is_some(),
            Requirement::NotExists(k) => labels.get(k).is_none(),
        })
    }
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_type(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn ok(value: Value) -> Response<Body> {
    json_type(Response::new(full(value.to_string())))
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let mut response = ok(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    }));
    *response.status_mut() = code;
    response
}

fn not_found(message: &str) -> Response<Body> {
    status(StatusCode::NOT_FOUND, "NotFound", message)
}
