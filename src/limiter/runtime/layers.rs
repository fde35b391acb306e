//! The rules in force as two layers: the base rules (the file, or rules given to the
//! builder or `set_rules`) and the runtime entries over them. Every install goes through
//! here, under one lock, so that a reload of the file, a runtime change and a re-read of the
//! stored entries each see what the others installed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::{Change, RuntimeEntry};
use crate::rules::{Entry, Merged, RuleTarget, Rules, RulesError, Source, rules_of};

/// The base rules, the runtime entries, and what of them is in force.
#[derive(Debug)]
pub(crate) struct Layers {
    base: Source,
    /// The base rules' JSON, parsed when entries are first merged into it.
    base_json: Option<Arc<Value>>,
    /// Every entry stored, by target (`client:…`, `rule:…`): what the store holds.
    stored: BTreeMap<String, Value>,
    /// The stored entries in force, by target.
    applied: BTreeMap<String, Entry>,
    /// The stored entries not in force, and why.
    left_out: BTreeMap<String, String>,
    /// Counts installs: a change validated on one state is installed as validated only if
    /// nothing was installed since.
    version: u64,
}

/// A change validated against the layers as they were at `version`.
pub(crate) struct Proposal {
    rules: Rules,
    stored: BTreeMap<String, Value>,
    applied: BTreeMap<String, Entry>,
    left_out: BTreeMap<String, String>,
    version: u64,
}

impl Proposal {
    /// Every entry stored once the change is made.
    pub(crate) fn stored(&self) -> &BTreeMap<String, Value> {
        &self.stored
    }
}

impl Layers {
    /// The layers of `base` with the `stored` entries, and the rules they put in force.
    pub(crate) fn new(base: Rules, stored: BTreeMap<String, Value>) -> (Self, Rules) {
        let mut layers = Self {
            base: base.source().clone(),
            base_json: None,
            stored,
            applied: BTreeMap::new(),
            left_out: BTreeMap::new(),
            version: 0,
        };
        let rules = layers.compose_stored(Some(base));
        (layers, rules)
    }

    /// New base rules (the file reloaded, or `set_rules`), with the entries over them.
    pub(crate) fn rebase(&mut self, base: Rules) -> Rules {
        self.base = base.source().clone();
        self.base_json = None;
        self.compose_stored(Some(base))
    }

    /// The change validated against the rules in force: the entries in force must all stay,
    /// with the changed one; entries left out come back if they now fit. Nothing changes
    /// here until [`accept`](Self::accept).
    pub(crate) fn propose(&mut self, change: &Change) -> Result<Proposal, RulesError> {
        let target = change.target();
        let base_json = self.base_json();
        let mut must: Vec<&Entry> = self
            .applied
            .iter()
            .filter(|(t, _)| **t != target)
            .map(|(_, entry)| entry)
            .collect();
        if let Change::Set(entry) = change {
            must.push(entry);
            must.sort_by_cached_key(|entry| entry.target.to_string());
        }
        let may: Vec<Entry> = self
            .left_out
            .keys()
            .filter(|t| **t != target)
            .filter_map(|t| Entry::stored(t, self.stored.get(t)?.clone()).ok())
            .collect();
        let Composed {
            rules,
            applied,
            mut left_out,
        } = compose(&self.base, &base_json, &must, &may)?;
        let mut stored = self.stored.clone();
        change.apply_to(&mut stored);
        // Entries left out before that still do not fit, and why now.
        for (target, why) in &self.left_out {
            if stored.contains_key(target) && !applied.contains_key(target) {
                left_out
                    .entry(target.clone())
                    .or_insert_with(|| why.clone());
            }
        }
        Ok(Proposal {
            rules,
            stored,
            applied,
            left_out,
            version: self.version,
        })
    }

    /// Puts a proposal in force: as validated if nothing was installed since, else the
    /// change is made over what was (and entries that no longer fit are left out).
    pub(crate) fn accept(&mut self, proposal: Proposal, change: &Change) -> Rules {
        if proposal.version == self.version {
            self.version += 1;
            self.stored = proposal.stored;
            self.applied = proposal.applied;
            self.set_left_out(proposal.left_out);
            return proposal.rules;
        }
        change.apply_to(&mut self.stored);
        self.compose_stored(None)
    }

    /// Takes `stored` as every entry stored (a re-read of the store): the rules to put in
    /// force, or `None` when the entries are the ones in force already.
    #[cfg(feature = "redis")]
    pub(crate) fn restore(&mut self, stored: BTreeMap<String, Value>) -> Option<Rules> {
        if stored == self.stored {
            return None;
        }
        self.stored = stored;
        Some(self.compose_stored(None))
    }

    /// The base rules with every stored entry that fits. `base` is the base rules parsed,
    /// when the caller has them.
    fn compose_stored(&mut self, base: Option<Rules>) -> Rules {
        self.version += 1;
        let mut left_out = BTreeMap::new();
        let mut may = Vec::with_capacity(self.stored.len());
        for (target, rule) in &self.stored {
            match Entry::stored(target, rule.clone()) {
                Ok(entry) => may.push(entry),
                Err(why) => {
                    left_out.insert(target.clone(), why);
                }
            }
        }
        let composed = (!may.is_empty()).then(|| {
            let base_json = self.base_json();
            compose(&self.base, &base_json, &[], &may)
        });
        let (rules, applied) = match composed {
            Some(Ok(composed)) => {
                left_out.extend(composed.left_out);
                (composed.rules, composed.applied)
            }
            None => (base.unwrap_or_else(|| self.base_rules()), BTreeMap::new()),
            // Only the base rules themselves could fail; they were valid when installed.
            Some(Err(error)) => {
                tracing::error!(%error, "the base rules no longer validate; runtime entries left out");
                let why = error.to_string();
                left_out.extend(
                    may.iter()
                        .map(|entry| (entry.target.to_string(), why.clone())),
                );
                (base.unwrap_or_else(|| self.base_rules()), BTreeMap::new())
            }
        };
        self.applied = applied;
        self.set_left_out(left_out);
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

    /// The targets of the entries in force.
    pub(crate) fn applied(&self) -> impl Iterator<Item = &str> {
        self.applied.keys().map(String::as_str)
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
        )
    }

    fn applied(layers: &Layers) -> Vec<&str> {
        layers.applied().collect()
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
        let rules = layers.accept(proposal, &change);
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
        let rules = layers.accept(proposal, &change);
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
