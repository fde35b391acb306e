//! The rules in force as two layers: the base rules (the file, or rules given to the
//! builder or `set_rules`) and the runtime entries over them. Every install goes through
//! here, under one lock, so that a reload of the file, a runtime change and a re-read of the
//! stored entries each see what the others installed.
//!
//! A change costs what it touches. A client override cannot conflict with anything, so it
//! goes in force as a copy of the rules in force with that one override changed (see
//! [`Rules::with_client`]), whatever the number of entries. A route can conflict with
//! others, so the base rules are merged with the route entries and parsed again: that costs
//! the routes, not the client overrides, which are carried over. Only a new base, or a
//! re-read of every stored entry that differs from what is in force, composes everything.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::{Change, Origin, RuleEntry, RuntimeEntry};
use crate::key::ClientKey;
use crate::rules::{Clients, Entry, Merged, RuleTarget, Rules, RulesError, Source, rules_of};

/// The base rules, the runtime entries, and what of them is in force.
#[derive(Debug)]
pub(crate) struct Layers {
    base: Source,
    /// The base rules' JSON, parsed when entries are first merged into it.
    base_json: Option<Arc<Value>>,
    /// The base rules' client overrides: what a runtime override's removal falls back to.
    base_clients: Clients,
    /// Every entry stored, by target (`client:…`, `rule:…`): what the store holds.
    stored: BTreeMap<String, Value>,
    /// The store's version of `stored` (Redis's `{<prefix>:runtime}:version`; 0 for a
    /// state file): which announced changes are new.
    stored_version: u64,
    /// The stored entries in force, by target.
    applied: BTreeMap<String, Entry>,
    /// The stored entries not in force, and why.
    left_out: BTreeMap<String, String>,
    /// The rules last put in force, which a client override's change copies.
    in_force: Rules,
    /// Counts installs: a change validated on one state is installed as validated only if
    /// nothing was installed since.
    version: u64,
}

/// Rules to put in force, and how far they differ from those in force.
pub(crate) struct NewRules {
    pub(crate) rules: Rules,
    /// The one client whose override changed, when nothing else did: its install checks
    /// only that override, and drops no rule's state.
    pub(crate) only_client: Option<ClientKey>,
}

impl NewRules {
    fn all(rules: Rules) -> Self {
        Self {
            rules,
            only_client: None,
        }
    }
}

/// A change validated against the layers as they were at `version`.
pub(crate) struct Proposal {
    rules: Rules,
    /// For a route: every route entry in force, and those left out, once it is made. A
    /// client override changes only its own target.
    routes: Option<(BTreeMap<String, Entry>, BTreeMap<String, String>)>,
    version: u64,
}

impl Layers {
    /// The layers of `base` with the `stored` entries (of version `stored_version`), and
    /// the rules they put in force.
    pub(crate) fn new(
        base: Rules,
        stored: BTreeMap<String, Value>,
        stored_version: u64,
    ) -> (Self, Rules) {
        let mut layers = Self {
            base: base.source().clone(),
            base_json: None,
            base_clients: base.client_overrides().clone(),
            stored,
            stored_version,
            applied: BTreeMap::new(),
            left_out: BTreeMap::new(),
            in_force: base.clone(),
            version: 0,
        };
        let rules = layers.compose_stored(Some(base));
        (layers, rules)
    }

    /// New base rules (the file reloaded, or `set_rules`), with the entries over them.
    pub(crate) fn rebase(&mut self, base: Rules) -> Rules {
        self.base = base.source().clone();
        self.base_json = None;
        self.base_clients = base.client_overrides().clone();
        self.compose_stored(Some(base))
    }

    /// The change validated against the rules in force: the entries in force must all stay,
    /// with the changed one; route entries left out come back if they now fit. Nothing
    /// changes here until [`accept`](Self::accept).
    pub(crate) fn propose(&mut self, change: &Change) -> Result<Proposal, RulesError> {
        let target = match change {
            Change::Set(entry) => &entry.target,
            Change::Remove(target) => target,
        };
        if let RuleTarget::Client(client) = target {
            let limit = match change {
                Change::Set(entry) => entry.client_limit(self.shadow_all()),
                Change::Remove(_) => self.base_clients.get(client.as_ref()).cloned(),
            };
            return Ok(Proposal {
                rules: self.in_force.with_client(client.clone(), limit),
                routes: None,
                version: self.version,
            });
        }
        let target = target.to_string();
        let base_json = self.base_json();
        let mut must: Vec<&Entry> = self
            .applied
            .iter()
            .filter(|(t, entry)| **t != target && is_route(entry))
            .map(|(_, entry)| entry)
            .collect();
        if let Change::Set(entry) = change {
            must.push(entry);
            must.sort_by_cached_key(|entry| entry.target.to_string());
        }
        let may: Vec<Entry> = self
            .left_out
            .keys()
            .filter(|t| **t != target && t.starts_with("rule:"))
            .filter_map(|t| Entry::stored(t, self.stored.get(t)?.clone()).ok())
            .collect();
        let Composed {
            rules,
            applied,
            mut left_out,
        } = compose(&self.base, &base_json, &must, &may)?;
        // Route entries left out before that still do not fit, and why now.
        for (left, why) in &self.left_out {
            let still_stored = *left != target || matches!(change, Change::Set(_));
            if left.starts_with("rule:") && still_stored && !applied.contains_key(left) {
                left_out.entry(left.clone()).or_insert_with(|| why.clone());
            }
        }
        Ok(Proposal {
            rules: rules.with_clients(self.in_force.client_overrides().clone()),
            routes: Some((applied, left_out)),
            version: self.version,
        })
    }

    /// Puts a proposal in force: as validated if nothing was installed since, else the
    /// change is made over what was (and entries that no longer fit are left out).
    pub(crate) fn accept(&mut self, proposal: Proposal, change: &Change) -> NewRules {
        change.apply_to(&mut self.stored);
        if proposal.version != self.version {
            return NewRules::all(self.compose_stored(None));
        }
        self.version += 1;
        let mut only_client = None;
        match proposal.routes {
            None => {
                let target = change.target();
                self.left_out.remove(&target);
                match change {
                    Change::Set(entry) => self.applied.insert(target, entry.clone()),
                    Change::Remove(_) => self.applied.remove(&target),
                };
                if let Change::Set(Entry {
                    target: RuleTarget::Client(client),
                    ..
                })
                | Change::Remove(RuleTarget::Client(client)) = change
                {
                    only_client = Some(client.clone());
                }
            }
            Some((applied, left_out)) => {
                self.applied.retain(|_, entry| !is_route(entry));
                self.applied.extend(applied);
                let mut all = std::mem::take(&mut self.left_out);
                all.retain(|target, _| !target.starts_with("rule:"));
                all.extend(left_out);
                self.set_left_out(all);
            }
        }
        self.in_force = proposal.rules.clone();
        NewRules {
            rules: proposal.rules,
            only_client,
        }
    }

    /// A change another instance announced, to `target` (`rule`: the JSON stored, `None`:
    /// removed), which brings the stored entries to `stored_version`: the rules to put in
    /// force. A valid entry goes in like a change made here; anything else is stored as it
    /// is and settled with every other entry.
    pub(crate) fn apply_announced(
        &mut self,
        target: &str,
        rule: Option<Value>,
        stored_version: u64,
    ) -> NewRules {
        self.stored_version = stored_version;
        let change = match (target.parse::<RuleTarget>(), &rule) {
            (Ok(target), None) => Some(Change::Remove(target)),
            (Ok(_), Some(rule)) => Entry::stored(target, rule.clone()).ok().map(Change::Set),
            (Err(_), _) => None,
        };
        if let Some(change) = change
            && let Ok(proposal) = self.propose(&change)
        {
            return self.accept(proposal, &change);
        }
        match rule {
            Some(rule) => self.stored.insert(target.to_owned(), rule),
            None => self.stored.remove(target),
        };
        NewRules::all(self.compose_stored(None))
    }

    /// Takes `stored`, of version `stored_version`, as every entry stored (a re-read of the
    /// store): the rules to put in force, or `None` when the entries are the ones in force
    /// already.
    pub(crate) fn restore(
        &mut self,
        stored: BTreeMap<String, Value>,
        stored_version: u64,
    ) -> Option<Rules> {
        self.stored_version = stored_version;
        if stored == self.stored {
            return None;
        }
        self.stored = stored;
        Some(self.compose_stored(None))
    }

    /// The base rules with every stored entry that fits: the routes merged and parsed, the
    /// client overrides over the base's. `base` is the base rules parsed, when the caller
    /// has them.
    fn compose_stored(&mut self, base: Option<Rules>) -> Rules {
        self.version += 1;
        let mut left_out = BTreeMap::new();
        let (mut routes, mut clients) = (Vec::new(), Vec::new());
        for (target, rule) in &self.stored {
            match Entry::stored(target, rule.clone()) {
                Ok(entry) if is_route(&entry) => routes.push(entry),
                Ok(entry) => clients.push(entry),
                Err(why) => {
                    left_out.insert(target.clone(), why);
                }
            }
        }
        let composed = (!routes.is_empty()).then(|| {
            let base_json = self.base_json();
            compose(&self.base, &base_json, &[], &routes)
        });
        let (rules, mut applied) = match composed {
            Some(Ok(composed)) => {
                left_out.extend(composed.left_out);
                (composed.rules, composed.applied)
            }
            None => (base.unwrap_or_else(|| self.base_rules()), BTreeMap::new()),
            // Only the base rules themselves could fail; they were valid when installed.
            Some(Err(error)) => {
                tracing::error!(%error, "the base rules no longer validate; runtime routes left out");
                let why = error.to_string();
                left_out.extend(
                    routes
                        .iter()
                        .map(|entry| (entry.target.to_string(), why.clone())),
                );
                (base.unwrap_or_else(|| self.base_rules()), BTreeMap::new())
            }
        };
        let shadow_all = self.shadow_all();
        let mut overrides = self.base_clients.clone();
        for entry in clients {
            if let (RuleTarget::Client(client), Some(limit)) =
                (&entry.target, entry.client_limit(shadow_all))
            {
                overrides.insert(client.clone(), limit);
            }
            applied.insert(entry.target.to_string(), entry);
        }
        let rules = rules.with_clients(overrides);
        self.applied = applied;
        self.set_left_out(left_out);
        self.in_force = rules.clone();
        rules
    }

    /// Takes `left_out` as the entries left out, logging each newly left out (or for
    /// another reason): a change elsewhere does not log them all again.
    fn set_left_out(&mut self, left_out: BTreeMap<String, String>) {
        for (target, why) in &left_out {
            if self.left_out.get(target) != Some(why) {
                tracing::error!(entry = %target, reason = %why, "runtime entry left out of the rules in force");
            }
        }
        self.left_out = left_out;
    }

    /// The base rules, parsed again from their JSON.
    fn base_rules(&self) -> Rules {
        match crate::rules::parse_source(&self.base) {
            Ok(rules) => rules,
            // They were parsed from this very text when they were installed.
            Err(error) => unreachable!("the base rules validated before: {error}"),
        }
    }

    /// The base rules' JSON, parsed once per base.
    fn base_json(&mut self) -> Arc<Value> {
        let base = &self.base;
        Arc::clone(self.base_json.get_or_insert_with(|| {
            // The parser accepted this text: it is JSON.
            Arc::new(serde_json::from_str(&base.json).unwrap_or(Value::Null))
        }))
    }

    /// Whether the base rules make every limit a shadow one (their top-level `shadow`).
    fn shadow_all(&mut self) -> bool {
        self.base_json().get("shadow") == Some(&Value::Bool(true))
    }

    /// Every rule in force, as the rules file writes it, and where it comes from: the base
    /// rules' JSON with the entries in force merged.
    pub(crate) fn rule_entries(&mut self) -> Vec<RuleEntry> {
        let mut merged = Merged::new(Value::clone(&self.base_json()));
        for entry in self.applied.values() {
            merged.add(entry);
        }
        rules_of(merged.document())
            .into_iter()
            .map(|(target, rule)| {
                let origin = if self.applied.contains_key(&target.to_string()) {
                    Origin::Runtime
                } else {
                    Origin::Base
                };
                RuleEntry {
                    target,
                    origin,
                    rule,
                }
            })
            .collect()
    }

    /// Every stored entry (those stored under something that names no rule or client
    /// aside: they are logged as left out).
    pub(crate) fn entries(&mut self) -> Vec<RuntimeEntry> {
        let base_json = self.base_json();
        let in_base: HashSet<String> = rules_of(&base_json)
            .into_iter()
            .map(|(target, _)| target.to_string())
            .collect();
        self.stored
            .iter()
            .filter_map(|(target, rule)| {
                Some(RuntimeEntry {
                    target: target.parse().ok()?,
                    rule: rule.clone(),
                    replaces_base: in_base.contains(target),
                    left_out: self.left_out.get(target).cloned(),
                })
            })
            .collect()
    }

    /// Whether `target` is stored.
    pub(crate) fn has(&self, target: &RuleTarget) -> bool {
        self.stored.contains_key(&target.to_string())
    }

    /// How many entries are stored.
    pub(crate) fn stored_count(&self) -> usize {
        self.stored.len()
    }

    /// Every entry stored, once `change` is made: what a state file holds after it.
    pub(crate) fn stored_after(&self, change: &Change) -> BTreeMap<String, Value> {
        let mut stored = self.stored.clone();
        change.apply_to(&mut stored);
        stored
    }

    /// Every entry stored, and the store's version of them.
    pub(crate) fn stored(&self) -> (&BTreeMap<String, Value>, u64) {
        (&self.stored, self.stored_version)
    }

    /// The store's version of the entries.
    pub(crate) fn stored_version(&self) -> u64 {
        self.stored_version
    }

    /// A change made here reached the store as `stored_version`.
    pub(crate) fn stored_as(&mut self, stored_version: u64) {
        self.stored_version = stored_version;
    }
}

/// Whether `entry` is a route (the rest are client overrides).
fn is_route(entry: &Entry) -> bool {
    matches!(entry.target, RuleTarget::Rule(_))
}

/// Base rules with entries merged.
struct Composed {
    rules: Rules,
    /// The entries in force, by target.
    applied: BTreeMap<String, Entry>,
    /// The entries that did not fit, and why.
    left_out: BTreeMap<String, String>,
}

/// `base` with every entry of `must` (an error if they do not fit) and of `may` that fits,
/// each tried in turn.
fn compose(
    base: &Source,
    base_json: &Value,
    must: &[&Entry],
    may: &[Entry],
) -> Result<Composed, RulesError> {
    let name = format!("{} with runtime entries", base.name);
    let mut merged = Merged::new(base_json.clone());
    for entry in must {
        merged.add(entry);
    }
    let mut applied: BTreeMap<String, Entry> = must
        .iter()
        .map(|entry| (entry.target.to_string(), (*entry).clone()))
        .collect();
    let mut left_out = BTreeMap::new();
    // Usually everything fits: one parse.
    let mut all = merged.clone();
    for entry in may {
        all.add(entry);
    }
    if let Ok(rules) = all.parse(&name) {
        applied.extend(
            may.iter()
                .map(|entry| (entry.target.to_string(), entry.clone())),
        );
        return Ok(Composed {
            rules,
            applied,
            left_out,
        });
    }
    let mut rules = merged.parse(&name)?;
    for entry in may {
        let mut with = merged.clone();
        with.add(entry);
        match with.parse(&name) {
            Ok(fits) => {
                merged = with;
                rules = fits;
                applied.insert(entry.target.to_string(), entry.clone());
            }
            Err(error) => {
                left_out.insert(entry.target.to_string(), error.to_string());
            }
        }
    }
    Ok(Composed {
        rules,
        applied,
        left_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BASE: &str = r#"{"default": {"limit": "10/second"}}"#;

    fn route(path: &str) -> (String, Value) {
        let entry = Entry::route(json!({"path": path, "limit": "1/second"})).unwrap();
        (entry.target.to_string(), entry.rule)
    }

    fn layers(stored: &[(String, Value)]) -> (Layers, Rules) {
        Layers::new(
            Rules::from_json(BASE).unwrap(),
            stored.iter().cloned().collect(),
            0,
        )
    }

    fn applied(layers: &Layers) -> Vec<&str> {
        layers.applied.keys().map(String::as_str).collect()
    }

    #[test]
    fn stored_entries_that_conflict_are_settled_in_target_order() {
        let (layers, rules) = layers(&[route("/api/{z}"), route("/api/{a}")]);
        assert_eq!(applied(&layers), ["rule:/api/<a>"]);
        assert!(rules.find("/api/<a>").is_some());
        let why = &layers.left_out["rule:/api/<z>"];
        assert!(
            why.contains("conflicts with routes[0] (\"/api/{a}\")"),
            "{why}"
        );
    }

    #[test]
    fn a_change_never_displaces_an_entry_in_force() {
        let (mut layers, _) = layers(&[route("/api/{z}")]);
        // It sorts first, so merged with the stored entries alone it would win.
        let (_, rule) = route("/api/{a}");
        let change = Change::Set(Entry::route(rule).unwrap());
        let err = layers.propose(&change).err().expect("refused");
        assert!(err.to_string().contains("conflicts with"), "{err}");
        assert_eq!(applied(&layers), ["rule:/api/<z>"]);
    }

    #[test]
    fn an_entry_left_out_comes_back_when_a_change_lets_it() {
        let (mut layers, _) = layers(&[route("/api/{z}"), route("/api/{a}")]);
        let change = Change::Remove(RuleTarget::Rule("/api/<a>".into()));
        let proposal = layers.propose(&change).unwrap();
        let rules = layers.accept(proposal, &change).rules;
        assert!(rules.find("/api/<z>").is_some());
        assert_eq!(applied(&layers), ["rule:/api/<z>"]);
        assert!(layers.left_out.is_empty());
        assert_eq!(layers.stored.len(), 1);
    }

    #[test]
    fn a_proposal_overtaken_by_another_install_is_made_over_it() {
        let (mut layers, _) = layers(&[]);
        let (_, rule) = route("/api/{a}");
        let change = Change::Set(Entry::route(rule).unwrap());
        let proposal = layers.propose(&change).unwrap();
        // The file is reloaded meanwhile, with a route the change conflicts with.
        layers.rebase(
            Rules::from_json(
                r#"{"default": {"limit": "10/second"},
                    "routes": [{"path": "/api/{id}", "limit": "5/second"}]}"#,
            )
            .unwrap(),
        );
        let rules = layers.accept(proposal, &change).rules;
        assert!(
            rules.find("/api/<id>").is_some(),
            "the new base is in force"
        );
        assert!(
            layers.stored.contains_key("rule:/api/<a>"),
            "the change is kept"
        );
        assert!(
            layers.left_out.contains_key("rule:/api/<a>"),
            "but left out"
        );
    }
}
