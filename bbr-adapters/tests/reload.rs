//! Reloading: swaps only on a clean load, never disturbs readers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use bbr_adapters::{AdapterStore, LoadError, Reload, ReloadEvent};
use common::{TempDir, mount_config_map, mount_keys};

fn config_map(base: &str, adapters: &[&str]) -> String {
    format!(
        "kind: ConfigMap\ndata:\n  baseModel: {base}\n  adapters: '[{}]'\n",
        adapters.join(", ")
    )
}

#[test]
fn reload_swaps_in_a_changed_file_and_counts_it() {
    let dir = TempDir::new("swap");
    let file = dir.write("a.yaml", &config_map("base", &["one"]));
    let store = AdapterStore::load([&file]).unwrap();
    let before = store.snapshot();
    assert_eq!(store.reload().unwrap(), Reload::Unchanged);
    assert_eq!(store.reload_count(), 0);

    dir.write("a.yaml", &config_map("base", &["two"]));
    assert_eq!(store.reload().unwrap(), Reload::Swapped);
    assert_eq!(store.reload_count(), 1);
    assert_eq!(store.lookup("two").as_deref(), Some("base"));
    assert_eq!(store.lookup("one"), None);
    // A snapshot taken earlier is unaffected.
    assert_eq!(before.lookup("one"), Some("base"));
    assert_eq!(store.reload().unwrap(), Reload::Unchanged);
}

#[test]
fn reload_error_keeps_the_old_map_and_records_the_error() {
    let dir = TempDir::new("error");
    let a = dir.write("a.yaml", &config_map("base-a", &["shared"]));
    let store = AdapterStore::load([dir.path()]).unwrap();
    assert_eq!(store.lookup("shared").as_deref(), Some("base-a"));

    // A second ConfigMap claims the same adapter: the load fails as a whole.
    dir.write("b.yaml", &config_map("base-b", &["shared", "new"]));
    let error = store.reload().unwrap_err();
    assert!(
        matches!(*error, LoadError::ConflictingBaseModels { .. }),
        "{error:?}"
    );
    assert_eq!(store.lookup("shared").as_deref(), Some("base-a"));
    assert_eq!(store.lookup("new"), None);
    assert_eq!(store.failed_reload_count(), 1);
    assert_eq!(store.reload_count(), 0);
    assert!(store.last_error().is_some());

    // The same broken content is not counted again.
    assert!(store.reload().is_err());
    assert_eq!(store.failed_reload_count(), 1);

    // Broken YAML, then a missing file: still the old map.
    dir.write("b.yaml", "kind: ConfigMap\ndata: [unclosed\n");
    assert!(matches!(
        *store.reload().unwrap_err(),
        LoadError::Yaml { .. }
    ));
    std::fs::remove_file(&a).unwrap();
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    std::fs::remove_dir(dir.path()).unwrap();
    assert!(matches!(*store.reload().unwrap_err(), LoadError::Io { .. }));
    assert_eq!(store.failed_reload_count(), 3);
    assert_eq!(store.lookup("shared").as_deref(), Some("base-a"));

    // Fixed: swapped in, error cleared.
    std::fs::create_dir_all(dir.path()).unwrap();
    dir.write("a.yaml", &config_map("base-a", &["shared", "fixed"]));
    assert_eq!(store.reload().unwrap(), Reload::Swapped);
    assert_eq!(store.lookup("fixed").as_deref(), Some("base-a"));
    assert!(store.last_error().is_none());
    assert_eq!(store.reload_count(), 1);
}

#[test]
fn initial_load_error_is_returned() {
    let dir = TempDir::new("initial");
    dir.write("a.yaml", "kind: ConfigMap\ndata: {adapters: '[x]'}\n");
    assert!(matches!(
        AdapterStore::load([dir.path()]),
        Err(LoadError::MissingBaseModel { .. })
    ));
}

#[test]
fn mounted_config_map_atomic_data_swap_is_picked_up() {
    let dir = TempDir::new("kubelet");
    let mount = dir.path().join("cm");
    mount_config_map(&mount, "v1", "base", Some("- old-lora\n"));
    let store = AdapterStore::load([&mount]).unwrap();
    assert_eq!(store.lookup("old-lora").as_deref(), Some("base"));

    mount_config_map(&mount, "v2", "base", Some("- new-lora\n"));
    std::fs::remove_dir_all(mount.join("..v1")).unwrap();
    assert_eq!(store.reload().unwrap(), Reload::Swapped);
    assert_eq!(store.lookup("new-lora").as_deref(), Some("base"));
    assert_eq!(store.lookup("old-lora"), None);
}

#[test]
fn config_map_of_manifest_keys_is_read_through_one_data_link() {
    let dir = TempDir::new("manifest-keys");
    let mount = dir.path().join("cm");
    let llama = |adapters: &str| {
        format!("kind: ConfigMap\ndata: {{baseModel: llama, adapters: '[{adapters}]'}}\n")
    };
    let deepseek = |adapters: &str| {
        format!("kind: ConfigMap\ndata: {{baseModel: deepseek, adapters: '[{adapters}]'}}\n")
    };
    mount_keys(
        &mount,
        "v1",
        &[("a.yaml", &llama("moving")), ("b.yaml", &deepseek("other"))],
    );
    let store = AdapterStore::load([&mount]).unwrap();
    assert_eq!(store.lookup("moving").as_deref(), Some("llama"));
    // One update moves an adapter from one key to the other. Keys are
    // listed and read through the resolved `..data` link, so a poll sees
    // either the old or the new set, never half of each.
    mount_keys(
        &mount,
        "v2",
        &[
            ("a.yaml", &llama("")),
            ("b.yaml", &deepseek("other, moving")),
        ],
    );
    assert_eq!(store.reload().unwrap(), Reload::Swapped);
    assert_eq!(store.lookup("moving").as_deref(), Some("deepseek"));
    let error = AdapterStore::load([mount.join("missing")]).unwrap_err();
    assert!(
        error.to_string().contains("cm/missing"),
        "errors name the mounted path: {error}"
    );
}

#[test]
fn watcher_reports_every_poll_in_order_and_stops_when_dropped() {
    let dir = TempDir::new("watch");
    let mount = dir.path().join("cm");
    mount_config_map(&mount, "v1", "base", Some("- first\n"));
    let store = AdapterStore::load([&mount]).unwrap();
    let (polled, polls) = mpsc::channel();
    let watcher = store
        .watch_with(Duration::from_millis(1), move |outcome| {
            let _ = polled.send(outcome.clone());
        })
        .unwrap();
    // Nothing changed yet: the first poll finds the same files.
    assert!(matches!(polls.recv().unwrap(), Ok(Reload::Unchanged)));
    mount_config_map(&mount, "v2", "base", Some("- second\n"));
    // Polls that started before the change may still report Unchanged;
    // then exactly one Swapped, after which the new map is visible.
    let swapped = polls
        .iter()
        .find(|outcome| !matches!(outcome, Ok(Reload::Unchanged)))
        .expect("the watcher polls until it sees the change");
    assert!(matches!(swapped, Ok(Reload::Swapped)), "{swapped:?}");
    assert_eq!(store.lookup("second").as_deref(), Some("base"));
    assert_eq!(store.reload_count(), 1);
    // A broken update is reported (and the old map kept), once per content.
    mount_config_map(&mount, "v3", "base", Some("[unclosed\n"));
    let failed = polls
        .iter()
        .find(|outcome| !matches!(outcome, Ok(Reload::Unchanged)))
        .expect("the watcher reports the broken update");
    assert!(
        matches!(
            failed.as_ref().map_err(|e| &**e),
            Err(LoadError::AdaptersNotAList { .. })
        ),
        "{failed:?}"
    );
    assert_eq!(store.lookup("second").as_deref(), Some("base"));
    drop(watcher);
    // Dropping the watcher joined its thread: the callback is gone, so the
    // channel disconnects after the polls already sent, and no poll can
    // pick up a later change.
    let after: Vec<_> = polls.iter().collect();
    assert!(after.iter().all(Result::is_err), "{after:?}");
    mount_config_map(&mount, "v4", "base", Some("- third\n"));
    assert_eq!(store.lookup("third"), None);
    assert_eq!(store.reload_count(), 1);
    assert_eq!(store.failed_reload_count(), 1);
}

/// Events come once per change of the files: a refused content is not
/// reported again by the polls that find it unchanged, and nothing is
/// reported while nothing changes.
#[test]
fn watch_events_reports_each_change_once() {
    let dir = TempDir::new("events");
    let mount = dir.path().join("cm");
    mount_config_map(&mount, "v1", "base", Some("- first\n"));
    let store = AdapterStore::load([&mount]).unwrap();
    let (seen, events) = mpsc::channel();
    let watcher = store
        .watch_events(Duration::from_millis(1), move |event| {
            let _ = seen.send(event);
        })
        .unwrap();
    let quiet = Duration::from_millis(100);
    assert!(events.recv_timeout(quiet).is_err(), "no change, no event");

    mount_config_map(&mount, "v2", "base", Some("[unclosed\n"));
    let refused = events.recv_timeout(Duration::from_secs(10)).unwrap();
    match &refused {
        ReloadEvent::Refused(error) => {
            assert!(
                matches!(**error, LoadError::AdaptersNotAList { .. }),
                "{error:?}"
            );
            assert!(error.with_causes().starts_with(&error.to_string()));
        }
        other => panic!("{other:?}"),
    }
    // About a hundred polls read the refused files again: no second event.
    assert!(events.recv_timeout(quiet).is_err(), "refused once");
    assert_eq!(store.lookup("first").as_deref(), Some("base"));

    mount_config_map(&mount, "v3", "base", Some("- second\n"));
    let applied = events.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(applied.applied(), "{applied:?}");
    assert_eq!(store.lookup("second").as_deref(), Some("base"));
    assert!(events.recv_timeout(quiet).is_err(), "applied once");
    drop(watcher);
    assert_eq!((store.reload_count(), store.failed_reload_count()), (1, 1));
}

/// Many threads look up names while the map is swapped back and forth; every
/// lookup must see either the old or the new map, never a miss.
#[test]
fn readers_never_miss_during_swaps() {
    const READERS: usize = 8;
    const SWAPS: u64 = 200;
    let dir = TempDir::new("readers");
    let mount = dir.path().join("cm");
    let version_a = "- stable\n- only-in-a\n";
    let version_b = "- stable\n- only-in-b\n";
    mount_config_map(&mount, "v0", "base", Some(version_a));
    let store = AdapterStore::load([&mount]).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let store = store.clone();
            let done = done.clone();
            let lookups = lookups.clone();
            std::thread::spawn(move || {
                let mut count = 0u64;
                while !done.load(Ordering::Relaxed) {
                    assert_eq!(store.lookup("stable").as_deref(), Some("base"));
                    assert_eq!(store.lookup("base").as_deref(), Some("base"));
                    let snapshot = store.snapshot();
                    // Within one snapshot the map is consistent: exactly one version.
                    let a = snapshot.lookup("only-in-a").is_some();
                    let b = snapshot.lookup("only-in-b").is_some();
                    assert!(a ^ b, "snapshot mixes versions: a={a} b={b}");
                    count += 1;
                }
                lookups.fetch_add(count, Ordering::Relaxed);
            })
        })
        .collect();
    for swap in 1..=SWAPS {
        let adapters = if swap % 2 == 0 { version_a } else { version_b };
        mount_config_map(&mount, &format!("v{swap}"), "base", Some(adapters));
        assert_eq!(store.reload().unwrap(), Reload::Swapped);
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().expect("a reader saw a failed lookup");
    }
    assert_eq!(store.reload_count(), SWAPS);
    assert!(lookups.load(Ordering::Relaxed) > 0);
}

/// The line each binary writes for a change: a refused edit at WARN with
/// its cause, an applied one at INFO, both naming the config.
#[cfg(feature = "tracing")]
#[test]
fn log_writes_one_line_per_event_with_the_config_and_the_cause() {
    use bbr_adapters::WatchedConfig;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let refused = bbr_adapters::AdapterMap::from_yaml_str("data: [", "inline").unwrap_err();
    let cause = refused.with_causes();
    assert!(cause.len() > refused.to_string().len(), "{cause}");
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        ReloadEvent::Refused(Arc::new(refused)).log(WatchedConfig::Adapters);
        ReloadEvent::Applied.log(WatchedConfig::ModelRewrites);
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].trim_start().starts_with("WARN "), "{}", lines[0]);
    assert!(
        lines[0].contains("reload refused; the previous files stay in force"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("config=\"adapters\""), "{}", lines[0]);
    assert!(lines[0].contains(&format!("error={cause}")), "{}", lines[0]);
    assert!(lines[1].trim_start().starts_with("INFO "), "{}", lines[1]);
    assert!(
        lines[1].ends_with("reloaded config=\"model_rewrites\""),
        "{}",
        lines[1]
    );
}
