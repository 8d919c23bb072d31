//! Where the adapter map comes from: mounted files, or the Kubernetes API
//! (cargo feature `kube`, on by default), chosen by `--adapters-from`.
//!
//! The rules are on [`AdaptersFrom`].

/// The source of the adapter map (`--adapters-from`).
///
/// | `--adapters-from` | the adapter map |
/// | --- | --- |
/// | `auto` (default) | the `--adapters` files when any are given; otherwise the Kubernetes API when the base-model plugin is on (no `--plugin` given, or one of type `base-model-to-header`, as the upstream chart passes) **and** the process runs in a cluster (`KUBERNETES_SERVICE_HOST` set) or `KUBECONFIG` is set; otherwise none |
/// | `files` | only the `--adapters` files (none given: no base-model header) |
/// | `kubernetes` | the Kubernetes API; a start-up error when no configuration is found (in-cluster service account, `KUBECONFIG`, `~/.kube/config`) |
/// | `none` | no adapter map |
///
/// From the API, ConfigMaps labelled
/// `inference.networking.k8s.io/bbr-managed: "true"` are followed in the
/// namespace named by the `NAMESPACE` environment variable (set by the
/// upstream chart unless `multiNamespace`), in all namespaces when it is
/// unset or empty; see `bbr_adapters::kube` for the rules (invalid or
/// conflicting ConfigMaps are logged and skipped). Like the upstream binary,
/// which waits for its ConfigMap cache, the server starts serving once the
/// first complete list is in (the listeners open then); until then the
/// watcher retries with back-off and logs each failure. `auto` never picks
/// a `~/.kube/config` on its own, so a local run does not reach into
/// whatever cluster the shell points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AdaptersFrom {
    /// Files when given, else the Kubernetes API when in a cluster and the
    /// base-model plugin is on, else none.
    #[default]
    Auto,
    /// Only the `--adapters` files.
    Files,
    /// The Kubernetes API (labelled ConfigMaps, live).
    Kubernetes,
    /// No adapter map.
    None,
}

/// An `--adapters-from` value that is not one of [`AdaptersFrom`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown adapter source `{0}` (expected auto, files, kubernetes or none)")]
pub struct UnknownAdaptersFrom(Box<str>);

impl std::str::FromStr for AdaptersFrom {
    type Err = UnknownAdaptersFrom;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Auto, Self::Files, Self::Kubernetes, Self::None]
            .into_iter()
            .find(|from| from.as_str() == s)
            .ok_or_else(|| UnknownAdaptersFrom(s.into()))
    }
}

impl std::fmt::Display for AdaptersFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AdaptersFrom {
    /// Stable name: `auto`, `files`, `kubernetes` or `none`.
    ///
    /// ```
    /// use bbr_extproc::AdaptersFrom;
    /// assert_eq!("kubernetes".parse::<AdaptersFrom>().unwrap(), AdaptersFrom::Kubernetes);
    /// assert_eq!(AdaptersFrom::default().as_str(), "auto");
    /// assert!("k8s".parse::<AdaptersFrom>().is_err());
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Files => "files",
            Self::Kubernetes => "kubernetes",
            Self::None => "none",
        }
    }

    /// True when this choice, with these `--adapters` files, the plugin
    /// chain (`base_model_plugin`: it has `base-model-to-header`) and this
    /// environment, means the Kubernetes API.
    ///
    /// ```
    /// use bbr_extproc::AdaptersFrom;
    ///
    /// assert!(AdaptersFrom::Kubernetes.uses_kubernetes(&[], true));
    /// // Files given: `auto` reads them and never asks the API.
    /// assert!(!AdaptersFrom::Auto.uses_kubernetes(&["adapters.yaml".into()], true));
    /// ```
    pub fn uses_kubernetes(self, adapters: &[std::path::PathBuf], base_model_plugin: bool) -> bool {
        match self {
            Self::Kubernetes => true,
            Self::Files | Self::None => false,
            Self::Auto => {
                let configured = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
                    || std::env::var_os("KUBECONFIG").is_some();
                adapters.is_empty() && base_model_plugin && configured
            }
        }
    }
}

/// Starts following the ConfigMaps, waits for the first list and puts the
/// store into `settings`. The returned handle keeps the watch running.
#[cfg(feature = "kube")]
pub(crate) async fn start_kubernetes(
    settings: &mut crate::stream::Settings,
    metrics: &std::sync::Arc<crate::Metrics>,
) -> Result<bbr_adapters::kube::KubeDiscovery, crate::StartError> {
    let client = kube::Client::try_default()
        .await
        .map_err(crate::StartError::Kubernetes)?;
    let namespace = std::env::var("NAMESPACE")
        .ok()
        .filter(|namespace| !namespace.trim().is_empty());
    // Counted as the file watcher's reloads are (the discovery logs each
    // update and each skipped ConfigMap itself).
    let config = bbr_adapters::WatchedConfig::Adapters;
    metrics.watching(config);
    let counted = metrics.clone();
    let discovery = bbr_adapters::kube::KubeDiscovery::start_with_events(
        client,
        namespace.as_deref(),
        move |event| counted.config_reloaded(config, event.applied()),
    );
    tracing::info!(
        namespace = namespace.as_deref().unwrap_or("(all)"),
        label = bbr_adapters::kube::MANAGED_SELECTOR,
        "waiting for the first list of adapter ConfigMaps"
    );
    discovery.synced().await;
    settings.base_models = Some(discovery.store());
    Ok(discovery)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_choices_ignore_the_environment() {
        assert!(AdaptersFrom::Kubernetes.uses_kubernetes(&[], true));
        assert!(!AdaptersFrom::Files.uses_kubernetes(&[], true));
        assert!(!AdaptersFrom::None.uses_kubernetes(&[], true));
        // Files given: auto never asks the API.
        assert!(!AdaptersFrom::Auto.uses_kubernetes(&["a.yaml".into()], true));
        // Only body-field-to-header: no base-model plugin, no API.
        assert!(!AdaptersFrom::Auto.uses_kubernetes(&[], false));
        for from in [
            AdaptersFrom::Auto,
            AdaptersFrom::Files,
            AdaptersFrom::Kubernetes,
            AdaptersFrom::None,
        ] {
            assert_eq!(from.as_str().parse::<AdaptersFrom>(), Ok(from));
        }
    }
}
