//! Usage statistics in a store: what a [`UsageStore`] is handed every second and answers,
//! and the periods every store reads (the last [`HOURS_READ`] hours and [`DAYS_READ`] days,
//! UTC; see [`calendar`]).

pub(crate) mod calendar;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Client, StoreError, StoreFuture};
use crate::key::ClientKey;
use calendar::Hour;

/// Where a store keeps usage statistics, shared by every instance that uses it: returned by
/// [`Store::usage`](super::Store::usage). The limiter counts calls in process and hands
/// them over every second ([`write`](Self::write)); reads come after this instance's own
/// flush.
///
/// # Example
///
/// A store that keeps only the totals, per hour:
///
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::Mutex;
/// use tollgate::backend::{Client, StoreError, StoreFuture, UsageBatch, UsageStore};
/// use tollgate::{Calls, ClientUsage, UsageSummary};
///
/// #[derive(Default)]
/// struct Totals(Mutex<BTreeMap<u64, (u64, u64)>>);
///
/// impl UsageStore for Totals {
///     fn name(&self) -> &'static str {
///         "the totals"
///     }
///
///     fn write(&self, batch: UsageBatch, _: u64) -> StoreFuture<'_, Result<u64, (UsageBatch, StoreError)>> {
///         let mut totals = self.0.lock().unwrap();
///         for (hour, rules) in &batch.global {
///             let total = totals.entry(*hour).or_default();
///             for rule in rules {
///                 total.0 += rule.calls.allowed;
///                 total.1 += rule.calls.denied;
///             }
///         }
///         // Every client's calls counted in the totals only.
///         let dropped = batch.clients.iter().map(|client| client.total()).sum();
///         Box::pin(async move { Ok(dropped) })
///     }
///
///     fn client<'a>(&'a self, client: Client<'a>, _: u64, _: u64) -> StoreFuture<'a, Result<ClientUsage, StoreError>> {
///         Box::pin(async move { Err(StoreError::new("the totals", format!("no counts of {client}"))) })
///     }
///
///     fn summary(&self, _: usize, _: u64) -> StoreFuture<'_, Result<UsageSummary, StoreError>> {
///         let (allowed, denied) = self.0.lock().unwrap().values().fold((0, 0), |(a, d), t| (a + t.0, d + t.1));
///         let mut summary = UsageSummary::default();
///         (summary.allowed, summary.denied) = (allowed, denied);
///         Box::pin(async move { Ok(summary) })
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let totals = Totals::default();
/// assert_eq!(totals.write(UsageBatch::default(), 100).await.unwrap(), 0);
/// assert_eq!(totals.summary(10, 0).await.unwrap().allowed, 0);
/// # });
/// ```
pub trait UsageStore: Send + Sync + 'static {
    /// The store, as messages name it (`Redis`).
    fn name(&self) -> &'static str;

    /// Adds `batch` to what is stored, each UTC hour counting at most `clients_per_hour`
    /// clients per client (the calls of the others stay in the hour's totals). Returns how
    /// many calls were counted in the totals only; on failure, what was not written (kept
    /// for the next flush) and why.
    fn write(
        &self,
        batch: UsageBatch,
        clients_per_hour: u64,
    ) -> StoreFuture<'_, Result<u64, (UsageBatch, StoreError)>>;

    /// `client`'s calls over the [`HOURS_READ`] hours up to `hour` (hours since the Unix
    /// epoch, UTC) and the [`DAYS_READ`] days up to its day, and the hours in which it was
    /// not counted per client (the hour counted `clients_per_hour` others).
    fn client<'a>(
        &'a self,
        client: Client<'a>,
        hour: u64,
        clients_per_hour: u64,
    ) -> StoreFuture<'a, Result<ClientUsage, StoreError>>;

    /// Every client's calls over the [`HOURS_READ`] hours up to `hour`, and the `top`
    /// clients most refused over them.
    fn summary(&self, top: usize, hour: u64) -> StoreFuture<'_, Result<UsageSummary, StoreError>>;
}

/// Hours read: the current one and the 23 before.
pub const HOURS_READ: u64 = 24;
/// Days read: today and the 29 before.
pub const DAYS_READ: u64 = 30;

/// The `top` of `(client, denied)`, most refused first, then by client.
pub(crate) fn most_limited(
    limited: impl Iterator<Item = (String, u64)>,
    top: usize,
) -> Vec<LimitedClient> {
    let mut limited: Vec<LimitedClient> = limited
        .map(|(client, denied)| LimitedClient { client, denied })
        .collect();
    limited.sort_unstable_by(|a, b| {
        b.denied
            .cmp(&a.denied)
            .then_with(|| a.client.cmp(&b.client))
    });
    limited.truncate(top);
    limited
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

/// One client's calls: see [`Limiter::usage`](crate::Limiter::usage). Periods are UTC, named `YYYY-MM-DD-HH`
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
    /// ([`Limiter::usage_summary`](crate::Limiter::usage_summary)). Always empty in memory, where the bound forgets whole
    /// clients instead.
    pub untracked_hours: BTreeSet<String>,
}

impl ClientUsage {
    pub(crate) fn new(client: String) -> Self {
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

/// Every client's calls over the last 24 hours: see [`Limiter::usage_summary`](crate::Limiter::usage_summary).
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

/// Calls under one rule, in a [`UsageBatch`].
///
/// # Example
///
/// ```
/// use tollgate::backend::UsageBatch;
///
/// let batch = UsageBatch::default();
/// let per_rule: u64 = batch.global.iter().flat_map(|(_, rules)| rules).map(|r| r.calls.total()).sum();
/// assert_eq!(per_rule, 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuleCalls {
    /// The rule's identity.
    pub rule: Arc<str>,
    /// Its calls.
    pub calls: Calls,
}

/// Adds `calls` under `rule` to `rules`. Rules are few and compared by pointer first: the
/// rules in force share one `Arc` per identity.
pub(crate) fn add_rule(rules: &mut Vec<RuleCalls>, rule: &Arc<str>, calls: Calls) {
    match rules
        .iter_mut()
        .find(|r| Arc::ptr_eq(&r.rule, rule) || r.rule == *rule)
    {
        Some(counted) => counted.calls.add(calls),
        None => rules.push(RuleCalls {
            rule: Arc::clone(rule),
            calls,
        }),
    }
}

/// One client's calls in one hour, in a [`UsageBatch`].
///
/// # Example
///
/// ```
/// use tollgate::backend::UsageBatch;
///
/// let batch = UsageBatch::default();
/// let hours = batch.clients.iter().flat_map(|client| &client.hours);
/// assert_eq!(hours.map(|hour| hour.calls.denied).sum::<u64>(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HourCalls {
    /// The UTC hour, in hours since the Unix epoch.
    pub hour: u64,
    /// Every call of the client in the hour.
    pub calls: Calls,
    /// Its calls per rule.
    pub rules: Vec<RuleCalls>,
    /// Refusals not yet added to the ranking of the most-limited clients. Equal to
    /// `calls.denied` when counted; a write to Redis that stored the calls but not the
    /// ranking (or the other way round) puts back only what was not stored.
    pub unranked: u64,
}

impl HourCalls {
    pub(crate) fn new(hour: Hour) -> Self {
        Self {
            hour,
            calls: Calls::default(),
            rules: Vec::new(),
            unranked: 0,
        }
    }

    pub(crate) fn add(&mut self, other: &HourCalls) {
        self.calls.add(other.calls);
        for rule in &other.rules {
            add_rule(&mut self.rules, &rule.rule, rule.calls);
        }
        self.unranked += other.unranked;
    }
}

/// One client's calls in a [`UsageBatch`], per hour (one hour, unless the hour changed
/// since the last flush).
///
/// # Example
///
/// ```
/// use tollgate::backend::UsageBatch;
///
/// let batch = UsageBatch::default();
/// assert_eq!(batch.clients.iter().map(|client| client.total()).sum::<u64>(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientCalls {
    /// The client.
    pub client: ClientKey,
    /// Its calls, per hour.
    pub hours: Vec<HourCalls>,
}

impl ClientCalls {
    /// The entry of `hour`, made if there is none; the current hour is the last one.
    pub(crate) fn hour(&mut self, hour: Hour) -> &mut HourCalls {
        let at = match self.hours.iter().rposition(|h| h.hour == hour) {
            Some(at) => at,
            None => {
                self.hours.push(HourCalls::new(hour));
                self.hours.len() - 1
            }
        };
        &mut self.hours[at]
    }

    pub(crate) fn add(&mut self, other: &ClientCalls) {
        for hour in &other.hours {
            self.hour(hour.hour).add(hour);
        }
    }

    /// Every call of the client, in every hour.
    pub fn total(&self) -> u64 {
        self.hours.iter().map(|h| h.calls.total()).sum()
    }
}

/// What one flush of usage statistics writes: the calls counted in this process since the
/// last flush, per client (for the clients held within the bounds) and per hour and rule
/// (every client's).
///
/// # Example
///
/// ```
/// use tollgate::backend::UsageBatch;
///
/// assert!(UsageBatch::default().is_empty());
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageBatch {
    /// Each client's calls.
    pub clients: Vec<ClientCalls>,
    /// Every client's calls per UTC hour (hours since the Unix epoch) and rule, those of
    /// clients over the bound included.
    pub global: Vec<(u64, Vec<RuleCalls>)>,
}

impl UsageBatch {
    /// Whether it holds no call.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.global.is_empty()
    }
}
