//! Where limits are decided: in this process ([`memory`]) or in Redis ([`redis`]). Both
//! give the same [`Decision`] for the same sequence of requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::Decision;
use crate::decision::DecidedBy;
use crate::key::KeyRef;
use crate::rules::Limit;
use breaker::BreakerState;

pub(crate) mod breaker;
pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;
pub(crate) mod table;

/// One rule of the rules in force, as a backend keys its state: the rule's identity (in
/// Redis keys), its state id (in this process's tables, kept across reloads while the
/// identity stays), and the generation of the rules it belongs to (what a backend remembers
/// under other rules is not used for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleSlot {
    pub(crate) id: Arc<str>,
    pub(crate) state: u32,
    pub(crate) generation: u64,
}

/// Whether a decision takes what it admits, or only looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Admit and take the cost, or refuse.
    Take,
    /// Say what taking would do, and take nothing: the bands are reported as they are now.
    Peek,
}

/// What becomes of one request on a limited rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Outcome {
    /// The bands decided: in Redis, in memory, or by one of Redis's shortcuts.
    Decided(Decision, DecidedBy),
    /// Redis could not decide and the policy is `allow`: pass, with no rate limit headers.
    PassThrough,
    /// Redis could not decide and the policy is `deny`: refuse until about `retry_after`.
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
pub(crate) enum Answer {
    Now(Outcome),
    Later(PendingOutcome),
}

pub(crate) enum Backend {
    Memory(Arc<memory::MemoryBackend>),
    #[cfg(feature = "redis")]
    Redis(Arc<redis::RedisBackend>),
}

impl Backend {
    /// Decides a request of `client` under `rule` with `limit`, at `cost`.
    pub(crate) fn decide(
        &self,
        rule: &RuleSlot,
        limit: &Limit,
        cost: u32,
        client: KeyRef<'_>,
        mode: Mode,
    ) -> Answer {
        match self {
            Backend::Memory(memory) => Answer::Now(Outcome::Decided(
                memory.decide(rule.state, limit, cost, client, mode),
                DecidedBy::Memory,
            )),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.decide(rule, limit, cost, client, mode),
        }
    }

    /// Forgets `client`'s state under `rules` here, and in Redis (where other instances
    /// learn of it too).
    pub(crate) async fn reset(&self, rules: &[RuleSlot], client: KeyRef<'_>) -> Result<(), String> {
        match self {
            Backend::Memory(memory) => {
                for rule in rules {
                    memory.forget(rule.state, client);
                }
                Ok(())
            }
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.reset(rules, client).await,
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

    /// One client's override changed, and nothing else: no rule's state is dropped (every
    /// rule is still there), and Redis's remembered refusals and leases go as for any
    /// change of the rules.
    pub(crate) fn client_changed(&self, slots: &[RuleSlot]) {
        #[cfg(feature = "redis")]
        if let Backend::Redis(redis) = self {
            redis.rules_changed(slots);
        }
        #[cfg(not(feature = "redis"))]
        let _ = slots;
    }

    /// New rules are in force, with these slots: state of rules that are gone is dropped,
    /// and what was remembered under the old rules no longer counts.
    pub(crate) fn rules_changed(&self, slots: &[RuleSlot]) {
        if let Some(memory) = self.memory() {
            let live: std::collections::HashSet<u32> = slots.iter().map(|s| s.state).collect();
            memory.retain_rules(|id| live.contains(&id));
        }
        #[cfg(feature = "redis")]
        if let Backend::Redis(redis) = self {
            redis.rules_changed(slots);
        }
    }

    /// The failure policy in force; `None` without Redis.
    pub(crate) fn on_redis_error(&self) -> Option<crate::policy::OnRedisError> {
        match self {
            Backend::Memory(_) => None,
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => Some(redis.on_error()),
        }
    }

    pub(crate) fn breaker(&self) -> Option<BreakerState> {
        match self {
            Backend::Memory(_) => None,
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => Some(redis.breaker_state()),
        }
    }

    /// Each Redis node's circuit breaker, by `host:port`; none without Redis.
    #[cfg(feature = "metrics")]
    pub(crate) fn breakers(&self) -> Vec<(String, BreakerState)> {
        match self {
            Backend::Memory(_) => Vec::new(),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.breakers(),
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
