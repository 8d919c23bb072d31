//! The reloadable store and its polling watcher.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::error::LoadError;
use crate::map::{AdapterMap, AdapterMapBuilder};
use crate::source::{self, SourceFile};

/// The current [`AdapterMap`], swapped atomically on reload.
///
/// Readers ([`lookup`](Self::lookup), [`snapshot`](Self::snapshot)) never
/// block and take no lock: the map sits behind an `ArcSwap`. A reload reads
/// the configured paths, and swaps in a new map only when the whole set loads
/// cleanly; on an error the old map stays, the error is kept
/// ([`last_error`](Self::last_error)) and counted
/// ([`failed_reload_count`](Self::failed_reload_count)).
///
/// Cloning is cheap and every clone sees the same map.
///
/// ```
/// use bbr_adapters::{AdapterMap, AdapterStore};
///
/// let map = AdapterMap::from_yaml_str("data: {baseModel: base, adapters: '[lora]'}", "inline")?;
/// let store = AdapterStore::from_map(map);
/// assert_eq!(store.lookup("lora").as_deref(), Some("base"));
/// # Ok::<(), bbr_adapters::LoadError>(())
/// ```
#[derive(Debug, Clone)]
pub struct AdapterStore {
    inner: Reloading<AdapterMap>,
}

/// What a reloading store holds: built from the collected source files.
/// One reload machinery (polling, byte comparison, swap on success) for
/// the adapter map and the model rewrite rules.
pub(crate) trait Snapshot: std::fmt::Debug + Send + Sync + Sized + 'static {
    /// Builds a snapshot from every file read below the configured paths.
    fn build(files: &[SourceFile]) -> Result<Self, LoadError>;
}

impl Snapshot for AdapterMap {
    fn build(files: &[SourceFile]) -> Result<Self, LoadError> {
        build(files)
    }
}

/// The current `T` behind an `ArcSwap`, reloaded from its paths.
#[derive(Debug)]
pub(crate) struct Reloading<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Reloading<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

#[derive(Debug)]
struct Shared<T> {
    current: ArcSwap<T>,
    paths: Vec<PathBuf>,
    reloads: AtomicU64,
    failed_reloads: AtomicU64,
    /// Only reloads take this lock; readers never do.
    state: Mutex<ReloadState>,
}

#[derive(Debug, Default)]
struct ReloadState {
    /// What the previous attempt read (or why reading failed), to skip
    /// parsing and counting when nothing changed.
    last_attempt: Option<Attempt>,
    last_error: Option<Arc<LoadError>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Read(Vec<SourceFile>),
    ReadFailed(String),
}

/// What a call to [`AdapterStore::reload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reload {
    /// The files are byte for byte what the previous attempt read.
    Unchanged,
    /// A new map was loaded and swapped in.
    Swapped,
}

/// A set of files a binary watches and reloads, by the name its log lines
/// and metrics give it (the `config` field and label).
///
/// ```
/// assert_eq!(bbr_adapters::WatchedConfig::ModelRewrites.as_str(), "model_rewrites");
/// assert_eq!(bbr_adapters::WatchedConfig::Adapters.as_str(), "adapters");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WatchedConfig {
    /// The adapter map (`--adapters` files or directories).
    Adapters,
    /// The model rewrite rules (`--model-rewrites`).
    ModelRewrites,
}

impl WatchedConfig {
    /// The name: `adapters` or `model_rewrites`.
    pub const fn as_str(self) -> &'static str {
        match self {
            WatchedConfig::Adapters => "adapters",
            WatchedConfig::ModelRewrites => "model_rewrites",
        }
    }
}

/// A change of the files a watcher saw, reported once per change (a
/// refused content is not reported again at every poll while it stays).
///
/// ```
/// use std::sync::Arc;
/// use bbr_adapters::{LoadError, ReloadEvent};
/// let event = ReloadEvent::Refused(Arc::new(LoadError::FileTooLarge { path: "big.yaml".into(), limit: 1 }));
/// assert!(!event.applied());
/// assert!(ReloadEvent::Applied.applied());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ReloadEvent {
    /// The changed files loaded cleanly and are in force.
    Applied,
    /// The changed files were refused; what was in force stays.
    Refused(Arc<LoadError>),
}

impl ReloadEvent {
    /// True when the new files are in force.
    pub fn applied(&self) -> bool {
        matches!(self, ReloadEvent::Applied)
    }

    /// Logs the change of the watched `config` (feature
    /// `tracing`): a refused edit at warn, with the error and its causes
    /// (the previous files stay in force), an applied one at info. Every
    /// binary that watches a config logs it with these words.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("bbr-log-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// # let file = dir.join("adapters.yaml");
    /// # std::fs::write(&file, "data:\n  baseModel: base\n  adapters: '- lora-a'\n").unwrap();
    /// let store = bbr_adapters::AdapterStore::load([&file])?;
    /// let watcher = store
    ///     .watch_events(std::time::Duration::from_secs(10), |event| {
    ///         event.log(bbr_adapters::WatchedConfig::Adapters)
    ///     })
    ///     .expect("watcher thread");
    /// watcher.stop();
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), bbr_adapters::LoadError>(())
    /// ```
    #[cfg(feature = "tracing")]
    pub fn log(&self, config: WatchedConfig) {
        let config = config.as_str();
        match self {
            ReloadEvent::Refused(error) => tracing::warn!(
                config,
                error = %error.with_causes(),
                "reload refused; the previous files stay in force"
            ),
            ReloadEvent::Applied => tracing::info!(config, "reloaded"),
        }
    }
}

/// What one reload attempt did, and whether a failure is new: a watcher
/// reports each change once, while `reload` answers every call.
enum Attempted {
    Unchanged,
    Swapped,
    Failed { error: Arc<LoadError>, new: bool },
}

impl AdapterStore {
    /// Loads `paths` once (the first load must succeed) and keeps them for
    /// [`reload`](Self::reload) and [`watch`](Self::watch).
    pub fn load<I, P>(paths: I) -> Result<Self, LoadError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        Ok(Self {
            inner: Reloading::load(paths)?,
        })
    }

    /// A store holding a fixed map (no paths: [`reload`](Self::reload) is
    /// always [`Reload::Unchanged`]).
    pub fn from_map(map: AdapterMap) -> Self {
        Self {
            inner: Reloading::fixed(map),
        }
    }

    /// The base model for `model` in the current map (see
    /// [`AdapterMap::lookup`]). Lock-free.
    #[inline]
    pub fn lookup(&self, model: &str) -> Option<Arc<str>> {
        self.inner.shared.current.load().lookup_shared(model)
    }

    /// The current map. Holding it keeps that snapshot alive; later reloads
    /// do not change it.
    pub fn snapshot(&self) -> Arc<AdapterMap> {
        self.inner.snapshot()
    }

    /// The configured paths.
    pub fn paths(&self) -> &[PathBuf] {
        self.inner.paths()
    }

    /// Re-reads the paths now. Swaps in the new map when the content changed
    /// and loads cleanly; returns the error (and keeps the old map)
    /// otherwise. An error is returned again, but counted only once, while
    /// the files stay the same.
    pub fn reload(&self) -> Result<Reload, Arc<LoadError>> {
        self.inner.reload()
    }

    /// Swaps in a map built from another source (the Kubernetes API), as a
    /// successful reload. `error` becomes [`last_error`](Self::last_error)
    /// (what that source skipped); `new_failures` is added to
    /// [`failed_reload_count`](Self::failed_reload_count).
    #[cfg(feature = "kube")]
    pub(crate) fn publish(
        &self,
        map: AdapterMap,
        error: Option<Arc<LoadError>>,
        new_failures: u64,
    ) {
        self.inner.publish(map, error, new_failures);
    }

    /// Successful reloads that swapped in a new map (the initial load is not counted).
    pub fn reload_count(&self) -> u64 {
        self.inner.reload_count()
    }

    /// Reloads that failed (each distinct failing content counted once).
    pub fn failed_reload_count(&self) -> u64 {
        self.inner.failed_reload_count()
    }

    /// The error of the latest reload attempt, or `None` once a reload
    /// succeeds (or when none failed).
    pub fn last_error(&self) -> Option<Arc<LoadError>> {
        self.inner.last_error()
    }

    /// Starts a std thread that calls [`reload`](Self::reload) every
    /// `interval` until the returned [`ReloadWatcher`] is stopped or
    /// dropped.
    ///
    /// Polling reads the files and compares their bytes with the previous
    /// poll (they are small, see [`MAX_FILE_BYTES`](crate::MAX_FILE_BYTES)),
    /// which catches in-place edits, same-second changes that an mtime
    /// check would miss, and the atomic `..data` symlink swap of a mounted
    /// ConfigMap. A std thread, not a tokio task, so the store works with
    /// or without a runtime.
    pub fn watch(&self, interval: Duration) -> std::io::Result<ReloadWatcher> {
        self.watch_with(interval, |_| {})
    }

    /// Like [`watch`](Self::watch), and calls `on_poll` with the outcome of
    /// every poll, in order (to log a failed reload, or count polls). The
    /// callback runs on the reload thread and is dropped when the thread
    /// ends.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use bbr_adapters::{AdapterMap, AdapterStore, Reload};
    ///
    /// let store = AdapterStore::from_map(AdapterMap::new());
    /// let (polled, polls) = mpsc::channel();
    /// let watcher = store.watch_with(Duration::from_millis(1), move |outcome| {
    ///     let _ = polled.send(outcome.clone());
    /// }).unwrap();
    /// assert!(matches!(polls.recv().unwrap(), Ok(Reload::Unchanged)));
    /// watcher.stop();
    /// // The thread ended: its callback (and sender) are gone.
    /// while polls.recv().is_ok() {}
    /// ```
    pub fn watch_with<F>(&self, interval: Duration, on_poll: F) -> std::io::Result<ReloadWatcher>
    where
        F: FnMut(&Result<Reload, Arc<LoadError>>) + Send + 'static,
    {
        self.inner.watch_with(interval, on_poll)
    }

    /// Like [`watch`](Self::watch), and calls `on_event` once for every
    /// change of the files: [`ReloadEvent::Applied`] when the new map is in
    /// force, [`ReloadEvent::Refused`] when it was refused and the old one
    /// stays (to log and count it: a bad ConfigMap edit must not go
    /// unnoticed). Polls that find the files unchanged call nothing. The
    /// callback runs on the reload thread.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use bbr_adapters::AdapterStore;
    ///
    /// let dir = std::env::temp_dir().join(format!("bbr-doc-events-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let file = dir.join("adapters.yaml");
    /// // Whole files only (write, then rename), or a poll may read half of one.
    /// let replace = |text: &str| {
    ///     std::fs::write(dir.join(".next"), text).unwrap();
    ///     std::fs::rename(dir.join(".next"), &file).unwrap();
    /// };
    /// replace("data: {baseModel: base, adapters: '[lora]'}");
    /// let store = AdapterStore::load([&file]).unwrap();
    /// let (seen, events) = mpsc::channel();
    /// let watcher = store.watch_events(Duration::from_millis(1), move |event| {
    ///     let _ = seen.send(event);
    /// }).unwrap();
    /// replace("data: {baseModel: [not, a, name]}");
    /// assert!(!events.recv().unwrap().applied()); // refused, reported once
    /// assert_eq!(store.lookup("lora").as_deref(), Some("base")); // the old map stays
    /// replace("data: {baseModel: base2, adapters: '[lora]'}");
    /// assert!(events.recv().unwrap().applied());
    /// assert_eq!(store.lookup("lora").as_deref(), Some("base2"));
    /// watcher.stop();
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn watch_events<F>(&self, interval: Duration, on_event: F) -> std::io::Result<ReloadWatcher>
    where
        F: FnMut(ReloadEvent) + Send + 'static,
    {
        self.inner.watch_events(interval, on_event)
    }
}

impl<T: Snapshot> Reloading<T> {
    pub(crate) fn load<I, P>(paths: I) -> Result<Self, LoadError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        let paths: Vec<PathBuf> = paths.into_iter().map(|p| p.as_ref().to_owned()).collect();
        let files = read_all(&paths)?;
        let map = T::build(&files)?;
        Ok(Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(map),
                paths,
                reloads: AtomicU64::new(0),
                failed_reloads: AtomicU64::new(0),
                state: Mutex::new(ReloadState {
                    last_attempt: Some(Attempt::Read(files)),
                    last_error: None,
                }),
            }),
        })
    }

    pub(crate) fn fixed(map: T) -> Self {
        Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(map),
                paths: Vec::new(),
                reloads: AtomicU64::new(0),
                failed_reloads: AtomicU64::new(0),
                state: Mutex::new(ReloadState::default()),
            }),
        }
    }

    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<T>> {
        self.shared.current.load()
    }

    pub(crate) fn snapshot(&self) -> Arc<T> {
        self.shared.current.load_full()
    }

    pub(crate) fn paths(&self) -> &[PathBuf] {
        &self.shared.paths
    }

    pub(crate) fn reload(&self) -> Result<Reload, Arc<LoadError>> {
        match self.attempt() {
            Attempted::Unchanged => Ok(Reload::Unchanged),
            Attempted::Swapped => Ok(Reload::Swapped),
            Attempted::Failed { error, .. } => Err(error),
        }
    }

    /// One reload: unchanged files repeat the previous answer (a kept
    /// error is then not new).
    fn attempt(&self) -> Attempted {
        if self.shared.paths.is_empty() {
            return Attempted::Unchanged;
        }
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let read = read_all(&self.shared.paths);
        let attempt = match &read {
            Ok(files) => Attempt::Read(files.clone()),
            Err(error) => Attempt::ReadFailed(error.with_causes()),
        };
        if state.last_attempt.as_ref() == Some(&attempt) {
            return match &state.last_error {
                Some(error) => Attempted::Failed {
                    error: error.clone(),
                    new: false,
                },
                None => Attempted::Unchanged,
            };
        }
        state.last_attempt = Some(attempt);
        match read.and_then(|files| T::build(&files)) {
            Ok(map) => {
                self.shared.current.store(Arc::new(map));
                self.shared.reloads.fetch_add(1, Ordering::Relaxed);
                state.last_error = None;
                Attempted::Swapped
            }
            Err(error) => {
                let error = Arc::new(error);
                self.shared.failed_reloads.fetch_add(1, Ordering::Relaxed);
                state.last_error = Some(error.clone());
                Attempted::Failed { error, new: true }
            }
        }
    }

    #[cfg(feature = "kube")]
    pub(crate) fn publish(&self, map: T, error: Option<Arc<LoadError>>, new_failures: u64) {
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.shared.current.store(Arc::new(map));
        self.shared.reloads.fetch_add(1, Ordering::Relaxed);
        self.shared
            .failed_reloads
            .fetch_add(new_failures, Ordering::Relaxed);
        state.last_error = error;
    }

    pub(crate) fn reload_count(&self) -> u64 {
        self.shared.reloads.load(Ordering::Relaxed)
    }

    pub(crate) fn failed_reload_count(&self) -> u64 {
        self.shared.failed_reloads.load(Ordering::Relaxed)
    }

    pub(crate) fn last_error(&self) -> Option<Arc<LoadError>> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last_error
            .clone()
    }

    pub(crate) fn watch_with<F>(
        &self,
        interval: Duration,
        mut on_poll: F,
    ) -> std::io::Result<ReloadWatcher>
    where
        F: FnMut(&Result<Reload, Arc<LoadError>>) + Send + 'static,
    {
        let store = self.clone();
        // The outcome is also recorded in the store (counters, last error).
        self.poll_every(interval, move || on_poll(&store.reload()))
    }

    pub(crate) fn watch_events<F>(
        &self,
        interval: Duration,
        mut on_event: F,
    ) -> std::io::Result<ReloadWatcher>
    where
        F: FnMut(ReloadEvent) + Send + 'static,
    {
        let store = self.clone();
        self.poll_every(interval, move || match store.attempt() {
            Attempted::Swapped => on_event(ReloadEvent::Applied),
            Attempted::Failed { error, new: true } => on_event(ReloadEvent::Refused(error)),
            Attempted::Unchanged | Attempted::Failed { new: false, .. } => {}
        })
    }

    /// Runs `poll` every `interval` on a std thread until the watcher stops.
    fn poll_every<F>(&self, interval: Duration, mut poll: F) -> std::io::Result<ReloadWatcher>
    where
        F: FnMut() + Send + 'static,
    {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("bbr-adapters-reload".to_owned())
            .spawn(move || {
                // A message or a disconnected sender both mean stop.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    poll();
                }
            })?;
        Ok(ReloadWatcher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Stops the reload thread started by [`AdapterStore::watch`] when stopped
/// or dropped (and waits for it, at most one poll).
#[derive(Debug)]
pub struct ReloadWatcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ReloadWatcher {
    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the reload thread has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

impl Drop for ReloadWatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<SourceFile>, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        files.extend(source::collect(path)?);
    }
    Ok(files)
}

fn build(files: &[SourceFile]) -> Result<AdapterMap, LoadError> {
    let mut builder = AdapterMapBuilder::new();
    for file in files {
        builder.add_source(file)?;
    }
    builder.build()
}
