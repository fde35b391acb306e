//! Counts made since the last flush, on the request path: a sharded table of clients, each
//! with its calls per hour (and per rule), and every client's calls per hour and rule.
//!
//! A request locks one shard, chosen by its client's hash, and adds one call to the
//! client's entry and to the shard's per-rule counts; a known client costs no allocation.
//! The flusher takes every shard's entries at once ([`Pending::take`]) and, if they could
//! not be written, puts them back ([`Pending::put_back`]). At most `max_clients` clients,
//! and `max_bytes` of them (as estimated by [`held_bytes`]), are held; a new client's calls
//! over either bound count in the per-rule counts only, and in `dropped`.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hashbrown::HashTable;

use crate::backend::usage::calendar::Hour;
use crate::backend::usage::{Calls, ClientCalls, HourCalls, RuleCalls, UsageBatch, add_rule};
use crate::key::KeyRef;

/// How many shards a request's lock is one of.
const SHARDS: usize = 16;

/// What a client held here costs besides its key's own bytes: its entry in the table, its
/// hour and a few rules' counts.
const CLIENT_BYTES: usize = 256;

/// The bytes a client's entry is taken to hold: what its key holds (an attacker chooses
/// it, up to the front's bound), and a fixed cost.
pub(crate) fn held_bytes(client: KeyRef<'_>) -> usize {
    CLIENT_BYTES + key_bytes(client)
}

/// The bytes a client key holds on the heap.
pub(crate) fn key_bytes(client: KeyRef<'_>) -> usize {
    match client {
        KeyRef::Id(id) => id.len(),
        _ => 0,
    }
}

/// Every client's calls per hour and rule.
type GlobalCalls = Vec<(Hour, Vec<RuleCalls>)>;

fn add_global(global: &mut GlobalCalls, hour: Hour, rule: &Arc<str>, calls: Calls) {
    let at = match global.iter().rposition(|(h, _)| *h == hour) {
        Some(at) => at,
        None => {
            global.push((hour, Vec::new()));
            global.len() - 1
        }
    };
    add_rule(&mut global[at].1, rule, calls);
}

#[derive(Default)]
struct Shard {
    clients: HashTable<ClientCalls>,
    global: GlobalCalls,
}

/// The counts since the last flush.
pub(crate) struct Pending {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Clients held, across shards; at most `max_clients`.
    held: AtomicUsize,
    max_clients: usize,
    /// Their [`held_bytes`], across shards; at most `max_bytes`.
    bytes: AtomicUsize,
    max_bytes: usize,
    /// Calls not counted per client, for the bound.
    dropped: AtomicU64,
}

impl Pending {
    pub(crate) fn new(max_clients: usize, max_bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            held: AtomicUsize::new(0),
            max_clients,
            bytes: AtomicUsize::new(0),
            max_bytes,
            dropped: AtomicU64::new(0),
        }
    }

    /// Counts one call of `client` under `rule` in `hour`.
    #[inline]
    pub(crate) fn record(&self, hour: Hour, client: KeyRef<'_>, rule: &Arc<str>, allowed: bool) {
        let calls = Calls::one(allowed);
        let hash = self.hasher.hash_one(client);
        let mut shard = self.shard(hash);
        add_global(&mut shard.global, hour, rule, calls);
        if let Some(counted) = shard
            .clients
            .find_mut(hash, |c| c.client.as_ref() == client)
        {
            let counted = counted.hour(hour);
            counted.calls.add(calls);
            add_rule(&mut counted.rules, rule, calls);
            counted.unranked += calls.denied;
            return;
        }
        if !self.reserve(client) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut hours = HourCalls::new(hour);
        hours.calls = calls;
        hours.rules.push(RuleCalls {
            rule: Arc::clone(rule),
            calls,
        });
        hours.unranked = calls.denied;
        let entry = ClientCalls {
            client: client.to_owned(),
            hours: vec![hours],
        };
        let hasher = &self.hasher;
        shard
            .clients
            .insert_unique(hash, entry, |c| hasher.hash_one(c.client.as_ref()));
    }

    /// Takes every count made so far, leaving none.
    pub(crate) fn take(&self) -> UsageBatch {
        let mut batch = UsageBatch::default();
        for shard in &*self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let taken = shard.clients.len();
            let bytes: usize = shard
                .clients
                .iter()
                .map(|c| held_bytes(c.client.as_ref()))
                .sum();
            // Drained, not replaced: the table keeps its room for the next second's clients.
            batch.clients.extend(shard.clients.drain());
            self.held.fetch_sub(taken, Ordering::Relaxed);
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            for (hour, rules) in std::mem::take(&mut shard.global) {
                for rule in rules {
                    add_global(&mut batch.global, hour, &rule.rule, rule.calls);
                }
            }
        }
        batch
    }

    /// Puts back counts that could not be written, to be written with the next flush; those
    /// of hours before `oldest` are dropped. A client that no longer fits within the bound
    /// is dropped (its calls counted in `dropped`); the per-rule counts always fit.
    pub(crate) fn put_back(&self, batch: UsageBatch, oldest: Hour) {
        for mut client in batch.clients {
            client.hours.retain(|h| h.hour >= oldest);
            if client.hours.is_empty() {
                continue;
            }
            let hash = self.hasher.hash_one(client.client.as_ref());
            let mut shard = self.shard(hash);
            let key = client.client.as_ref();
            if let Some(counted) = shard.clients.find_mut(hash, |c| c.client.as_ref() == key) {
                counted.add(&client);
            } else if self.reserve(key) {
                let hasher = &self.hasher;
                shard
                    .clients
                    .insert_unique(hash, client, |c| hasher.hash_one(c.client.as_ref()));
            } else {
                self.dropped.fetch_add(client.total(), Ordering::Relaxed);
            }
        }
        let mut shard = self.shard(0);
        for (hour, rules) in batch.global {
            if hour >= oldest {
                for rule in rules {
                    add_global(&mut shard.global, hour, &rule.rule, rule.calls);
                }
            }
        }
    }

    /// Clients held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Calls not counted per client: `max_clients` clients or `max_bytes` were held, or
    /// Redis's count of clients for the hour was full (see [`Pending::count_dropped`]).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Counts `calls` that were not counted per client after all.
    pub(crate) fn count_dropped(&self, calls: u64) {
        self.dropped.fetch_add(calls, Ordering::Relaxed);
    }

    /// One more client, if both bounds allow it.
    fn reserve(&self, client: KeyRef<'_>) -> bool {
        let bytes = held_bytes(client);
        let counted = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held < self.max_clients).then_some(held + 1)
            })
            .is_ok();
        if !counted {
            return false;
        }
        let fits = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes)
                    .filter(|total| *total <= self.max_bytes)
            })
            .is_ok();
        if !fits {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
        fits
    }

    /// The shard for `hash`, chosen by bits the table inside uses for neither its bucket
    /// index (low bits) nor its control bytes (top 7 bits).
    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        self.shards[((hash >> 32) as usize) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ClientKey;

    fn rule(id: &str) -> Arc<str> {
        id.into()
    }

    #[test]
    fn calls_are_kept_apart_by_hour_and_rule() {
        let pending = Pending::new(10, usize::MAX);
        let (data, other) = (rule("/data"), rule("default"));
        let client = ClientKey::id("a");
        pending.record(100, client.as_ref(), &data, true);
        pending.record(100, client.as_ref(), &data, false);
        pending.record(100, client.as_ref(), &other, true);
        pending.record(101, client.as_ref(), &data, true);
        let batch = pending.take();
        assert_eq!(batch.clients.len(), 1);
        let hours = &batch.clients[0].hours;
        assert_eq!(hours.len(), 2);
        assert_eq!((hours[0].hour, hours[0].calls), (100, Calls::new(2, 1)));
        assert_eq!(hours[0].unranked, 1);
        assert_eq!(
            hours[0].rules,
            [
                RuleCalls {
                    rule: rule("/data"),
                    calls: Calls::new(1, 1)
                },
                RuleCalls {
                    rule: rule("default"),
                    calls: Calls::new(1, 0)
                }
            ]
        );
        assert_eq!((hours[1].hour, hours[1].calls), (101, Calls::new(1, 0)));
        assert_eq!(batch.global.len(), 2);
        assert!(pending.take().is_empty(), "taken: nothing left");
        assert_eq!(pending.held(), 0);
    }

    #[test]
    fn clients_over_the_bound_count_only_per_rule() {
        let pending = Pending::new(3, usize::MAX);
        let data = rule("/data");
        for n in 0..5 {
            pending.record(7, ClientKey::id(format!("c{n}")).as_ref(), &data, true);
        }
        assert_eq!((pending.held(), pending.dropped()), (3, 2));
        let batch = pending.take();
        assert_eq!(batch.clients.len(), 3);
        assert_eq!(
            batch.global,
            [(
                7,
                vec![RuleCalls {
                    rule: data,
                    calls: Calls::new(5, 0)
                }]
            )]
        );
    }

    #[test]
    fn clients_over_the_byte_bound_count_only_per_rule() {
        let data = rule("/data");
        // Room for two clients with 60 KB keys, and any number of short ones.
        let big = |n: usize| ClientKey::id(format!("{n}{}", "x".repeat(60_000)));
        let pending = Pending::new(1000, 2 * held_bytes(big(0).as_ref()) + 10 * CLIENT_BYTES);
        for n in 0..5 {
            pending.record(7, big(n).as_ref(), &data, true);
        }
        assert_eq!((pending.held(), pending.dropped()), (2, 3));
        for n in 0..5 {
            pending.record(7, ClientKey::id(format!("small-{n}")).as_ref(), &data, true);
        }
        assert_eq!((pending.held(), pending.dropped()), (7, 3));
        let batch = pending.take();
        assert_eq!(
            batch.global[0].1[0].calls,
            Calls::new(10, 0),
            "every call in the totals"
        );
        // Taken: the room is there again.
        pending.record(7, big(9).as_ref(), &data, true);
        assert_eq!(pending.held(), 1);
    }

    #[test]
    fn what_is_put_back_is_merged_and_still_bounded() {
        let pending = Pending::new(2, usize::MAX);
        let data = rule("/data");
        let (a, b, c) = (ClientKey::id("a"), ClientKey::id("b"), ClientKey::id("c"));
        pending.record(7, a.as_ref(), &data, false);
        pending.record(7, b.as_ref(), &data, true);
        let failed = pending.take();
        // Meanwhile: a again, and a new client c.
        pending.record(7, a.as_ref(), &data, true);
        pending.record(7, c.as_ref(), &data, true);
        pending.put_back(failed, 0);
        // b no longer fits: a and c are held.
        assert_eq!((pending.held(), pending.dropped()), (2, 1));
        let mut batch = pending.take();
        batch.clients.sort_by_key(|c| c.client.to_string());
        assert_eq!(batch.clients[0].client, a);
        assert_eq!(batch.clients[0].hours[0].calls, Calls::new(1, 1));
        assert_eq!(batch.clients[0].hours[0].unranked, 1);
        assert_eq!(batch.global[0].1[0].calls, Calls::new(3, 1));
    }

    #[test]
    fn hours_too_old_are_not_put_back() {
        let pending = Pending::new(2, usize::MAX);
        let data = rule("/data");
        pending.record(5, ClientKey::id("a").as_ref(), &data, true);
        pending.put_back(pending.take(), 6);
        assert!(pending.take().is_empty());
        assert_eq!(pending.held(), 0);
    }
}
