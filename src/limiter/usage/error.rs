//! [`UsageError`]: why usage statistics could not be read.

use crate::backend::StoreError;

/// Why [`Limiter::usage`](crate::Limiter::usage) or
/// [`Limiter::usage_summary`](crate::Limiter::usage_summary) has no answer.
///
/// # Example
///
/// ```
/// use tollgate::{ClientKey, Limiter, Rules, UsageError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "10/second"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let err = limiter.usage(&ClientKey::id("k")).await.unwrap_err();
/// assert_eq!(err, UsageError::NotRecorded);
/// assert_eq!(
///     err.to_string(),
///     "usage is not recorded: build the limiter with `record_usage(true)`"
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The limiter was built without [`record_usage`](crate::LimiterBuilder::record_usage).
    #[error("usage is not recorded: build the limiter with `record_usage(true)`")]
    NotRecorded,
    /// The store did not take this instance's latest counts, or did not answer the read
    /// (Redis: within the deadline of commands other than decisions). The counts not written
    /// are kept and written at a later flush.
    #[error("usage statistics in {}: {}", .0.store(), .0.reason())]
    Store(StoreError),
}
