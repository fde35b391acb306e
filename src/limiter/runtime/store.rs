//! Where runtime entries are kept: in the store, shared by every instance that uses it (a
//! [`RuntimeStore`]: Redis's), or, for a store that keeps none (in process), in a state file
//! of this process, replaced atomically on every change and never larger than its cap.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::Change;
use crate::backend::{EntryChange, Kept as StoreKept, RuntimeStore, StoreError};
use crate::limiter::error::RuntimeError;
use crate::limiter::reload::off_runtime;
use crate::rules::{Unread, read_bounded};

/// The largest runtime state file read or written by default: 16 MiB, like the rules file
/// (some 100,000 client overrides). Change it with
/// [`max_state_file_bytes`](crate::LimiterBuilder::max_state_file_bytes).
pub const DEFAULT_MAX_STATE_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Where a limiter keeps its runtime entries.
pub(crate) enum Keeper {
    /// Nowhere: a limiter whose store keeps none, without a state file, refuses changes.
    Unset,
    /// A state file of at most `max_bytes`: `{"entries": {"<target>": <rule>, ...}}`.
    File { path: PathBuf, max_bytes: u64 },
    /// The store, with the entries' version.
    Store(Arc<dyn RuntimeStore>),
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

/// What this instance holds when it makes a change: what the store is checked against, and
/// what a state file is written with.
pub(crate) struct Held {
    /// Whether an entry is stored under the change's target.
    pub(crate) was_stored: bool,
    /// The store's version of the entries held (0 for a state file).
    pub(crate) version: u64,
    /// Whether any entry is held.
    pub(crate) holding: bool,
    /// Every entry once the change is made: for a state file only.
    pub(crate) after: Option<BTreeMap<String, Value>>,
}

/// What became of a change sent to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// Kept: `existed` whether an entry was stored under its target before; `version` the
    /// store's version of the entries with it (0 for a state file).
    Done { existed: bool, version: u64 },
    /// Not kept: the store lost entries this instance holds (it restarted empty). They are
    /// to be written back before the change is made again.
    Behind,
}

impl Keeper {
    /// Every entry stored, by target, and their version. Reads the state file off the
    /// runtime.
    pub(crate) async fn load(&self) -> Result<(BTreeMap<String, Value>, u64), String> {
        match self {
            Keeper::Unset => Ok((BTreeMap::new(), 0)),
            Keeper::File { path, max_bytes } => {
                let (path, max_bytes) = (path.clone(), *max_bytes);
                off_runtime(move || read_state(&path, max_bytes).map(|entries| (entries, 0))).await
            }
            Keeper::Store(store) => {
                let stored = store.load().await.map_err(|e| e.to_string())?;
                Ok((stored.entries, stored.version))
            }
        }
    }

    /// Whether changes are kept in a state file, which is written whole.
    pub(crate) fn is_file(&self) -> bool {
        matches!(self, Keeper::File { .. })
    }

    /// The store, as messages name it: to say it lost entries.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Keeper::Store(store) => store.name(),
            _ => "the runtime state file",
        }
    }

    /// Keeps `change`, made by an instance that holds `held`, unless it would make more
    /// than `max_entries` entries.
    pub(crate) async fn persist(
        &self,
        change: &Change,
        held: Held,
        max_entries: usize,
    ) -> Result<Kept, RuntimeError> {
        match self {
            Keeper::Unset => Err(RuntimeError::NoStore),
            Keeper::File { path, max_bytes } => {
                let text = state_text(&held.after.unwrap_or_default());
                if text.len() as u64 > *max_bytes {
                    return Err(RuntimeError::StateFileTooLarge {
                        path: path.clone(),
                        max_bytes: *max_bytes,
                    });
                }
                let path = path.clone();
                off_runtime(move || write_atomically(&path, &text).map_err(|e| (path, e)))
                    .await
                    .map_err(|(path, source)| RuntimeError::StateFile { path, source })?;
                Ok(Kept::Done {
                    existed: held.was_stored,
                    version: 0,
                })
            }
            Keeper::Store(store) => {
                let target = change.target();
                let rule = match change {
                    Change::Set(entry) => Some(&entry.rule),
                    Change::Remove(_) => None,
                };
                let asked = EntryChange {
                    target: &target,
                    rule,
                    known_version: held.version,
                    holding: held.holding,
                    max_entries,
                };
                let kept = store
                    .change(asked)
                    .await
                    .map_err(|source| RuntimeError::Store {
                        target: target.clone(),
                        source,
                    })?;
                match kept {
                    StoreKept::Made { existed, version } => Ok(Kept::Done { existed, version }),
                    StoreKept::Unchanged => Ok(Kept::Done {
                        existed: false,
                        version: held.version,
                    }),
                    StoreKept::Behind => Ok(Kept::Behind),
                    StoreKept::Full => Err(RuntimeError::TooManyEntries {
                        target,
                        max: max_entries,
                    }),
                }
            }
        }
    }

    /// Writes `entries`, of version `version`, back into a store that lost them. Returns
    /// how many were written back (0: the store was not behind any more).
    pub(crate) async fn restore(
        &self,
        entries: &BTreeMap<String, Value>,
        version: u64,
    ) -> Result<u64, StoreError> {
        match self {
            Keeper::Store(store) => store.restore(entries, version).await,
            _ => Ok(0),
        }
    }
}

/// The entries of the state file at `path`, of at most `max_bytes`; none when there is no
/// file yet.
fn read_state(path: &Path, max_bytes: u64) -> Result<BTreeMap<String, Value>, String> {
    let bytes = match read_bounded(path, max_bytes) {
        Ok(bytes) => bytes,
        Err(Unread::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(BTreeMap::new());
        }
        Err(Unread::Io(error)) => return Err(error.to_string()),
        // A FIFO or a device in its place is not read.
        Err(Unread::NotAFile(_)) => return Err("it is not a regular file".into()),
        Err(Unread::TooLarge) => {
            return Err(format!(
                "it is larger than {max_bytes} bytes, the most that is read (raise the limit \
                 with the builder's max_state_file_bytes, or tollgate serve's \
                 TOLLGATE_STATE_FILE_MAX_BYTES)"
            ));
        }
    };
    serde_json::from_slice::<StateFile>(&bytes)
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

    const MAX: u64 = DEFAULT_MAX_STATE_FILE_BYTES;

    #[test]
    fn the_state_file_is_replaced_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(
            read_state(&path, MAX),
            Ok(BTreeMap::new()),
            "no file yet: no entries"
        );
        let mut entries = BTreeMap::new();
        entries.insert(
            "client:id:k".to_owned(),
            serde_json::json!({"limit": "100/minute"}),
        );
        write_atomically(&path, &state_text(&entries)).unwrap();
        assert_eq!(read_state(&path, MAX), Ok(entries.clone()));
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
        assert_eq!(read_state(&path, MAX), Ok(BTreeMap::new()));
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
        let err = read_state(&path, MAX).unwrap_err();
        assert!(err.starts_with("it is not a runtime state file"), "{err}");
        assert_eq!(
            read_state(dir.path(), MAX).unwrap_err(),
            "it is not a regular file"
        );
    }

    #[test]
    fn a_state_file_over_the_cap_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // A sparse terabyte: refused on its size, so nothing is allocated for it.
        File::create(&path).unwrap().set_len(1 << 40).unwrap();
        let err = read_state(&path, MAX).unwrap_err();
        assert!(err.starts_with("it is larger than 16777216 bytes"), "{err}");
        std::fs::write(&path, "{\"entries\": {}}").unwrap();
        assert_eq!(read_state(&path, 15), Ok(BTreeMap::new()));
        assert!(read_state(&path, 14).is_err());
    }
}
