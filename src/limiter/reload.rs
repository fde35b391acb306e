//! Hot reload of the rules file: a file watcher, SIGHUP, and
//! [`Limiter::reload`](crate::Limiter::reload), all going through `Core::reload_file`.
//!
//! The file is read and validated on Tokio's blocking pool, never on a runtime worker, so
//! requests keep flowing on the rules in force meanwhile, however large or slow the file.
//! New rules are validated completely, then swapped in atomically (`arc-swap`: requests
//! never wait on a lock). A file that does not validate is rejected, the running rules stay,
//! and the error is logged once per distinct content and kept for [`Stats`](crate::Stats).
//! Each rule identity keeps one state id for the life of the limiter, so buckets survive a
//! reload when their rule's identity is unchanged.
//!
//! Every source of rules installs them, and the last one wins: a file change, SIGHUP,
//! `reload()` and `set_rules`. When the file replaces rules installed by `set_rules`, a
//! warning says so. Whichever installs them, they are the base rules: the runtime entries
//! are merged over them (see `runtime`).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use super::Core;
use super::installed::Installed;
use crate::key::ClientKey;
use crate::rules::{Rules, RulesError, UnreachableOverride};

/// The rules a limiter follows: its rules file, and envoy ratelimit's configuration when
/// it was given one (merged into the rules as their `descriptors`).
pub(crate) struct RulesFile {
    /// The rules file, or the JSON of the rules the limiter was built with when only the
    /// Envoy configuration is followed.
    base: Base,
    /// envoy ratelimit's configuration: a file, or a directory of them.
    #[cfg(feature = "envoy")]
    envoy: Option<PathBuf>,
    /// The most bytes read from it.
    max_bytes: u64,
    /// Held through each reload, so that reloads read and install in turn: a slow reload of
    /// older content never lands after a newer one.
    in_turn: Mutex<()>,
}

enum Base {
    File(PathBuf),
    /// The rules the limiter was built with, followed only for the Envoy configuration.
    #[cfg(feature = "envoy")]
    Given(crate::rules::Source),
}

impl RulesFile {
    pub(crate) fn new(path: PathBuf, max_bytes: u64) -> Self {
        Self {
            base: Base::File(path),
            #[cfg(feature = "envoy")]
            envoy: None,
            max_bytes,
            in_turn: Mutex::new(()),
        }
    }

    /// Follows envoy ratelimit's configuration at `envoy` too, over the rules file or, with
    /// `given`, over these rules.
    #[cfg(feature = "envoy")]
    pub(crate) fn with_envoy(
        file: Option<Self>,
        given: Option<&Rules>,
        envoy: PathBuf,
        max_bytes: u64,
    ) -> Option<Self> {
        let base = match (file, given) {
            (Some(file), _) => file.base,
            (None, Some(rules)) => Base::Given(rules.source().clone()),
            (None, None) => return None,
        };
        Some(Self {
            base,
            envoy: Some(envoy),
            max_bytes,
            in_turn: Mutex::new(()),
        })
    }

    /// The files followed: the rules file's path, and the Envoy configuration's.
    pub(crate) fn paths(&self) -> Vec<&Path> {
        let mut paths = Vec::with_capacity(2);
        match &self.base {
            Base::File(path) => paths.push(path.as_path()),
            #[cfg(feature = "envoy")]
            Base::Given(_) => {}
        }
        #[cfg(feature = "envoy")]
        paths.extend(self.envoy.as_deref());
        paths
    }

    /// The rules' name in logs and errors: the rules file's path, or the name of the rules
    /// given.
    fn name(&self) -> String {
        match &self.base {
            Base::File(path) => path.display().to_string(),
            #[cfg(feature = "envoy")]
            Base::Given(source) => source.name.to_string(),
        }
    }

    /// Reads the rules: their JSON (with the Envoy configuration merged in) and its hash.
    /// The rules file is validated alone first, so that its errors give its own lines and
    /// columns. Blocks: run it with [`off_runtime`].
    fn read(&self) -> Result<(Vec<u8>, u64), RulesError> {
        let bytes = match &self.base {
            Base::File(path) => crate::rules::read_file(path, self.max_bytes)?,
            #[cfg(feature = "envoy")]
            Base::Given(source) => source.json.as_bytes().to_vec(),
        };
        #[cfg(feature = "envoy")]
        let bytes = match &self.envoy {
            None => bytes,
            Some(envoy) => {
                Rules::parse_file(&bytes, Path::new(&self.name()))?;
                let domains = crate::EnvoyDomain::read(envoy)?;
                // It parsed, so it is UTF-8.
                let text = String::from_utf8_lossy(&bytes);
                crate::EnvoyDomain::merge_into(&text, &self.name(), &domains)?.into_bytes()
            }
        };
        let hash = content_hash(&bytes);
        Ok((bytes, hash))
    }

    fn parse(&self, bytes: &[u8]) -> Result<Rules, RulesError> {
        Rules::parse_file(bytes, Path::new(&self.name()))
    }

    /// Reads and validates the rules, returning them and the hash of the content.
    /// Blocks: run it with [`off_runtime`].
    pub(crate) fn load(&self) -> Result<(Rules, u64), RulesError> {
        let (bytes, hash) = self.read()?;
        Ok((self.parse(&bytes)?, hash))
    }
}

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    FileChange,
    Sighup,
    Reload,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::FileChange => "file change",
            Trigger::Sighup => "SIGHUP",
            Trigger::Reload => "reload()",
        }
    }

    /// Whether someone asked for the file: then it is installed even when unchanged, to
    /// replace rules installed by `set_rules`.
    fn is_explicit(self) -> bool {
        self != Trigger::FileChange
    }
}

/// Runs blocking `work` (reading and validating a rules file) on Tokio's blocking pool, so
/// that no runtime worker, and no request queued behind it, waits for it.
pub(crate) async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only a runtime shutting down cancels it, and then nothing awaits this.
            Err(error) => panic!("rules file reload did not run: {error}"),
        },
    }
}

/// What reloads have done so far.
#[derive(Debug, Default)]
pub(crate) struct ReloadState {
    /// Hash of the file content last installed from the file.
    loaded: Option<u64>,
    /// Whether the rules in force were installed by `set_rules` on a limiter that follows a
    /// file, so that the file replacing them is worth a warning.
    set_rules_in_force: bool,
    pub(crate) reloads: u64,
    pub(crate) failures: u64,
    pub(crate) last_error: Option<String>,
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Frees `replaced` rules on this thread (a reload's, off the runtime), rather than in
/// whichever request lets go of them last: a large rule set takes milliseconds to free.
/// Requests hold the rules in force only while they find their rule, so this waits
/// microseconds; past 100 ms it leaves them to the last holder.
pub(crate) fn free_here<T>(mut replaced: Arc<T>) {
    let deadline = Instant::now() + Duration::from_millis(100);
    loop {
        match Arc::try_unwrap(replaced) {
            Ok(value) => return drop(value),
            Err(held) if Instant::now() < deadline => {
                replaced = held;
                std::thread::yield_now();
            }
            Err(_) => return,
        }
    }
}

/// Logs each client override of `rules` that no request can match, and each named rule no
/// route names.
pub(crate) fn warn_unreachable_overrides(rules: &Rules, ipv6_prefix_len: u8) {
    for never in rules.unreachable_overrides(ipv6_prefix_len) {
        tracing::warn!(client = %never.client(), "{never}");
    }
    for unused in rules.unused_rules() {
        tracing::warn!(rule = unused.rule().id(), "{unused}");
    }
}

impl Core {
    /// Swaps in rules that differ from those in force in `client`'s override alone: only
    /// that override is checked, and every rule keeps its state. Returns the rules replaced,
    /// for [`free_here`] once no lock is held.
    pub(crate) fn install_client_change(&self, rules: Rules, client: &ClientKey) -> Arc<Installed> {
        if let Some(never) = UnreachableOverride::of(client, self.ipv6_prefix_len) {
            tracing::warn!(client = %client, "{never}");
        }
        self.state_ids.install(rules, |installed| {
            let replaced = self.installed.swap(Arc::new(installed));
            self.store.client_changed(&self.installed.load().slots);
            replaced
        })
    }

    /// Swaps in new rules; state of rules that no longer exist is dropped. Returns the rules
    /// replaced, for [`free_here`] once no lock is held.
    pub(crate) fn install(&self, rules: Rules) -> Arc<Installed> {
        let policy_changed = {
            let before = self.installed.load();
            (rules.on_redis_error(), rules.local_fallback_instances())
                != (
                    before.rules.on_redis_error(),
                    before.rules.local_fallback_instances(),
                )
        };
        if policy_changed {
            tracing::warn!(
                "on_redis_error and local_fallback_instances are read when the limiter is built; \
                 the new values take effect on restart"
            );
        }
        warn_unreachable_overrides(&rules, self.ipv6_prefix_len);
        self.state_ids.install(rules, |installed| {
            let replaced = self.installed.swap(Arc::new(installed));
            self.store.rules_changed(&self.installed.load().slots);
            replaced
        })
    }

    /// Records the hash of the rules file content loaded at startup.
    pub(crate) fn loaded_from(&self, hash: u64) {
        self.reload_state().loaded = Some(hash);
    }

    pub(crate) fn reload_state(&self) -> std::sync::MutexGuard<'_, ReloadState> {
        self.reload.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Installs rules given by the application (`set_rules`). Until the file is installed
    /// again, a reload that replaces them warns.
    pub(crate) fn set_rules(&self, rules: Rules) {
        let mut state = self.reload_state();
        // Under the reload state's lock, so that the flag describes the last install.
        let replaced = self.install_base(rules);
        state.reloads += 1;
        state.set_rules_in_force = self.rules_file.is_some();
        drop(state);
        free_here(replaced);
        self.events
            .rules_changed("rules".into(), "set_rules", "replaced");
    }

    /// Reads the rules file again. `Ok(true)`: new rules are in force; `Ok(false)`: the
    /// content is unchanged (and, for a file change, rules from `set_rules` stay), or the
    /// limiter has no rules file. On error the running rules stay. Blocks on the file: run it
    /// with [`off_runtime`].
    pub(crate) fn reload_file(&self, trigger: Trigger) -> Result<bool, RulesError> {
        let Some(file) = &self.rules_file else {
            return Ok(false);
        };
        let _in_turn = file.in_turn.lock().unwrap_or_else(PoisonError::into_inner);
        let rules = file.read().and_then(|(bytes, hash)| {
            let mut state = self.reload_state();
            if state.loaded == Some(hash) && !(state.set_rules_in_force && trigger.is_explicit()) {
                // The file is back to what is in force: an earlier failure is over.
                state.last_error = None;
                return Ok(None);
            }
            drop(state);
            Ok(Some((file.parse(&bytes)?, hash)))
        });
        let (rules, hash) = match rules {
            Ok(Some(loaded)) => loaded,
            Ok(None) => return Ok(false),
            Err(error) => {
                self.failed(&error, trigger);
                return Err(error);
            }
        };
        let count = rules.iter().len();
        let mut state = self.reload_state();
        let replaces_set_rules = state.set_rules_in_force;
        let replaced = self.install_base(rules);
        state.loaded = Some(hash);
        state.set_rules_in_force = false;
        state.last_error = None;
        state.reloads += 1;
        drop(state);
        free_here(replaced);
        self.events
            .rules_changed("rules".into(), "file", "replaced");
        let path = file.name();
        if replaces_set_rules {
            tracing::warn!(
                file = %path,
                trigger = trigger.as_str(),
                "the rules file replaced the rules installed by set_rules: on a limiter built \
                 with rules_file, a change to the file, SIGHUP and reload() install the file \
                 (turn off watch_rules_file and reload_on_sighup to keep rules set by hand)"
            );
        }
        tracing::info!(file = %path, rules = count, trigger = trigger.as_str(), "rate limit rules reloaded");
        Ok(true)
    }

    /// Records a failed reload; the same error again (the same broken save, read once
    /// more) is neither counted nor logged twice.
    fn failed(&self, error: &RulesError, trigger: Trigger) {
        let mut state = self.reload_state();
        let message = error.to_string();
        if state.last_error.as_deref() == Some(message.as_str()) {
            return;
        }
        state.failures += 1;
        state.last_error = Some(message);
        drop(state);
        tracing::error!(
            %error,
            trigger = trigger.as_str(),
            "rate limit rules not reloaded; the previous rules stay in force"
        );
    }
}

/// Watches the directory of each of `paths` (and, for a symlink, its target's directory; a
/// directory of Envoy configuration files itself) and reloads on any change there, after a short pause so that a save made of several steps is
/// read once it is complete. Stops when the limiter is dropped.
pub(crate) fn spawn_watcher(core: Weak<Core>, paths: &[&Path]) -> Result<(), notify::Error> {
    let (events, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = events.send(());
        }
    })?;
    let mut directories: Vec<PathBuf> = Vec::new();
    let files = paths
        .iter()
        .flat_map(|path| [Some(path.to_path_buf()), std::fs::canonicalize(path).ok()])
        .flatten();
    for file in files {
        // A directory of Envoy configuration files is watched itself.
        let directory = match file.parent() {
            _ if file.is_dir() => file.clone(),
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
            let Some(core) = core.upgrade() else {
                break;
            };
            // Errors are logged and kept for stats().
            let _ = off_runtime(move || core.reload_file(Trigger::FileChange)).await;
        }
    });
    Ok(())
}

/// Reloads on SIGHUP until the limiter is dropped.
#[cfg(unix)]
pub(crate) fn spawn_sighup(core: Weak<Core>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(core) = core.upgrade() else {
                break;
            };
            let _ = off_runtime(move || core.reload_file(Trigger::Sighup)).await;
        }
    });
    Ok(())
}
