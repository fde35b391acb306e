//! Leases: units Redis hands this instance ahead of time, spent here without a round trip.

use std::time::Duration;

use super::clock::monotonic_us;
use crate::Decision;
use crate::backend::table::{BucketTable, Expiring};
use crate::key::KeyRef;
use crate::rules::Limit;

/// A lease takes at most this share of a band's capacity (1/16), so an instance never holds
/// more than a sixteenth of a limit that other instances could have used.
const LEASE_SHARE: u32 = 16;

/// The units of a lease asked for with `limit` at `cost`: whole multiples of the cost, at most
/// 1/[`LEASE_SHARE`] of its smallest band's capacity. Zero when that is less than one cost.
pub(super) fn lease_units(limit: &Limit, cost: u32) -> u32 {
    let cost = cost.max(1);
    limit.smallest_capacity() / LEASE_SHARE / cost * cost
}

/// Units Redis handed this instance ahead of time for one client under one rule: spent
/// here, without a round trip, until they run out or the lease ends. Redis took them from
/// the bucket when it granted them, so spending them cannot admit more than Redis gave.
///
/// One request at a time asks Redis for a lease for a client; the others ask for their own
/// cost only. So an instance normally holds one lease per client and rule (two can meet if
/// the table evicted the entry while a request was asking; they then merge and end with the
/// earlier).
pub(super) struct Lease {
    units: u32,
    /// When the lease ends ([`monotonic_us`]; measured from when the call was sent, so never
    /// later than Redis meant).
    until_us: i64,
    /// The answer reported, its `remaining` counted down as the lease is spent.
    decision: Decision,
    /// The rules generation it was granted under: it counts only under those rules.
    rules: u64,
    /// While a request asks Redis for a new lease, until when (its deadline: then the ask is
    /// given up on, its request timed out or was dropped). It also tells that request's
    /// answer from another's. Zero: nobody is asking.
    asking_until_us: i64,
}

impl Expiring for Lease {
    fn expires_at_us(&self) -> i64 {
        self.until_us.max(self.asking_until_us)
    }
}

/// Leases held at most.
const MAX_LEASES: usize = 100_000;

/// What a request does about leases.
pub(super) enum Leasing {
    /// It was admitted from a lease: the answer to report.
    Spent(Decision),
    /// It asks Redis for itself only.
    Ask,
    /// It asks Redis for a lease too; the number marks its ask in the lease table.
    AskLease(i64),
}

/// The leases this instance holds, by rule state and client.
pub(super) struct Leases {
    table: BucketTable<Lease>,
    /// How long an ask for a lease may stay unanswered: a request's deadline.
    ask_timeout: Duration,
}

impl Leases {
    pub(super) fn new(ask_timeout: Duration) -> Self {
        Self {
            table: BucketTable::new(MAX_LEASES),
            ask_timeout,
        }
    }

    /// Spends `cost` units of this client's lease under rules generation `rules`, if it has
    /// that many left and has not ended. Otherwise: whether this request asks for a new
    /// lease (nobody is asking already), marked with its deadline.
    pub(super) fn spend(&self, state: u32, client: KeyRef<'_>, cost: u32, rules: u64) -> Leasing {
        let now = monotonic_us();
        let timeout_us = i64::try_from(self.ask_timeout.as_micros()).unwrap_or(i64::MAX);
        let asking_until_us = now.saturating_add(timeout_us);
        self.table.update(state, client, now, |lease| match lease {
            Some(lease) if lease.rules == rules => {
                if lease.until_us > now && lease.units >= cost {
                    lease.units -= cost;
                    lease.decision.remaining = lease.decision.remaining.saturating_sub(cost);
                    (Leasing::Spent(lease.decision), None)
                } else if lease.asking_until_us > now {
                    (Leasing::Ask, None)
                } else {
                    lease.asking_until_us = asking_until_us;
                    (Leasing::AskLease(asking_until_us), None)
                }
            }
            // Of newer rules than this request's: left to their requests.
            Some(lease) if lease.rules > rules => (Leasing::Ask, None),
            Some(stale) => {
                // Of older rules: worth nothing now.
                *stale = Lease {
                    units: 0,
                    until_us: 0,
                    decision: stale.decision,
                    rules,
                    asking_until_us,
                };
                (Leasing::AskLease(asking_until_us), None)
            }
            None => {
                let asking = Lease {
                    units: 0,
                    until_us: 0,
                    decision: Decision::allowed(0, 0, std::time::SystemTime::UNIX_EPOCH),
                    rules,
                    asking_until_us,
                };
                (Leasing::AskLease(asking_until_us), Some(asking))
            }
        })
    }

    /// The answer to the request whose ask for a lease is marked `ask` has come: keep the
    /// lease granted, if any, under rules generation `rules` (if those are still in force,
    /// `current`), and let the next request ask.
    /// Units left from a lease before (fewer than one request's cost, unless two asks met)
    /// add to the new one, which then ends with the earlier of the two.
    pub(super) fn answered(
        &self,
        state: u32,
        client: KeyRef<'_>,
        rules: u64,
        current: bool,
        ask: i64,
        granted: Option<(u32, i64, Decision)>,
    ) {
        let now = monotonic_us();
        self.table.update(state, client, now, |existing| {
            let Some(lease) = existing else {
                // Forgotten meanwhile (a rules change or eviction): nothing to add to.
                return ((), None);
            };
            if lease.rules != rules {
                // The entry belongs to other rules now.
                return ((), None);
            }
            if lease.asking_until_us == ask {
                lease.asking_until_us = 0;
            }
            if let Some((units, until_us, mut decision)) = granted
                && current
            {
                let left = if lease.until_us > now { lease.units } else { 0 };
                decision.remaining = decision.remaining.saturating_add(left);
                lease.units = units.saturating_add(left);
                lease.until_us = if left > 0 {
                    until_us.min(lease.until_us)
                } else {
                    until_us
                };
                lease.decision = decision;
            }
            ((), None)
        });
    }

    /// Forgets `client`'s lease under the rule whose state id is `state`.
    pub(super) fn forget(&self, state: u32, client: KeyRef<'_>) {
        self.table.remove(state, client);
    }

    /// Forgets every lease (the rules changed).
    pub(super) fn clear(&self) {
        self.table.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::default_limit;

    #[test]
    fn leases_ask_for_a_sixteenth_of_the_smallest_band_in_whole_costs() {
        let units = |json| {
            let limit = default_limit(json);
            lease_units(&limit, limit.cost())
        };
        assert_eq!(
            units(r#"{"default": {"capacity": 15, "refill_rate": 1}}"#),
            0
        );
        assert_eq!(
            units(r#"{"default": {"capacity": 16, "refill_rate": 1}}"#),
            1
        );
        assert_eq!(
            units(r#"{"default": {"capacity": 1000, "refill_rate": 1}}"#),
            62
        );
        assert_eq!(
            units(r#"{"default": {"capacity": 160, "refill_rate": 1, "cost": 3}}"#),
            9
        );
        assert_eq!(
            units(r#"{"default": {"limits": ["1000/second", "320/hour"]}}"#),
            20
        );
    }
}
