//! Where runtime entries are kept: in Redis, shared by every instance that uses it (see
//! `backend::redis::runtime`), or, on the in-memory backend, in a state file of this
//! process, replaced atomically on every change.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
#[cfg(feature = "redis")]
use std::sync::Arc;

use serde_json::Value;

use super::Change;
use crate::limiter::error::RuntimeError;
use crate::limiter::reload::off_runtime;

/// Where a limiter keeps its runtime entries.
pub(crate) enum Store {
    /// Nowhere: an in-memory limiter without a state file refuses changes.
    Unset,
    /// A state file: `{"entries": {"<target>": <rule>, ...}}`.
    File(PathBuf),
    /// The hash `<prefix>:runtime`.
    #[cfg(feature = "redis")]
    Redis(Arc<crate::backend::redis::RedisBackend>),
}

/// The state file, as written.
#[derive(serde::Serialize)]
struct StateFileRef<'a> {
    entries: &'a BTreeMap<String, Value>,
}

/// The state file, as read.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    entries: BTreeMap<String, Value>,
}

impl Store {
    /// Every entry stored, by target. Reads the state file off the runtime.
    pub(crate) async fn load(&self) -> Result<BTreeMap<String, Value>, String> {
        match self {
            Store::Unset => Ok(BTreeMap::new()),
            Store::File(path) => {
                let path = path.clone();
                off_runtime(move || read_state(&path)).await
            }
            #[cfg(feature = "redis")]
            Store::Redis(redis) => Ok(redis
                .runtime_entries()
                .await?
                .into_iter()
                // A value that is not JSON is left out, with the parser's reason.
                .map(|(target, json)| {
                    let rule = serde_json::from_str(&json).unwrap_or(Value::String(json));
                    (target, rule)
                })
                .collect()),
        }
    }

    /// Stores `change`, after which the entries stored are `entries`. Returns whether an
    /// entry was stored under the change's target before (as the state file had it, or as
    /// Redis says).
    pub(crate) async fn persist(
        &self,
        change: &Change,
        entries: &BTreeMap<String, Value>,
        was_stored: bool,
    ) -> Result<bool, RuntimeError> {
        #[cfg(not(feature = "redis"))]
        let _ = change;
        match self {
            Store::Unset => Err(RuntimeError::NoStore),
            Store::File(path) => {
                let (path, text) = (path.clone(), state_text(entries));
                off_runtime(move || write_atomically(&path, &text).map_err(|e| (path, e)))
                    .await
                    .map_err(|(path, source)| RuntimeError::StateFile { path, source })?;
                Ok(was_stored)
            }
            #[cfg(feature = "redis")]
            Store::Redis(redis) => {
                let rule = match change {
                    Change::Set(entry) => Some(entry.rule.to_string()),
                    Change::Remove(_) => None,
                };
                let target = change.target();
                redis
                    .store_runtime_entry(&target, rule.as_deref())
                    .await
                    .map_err(|reason| RuntimeError::Redis { target, reason })
            }
        }
    }

    /// Tells every instance sharing the store that `change` was made. A failure is logged:
    /// the change is stored, and every instance finds it at its next re-read.
    pub(crate) async fn announce(&self, change: &Change) {
        #[cfg(feature = "redis")]
        if let Store::Redis(redis) = self
            && let Err(error) = redis.announce_runtime_change(&change.target()).await
        {
            tracing::warn!(
                entry = %change.target(),
                %error,
                "runtime entry stored but not announced; other instances apply it at their next re-read"
            );
        }
        #[cfg(not(feature = "redis"))]
        let _ = change;
    }
}

/// The entries of the state file at `path`; none when there is no file yet.
fn read_state(path: &Path) -> Result<BTreeMap<String, Value>, String> {
    match std::fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(error) => return Err(error.to_string()),
        // A FIFO or a device in its place is not read.
        Ok(metadata) if !metadata.is_file() => return Err("it is not a regular file".into()),
        Ok(_) => {}
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str::<StateFile>(&text)
        .map(|state| state.entries)
        .map_err(|e| format!("it is not a runtime state file ({{\"entries\": {{...}}}}): {e}"))
}

fn state_text(entries: &BTreeMap<String, Value>) -> Vec<u8> {
    let mut text = serde_json::to_vec_pretty(&StateFileRef { entries }).unwrap_or_default();
    text.push(b'\n');
    text
}

/// Replaces the file at `path` with `bytes`, so that a reader (or a crash) finds the old
/// content or the new, never a part: written to a temporary file beside it, flushed to disk,
/// renamed over it, and the directory flushed so the rename lasts.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let temporary = directory.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    #[cfg(unix)]
    if let Err(error) = File::open(directory).and_then(|d| d.sync_all()) {
        // The new content is in place; only its surviving a power cut is not certain.
        tracing::warn!(directory = %directory.display(), %error, "cannot flush the runtime state file's directory");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_is_replaced_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(
            read_state(&path),
            Ok(BTreeMap::new()),
            "no file yet: no entries"
        );
        let mut entries = BTreeMap::new();
        entries.insert(
            "client:id:k".to_owned(),
            serde_json::json!({"limit": "100/minute"}),
        );
        write_atomically(&path, &state_text(&entries)).unwrap();
        assert_eq!(read_state(&path), Ok(entries.clone()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("{\n  \"entries\": {\n    \"client:id:k\""),
            "{text}"
        );
        // Nothing else is left in the directory: the temporary file was renamed.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        entries.clear();
        write_atomically(&path, &state_text(&entries)).unwrap();
        assert_eq!(read_state(&path), Ok(BTreeMap::new()));
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{\"entries\": {}}").unwrap();
        // A directory where the temporary file goes: creating it fails, as on a full or
        // read-only disk.
        let temporary = dir
            .path()
            .join(format!(".state.json.{}.tmp", std::process::id()));
        std::fs::create_dir(&temporary).unwrap();
        assert!(write_atomically(&path, b"{}").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"entries\": {}}");
    }

    #[test]
    fn what_is_not_a_state_file_is_an_error_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{\"default\": {}}").unwrap();
        let err = read_state(&path).unwrap_err();
        assert!(err.starts_with("it is not a runtime state file"), "{err}");
        assert_eq!(
            read_state(dir.path()).unwrap_err(),
            "it is not a regular file"
        );
    }
}
