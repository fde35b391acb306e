//! [`RateLimitLayer`] and its builder.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use std::time::Duration;

use tower_layer::Layer;

use crate::backend::Backend;
use crate::backend::memory::{DEFAULT_MAX_KEYS, MemoryBackend};
use crate::error::BuildError;
use crate::key::{KeySource, Trust};
use crate::policy::OnRedisError;
use crate::reload::{self, Installed, ReloadState, RulesFile, StateIds, Trigger, off_runtime};
use crate::rules::Rules;
use crate::rules::RulesError;
use crate::service::RateLimit;
use crate::stats::{Counters, Stats};

/// State shared by every clone of the layer and of its services.
pub(crate) struct Shared {
    /// The rules in force; swapped whole by a reload.
    pub(crate) installed: ArcSwap<Installed>,
    pub(crate) state_ids: StateIds,
    pub(crate) rules_file: Option<RulesFile>,
    pub(crate) reload: Mutex<ReloadState>,
    pub(crate) keys: KeySource,
    /// What `keys` keys IPv6 clients by, to say which client overrides never apply.
    pub(crate) ipv6_prefix_len: u8,
    pub(crate) backend: Backend,
    pub(crate) counters: Counters,
}

/// A tower [`Layer`](https://docs.rs/tower/latest/tower/trait.Layer.html) that rate limits
/// requests by client and route.
///
/// Each request is matched to a client key (`X-Client-ID`, `X-Forwarded-For`, the peer
/// address), then to a rule in the rules file, then decided by the rule's algorithm in Redis
/// or in memory. Allowed requests reach the inner service and get `X-RateLimit-*` headers; refused
/// ones get `429 Too Many Requests` with `Retry-After`. Cloning is cheap: clones share the
/// rules and the buckets.
///
/// # Example
///
/// ```
/// use axum::{body::Body, http::{Request, StatusCode}, routing::get, Router};
/// use tower::ServiceExt;
/// use tollgate::{RateLimitLayer, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"capacity": 1, "refill_rate": 0.01}}"#)?;
/// let layer = RateLimitLayer::builder().rules(rules).build().await?;
/// let app = Router::new().route("/", get(|| async { "hello" })).layer(layer);
///
/// let request = || Request::get("/").header("x-client-id", "alice").body(Body::empty()).unwrap();
/// let first = app.clone().oneshot(request()).await?;
/// assert_eq!(first.status(), StatusCode::OK);
/// assert_eq!(first.headers()["x-ratelimit-remaining"], "0");
/// let second = app.oneshot(request()).await?;
/// assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(second.headers()["retry-after"], "100");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl RateLimitLayer {
    /// Starts configuring a layer.
    pub fn builder() -> RateLimitLayerBuilder {
        RateLimitLayerBuilder::default()
    }

    /// The rules in force now.
    pub fn rules(&self) -> Arc<Rules> {
        Arc::clone(&self.shared.installed.load().rules)
    }

    /// Reads the rules file again and, if it validates, puts it in force; otherwise the
    /// running rules stay and the error is returned (and shown by [`stats`](Self::stats)).
    /// `Ok(false)` when the file is unchanged (and no rules from
    /// [`set_rules`](Self::set_rules) are in force) or the layer was built from [`Rules`]
    /// rather than a file. The file watcher and SIGHUP do the same.
    ///
    /// The file is read and validated on Tokio's blocking pool, so awaiting this from a
    /// handler holds up no other request, even for a large file; requests keep the rules
    /// in force until the new ones are. Dropping the future does not stop a reload that
    /// has started. Must run inside a Tokio runtime.
    ///
    /// ```
    /// use tollgate::RateLimitLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("rate_limits.json");
    /// std::fs::write(&path, r#"{"default": {"limit": "10/second"}}"#)?;
    /// let layer = RateLimitLayer::builder().rules_file(&path).watch_rules_file(false).build().await?;
    /// assert!(!layer.reload().await?); // unchanged
    /// std::fs::write(&path, r#"{"default": {"limit": "20/second"}}"#)?;
    /// assert!(layer.reload().await?);
    /// assert_eq!(layer.rules().default_rule().limit().unwrap().bands()[0].capacity(), 20);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reload(&self) -> Result<bool, RulesError> {
        if self.shared.rules_file.is_none() {
            return Ok(false);
        }
        let shared = Arc::clone(&self.shared);
        off_runtime(move || shared.reload_file(Trigger::Reload)).await
    }

    /// Puts these rules in force, as a reload would.
    ///
    /// On a layer built with [`rules_file`](RateLimitLayerBuilder::rules_file), the file
    /// stays the source of the rules: the next change to it, SIGHUP or
    /// [`reload`](Self::reload) puts the file's rules back in force, and logs a warning that
    /// they replaced these. (A change event for unchanged content does not.) To keep rules
    /// set here, build the layer with `watch_rules_file(false)` and
    /// `reload_on_sighup(false)`.
    pub fn set_rules(&self, rules: Rules) {
        self.shared.set_rules(rules);
    }

    /// `"memory"` or `"redis"`: where the buckets live.
    pub fn backend_name(&self) -> &'static str {
        self.shared.backend.name()
    }

    /// Counters and the circuit breaker's state, for metrics and health checks.
    pub fn stats(&self) -> Stats {
        let Shared {
            backend, counters, ..
        } = &*self.shared;
        let redis = backend.redis_counts();
        let memory = backend.memory();
        let reload = self.shared.reload_state();
        Stats {
            shadowed: counters.shadowed.load(Ordering::Relaxed),
            unknown_tiers: counters.unknown_tiers.load(Ordering::Relaxed),
            reloads: reload.reloads,
            failed_reloads: reload.failures,
            last_reload_error: reload.last_error.clone(),
            backend: backend.name(),
            breaker: backend.breaker(),
            allowed: counters.allowed.load(Ordering::Relaxed),
            denied: counters.denied.load(Ordering::Relaxed),
            fallback: redis.fallback,
            errors: redis.errors,
            cached_refusals: redis.cached_refusals,
            leased: redis.leased,
            invalid_client_ids: counters.invalid_client_ids.load(Ordering::Relaxed),
            tracked_buckets: memory.map_or(0, |m| m.len()),
            evicted_buckets: memory.map_or(0, |m| m.evicted()),
        }
    }
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("backend", &self.backend_name())
            .field("rules", &self.shared.installed.load().rules)
            .finish()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, Arc::clone(&self.shared))
    }
}

enum RulesSource {
    File(PathBuf),
    Given(Box<Rules>),
}

/// Configures a [`RateLimitLayer`]. Only the rules are required; without a Redis URL the
/// buckets live in this process.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use axum::{body::Body, http::{Request, StatusCode}, routing::get, Router};
/// use tower::ServiceExt;
/// use tollgate::RateLimitLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = RateLimitLayer::builder()
///     .rules_file(concat!(env!("CARGO_MANIFEST_DIR"), "/rate_limits.json"))
///     .trusted_proxies(["10.0.0.0/8", "fd00::/8"])
///     .max_tracked_buckets(50_000)
///     .build()
///     .await?;
/// assert_eq!(layer.backend_name(), "memory");
///
/// let app = Router::new().route("/health", get(|| async { "ok" })).layer(layer);
/// let response = app.oneshot(Request::get("/health").body(Body::empty())?).await?;
/// assert_eq!(response.status(), StatusCode::OK);
/// # Ok(())
/// # }
/// ```
pub struct RateLimitLayerBuilder {
    rules: Option<RulesSource>,
    trusted_proxy_hops: usize,
    trust: Trust,
    ipv6_prefix_len: u8,
    memory_cleanup_interval: Duration,
    max_tracked_buckets: usize,
    on_redis_error: OnRedisError,
    local_fallback_instances: u32,
    watch_rules_file: bool,
    reload_on_sighup: bool,
    max_rules_file_bytes: u64,
    #[cfg(feature = "redis")]
    redis: Option<crate::backend::redis::RedisConfig>,
    #[cfg(feature = "redis")]
    redis_prefix: Option<String>,
    #[cfg(feature = "redis")]
    redis_timeout: Option<Duration>,
    #[cfg(feature = "redis")]
    circuit_breaker: Option<(u32, Duration)>,
    #[cfg(feature = "redis")]
    redis_lease: Duration,
}

impl Default for RateLimitLayerBuilder {
    fn default() -> Self {
        Self {
            rules: None,
            trusted_proxy_hops: 1,
            trust: Trust::default(),
            ipv6_prefix_len: 64,
            memory_cleanup_interval: Duration::from_secs(10),
            max_tracked_buckets: DEFAULT_MAX_KEYS,
            on_redis_error: OnRedisError::default(),
            local_fallback_instances: 1,
            watch_rules_file: true,
            reload_on_sighup: true,
            max_rules_file_bytes: crate::DEFAULT_MAX_RULES_FILE_BYTES,
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            redis_prefix: None,
            #[cfg(feature = "redis")]
            redis_timeout: None,
            #[cfg(feature = "redis")]
            circuit_breaker: None,
            #[cfg(feature = "redis")]
            redis_lease: Duration::ZERO,
        }
    }
}

impl fmt::Debug for RateLimitLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayerBuilder")
            .field("trusted_proxy_hops", &self.trusted_proxy_hops)
            .field("trust", &self.trust)
            .field("on_redis_error", &self.on_redis_error)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayerBuilder {
    /// Loads the rules from this JSON file when [`build`](Self::build) runs.
    pub fn rules_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.rules = Some(RulesSource::File(path.into()));
        self
    }

    /// Uses rules already loaded (replace them later with
    /// [`RateLimitLayer::set_rules`]).
    pub fn rules(mut self, rules: Rules) -> Self {
        self.rules = Some(RulesSource::Given(Box::new(rules)));
        self
    }

    /// Whether to reload the rules file when it changes on disk (default true). The file's
    /// directory is watched, so saves by rename and Kubernetes ConfigMap symlink swaps are
    /// seen.
    pub fn watch_rules_file(mut self, watch: bool) -> Self {
        self.watch_rules_file = watch;
        self
    }

    /// Whether SIGHUP reloads the rules file (default true, Unix only). The handler also
    /// stops SIGHUP from ending the process.
    pub fn reload_on_sighup(mut self, reload: bool) -> Self {
        self.reload_on_sighup = reload;
        self
    }

    /// The largest rules file read, at build and on every reload (default
    /// [`DEFAULT_MAX_RULES_FILE_BYTES`](crate::DEFAULT_MAX_RULES_FILE_BYTES), 16 MiB). A
    /// larger file is an error ([`RulesError::TooLarge`]), and no more than this plus one
    /// byte is ever read, so a file that grows without end cannot fill memory.
    ///
    /// ```
    /// use tollgate::{BuildError, RateLimitLayer, RulesError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = RateLimitLayer::builder()
    ///     .rules_file(concat!(env!("CARGO_MANIFEST_DIR"), "/rate_limits.json"))
    ///     .max_rules_file_bytes(100)
    ///     .build()
    ///     .await
    ///     .unwrap_err();
    /// assert!(matches!(err, BuildError::Rules(RulesError::TooLarge { max_bytes: 100, .. })));
    /// # }
    /// ```
    pub fn max_rules_file_bytes(mut self, bytes: u64) -> Self {
        self.max_rules_file_bytes = bytes;
        self
    }

    /// How many proxies in front of the app append to `X-Forwarded-For` (default 1: the
    /// rightmost entry, written by the proxy the app is connected to, is the client). Every
    /// comma-separated entry counts, across all `X-Forwarded-For` lines in order; if the
    /// entry at that position is not an address (`unknown`, an obfuscated name, empty), or
    /// there are fewer entries, the header is not used and the peer address is. 0 ignores
    /// `X-Forwarded-For`.
    ///
    /// Read only when the peer is trusted: by default loopback (127.0.0.0/8, ::1) and the
    /// private ranges (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7), or every peer
    /// after [`trust_any_peer`](Self::trust_any_peer). Not used when
    /// [`trusted_proxies`](Self::trusted_proxies) is set.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::{body::Body, extract::ConnectInfo, http::Request, routing::get, Router};
    /// use tower::ServiceExt;
    /// use tollgate::{RateLimitLayer, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // nginx on this host appends the address it saw: one hop (the default).
    /// let rules = Rules::from_json(r#"{"default": {"capacity": 5, "refill_rate": 1},
    ///                                  "clients": {"ip:203.0.113.7": {"capacity": 50, "refill_rate": 1}}}"#)?;
    /// let layer = RateLimitLayer::builder().rules(rules).trusted_proxy_hops(1).build().await?;
    /// let app = Router::new().route("/", get(|| async { "hi" })).layer(layer);
    /// let limit_seen_from = async |peer: &str| {
    ///     let request = Request::get("/")
    ///         .header("x-forwarded-for", "198.51.100.1, 203.0.113.7")
    ///         .extension(ConnectInfo(peer.parse::<SocketAddr>().unwrap()))
    ///         .body(Body::empty())
    ///         .unwrap();
    ///     let response = app.clone().oneshot(request).await.unwrap();
    ///     response.headers()["x-ratelimit-limit"].to_str().unwrap().to_owned()
    /// };
    /// // From nginx (loopback): the entry nginx appended is the client, 203.0.113.7.
    /// assert_eq!(limit_seen_from("127.0.0.1:41000").await, "50");
    /// // From a client connecting directly: its own address; the header is not read.
    /// assert_eq!(limit_seen_from("203.0.113.99:41000").await, "5");
    /// # Ok(())
    /// # }
    /// ```
    pub fn trusted_proxy_hops(mut self, hops: usize) -> Self {
        self.trusted_proxy_hops = hops;
        self
    }

    /// Your proxies' addresses, as CIDRs (`"10.0.0.0/8"`) or single addresses, instead of
    /// the default trusted peers (loopback and the private ranges). Only requests from these
    /// peers may name their client with `X-Client-ID` or `X-Forwarded-For`; a client
    /// connecting from anywhere else is keyed by its own address, whatever it sends.
    ///
    /// `X-Forwarded-For` is then read from the right, over these addresses: the first other
    /// address is the client (if all are yours, the farthest). So list only your proxies,
    /// never a network your clients connect from. An entry that is not an address ends the
    /// walk, and the peer address is used. This replaces
    /// [`trusted_proxy_hops`](Self::trusted_proxy_hops). An empty list trusts no peer.
    ///
    /// An entry that does not parse, or that covers every address (`0.0.0.0/0`, `::/0`),
    /// fails [`build`](Self::build): to trust every peer, use
    /// [`trust_any_peer`](Self::trust_any_peer). The last of the two calls wins.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::{body::Body, extract::ConnectInfo, http::Request, routing::get, Router};
    /// use tower::ServiceExt;
    /// use tollgate::{RateLimitLayer, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"capacity": 5, "refill_rate": 1},
    ///                                  "clients": {"id:internal-batch": {"limit": "6000/minute"}}}"#)?;
    /// // Our load balancers are in 10.1.0.0/16: they alone may say who the client is.
    /// let layer = RateLimitLayer::builder().rules(rules).trusted_proxies(["10.1.0.0/16"]).build().await?;
    /// let app = Router::new().route("/", get(|| async { "hi" })).layer(layer);
    /// let limit_seen_from = async |peer: &str| {
    ///     let request = Request::get("/")
    ///         .header("x-client-id", "internal-batch")
    ///         .extension(ConnectInfo(peer.parse::<SocketAddr>().unwrap()))
    ///         .body(Body::empty())
    ///         .unwrap();
    ///     let response = app.clone().oneshot(request).await.unwrap();
    ///     response.headers()["x-ratelimit-limit"].to_str().unwrap().to_owned()
    /// };
    /// assert_eq!(limit_seen_from("10.1.2.3:41000").await, "6000");
    /// // Anyone else, this host included, is keyed by address: the override is out of reach.
    /// assert_eq!(limit_seen_from("127.0.0.1:41000").await, "5");
    /// assert_eq!(limit_seen_from("192.168.1.20:41000").await, "5");
    /// # Ok(())
    /// # }
    /// ```
    pub fn trusted_proxies<I, S>(mut self, proxies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.trust = Trust::Proxies(proxies.into_iter().map(Into::into).collect());
        self
    }

    /// Trusts every peer: any client may name itself with `X-Client-ID`, or with
    /// `X-Forwarded-For` (read by [`trusted_proxy_hops`](Self::trusted_proxy_hops)), and
    /// so pick its own bucket, or a `clients` override meant for someone else.
    ///
    /// **Use it only when nothing but your own proxies can connect to the app** and their
    /// addresses are not known in advance; otherwise list them with
    /// [`trusted_proxies`](Self::trusted_proxies). The layer logs a warning when it is
    /// built with it. Replaces `trusted_proxies` (the last of the two calls wins).
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::{body::Body, extract::ConnectInfo, http::Request, routing::get, Router};
    /// use tower::ServiceExt;
    /// use tollgate::{RateLimitLayer, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"capacity": 2, "refill_rate": 0.01}}"#)?;
    /// let layer = RateLimitLayer::builder().rules(rules).trust_any_peer().build().await?;
    /// let app = Router::new().route("/", get(|| async { "hi" })).layer(layer);
    /// let remaining_from = async |peer: &str| {
    ///     let request = Request::get("/")
    ///         .header("x-client-id", "alice")
    ///         .extension(ConnectInfo(peer.parse::<SocketAddr>().unwrap()))
    ///         .body(Body::empty())
    ///         .unwrap();
    ///     let response = app.clone().oneshot(request).await.unwrap();
    ///     response.headers()["x-ratelimit-remaining"].to_str().unwrap().to_owned()
    /// };
    /// // Two public addresses, one client: the ID is believed from anywhere.
    /// assert_eq!(remaining_from("203.0.113.7:41000").await, "1");
    /// assert_eq!(remaining_from("198.51.100.4:41000").await, "0");
    /// # Ok(())
    /// # }
    /// ```
    pub fn trust_any_peer(mut self) -> Self {
        self.trust = Trust::AnyPeer;
        self
    }

    /// IPv6 clients are keyed by their network of this many leading bits (default 64, the
    /// usual size of one site's subnet, so one host cannot rotate through its addresses);
    /// 128 keys each address alone. Must be 1 to 128.
    pub fn ipv6_prefix_len(mut self, bits: u8) -> Self {
        self.ipv6_prefix_len = bits;
        self
    }

    /// How often in-process buckets that are full again are dropped (default 10 s).
    pub fn memory_cleanup_interval(mut self, interval: Duration) -> Self {
        self.memory_cleanup_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The most buckets kept in this process, across all rules (default 100,000): for the
    /// memory backend, and for Redis's local fallback. Past it, full buckets are dropped
    /// first, then those closest to full.
    pub fn max_tracked_buckets(mut self, buckets: usize) -> Self {
        self.max_tracked_buckets = buckets.max(1);
        self
    }

    /// What to do when Redis cannot decide (default [`OnRedisError::Local`]). The rules
    /// file's `on_redis_error`, when present, wins; it is read when the layer is built (a
    /// reload that changes it logs a warning and takes effect on restart).
    pub fn on_redis_error(mut self, policy: OnRedisError) -> Self {
        self.on_redis_error = policy;
        self
    }

    /// How many app instances share the Redis limits (default 1). The `local` fallback
    /// divides every bucket by this, so the instances together stay near the shared limit.
    /// The rules file's `local_fallback_instances`, when present, wins; like
    /// `on_redis_error`, it is read when the layer is built.
    pub fn local_fallback_instances(mut self, instances: u32) -> Self {
        self.local_fallback_instances = instances.max(1);
        self
    }

    /// Keeps buckets in Redis at this URL (`redis://[[user]:password@]host[:port][/db]`, or
    /// `rediss://` for TLS), shared by every instance using the same Redis and prefix.
    #[cfg(feature = "redis")]
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(crate::backend::redis::RedisConfig::new(url.into()));
        self
    }

    /// Keeps buckets in a Redis Cluster reached through these seed nodes (each a `redis://`
    /// URL; one reachable node is enough, the rest of the cluster is discovered). Each master
    /// gets its own circuit breaker, so losing one master affects only its slots. No nodes,
    /// or a node that is not a Redis URL, fails [`build`](Self::build).
    #[cfg(feature = "redis")]
    pub fn redis_cluster<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(Into::into).collect();
        let mut config = crate::backend::redis::RedisConfig::new(nodes.join(","));
        config.cluster_nodes = Some(nodes);
        self.redis = Some(config);
        self
    }

    /// Prefix of every Redis key (default `tollgate`).
    #[cfg(feature = "redis")]
    pub fn redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.redis_prefix = Some(prefix.into());
        self
    }

    /// Deadline for each Redis decision (default 50 ms). A decision that misses it is made
    /// by the failure policy instead.
    #[cfg(feature = "redis")]
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.redis_timeout = Some(timeout);
        self
    }

    /// The circuit breaker in front of Redis: it opens after `failures` failed or late
    /// decisions in a row (default 5) and probes Redis again after `cooldown` (default
    /// 500 ms).
    #[cfg(feature = "redis")]
    pub fn circuit_breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.circuit_breaker = Some((failures.max(1), cooldown));
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
    /// use tollgate::RateLimitLayer;
    ///
    /// let builder = RateLimitLayer::builder()
    ///     .redis_url("redis://127.0.0.1:6379")
    ///     .redis_lease(Duration::from_millis(100));
    /// # drop(builder);
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis_lease(mut self, ttl: Duration) -> Self {
        self.redis_lease = if ttl < Duration::from_millis(1) {
            Duration::ZERO
        } else {
            ttl.min(Duration::from_secs(24 * 3600))
        };
        self
    }

    /// Loads the rules, sets up Redis if asked, and returns the layer.
    ///
    /// Must run inside a Tokio runtime (for the cleanup task, reading the rules file on the
    /// blocking pool, and Redis). An unreachable Redis does not fail the build: the layer
    /// starts on its failure policy and switches to Redis when it answers.
    pub async fn build(self) -> Result<RateLimitLayer, BuildError> {
        let (rules, file) = match self.rules {
            None => return Err(BuildError::NoRules),
            Some(RulesSource::Given(rules)) => (*rules, None),
            Some(RulesSource::File(path)) => {
                let file = RulesFile::new(path, self.max_rules_file_bytes);
                let (file, (rules, hash)) = off_runtime(move || {
                    let loaded = file.load();
                    loaded.map(|loaded| (file, loaded))
                })
                .await?;
                (rules, Some((file, hash)))
            }
        };
        let reloads = Reloads {
            file,
            watch: self.watch_rules_file,
            sighup: self.reload_on_sighup,
        };
        let keys = KeySource::new(&self.trust, self.trusted_proxy_hops, self.ipv6_prefix_len)?;
        let keys = (keys, self.ipv6_prefix_len);
        #[cfg(feature = "redis")]
        if let Some(mut config) = self.redis {
            if config.cluster_nodes.as_ref().is_some_and(Vec::is_empty) {
                return Err(BuildError::NoClusterNodes);
            }
            if let Some(prefix) = self.redis_prefix {
                config.prefix = prefix;
            }
            if let Some(timeout) = self.redis_timeout {
                config.timeout = timeout;
            }
            if let Some((failures, cooldown)) = self.circuit_breaker {
                config.breaker_failures = failures;
                config.breaker_cooldown = cooldown;
            }
            config.lease = self.redis_lease;
            config.on_error = rules.on_redis_error().unwrap_or(self.on_redis_error);
            config.local_fallback_instances = rules
                .local_fallback_instances()
                .unwrap_or(self.local_fallback_instances);
            config.max_tracked_buckets = self.max_tracked_buckets;
            let backend = crate::backend::redis::RedisBackend::connect(&config)
                .await
                .map_err(|reason| BuildError::Redis {
                    url: crate::backend::redis::redact(&config.url),
                    reason,
                })?;
            return RateLimitLayer::new(
                rules,
                reloads,
                keys,
                Backend::Redis(Arc::new(backend)),
                self.memory_cleanup_interval,
            );
        }
        let memory = MemoryBackend::new(self.max_tracked_buckets, 1);
        RateLimitLayer::new(
            rules,
            reloads,
            keys,
            Backend::Memory(Arc::new(memory)),
            self.memory_cleanup_interval,
        )
    }
}

/// Where the rules came from and how to follow changes.
struct Reloads {
    /// The rules file and the hash of the content loaded from it.
    file: Option<(RulesFile, u64)>,
    watch: bool,
    sighup: bool,
}

impl RateLimitLayer {
    /// `keys` comes with the IPv6 prefix length it keys by.
    fn new(
        rules: Rules,
        reloads: Reloads,
        (keys, ipv6_prefix_len): (KeySource, u8),
        backend: Backend,
        cleanup_every: Duration,
    ) -> Result<Self, BuildError> {
        if let Some(memory) = backend.memory() {
            spawn_memory_cleanup(Arc::downgrade(memory), cleanup_every);
        }
        reload::warn_unreachable_overrides(&rules, ipv6_prefix_len);
        let state_ids = StateIds::default();
        let installed = state_ids.install(rules, |installed| {
            backend.rules_changed(installed.generation);
            installed
        });
        let (rules_file, loaded) = reloads.file.unzip();
        let shared = Arc::new(Shared {
            installed: ArcSwap::from_pointee(installed),
            state_ids,
            rules_file,
            reload: Mutex::new(ReloadState::default()),
            keys,
            ipv6_prefix_len,
            backend,
            counters: Counters::default(),
        });
        if let (Some(file), Some(hash)) = (&shared.rules_file, loaded) {
            shared.loaded_from(hash);
            let watch_error = |reason: String| BuildError::Watch {
                path: file.path.clone(),
                reason,
            };
            if reloads.watch {
                reload::spawn_watcher(Arc::downgrade(&shared), &file.path)
                    .map_err(|e| watch_error(e.to_string()))?;
            }
            #[cfg(unix)]
            if reloads.sighup {
                reload::spawn_sighup(Arc::downgrade(&shared))
                    .map_err(|e| watch_error(format!("cannot handle SIGHUP: {e}")))?;
            }
        }
        Ok(Self { shared })
    }
}

/// Drops full buckets every `interval` until the layer is dropped.
fn spawn_memory_cleanup(memory: Weak<MemoryBackend>, interval: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(memory) = memory.upgrade() else {
                break;
            };
            let kept = memory.drop_full();
            tracing::trace!(kept, "in-memory rate limit cleanup");
        }
    });
}
