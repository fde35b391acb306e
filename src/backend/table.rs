//! A bounded table of what a store keeps per (rule, client): the in-process store's band
//! states, and the Redis store's remembered refusals and leases.
//!
//! For band states, one entry per (rule, client) holds the state of each band of the rule
//! and the time at which every band is full again. A full entry carries no information (a fresh one is
//! identical), so it can be dropped at no cost. The table holds at most `max_keys` entries
//! across all rules; when a shard is full it first drops full entries, then the entries
//! closest to full (earliest full-again time). Forgetting an entry hands its client fresh,
//! full bands, so evicting the fullest entries gives away the fewest tokens: a flood of
//! fresh client IDs, each one request in, is evicted before a real client that has used its
//! burst.
//!
//! Keys are hashed with SipHash under a random key (std's `RandomState`), so clients cannot
//! choose IDs that collide on purpose.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use hashbrown::HashTable;

use crate::key::{ClientKey, KeyRef};

/// A value that stops mattering at some time: then it is dropped first.
pub(crate) trait Expiring {
    /// The time in µs after which the value is as good as absent, on the clock its table's
    /// user passes as `now_us` (Unix time for band states, a monotonic clock for Redis's
    /// refusals and leases).
    fn expires_at_us(&self) -> i64;
}

/// One stored (rule, client).
struct Slot<V> {
    rule: u32,
    key: ClientKey,
    entry: V,
}

type Shard<V> = HashTable<Slot<V>>;

/// A bounded, sharded table keyed by (rule state id, client key): the memory backend's
/// band states, and the Redis backend's remembered refusals and leases.
pub(crate) struct BucketTable<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    /// One hash per request picks the shard and the slot in it.
    hasher: RandomState,
    shard_capacity: usize,
    evicted: AtomicU64,
}

impl<V: Expiring> BucketTable<V> {
    pub(crate) fn new(max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        let shard_count = (max_keys / 1024).clamp(1, 64);
        let shards = (0..shard_count)
            .map(|_| Mutex::new(HashTable::new()))
            .collect();
        Self {
            shards,
            hasher: RandomState::new(),
            shard_capacity: max_keys.div_ceil(shard_count),
            evicted: AtomicU64::new(0),
        }
    }

    fn hash(&self, rule: u32, key: KeyRef<'_>) -> u64 {
        match key {
            // The common key, in two writes: the rule with a tag, then the ID's bytes (the
            // message's length, which SipHash folds in, keeps two IDs apart).
            KeyRef::Id(id) => {
                let mut hasher = self.hasher.build_hasher();
                hasher.write_u64(u64::from(rule) << 8 | 1);
                hasher.write(id.as_bytes());
                hasher.finish()
            }
            _ => self.hasher.hash_one((rule, key)),
        }
    }

    /// The shard for `hash`, chosen by bits the table inside uses for neither its bucket index
    /// (low bits) nor its control bytes (top 7 bits).
    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard<V>> {
        let index = ((hash >> 32) % self.shards.len() as u64) as usize;
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `decide` on the client's entry under the shard's lock. `decide` gets the entry if
    /// there is one (to read, and update in place) and returns an entry to insert when there
    /// was none.
    pub(crate) fn update<R>(
        &self,
        rule: u32,
        key: KeyRef<'_>,
        now_us: i64,
        decide: impl FnOnce(Option<&mut V>) -> (R, Option<V>),
    ) -> R {
        let hash = self.hash(rule, key);
        let mut map = self.shard(hash);
        if let Some(slot) = map.find_mut(hash, |s| s.rule == rule && s.key.as_ref() == key) {
            return decide(Some(&mut slot.entry)).0;
        }
        let (outcome, new) = decide(None);
        if let Some(entry) = new {
            if map.len() >= self.shard_capacity {
                self.make_room(&mut map, now_us);
            }
            let slot = Slot {
                rule,
                key: key.to_owned(),
                entry,
            };
            map.insert_unique(hash, slot, |s| self.hash(s.rule, s.key.as_ref()));
        }
        outcome
    }

    /// Forgets the client's entry under `rule`, if there is one.
    pub(crate) fn remove(&self, rule: u32, key: KeyRef<'_>) {
        let hash = self.hash(rule, key);
        let mut map = self.shard(hash);
        if let Ok(slot) = map.find_entry(hash, |s| s.rule == rule && s.key.as_ref() == key) {
            slot.remove();
        }
    }

    /// Drops expired entries (full buckets, ended refusals); returns how many remain.
    pub(crate) fn drop_full(&self, now_us: i64) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
                map.retain(|slot| slot.entry.expires_at_us() > now_us);
                if map.capacity() > 4 * map.len().max(16) {
                    map.shrink_to_fit(|s| self.hash(s.rule, s.key.as_ref()));
                }
                map.len()
            })
            .sum()
    }

    /// Forgets every entry.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            shard.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }

    /// Forgets the entries of rules for which `keep` is false (rules a reload removed).
    pub(crate) fn retain_rules(&self, keep: impl Fn(u32) -> bool) {
        for shard in self.shards.iter() {
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            map.retain(|slot| keep(slot.rule));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Frees a tenth of a full shard: expired entries first, then those expiring soonest.
    fn make_room(&self, map: &mut Shard<V>, now_us: i64) {
        map.retain(|slot| slot.entry.expires_at_us() > now_us);
        let live = map.len();
        let target = self.shard_capacity - self.shard_capacity.div_ceil(10);
        if live > target {
            let excess = live - target;
            let mut full_at: Vec<i64> = map.iter().map(|s| s.entry.expires_at_us()).collect();
            let (_, cutoff, _) = full_at.select_nth_unstable(excess - 1);
            let cutoff = *cutoff;
            let mut to_evict = excess;
            map.retain(|slot| {
                let evict = to_evict > 0 && slot.entry.expires_at_us() <= cutoff;
                to_evict -= usize::from(evict);
                !evict
            });
            self.evicted
                .fetch_add((live - map.len()) as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000;

    fn id(n: usize) -> ClientKey {
        ClientKey::Id(format!("c{n}").into())
    }

    /// An entry that is full again at `full_at_us`.
    struct Entry {
        full_at_us: i64,
    }

    impl Expiring for Entry {
        fn expires_at_us(&self) -> i64 {
            self.full_at_us
        }
    }

    fn entry(full_at_us: i64) -> Entry {
        Entry { full_at_us }
    }

    /// Stores an entry full again at `full_at` (µs), as a decision would.
    fn touch(table: &BucketTable<Entry>, rule: u32, key: &ClientKey, full_at: i64, now: i64) {
        table.update(rule, key.as_ref(), now, |existing| match existing {
            Some(e) => {
                e.full_at_us = full_at;
                ((), None)
            }
            None => ((), Some(entry(full_at))),
        });
    }

    fn full_at(table: &BucketTable<Entry>, rule: u32, key: &ClientKey) -> Option<i64> {
        table.update(rule, key.as_ref(), 0, |e| (e.map(|e| e.full_at_us), None))
    }

    #[test]
    fn rules_do_not_share_entries() {
        let table = BucketTable::new(100);
        touch(&table, 0, &id(1), 5 * SEC, 0);
        assert_eq!(full_at(&table, 0, &id(1)), Some(5 * SEC));
        assert_eq!(full_at(&table, 1, &id(1)), None);
        assert_eq!(table.len(), 1);
        table.retain_rules(|rule| rule != 0);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn stays_within_capacity_and_evicts_the_fullest_first() {
        let table = BucketTable::new(1000);
        let hour = 3600 * SEC;
        // A client that used a lot: full again only in an hour.
        touch(&table, 0, &id(0), hour, 0);
        // A flood of clients one request in: full again in a second.
        for n in 1..=100_000 {
            touch(&table, 0, &id(n), SEC, 0);
            assert!(table.len() <= 1000);
        }
        assert_eq!(
            full_at(&table, 0, &id(0)),
            Some(hour),
            "the heavy user kept its entry"
        );
        assert!(table.evicted() >= 99_000);
        // Once the flood's entries are full they all go.
        assert_eq!(table.drop_full(2 * SEC), 1);
    }

    #[test]
    fn full_entries_go_before_any_live_one() {
        let table = BucketTable::new(10);
        for n in 0..5 {
            touch(&table, 0, &id(n), SEC, 0);
        }
        for n in 5..10 {
            touch(&table, 0, &id(n), 3 * SEC + n as i64, 2 * SEC);
        }
        // Full table at t = 2 s; the next insert drops the five full entries and nothing else.
        touch(&table, 0, &id(10), 4 * SEC, 2 * SEC);
        assert_eq!(table.len(), 6);
        assert_eq!(table.evicted(), 0);
        assert!((5..=10).all(|n| full_at(&table, 0, &id(n)).is_some()));
    }
}
