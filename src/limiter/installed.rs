//! The rules in force, each with its slot: what backends key its state by.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::backend::RuleSlot;
use crate::rules::{Rule, Rules};

/// Rules in force, with each rule's slot (indexed like [`Rules::iter`]).
pub(crate) struct Installed {
    pub(crate) rules: Arc<Rules>,
    pub(crate) slots: Box<[RuleSlot]>,
}

impl Installed {
    /// The slot of `rule`, one of these rules.
    pub(crate) fn slot(&self, rule: &Rule) -> &RuleSlot {
        &self.slots[rule.index()]
    }
}

/// Gives every rule identity one state id for the life of the limiter, and every install
/// its generation.
#[derive(Debug, Default)]
pub(crate) struct StateIds(Mutex<(HashMap<Arc<str>, u32>, u64)>);

impl StateIds {
    /// Gives `rules` their slots and hands them to `publish`, under one lock: installs are
    /// published in the order of their generations, so the last published is the newest.
    pub(crate) fn install<R>(&self, rules: Rules, publish: impl FnOnce(Installed) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (ids, generation) = &mut *guard;
        *generation += 1;
        let slots = rules
            .iter()
            .map(|rule| {
                let next = u32::try_from(ids.len()).unwrap_or(u32::MAX);
                let id = rule.shared_id();
                RuleSlot {
                    state: *ids.entry(Arc::clone(&id)).or_insert(next),
                    id,
                    generation: *generation,
                }
            })
            .collect();
        publish(Installed {
            rules: Arc::new(rules),
            slots,
        })
    }
}
