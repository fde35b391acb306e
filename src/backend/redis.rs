//! Token buckets shared by every app instance, in Redis.
//!
//! One Lua script per algorithm (`token_bucket.lua`, `fixed_window.lua`,
//! `sliding_window.lua`) makes each decision atomically over all of a rule's bands, kept in
//! one hash key, using Redis `TIME` as the clock so instances with skewed clocks agree.
//! Keys are `<prefix>:{<rule id>:<client key>}`; the braces are a Redis Cluster hash tag.
//!
//! Every call has a deadline. Failures feed a [`Breaker`]; when Redis cannot decide, the
//! [`OnRedisError`] policy does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::cluster::{Breakers, Connection, parse_cluster_slots};
use super::memory::{Clock, MemoryBackend, SystemClock};
use super::table::{BucketTable, Expiring};
use super::{Outcome, Verdict};
use crate::Decision;
use crate::algorithm::{Algorithm, Combined};
use crate::breaker::{BreakerState, Permit, PermitGuard};
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
    /// Seed nodes of a Redis Cluster; when set, `url` is not used.
    pub(crate) cluster_nodes: Option<Vec<String>>,
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
            cluster_nodes: None,
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
    #[error("not connected to the cluster yet")]
    NotConnected,
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

    /// Loads every script (on every master of a cluster), within `deadline`.
    async fn load(&self, connection: &mut Connection, deadline: Duration) -> Result<(), String> {
        let load = async {
            for script in [&self.token_bucket, &self.fixed_window, &self.sliding_window] {
                script.load_async(connection).await?;
            }
            Ok::<_, redis::RedisError>(())
        };
        match tokio::time::timeout(deadline, load).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {deadline:?}")),
        }
    }
}

/// Reads `CLUSTER SLOTS` and gives each master its breaker; keeps the old map on failure.
async fn refresh_slots(breakers: &Breakers, connection: &mut Connection) {
    let Breakers::Cluster(slots) = breakers else {
        return;
    };
    let mut command = redis::cmd("CLUSTER");
    command.arg("SLOTS");
    let query = command.query_async::<redis::Value>(connection);
    match tokio::time::timeout(Duration::from_secs(1), query).await {
        Ok(Ok(reply)) => match parse_cluster_slots(&reply) {
            Some(ranges) => slots.update(ranges),
            None => tracing::debug!("unexpected CLUSTER SLOTS reply"),
        },
        Ok(Err(error)) => tracing::debug!(%error, "CLUSTER SLOTS failed"),
        Err(_) => tracing::debug!("CLUSTER SLOTS timed out"),
    }
}

/// A refusal from Redis, answered locally until it ends.
struct Refusal {
    /// Unix µs, local clock, when a request could be admitted again (measured from when the
    /// answer arrived, so never earlier than Redis meant).
    until_us: i64,
    decision: Decision,
}

impl Expiring for Refusal {
    fn expires_at_us(&self) -> i64 {
        self.until_us
    }
}

/// Refusals remembered at most.
const MAX_REFUSALS: usize = 100_000;

pub(crate) struct RedisBackend {
    /// Clients Redis refused, with when the refusal ends: until then they are refused here,
    /// without a round trip. This can only refuse, never admit, so it cannot over-admit; it
    /// is emptied when the rules change.
    refusals: BucketTable<Refusal>,
    refusal_hits: AtomicU64,
    /// Set once connected: at startup, or later by the background connector.
    connection: Arc<OnceLock<Connection>>,
    scripts: Arc<Scripts>,
    prefix: Box<str>,
    timeout: Duration,
    breakers: Arc<Breakers>,
    cooldown: Duration,
    on_error: OnRedisError,
    /// The in-process buckets the `local` policy decides with.
    local: Option<Arc<MemoryBackend>>,
    fallback: AtomicU64,
    errors: AtomicU64,
}

impl RedisBackend {
    /// Sets up the connection and loads the scripts. Only an unusable URL is an error: if
    /// Redis does not answer within `connect_timeout`, the backend starts with its breakers
    /// open and keeps trying in the background.
    pub(crate) async fn connect(config: &RedisConfig) -> Result<Self, String> {
        let local = (config.on_error == OnRedisError::Local).then(|| {
            Arc::new(MemoryBackend::new(
                config.max_tracked_buckets,
                config.local_fallback_instances,
            ))
        });
        let (failures, cooldown) = (config.breaker_failures, config.breaker_cooldown);
        let backend = Self {
            refusals: BucketTable::new(MAX_REFUSALS),
            refusal_hits: AtomicU64::new(0),
            connection: Arc::new(OnceLock::new()),
            scripts: Arc::new(Scripts::new()),
            prefix: config.prefix.as_str().into(),
            timeout: config.timeout,
            breakers: Arc::new(match config.cluster_nodes {
                Some(_) => Breakers::cluster(failures, cooldown),
                None => Breakers::single(failures, cooldown),
            }),
            cooldown,
            on_error: config.on_error,
            local,
            fallback: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        };
        let ready = match &config.cluster_nodes {
            None => backend.connect_single(config).await?,
            Some(nodes) => backend.connect_cluster(nodes, config).await?,
        };
        if let Err(error) = ready {
            let url = match &config.cluster_nodes {
                Some(nodes) => nodes
                    .iter()
                    .map(|n| redact(n))
                    .collect::<Vec<_>>()
                    .join(","),
                None => redact(&config.url),
            };
            tracing::warn!(
                %url,
                %error,
                policy = config.on_error.as_str(),
                "Redis unreachable at startup; deciding by the failure policy until it answers"
            );
            backend.breakers.open_all("Redis unreachable at startup");
        }
        Ok(backend)
    }

    /// A reconnecting connection to one Redis. The outer error is an unusable URL; the inner
    /// one says Redis did not answer yet.
    async fn connect_single(&self, config: &RedisConfig) -> Result<Result<(), String>, String> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| e.to_string())?;
        // Short, capped reconnect backoff: a restarted Redis is found again quickly.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.connect_timeout))
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(250))
            .set_number_of_retries(6);
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| e.to_string())?;
        let mut connection = Connection::Single(manager);
        let _ = self.connection.set(connection.clone());
        Ok(self
            .scripts
            .load(&mut connection, config.connect_timeout)
            .await)
    }

    /// A cluster connection, made now or, if no node answers in time, by a background task;
    /// and a task that keeps the slot map of the per-master breakers current.
    async fn connect_cluster(
        &self,
        nodes: &[String],
        config: &RedisConfig,
    ) -> Result<Result<(), String>, String> {
        let client = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.connect_timeout)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(250)
            .build()
            .map_err(|e| e.to_string())?;
        let connect_timeout = config.connect_timeout;
        let first = tokio::time::timeout(connect_timeout, client.get_async_connection()).await;
        let ready = match first {
            Ok(Ok(cluster)) => {
                let mut connection = Connection::Cluster(cluster);
                let _ = self.connection.set(connection.clone());
                refresh_slots(&self.breakers, &mut connection).await;
                self.scripts.load(&mut connection, connect_timeout).await
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {connect_timeout:?}")),
        };
        let (cell, scripts, breakers) = (
            Arc::downgrade(&self.connection),
            Arc::downgrade(&self.scripts),
            Arc::downgrade(&self.breakers),
        );
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(250));
            let mut since_refresh = Duration::ZERO;
            loop {
                ticks.tick().await;
                let (Some(cell), Some(scripts), Some(breakers)) =
                    (cell.upgrade(), scripts.upgrade(), breakers.upgrade())
                else {
                    break;
                };
                match cell.get() {
                    None => {
                        let attempt = client.get_async_connection();
                        if let Ok(Ok(cluster)) =
                            tokio::time::timeout(connect_timeout, attempt).await
                        {
                            let mut connection = Connection::Cluster(cluster);
                            let _ = cell.set(connection.clone());
                            refresh_slots(&breakers, &mut connection).await;
                            let _ = scripts.load(&mut connection, connect_timeout).await;
                            tracing::info!("connected to the Redis Cluster");
                        }
                    }
                    Some(connection) => {
                        since_refresh += Duration::from_millis(250);
                        if since_refresh >= Duration::from_secs(2) {
                            since_refresh = Duration::ZERO;
                            refresh_slots(&breakers, &mut connection.clone()).await;
                        }
                    }
                }
            }
        });
        Ok(ready)
    }

    pub(crate) fn key(&self, rule_id: &str, client: &ClientKey) -> String {
        format!("{}:{{{rule_id}:{client}}}", self.prefix)
    }

    pub(crate) fn local(&self) -> Option<&Arc<MemoryBackend>> {
        self.local.as_ref()
    }

    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breakers.state()
    }

    /// (fallback decisions, errors, refusals answered from the cache)
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        (
            self.fallback.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.refusal_hits.load(Ordering::Relaxed),
        )
    }

    /// New rules may admit what the old ones refused.
    pub(crate) fn rules_changed(&self) {
        self.refusals.retain_rules(|_| false);
    }

    /// The refusal Redis gave this client, if it has not ended.
    fn cached_refusal(&self, state: u32, client: &ClientKey) -> Option<Decision> {
        let now = SystemClock.now_us();
        self.refusals
            .update(state, client, now, |refusal| match refusal {
                Some(refusal) if refusal.until_us > now => {
                    let mut decision = refusal.decision;
                    decision.retry_after = Duration::from_micros((refusal.until_us - now) as u64);
                    (Some(decision), None)
                }
                _ => (None, None),
            })
    }

    fn remember_refusal(&self, state: u32, client: &ClientKey, decision: &Decision) {
        let now = SystemClock.now_us();
        let wait = i64::try_from(decision.retry_after.as_micros()).unwrap_or(i64::MAX);
        let refusal = Refusal {
            until_us: now.saturating_add(wait),
            decision: *decision,
        };
        self.refusals
            .update(state, client, now, |existing| match existing {
                Some(existing) => {
                    *existing = refusal;
                    ((), None)
                }
                None => ((), Some(refusal)),
            });
    }

    pub(crate) fn decide(
        self: &Arc<Self>,
        state: u32,
        rule_id: &str,
        limit: &Limit,
        client: &ClientKey,
    ) -> Verdict {
        if let Some(refused) = self.cached_refusal(state, client) {
            self.refusal_hits.fetch_add(1, Ordering::Relaxed);
            return Verdict::Now(Outcome::Decided(refused));
        }
        let key = self.key(rule_id, client);
        let breaker = self.breakers.for_key(&key);
        let permit = breaker.permit();
        if permit == Permit::Skip {
            return Verdict::Now(self.without_redis(state, limit, client));
        }
        let client = client.clone();
        let limit = limit.clone();
        let this = Arc::clone(self);
        Verdict::Later(Box::pin(async move {
            let guard = PermitGuard::new(breaker, permit);
            match this.call(key, &limit).await {
                Ok(decision) => {
                    guard.succeeded();
                    if !decision.allowed {
                        this.remember_refusal(state, &client, &decision);
                    }
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
        let mut connection = self
            .connection
            .get()
            .ok_or(CallError::NotConnected)?
            .clone();
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
                retry_after: self.cooldown,
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
