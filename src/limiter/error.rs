//! What a limiter cannot do: a question the rules cannot answer ([`CheckError`]), and a
//! reset that could not be made ([`ResetError`]).

use crate::rules::UnknownTier;

/// A [`Query`](crate::Query) the rules cannot answer.
///
/// # Example
///
/// ```
/// use tollgate::{CheckError, ClientKey, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "5/second"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let carol = ClientKey::id("carol");
/// let err = limiter.check(Query::new(&carol).cost(6)).await.unwrap_err();
/// assert!(matches!(err, CheckError::Cost { cost: 6, max: 5, .. }));
/// assert_eq!(
///     err.to_string(),
///     "cost 6 cannot be taken under rule \"default\": it must be from 1 to 5 (the smallest capacity of its limit)"
/// );
/// assert!(matches!(
///     limiter.check(Query::new(&carol).rule("/nowhere")).await,
///     Err(CheckError::UnknownRule { .. })
/// ));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The tier is not in the rules.
    #[error(transparent)]
    UnknownTier(#[from] UnknownTier),
    /// No rule has this identity (in the tier given, if one was).
    #[error("no rule {rule:?}{}: the rules' identities are listed by `tollgate check-rules`", tier.as_ref().map_or(String::new(), |t| format!(" in tier {t:?}")))]
    UnknownRule {
        /// The identity asked for.
        rule: String,
        /// The tier asked for.
        tier: Option<String>,
    },
    /// The cost asked for cannot be taken from the rule's bands.
    #[error(
        "cost {cost} cannot be taken under rule {rule:?}: it must be from 1 to {max} (the smallest capacity of its limit)"
    )]
    Cost {
        /// The cost asked for.
        cost: u32,
        /// The rule.
        rule: String,
        /// The smallest capacity of the limit that applies.
        max: u32,
    },
}

/// A [`Limiter::reset`](crate::Limiter::reset) or [`Limiter::reset_rule`](crate::Limiter::reset_rule) that could not be done.
///
/// # Example
///
/// ```
/// use tollgate::{ClientKey, Limiter, ResetError, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = Limiter::builder()
///     .rules(Rules::from_json(r#"{"default": {"limit": "5/second"}}"#)?)
///     .build()
///     .await?;
/// let err = limiter.reset_rule(&ClientKey::id("gina"), "/nope").await.unwrap_err();
/// assert!(matches!(err, ResetError::UnknownRule { .. }));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResetError {
    /// No rule has this identity.
    #[error("no rule {rule:?}: the rules' identities are listed by `tollgate check-rules`")]
    UnknownRule {
        /// The identity asked for.
        rule: String,
    },
    /// Redis could not delete the keys or publish the reset (this instance has forgotten
    /// the client already).
    #[error("Redis could not reset the client: {reason}")]
    Redis {
        /// What went wrong.
        reason: String,
    },
}
