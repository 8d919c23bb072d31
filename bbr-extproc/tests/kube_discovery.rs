//! Adapter ConfigMaps discovered through the Kubernetes API by kube-rs
//! (`bbr_adapters::kube`), against the stand-in API server on loopback:
//! added, changed, deleted, relabelled, invalid and conflicting ConfigMaps
//! take effect live; the scope follows the namespace.
#![cfg(feature = "kube")]

mod kube_standin;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bbr_adapters::kube::KubeDiscovery;
use bbr_adapters::{AdapterStore, ReloadEvent};
use kube_standin::{KubeStandin, MANAGED_LABEL};

const LLAMA: &str = "meta-llama/Llama-3.1-8B-Instruct";
const DEEPSEEK: &str = "deepseek/vllm-deepseek-r1";

async fn client(standin: &KubeStandin) -> kube::Client {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(standin.kubeconfig()).expect("read the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig");
    kube::Client::try_from(config).expect("client")
}

/// Waits (bounded) until `check` holds; the store changes when the watch
/// event arrives, which the test cannot observe otherwise.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 10 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn base(store: &AdapterStore, model: &str) -> Option<String> {
    store.lookup(model).map(|b| b.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_maps_added_changed_deleted_and_conflicting_take_effect_live() {
    let standin = KubeStandin::start().await;
    standin.apply_adapters("default", "llama", LLAMA, &["food-review-1"]);
    standin.apply_adapters(
        "models",
        "deepseek",
        DEEPSEEK,
        &["ski-resorts", "movie-critique"],
    );
    // Not managed: no label, or the label not "true".
    standin.apply("default", "plain", &[], &[("baseModel", "plain-base")]);
    standin.apply(
        "default",
        "off",
        &[(MANAGED_LABEL, "false")],
        &[("baseModel", "off-base")],
    );

    // Each update as a reload counter sees it: `None` applied, `Some`
    // the refusal's message.
    let events: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let recorded = events.clone();
    let discovery = KubeDiscovery::start_with_events(client(&standin).await, None, move |event| {
        let refused = match event {
            ReloadEvent::Refused(error) => Some(error.to_string()),
            _ => None,
        };
        recorded.lock().unwrap().push(refused);
    });
    let last_event = || events.lock().unwrap().last().cloned();
    let event_count = || events.lock().unwrap().len();
    tokio::time::timeout(Duration::from_secs(10), discovery.synced())
        .await
        .expect("the first list within 10 s");
    let store = discovery.store();
    eventually("the first list reported", || event_count() >= 1).await;
    assert_eq!(
        events.lock().unwrap()[0],
        None,
        "the first list skips nothing"
    );
    assert_eq!(base(&store, "food-review-1").as_deref(), Some(LLAMA));
    assert_eq!(base(&store, "movie-critique").as_deref(), Some(DEEPSEEK));
    assert_eq!(base(&store, DEEPSEEK).as_deref(), Some(DEEPSEEK));
    assert_eq!(base(&store, "plain-base"), None);
    assert_eq!(base(&store, "off-base"), None);
    let requests = standin.requests();
    let selector = "labelSelector=inference.networking.k8s.io%2Fbbr-managed%3Dtrue";
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/configmaps?") && r.contains(selector)),
        "{requests:?}"
    );

    // Changed: a new adapter.
    let before = event_count();
    standin.apply_adapters(
        "default",
        "llama",
        LLAMA,
        &["food-review-1", "food-review-2"],
    );
    eventually("the added adapter", || {
        base(&store, "food-review-2").as_deref() == Some(LLAMA)
    })
    .await;
    assert!(
        standin
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /api/v1/configmaps?") && r.contains("watch=true")),
        "updates came through a watch"
    );
    eventually("the change reported", || event_count() > before).await;
    assert_eq!(last_event(), Some(None), "the change applied");

    // Conflicting: ski-resorts is already DeepSeek's. Skipped, logged, counted.
    let failed_before = store.failed_reload_count();
    standin.apply_adapters("default", "conflict", LLAMA, &["ski-resorts", "new-lora"]);
    eventually("the conflicting ConfigMap skipped", || {
        discovery
            .skipped()
            .iter()
            .any(|s| s.config_map == "default/conflict")
    })
    .await;
    assert_eq!(base(&store, "ski-resorts").as_deref(), Some(DEEPSEEK));
    assert_eq!(
        base(&store, "new-lora"),
        None,
        "nothing of a skipped ConfigMap applies"
    );
    assert_eq!(base(&store, "food-review-2").as_deref(), Some(LLAMA));
    let error = store
        .last_error()
        .expect("the skip is reported")
        .to_string();
    assert!(
        error.contains("ski-resorts") && error.contains("models/deepseek"),
        "{error}"
    );
    assert_eq!(store.failed_reload_count(), failed_before + 1);
    eventually(
        "the skip reported as a refused reload",
        || matches!(last_event(), Some(Some(error)) if error.contains("ski-resorts")),
    )
    .await;

    // Deleted: DeepSeek's ConfigMap goes; the skipped one now applies.
    assert!(standin.delete("models", "deepseek"));
    eventually("the deleted ConfigMap gone", || {
        base(&store, DEEPSEEK).is_none()
    })
    .await;
    assert_eq!(base(&store, "movie-critique"), None);
    assert_eq!(base(&store, "ski-resorts").as_deref(), Some(LLAMA));
    assert_eq!(base(&store, "new-lora").as_deref(), Some(LLAMA));
    assert!(discovery.skipped().is_empty());
    assert!(store.last_error().is_none());
    eventually("the delete reported as applied", || {
        last_event() == Some(None)
    })
    .await;

    // Label removed: the API reports it gone for this selector.
    standin.apply(
        "default",
        "llama",
        &[],
        &[("baseModel", LLAMA), ("adapters", "- food-review-1\n")],
    );
    eventually("the unlabelled ConfigMap gone", || {
        base(&store, "food-review-1").is_none()
    })
    .await;
    assert_eq!(base(&store, "new-lora").as_deref(), Some(LLAMA));

    // Invalid: skipped, the rest unchanged.
    standin.apply(
        "default",
        "broken",
        &[(MANAGED_LABEL, "true")],
        &[("adapters", "- orphan\n")],
    );
    eventually("the invalid ConfigMap skipped", || {
        discovery
            .skipped()
            .iter()
            .any(|s| s.config_map == "default/broken")
    })
    .await;
    assert_eq!(base(&store, "orphan"), None);
    assert_eq!(base(&store, "ski-resorts").as_deref(), Some(LLAMA));
    let error = store.last_error().expect("reported").to_string();
    assert!(
        error.contains("baseModel") && error.contains("default/broken"),
        "{error}"
    );
    eventually(
        "the invalid ConfigMap reported as a refused reload",
        || matches!(last_event(), Some(Some(error)) if error.contains("default/broken")),
    )
    .await;
    let refused = events.lock().unwrap().iter().flatten().count();
    assert_eq!(refused, 2, "one refusal per newly skipped ConfigMap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_limits_what_is_followed() {
    let standin = KubeStandin::start().await;
    standin.apply_adapters("team-a", "llama", LLAMA, &["food-review-1"]);
    standin.apply_adapters("team-b", "deepseek", DEEPSEEK, &["ski-resorts"]);
    let discovery = KubeDiscovery::start(client(&standin).await, Some("team-a"));
    tokio::time::timeout(Duration::from_secs(10), discovery.synced())
        .await
        .expect("synced");
    let store = discovery.store();
    assert_eq!(base(&store, "food-review-1").as_deref(), Some(LLAMA));
    assert_eq!(base(&store, "ski-resorts"), None);

    // Live in the namespace; changes elsewhere are not seen.
    standin.apply_adapters("team-b", "more", DEEPSEEK, &["movie-critique"]);
    standin.apply_adapters("team-a", "deepseek", DEEPSEEK, &["movie-critique"]);
    eventually("the namespaced add", || {
        base(&store, "movie-critique").as_deref() == Some(DEEPSEEK)
    })
    .await;
    assert_eq!(base(&store, "ski-resorts"), None);
    let requests = standin.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.contains("configmaps"))
            .all(|r| r.starts_with("GET /api/v1/namespaces/team-a/configmaps?")),
        "{requests:?}"
    );
}
