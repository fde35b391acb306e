//! The Redis store's options on [`LimiterBuilder`], and how [`build`](LimiterBuilder::build)
//! opens the store they ask for.

use std::sync::Arc;
use std::time::Duration;

use super::config::{RedisConfig, redact};
use super::{REDIS, RedisBackend, RedisStore};
use crate::LimiterBuilder;
use crate::backend::{Opening, Store, StoreError};

/// What the builder was told of Redis.
#[derive(Debug, Default)]
pub(crate) struct Options {
    config: Option<RedisConfig>,
    prefix: Option<String>,
    timeout: Option<Duration>,
    breaker: Option<(u32, Duration)>,
    lease: Duration,
}

impl Options {
    /// The Redis store, connected, if a URL or cluster was given. Only an unusable URL is
    /// an error: an unreachable Redis is tried again in the background.
    pub(crate) async fn open(
        self,
        opening: &Opening,
    ) -> Option<Result<Arc<dyn Store>, StoreError>> {
        let mut config = self.config?;
        if config.cluster_nodes.as_ref().is_some_and(Vec::is_empty) {
            return Some(Err(StoreError::new(
                REDIS,
                "no Redis Cluster seed nodes: give at least one redis:// URL",
            )));
        }
        if let Some(prefix) = self.prefix {
            config.prefix = prefix;
        }
        if let Some(timeout) = self.timeout {
            config.timeout = timeout;
        }
        if let Some((failures, cooldown)) = self.breaker {
            config.breaker_failures = failures;
            config.breaker_cooldown = cooldown;
        }
        config.lease = self.lease;
        config.on_error = opening.on_error;
        config.local_fallback_instances = opening.local_fallback_instances;
        config.max_tracked_buckets = opening.max_tracked_buckets;
        let opened = RedisBackend::connect(&config).await.map_err(|reason| {
            let url = redact(&config.url);
            StoreError::new(REDIS, format!("cannot use the Redis URL {url}: {reason}"))
        });
        Some(opened.map(|backend| Arc::new(RedisStore(backend)) as Arc<dyn Store>))
    }
}

/// The Redis store: the state shared by every instance using the same Redis and prefix.
impl LimiterBuilder {
    /// Keeps buckets in Redis at this URL (`redis://[[user]:password@]host[:port][/db]`, or
    /// `redis+unix:///path/to/redis.sock`), shared by every instance using the same Redis and
    /// prefix. TLS (`rediss://`) is not built in: the build fails with an error saying so.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.stores.redis.config = Some(RedisConfig::new(url.into()));
        self
    }

    /// Keeps buckets in a Redis Cluster reached through these seed nodes (each a `redis://`
    /// URL; one reachable node is enough, the rest of the cluster is discovered). Each master
    /// gets its own circuit breaker, so losing one master affects only its slots. No nodes,
    /// or a node that is not a Redis URL, fails [`build`](Self::build).
    pub fn redis_cluster<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(Into::into).collect();
        let mut config = RedisConfig::new(nodes.join(","));
        config.cluster_nodes = Some(nodes);
        self.stores.redis.config = Some(config);
        self
    }

    /// Prefix of every Redis key (default `tollgate`).
    pub fn redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.stores.redis.prefix = Some(prefix.into());
        self
    }

    /// Deadline for each Redis decision (default 50 ms). A decision that misses it is made
    /// by the failure policy instead.
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.stores.redis.timeout = Some(timeout);
        self
    }

    /// The circuit breaker in front of Redis: it opens after `failures` failed or late
    /// decisions in a row (default 5) and probes Redis again after `cooldown` (default
    /// 500 ms).
    pub fn circuit_breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.stores.redis.breaker = Some((failures.max(1), cooldown));
        self
    }

    /// Lets this instance take requests' worth of tokens from Redis ahead of time, and spend
    /// them without a round trip for up to `ttl` (default: zero, off).
    ///
    /// When Redis admits a request, it can also hand out a lease: up to 1/16 of the smallest
    /// band's capacity (whole multiples of the request's cost), if every band still has
    /// that much. The lease is taken from the bucket in Redis at once, so all instances
    /// together never admit more than Redis handed out. Later requests of that client under
    /// that rule are admitted from the lease, here, until it runs out or ends after `ttl`
    /// (for a fixed or sliding window, at the end of the window at the latest); then Redis
    /// decides again. One request at a time asks for a lease per client and rule; requests
    /// meanwhile ask Redis for themselves only. Refusals always come from Redis (or its
    /// remembered refusals).
    ///
    /// What it costs: a lease an instance does not spend is lost until the bucket refills,
    /// so with several instances a client may be refused while up to 1/16 of its limit sits
    /// unspent in another instance. For a token bucket, tokens taken early can be spent
    /// after the bucket in Redis has refilled, so a burst can exceed the capacity by up to
    /// the smaller of refill rate × `ttl` and 1/16 of the capacity per instance. Windows
    /// are never exceeded. A rules change drops every lease. Bands of a capacity under
    /// 16 × cost never lease. A `ttl` under 1 ms turns leases off; one over a day is a day.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::Limiter;
    ///
    /// let builder = Limiter::builder()
    ///     .redis_url("redis://127.0.0.1:6379")
    ///     .redis_lease(Duration::from_millis(100));
    /// # drop(builder);
    /// ```
    pub fn redis_lease(mut self, ttl: Duration) -> Self {
        self.stores.redis.lease = if ttl < Duration::from_millis(1) {
            Duration::ZERO
        } else {
            ttl.min(Duration::from_secs(24 * 3600))
        };
        self
    }
}
