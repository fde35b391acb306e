//! A bounded table of token bucket states, plugged into governor as its state store.
//!
//! governor keeps one number per bucket: the GCRA "theoretical arrival time" (TAT), the
//! moment the bucket will be full again. A bucket whose TAT has passed is full and carries no
//! information, so it can be dropped at no cost. The table holds at most `max_keys` buckets
//! across all rules; when a shard is full it first drops full buckets, then the buckets
//! closest to full (smallest TAT). Forgetting a bucket hands its client a fresh, full one, so
//! evicting the fullest buckets gives away the fewest tokens: a flood of fresh client IDs,
//! each one request in, is evicted before a real client that has used its burst.
//!
//! Keys are hashed with SipHash under a random key (std's `RandomState`), so clients cannot
//! choose IDs that collide on purpose.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;
use governor::state::StateStore;
use hashbrown::{Equivalent, HashMap};

use crate::key::ClientKey;

/// A bucket is taken for full only this long after its TAT, so the small offset between the
/// table's start and each limiter's start never makes a bucket look full early.
const FULL_MARGIN_NANOS: u64 = 1_000_000;

type Shard = HashMap<(u32, ClientKey), u64, RandomState>;

pub(crate) struct BucketTable<C: Clock> {
    shards: Box<[Mutex<Shard>]>,
    shard_of: RandomState,
    shard_capacity: usize,
    clock: C,
    start: C::Instant,
    evicted: AtomicU64,
}

impl<C: Clock> BucketTable<C> {
    /// Must be created before the limiters that use it (see [`FULL_MARGIN_NANOS`]).
    pub(crate) fn new(max_keys: usize, clock: C) -> Self {
        let max_keys = max_keys.max(1);
        let shard_count = (max_keys / 1024).clamp(1, 64);
        let hasher = RandomState::new();
        let shards = (0..shard_count)
            .map(|_| Mutex::new(HashMap::with_hasher(hasher.clone())))
            .collect();
        let start = clock.now();
        Self {
            shards,
            shard_of: RandomState::new(),
            shard_capacity: max_keys.div_ceil(shard_count),
            clock,
            start,
            evicted: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &BucketRef<'_>) -> MutexGuard<'_, Shard> {
        let index = (self.shard_of.hash_one(key) % self.shards.len() as u64) as usize;
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn now_nanos(&self) -> u64 {
        self.clock.now().duration_since(self.start).as_u64()
    }

    /// Drops full buckets in every shard; returns how many buckets remain.
    pub(crate) fn drop_full(&self) -> usize {
        let now = self.now_nanos();
        self.shards
            .iter()
            .map(|shard| {
                let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
                map.retain(|_, tat| !is_full(*tat, now));
                if map.capacity() > 4 * map.len().max(16) {
                    map.shrink_to_fit();
                }
                map.len()
            })
            .sum()
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

    /// Frees a tenth of a full shard: full buckets first, then those closest to full.
    fn make_room(&self, map: &mut Shard) {
        let now = self.now_nanos();
        map.retain(|_, tat| !is_full(*tat, now));
        let live = map.len();
        let target = self.shard_capacity - self.shard_capacity.div_ceil(10);
        if map.len() > target {
            let excess = map.len() - target;
            let mut tats: Vec<u64> = map.values().copied().collect();
            let (_, cutoff, _) = tats.select_nth_unstable(excess - 1);
            let cutoff = *cutoff;
            let mut to_evict = excess;
            map.retain(|_, tat| {
                let evict = to_evict > 0 && *tat <= cutoff;
                to_evict -= usize::from(evict);
                !evict
            });
            self.evicted
                .fetch_add((live - map.len()) as u64, Ordering::Relaxed);
        }
    }
}

fn is_full(tat: u64, now: u64) -> bool {
    tat.saturating_add(FULL_MARGIN_NANOS) <= now
}

/// Borrowed form of a table key, so lookups do not clone the client key.
#[derive(Hash)]
struct BucketRef<'a>(u32, &'a ClientKey);

impl Equivalent<(u32, ClientKey)> for BucketRef<'_> {
    fn equivalent(&self, key: &(u32, ClientKey)) -> bool {
        self.0 == key.0 && *self.1 == key.1
    }
}

/// One rule's view of the shared table: the state store of that rule's governor limiter.
pub(crate) struct RuleStore<C: Clock> {
    table: Arc<BucketTable<C>>,
    rule: u32,
}

impl<C: Clock> RuleStore<C> {
    pub(crate) fn new(table: Arc<BucketTable<C>>, rule: u32) -> Self {
        Self { table, rule }
    }
}

impl<C: Clock> StateStore for RuleStore<C> {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let lookup = BucketRef(self.rule, key);
        let mut map = self.table.shard(&lookup);
        if let Some(tat) = map.get_mut(&lookup) {
            let (outcome, next) = f(Some(Nanos::from(*tat)))?;
            *tat = next.as_u64();
            return Ok(outcome);
        }
        let (outcome, next) = f(None)?;
        if map.len() >= self.table.shard_capacity {
            self.table.make_room(&mut map);
        }
        map.insert((self.rule, key.clone()), next.as_u64());
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    fn id(n: usize) -> ClientKey {
        ClientKey::Id(format!("c{n}").into())
    }

    fn touch(store: &RuleStore<FakeRelativeClock>, key: &ClientKey, tat: u64) {
        store
            .measure_and_replace(key, |_| Ok::<_, ()>(((), Nanos::from(tat))))
            .unwrap();
    }

    fn tat(store: &RuleStore<FakeRelativeClock>, key: &ClientKey) -> Option<u64> {
        // Err leaves the state untouched and carries what was seen out.
        store
            .measure_and_replace(key, |old| Err::<((), Nanos), _>(old.map(Nanos::as_u64)))
            .unwrap_err()
    }

    #[test]
    fn rules_do_not_share_buckets() {
        let table = Arc::new(BucketTable::new(100, FakeRelativeClock::default()));
        let (a, b) = (
            RuleStore::new(table.clone(), 0),
            RuleStore::new(table.clone(), 1),
        );
        touch(&a, &id(1), 5_000_000_000);
        assert_eq!(tat(&a, &id(1)), Some(5_000_000_000));
        assert_eq!(tat(&b, &id(1)), None);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn stays_within_capacity_and_evicts_the_fullest_first() {
        let clock = FakeRelativeClock::default();
        let table = Arc::new(BucketTable::new(1000, clock.clone()));
        let store = RuleStore::new(table.clone(), 0);
        let hour = 3_600_000_000_000;
        // A client that used a lot: its bucket is full only in an hour.
        touch(&store, &id(0), hour);
        // A flood of clients one request in: full again in a second.
        for n in 1..=100_000 {
            touch(&store, &id(n), 1_000_000_000);
            assert!(table.len() <= 1000);
        }
        assert_eq!(
            tat(&store, &id(0)),
            Some(hour),
            "the heavy user kept its bucket"
        );
        assert!(table.evicted() >= 99_000);
        // Once the flood's buckets are full they all go.
        clock.advance(Duration::from_secs(2));
        assert_eq!(table.drop_full(), 1);
    }

    #[test]
    fn full_buckets_go_before_any_live_one() {
        let clock = FakeRelativeClock::default();
        let table = Arc::new(BucketTable::new(10, clock.clone()));
        let store = RuleStore::new(table.clone(), 0);
        for n in 0..5 {
            touch(&store, &id(n), 1_000_000_000);
        }
        clock.advance(Duration::from_secs(2));
        for n in 5..10 {
            touch(&store, &id(n), 3_000_000_000 + n as u64);
        }
        // Full table; the next insert drops the five full buckets and nothing else.
        touch(&store, &id(10), 3_500_000_000);
        assert_eq!(table.len(), 6);
        assert_eq!(table.evicted(), 0);
        assert!((5..=10).all(|n| tat(&store, &id(n)).is_some()));
    }
}
