//! A limiter or layer that could not be built.

use crate::rules::RulesError;

/// A [`Limiter`](crate::Limiter) or [`RateLimitLayer`](crate::RateLimitLayer) that could not
/// be built.
///
/// # Example
///
/// ```
/// use tollgate::{BuildError, Limiter};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = Limiter::builder().rules_file("no/such/file.json").build().await.unwrap_err();
/// assert!(matches!(err, BuildError::Rules(_)));
/// assert!(err.to_string().contains("no/such/file.json"));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Neither `rules_file` nor `rules` was given.
    #[error("no rules: call `rules_file(path)` or `rules(Rules)` on the builder")]
    NoRules,
    /// The rules could not be loaded.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// An entry of `trusted_proxies` is neither a CIDR nor an IP address.
    #[error("trusted proxy {value:?} is not a CIDR like \"10.0.0.0/8\" or an IP address")]
    TrustedProxy {
        /// The entry as given.
        value: String,
    },
    /// An entry of `trusted_proxies` covers every address (`0.0.0.0/0`, `::/0`, `*`): the
    /// right-to-left walk over `X-Forwarded-For` would then end at whatever the client wrote.
    #[error(
        "trusted proxy {value:?} covers every address, so X-Forwarded-For would be read up to what the client wrote in it; list only your proxies' addresses, or call `trust_any_peer()` to trust every peer and read X-Forwarded-For by hop count"
    )]
    TrustedProxyEveryAddress {
        /// The entry as given.
        value: String,
    },
    /// The rules file cannot be watched for changes.
    #[error("cannot watch the rules file {}: {reason}", path.display())]
    Watch {
        /// The rules file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `ipv6_prefix_len` is outside 1 to 128.
    #[error("ipv6_prefix_len must be from 1 to 128, got {0}")]
    Ipv6PrefixLen(u8),
    /// `redis_cluster` was given no seed nodes.
    #[cfg(feature = "redis")]
    #[error("no Redis Cluster seed nodes: give at least one redis:// URL")]
    NoClusterNodes,
    /// The Redis URL cannot be used.
    #[cfg(feature = "redis")]
    #[error("cannot connect to Redis at {url}: {reason}")]
    Redis {
        /// The URL with any password hidden.
        url: String,
        /// What went wrong.
        reason: String,
    },
}
