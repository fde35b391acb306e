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
            self.left_out = proposal.left_out;
            log_left_out(&self.left_out);
            return proposal.rules;
        }
        change.apply_to(&mut self.stored);
        self.compose_stored(None)
    }

    #[cfg(feature = "redis")]
    /// Takes `stored` as every entry stored (a re-read of the store): the rules to put in
    /// force, or `None` when the entries are the ones in force already.
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
        self.applied.clear();
        self.left_out.clear();
        let mut may = Vec::with_capacity(self.stored.len());
        for (target, rule) in &self.stored {
            match Entry::stored(target, rule.clone()) {
                Ok(entry) => may.push(entry),
                Err(why) => {
                    self.left_out.insert(target.clone(), why);
                }
            }
        }
        if may.is_empty() {
            log_left_out(&self.left_out);
            return base.unwrap_or_else(|| self.base_rules());
        }
        let base_json = self.base_json();
        let composed = compose(&self.base, &base_json, &[], &may);
        let rules = match composed {
            Ok(composed) => {
                self.applied = composed.applied;
                self.left_out.extend(composed.left_out);
                composed.rules
            }
            // Only the base rules themselves could fail; they were valid when installed.
            Err(error) => {
                tracing::error!(%error, "the base rules no longer validate; runtime entries left out");
                self.left_out.extend(
                    may.iter()
                        .map(|entry| (entry.target.to_string(), error.to_string())),
                );
                base.unwrap_or_else(|| self.base_rules())
            }
        };
        log_left_out(&self.left_out);
        rules
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

fn log_left_out(left_out: &BTreeMap<String, String>) {
    for (target, why) in left_out {
        tracing::error!(entry = %target, reason = %why, "runtime entry left out of the rules in force");
    }
}
