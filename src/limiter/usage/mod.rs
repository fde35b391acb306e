//! Usage statistics: every counted decision's client, rule and answer, per UTC hour and
//! day, kept in this process (the memory backend) or in Redis, shared by every instance.
//!
//! The request path only counts, in process ([`pending`]): one lock of one of 16 shards, no
//! I/O. A background task flushes what was counted every second: into the in-process
//! [`history`], or into Redis ([`redis`]), where a flush that fails is put back and tried
//! again at the next. A crash loses at most the last second. Reads flush first, so an
//! instance reads its own counts at once.

mod calendar;
mod error;
mod history;
mod pending;
#[cfg(feature = "redis")]
mod redis;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use super::Limiter;
use crate::backend::Backend;
use crate::key::{ClientKey, KeyRef};
use calendar::Hour;
use history::{HOURS_KEPT, History};
use pending::Pending;

pub use error::UsageError;

/// How often counts are flushed.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Default bound on the clients held: see
/// [`usage_max_clients`](crate::LimiterBuilder::usage_max_clients).
pub const DEFAULT_USAGE_MAX_CLIENTS: usize = 100_000;

/// Default bound on the bytes held: see
/// [`usage_max_bytes`](crate::LimiterBuilder::usage_max_bytes).
pub const DEFAULT_USAGE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Default bound on the clients Redis counts per client in one hour: see
/// [`usage_clients_per_hour`](crate::LimiterBuilder::usage_clients_per_hour).
pub const DEFAULT_USAGE_CLIENTS_PER_HOUR: u64 = 100_000;

/// How much usage recording holds and keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// The most clients held in this process: between flushes, and in the memory backend's
    /// history.
    pub(crate) max_clients: usize,
    /// The most bytes (as estimated) held in this process, by each of those.
    pub(crate) max_bytes: usize,
    /// The most clients Redis counts per client in one hour.
    pub(crate) clients_per_hour: u64,
}

/// Calls in a period: how many were allowed and how many denied.
///
/// # Example
///
/// ```
/// use tollgate::{ClientKey, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).record_usage(true).build().await?;
/// let k = ClientKey::id("k");
/// limiter.check(Query::new(&k)).await?;
/// limiter.check(Query::new(&k)).await?;
/// let usage = limiter.usage(&k).await?;
/// let today = usage.days.values().next().unwrap();
/// assert_eq!((today.allowed, today.denied, today.total()), (1, 1, 2));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct Calls {
    /// Calls allowed (a shadow rule's would-be refusals included).
    pub allowed: u64,
    /// Calls refused.
    pub denied: u64,
}

impl Calls {
    /// Every call: allowed and denied.
    pub fn total(&self) -> u64 {
        self.allowed + self.denied
    }

    pub(crate) fn new(allowed: u64, denied: u64) -> Self {
        Self { allowed, denied }
    }

    /// One call.
    pub(crate) fn one(allowed: bool) -> Self {
        Self::new(u64::from(allowed), u64::from(!allowed))
    }

    pub(crate) fn add(&mut self, other: Calls) {
        self.allowed += other.allowed;
        self.denied += other.denied;
    }
}

/// Calls of several periods (or rules) together.
///
/// ```
/// use tollgate::Calls;
///
/// let mut total = Calls::default();
/// total += Calls::default();
/// assert_eq!(total.total(), 0);
/// ```
impl std::ops::AddAssign for Calls {
    fn add_assign(&mut self, other: Calls) {
        self.add(other);
    }
}

/// One client's calls: see [`Limiter::usage`]. Periods are UTC, named `YYYY-MM-DD-HH`
/// (hours) and `YYYY-MM-DD` (days); only periods with calls are listed.
///
/// # Example
///
/// ```
/// use tollgate::{ClientKey, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "5/minute"},
///     "routes": [{"path": "/health", "unlimited": true}]}"#)?;
/// let limiter = Limiter::builder().rules(rules).record_usage(true).build().await?;
/// let user = ClientKey::id("user:123");
/// limiter.check(Query::new(&user)).await?;
/// limiter.check(Query::new(&user).route("GET", "/health")).await?;
///
/// let usage = limiter.usage(&user).await?;
/// assert_eq!(usage.client, "id:user:123");
/// let (hour, calls) = usage.hours.iter().next().unwrap();
/// assert_eq!(hour.len(), "2025-01-31-23".len());
/// assert_eq!((calls.allowed, calls.denied), (2, 0));
/// assert_eq!(usage.rules_by_hour[hour]["/health"].allowed, 1);
/// assert_eq!(serde_json::to_value(&usage)?["client"], "id:user:123");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ClientUsage {
    /// The client, as its key is written (`id:user:123`, `ip:10.0.0.1`).
    pub client: String,
    /// Calls per hour over the last 24 hours (the current hour and the 23 before).
    pub hours: BTreeMap<String, Calls>,
    /// Calls per day over the last 30 days (today and the 29 before).
    pub days: BTreeMap<String, Calls>,
    /// Calls per hour (as in `hours`) and rule identity.
    pub rules_by_hour: BTreeMap<String, BTreeMap<String, Calls>>,
    /// The hours (as in `hours`) in which this client was not counted per client: Redis
    /// counted [`usage_clients_per_hour`](crate::LimiterBuilder::usage_clients_per_hour)
    /// other clients already. Its calls in them, if any, are in the totals only
    /// ([`Limiter::usage_summary`]). Always empty in memory, where the bound forgets whole
    /// clients instead.
    pub untracked_hours: BTreeSet<String>,
}

impl ClientUsage {
    fn new(client: String) -> Self {
        Self {
            client,
            ..Self::default()
        }
    }
}

/// A client among the most refused: see [`UsageSummary::most_limited`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LimitedClient {
    /// The client, as its key is written.
    pub client: String,
    /// Its calls refused over the last 24 hours.
    pub denied: u64,
}

/// Every client's calls over the last 24 hours: see [`Limiter::usage_summary`].
///
/// # Example
///
/// ```
/// use tollgate::{ClientKey, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).record_usage(true).build().await?;
/// for (client, calls) in [("a", 2), ("b", 4), ("c", 1)] {
///     for _ in 0..calls {
///         limiter.check(Query::new(&ClientKey::id(client))).await?;
///     }
/// }
/// let summary = limiter.usage_summary(2).await?;
/// assert_eq!((summary.allowed, summary.denied), (3, 4));
/// assert_eq!(summary.rules["default"].denied, 4);
/// let top: Vec<_> = summary.most_limited.iter().map(|c| (c.client.as_str(), c.denied)).collect();
/// assert_eq!(top, [("id:b", 3), ("id:a", 1)]);
/// assert_eq!(summary.hours.values().map(|c| c.total()).sum::<u64>(), 7);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct UsageSummary {
    /// Calls allowed over the last 24 hours, every client's.
    pub allowed: u64,
    /// Calls refused over the last 24 hours, every client's.
    pub denied: u64,
    /// Calls per rule identity.
    pub rules: BTreeMap<String, Calls>,
    /// The clients most refused, most first (ties by client), as many as asked for.
    pub most_limited: Vec<LimitedClient>,
    /// Calls per hour (`YYYY-MM-DD-HH`, UTC), hours with calls only.
    pub hours: BTreeMap<String, Calls>,
}

/// Where flushed counts go.
enum Sink {
    /// Kept in this process.
    Memory(Mutex<History>),
    /// Added to Redis, each hour counting at most this many clients per client.
    #[cfg(feature = "redis")]
    Redis(Arc<crate::backend::redis::RedisBackend>, u64),
}

/// A limiter's usage recording: the counts since the last flush, and where they go.
pub(crate) struct Usage {
    pending: Pending,
    /// The current UTC hour, kept by the flusher so that requests need not read the clock.
    hour: AtomicU64,
    sink: Sink,
    /// One flush at a time, so that a read after a flush finds every count made before it.
    /// Holds whether the last flush failed, to warn once per outage.
    flushing: tokio::sync::Mutex<bool>,
    evicted: AtomicU64,
    flush_errors: AtomicU64,
}

/// What usage recording has counted, for [`Stats`](crate::Stats).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct UsageCounts {
    pub(crate) clients: usize,
    pub(crate) dropped: u64,
    pub(crate) evicted: u64,
    pub(crate) flush_errors: u64,
}

impl Usage {
    /// Starts recording, within `bounds`, into `backend`'s store: this process for the
    /// memory backend, else Redis. Flushed every second by a task that ends when the
    /// returned recorder is dropped.
    pub(crate) fn start(backend: &Backend, bounds: Bounds) -> Arc<Self> {
        let sink = match backend {
            Backend::Memory(_) => Sink::Memory(Mutex::new(History::new(
                bounds.max_clients,
                bounds.max_bytes,
            ))),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => Sink::Redis(Arc::clone(redis), bounds.clients_per_hour),
        };
        let usage = Arc::new(Self {
            pending: Pending::new(bounds.max_clients, bounds.max_bytes),
            hour: AtomicU64::new(calendar::current_hour()),
            sink,
            flushing: tokio::sync::Mutex::new(false),
            evicted: AtomicU64::new(0),
            flush_errors: AtomicU64::new(0),
        });
        spawn_flusher(Arc::downgrade(&usage));
        usage
    }

    /// Counts one decision.
    #[inline]
    pub(crate) fn record(&self, client: KeyRef<'_>, rule: &Arc<str>, allowed: bool) {
        let hour = self.hour.load(Ordering::Relaxed);
        self.pending.record(hour, client, rule, allowed);
    }

    /// Writes what was counted since the last flush. On failure, the counts are kept for the
    /// next flush (within the bound on clients), and the first failure of an outage is
    /// logged.
    async fn flush(&self) -> Result<(), UsageError> {
        let now = self.tick();
        let mut failing = self.flushing.lock().await;
        let batch = self.pending.take();
        if batch.is_empty() {
            return Ok(());
        }
        let written = match &self.sink {
            Sink::Memory(history) => {
                let evicted = lock(history).merge(batch, now);
                self.evicted.fetch_add(evicted, Ordering::Relaxed);
                Ok(())
            }
            #[cfg(feature = "redis")]
            Sink::Redis(redis, per_hour) => redis::write(redis, batch, *per_hour)
                .await
                .map(|dropped| self.pending.count_dropped(dropped)),
        };
        match written {
            Ok(()) => {
                if std::mem::take(&mut *failing) {
                    tracing::info!("usage statistics are written to Redis again");
                }
                Ok(())
            }
            Err((unwritten, reason)) => {
                self.pending
                    .put_back(unwritten, now.saturating_sub(HOURS_KEPT - 1));
                self.flush_errors.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut *failing, true) {
                    tracing::warn!(
                        error = %reason,
                        "usage statistics not written to Redis; kept and tried again every second"
                    );
                }
                Err(UsageError::Redis { reason })
            }
        }
    }

    /// Reads the clock into the hour requests are counted in; returns it.
    fn tick(&self) -> Hour {
        let now = calendar::current_hour();
        self.hour.store(now, Ordering::Relaxed);
        now
    }

    async fn client(&self, client: KeyRef<'_>) -> Result<ClientUsage, UsageError> {
        self.flush().await?;
        let now = self.tick();
        match &self.sink {
            Sink::Memory(history) => Ok(lock(history).client(client, now)),
            #[cfg(feature = "redis")]
            Sink::Redis(redis, per_hour) => redis::client(redis, client, now, *per_hour).await,
        }
    }

    async fn summary(&self, top: usize) -> Result<UsageSummary, UsageError> {
        self.flush().await?;
        let now = self.tick();
        match &self.sink {
            Sink::Memory(history) => Ok(lock(history).summary(top, now)),
            #[cfg(feature = "redis")]
            Sink::Redis(redis, _) => redis::summary(redis, top, now).await,
        }
    }

    pub(crate) fn counts(&self) -> UsageCounts {
        let kept = match &self.sink {
            Sink::Memory(history) => lock(history).len(),
            #[cfg(feature = "redis")]
            Sink::Redis(..) => 0,
        };
        UsageCounts {
            clients: self.pending.held() + kept,
            dropped: self.pending.dropped(),
            evicted: self.evicted.load(Ordering::Relaxed),
            flush_errors: self.flush_errors.load(Ordering::Relaxed),
        }
    }
}

fn lock(history: &Mutex<History>) -> std::sync::MutexGuard<'_, History> {
    history.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Flushes every second until the recorder is dropped.
fn spawn_flusher(usage: Weak<Usage>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(FLUSH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(usage) = usage.upgrade() else {
                break;
            };
            // A failure is counted, logged once per outage, and tried again next time.
            let _ = usage.flush().await;
        }
    });
}

impl Limiter {
    /// `client`'s calls over the last 24 hours (per hour, and per hour and rule) and the
    /// last 30 days (per day), allowed and denied, UTC; only periods with calls are listed.
    /// Every counted decision counts (a [`check`](Self::check), the layer's requests, and a
    /// [`wait`](Self::wait)'s every try), unlimited rules included; peeks do not.
    ///
    /// This instance's counts are flushed first, so they are there at once; with Redis,
    /// other instances' counts are there within a second of being made. `Err` when usage is
    /// not recorded ([`record_usage`](crate::LimiterBuilder::record_usage)), or when Redis
    /// cannot take the flush or answer.
    ///
    /// ```
    /// use tollgate::{ClientKey, Limiter, Query, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "2/hour"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).record_usage(true).build().await?;
    /// let ann = ClientKey::id("ann");
    /// for _ in 0..3 {
    ///     limiter.check(Query::new(&ann)).await?;
    /// }
    /// limiter.peek(Query::new(&ann)).await?; // not counted
    /// let usage = limiter.usage(&ann).await?;
    /// let this_hour = usage.hours.values().next().unwrap();
    /// assert_eq!((this_hour.allowed, this_hour.denied), (2, 1));
    /// assert_eq!(usage.days.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn usage(&self, client: &ClientKey) -> Result<ClientUsage, UsageError> {
        let usage = self.core().usage().ok_or(UsageError::NotRecorded)?;
        let client = client.as_ref().normalized(self.core().ipv6_prefix_len());
        usage.client(client).await
    }

    /// Every client's calls over the last 24 hours: in all, per rule and per hour; and the
    /// `top` clients most refused over them. As fresh as [`usage`](Self::usage). The
    /// ranking reads every client refused in the last 24 hours, so its cost grows with
    /// them.
    ///
    /// ```
    /// use tollgate::{ClientKey, Limiter, Query, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).record_usage(true).build().await?;
    /// let bo = ClientKey::id("bo");
    /// limiter.check(Query::new(&bo)).await?;
    /// limiter.check(Query::new(&bo)).await?;
    /// let summary = limiter.usage_summary(10).await?;
    /// assert_eq!((summary.allowed, summary.denied), (1, 1));
    /// assert_eq!(summary.most_limited[0].client, "id:bo");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn usage_summary(&self, top: usize) -> Result<UsageSummary, UsageError> {
        let usage = self.core().usage().ok_or(UsageError::NotRecorded)?;
        usage.summary(top).await
    }

    /// Writes the usage counted by this instance now, rather than at the next flush (every
    /// second), e.g. before shutting down. What cannot be written is kept for the next
    /// flush.
    pub async fn flush_usage(&self) -> Result<(), UsageError> {
        let usage = self.core().usage().ok_or(UsageError::NotRecorded)?;
        usage.flush().await
    }
}
