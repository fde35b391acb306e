//! What a limiter cannot do: a question the rules cannot answer ([`CheckError`]), a
//! reset that could not be made ([`ResetError`]), and a runtime rule change that was not
//! made ([`RuntimeError`]).

use std::path::PathBuf;

use crate::backend::StoreError;
use crate::rules::{RulesError, UnknownTier};

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
    /// A [reservation](crate::Limiter::reserve) cannot be made: the store keeps none, or no
    /// random number could be drawn for its id.
    #[error("no reservation can be made: {reason}")]
    Reservation {
        /// Why.
        reason: String,
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
    /// The store could not forget the client (Redis: delete the keys or publish the reset;
    /// this instance has forgotten the client already).
    #[error("{} could not reset the client: {}", .0.store(), .0.reason())]
    Store(StoreError),
}

/// A runtime rule change that was not made: nothing was applied, here or anywhere, and
/// nothing was stored.
///
/// An entry that is not a valid rule ([`Invalid`](Self::Invalid)), or that does not fit
/// the rules in force ([`Conflict`](Self::Conflict)), is the caller's to fix; one that
/// could not be stored ([`Store`](Self::Store), [`StateFile`](Self::StateFile)) may be
/// made again once the store is back.
///
/// # Example
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
///     .build()
///     .await?;
/// let err = limiter
///     .set_client_override(&ClientKey::id("k"), json!({"limit": "0/second"}))
///     .await
///     .unwrap_err();
/// assert!(matches!(err, RuntimeError::Invalid(_)));
/// assert_eq!(
///     err.to_string(),
///     "runtime entry: at clients.id:k.limit: limit must look like \"N/unit\" with unit one of second, \
///      minute, hour, day and N an integer from 1 to 1000000000 for N/second or 4294967295 for \
///      N/minute, N/hour, N/day; got \"0/second\""
/// );
/// assert!(limiter.runtime_entries().is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The entry is not a valid rule: the rules file's error, at the JSON path of the entry
    /// in a rules file (`clients.id:k.limit`, `routes[0].limit`), from the source
    /// `runtime entry`.
    #[error(transparent)]
    Invalid(RulesError),
    /// The entry is a valid rule, but the rules in force with it are not: a route whose
    /// pattern conflicts with another route's, or that covers the same path and method.
    #[error("{target} does not fit the rules in force: {source}")]
    Conflict {
        /// The entry's target, like `rule:/api/{x}`.
        target: String,
        /// The rules error of the rules in force with the entry merged.
        source: RulesError,
    },
    /// The store could not keep the change (it is down, or did not answer in time). A
    /// change that timed out may have reached the store after all: then every instance
    /// applies it at its next re-read, and
    /// [`Limiter::runtime_entries`](crate::Limiter::runtime_entries) lists it.
    #[error("{target} was not changed: {} could not store the change: {}", source.store(), source.reason())]
    Store {
        /// The entry's target.
        target: String,
        /// What went wrong, in the store's words.
        source: StoreError,
    },
    /// The runtime state file could not be written.
    #[error("runtime entries were not changed: cannot write the runtime state file {}: {source}", path.display())]
    StateFile {
        /// The state file.
        path: PathBuf,
        /// Why writing it failed.
        source: std::io::Error,
    },
    /// A new entry would make more runtime entries than the limiter keeps
    /// ([`max_runtime_entries`](crate::LimiterBuilder::max_runtime_entries)). Replacing or
    /// removing an entry is always possible.
    #[error(
        "{target} was not added: at most {max} runtime entries are kept; remove some, or raise \
         the limit (the builder's max_runtime_entries, or tollgate serve's \
         TOLLGATE_MAX_RUNTIME_ENTRIES)"
    )]
    TooManyEntries {
        /// The entry's target.
        target: String,
        /// The most entries kept.
        max: usize,
    },
    /// The runtime state file with the change would be larger than the most that is read
    /// back ([`max_state_file_bytes`](crate::LimiterBuilder::max_state_file_bytes)), which
    /// would stop the next start.
    #[error(
        "runtime entries were not changed: the runtime state file {} would be larger than \
         {max_bytes} bytes, the most that is read back (the builder's max_state_file_bytes, \
         or tollgate serve's TOLLGATE_STATE_FILE_MAX_BYTES)",
        path.display()
    )]
    StateFileTooLarge {
        /// The state file.
        path: PathBuf,
        /// The most bytes it may hold.
        max_bytes: u64,
    },
    /// The limiter has nowhere to keep runtime entries: its store keeps none (in process),
    /// and it was given no
    /// [`runtime_state_file`](crate::LimiterBuilder::runtime_state_file).
    #[error(
        "runtime entries need somewhere to be kept: give the builder a runtime_state_file(path), or use Redis"
    )]
    NoStore,
}
