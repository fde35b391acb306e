//! How the backend reaches Redis and what it does without it.

use std::time::Duration;

use crate::backend::memory::DEFAULT_MAX_KEYS;
use crate::policy::OnRedisError;

/// How the limiter reaches Redis and what it does without it.
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
    /// How long a lease lives; zero: no leases.
    pub(crate) lease: Duration,
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
            max_tracked_buckets: DEFAULT_MAX_KEYS,
            lease: Duration::ZERO,
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
