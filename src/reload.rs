//! Hot reload of the rules file: a file watcher, SIGHUP, and
//! [`RateLimitLayer::reload`](crate::RateLimitLayer::reload), all going through
//! [`Shared::reload_file`].
//!
//! New rules are validated completely, then swapped in atomically (`arc-swap`: requests
//! never wait on a lock). A file that does not validate is rejected, the running rules stay,
//! and the error is logged once per distinct content and kept for [`Stats`](crate::Stats).
//! Each rule identity keeps one state id for the life of the layer, so buckets survive a
//! reload when their rule's identity is unchanged.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::error::RulesError;
use crate::layer::Shared;
use crate::rules::Rules;

/// Rules in force, with the state id of each rule (indexed like [`Rules::iter`]).
pub(crate) struct Installed {
    pub(crate) rules: std::sync::Arc<Rules>,
    pub(crate) state_ids: Box<[u32]>,
    /// Counts installs: a request carries the generation of the rules it was resolved
    /// under, so that what a backend remembers under other rules is not used for it.
    pub(crate) generation: u64,
}

/// What reloads have done so far.
#[derive(Debug, Default)]
pub(crate) struct ReloadState {
    /// Hash of the file content in force, when the rules came from the file.
    loaded: Option<u64>,
    /// Hash of the last content that failed, so the same failure is logged once.
    failed: Option<u64>,
    pub(crate) reloads: u64,
    pub(crate) failures: u64,
    pub(crate) last_error: Option<String>,
}

/// Gives every rule identity one state id for the life of the layer, and every install its
/// generation.
#[derive(Debug, Default)]
pub(crate) struct StateIds(Mutex<(HashMap<Box<str>, u32>, u64)>);

impl StateIds {
    /// Numbers `rules` and hands them to `publish`, under one lock: installs are published
    /// in the order of their generations, so the last published is the newest.
    pub(crate) fn install<R>(&self, rules: Rules, publish: impl FnOnce(Installed) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (ids, generation) = &mut *guard;
        *generation += 1;
        let state_ids = rules
            .iter()
            .map(|rule| {
                let next = u32::try_from(ids.len()).unwrap_or(u32::MAX);
                *ids.entry(rule.id().into()).or_insert(next)
            })
            .collect();
        publish(Installed {
            rules: std::sync::Arc::new(rules),
            state_ids,
            generation: *generation,
        })
    }
}

fn content_hash(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

impl Shared {
    /// Swaps in new rules; state of rules that no longer exist is dropped.
    pub(crate) fn install(&self, rules: Rules) {
        let before = self.installed.load();
        if (rules.on_redis_error(), rules.local_fallback_instances())
            != (
                before.rules.on_redis_error(),
                before.rules.local_fallback_instances(),
            )
        {
            tracing::warn!(
                "on_redis_error and local_fallback_instances are read when the layer is built; \
                 the new values take effect on restart"
            );
        }
        for (client, _) in rules.clients() {
            if !self.keys.can_produce(client) {
                tracing::warn!(
                    %client,
                    "this client override never applies: IPv6 clients are keyed by the network \
                     of ipv6_prefix_len bits (see the builder)"
                );
            }
        }
        self.state_ids.install(rules, |installed| {
            let generation = installed.generation;
            if let Some(memory) = self.backend.memory() {
                let live: HashSet<u32> = installed.state_ids.iter().copied().collect();
                memory.retain_rules(|id| live.contains(&id));
            }
            self.installed.store(std::sync::Arc::new(installed));
            self.backend.rules_changed(generation);
        });
    }

    /// Records the hash of the rules file content loaded at startup.
    pub(crate) fn loaded_from(&self, text: &str) {
        self.reload_state().loaded = Some(content_hash(text));
    }

    pub(crate) fn reload_state(&self) -> std::sync::MutexGuard<'_, ReloadState> {
        self.reload.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the rules file again. `Ok(true)`: new rules are in force; `Ok(false)`: the
    /// content is unchanged. On error the running rules stay.
    pub(crate) fn reload_file(&self, path: &Path, trigger: &str) -> Result<bool, RulesError> {
        let text = match crate::rules::read_text(path) {
            Ok(text) => text,
            Err(error) => {
                self.failed(None, &error, trigger);
                return Err(error);
            }
        };
        let hash = content_hash(&text);
        if self.reload_state().loaded == Some(hash) {
            return Ok(false);
        }
        match Rules::parse_file(&text, path) {
            Ok(rules) => {
                let count = rules.iter().len();
                self.install(rules);
                let mut state = self.reload_state();
                state.loaded = Some(hash);
                state.failed = None;
                state.last_error = None;
                state.reloads += 1;
                drop(state);
                tracing::info!(file = %path.display(), rules = count, trigger, "rate limit rules reloaded");
                Ok(true)
            }
            Err(error) => {
                self.failed(Some(hash), &error, trigger);
                Err(error)
            }
        }
    }

    fn failed(&self, hash: Option<u64>, error: &RulesError, trigger: &str) {
        let mut state = self.reload_state();
        let message = error.to_string();
        let repeated = match hash {
            Some(hash) => state.failed == Some(hash),
            None => state.last_error.as_deref() == Some(message.as_str()),
        };
        if repeated {
            return;
        }
        state.failed = hash;
        state.failures += 1;
        state.last_error = Some(message);
        drop(state);
        tracing::error!(%error, trigger, "rate limit rules not reloaded; the previous rules stay in force");
    }
}

/// Watches the rules file's directory (and, for a symlink, its target's directory) and
/// reloads on any change there, after a short pause so that a save made of several steps is
/// read once it is complete. Stops when the layer is dropped.
pub(crate) fn spawn_watcher(shared: Weak<Shared>, path: PathBuf) -> Result<(), notify::Error> {
    let (events, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = events.send(());
        }
    })?;
    let mut directories: Vec<PathBuf> = Vec::new();
    for file in [Some(path.clone()), std::fs::canonicalize(&path).ok()]
        .into_iter()
        .flatten()
    {
        let directory = match file.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        if !directories.contains(&directory) {
            watcher.watch(&directory, RecursiveMode::NonRecursive)?;
            directories.push(directory);
        }
    }
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        while changes.recv().await.is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            while changes.try_recv().is_ok() {}
            let Some(shared) = shared.upgrade() else {
                break;
            };
            let _ = shared.reload_file(&path, "file change");
        }
    });
    Ok(())
}

/// Reloads on SIGHUP until the layer is dropped.
#[cfg(unix)]
pub(crate) fn spawn_sighup(shared: Weak<Shared>, path: PathBuf) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(shared) = shared.upgrade() else {
                break;
            };
            let _ = shared.reload_file(&path, "SIGHUP");
        }
    });
    Ok(())
}
