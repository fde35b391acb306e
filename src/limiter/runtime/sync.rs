//! Keeping in step with the runtime entries in the store, which every instance using it
//! shares.
//!
//! Each change another instance makes is announced with the entry and the entries' new
//! version: the one after this instance's is applied as it is, reading nothing. Anything
//! else (a gap in the versions, a message not understood, the subscription made again, and
//! every few seconds in case an announcement was lost) reads every entry again. A read that
//! finds the store behind this instance (restarted empty) writes this instance's entries back
//! rather than adopting the loss. Reads that fail are counted, and logged once per episode. A
//! store that hears no news is read again every few seconds only.

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::super::Core;
use super::super::reload::{free_here, off_runtime};
use crate::backend::{EntryNews, News, StoreError};

/// How often the entries in the store are read again, in case an announcement was missed.
pub(crate) const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(5);

/// Reads of the entries in the store that failed, and whether the last one did.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    errors: AtomicU64,
    failing: AtomicBool,
}

impl Reads {
    /// A read of `store`'s entries failed: counted; logged if the one before did not fail.
    fn failed(&self, store: &str, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                %error,
                "the runtime entries in {store} cannot be read; the entries in force here \
                 stay, and are read again until they can be"
            );
        }
    }

    /// A read of `store`'s entries succeeded: logged if the one before failed.
    fn succeeded(&self, store: &str) {
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::info!("the runtime entries in {store} are read again");
        }
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Core {
    /// Reads every stored entry again and puts them in force, unless the store lost entries
    /// this instance holds: those are written back first. Returns whether the entries
    /// could be read.
    async fn resync(self: &Arc<Self>) -> bool {
        let _in_turn = self.runtime.in_turn.lock().await;
        self.reread().await
    }

    /// [`resync`](Self::resync), for a caller that holds the runtime's turn.
    pub(super) async fn reread(self: &Arc<Self>) -> bool {
        let mut wrote_back = false;
        let store = self.runtime.store.name();
        loop {
            let (stored, version) = match self.runtime.store.load().await {
                Ok(loaded) => loaded,
                Err(error) => {
                    self.runtime.reads.failed(store, &error);
                    return false;
                }
            };
            self.runtime.reads.succeeded(store);
            let behind = {
                let layers = self.runtime.layers();
                let (held, held_version) = layers.stored();
                version < held_version
                    || (version == held_version && stored.is_empty() && !held.is_empty())
            };
            if behind && !wrote_back {
                wrote_back = true;
                if let Err(error) = self.write_back().await {
                    self.runtime.reads.failed(store, error.reason());
                    return false;
                }
                continue;
            }
            let core = Arc::clone(self);
            off_runtime(move || {
                let mut layers = core.runtime.layers();
                if let Some(rules) = layers.restore(stored, version) {
                    let replaced = core.install(rules);
                    drop(layers);
                    free_here(replaced);
                    tracing::info!("runtime entries changed in the store; now in force here");
                    core.events
                        .rules_changed("rules".into(), "store", "replaced");
                }
            })
            .await;
            return true;
        }
    }

    /// Writes the entries this instance holds back into the store, which lost them (they are
    /// then read again with whatever the store has). The caller holds the runtime's turn.
    pub(super) async fn write_back(&self) -> Result<(), StoreError> {
        let (held, version) = {
            let layers = self.runtime.layers();
            let (held, version) = layers.stored();
            (held.clone(), version)
        };
        let restored = self.runtime.store.restore(&held, version).await?;
        if restored > 0 {
            let store = self.runtime.store.name();
            tracing::warn!(
                restored,
                held = held.len(),
                "{store} had lost the runtime entries (restarted without persistence?): wrote \
                 back the ones this instance holds"
            );
        }
        Ok(())
    }

    /// A change another instance announced: applied if it is the one after this instance's
    /// version (or already applied, if it is not newer). Returns `false` when changes were
    /// missed before it: then every entry is to be read again.
    async fn apply_announced(
        self: &Arc<Self>,
        version: u64,
        target: String,
        rule: Option<String>,
    ) -> bool {
        let _in_turn = self.runtime.in_turn.lock().await;
        let known = self.runtime.layers().stored_version();
        if version <= known {
            return true;
        }
        if version != known + 1 {
            return false;
        }
        // A value that is not JSON is left out, with the parser's reason.
        let rule = rule.map(|json| serde_json::from_str(&json).unwrap_or(Value::String(json)));
        let changed = if rule.is_some() { "set" } else { "removed" };
        let (core, entry) = (Arc::clone(self), target.clone());
        off_runtime(move || {
            let mut layers = core.runtime.layers();
            let new = layers.apply_announced(&entry, rule, version);
            let replaced = core.put_in_force(new);
            drop(layers);
            free_here(replaced);
        })
        .await;
        tracing::info!(entry = %target, change = changed, "runtime entry changed by another instance");
        self.events.rules_changed(target, "store", changed);
        true
    }
}

/// Applies what `news` brings, as it arrives, and reads every entry again when it says to
/// and `every` after the last news, until the limiter is dropped. A read that fails is tried
/// again sooner (from 250 ms, doubling up to `every`): the store may just be back, its
/// connection not yet.
pub(crate) fn spawn_resync(core: Weak<Core>, news: Arc<EntryNews>, every: Duration) {
    const FIRST_RETRY: Duration = Duration::from_millis(250);
    tokio::spawn(async move {
        let mut retry = None;
        loop {
            let mut reread = tokio::select! {
                () = news.arrived() => false,
                () = tokio::time::sleep(retry.unwrap_or(every)) => true,
            };
            let Some(core) = core.upgrade() else {
                break;
            };
            for heard in news.take() {
                match heard {
                    News::Reread => reread = true,
                    // Once everything is to be read again, single changes add nothing.
                    News::Changed { .. } if reread => {}
                    News::Changed {
                        version,
                        target,
                        rule,
                    } => reread = !core.apply_announced(version, target, rule).await,
                }
            }
            if !reread {
                continue;
            }
            retry = if core.resync().await {
                None
            } else {
                Some(
                    retry
                        .map_or(FIRST_RETRY, |wait: Duration| wait * 2)
                        .min(every),
                )
            };
        }
    });
}
