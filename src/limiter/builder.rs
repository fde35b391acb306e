//! [`LimiterBuilder`]: the options of a [`Limiter`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::Value;

use super::events::Hub;
use super::installed::StateIds;
use super::reload::{self, ReloadState, RulesFile, off_runtime};
use super::runtime::{self, Keeper, Layers, Runtime};
use super::stats::Counters;
use super::usage::{self, Usage};
use super::{Core, Limiter, fleet};
use crate::backend::{self, Opening, Store};
use crate::error::BuildError;
use crate::header_style::{HeaderStyle, Rendering};
use crate::policy::OnRedisError;
use crate::rules::Rules;

enum RulesSource {
    File(PathBuf),
    Given(Box<Rules>),
}

/// Configures a [`Limiter`]. Only the rules are required; without a store (a Redis URL, or
/// one given to [`store`](Self::store)) the state lives in this process.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Limiter, OnRedisError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = Limiter::builder()
///     .rules_file(concat!(env!("CARGO_MANIFEST_DIR"), "/rate_limits.json"))
///     .max_tracked_buckets(50_000)
///     .on_redis_error(OnRedisError::Deny)
///     .build()
///     .await?;
/// assert_eq!(limiter.backend_name(), "memory");
/// assert!(limiter.rules().find("/api/data").is_some());
/// # Ok(())
/// # }
/// ```
pub struct LimiterBuilder {
    rules: Option<RulesSource>,
    ipv6_prefix_len: u8,
    memory_cleanup_interval: Duration,
    max_tracked_buckets: usize,
    on_redis_error: OnRedisError,
    local_fallback_instances: u32,
    watch_rules_file: bool,
    reload_on_sighup: bool,
    max_rules_file_bytes: u64,
    runtime_state_file: Option<PathBuf>,
    max_state_file_bytes: u64,
    max_runtime_entries: usize,
    #[cfg(feature = "envoy")]
    envoy_config: Option<PathBuf>,
    record_usage: bool,
    usage: usage::Bounds,
    rendering: Rendering,
    runtime_resync_interval: Duration,
    /// The name this instance's events carry; `None`: [`default_instance`].
    instance: Option<String>,
    reservation_timeout: Duration,
    /// A store given to [`store`](Self::store).
    store: Option<Arc<dyn Store>>,
    /// The settings of this crate's own stores, set by the methods each adds (`redis_url`,
    /// ...).
    pub(crate) stores: backend::Options,
}

impl Default for LimiterBuilder {
    fn default() -> Self {
        Self {
            rules: None,
            ipv6_prefix_len: 64,
            memory_cleanup_interval: Duration::from_secs(10),
            max_tracked_buckets: backend::DEFAULT_MAX_TRACKED_BUCKETS,
            on_redis_error: OnRedisError::default(),
            local_fallback_instances: 1,
            watch_rules_file: true,
            reload_on_sighup: true,
            max_rules_file_bytes: crate::DEFAULT_MAX_RULES_FILE_BYTES,
            runtime_state_file: None,
            max_state_file_bytes: runtime::DEFAULT_MAX_STATE_FILE_BYTES,
            max_runtime_entries: runtime::DEFAULT_MAX_RUNTIME_ENTRIES,
            #[cfg(feature = "envoy")]
            envoy_config: None,
            record_usage: false,
            usage: usage::Bounds {
                max_clients: usage::DEFAULT_USAGE_MAX_CLIENTS,
                max_bytes: usage::DEFAULT_USAGE_MAX_BYTES,
                clients_per_hour: usage::DEFAULT_USAGE_CLIENTS_PER_HOUR,
            },
            rendering: Rendering::default(),
            runtime_resync_interval: runtime::DEFAULT_RESYNC_INTERVAL,
            instance: None,
            reservation_timeout: super::reservation::DEFAULT_RESERVATION_TIMEOUT,
            store: None,
            stores: backend::Options::default(),
        }
    }
}

impl fmt::Debug for LimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimiterBuilder")
            .field("on_redis_error", &self.on_redis_error)
            .field("max_tracked_buckets", &self.max_tracked_buckets)
            .finish_non_exhaustive()
    }
}

impl LimiterBuilder {
    /// Loads the rules from this JSON file when [`build`](Self::build) runs.
    pub fn rules_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.rules = Some(RulesSource::File(path.into()));
        self
    }

    /// Uses rules already loaded (replace them later with
    /// [`Limiter::set_rules`]).
    pub fn rules(mut self, rules: Rules) -> Self {
        self.rules = Some(RulesSource::Given(Box::new(rules)));
        self
    }

    /// Also follows envoy ratelimit's own YAML configuration at `path` (a file, or a
    /// directory of `*.yaml`/`*.yml` files, one domain each): its domains are read as the
    /// rules' `descriptors` (see [`EnvoyDomain`](crate::EnvoyDomain)) over the rules file,
    /// or over the rules given with [`rules`](Self::rules), and reloaded as the rules file
    /// is, when either changes.
    ///
    /// ```
    /// use tollgate::{Limiter, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let config = dir.path().join("edge.yaml");
    /// std::fs::write(&config, "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: {unit: minute, requests_per_unit: 60}\n")?;
    /// let limiter = Limiter::builder()
    ///     .rules(Rules::from_json(r#"{"default": {"unlimited": true}}"#)?)
    ///     .envoy_config(&config)
    ///     .build()
    ///     .await?;
    /// let rules = limiter.rules();
    /// let found = rules.descriptor("edge", [("remote_address", "10.0.0.1")]).unwrap();
    /// assert_eq!(found.rule.limit().unwrap().bands()[0].capacity(), 60);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "envoy")]
    pub fn envoy_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.envoy_config = Some(path.into());
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
    /// larger file is an error ([`RulesError::TooLarge`](crate::RulesError::TooLarge)), and no more than this plus one
    /// byte is ever read, so a file that grows without end cannot fill memory.
    ///
    /// ```
    /// use tollgate::{BuildError, Limiter, RulesError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = Limiter::builder()
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

    /// Where the in-memory backend keeps runtime rule changes
    /// ([`Limiter::set_client_override`], [`Limiter::set_route`], ...): a JSON file, read
    /// when [`build`](Self::build) runs and replaced atomically (written beside it, flushed,
    /// renamed over it) on every change; a change it cannot be written to is refused.
    /// Without it, an in-memory limiter refuses runtime changes
    /// ([`RuntimeError::NoStore`](crate::RuntimeError::NoStore)), so that none is lost at a
    /// restart. With Redis, the entries live in Redis and this file is not used. One process
    /// per file: two would overwrite each other's changes. A service might default to
    /// `tollgate-runtime.json` in its working directory.
    ///
    /// ```
    /// use serde_json::json;
    /// use tollgate::{ClientKey, Limiter, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let state = dir.path().join("tollgate-runtime.json");
    /// let rules = || Rules::from_json(r#"{"default": {"limit": "10/second"}}"#);
    /// let limiter = Limiter::builder().rules(rules()?).runtime_state_file(&state).build().await?;
    /// limiter.set_client_override(&ClientKey::id("k"), json!({"limit": "100/minute"})).await?;
    /// drop(limiter);
    ///
    /// // After a restart, the override is in force again.
    /// let limiter = Limiter::builder().rules(rules()?).runtime_state_file(&state).build().await?;
    /// assert_eq!(limiter.rules().clients().count(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn runtime_state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.runtime_state_file = Some(path.into());
        self
    }

    /// The largest runtime state file read at [`build`](Self::build), and written by a
    /// change (default [`DEFAULT_MAX_STATE_FILE_BYTES`](crate::DEFAULT_MAX_STATE_FILE_BYTES),
    /// 16 MiB). A larger file stops the build with an error that says so, having read no
    /// more than this plus one byte; a change that would make the file larger is refused
    /// ([`RuntimeError::StateFileTooLarge`](crate::RuntimeError::StateFileTooLarge)), so that
    /// the next start can read what was written.
    ///
    /// ```
    /// use tollgate::{BuildError, Limiter, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let state = dir.path().join("tollgate-runtime.json");
    /// std::fs::write(&state, format!(r#"{{"entries": {{}}}}{}"#, " ".repeat(100)))?;
    /// let err = Limiter::builder()
    ///     .rules(Rules::from_json(r#"{"default": {"limit": "10/second"}}"#)?)
    ///     .runtime_state_file(&state)
    ///     .max_state_file_bytes(100)
    ///     .build()
    ///     .await
    ///     .unwrap_err();
    /// assert!(matches!(err, BuildError::RuntimeState { .. }));
    /// assert!(err.to_string().contains("larger than 100 bytes"), "{err}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_state_file_bytes(mut self, bytes: u64) -> Self {
        self.max_state_file_bytes = bytes;
        self
    }

    /// The most runtime entries kept (default
    /// [`DEFAULT_MAX_RUNTIME_ENTRIES`](crate::DEFAULT_MAX_RUNTIME_ENTRIES), 10,000): client
    /// overrides and routes set with [`Limiter::set_client_override`],
    /// [`Limiter::set_route`] and the service's writes. A new entry past it is refused
    /// ([`RuntimeError::TooManyEntries`](crate::RuntimeError::TooManyEntries)); replacing or
    /// removing one always works. With Redis, the count is Redis's, shared by every
    /// instance. At least 1.
    ///
    /// ```
    /// use serde_json::json;
    /// use tollgate::{ClientKey, Limiter, Rules, RuntimeError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let limiter = Limiter::builder()
    ///     .rules(Rules::from_json(r#"{"default": {"limit": "10/second"}}"#)?)
    ///     .runtime_state_file(dir.path().join("tollgate-runtime.json"))
    ///     .max_runtime_entries(1)
    ///     .build()
    ///     .await?;
    /// let limit = || json!({"limit": "100/minute"});
    /// limiter.set_client_override(&ClientKey::id("a"), limit()).await?;
    /// limiter.set_client_override(&ClientKey::id("a"), json!({"unlimited": true})).await?;
    /// let err = limiter.set_client_override(&ClientKey::id("b"), limit()).await.unwrap_err();
    /// assert!(matches!(err, RuntimeError::TooManyEntries { max: 1, .. }));
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_runtime_entries(mut self, entries: usize) -> Self {
        self.max_runtime_entries = entries.max(1);
        self
    }

    /// Whether to record usage statistics (default false; `tollgate serve` turns it on):
    /// every counted decision's client, rule and answer, per UTC hour and day, read with
    /// [`Limiter::usage`] and [`Limiter::usage_summary`]. Checks, the layer's requests and
    /// unlimited rules count; peeks and requests with an invalid client ID do not.
    ///
    /// Requests only count in process; a background task writes the counts every second:
    /// into a history kept in this process (the memory backend: 25 hours, 31 days), or into
    /// Redis, shared by every instance with the same prefix (see "Usage statistics" in the
    /// guide, docs/guide/limiter.md, for the keys). A crash loses at most the last second's counts; a flush
    /// Redis does not take is kept and tried again the next second, and no request ever
    /// waits for one. Off, it costs a request one branch; on, a lock of one of 16 shards
    /// (`benches/layer.rs` measures both).
    ///
    /// ```
    /// use tollgate::{ClientKey, Limiter, Query, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "10/second"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).record_usage(true).build().await?;
    /// let k = ClientKey::id("k");
    /// limiter.check(Query::new(&k)).await?;
    /// assert_eq!(limiter.usage(&k).await?.days.values().next().unwrap().allowed, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn record_usage(mut self, record: bool) -> Self {
        self.record_usage = record;
        self
    }

    /// The most distinct clients whose usage this process holds (default 100,000): those
    /// counted between two flushes, and on the memory backend those in the kept history.
    /// Past it, a new client's calls still count in the totals and per rule, but not per
    /// client ([`Stats::usage_dropped`](crate::Stats::usage_dropped) counts them); the
    /// history forgets the clients seen longest ago
    /// ([`Stats::usage_evicted`](crate::Stats::usage_evicted)). At least 1.
    pub fn usage_max_clients(mut self, clients: usize) -> Self {
        self.usage.max_clients = clients.max(1);
        self
    }

    /// The most bytes of usage this process holds (default
    /// [`DEFAULT_USAGE_MAX_BYTES`](crate::DEFAULT_USAGE_MAX_BYTES), 64 MiB), as estimated
    /// from each client's key and the hours, days and rules it has counts for: between two
    /// flushes, and on the memory backend in the kept history, each. Clients choose their
    /// own keys (an `X-Client-ID`, a gRPC descriptor value), so the number of clients alone
    /// does not bound the memory. Past it, as past
    /// [`usage_max_clients`](Self::usage_max_clients), a new client's calls count in the
    /// totals and per rule only, and the history forgets the clients seen longest ago.
    ///
    /// ```
    /// use tollgate::{ClientKey, Limiter, Query, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "10/second"}}"#)?;
    /// let limiter = Limiter::builder()
    ///     .rules(rules)
    ///     .record_usage(true)
    ///     .usage_max_bytes(64 * 1024)
    ///     .build()
    ///     .await?;
    /// for n in 0..3 {
    ///     let huge = ClientKey::id(format!("{n}{}", "x".repeat(30_000)));
    ///     limiter.check(Query::new(&huge)).await?;
    /// }
    /// let stats = limiter.stats();
    /// assert_eq!(stats.usage_dropped, 1, "the third key did not fit");
    /// assert_eq!(limiter.usage_summary(0).await?.allowed, 3, "but it is in the totals");
    /// # Ok(())
    /// # }
    /// ```
    pub fn usage_max_bytes(mut self, bytes: usize) -> Self {
        self.usage.max_bytes = bytes;
        self
    }

    /// The most clients Redis counts per client in one UTC hour (default
    /// [`DEFAULT_USAGE_CLIENTS_PER_HOUR`](crate::DEFAULT_USAGE_CLIENTS_PER_HOUR), 100,000),
    /// shared by every instance with the same prefix: an hour's first clients get their own
    /// counts; the calls of clients past it are in the totals only (counted in
    /// [`Stats::usage_dropped`](crate::Stats::usage_dropped)), and their
    /// [`ClientUsage::untracked_hours`](crate::ClientUsage::untracked_hours) name that hour.
    /// Each client counted costs Redis some 400 bytes (its hour and day hashes), so this
    /// bounds what distinct keys can make Redis hold in an hour. At least 1.
    ///
    /// ```
    /// use tollgate::Limiter;
    ///
    /// let builder = Limiter::builder()
    ///     .redis_url("redis://127.0.0.1:6379")
    ///     .record_usage(true)
    ///     .usage_clients_per_hour(10_000);
    /// # drop(builder);
    /// ```
    pub fn usage_clients_per_hour(mut self, clients: u64) -> Self {
        self.usage.clients_per_hour = clients.max(1);
        self
    }

    /// How often the runtime entries kept in the store (Redis) are read again (default
    /// 5 s), in case the announcement of a change was missed. Changes announced are applied
    /// at once.
    pub fn runtime_resync_interval(mut self, every: Duration) -> Self {
        self.runtime_resync_interval = every.max(Duration::from_millis(10));
        self
    }

    /// How long a [reservation](Limiter::reserve) stays open before it settles at its
    /// estimate (default 10 minutes, [`DEFAULT_RESERVATION_TIMEOUT`]): long enough for the
    /// slowest response a reservation waits for (a long streamed answer), short enough that
    /// a reservation whose settlement never comes is not remembered for long. At least a
    /// second.
    ///
    /// [`DEFAULT_RESERVATION_TIMEOUT`]: crate::DEFAULT_RESERVATION_TIMEOUT
    pub fn reservation_timeout(mut self, timeout: Duration) -> Self {
        self.reservation_timeout = timeout.max(Duration::from_secs(1));
        self
    }

    /// The name of this instance in its live events (`instance` in each, see
    /// [`Limiter::subscribe`]), telling the instances that share a store apart where a
    /// subscriber sees them all. Default: the host's name and the process's id,
    /// `<host>:<pid>`; `tollgate serve` names itself `<host>:<port>`. A blank name keeps the
    /// default.
    ///
    /// ```
    /// use tollgate::{Limiter, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "5/minute"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).instance("app-1").build().await?;
    /// assert_eq!(limiter.instance(), "app-1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.instance = Some(name).filter(|name| !name.trim().is_empty());
        self
    }

    /// Which rate limit header fields responses carry (default
    /// [`HeaderStyle::XRateLimit`]): the `X-RateLimit-*` fields, the IETF `RateLimit-Policy`
    /// and `RateLimit` fields, or both. The rules file's `headers`, when present, wins, and
    /// follows its reloads. See "Headers" in the guide (docs/guide/layer.md).
    ///
    /// ```
    /// use axum::{body::Body, http::Request, routing::get, Router};
    /// use tower::ServiceExt;
    /// use tollgate::{HeaderStyle, Limiter, RateLimitLayer, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "100/minute"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).header_style(HeaderStyle::Ietf).build().await?;
    /// let app = Router::new().route("/", get(|| async { "hi" })).layer(RateLimitLayer::new(limiter));
    /// let response = app.oneshot(Request::get("/").body(Body::empty())?).await?;
    /// assert_eq!(response.headers()["ratelimit-policy"], r#""default";q=100;w=60"#);
    /// assert!(response.headers()["ratelimit"].to_str()?.starts_with(r#""default";r=99;t="#));
    /// assert!(response.headers().get("x-ratelimit-limit").is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn header_style(mut self, style: HeaderStyle) -> Self {
        self.rendering.headers = style;
        self
    }

    /// Whether a refused request is answered with an RFC 9457 `application/problem+json`
    /// body of the `quota-exceeded` problem type (default false: tollgate's own JSON). The
    /// rules file's `problem_details`, when present, wins, and follows its reloads.
    ///
    /// ```
    /// use axum::{body::Body, http::{Request, StatusCode}, routing::get, Router};
    /// use tower::ServiceExt;
    /// use tollgate::{Limiter, RateLimitLayer, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).problem_details(true).build().await?;
    /// let app = Router::new().route("/", get(|| async { "hi" })).layer(RateLimitLayer::new(limiter));
    /// app.clone().oneshot(Request::get("/").body(Body::empty())?).await?;
    /// let refused = app.oneshot(Request::get("/").body(Body::empty())?).await?;
    /// assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    /// assert_eq!(refused.headers()["content-type"], "application/problem+json");
    /// # Ok(())
    /// # }
    /// ```
    pub fn problem_details(mut self, problem_details: bool) -> Self {
        self.rendering.problem_details = problem_details;
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
    /// file's `on_redis_error`, when present, wins; it is read when the limiter is built (a
    /// reload that changes it logs a warning and takes effect on restart).
    pub fn on_redis_error(mut self, policy: OnRedisError) -> Self {
        self.on_redis_error = policy;
        self
    }

    /// How many app instances share the Redis limits (default 1). The `local` fallback
    /// divides every bucket by this, so the instances together stay near the shared limit.
    /// The rules file's `local_fallback_instances`, when present, wins; like
    /// `on_redis_error`, it is read when the limiter is built.
    pub fn local_fallback_instances(mut self, instances: u32) -> Self {
        self.local_fallback_instances = instances.max(1);
        self
    }

    /// Keeps the state in `store` rather than in this process: a store of your own, written
    /// with the [`Store`](crate::backend::Store) trait (see its example, and
    /// `docs/stores.md`). It wins over `redis_url` and `redis_cluster`. The store keeps the runtime entries if it
    /// has a [`RuntimeStore`](crate::backend::RuntimeStore); otherwise the
    /// [`runtime_state_file`](Self::runtime_state_file) does, if one is given.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Loads the rules, opens the store (Redis, if asked), and returns the limiter.
    ///
    /// Must run inside a Tokio runtime (for the cleanup task, reading the rules file on the
    /// blocking pool, and Redis). An unreachable Redis does not fail the build: the limiter
    /// starts on its failure policy and switches to Redis when it answers.
    pub async fn build(self) -> Result<Limiter, BuildError> {
        if !(1..=128).contains(&self.ipv6_prefix_len) {
            return Err(BuildError::Ipv6PrefixLen(self.ipv6_prefix_len));
        }
        let (given, file) = match self.rules {
            None => return Err(BuildError::NoRules),
            Some(RulesSource::Given(rules)) => (Some(*rules), None),
            Some(RulesSource::File(path)) => {
                (None, Some(RulesFile::new(path, self.max_rules_file_bytes)))
            }
        };
        #[cfg(feature = "envoy")]
        let file = match self.envoy_config {
            Some(envoy) => {
                RulesFile::with_envoy(file, given.as_ref(), envoy, self.max_rules_file_bytes)
            }
            None => file,
        };
        let (rules, file) = match (given, file) {
            (_, Some(file)) => {
                let (file, (rules, hash)) = off_runtime(move || {
                    let loaded = file.load();
                    loaded.map(|loaded| (file, loaded))
                })
                .await?;
                (rules, Some((file, hash)))
            }
            (Some(rules), None) => (rules, None),
            (None, None) => return Err(BuildError::NoRules),
        };
        let reloads = Reloads {
            file,
            watch: self.watch_rules_file,
            sighup: self.reload_on_sighup,
        };
        let usage = self.record_usage.then_some(self.usage);
        let opening = Opening {
            max_tracked_buckets: self.max_tracked_buckets,
            on_error: rules.on_redis_error().unwrap_or(self.on_redis_error),
            local_fallback_instances: rules
                .local_fallback_instances()
                .unwrap_or(self.local_fallback_instances),
        };
        let store = match self.store {
            Some(store) => store,
            None => match self.stores.open(&opening).await {
                Some(opened) => opened.map_err(BuildError::Store)?,
                None => backend::in_process(self.max_tracked_buckets),
            },
        };
        let (keeper, stored) = match (store.runtime(), self.runtime_state_file) {
            (Some(shared), _) => {
                let keeper = Keeper::Store(shared);
                // Unreachable at startup: not waited for again; the entries come with the
                // store.
                let loaded = match store.stats().breaker {
                    Some(crate::BreakerState::Open) => {
                        Err(format!("{} is unreachable", keeper.name()))
                    }
                    _ => keeper.load().await,
                };
                let stored = loaded.unwrap_or_else(|error| {
                    let store = keeper.name();
                    tracing::warn!(
                        %error,
                        "runtime rule entries not loaded from {store}; they are applied as soon as it answers"
                    );
                    (BTreeMap::new(), 0)
                });
                (keeper, stored)
            }
            (None, Some(path)) => {
                let keeper = Keeper::File {
                    path: path.clone(),
                    max_bytes: self.max_state_file_bytes,
                };
                let stored = keeper
                    .load()
                    .await
                    .map_err(|reason| BuildError::RuntimeState { path, reason })?;
                (keeper, stored)
            }
            (None, None) => (Keeper::Unset, (BTreeMap::new(), 0)),
        };
        let news = match &keeper {
            Keeper::Store(shared) => Some(shared.news().unwrap_or_default()),
            _ => None,
        };
        let instance = self.instance.unwrap_or_else(default_instance);
        let limiter = Limiter::new(
            rules,
            reloads,
            (keeper, stored, self.max_runtime_entries),
            (
                self.ipv6_prefix_len,
                self.rendering,
                self.reservation_timeout,
            ),
            (store, Arc::new(Hub::new(instance.into()))),
            self.memory_cleanup_interval,
            usage,
        )?;
        if let Some(news) = news {
            runtime::spawn_resync(
                Arc::downgrade(&limiter.core),
                news,
                self.runtime_resync_interval,
            );
        }
        Ok(limiter)
    }
}

/// Where the rules came from and how to follow changes.
struct Reloads {
    /// The rules file and the hash of the content loaded from it.
    file: Option<(RulesFile, u64)>,
    watch: bool,
    sighup: bool,
}

impl Limiter {
    /// The limiter of `rules` with the runtime entries `stored` in `store` (and their
    /// version there) over them, keeping at most `max_entries`; keying IPv6 clients by
    /// `ipv6_prefix_len` bits, rendering verdicts as `rendering` says unless the rules say
    /// otherwise, recording usage within `usage` if given, its events starting at `events`.
    fn new(
        rules: Rules,
        reloads: Reloads,
        (keeper, (stored, version), max_entries): (Keeper, (BTreeMap<String, Value>, u64), usize),
        (ipv6_prefix_len, rendering, reservation_timeout): (u8, Rendering, Duration),
        (store, events): (Arc<dyn Store>, Arc<Hub>),
        cleanup_every: Duration,
        usage: Option<usage::Bounds>,
    ) -> Result<Self, BuildError> {
        spawn_sweeper(Arc::downgrade(&store), cleanup_every);
        let relay = store.events();
        let (layers, rules) = Layers::new(rules, stored, version);
        reload::warn_unreachable_overrides(&rules, ipv6_prefix_len);
        let state_ids = StateIds::default();
        let installed = state_ids.install(rules, |installed| {
            store.rules_changed(&installed.slots);
            installed
        });
        let (rules_file, loaded) = reloads.file.unzip();
        let core = Arc::new(Core {
            installed: ArcSwap::from_pointee(installed),
            state_ids,
            rules_file,
            reload: Mutex::new(ReloadState::default()),
            runtime: Runtime::new(keeper, layers, max_entries),
            ipv6_prefix_len,
            rendering,
            usage: usage.map(|bounds| Usage::start(&*store, bounds)),
            store,
            counters: Counters::default(),
            events,
            reservation_timeout,
        });
        if let Some(relay) = relay {
            fleet::spawn(&core, relay);
        }
        if let (Some(file), Some(hash)) = (&core.rules_file, loaded) {
            core.loaded_from(hash);
            let paths = file.paths();
            let watch_error = |reason: String| BuildError::Watch {
                path: paths.first().map(|p| p.to_path_buf()).unwrap_or_default(),
                reason,
            };
            if reloads.watch {
                reload::spawn_watcher(Arc::downgrade(&core), &paths)
                    .map_err(|e| watch_error(e.to_string()))?;
            }
            #[cfg(unix)]
            if reloads.sighup {
                reload::spawn_sighup(Arc::downgrade(&core))
                    .map_err(|e| watch_error(format!("cannot handle SIGHUP: {e}")))?;
            }
        }
        Ok(Self { core })
    }
}

/// The name of this instance by default: `<host>:<pid>`.
fn default_instance() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

/// This host's name: the kernel's on Linux, else as `HOSTNAME` or `COMPUTERNAME` says,
/// else `localhost`. What an instance's default name starts with (see
/// [`LimiterBuilder::instance`]).
///
/// ```
/// let host = tollgate::host_name();
/// assert!(!host.is_empty());
/// ```
pub fn host_name() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let named = kernel
        .into_iter()
        .chain(
            ["HOSTNAME", "COMPUTERNAME"]
                .iter()
                .filter_map(|v| std::env::var(v).ok()),
        )
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty());
    named.unwrap_or_else(|| "localhost".to_owned())
}

/// Has the store drop what no longer matters every `interval` until the limiter is
/// dropped.
fn spawn_sweeper(store: Weak<dyn Store>, interval: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(store) = store.upgrade() else {
                break;
            };
            store.sweep();
        }
    });
}
