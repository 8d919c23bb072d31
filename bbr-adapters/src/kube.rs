//! Adapter ConfigMaps discovered through the Kubernetes API (feature `kube`).
//!
//! Like the upstream base-model plugin, [`KubeDiscovery`] follows the
//! ConfigMaps labelled [`MANAGED_LABEL`]` = "true"` in one namespace (the
//! `NAMESPACE` environment variable, as the upstream chart sets it) or in all
//! namespaces, with a list + watch (kube-rs's `watcher`, which re-lists after
//! a lost watch and backs off on errors). Every change rebuilds the
//! [`AdapterMap`] and swaps it into the same lock-free [`AdapterStore`] the
//! file source uses, so lookups never wait for the API.
//!
//! Each ConfigMap is read like a file one ([`crate`] docs: `data.baseModel`,
//! `data.adapters`). Where upstream lets the last write win, here:
//!
//! - an **invalid** ConfigMap (no `baseModel`, `adapters` not a list) is
//!   skipped and logged; the others still apply;
//! - a **conflicting** ConfigMap (an adapter already mapped to another base
//!   model, an adapter named like another base model, or a base model named
//!   like another base model's adapter) is skipped and logged, never a crash
//!   loop. The ConfigMaps are taken oldest first (`creationTimestamp`, then
//!   `namespace/name`), so the one that was there first keeps routing and a
//!   newcomer cannot take its adapters away; once the older one is deleted
//!   or fixed, the skipped one applies on the next change.
//! - a deleted ConfigMap, or one whose label is removed, takes its adapters
//!   and its base model away (unless another ConfigMap names them).
//!
//! The skipped ConfigMaps are listed by [`KubeDiscovery::skipped`]; the
//! store's [`last_error`](AdapterStore::last_error) holds the first of them
//! (and is `None` when none is skipped), and each newly skipped ConfigMap is
//! one [`failed_reload_count`](AdapterStore::failed_reload_count).
//! [`KubeDiscovery::start_with_events`] reports each update as the file
//! watcher reports a reload (applied, or refused for a newly skipped
//! ConfigMap), for a reload counter.
//!
//! RBAC: `get`, `list` and `watch` on `configmaps` (what the upstream chart
//! grants).
//!
//! ```no_run
//! # async fn run() -> Result<(), kube::Error> {
//! use bbr_adapters::kube::KubeDiscovery;
//!
//! // In a pod: the service account; elsewhere: the kubeconfig.
//! let client = kube::Client::try_default().await?;
//! let namespace = std::env::var("NAMESPACE").ok().filter(|ns| !ns.is_empty());
//! let discovery = KubeDiscovery::start(client, namespace.as_deref());
//! discovery.synced().await; // the first full list is in the store
//! let store = discovery.store();
//! println!("{:?}", store.lookup("food-review-1"));
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{LoadError, Origin};
use crate::map::{AdapterMap, AdapterMapBuilder};
use crate::source::{self, ConfigMapData};
use crate::store::{AdapterStore, ReloadEvent};

/// The label that marks an adapter ConfigMap (the upstream GAIE v1.5.0 label).
pub const MANAGED_LABEL: &str = "inference.networking.k8s.io/bbr-managed";

/// The label selector sent to the API: [`MANAGED_LABEL`]`=true`.
pub const MANAGED_SELECTOR: &str = "inference.networking.k8s.io/bbr-managed=true";

/// The origin path that errors name for ConfigMaps from the API.
const ORIGIN: &str = "kubernetes";

/// A ConfigMap that is followed but not applied, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// `namespace/name`.
    pub config_map: String,
    /// Why it is skipped (invalid, or conflicting with an older ConfigMap).
    pub error: Arc<LoadError>,
}

/// Follows the adapter ConfigMaps through the Kubernetes API and keeps an
/// [`AdapterStore`] up to date. Stops when dropped.
#[derive(Debug)]
pub struct KubeDiscovery {
    store: AdapterStore,
    synced: watch::Receiver<bool>,
    skipped: Arc<Mutex<Vec<Skipped>>>,
    task: JoinHandle<()>,
}

impl KubeDiscovery {
    /// Starts following the labelled ConfigMaps of `namespace` (all
    /// namespaces when `None`) on the current tokio runtime. The store is
    /// empty until the first list arrives ([`synced`](Self::synced)).
    pub fn start(client: Client, namespace: Option<&str>) -> Self {
        Self::start_with_events(client, namespace, |_| {})
    }

    /// As [`start`](Self::start), and calls `on_update` once for each new
    /// map published (the first complete list, and every change after it):
    /// [`ReloadEvent::Refused`] with the error of the first ConfigMap this
    /// update newly skipped (the rest of the update is in force; the
    /// skipped ConfigMap's adapters are not), [`ReloadEvent::Applied`]
    /// otherwise. These are the events the file watcher
    /// ([`AdapterStore::watch_events`]) reports, so one reload counter
    /// serves both sources. The discovery logs each update and each skipped
    /// ConfigMap itself; `on_update` is for counting.
    pub fn start_with_events<F>(client: Client, namespace: Option<&str>, on_update: F) -> Self
    where
        F: FnMut(ReloadEvent) + Send + 'static,
    {
        let api: Api<ConfigMap> = match namespace {
            Some(namespace) => Api::namespaced(client, namespace),
            None => Api::all(client),
        };
        let store = AdapterStore::from_map(AdapterMap::new());
        let (synced_tx, synced) = watch::channel(false);
        let skipped = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(follow(
            api,
            store.clone(),
            synced_tx,
            skipped.clone(),
            namespace.map(str::to_owned),
            on_update,
        ));
        Self {
            store,
            synced,
            skipped,
            task,
        }
    }

    /// The store the ConfigMaps are published to (clones share it).
    pub fn store(&self) -> AdapterStore {
        self.store.clone()
    }

    /// Resolves once the first complete list has been published (at once
    /// if it has). Until then the API may be unreachable: the watcher keeps
    /// retrying with back-off and logs each failure.
    pub async fn synced(&self) {
        let mut synced = self.synced.clone();
        // An error means the task ended: nothing more will come.
        let _ = synced.wait_for(|s| *s).await;
    }

    /// True once the first complete list has been published.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// The ConfigMaps currently followed but not applied, sorted by name.
    pub fn skipped(&self) -> Vec<Skipped> {
        self.skipped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops following (the store keeps its last map).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for KubeDiscovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One followed ConfigMap.
#[derive(Debug)]
struct Followed {
    created: Option<Time>,
    parsed: Result<ConfigMapData, Arc<LoadError>>,
}

async fn follow(
    api: Api<ConfigMap>,
    store: AdapterStore,
    synced: watch::Sender<bool>,
    skipped: Arc<Mutex<Vec<Skipped>>>,
    namespace: Option<String>,
    mut on_update: impl FnMut(ReloadEvent) + Send + 'static,
) {
    let config = watcher::Config::default().labels(MANAGED_SELECTOR);
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let scope = namespace.as_deref().unwrap_or("all namespaces");
    let mut followed: BTreeMap<String, Followed> = BTreeMap::new();
    let mut relist: Option<BTreeMap<String, Followed>> = None;
    let mut reported: Vec<(String, String)> = Vec::new();
    while let Some(event) = events.next().await {
        let changed = match event {
            Ok(Event::Init) => {
                relist = Some(BTreeMap::new());
                false
            }
            Ok(Event::InitApply(config_map)) => {
                let (key, entry) = read(&config_map);
                relist.get_or_insert_with(BTreeMap::new).insert(key, entry);
                false
            }
            Ok(Event::InitDone) => {
                followed = relist.take().unwrap_or_default();
                tracing::info!(
                    config_maps = followed.len(),
                    scope,
                    "adapter ConfigMaps listed"
                );
                true
            }
            Ok(Event::Apply(config_map)) => {
                let (key, entry) = read(&config_map);
                tracing::debug!(config_map = %key, "adapter ConfigMap applied");
                followed.insert(key, entry);
                true
            }
            Ok(Event::Delete(config_map)) => {
                let (key, _) = read(&config_map);
                tracing::debug!(config_map = %key, "adapter ConfigMap deleted");
                followed.remove(&key).is_some()
            }
            Err(error) => {
                tracing::warn!(%error, scope, "watching adapter ConfigMaps failed; retrying");
                false
            }
        };
        if !changed {
            continue;
        }
        let (map, now_skipped) = build(&followed);
        let current: Vec<(String, String)> = now_skipped
            .iter()
            .map(|s| (s.config_map.clone(), s.error.to_string()))
            .collect();
        let mut newly = 0;
        let mut first_newly: Option<Arc<LoadError>> = None;
        for (skip, text) in now_skipped.iter().zip(&current) {
            if !reported.contains(text) {
                newly += 1;
                first_newly.get_or_insert_with(|| skip.error.clone());
                tracing::warn!(config_map = %skip.config_map, error = %skip.error,
                    "adapter ConfigMap skipped");
            }
        }
        reported = current;
        tracing::info!(
            base_models = map.base_models().count(),
            adapters = map.adapter_count(),
            skipped = now_skipped.len(),
            "adapter map updated from the Kubernetes API"
        );
        store.publish(map, now_skipped.first().map(|s| s.error.clone()), newly);
        *skipped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = now_skipped;
        // Receivers may all be gone; the store is still updated.
        let _ = synced.send_replace(true);
        on_update(first_newly.map_or(ReloadEvent::Applied, ReloadEvent::Refused));
    }
}

/// The key and parsed content of one ConfigMap.
fn read(config_map: &ConfigMap) -> (String, Followed) {
    let metadata = &config_map.metadata;
    let key = format!(
        "{}/{}",
        metadata.namespace.as_deref().unwrap_or(""),
        metadata.name.as_deref().unwrap_or("")
    );
    let origin = Origin::new(ORIGIN);
    let parsed = serde_norway::to_value(config_map)
        .map_err(|source| LoadError::Yaml {
            origin: origin.clone().with_name(Some(key.clone())),
            source: crate::error::YamlError(source),
        })
        .and_then(|mut value| {
            // The kind may be absent from watch objects; this is a ConfigMap.
            if let serde_norway::Value::Mapping(map) = &mut value {
                map.insert("kind".into(), "ConfigMap".into());
            }
            source::parse_object(&value, &origin)
        })
        .map_err(Arc::new);
    (
        key,
        Followed {
            created: metadata.creation_timestamp.clone(),
            parsed,
        },
    )
}

/// Builds the map from the followed ConfigMaps, oldest first, skipping the
/// invalid and the conflicting ones.
fn build(followed: &BTreeMap<String, Followed>) -> (AdapterMap, Vec<Skipped>) {
    let mut order: Vec<(&String, &Followed)> = followed.iter().collect();
    // `None` (never set by a real API) sorts first; ties by namespace/name.
    order.sort_by(|a, b| a.1.created.cmp(&b.1.created).then(a.0.cmp(b.0)));
    let mut adapters: HashMap<&str, (&str, &Origin)> = HashMap::new();
    let mut base_models: HashMap<&str, &Origin> = HashMap::new();
    let mut accepted: Vec<&ConfigMapData> = Vec::new();
    let mut skipped = Vec::new();
    for (key, entry) in order {
        let data = match &entry.parsed {
            Ok(data) => data,
            Err(error) => {
                skipped.push(Skipped {
                    config_map: key.clone(),
                    error: error.clone(),
                });
                continue;
            }
        };
        if let Some(error) = conflict(data, &adapters, &base_models) {
            skipped.push(Skipped {
                config_map: key.clone(),
                error: Arc::new(error),
            });
            continue;
        }
        let base = data.base_model.trim();
        base_models.entry(base).or_insert(&data.origin);
        for adapter in &data.adapters {
            adapters
                .entry(adapter.as_str())
                .or_insert((base, &data.origin));
        }
        accepted.push(data);
    }
    let mut builder = AdapterMapBuilder::new();
    for data in accepted {
        // The conflict check above is the builder's own rules; a failure
        // here would be a bug, and keeps the map of the ConfigMaps before.
        if let Err(error) = builder.insert(&data.base_model, &data.adapters, data.origin.clone()) {
            tracing::error!(%error, "adapter map rejected a checked ConfigMap");
        }
    }
    let map = builder.build().unwrap_or_else(|error| {
        tracing::error!(%error, "adapter map rejected checked ConfigMaps; publishing none");
        AdapterMap::new()
    });
    skipped.sort_by(|a, b| a.config_map.cmp(&b.config_map));
    (map, skipped)
}

/// Why `data` cannot join the accepted ConfigMaps, if it cannot.
fn conflict(
    data: &ConfigMapData,
    adapters: &HashMap<&str, (&str, &Origin)>,
    base_models: &HashMap<&str, &Origin>,
) -> Option<LoadError> {
    let base = data.base_model.trim();
    if let Some((owner, origin)) = adapters.get(base)
        && *owner != base
    {
        return Some(LoadError::AdapterIsBaseModel {
            adapter: base.to_owned(),
            base_model: (*owner).to_owned(),
            adapter_origin: (*origin).clone(),
            base_model_origin: data.origin.clone(),
        });
    }
    for adapter in &data.adapters {
        if let Some((first, first_origin)) = adapters.get(adapter.as_str())
            && *first != base
        {
            return Some(LoadError::ConflictingBaseModels {
                adapter: adapter.clone(),
                first_base_model: (*first).to_owned(),
                first_origin: (*first_origin).clone(),
                second_base_model: base.to_owned(),
                second_origin: data.origin.clone(),
            });
        }
        if adapter != base
            && let Some(origin) = base_models.get(adapter.as_str())
        {
            return Some(LoadError::AdapterIsBaseModel {
                adapter: adapter.clone(),
                base_model: base.to_owned(),
                adapter_origin: data.origin.clone(),
                base_model_origin: (*origin).clone(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn config_map(name: &str, second: i64, data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("default".to_owned()),
                creation_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + second).unwrap(),
                )),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ConfigMap::default()
        }
    }

    fn followed(maps: &[ConfigMap]) -> BTreeMap<String, Followed> {
        maps.iter().map(read).collect()
    }

    #[test]
    fn the_older_of_two_conflicting_config_maps_wins() {
        let older = config_map(
            "llama",
            1,
            &[("baseModel", "llama"), ("adapters", "- a\n- b")],
        );
        let newer = config_map(
            "aaa-deepseek",
            2,
            &[("baseModel", "deepseek"), ("adapters", "- b")],
        );
        let (map, skipped) = build(&followed(&[newer, older]));
        assert_eq!(map.lookup("b"), Some("llama"));
        assert_eq!(
            map.lookup("deepseek"),
            None,
            "the skipped ConfigMap adds nothing"
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].config_map, "default/aaa-deepseek");
        assert!(matches!(
            *skipped[0].error,
            LoadError::ConflictingBaseModels { .. }
        ));
        let text = skipped[0].error.to_string();
        assert!(
            text.contains("kubernetes (ConfigMap default/llama)"),
            "{text}"
        );
    }

    #[test]
    fn names_crossing_base_models_and_adapters_are_skipped() {
        let llama = config_map("llama", 1, &[("baseModel", "llama"), ("adapters", "- a")]);
        let named_like_adapter = config_map("x", 2, &[("baseModel", "a")]);
        let adapter_named_like_base =
            config_map("y", 3, &[("baseModel", "z"), ("adapters", "- llama")]);
        let (map, skipped) = build(&followed(&[
            llama,
            named_like_adapter,
            adapter_named_like_base,
        ]));
        assert_eq!(map.lookup("a"), Some("llama"));
        let names: Vec<_> = skipped.iter().map(|s| s.config_map.as_str()).collect();
        assert_eq!(names, ["default/x", "default/y"]);
        for skip in &skipped {
            assert!(
                matches!(*skip.error, LoadError::AdapterIsBaseModel { .. }),
                "{}",
                skip.error
            );
        }
    }

    #[test]
    fn invalid_config_maps_are_skipped_and_the_rest_apply() {
        let good = config_map("good", 1, &[("baseModel", "base"), ("adapters", "- a")]);
        let no_base = config_map("no-base", 2, &[("adapters", "- b")]);
        let not_a_list = config_map(
            "not-a-list",
            3,
            &[("baseModel", "other"), ("adapters", "a: b")],
        );
        let (map, skipped) = build(&followed(&[good, no_base, not_a_list]));
        assert_eq!(map.lookup("a"), Some("base"));
        assert_eq!(map.lookup("other"), None);
        assert!(matches!(
            *skipped[0].error,
            LoadError::MissingBaseModel { .. }
        ));
        assert!(matches!(
            *skipped[1].error,
            LoadError::AdaptersNotAList { .. }
        ));
    }

    #[test]
    fn several_config_maps_may_share_a_base_model_and_an_adapter() {
        let one = config_map("one", 1, &[("baseModel", "base"), ("adapters", "- a\n- b")]);
        let two = config_map(
            "two",
            2,
            &[("baseModel", " base "), ("adapters", "- b\n- c\n- base")],
        );
        let (map, skipped) = build(&followed(&[one, two]));
        assert!(skipped.is_empty(), "{skipped:?}");
        for name in ["a", "b", "c", "base"] {
            assert_eq!(map.lookup(name), Some("base"), "{name}");
        }
    }
}
