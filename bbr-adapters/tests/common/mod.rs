//! Test helpers: self-cleaning temporary directories and the kubelet's
//! mounted-ConfigMap layout.
#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("bbr-adapters-{label}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent");
        }
        fs::write(&path, text).expect("write file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes a ConfigMap the way the kubelet mounts it: the keys live in a
/// timestamped dot-directory, `..data` links to it, and each key is a
/// symlink through `..data`.
pub fn mount_config_map(dir: &Path, version: &str, base_model: &str, adapters: Option<&str>) {
    let mut keys = vec![("baseModel", base_model)];
    if let Some(adapters) = adapters {
        keys.push(("adapters", adapters));
    }
    mount_keys(dir, version, &keys);
}

/// Mounts any set of keys (file name, content) with the kubelet's layout;
/// a second call with a new `version` is the kubelet's atomic update.
pub fn mount_keys(dir: &Path, version: &str, keys: &[(&str, &str)]) {
    fs::create_dir_all(dir).expect("create mount dir");
    let data_dir_name = format!("..{version}");
    let data_dir = dir.join(&data_dir_name);
    fs::create_dir_all(&data_dir).expect("create data dir");
    for (name, content) in keys {
        fs::write(data_dir.join(name), content).expect("write key");
    }
    let link = dir.join("..data");
    if link.symlink_metadata().is_ok() {
        // The kubelet's atomic update: a new link renamed over the old one.
        let tmp = dir.join("..data_tmp");
        symlink(&data_dir_name, &tmp).expect("symlink tmp");
        fs::rename(&tmp, &link).expect("rename over ..data");
    } else {
        symlink(&data_dir_name, &link).expect("symlink ..data");
    }
    for (name, _) in keys {
        let key_link = dir.join(name);
        if key_link.symlink_metadata().is_err() {
            symlink(format!("..data/{name}"), key_link).expect("symlink key");
        }
    }
}
