//! Token buckets in this process: one `governor` keyed limiter per rule.
//!
//! governor implements GCRA, which admits exactly what a token bucket admits: with
//! burst = `capacity` and one cell replenished every `1 / refill_per_sec`, a key may take
//! `capacity` requests at once and then one per refill period. Keys whose bucket has
//! refilled completely are indistinguishable from new ones and are dropped by
//! [`MemoryBackend::retain_recent`], which the layer calls periodically.

use std::time::{Duration, SystemTime};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::Decision;
use crate::key::ClientKey;
use crate::rules::{Bucket, Rule, Rules};

type KeyedLimiter<C> =
    RateLimiter<ClientKey, DefaultKeyedStateStore<ClientKey>, C, StateInformationMiddleware>;

pub(crate) struct MemoryBackend<C: Clock = DefaultClock> {
    /// Indexed like the rules; `None` for unlimited rules.
    limiters: Vec<Option<KeyedLimiter<C>>>,
    clock: C,
}

impl MemoryBackend<DefaultClock> {
    pub(crate) fn new(rules: &Rules) -> Self {
        Self::with_clock(rules, DefaultClock::default())
    }
}

impl<C: Clock + Clone> MemoryBackend<C> {
    pub(crate) fn with_clock(rules: &Rules, clock: C) -> Self {
        let limiters = rules
            .iter()
            .map(|rule| {
                rule.bucket().map(|bucket| {
                    KeyedLimiter::new(quota(bucket), Default::default(), clock.clone())
                })
            })
            .collect();
        Self { limiters, clock }
    }

    pub(crate) fn decide(&self, rule: &Rule, bucket: &Bucket, key: &ClientKey) -> Decision {
        let capacity = bucket.capacity();
        let Some(Some(limiter)) = self.limiters.get(rule.index()) else {
            // Rules and limiters are built together, so every limited rule has a limiter.
            return Decision::allowed(capacity, capacity, SystemTime::now());
        };
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

    /// Forgets keys whose buckets are full again; returns how many keys remain.
    pub(crate) fn retain_recent(&self) -> usize {
        self.limiters
            .iter()
            .flatten()
            .map(|limiter| {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                limiter.len()
            })
            .sum()
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
        let rules = Rules::from_json(json).unwrap();
        let clock = FakeRelativeClock::default();
        let backend = MemoryBackend::with_clock(&rules, clock.clone());
        (rules, backend, clock)
    }

    fn decide(rules: &Rules, backend: &MemoryBackend<FakeRelativeClock>, key: &str) -> Decision {
        let rule = rules.lookup(&Method::GET, "/");
        backend.decide(rule, rule.bucket().unwrap(), &ClientKey::Id(key.into()))
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
        assert_eq!(backend.retain_recent(), 3);
        clock.advance(Duration::from_secs(2));
        assert_eq!(backend.retain_recent(), 0);
    }
}
