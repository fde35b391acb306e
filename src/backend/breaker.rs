//! The circuit breaker in front of Redis.
//!
//! Closed: every decision goes to Redis. After `threshold` failures in a row (errors or
//! missed deadlines) it opens: decisions skip Redis entirely, so an outage costs no
//! per-request timeout. After `cooldown` one request probes Redis (half-open) while the rest
//! still skip it; the probe's success closes the breaker, its failure (or cancellation)
//! opens it for another cooldown. The health probe (a `PING` every second, see
//! `redis::health`) moves it too, without traffic: a failed `PING` opens it (unless a
//! decision got through meanwhile: traffic knows better), an answered one closes it. Opening (warn) and closing (info) are logged once each; probes only at debug
//! level, so an outage of any length logs two lines.
// Without Redis only `BreakerState` is used (in `Stats`).
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where the circuit breaker in front of Redis stands.
///
/// # Example
///
/// ```
/// use tollgate::{BreakerState, Limiter, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(); // nothing there
/// let limiter = Limiter::builder()
///     .rules(Rules::from_json(r#"{"default": {"capacity": 5, "refill_rate": 1}}"#)?)
///     .redis_url(format!("redis://127.0.0.1:{port}"))
///     .build()
///     .await?;
/// // Redis could not be reached at startup: requests use the failure policy until it can.
/// assert_eq!(limiter.stats().store.breaker, Some(BreakerState::Open));
/// // As it is written in logs and in `Stats` serialized to JSON.
/// assert_eq!(BreakerState::HalfOpen.to_string(), "half_open");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Redis decides.
    Closed,
    /// Redis is skipped; the failure policy decides.
    Open,
    /// One probe is on its way to Redis; the rest use the failure policy.
    HalfOpen,
}

impl BreakerState {
    /// `"closed"`, `"open"` or `"half_open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How stale [`Breaker::succeeded_at`] may be: 100 ms.
const SUCCESS_GRAIN_NS: u64 = 100_000_000;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// What the breaker lets one request do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Ask Redis.
    Call,
    /// Ask Redis as the half-open probe; report back in any case.
    Probe,
    /// Do not ask Redis.
    Skip,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    state: AtomicU8,
    failures_in_a_row: AtomicU32,
    /// When it last opened, in nanoseconds since `epoch`.
    opened_at: AtomicU64,
    /// When a call last succeeded, in nanoseconds since `epoch`, to within
    /// [`SUCCESS_GRAIN_NS`] (a store on every success would contend across cores); 0: never.
    succeeded_at: AtomicU64,
    epoch: Instant,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: AtomicU8::new(CLOSED),
            failures_in_a_row: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            succeeded_at: AtomicU64::new(0),
            epoch: Instant::now(),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    fn now(&self) -> u64 {
        // Never 0, which `succeeded_at` keeps for "never".
        u64::try_from(self.epoch.elapsed().as_nanos()).map_or(u64::MAX, |n| n.max(1))
    }

    pub(crate) fn permit(&self) -> Permit {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Permit::Call,
            OPEN => {
                let open_for = self
                    .now()
                    .saturating_sub(self.opened_at.load(Ordering::Acquire));
                if open_for >= self.cooldown.as_nanos() as u64
                    && self
                        .state
                        .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    tracing::debug!("rate limit circuit half-open: probing Redis");
                    Permit::Probe
                } else {
                    Permit::Skip
                }
            }
            _ => Permit::Skip,
        }
    }

    pub(crate) fn succeeded(&self, permit: Permit) {
        match permit {
            // The health probe may have closed it meanwhile. Its success is a success since
            // any `PING` still on its way: one that then fails must not open the breaker again.
            Permit::Probe => {
                self.succeeded_at.store(self.now(), Ordering::Relaxed);
                self.close();
            }
            Permit::Call => {
                // Read first: a store on every success would contend across cores.
                if self.failures_in_a_row.load(Ordering::Relaxed) != 0 {
                    self.failures_in_a_row.store(0, Ordering::Relaxed);
                }
                let (now, last) = (self.now(), self.succeeded_at.load(Ordering::Relaxed));
                if last == 0 || now.saturating_sub(last) >= SUCCESS_GRAIN_NS {
                    self.succeeded_at.store(now, Ordering::Relaxed);
                }
            }
            Permit::Skip => {}
        }
    }

    pub(crate) fn failed(&self, permit: Permit, error: &dyn std::fmt::Display) {
        match permit {
            Permit::Probe => {
                self.opened_at.store(self.now(), Ordering::Release);
                let reopened = self
                    .state
                    .compare_exchange(HALF_OPEN, OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if reopened {
                    tracing::debug!(%error, "Redis probe failed: rate limit circuit stays open");
                } else {
                    // The health probe closed it meanwhile: a failure like any other.
                    self.failed(Permit::Call, error);
                }
            }
            Permit::Call => {
                let failures = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= self.threshold {
                    self.open(&format!("{failures} failures in a row, last: {error}"));
                }
            }
            Permit::Skip => {}
        }
    }

    /// What the health probe, whose `PING` was sent at `sent`, found: Redis answered in
    /// time (`Ok`), or not. An answer closes the breaker, wherever it stood. No answer opens
    /// a closed breaker, unless a call succeeded since `sent` (a `PING` lost on a
    /// connection being made again says less than decisions that got through); a half-open
    /// breaker waiting on a request's probe is left to that probe.
    pub(crate) fn probed(&self, sent: Instant, answer: Result<(), String>) {
        let Err(error) = answer else {
            self.close();
            return;
        };
        let sent = u64::try_from(sent.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX);
        // 0: no call ever succeeded.
        let succeeded_at = self.succeeded_at.load(Ordering::Relaxed);
        let succeeded_since = succeeded_at != 0 && succeeded_at + SUCCESS_GRAIN_NS >= sent;
        if self.state.load(Ordering::Acquire) == CLOSED && !succeeded_since {
            self.open(&format!("Redis did not answer the health probe: {error}"));
        } else {
            tracing::debug!(%error, "Redis did not answer the health probe");
        }
    }

    /// Closes an open or half-open breaker, logging it once.
    fn close(&self) {
        self.failures_in_a_row.store(0, Ordering::Relaxed);
        if self.state.swap(CLOSED, Ordering::AcqRel) != CLOSED {
            tracing::info!("Redis answers again: rate limit circuit closed");
        }
    }

    /// Opens a closed breaker (at startup, or after repeated failures).
    pub(crate) fn open(&self, why: &str) {
        self.opened_at.store(self.now(), Ordering::Release);
        if self
            .state
            .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::warn!(
                cooldown = ?self.cooldown,
                "rate limit circuit opened ({why}): deciding without Redis"
            );
        }
    }
}

/// Reports a permit's result to the breaker; a probe dropped before it finished (its request
/// was cancelled) counts as failed, so the breaker never stays half-open.
pub(crate) struct PermitGuard {
    breaker: std::sync::Arc<Breaker>,
    permit: Permit,
}

impl PermitGuard {
    pub(crate) fn new(breaker: std::sync::Arc<Breaker>, permit: Permit) -> Self {
        Self { breaker, permit }
    }

    pub(crate) fn succeeded(mut self) {
        self.breaker.succeeded(self.permit);
        self.permit = Permit::Skip;
    }

    pub(crate) fn failed(mut self, error: &dyn std::fmt::Display) {
        self.breaker.failed(self.permit, error);
        self.permit = Permit::Skip;
    }
}

impl Drop for PermitGuard {
    fn drop(&mut self) {
        if self.permit == Permit::Probe {
            self.breaker.failed(Permit::Probe, &"probe cancelled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_a_run_of_failures_and_a_success_resets_the_run() {
        let breaker = Breaker::new(3, Duration::from_secs(3600));
        for _ in 0..2 {
            breaker.failed(breaker.permit(), &"boom");
        }
        breaker.succeeded(breaker.permit());
        for _ in 0..2 {
            breaker.failed(breaker.permit(), &"boom");
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.failed(breaker.permit(), &"boom");
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.permit(), Permit::Skip);
    }

    #[test]
    fn one_probe_after_the_cooldown() {
        let breaker = Breaker::new(1, Duration::ZERO);
        breaker.failed(Permit::Call, &"boom");
        assert_eq!(breaker.permit(), Permit::Probe);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(breaker.permit(), Permit::Skip, "only one probe at a time");
        breaker.failed(Permit::Probe, &"still down");
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.permit(), Permit::Probe);
        breaker.succeeded(Permit::Probe);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.permit(), Permit::Call);
    }

    #[test]
    fn no_probe_before_the_cooldown() {
        let breaker = Breaker::new(1, Duration::from_secs(3600));
        breaker.open("test");
        assert_eq!(breaker.permit(), Permit::Skip);
    }

    #[test]
    fn the_health_probe_opens_and_closes_without_traffic() {
        let breaker = Breaker::new(5, Duration::from_secs(3600));
        breaker.probed(Instant::now(), Err("connection refused".into()));
        assert_eq!(
            breaker.state(),
            BreakerState::Open,
            "one failed PING opens it"
        );
        assert_eq!(breaker.permit(), Permit::Skip);
        breaker.probed(Instant::now(), Err("still refused".into()));
        assert_eq!(breaker.state(), BreakerState::Open);
        breaker.probed(Instant::now(), Ok(()));
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "no cooldown, no request"
        );
        assert_eq!(breaker.permit(), Permit::Call);
        // A request's probe that fails after the health probe closed the breaker counts as
        // a failed call: one of five, so the breaker stays closed.
        let breaker = Breaker::new(5, Duration::ZERO);
        breaker.open("test");
        assert_eq!(breaker.permit(), Permit::Probe);
        breaker.probed(Instant::now(), Ok(()));
        breaker.failed(Permit::Probe, &"late");
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    /// A `PING` sent while Redis was away and failing after a request's probe brought the
    /// breaker back says nothing new: it stays closed.
    #[test]
    fn a_ping_older_than_a_successful_probe_does_not_reopen() {
        let breaker = Breaker::new(5, Duration::ZERO);
        breaker.open("test");
        let ping_sent = Instant::now();
        assert_eq!(breaker.permit(), Permit::Probe);
        breaker.succeeded(Permit::Probe);
        breaker.probed(ping_sent, Err("timed out".into()));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_ping_does_not_open_what_traffic_got_through() {
        let breaker = Breaker::new(5, Duration::from_secs(3600));
        let sent = Instant::now();
        breaker.succeeded(Permit::Call);
        breaker.probed(sent, Err("lost on a reconnect".into()));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_cancelled_probe_reopens() {
        let breaker = std::sync::Arc::new(Breaker::new(1, Duration::ZERO));
        breaker.open("test");
        let guard = PermitGuard::new(breaker.clone(), breaker.permit());
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        drop(guard);
        assert_eq!(breaker.state(), BreakerState::Open);
    }
}
