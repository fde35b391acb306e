//! [`RateLimitLayer`] and its builder.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tower_layer::Layer;

use crate::backend::Backend;
use crate::backend::memory::{DEFAULT_MAX_KEYS, MemoryBackend};
use crate::error::BuildError;
use crate::key::KeySource;
use crate::rules::Rules;
use crate::service::RateLimit;

/// State shared by every clone of the layer and of its services.
pub(crate) struct Shared {
    pub(crate) rules: Rules,
    pub(crate) keys: KeySource,
    pub(crate) backend: Backend,
}

/// A tower [`Layer`] that rate limits requests by client and route.
///
/// Each request is matched to a client key (`X-Client-ID`, `X-Forwarded-For`, the peer
/// address), then to a rule in the rules file, then decided by a token bucket in Redis or in
/// memory. Allowed requests reach the inner service and get `X-RateLimit-*` headers; refused
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

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.shared.rules
    }

    /// `"memory"` or `"redis"`: where the buckets live.
    pub fn backend_name(&self) -> &'static str {
        self.shared.backend.name()
    }
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("backend", &self.backend_name())
            .field("rules", &self.shared.rules)
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
    Given(Rules),
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
///     .trusted_proxy_hops(1)
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
    keys: KeySource,
    memory_cleanup_interval: Duration,
    #[cfg(feature = "redis")]
    redis: Option<crate::backend::redis::RedisConfig>,
    #[cfg(feature = "redis")]
    redis_prefix: Option<String>,
    #[cfg(feature = "redis")]
    redis_timeout: Option<Duration>,
}

impl Default for RateLimitLayerBuilder {
    fn default() -> Self {
        Self {
            rules: None,
            keys: KeySource::default(),
            memory_cleanup_interval: Duration::from_secs(10),
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            redis_prefix: None,
            #[cfg(feature = "redis")]
            redis_timeout: None,
        }
    }
}

impl fmt::Debug for RateLimitLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayerBuilder")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayerBuilder {
    /// Loads the rules from this JSON file when [`build`](Self::build) runs.
    pub fn rules_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.rules = Some(RulesSource::File(path.into()));
        self
    }

    /// Uses rules already loaded.
    pub fn rules(mut self, rules: Rules) -> Self {
        self.rules = Some(RulesSource::Given(rules));
        self
    }

    /// How many proxies in front of the app append to `X-Forwarded-For` (default 1: the
    /// rightmost entry is the client). 0 ignores `X-Forwarded-For`, for apps that clients
    /// reach directly.
    pub fn trusted_proxy_hops(mut self, hops: usize) -> Self {
        self.keys.trusted_proxy_hops = hops;
        self
    }

    /// How often the in-memory backend forgets clients whose buckets are full again
    /// (default 10 s).
    pub fn memory_cleanup_interval(mut self, interval: Duration) -> Self {
        self.memory_cleanup_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Keeps buckets in Redis at this URL (`redis://[:password@]host[:port][/db]`, or
    /// `rediss://` for TLS), shared by every instance using the same Redis and prefix.
    #[cfg(feature = "redis")]
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(crate::backend::redis::RedisConfig::new(url.into()));
        self
    }

    /// Prefix of every Redis key (default `tollgate`).
    #[cfg(feature = "redis")]
    pub fn redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.redis_prefix = Some(prefix.into());
        self
    }

    /// Deadline for each Redis decision (default 50 ms). A request whose decision misses it
    /// is let through and a warning is logged.
    #[cfg(feature = "redis")]
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.redis_timeout = Some(timeout);
        self
    }

    /// Loads the rules, connects to Redis if asked, and returns the layer.
    ///
    /// Must run inside a Tokio runtime: the in-memory backend's cleanup is a Tokio task.
    pub async fn build(self) -> Result<RateLimitLayer, BuildError> {
        let rules = match self.rules {
            None => return Err(BuildError::NoRules),
            Some(RulesSource::Given(rules)) => rules,
            Some(RulesSource::File(path)) => Rules::from_file(path)?,
        };
        #[cfg(feature = "redis")]
        if let Some(mut config) = self.redis {
            if let Some(prefix) = self.redis_prefix {
                config.prefix = prefix;
            }
            if let Some(timeout) = self.redis_timeout {
                config.timeout = timeout;
            }
            let backend = crate::backend::redis::RedisBackend::connect(&config)
                .await
                .map_err(|reason| BuildError::Redis {
                    url: crate::backend::redis::redact(&config.url),
                    reason,
                })?;
            return Ok(RateLimitLayer {
                shared: Arc::new(Shared {
                    rules,
                    keys: self.keys,
                    backend: Backend::Redis(backend),
                }),
            });
        }
        let memory = Arc::new(MemoryBackend::new(&rules, DEFAULT_MAX_KEYS, 1));
        spawn_memory_cleanup(Arc::downgrade(&memory), self.memory_cleanup_interval);
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                rules,
                keys: self.keys,
                backend: Backend::Memory(memory),
            }),
        })
    }
}

/// Forgets full buckets every `interval` until the layer is dropped.
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
