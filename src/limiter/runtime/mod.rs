//! Runtime rule changes: client overrides and routes set while the limiter runs, over the
//! base rules (the rules file, or rules given to the builder or
//! [`set_rules`](crate::Limiter::set_rules)).
//!
//! An entry is a fragment of a rules file, validated like the file; the rules in force are
//! the base rules' JSON with the entries merged (an entry takes the place of the base
//! rules' entry with the same target), parsed by the same parser and installed as a reload
//! installs, so state survives for every rule whose identity is unchanged. A new base (the
//! file reloaded) gets the entries merged again. Entries are kept in the store (Redis), where every
//! limiter using it applies them, or in a state file; a change that cannot be kept is not
//! made.

mod layers;
mod store;
mod sync;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;

use super::error::RuntimeError;
use super::installed::Installed;
use super::reload::{free_here, off_runtime};
use super::{Core, Limiter};
use crate::backend::StoreError;
use crate::key::ClientKey;
use crate::rules::{Entry, RuleTarget, Rules, pattern_id};
pub(crate) use layers::{Layers, NewRules};
pub use store::DEFAULT_MAX_STATE_FILE_BYTES;
pub(crate) use store::Keeper;
use store::{Held, Kept};
pub(crate) use sync::{DEFAULT_RESYNC_INTERVAL, Reads, spawn_resync};

/// The most runtime entries a limiter keeps by default: see
/// [`max_runtime_entries`](crate::LimiterBuilder::max_runtime_entries).
pub const DEFAULT_MAX_RUNTIME_ENTRIES: usize = 10_000;

/// Where a rule in force comes from.
///
/// # Example
///
/// ```
/// use tollgate::Origin;
///
/// assert_eq!(serde_json::to_value(Origin::Runtime).unwrap(), "runtime");
/// assert_eq!(serde_json::to_value(Origin::Base).unwrap(), "base");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The base rules: the rules file, or rules given to the builder or
    /// [`set_rules`](crate::Limiter::set_rules).
    Base,
    /// A runtime entry.
    Runtime,
}

/// A rule in force, as the rules file writes it, and where it comes from: see
/// [`Limiter::rule_entries`].
///
/// # Example
///
/// ```
/// use tollgate::{Limiter, Origin, RuleTarget, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "10/second"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let entries = limiter.rule_entries();
/// assert_eq!(entries[0].target, RuleTarget::Rule("default".into()));
/// assert_eq!(entries[0].origin, Origin::Base);
/// assert_eq!(entries[0].rule, serde_json::json!({"limit": "10/second"}));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct RuleEntry {
    /// The rule's identity, or the client it overrides the limit of.
    pub target: RuleTarget,
    /// Where it comes from.
    pub origin: Origin,
    /// The rule as the rules file writes it.
    pub rule: Value,
}

/// A runtime entry, as stored: see [`Limiter::runtime_entries`].
///
/// # Example
///
/// ```
/// use serde_json::json;
/// use tollgate::{ClientKey, Limiter, RuleTarget, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let limiter = Limiter::builder()
///     .rules(Rules::from_json(r#"{"default": {"limit": "10/second"}}"#)?)
///     .runtime_state_file(dir.path().join("tollgate-runtime.json"))
///     .build()
///     .await?;
/// limiter.set_client_override(&ClientKey::id("k"), json!({"limit": "100/minute"})).await?;
/// let entries = limiter.runtime_entries();
/// assert_eq!(entries[0].target, RuleTarget::Client(ClientKey::id("k")));
/// assert_eq!(entries[0].rule, json!({"limit": "100/minute"}));
/// assert!(!entries[0].replaces_base);
/// assert_eq!(entries[0].left_out, None);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct RuntimeEntry {
    /// What it applies to: `rule:<route identity>` or `client:<client key>`.
    pub target: RuleTarget,
    /// The rule as the rules file writes it.
    pub rule: Value,
    /// Whether the base rules have a rule for the same target, which removing the entry
    /// puts back in force.
    pub replaces_base: bool,
    /// Why the entry is not in force, when it is not: it no longer fits the base rules
    /// (the file changed under it), or the entries stored by two limiters at once conflict.
    pub left_out: Option<String>,
}

/// One change to the runtime entries.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Set(Entry),
    Remove(RuleTarget),
}

impl Change {
    /// The target changed, as entries are stored under it.
    pub(crate) fn target(&self) -> String {
        match self {
            Change::Set(entry) => entry.target.to_string(),
            Change::Remove(target) => target.to_string(),
        }
    }

    /// Makes the change in `stored`, every entry by target.
    pub(crate) fn apply_to(&self, stored: &mut BTreeMap<String, Value>) {
        match self {
            Change::Set(entry) => {
                stored.insert(entry.target.to_string(), entry.rule.clone());
            }
            Change::Remove(target) => {
                stored.remove(&target.to_string());
            }
        }
    }
}

/// A limiter's runtime entries: where they are kept, and the layers of the rules in force.
pub(crate) struct Runtime {
    store: Keeper,
    /// Held through each change and each re-read of the store, so that they happen in turn
    /// (a re-read begun before a change never lands after it).
    in_turn: tokio::sync::Mutex<()>,
    layers: Mutex<Layers>,
    /// The most entries kept: a new entry past it is refused.
    max_entries: usize,
    /// Reads of the entries in the store, and those that failed.
    reads: Reads,
}

impl Runtime {
    pub(crate) fn new(store: Keeper, layers: Layers, max_entries: usize) -> Self {
        Self {
            store,
            in_turn: tokio::sync::Mutex::new(()),
            layers: Mutex::new(layers),
            max_entries,
            reads: Reads::default(),
        }
    }

    /// Reads of the entries in the store that failed.
    pub(crate) fn read_errors(&self) -> u64 {
        self.reads.errors()
    }

    /// The layers; every install holds them (merging may take a while on a large rules
    /// file: take them off the runtime).
    pub(crate) fn layers(&self) -> MutexGuard<'_, Layers> {
        self.layers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runtime rule changes. Each change is validated like the rules file, kept (in Redis, or
/// in the [state file](crate::LimiterBuilder::runtime_state_file)), then put in force
/// here; with Redis, every other limiter using it applies it within milliseconds (it is
/// announced over pub/sub), and in any case within its
/// [re-read interval](crate::LimiterBuilder::runtime_resync_interval). A change that is
/// invalid, or cannot be kept, is refused whole: nothing applied, nothing stored.
impl Limiter {
    /// Gives `client` its own limit on every limited rule, as the rules file's `clients`
    /// does: `rule` is the value of that entry, like `{"limit": "100/minute"}` or
    /// `{"unlimited": true}`. It replaces the base rules' override for the same client.
    ///
    /// ```
    /// use serde_json::json;
    /// use tollgate::{ClientKey, Limiter, Query, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let state = dir.path().join("tollgate-runtime.json");
    /// let limiter = Limiter::builder()
    ///     .rules(Rules::from_json(r#"{"default": {"limit": "10/second"}}"#)?)
    ///     .runtime_state_file(&state)
    ///     .build()
    ///     .await?;
    /// let k = ClientKey::id("k");
    /// limiter.set_client_override(&k, json!({"limit": "1/hour"})).await?;
    /// assert!(limiter.check(Query::new(&k)).await?.allowed());
    /// assert!(!limiter.check(Query::new(&k)).await?.allowed());
    /// assert!(std::fs::read_to_string(&state)?.contains("client:id:k"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_client_override(
        &self,
        client: &ClientKey,
        rule: Value,
    ) -> Result<(), RuntimeError> {
        let entry = Entry::client(client, rule).map_err(RuntimeError::Invalid)?;
        self.core.change(Change::Set(entry)).await.map(drop)
    }

    /// Removes `client`'s runtime override: the base rules' override for it, if they have
    /// one, applies again. Returns whether there was one.
    ///
    /// ```
    /// use serde_json::json;
    /// use tollgate::{ClientKey, Limiter, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let limiter = Limiter::builder()
    ///     .rules(Rules::from_json(r#"{"default": {"limit": "10/second"}}"#)?)
    ///     .runtime_state_file(dir.path().join("tollgate-runtime.json"))
    ///     .build()
    ///     .await?;
    /// let k = ClientKey::id("k");
    /// limiter.set_client_override(&k, json!({"unlimited": true})).await?;
    /// assert!(limiter.remove_client_override(&k).await?);
    /// assert!(!limiter.remove_client_override(&k).await?);
    /// assert_eq!(limiter.rules().clients().count(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn remove_client_override(&self, client: &ClientKey) -> Result<bool, RuntimeError> {
        // Stored under the key as the rules file writes it (an IPv6 network's host bits
        // cleared).
        let client = ClientKey::parse(&client.to_string()).unwrap_or_else(|| client.clone());
        self.core
            .change(Change::Remove(RuleTarget::Client(client)))
            .await
    }

    /// Adds a route rule, or replaces the one with the same identity (in the base rules,
    /// or set before): `route` is an entry of the rules file's top-level `routes`, like
    /// `{"path": "/api/data", "limit": "100/hour"}`. Returns its identity
    /// (`/api/data`), which [`remove_route`](Self::remove_route) takes.
    ///
    /// A service's "N requests per W seconds" is one band `{"capacity": N, "refill_rate":
    /// N / W}` (with `"algorithm"` for a window); a token bucket's burst is a band of its
    /// own, listed in `"limits"` beside it.
    ///
    /// ```
    /// use serde_json::json;
    /// use tollgate::{ClientKey, Limiter, Query, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let limiter = Limiter::builder()
    ///     .rules(Rules::from_json(r#"{"default": {"limit": "10/second"}}"#)?)
    ///     .runtime_state_file(dir.path().join("tollgate-runtime.json"))
    ///     .build()
    ///     .await?;
    /// // 100 requests per hour, in bursts of at most 20 refilled at 0.028 a second.
    /// let id = limiter
    ///     .set_route(json!({"path": "/api/custom", "limits": [
    ///         {"capacity": 20, "refill_rate": 0.028},
    ///         {"capacity": 100, "refill_rate": 100.0 / 3600.0}
    ///     ]}))
    ///     .await?;
    /// assert_eq!(id, "/api/custom");
    /// let verdict = limiter.check(Query::new(&ClientKey::id("a")).route("GET", "/api/custom")).await?;
    /// assert_eq!(verdict.rule(), "/api/custom");
    /// assert_eq!(verdict.decision().unwrap().remaining, 19);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_route(&self, route: Value) -> Result<String, RuntimeError> {
        let entry = Entry::route(route).map_err(RuntimeError::Invalid)?;
        let id = match &entry.target {
            RuleTarget::Rule(id) => id.clone(),
            RuleTarget::Client(client) => client.to_string(),
        };
        self.core.change(Change::Set(entry)).await?;
        Ok(id)
    }

    /// Removes the runtime route rule with identity `rule` (`/api/users/<id>@GET`; a
    /// pattern, `/api/users/{id}@GET`, names the same): the base rules' route with that
    /// identity, if they have one, applies again; otherwise requests fall under the next
    /// most specific route, or the default. Returns whether there was one. A route of the
    /// base rules alone is not removed: edit the file (or set a route in its place).
    ///
    /// ```
    /// use serde_json::json;
    /// use tollgate::{ClientKey, Limiter, Query, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let rules = r#"{"default": {"limit": "10/second"},
    ///     "routes": [{"path": "/api/data", "limit": "5/second"}]}"#;
    /// let limiter = Limiter::builder()
    ///     .rules(Rules::from_json(rules)?)
    ///     .runtime_state_file(dir.path().join("tollgate-runtime.json"))
    ///     .build()
    ///     .await?;
    /// let limit = || limiter.rules().find("/api/data").unwrap().limit().unwrap().bands()[0].capacity();
    /// limiter.set_route(json!({"path": "/api/data", "limit": "2/second"})).await?;
    /// assert_eq!(limit(), 2);
    /// assert!(limiter.remove_route("/api/data").await?);
    /// assert_eq!(limit(), 5, "the base rules' route again");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn remove_route(&self, rule: &str) -> Result<bool, RuntimeError> {
        let id = pattern_id(rule);
        self.core.change(Change::Remove(RuleTarget::Rule(id))).await
    }

    /// Every rule in force, as the rules file writes it, and where it comes from: the
    /// default, the routes, each tier's default and routes (tiers in name order), then the
    /// client overrides (in key order).
    pub fn rule_entries(&self) -> Vec<RuleEntry> {
        self.core.runtime.layers().rule_entries()
    }

    /// Every runtime entry stored, in force or not, in target order.
    pub fn runtime_entries(&self) -> Vec<RuntimeEntry> {
        self.core.runtime.layers().entries()
    }
}

impl Core {
    /// Puts new base rules in force, with the runtime entries over them. Returns the rules
    /// replaced, for [`free_here`] once no lock is held.
    pub(crate) fn install_base(&self, rules: Rules) -> Arc<Installed> {
        let mut layers = self.runtime.layers();
        let rules = layers.rebase(rules);
        self.install(rules)
    }

    /// Puts `new` in force; one client's override changed is installed as such. Returns the
    /// rules replaced, for [`free_here`] once no lock is held.
    pub(crate) fn put_in_force(&self, new: NewRules) -> Arc<Installed> {
        match new.only_client {
            Some(client) => self.install_client_change(new.rules, &client),
            None => self.install(new.rules),
        }
    }

    /// Validates `change`, keeps it, and puts it in force. Returns whether an entry was
    /// stored under its target before.
    async fn change(self: &Arc<Self>, change: Change) -> Result<bool, RuntimeError> {
        let _in_turn = self.runtime.in_turn.lock().await;
        let target = change.target();
        let mut wrote_back = false;
        loop {
            let (core, proposed) = (Arc::clone(self), change.clone());
            let (proposal, held) = off_runtime(move || core.prepare(&proposed))
                .await
                .map_err(|refused| *refused)?;
            let (was_stored, known) = (held.was_stored, held.version);
            let kept = self
                .runtime
                .store
                .persist(&change, held, self.runtime.max_entries)
                .await?;
            let (existed, version) = match kept {
                Kept::Done { existed, version } => (existed, version),
                // The store restarted empty: this instance's entries go back first, once.
                Kept::Behind if !wrote_back => {
                    wrote_back = true;
                    self.write_back()
                        .await
                        .map_err(|source| RuntimeError::Store {
                            target: target.clone(),
                            source,
                        })?;
                    continue;
                }
                Kept::Behind => {
                    let store = self.runtime.store.name();
                    return Err(RuntimeError::Store {
                        target,
                        source: StoreError::new(
                            store,
                            format!(
                                "{store} lost the runtime entries, and they could not be \
                                 written back"
                            ),
                        ),
                    });
                }
            };
            if matches!(change, Change::Remove(_)) && !existed && !was_stored {
                return Ok(false);
            }
            let (core, accepted) = (Arc::clone(self), change.clone());
            off_runtime(move || {
                let mut layers = core.runtime.layers();
                let new = layers.accept(proposal, &accepted);
                layers.stored_as(version);
                let replaced = core.put_in_force(new);
                drop(layers);
                free_here(replaced);
            })
            .await;
            let changed = if matches!(change, Change::Set(_)) {
                "set"
            } else {
                "removed"
            };
            tracing::info!(entry = %target, change = changed, "runtime entry changed");
            self.events.rules_changed(target, "runtime", changed);
            // Other instances changed entries between this one's last and this change: their
            // announcements came before it, and are read again with everything.
            if version > known + 1 {
                self.reread().await;
            }
            return Ok(existed);
        }
    }

    /// `change` validated against the rules in force, and what this instance holds to keep
    /// it with. Blocks on the layers: run it with [`off_runtime`]. (The error is boxed: it
    /// is large, and the answer crosses threads.)
    fn prepare(&self, change: &Change) -> Result<(layers::Proposal, Held), Box<RuntimeError>> {
        let mut layers = self.runtime.layers();
        let target = match change {
            Change::Set(entry) => &entry.target,
            Change::Remove(target) => target,
        };
        let was_stored = layers.has(target);
        let max = self.runtime.max_entries;
        if matches!(change, Change::Set(_)) && !was_stored && layers.stored_count() >= max {
            return Err(Box::new(RuntimeError::TooManyEntries {
                target: target.to_string(),
                max,
            }));
        }
        let proposal = layers.propose(change).map_err(|source| {
            Box::new(RuntimeError::Conflict {
                target: target.to_string(),
                source,
            })
        })?;
        let held = Held {
            was_stored,
            version: layers.stored_version(),
            holding: layers.stored_count() > 0,
            after: self
                .runtime
                .store
                .is_file()
                .then(|| layers.stored_after(change)),
        };
        Ok((proposal, held))
    }
}
