//! Where token buckets live: in this process ([`memory`]) or in Redis ([`redis`]). Both
//! give the same [`Decision`](crate::Decision) for the same sequence of requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::Decision;
use crate::backend::breaker::BreakerState;
use crate::key::KeyRef;
use crate::rules::Limit;

pub(crate) mod breaker;
pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;
pub(crate) mod table;

/// What becomes of one request on a limited route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Outcome {
    /// A token bucket decided (Redis, memory, or the local fallback).
    Decided(Decision),
    /// Redis could not decide and the policy is `allow`: pass, with no rate limit headers.
    PassThrough,
    /// Redis could not decide and the policy is `deny`: 503.
    Unavailable { retry_after: Duration },
}

/// What the Redis backend has counted; all zero without Redis.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RedisCounts {
    /// Decisions the failure policy made.
    pub(crate) fallback: u64,
    /// Calls that failed or missed their deadline.
    pub(crate) errors: u64,
    /// Requests refused from remembered refusals.
    pub(crate) cached_refusals: u64,
    /// Requests admitted from leases.
    pub(crate) leased: u64,
}

/// An outcome still on its way from Redis.
pub(crate) type PendingOutcome = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;

/// A backend's answer: at once, or later.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Verdict {
    Now(Outcome),
    Later(PendingOutcome),
}

pub(crate) enum Backend {
    Memory(Arc<memory::MemoryBackend>),
    #[cfg(feature = "redis")]
    Redis(Arc<redis::RedisBackend>),
}

impl Backend {
    /// Decides a request of `key` under the rule with identity `rule_id`, whose state id is
    /// `state`, with `limit`, under the rules of generation `rules`.
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub(crate) fn decide(
        &self,
        state: u32,
        rule_id: &str,
        limit: &Limit,
        key: KeyRef<'_>,
        rules: u64,
    ) -> Verdict {
        match self {
            Backend::Memory(memory) => {
                Verdict::Now(Outcome::Decided(memory.decide(state, limit, key)))
            }
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.decide(state, rule_id, limit, key, rules),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            #[cfg(feature = "redis")]
            Backend::Redis(_) => "redis",
        }
    }

    /// The in-process buckets: the memory backend, or Redis's local fallback.
    pub(crate) fn memory(&self) -> Option<&Arc<memory::MemoryBackend>> {
        match self {
            Backend::Memory(memory) => Some(memory),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.local(),
        }
    }

    /// Rules of generation `generation` replaced the ones before.
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub(crate) fn rules_changed(&self, generation: u64) {
        #[cfg(feature = "redis")]
        if let Backend::Redis(redis) = self {
            redis.rules_changed(generation);
        }
    }

    pub(crate) fn breaker(&self) -> Option<BreakerState> {
        match self {
            Backend::Memory(_) => None,
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => Some(redis.breaker_state()),
        }
    }

    /// What Redis has counted; zeros without Redis.
    pub(crate) fn redis_counts(&self) -> RedisCounts {
        match self {
            Backend::Memory(_) => RedisCounts::default(),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.counts(),
        }
    }
}
