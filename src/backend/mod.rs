//! Where token buckets live: in this process ([`memory`]) or in Redis ([`redis`]). Both
//! give the same [`Decision`](crate::Decision) for the same sequence of requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::Decision;
use crate::key::ClientKey;
use crate::rules::{Bucket, Rule};

pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;
pub(crate) mod table;

/// A decision still on its way from a remote store.
pub(crate) type PendingDecision =
    Pin<Box<dyn Future<Output = Result<Decision, BackendError>> + Send + 'static>>;

/// A backend's answer: at once, or later.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Verdict {
    Now(Decision),
    Later(PendingDecision),
}

/// Why a remote backend could not decide.
#[derive(Debug, thiserror::Error)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum BackendError {
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[cfg(feature = "redis")]
    #[error("{0}")]
    Redis(#[from] ::redis::RedisError),
}

pub(crate) enum Backend {
    Memory(Arc<memory::MemoryBackend>),
    #[cfg(feature = "redis")]
    Redis(redis::RedisBackend),
}

impl Backend {
    pub(crate) fn decide(&self, rule: &Rule, bucket: &Bucket, key: &ClientKey) -> Verdict {
        match self {
            Backend::Memory(memory) => Verdict::Now(memory.decide(rule, key)),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => Verdict::Later(redis.decide(rule, bucket, key)),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            #[cfg(feature = "redis")]
            Backend::Redis(_) => "redis",
        }
    }
}
