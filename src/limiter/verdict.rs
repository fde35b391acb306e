//! [`Verdict`], a limiter's answer.

use std::sync::Arc;
use std::time::Duration;

use super::ticket::Held;
use crate::decision::{BandStatus, DecidedBy, Decision};
use crate::header_style::{HeaderStyle, Rendering};
use crate::key::ClientKey;
use crate::rules::Limit;

/// The limiter's answer to a [`Query`](crate::Query): whether the request may go on, the
/// bands' [`Decision`] behind it, the rule and the limit that applied, who decided, whether
/// a shadow rule let through what it would have refused, and how fronts render it. A front
/// prints what it holds and never goes back to the rules.
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
/// // The limit that applied, in the rules file's words.
/// assert_eq!(second.limit().unwrap().rate(), "1/hour");
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
    /// The limit that applied (the client's override, if it has one); `None` when the rule
    /// is unlimited. Its bands are shared with the rules, not copied.
    pub(crate) limit: Option<Limit>,
    /// For a peek, every band as the store reported it.
    pub(crate) bands: Option<Box<[BandStatus]>>,
    /// The client, when its key is no secret (see [`partition_key`](Self::partition_key)).
    pub(crate) partition: Option<ClientKey>,
    /// The reservation the store holds for this request, until a front takes it.
    pub(crate) held: Option<Box<Held>>,
}

impl Verdict {
    /// The reservation the store holds for this request, taken out.
    #[inline]
    pub(crate) fn take_reservation(&mut self) -> Option<super::Reservation> {
        let held = self.held.take()?;
        Some(super::Reservation::of(*held))
    }

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

    /// For a [peek](crate::Limiter::peek): every band of the limit as it is now, in the
    /// limit's order (see [`BandStatus`]). Empty for a check, when nothing was counted (see
    /// [`decision`](Self::decision)), and from a store that does not tell each band (see
    /// [`Outcome::Peeked`](crate::backend::Outcome::Peeked)).
    pub fn bands(&self) -> &[BandStatus] {
        self.bands.as_deref().unwrap_or_default()
    }

    /// The limit that applied: the rule's, or the client's override from the rules'
    /// `clients`; `None` when the rule is unlimited. Its bands are what `RateLimit-Policy`
    /// lists, and [`Limit::rate`] what the service prints.
    pub fn limit(&self) -> Option<&Limit> {
        self.limit.as_ref()
    }

    /// Which rate limit header fields fronts send for it: the rules file's `headers`, else
    /// the builder's [`header_style`](crate::LimiterBuilder::header_style).
    pub fn header_style(&self) -> HeaderStyle {
        self.rendering.headers
    }

    /// The client's key when it is no secret, an address or a network (`ip:203.0.113.7`,
    /// `ip:2001:db8::/64`), which the IETF fields send as their partition key (`pk`); `None`
    /// for an `X-Client-ID` (it may be an API key) and for `unknown`.
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use tollgate::{ClientKey, Limiter, Query, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "10/minute"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// let address: IpAddr = "203.0.113.7".parse()?;
    /// let by_address = limiter.check(Query::new(&ClientKey::Ip(address))).await?;
    /// assert_eq!(by_address.partition_key().map(ToString::to_string).as_deref(), Some("ip:203.0.113.7"));
    /// let by_id = limiter.check(Query::new(&ClientKey::id("sk_live_123"))).await?;
    /// assert_eq!(by_id.partition_key(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn partition_key(&self) -> Option<&ClientKey> {
        self.partition.as_ref()
    }

    /// Whether fronts answer its refusal with an RFC 9457 `application/problem+json` body:
    /// the rules file's `problem_details`, else the builder's.
    pub fn problem_details(&self) -> bool {
        self.rendering.problem_details
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
