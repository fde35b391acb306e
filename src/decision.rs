//! The one answer every backend gives.

use std::time::{Duration, SystemTime};

/// A backend's answer for one request against every band of its rule (the values are the
/// reported band's). The response headers and the 429 body are rendered from it, whichever
/// backend decided.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tollgate::Decision;
///
/// let now = SystemTime::now();
/// let denied = Decision::denied(10, now + Duration::from_secs(10), Duration::from_millis(1500));
/// assert!(!denied.allowed);
/// assert_eq!(denied.remaining, 0);
/// assert_eq!(denied.retry_after_secs(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The capacity of the band reported (the one closest to running out).
    pub limit: u32,
    /// Whole tokens (or requests) left after this request, in the band reported (for a
    /// peek, left now: nothing was taken).
    pub remaining: u32,
    /// When the bucket will be full again if no more requests come.
    pub reset: SystemTime,
    /// How long until a request would be allowed; zero when this one was.
    pub retry_after: Duration,
    /// When the band reported has one whole unit more than `remaining` (now, for a full
    /// band): the next token of a token bucket, the end of a fixed window, the moment a
    /// sliding window's estimate has dropped by enough. The IETF `RateLimit` field's `t`
    /// counts down to it. `None` from a store that does not say; `t` then counts down to
    /// `reset`.
    pub next_unit: Option<SystemTime>,
}

impl Decision {
    pub(crate) fn new(
        allowed: bool,
        limit: u32,
        remaining: u32,
        reset: SystemTime,
        retry_after: Duration,
    ) -> Self {
        Self {
            allowed,
            limit,
            remaining,
            reset,
            retry_after,
            next_unit: None,
        }
    }

    /// The request may go on; `remaining` tokens are left.
    pub fn allowed(limit: u32, remaining: u32, reset: SystemTime) -> Self {
        Self {
            allowed: true,
            limit,
            remaining,
            reset,
            retry_after: Duration::ZERO,
            next_unit: None,
        }
    }

    /// The request is refused; a token will be back after `retry_after`.
    pub fn denied(limit: u32, reset: SystemTime, retry_after: Duration) -> Self {
        Self {
            allowed: false,
            limit,
            remaining: 0,
            reset,
            retry_after,
            next_unit: None,
        }
    }

    /// `reset` as Unix time in whole seconds, rounded up.
    pub fn reset_unix_secs(&self) -> u64 {
        let since_epoch = self
            .reset
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        ceil_secs(since_epoch)
    }

    /// `retry_after` in whole seconds, rounded up and at least 1 (for `Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after).max(1)
    }
}

/// One band of a limit as it is now, as a [peek](crate::Limiter::peek) reports every band:
/// its capacity and period, what is left and when it is full again. A status page that shows
/// each window of a rule (per minute, per hour, per day) is made of these.
///
/// # Example
///
/// ```
/// use tollgate::{ClientKey, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limits": ["10/minute", "100/hour", "1000/day"]}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let ada = ClientKey::id("ada");
/// limiter.check(Query::new(&ada).cost(3)).await?;
/// let status = limiter.peek(Query::new(&ada)).await?;
/// let bands: Vec<(u32, u64, u32, u32)> = status
///     .bands()
///     .iter()
///     .map(|band| (band.limit, band.period.as_secs(), band.remaining, band.used()))
///     .collect();
/// assert_eq!(bands, [(10, 60, 7, 3), (100, 3600, 97, 3), (1000, 86400, 997, 3)]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BandStatus {
    /// The band's capacity.
    pub limit: u32,
    /// The band's period: the window of a window algorithm, the time a token bucket takes to
    /// fill from empty (`limit / refill rate`).
    pub period: Duration,
    /// Whole units left now.
    pub remaining: u32,
    /// When the band is full again if nothing more is taken.
    pub reset: SystemTime,
}

impl BandStatus {
    /// A band of `limit` units over `period` with `remaining` left, full again at `reset`.
    pub fn new(limit: u32, period: Duration, remaining: u32, reset: SystemTime) -> Self {
        Self {
            limit,
            period,
            remaining,
            reset,
        }
    }

    /// What is used of the band now: `limit - remaining`.
    pub fn used(&self) -> u32 {
        self.limit.saturating_sub(self.remaining)
    }
}

/// Who made a decision: the backend, a shortcut it took, or the failure policy.
///
/// # Example
///
/// ```
/// use tollgate::{ClientKey, DecidedBy, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "10/minute"},
///     "routes": [{"path": "/health", "unlimited": true}]}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let alice = ClientKey::id("alice");
/// let verdict = limiter.check(Query::new(&alice)).await?;
/// assert_eq!(verdict.decided_by(), DecidedBy::Memory);
/// let health = limiter.check(Query::new(&alice).route("GET", "/health")).await?;
/// assert_eq!(health.decided_by(), DecidedBy::Unlimited);
/// assert_eq!(DecidedBy::RememberedRefusal.as_str(), "remembered_refusal");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DecidedBy {
    /// The rule has no limit: nothing was decided.
    Unlimited,
    /// The in-process backend.
    Memory,
    /// Redis, by its decision script.
    Redis,
    /// A lease Redis handed this instance ahead of time (see
    /// [`redis_lease`](crate::LimiterBuilder::redis_lease)).
    Lease,
    /// A refusal Redis gave this client under this rule earlier, still running.
    RememberedRefusal,
    /// Redis could not decide; the `local` failure policy decided in this process.
    LocalFallback,
    /// Redis could not decide; the `allow` failure policy let the request through.
    FailOpen,
    /// Redis could not decide; the `deny` failure policy refused the request.
    FailClosed,
    /// The request costs more than the smallest band of its limit holds, so it can never
    /// be admitted: refused without asking the backend, and not counted. Only
    /// [`Limiter::check_descriptors`](crate::Limiter::check_descriptors) answers so, as
    /// Envoy's protocol wants; a [`Query`](crate::Query) with such a cost is a
    /// [`CheckError::Cost`](crate::CheckError::Cost).
    OverCapacity,
}

impl DecidedBy {
    /// The name used in logs and JSON: `"unlimited"`, `"memory"`, `"redis"`, `"lease"`,
    /// `"remembered_refusal"`, `"local_fallback"`, `"fail_open"`, `"fail_closed"` or
    /// `"over_capacity"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Unlimited => "unlimited",
            DecidedBy::Memory => "memory",
            DecidedBy::Redis => "redis",
            DecidedBy::Lease => "lease",
            DecidedBy::RememberedRefusal => "remembered_refusal",
            DecidedBy::LocalFallback => "local_fallback",
            DecidedBy::FailOpen => "fail_open",
            DecidedBy::FailClosed => "fail_closed",
            DecidedBy::OverCapacity => "over_capacity",
        }
    }
}

impl std::fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        let at = |s: f64| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s);
        assert_eq!(Decision::allowed(1, 0, at(100.0)).reset_unix_secs(), 100);
        assert_eq!(Decision::allowed(1, 0, at(100.001)).reset_unix_secs(), 101);
        let retry = |ms| Decision::denied(1, at(0.0), Duration::from_millis(ms)).retry_after_secs();
        assert_eq!(retry(0), 1);
        assert_eq!(retry(1), 1);
        assert_eq!(retry(1000), 1);
        assert_eq!(retry(1001), 2);
        assert_eq!(Decision::allowed(1, 0, at(0.0)).retry_after, Duration::ZERO);
    }
}
