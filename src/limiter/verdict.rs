//! [`Verdict`], a limiter's answer.

use std::sync::Arc;
use std::time::Duration;

use crate::decision::{DecidedBy, Decision};
use crate::header_style::Rendering;
use crate::rules::Limit;

/// The limiter's answer to a [`Query`](crate::Query): whether the request may go on, the
/// bands' [`Decision`] behind it, the rule, who decided, and whether a shadow rule let
/// through what it would have refused.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tollgate::{ClientKey, DecidedBy, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let bob = ClientKey::id("bob");
/// let first = limiter.check(Query::new(&bob)).await?;
/// assert!(first.allowed());
/// assert_eq!((first.rule(), first.decided_by()), ("default", DecidedBy::Memory));
/// let second = limiter.check(Query::new(&bob)).await?;
/// assert!(!second.allowed());
/// assert!(second.retry_after().unwrap() <= Duration::from_secs(3600));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub(crate) allowed: bool,
    pub(crate) decision: Option<Decision>,
    pub(crate) rule: Arc<str>,
    pub(crate) decided_by: DecidedBy,
    pub(crate) shadow_refused: bool,
    /// The failure policy's wait, when it refused without a decision.
    pub(crate) unavailable_for: Option<Duration>,
    /// How the fronts render it: the rules' choices over the builder's.
    pub(crate) rendering: Rendering,
    /// The limit that decided, kept only when `rendering` needs it (not the default).
    pub(crate) limit: Option<Limit>,
}

impl Verdict {
    /// Whether the request may go on. A shadow rule's would-be refusal is allowed.
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// The bands' answer (limit, remaining, reset, retry-after of the band reported), or
    /// `None` when nothing was counted: the rule is unlimited, or Redis could not decide and
    /// the `allow` or `deny` failure policy answered.
    pub fn decision(&self) -> Option<Decision> {
        self.decision
    }

    /// The identity of the rule the request fell under.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// Who decided.
    pub fn decided_by(&self) -> DecidedBy {
        self.decided_by
    }

    /// Whether the rule is in shadow mode and would have refused this request, which is
    /// allowed instead.
    pub fn shadow_refused(&self) -> bool {
        self.shadow_refused
    }

    /// For a refused request, how long until one could be allowed; `None` when allowed.
    pub fn retry_after(&self) -> Option<Duration> {
        if self.allowed {
            return None;
        }
        self.unavailable_for
            .or_else(|| self.decision.map(|d| d.retry_after))
    }
}
