//! Runtime rule entries in Redis, shared by every instance that uses the same prefix.
//!
//! | key or channel | type | holds |
//! | --- | --- | --- |
//! | `<prefix>:runtime` | hash | a field per entry, named by its target (`client:id:k`, `rule:/api/data@GET`), holding the entry's rule as JSON |
//! | `{<prefix>:runtime}:version` | string | the entries' version: a number every change adds one to |
//! | channel `<prefix>:runtime` | pub/sub | each change, as JSON: `{"version": 7, "target": "client:id:k", "rule": "{\"limit\":\"1/hour\"}"}` (no `rule` for a removal) |
//!
//! The version key's hash tag puts it in the hash's slot on a Redis Cluster (if the prefix
//! has a hash tag of its own, the key is `<prefix>:runtime:version`, which shares it), so a
//! change, its version and its announcement are one script (`change.lua`), atomic there
//! too. An instance applies an announced change alone, without reading anything, when it
//! is the version after its own; it reads every entry again when it missed one (a gap in
//! the versions, a message it cannot read), when its subscription is made again, and every
//! few seconds.
//!
//! The version tells a Redis that lost the entries from one where every entry was removed:
//! removing the last entry leaves the version behind, while a Redis restarted without
//! persistence has neither. An instance that finds Redis behind its own copy (an older
//! version, or no entries at its own version) writes its entries back (`restore.lua`)
//! rather than adopting the loss, and every instance reads them again.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use redis::Script;
use serde_json::Value;

use super::cluster::slot;
use super::{REDIS, RedisBackend};
use crate::backend::{
    EntryChange, EntryNews, Kept, News, RuntimeStore, StoreError, StoreFuture, StoredEntries,
};

static CHANGE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("change.lua")));
static RESTORE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("restore.lua")));

/// The hash's key.
pub(super) fn name(prefix: &str) -> String {
    format!("{prefix}:runtime")
}

/// The channel changes are announced on, of the channels' prefix (see
/// [`RedisBackend::channels`]): `<prefix>:runtime`, as the hash is named, in database 0.
pub(super) fn channel(channels: &str) -> String {
    format!("{channels}:runtime")
}

/// The version's key: in the hash's slot of a Redis Cluster.
fn version_name(prefix: &str) -> String {
    let hash = name(prefix);
    let tagged = format!("{hash}:version");
    if slot(tagged.as_bytes()) == slot(hash.as_bytes()) {
        tagged
    } else {
        format!("{{{hash}}}:version")
    }
}

/// The entries stored, and their version (0 before the first change).
#[derive(Debug, Default)]
struct Stored {
    version: u64,
    /// Target and rule (JSON text), by target order.
    entries: Vec<(String, String)>,
}

/// What became of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Changed {
    /// Made, as `version`; `existed`: an entry was stored under its target before.
    Made { existed: bool, version: u64 },
    /// A removal of an entry not stored: nothing to do.
    Unchanged,
    /// Redis lost entries this instance holds: nothing was written.
    Behind,
    /// A new entry over the most kept: nothing was written.
    Full { entries: u64 },
}

/// A message of the channel: a change, or anything else (read everything again).
pub(super) fn news_of(payload: &[u8]) -> News {
    #[derive(serde::Deserialize)]
    struct Announced {
        version: u64,
        target: String,
        rule: Option<String>,
    }
    match serde_json::from_slice::<Announced>(payload) {
        Ok(Announced {
            version,
            target,
            rule,
        }) => News::Changed {
            version,
            target,
            rule,
        },
        Err(_) => News::Reread,
    }
}

impl RedisBackend {
    /// Every entry stored, and their version. The version is read first: entries changed
    /// in between are newer than it, and the announcements of those changes, applied again,
    /// set them to what they are.
    async fn runtime_entries(&self) -> Result<Stored, String> {
        let mut connection = self.connection().ok_or("not connected to Redis yet")?;
        let mut read = redis::pipe();
        read.cmd("GET")
            .arg(version_name(&self.prefix))
            .cmd("HGETALL")
            .arg(name(&self.prefix));
        let read = read.query_async::<(Option<u64>, Vec<(String, String)>)>(&mut connection);
        let (version, entries) = self.within_deadline(read).await?;
        Ok(Stored {
            version: version.unwrap_or(0),
            entries,
        })
    }

    /// Stores `rule` under `target`, or deletes it for `None`, unless Redis is behind
    /// `known` (the version this instance holds; `holding`: it holds entries) or a new entry
    /// would make more than `max_entries`; announces the change.
    async fn change_runtime_entry(
        &self,
        target: &str,
        rule: Option<&str>,
        (known, holding): (u64, bool),
        max_entries: usize,
    ) -> Result<Changed, String> {
        let mut connection = self.connection().ok_or("not connected to Redis yet")?;
        let mut change = CHANGE.key(name(&self.prefix));
        change
            .key(version_name(&self.prefix))
            .arg(target)
            .arg(rule.unwrap_or(""))
            .arg(known)
            .arg(if holding { "1" } else { "0" })
            .arg(max_entries)
            .arg(channel(&self.channels));
        let change = change.invoke_async::<(String, u64)>(&mut connection);
        let (status, number) = self.within_deadline(change).await?;
        Ok(match status.as_str() {
            "added" | "replaced" | "removed" => Changed::Made {
                existed: status != "added",
                version: number,
            },
            "unchanged" => Changed::Unchanged,
            "behind" => Changed::Behind,
            "full" => Changed::Full { entries: number },
            other => return Err(format!("unexpected answer from the change script: {other}")),
        })
    }

    /// Writes `entries` (target and rule as JSON) back, if Redis is still behind `known`;
    /// every instance is told to read them again. Returns how many were written back (0:
    /// Redis was not behind any more).
    async fn restore_runtime_entries<'a>(
        &self,
        entries: impl Iterator<Item = (&'a str, String)>,
        known: u64,
    ) -> Result<u64, String> {
        let mut connection = self.connection().ok_or("not connected to Redis yet")?;
        let mut restore = RESTORE.key(name(&self.prefix));
        restore
            .key(version_name(&self.prefix))
            .arg(known)
            .arg(channel(&self.channels));
        for (target, rule) in entries {
            restore.arg(target).arg(rule);
        }
        let restored = restore.invoke_async::<(u64, u64)>(&mut connection);
        let (restored, _version) = self.within_deadline(restored).await?;
        Ok(restored)
    }

    /// `command`'s answer, or why there is none within the deadline of commands other than
    /// decisions. A key of another type than expected says which key and what to do.
    async fn within_deadline<T>(
        &self,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        let deadline = self.command_timeout();
        match tokio::time::timeout(deadline, command).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) if wrong_type(&error) => {
                let (hash, version) = (name(&self.prefix), version_name(&self.prefix));
                Err(format!(
                    "{hash} is not a hash, or {version} not a number (WRONGTYPE): the runtime \
                     entries cannot be read or changed until it is deleted; once it is, every \
                     instance writes back the entries it holds ({error})"
                ))
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("Redis did not answer within {deadline:?}")),
        }
    }
}

impl RuntimeStore for RedisBackend {
    fn name(&self) -> &'static str {
        REDIS
    }

    fn load(&self) -> StoreFuture<'_, Result<StoredEntries, StoreError>> {
        Box::pin(async move {
            let stored = self
                .runtime_entries()
                .await
                .map_err(|reason| StoreError::new(REDIS, reason))?;
            let entries = stored
                .entries
                .into_iter()
                // A value that is not JSON is left out, with the parser's reason.
                .map(|(target, json)| {
                    let rule = serde_json::from_str(&json).unwrap_or(Value::String(json));
                    (target, rule)
                })
                .collect();
            Ok(StoredEntries::new(entries, stored.version))
        })
    }

    fn change<'a>(&'a self, change: EntryChange<'a>) -> StoreFuture<'a, Result<Kept, StoreError>> {
        Box::pin(async move {
            let rule = change.rule.map(Value::to_string);
            let known = (change.known_version, change.holding);
            let changed = self
                .change_runtime_entry(change.target, rule.as_deref(), known, change.max_entries)
                .await
                .map_err(|reason| StoreError::new(REDIS, reason))?;
            Ok(match changed {
                Changed::Made { existed, version } => Kept::Made { existed, version },
                Changed::Unchanged => Kept::Unchanged,
                Changed::Behind => Kept::Behind,
                Changed::Full { .. } => Kept::Full,
            })
        })
    }

    fn restore<'a>(
        &'a self,
        entries: &'a BTreeMap<String, Value>,
        version: u64,
    ) -> StoreFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let entries = entries
                .iter()
                .map(|(target, rule)| (target.as_str(), rule.to_string()));
            self.restore_runtime_entries(entries, version)
                .await
                .map_err(|reason| StoreError::new(REDIS, reason))
        })
    }

    fn news(&self) -> Option<Arc<EntryNews>> {
        Some(Arc::clone(&self.runtime_news))
    }
}

/// Whether Redis refused a command (alone, or in a pipeline) for a key of another type.
fn wrong_type(error: &redis::RedisError) -> bool {
    error.code() == Some("WRONGTYPE")
        || error
            .clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, error)| error.code() == "WRONGTYPE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_kept_in_the_slot_of_the_entries() {
        assert_eq!(version_name("tollgate"), "{tollgate:runtime}:version");
        assert_eq!(
            slot(version_name("tollgate").as_bytes()),
            slot(name("tollgate").as_bytes())
        );
        // A prefix with a hash tag of its own: the tag decides both slots.
        assert_eq!(version_name("{app}"), "{app}:runtime:version");
        assert_eq!(
            slot(version_name("{app}").as_bytes()),
            slot(name("{app}").as_bytes())
        );
    }

    #[test]
    fn news_is_a_change_or_a_reread() {
        assert_eq!(
            news_of(
                br#"{"version": 7, "target": "client:id:k", "rule": "{\"limit\":\"1/hour\"}"}"#
            ),
            News::Changed {
                version: 7,
                target: "client:id:k".into(),
                rule: Some(r#"{"limit":"1/hour"}"#.into())
            }
        );
        assert_eq!(
            news_of(br#"{"version": 8, "target": "rule:/a"}"#),
            News::Changed {
                version: 8,
                target: "rule:/a".into(),
                rule: None
            }
        );
        // Entries written back; an older instance's message (the field's name); junk.
        for other in [
            &br#"{"version": 9, "restored": 3}"#[..],
            b"client:id:k",
            b"\xff",
        ] {
            assert_eq!(news_of(other), News::Reread);
        }
    }
}
