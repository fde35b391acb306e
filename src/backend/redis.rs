//! Token buckets shared by every app instance, in Redis.
//!
//! One Lua script ([`token_bucket.lua`](token_bucket.lua)) makes each decision atomically
//! on one hash key, using Redis `TIME` as the clock so instances with skewed clocks agree.
//! Keys are `<prefix>:{<rule id>:<client key>}`; the braces are a Redis Cluster hash tag.
//!
//! Every call has a deadline. Failures feed a [`Breaker`]; when Redis cannot decide, the
//! [`OnRedisError`] policy does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::memory::MemoryBackend;
use super::{Outcome, Verdict};
use crate::Decision;
use crate::breaker::{Breaker, BreakerState, Permit, PermitGuard};
use crate::key::ClientKey;
use crate::policy::OnRedisError;
use crate::rules::{Bucket, Rules};

/// The decision script; `EVALSHA`, reloaded on `NOSCRIPT` by [`Script`].
pub(crate) const TOKEN_BUCKET_LUA: &str = include_str!("token_bucket.lua");

/// How the layer reaches Redis and what it does without it.
#[derive(Debug, Clone)]
pub(crate) struct RedisConfig {
    pub(crate) url: String,
    pub(crate) prefix: String,
    /// Deadline for each decision.
    pub(crate) timeout: Duration,
    /// Deadline for connecting at startup and for each reconnect attempt.
    pub(crate) connect_timeout: Duration,
    pub(crate) on_error: OnRedisError,
    /// The local fallback divides every bucket by this.
    pub(crate) local_fallback_instances: u32,
    pub(crate) breaker_failures: u32,
    pub(crate) breaker_cooldown: Duration,
    /// Bound of the local fallback's bucket table.
    pub(crate) max_tracked_buckets: usize,
}

impl RedisConfig {
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            prefix: "tollgate".to_owned(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            on_error: OnRedisError::Local,
            local_fallback_instances: 1,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_millis(500),
            max_tracked_buckets: super::memory::DEFAULT_MAX_KEYS,
        }
    }
}

/// Why Redis could not decide.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

pub(crate) struct RedisBackend {
    connection: ConnectionManager,
    script: Script,
    prefix: Box<str>,
    timeout: Duration,
    breaker: Breaker,
    on_error: OnRedisError,
    /// The in-process buckets the `local` policy decides with.
    local: Option<Arc<MemoryBackend>>,
    fallback: AtomicU64,
    errors: AtomicU64,
}

impl RedisBackend {
    /// Sets up the connection and loads the script. Only an unusable URL is an error: if
    /// Redis does not answer within `connect_timeout`, the backend starts with its breaker
    /// open and the connection manager keeps trying in the background.
    pub(crate) async fn connect(config: &RedisConfig, rules: &Rules) -> Result<Self, String> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| e.to_string())?;
        // Short, capped reconnect backoff: a restarted Redis is found again quickly.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.connect_timeout))
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(250))
            .set_number_of_retries(6);
        let mut connection = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| e.to_string())?;
        let local = (config.on_error == OnRedisError::Local).then(|| {
            Arc::new(MemoryBackend::new(
                rules,
                config.max_tracked_buckets,
                config.local_fallback_instances,
            ))
        });
        let backend = Self {
            script: Script::new(TOKEN_BUCKET_LUA),
            prefix: config.prefix.as_str().into(),
            timeout: config.timeout,
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            on_error: config.on_error,
            local,
            fallback: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            connection: connection.clone(),
        };
        let load = backend.script.load_async(&mut connection);
        let loaded = match tokio::time::timeout(config.connect_timeout, load).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", config.connect_timeout)),
        };
        if let Err(error) = loaded {
            tracing::warn!(
                url = %redact(&config.url),
                %error,
                policy = config.on_error.as_str(),
                "Redis unreachable at startup; deciding by the failure policy until it answers"
            );
            backend.breaker.open("Redis unreachable at startup");
        }
        Ok(backend)
    }

    pub(crate) fn key(&self, rule_id: &str, client: &ClientKey) -> String {
        format!("{}:{{{rule_id}:{client}}}", self.prefix)
    }

    pub(crate) fn local(&self) -> Option<&Arc<MemoryBackend>> {
        self.local.as_ref()
    }

    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// (fallback decisions, errors)
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.fallback.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn decide(
        self: &Arc<Self>,
        rule: usize,
        rule_id: &str,
        bucket: &Bucket,
        client: &ClientKey,
    ) -> Verdict {
        let permit = self.breaker.permit();
        if permit == Permit::Skip {
            return Verdict::Now(self.without_redis(rule, client));
        }
        let key = self.key(rule_id, client);
        let client = client.clone();
        let this = Arc::clone(self);
        let (capacity, refill_per_sec) = (bucket.capacity(), bucket.refill_per_sec());
        Verdict::Later(Box::pin(async move {
            let guard = PermitGuard::new(&this.breaker, permit);
            match this.call(key, capacity, refill_per_sec).await {
                Ok(decision) => {
                    guard.succeeded();
                    Outcome::Decided(decision)
                }
                Err(error) => {
                    this.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, "Redis could not decide");
                    guard.failed(&error);
                    this.without_redis(rule, &client)
                }
            }
        }))
    }

    async fn call(
        &self,
        key: String,
        capacity: u32,
        refill_per_sec: f64,
    ) -> Result<Decision, CallError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(key);
        invocation.arg(capacity).arg(refill_per_sec).arg(1u32);
        let call = invocation.invoke_async::<(u8, u32, u64, u64, u64)>(&mut connection);
        let (allowed, remaining, retry_after_ms, reset_after_ms, now_ms) =
            tokio::time::timeout(self.timeout, call)
                .await
                .map_err(|_| CallError::Timeout(self.timeout))??;
        let reset =
            SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms.saturating_add(reset_after_ms));
        Ok(if allowed == 1 {
            Decision::allowed(capacity, remaining, reset)
        } else {
            Decision::denied(capacity, reset, Duration::from_millis(retry_after_ms))
        })
    }

    /// The failure policy's answer.
    fn without_redis(&self, rule: usize, client: &ClientKey) -> Outcome {
        self.fallback.fetch_add(1, Ordering::Relaxed);
        match (&self.local, self.on_error) {
            (Some(local), _) => Outcome::Decided(local.decide(rule, client)),
            (None, OnRedisError::Deny) => Outcome::Unavailable {
                retry_after: self.breaker.cooldown(),
            },
            (None, _) => Outcome::PassThrough,
        }
    }
}

/// The URL with any password replaced by `***`, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis://:s3cret@host:6379"),
            "redis://:***@host:6379"
        );
        assert_eq!(redact("rediss://user:p@ss@host"), "rediss://user:***@host");
        assert_eq!(redact("redis://user@host"), "redis://user@host");
    }
}
