//! Remembered refusals: when Redis refuses a client's request of some cost under a rule
//! until some time, later requests of that client under that rule, of that cost or more,
//! are refused here until then, without a round trip. This can only refuse what Redis
//! would, never admit, so it cannot let more through than Redis would.

use std::time::Duration;

use super::clock::monotonic_us;
use crate::Decision;
use crate::backend::table::{BucketTable, Expiring};
use crate::key::KeyRef;

/// A refusal from Redis, answered locally until it ends.
pub(super) struct Refusal {
    /// When a request could be admitted again ([`monotonic_us`]; measured from when the
    /// answer arrived, so never earlier than Redis meant).
    until_us: i64,
    decision: Decision,
    /// The cost refused: a cheaper request may fit, and is asked of Redis.
    cost: u32,
    /// The rules generation it was given under: after a change it no longer counts.
    rules: u64,
}

impl Expiring for Refusal {
    fn expires_at_us(&self) -> i64 {
        self.until_us
    }
}

/// Refusals remembered at most.
const MAX_REFUSALS: usize = 100_000;

/// The refusals this instance remembers, by rule state and client.
pub(super) struct Refusals {
    table: BucketTable<Refusal>,
}

impl Refusals {
    pub(super) fn new() -> Self {
        Self {
            table: BucketTable::new(MAX_REFUSALS),
        }
    }

    /// The refusal Redis gave this client under rules generation `rules`, if it has not
    /// ended and refused no more than `cost`.
    pub(super) fn cached(
        &self,
        state: u32,
        client: KeyRef<'_>,
        cost: u32,
        rules: u64,
    ) -> Option<Decision> {
        let now = monotonic_us();
        self.table
            .update(state, client, now, |refusal| match refusal {
                Some(refusal)
                    if refusal.until_us > now && refusal.rules == rules && cost >= refusal.cost =>
                {
                    let mut decision = refusal.decision;
                    decision.retry_after = Duration::from_micros((refusal.until_us - now) as u64);
                    (Some(decision), None)
                }
                _ => (None, None),
            })
    }

    /// Remembers a refusal Redis gave to a request of `cost` under rules generation
    /// `rules`.
    pub(super) fn remember(
        &self,
        state: u32,
        client: KeyRef<'_>,
        (decision, cost): (&Decision, u32),
        rules: u64,
    ) {
        let now = monotonic_us();
        let wait = i64::try_from(decision.retry_after.as_micros()).unwrap_or(i64::MAX);
        let refusal = Refusal {
            until_us: now.saturating_add(wait),
            decision: *decision,
            cost,
            rules,
        };
        self.table
            .update(state, client, now, |existing| match existing {
                Some(existing) => {
                    *existing = refusal;
                    ((), None)
                }
                None => ((), Some(refusal)),
            });
    }

    /// Forgets `client`'s refusal under the rule whose state id is `state`.
    pub(super) fn forget(&self, state: u32, client: KeyRef<'_>) {
        self.table.remove(state, client);
    }

    /// Forgets every refusal (the rules changed).
    pub(super) fn clear(&self) {
        self.table.clear();
    }
}
