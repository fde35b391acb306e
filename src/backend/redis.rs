//! Token buckets shared by every app instance, in Redis.
//!
//! One Lua script per algorithm (`token_bucket.lua`, `fixed_window.lua`,
//! `sliding_window.lua`) makes each decision atomically over all of a rule's bands, kept in
//! one hash key, using Redis `TIME` as the clock so instances with skewed clocks agree.
//! Keys are `<prefix>:{<rule id>:<client key>}`; the braces are a Redis Cluster hash tag.
//!
//! Every call has a deadline. Failures feed a [`Breaker`]; when Redis cannot decide, the
//! [`OnRedisError`] policy does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::memory::MemoryBackend;
use super::{Outcome, Verdict};
use crate::Decision;
use crate::algorithm::{Algorithm, Combined};
use crate::breaker::{Breaker, BreakerState, Permit, PermitGuard};
use crate::key::ClientKey;
use crate::policy::OnRedisError;
use crate::rules::Limit;

/// The decision scripts, each the shared prelude followed by one algorithm; `EVALSHA`,
/// reloaded on `NOSCRIPT` by [`Script`].
pub(crate) const TOKEN_BUCKET_LUA: &str = concat!(
    include_str!("prelude.lua"),
    include_str!("token_bucket.lua")
);
pub(crate) const FIXED_WINDOW_LUA: &str = concat!(
    include_str!("prelude.lua"),
    include_str!("fixed_window.lua")
);
pub(crate) const SLIDING_WINDOW_LUA: &str = concat!(
    include_str!("prelude.lua"),
    include_str!("sliding_window.lua")
);

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
    #[error("unexpected reply of {0} values from the script")]
    Reply(usize),
}

/// The three scripts, indexed by algorithm.
struct Scripts {
    token_bucket: Script,
    fixed_window: Script,
    sliding_window: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            token_bucket: Script::new(TOKEN_BUCKET_LUA),
            fixed_window: Script::new(FIXED_WINDOW_LUA),
            sliding_window: Script::new(SLIDING_WINDOW_LUA),
        }
    }

    fn get(&self, algorithm: Algorithm) -> &Script {
        match algorithm {
            Algorithm::TokenBucket => &self.token_bucket,
            Algorithm::FixedWindow => &self.fixed_window,
            Algorithm::SlidingWindow => &self.sliding_window,
        }
    }

    fn all(&self) -> [&Script; 3] {
        [&self.token_bucket, &self.fixed_window, &self.sliding_window]
    }
}

pub(crate) struct RedisBackend {
    connection: ConnectionManager,
    scripts: Scripts,
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
    pub(crate) async fn connect(config: &RedisConfig) -> Result<Self, String> {
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
                config.max_tracked_buckets,
                config.local_fallback_instances,
            ))
        });
        let backend = Self {
            scripts: Scripts::new(),
            prefix: config.prefix.as_str().into(),
            timeout: config.timeout,
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            on_error: config.on_error,
            local,
            fallback: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            connection: connection.clone(),
        };
        let load = async {
            for script in backend.scripts.all() {
                script.load_async(&mut connection).await?;
            }
            Ok::<_, redis::RedisError>(())
        };
        let loaded = match tokio::time::timeout(config.connect_timeout, load).await {
            Ok(Ok(())) => Ok(()),
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
        state: u32,
        rule_id: &str,
        limit: &Limit,
        client: &ClientKey,
    ) -> Verdict {
        let permit = self.breaker.permit();
        if permit == Permit::Skip {
            return Verdict::Now(self.without_redis(state, limit, client));
        }
        let key = self.key(rule_id, client);
        let client = client.clone();
        let limit = limit.clone();
        let this = Arc::clone(self);
        Verdict::Later(Box::pin(async move {
            let guard = PermitGuard::new(&this.breaker, permit);
            match this.call(key, &limit).await {
                Ok(decision) => {
                    guard.succeeded();
                    Outcome::Decided(decision)
                }
                Err(error) => {
                    this.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, "Redis could not decide");
                    guard.failed(&error);
                    this.without_redis(state, &limit, &client)
                }
            }
        }))
    }

    async fn call(&self, key: String, limit: &Limit) -> Result<Decision, CallError> {
        let mut connection = self.connection.clone();
        let algorithm = limit.algorithm();
        let mut invocation = self.scripts.get(algorithm).key(key);
        invocation.arg(limit.cost()).arg(limit.bands().len());
        for band in limit.bands() {
            invocation.arg(band.capacity());
            match algorithm {
                Algorithm::TokenBucket => invocation.arg(band.refill_per_sec()),
                _ => invocation.arg(band.spec().window_us),
            };
        }
        let call = invocation.invoke_async::<Vec<i64>>(&mut connection);
        let reply = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| CallError::Timeout(self.timeout))??;
        decode(&reply, limit)
    }

    /// The failure policy's answer.
    fn without_redis(&self, state: u32, limit: &Limit, client: &ClientKey) -> Outcome {
        self.fallback.fetch_add(1, Ordering::Relaxed);
        match (&self.local, self.on_error) {
            (Some(local), _) => Outcome::Decided(local.decide(state, limit, client)),
            (None, OnRedisError::Deny) => Outcome::Unavailable {
                retry_after: self.breaker.cooldown(),
            },
            (None, _) => Outcome::PassThrough,
        }
    }
}

/// `{admitted, now_ms, (admitted, remaining, retry_after_ms, reset_after_ms) per band}`.
fn decode(reply: &[i64], limit: &Limit) -> Result<Decision, CallError> {
    let bands = limit.bands();
    if reply.len() != 2 + 4 * bands.len() {
        return Err(CallError::Reply(reply.len()));
    }
    let mut combined = Combined::new();
    for (band, fields) in bands.iter().zip(reply[2..].chunks_exact(4)) {
        let ms = |v: i64| v as f64 * 1000.0;
        combined.add(
            f64::from(band.capacity()),
            fields[0] == 1,
            fields[1] as f64,
            ms(fields[2]),
            ms(fields[3]),
        );
    }
    Ok(combined.decision(reply[1].saturating_mul(1000)))
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
