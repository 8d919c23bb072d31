//! Reading the upstream ConfigMap format from files and directories.
//!
//! Loading is split in two steps so the reload watcher can compare what it
//! read with the previous poll before parsing anything: [`collect`] reads the
//! raw bytes of every relevant file, [`parse_source`] turns them into
//! [`ConfigMapData`].

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

use crate::error::{LoadError, Origin, YamlError};
use crate::{MAX_DIR_DEPTH, MAX_FILE_BYTES};

/// The raw content of one source, as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceFile {
    /// A file of YAML manifests.
    Manifest { path: PathBuf, text: Vec<u8> },
    /// A ConfigMap mounted as a volume: one file per data key.
    Mounted {
        dir: PathBuf,
        base_model: Vec<u8>,
        adapters: Option<Vec<u8>>,
    },
}

/// One ConfigMap's contribution: a base model and its adapters.
#[derive(Debug)]
pub(crate) struct ConfigMapData {
    pub(crate) base_model: String,
    pub(crate) adapters: Vec<String>,
    pub(crate) origin: Origin,
}

/// Name of the data key (and file, in a mounted volume) holding the base model.
const BASE_MODEL_KEY: &str = "baseModel";
/// Name of the data key (and file) holding the adapter list.
const ADAPTERS_KEY: &str = "adapters";
/// The symlink Kubernetes swaps atomically to update a mounted ConfigMap.
const MOUNT_DATA_LINK: &str = "..data";

/// Reads every source at `path`, in a stable (sorted) order.
pub(crate) fn collect(path: &Path) -> Result<Vec<SourceFile>, LoadError> {
    let mut out = Vec::new();
    collect_into(path, path, 0, true, &mut out)?;
    Ok(out)
}

/// `shown` is the path errors name; `real` is where the bytes are read
/// (they differ below a resolved `..data` link).
fn collect_into(
    shown: &Path,
    real: &Path,
    depth: usize,
    explicit: bool,
    out: &mut Vec<SourceFile>,
) -> Result<(), LoadError> {
    let metadata = fs::metadata(real).map_err(|source| io_error(shown, source))?;
    if metadata.is_file() {
        if explicit || has_manifest_extension(shown) {
            out.push(SourceFile::Manifest {
                path: shown.to_owned(),
                text: read_bounded(real, shown)?,
            });
        }
        return Ok(());
    }
    if !metadata.is_dir() {
        return Ok(());
    }
    if depth >= MAX_DIR_DEPTH {
        return Err(LoadError::TooDeep {
            path: shown.to_owned(),
            limit: MAX_DIR_DEPTH,
        });
    }
    // A mounted ConfigMap: list (and read) through `..data`, resolved once,
    // so one poll sees one atomic update of the volume.
    let resolved = fs::canonicalize(real.join(MOUNT_DATA_LINK)).ok();
    let listed = resolved.as_deref().unwrap_or(real);
    if listed.join(BASE_MODEL_KEY).is_file() {
        out.push(read_mounted(shown, listed)?);
        return Ok(());
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(listed).map_err(|source| io_error(shown, source))? {
        let entry = entry.map_err(|source| io_error(shown, source))?;
        // Dot entries include the `..data` and `..<timestamp>` parts of a
        // mounted volume, and editor or VCS leftovers.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        names.push(entry.file_name());
    }
    names.sort();
    for name in names {
        collect_into(
            &shown.join(&name),
            &listed.join(&name),
            depth + 1,
            false,
            out,
        )?;
    }
    Ok(())
}

/// Reads a mounted ConfigMap's two keys from `data_dir` (the resolved
/// `..data` directory when there is one).
fn read_mounted(shown: &Path, data_dir: &Path) -> Result<SourceFile, LoadError> {
    let base_model = read_bounded(&data_dir.join(BASE_MODEL_KEY), &shown.join(BASE_MODEL_KEY))?;
    let adapters_path = data_dir.join(ADAPTERS_KEY);
    let adapters = if adapters_path.exists() {
        Some(read_bounded(&adapters_path, &shown.join(ADAPTERS_KEY))?)
    } else {
        None
    };
    Ok(SourceFile::Mounted {
        dir: shown.to_owned(),
        base_model,
        adapters,
    })
}

fn has_manifest_extension(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|ext| ext.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn read_bounded(path: &Path, shown: &Path) -> Result<Vec<u8>, LoadError> {
    let file = fs::File::open(path).map_err(|source| io_error(shown, source))?;
    let mut text = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|source| io_error(shown, source))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(LoadError::FileTooLarge {
            path: shown.to_owned(),
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(text)
}

fn io_error(path: &Path, source: std::io::Error) -> LoadError {
    LoadError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Parses one collected source.
pub(crate) fn parse_source(file: &SourceFile) -> Result<Vec<ConfigMapData>, LoadError> {
    match file {
        SourceFile::Manifest { path, text } => {
            let text = std::str::from_utf8(text).map_err(|_| LoadError::Yaml {
                origin: Origin::new(path),
                source: YamlError(<serde_norway::Error as serde::de::Error>::custom(
                    "file is not utf-8",
                )),
            })?;
            parse_manifest(text, path)
        }
        SourceFile::Mounted {
            dir,
            base_model,
            adapters,
        } => {
            let origin = Origin::new(dir);
            let base_model = String::from_utf8_lossy(base_model);
            let base_model = base_model.trim();
            if base_model.is_empty() {
                return Err(LoadError::MissingBaseModel { origin });
            }
            let adapters = match adapters {
                Some(text) => match std::str::from_utf8(text) {
                    Ok(text) => parse_adapter_list(text, &origin)?,
                    Err(_) => {
                        return Err(LoadError::AdaptersNotAList {
                            origin,
                            source: None,
                        });
                    }
                },
                None => Vec::new(),
            };
            Ok(vec![ConfigMapData {
                base_model: base_model.to_owned(),
                adapters,
                origin,
            }])
        }
    }
}

/// Parses a YAML text of Kubernetes manifests: several documents, `kind:
/// List` / `ConfigMapList`, and ConfigMaps. Empty documents and objects of
/// other kinds are skipped.
pub(crate) fn parse_manifest(text: &str, path: &Path) -> Result<Vec<ConfigMapData>, LoadError> {
    let mut out = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let origin = Origin::new(path).with_document(index + 1);
        let value = Value::deserialize(document).map_err(|source| LoadError::Yaml {
            origin: origin.clone(),
            source: YamlError(source),
        })?;
        visit_object(&value, &origin, 0, &mut out)?;
    }
    Ok(out)
}

/// Parses one object (a ConfigMap from the Kubernetes API); `origin` names it.
#[cfg(feature = "kube")]
pub(crate) fn parse_object(value: &Value, origin: &Origin) -> Result<ConfigMapData, LoadError> {
    parse_config_map(value, origin)
}

fn visit_object(
    value: &Value,
    origin: &Origin,
    depth: usize,
    out: &mut Vec<ConfigMapData>,
) -> Result<(), LoadError> {
    let object = match value {
        Value::Null => return Ok(()),
        Value::Mapping(_) => value,
        _ => {
            return Err(LoadError::NotAnObject {
                origin: origin.clone(),
            });
        }
    };
    match object.get("kind").and_then(Value::as_str) {
        Some("List" | "ConfigMapList") if depth == 0 => {
            let items = match object.get("items") {
                None | Some(Value::Null) => return Ok(()),
                Some(Value::Sequence(items)) => items,
                Some(_) => {
                    return Err(LoadError::NotAnObject {
                        origin: origin.clone(),
                    });
                }
            };
            for item in items {
                visit_object(item, origin, depth + 1, out)?;
            }
            Ok(())
        }
        Some("ConfigMap") => {
            out.push(parse_config_map(object, origin)?);
            Ok(())
        }
        // A manifest without `kind` that still has `data` is read as a
        // ConfigMap (hand-written files often omit the envelope).
        None if object.get("data").is_some() => {
            out.push(parse_config_map(object, origin)?);
            Ok(())
        }
        None => Err(LoadError::NotAnObject {
            origin: origin.clone(),
        }),
        // Deployments, Services and other objects in the same manifests.
        Some(_) => Ok(()),
    }
}

fn parse_config_map(object: &Value, origin: &Origin) -> Result<ConfigMapData, LoadError> {
    let metadata = object.get("metadata");
    let name = metadata.and_then(|m| m.get("name")).and_then(Value::as_str);
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    let name = match (namespace, name) {
        (Some(namespace), Some(name)) => Some(format!("{namespace}/{name}")),
        (None, Some(name)) => Some(name.to_owned()),
        _ => None,
    };
    let origin = origin.clone().with_name(name);
    let data = object.get("data");
    let base_model = match data.and_then(|d| d.get(BASE_MODEL_KEY)) {
        None | Some(Value::Null) => return Err(LoadError::MissingBaseModel { origin }),
        Some(value) => match scalar_to_string(value) {
            Some(text) => text,
            None => return Err(LoadError::BaseModelNotAString { origin }),
        },
    };
    let base_model = base_model.trim();
    if base_model.is_empty() {
        return Err(LoadError::MissingBaseModel { origin });
    }
    let adapters = match data.and_then(|d| d.get(ADAPTERS_KEY)) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => parse_adapter_list(text, &origin)?,
        // Kubernetes requires string data, but a hand-written file may give
        // the list directly; it means the same thing.
        Some(Value::Sequence(items)) => {
            let mut adapters = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::Null => {}
                    other => match scalar_to_string(other) {
                        Some(text) => adapters.push(text.trim().to_owned()),
                        None => {
                            return Err(LoadError::AdaptersNotAList {
                                origin,
                                source: None,
                            });
                        }
                    },
                }
            }
            adapters.retain(|adapter| !adapter.is_empty());
            adapters
        }
        Some(_) => {
            return Err(LoadError::AdaptersNotAList {
                origin,
                source: None,
            });
        }
    };
    Ok(ConfigMapData {
        base_model: base_model.to_owned(),
        adapters,
        origin,
    })
}

/// Parses the text of `data.adapters`: a YAML list whose scalar entries are
/// read as strings (`- 1` is the adapter `"1"`), trimmed, blanks skipped. A
/// blank text is an empty list.
fn parse_adapter_list(text: &str, origin: &Origin) -> Result<Vec<String>, LoadError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let entries: Option<Vec<Option<String>>> =
        serde_norway::from_str(text).map_err(|source| LoadError::AdaptersNotAList {
            origin: origin.clone(),
            source: Some(YamlError(source)),
        })?;
    Ok(entries
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.trim().to_owned())
        .filter(|entry| !entry.is_empty())
        .collect())
}

fn scalar_to_string(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}
