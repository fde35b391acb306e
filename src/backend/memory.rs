//! Token buckets in this process: one `governor` keyed limiter per rule, all keeping their
//! state in one bounded [`BucketTable`].
//!
//! governor implements GCRA, which admits exactly what a token bucket admits: with
//! burst = `capacity` and one cell replenished every `1 / refill_per_sec`, a key may take
//! `capacity` requests at once and then one per refill period. Buckets that have refilled
//! completely are indistinguishable from new ones and are dropped by
//! [`MemoryBackend::drop_full`], which the layer calls periodically.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

use super::table::{BucketTable, RuleStore};
use crate::Decision;
use crate::key::ClientKey;
#[cfg(doc)]
use crate::rules::Rule;
use crate::rules::{Bucket, Rules};

type KeyedLimiter<C> = RateLimiter<ClientKey, RuleStore<C>, C, StateInformationMiddleware>;

/// Default bound on the buckets kept in memory, across all rules.
pub(crate) const DEFAULT_MAX_KEYS: usize = 100_000;

pub(crate) struct MemoryBackend<C: Clock = DefaultClock> {
    /// Indexed like the rules; `None` for unlimited rules.
    limiters: Vec<Option<(KeyedLimiter<C>, Bucket)>>,
    table: Arc<BucketTable<C>>,
    clock: C,
}

impl MemoryBackend<DefaultClock> {
    /// Buckets for `rules`, each divided by `share` (1 for the real limits; N for a fallback
    /// that N instances run side by side).
    pub(crate) fn new(rules: &Rules, max_keys: usize, share: u32) -> Self {
        Self::with_clock(rules, max_keys, share, DefaultClock::default())
    }
}

impl<C: Clock + Clone> MemoryBackend<C> {
    pub(crate) fn with_clock(rules: &Rules, max_keys: usize, share: u32, clock: C) -> Self {
        let table = Arc::new(BucketTable::new(max_keys, clock.clone()));
        let limiters = rules
            .iter()
            .map(|rule| {
                rule.bucket().map(|bucket| {
                    let bucket = bucket.divided_by(share);
                    let store = RuleStore::new(Arc::clone(&table), rule.index() as u32);
                    (
                        KeyedLimiter::new(quota(&bucket), store, clock.clone()),
                        bucket,
                    )
                })
            })
            .collect();
        Self {
            limiters,
            table,
            clock,
        }
    }

    /// Decides for the rule at `rule` (its [`Rule::index`]) of the rules this backend was
    /// built from.
    pub(crate) fn decide(&self, rule: usize, key: &ClientKey) -> Decision {
        let Some(Some((limiter, bucket))) = self.limiters.get(rule) else {
            // Rules and limiters are built together: this is an unlimited rule.
            return Decision::allowed(u32::MAX, u32::MAX, SystemTime::now());
        };
        let capacity = bucket.capacity();
        match limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                // governor reports whole tokens only, so this is an upper bound, late by at
                // most one refill period.
                let full_after = bucket.time_to_fill(capacity - remaining);
                Decision::allowed(capacity, remaining, SystemTime::now() + full_after)
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(self.clock.now());
                // Denied means less than one token: full after that token and the rest.
                let full_after = retry_after + bucket.time_to_fill(capacity - 1);
                Decision::denied(capacity, SystemTime::now() + full_after, retry_after)
            }
        }
    }

    /// Forgets buckets that are full again; returns how many remain.
    pub(crate) fn drop_full(&self) -> usize {
        self.table.drop_full()
    }

    /// Buckets held now.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Live buckets forgotten to stay within the bound.
    pub(crate) fn evicted(&self) -> u64 {
        self.table.evicted()
    }
}

fn quota(bucket: &Bucket) -> Quota {
    // Bucket guarantees a rate of at most 1e9/s, so the period is at least 1 ns.
    let period = bucket.refill_period().max(Duration::from_nanos(1));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(bucket.capacity_nonzero()))
        .allow_burst(bucket.capacity_nonzero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use http::Method;

    fn setup(json: &str) -> (Rules, MemoryBackend<FakeRelativeClock>, FakeRelativeClock) {
        setup_shared(json, 1)
    }

    fn setup_shared(
        json: &str,
        share: u32,
    ) -> (Rules, MemoryBackend<FakeRelativeClock>, FakeRelativeClock) {
        let rules = Rules::from_json(json).unwrap();
        let clock = FakeRelativeClock::default();
        let backend = MemoryBackend::with_clock(&rules, DEFAULT_MAX_KEYS, share, clock.clone());
        (rules, backend, clock)
    }

    fn decide(rules: &Rules, backend: &MemoryBackend<FakeRelativeClock>, key: &str) -> Decision {
        let rule = rules.lookup(&Method::GET, "/").index();
        backend.decide(rule, &ClientKey::Id(key.into()))
    }

    #[test]
    fn burst_then_refill_at_the_configured_rate() {
        let (rules, backend, clock) = setup(r#"{"default": {"capacity": 3, "refill_rate": 0.5}}"#);
        let remaining: Vec<u32> = (0..3)
            .map(|_| decide(&rules, &backend, "a").remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let denied = decide(&rules, &backend, "a");
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_secs(2));
        assert_eq!(denied.limit, 3);

        clock.advance(Duration::from_millis(1999));
        assert!(!decide(&rules, &backend, "a").allowed);
        clock.advance(Duration::from_millis(1));
        let d = decide(&rules, &backend, "a");
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);

        // Refill never goes beyond capacity.
        clock.advance(Duration::from_secs(3600));
        let remaining: Vec<u32> = (0..4)
            .map(|_| decide(&rules, &backend, "a").remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0, 0]);
    }

    #[test]
    fn clients_are_isolated() {
        let (rules, backend, _) = setup(r#"{"default": {"capacity": 1, "refill_rate": 0.001}}"#);
        assert!(decide(&rules, &backend, "a").allowed);
        assert!(!decide(&rules, &backend, "a").allowed);
        assert!(decide(&rules, &backend, "b").allowed);
    }

    #[test]
    fn reset_is_when_the_bucket_is_full_again() {
        let (rules, backend, _) = setup(r#"{"default": {"capacity": 4, "refill_rate": 1}}"#);
        let before = SystemTime::now();
        decide(&rules, &backend, "a");
        let d = decide(&rules, &backend, "a");
        let full_after = d.reset.duration_since(before).unwrap();
        assert!(full_after >= Duration::from_secs(2), "{full_after:?}");
        assert!(full_after < Duration::from_secs(3), "{full_after:?}");
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let (rules, backend, clock) = setup(r#"{"default": {"capacity": 2, "refill_rate": 1}}"#);
        for key in ["a", "b", "c"] {
            decide(&rules, &backend, key);
        }
        assert_eq!(backend.drop_full(), 3);
        clock.advance(Duration::from_secs(2));
        assert_eq!(backend.drop_full(), 0);
    }

    #[test]
    fn a_share_divides_capacity_and_rate() {
        let (rules, backend, clock) =
            setup_shared(r#"{"default": {"capacity": 10, "refill_rate": 2}}"#, 4);
        let burst: Vec<bool> = (0..4)
            .map(|_| decide(&rules, &backend, "a").allowed)
            .collect();
        assert_eq!(burst, [true, true, false, false]);
        assert_eq!(decide(&rules, &backend, "a").limit, 2);
        // 2/4 = 0.5 tokens per second.
        clock.advance(Duration::from_millis(1999));
        assert!(!decide(&rules, &backend, "a").allowed);
        clock.advance(Duration::from_millis(1));
        assert!(decide(&rules, &backend, "a").allowed);
    }
}
