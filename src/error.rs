//! A limiter that could not be built.

use crate::backend::StoreError;
use crate::rules::RulesError;

/// A [`Limiter`](crate::Limiter) that could not be built.
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
    /// The rules file cannot be watched for changes.
    #[error("cannot watch the rules file {}: {reason}", path.display())]
    Watch {
        /// The rules file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The runtime state file cannot be read, or is not one.
    #[error("cannot load the runtime state file {}: {reason}", path.display())]
    RuntimeState {
        /// The file given to [`runtime_state_file`](crate::LimiterBuilder::runtime_state_file).
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `ipv6_prefix_len` is outside 1 to 128.
    #[error("ipv6_prefix_len must be from 1 to 128, got {0}")]
    Ipv6PrefixLen(u8),
    /// The store cannot be used, in its words: for Redis, a URL that is not one (with any
    /// password hidden), or `redis_cluster` given no seed nodes.
    #[error(transparent)]
    Store(StoreError),
}
