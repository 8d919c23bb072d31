//! The LoRA adapter → base model map of Body-Based Routing, read from the
//! upstream ConfigMap format and reloaded when it changes.
//!
//! One implementation, shared by the tower layer (`bbr-tower`) and the
//! ext_proc server (`bbr-extproc`), sets `X-Gateway-Base-Model-Name`:
//! an adapter name gives its base model, a base model gives itself, an
//! unknown name gives nothing. Lookups are exact (the extractor in `bbr-core`
//! decides what a model name is); names read from ConfigMaps are trimmed.
//!
//! # The format
//!
//! One ConfigMap per base model (several may name the same base model, for
//! example to split a long list):
//!
//! ```yaml
//! apiVersion: v1
//! kind: ConfigMap
//! metadata:
//!   name: deepseek-adapters
//!   labels: {inference.llm-d.ai/ipp-managed: "true"}
//! data:
//!   baseModel: deepseek/vllm-deepseek-r1   # required, trimmed, non-empty
//!   adapters: |                            # optional YAML list
//!     - ski-resorts
//!     - movie-critique
//! ```
//!
//! - `data.baseModel`: a string, trimmed; missing or blank is
//!   [`LoadError::MissingBaseModel`].
//! - `data.adapters`: a string holding a YAML list. Scalar entries are read
//!   as strings (`- 1` is the adapter `"1"`), trimmed, and blank or null
//!   entries are skipped; a blank or missing value is an empty list. A
//!   value that is not a list of scalars is [`LoadError::AdaptersNotAList`].
//!   A list given directly (not as a string) is accepted too.
//! - An adapter listed under two different base models is
//!   [`LoadError::ConflictingBaseModels`], naming both base models and both
//!   origins; an adapter that carries the name of another base model is
//!   [`LoadError::AdapterIsBaseModel`]. The same adapter listed twice under
//!   one base model is fine.
//!
//! # Where maps are read from
//!
//! Each configured path is one of:
//!
//! - **a manifest file** (any name): YAML, possibly several documents
//!   separated by `---`, each a `ConfigMap`, a `List`/`ConfigMapList` of
//!   them, or empty. Objects of other kinds (a Deployment in the same
//!   kustomize output) are skipped. A document without `kind` but with
//!   `data` is read as a ConfigMap. The upstream label filter is not
//!   applied: every ConfigMap in a file you point at must be an adapter map.
//! - **a mounted ConfigMap directory**: a directory with a file named
//!   `baseModel` (and optionally `adapters`), as the kubelet writes it. The
//!   `..data` symlink is resolved once per read, so both keys come from the
//!   same atomic update.
//! - **a directory of the above**: entries whose names start with `.` are
//!   ignored (when the directory has a `..data` link, as any mounted
//!   ConfigMap volume does, it is resolved once and the entries are listed
//!   and read through it); files ending in `.yaml`, `.yml` or `.json` are read as
//!   manifests, other files are ignored; subdirectories are entered (mounted
//!   ConfigMaps or more manifests), at most [`MAX_DIR_DEPTH`] levels deep.
//!   Entries are read in sorted order.
//!
//! Every file is read whole, up to [`MAX_FILE_BYTES`].
//!
//! With the cargo feature `kube`, `kube::KubeDiscovery` follows the
//! labelled ConfigMaps through the Kubernetes API instead, live, like the
//! upstream BBR (mounted directories stay the option that needs no RBAC).
//!
//! # Model rewrites
//!
//! [`rewrite`] reads `InferenceModelRewrite` resources (aliases and
//! weighted rewrites of the requested model) from the same kinds of paths,
//! reloaded by the same machinery.
//!
//! # Reloading
//!
//! [`AdapterStore`] holds the current snapshot behind an `ArcSwap`: lookups
//! are lock-free and never wait for a reload. [`AdapterStore::watch`]
//! starts a std thread that polls the paths; a new map is swapped in only
//! when everything loads cleanly. On an error the old map stays in place,
//! and the error and counters are exposed for health checks and metrics.
//!
//! ```
//! use std::time::Duration;
//! use bbr_adapters::AdapterStore;
//!
//! let dir = std::env::temp_dir().join(format!("bbr-adapters-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let file = dir.join("adapters.yaml");
//! std::fs::write(&file, "kind: ConfigMap\ndata:\n  baseModel: base\n  adapters: '- lora-a'\n").unwrap();
//!
//! let store = AdapterStore::load([&file])?;
//! let watcher = store.watch(Duration::from_secs(2)).unwrap();
//! assert_eq!(store.lookup("lora-a").as_deref(), Some("base"));
//!
//! std::fs::write(&file, "kind: ConfigMap\ndata:\n  baseModel: base\n  adapters: '- lora-b'\n").unwrap();
//! store.reload().unwrap(); // what the watcher does on its next poll
//! assert_eq!(store.lookup("lora-b").as_deref(), Some("base"));
//! assert_eq!(store.reload_count(), 1);
//! watcher.stop();
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), bbr_adapters::LoadError>(())
//! ```
#![forbid(unsafe_code)]

mod error;
#[cfg(feature = "kube")]
pub mod kube;
mod map;
pub mod rewrite;
mod source;
mod store;

pub use error::{LoadError, Origin, RewriteProblem, YamlError};
pub use map::{AdapterMap, AdapterMapBuilder};
pub use store::{AdapterStore, Reload, ReloadEvent, ReloadWatcher, WatchedConfig};

/// Largest file read as a manifest or mounted key: 16 MiB (a list of tens of
/// thousands of adapters fits easily; anything larger is a mistake).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Deepest directory nesting entered below a configured path: 8.
pub const MAX_DIR_DEPTH: usize = 8;
