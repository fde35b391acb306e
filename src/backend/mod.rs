//! The store seam: where a limiter keeps what it decides with. A [`Store`] decides requests
//! over a rule's bands, forgets clients, and says what it has counted; it may also keep the
//! usage statistics ([`UsageStore`]), the runtime rule entries ([`RuntimeStore`]) and carry
//! live events between the instances sharing it ([`EventRelay`]). The
//! limiter's core talks to its store through these traits only.
//!
//! This crate brings two stores: in this process (the default), and Redis (a single Redis
//! or a Redis Cluster, with the builder's `redis_url` or `redis_cluster`, feature `redis`).
//! Any other is given to
//! [`LimiterBuilder::store`](crate::LimiterBuilder::store). Every store gives the same
//! [`Decision`] for the same sequence of requests; `tests/limiter/stores/` holds the behaviour
//! every store passes, and `docs/stores.md` says how to write one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::Decision;
use crate::decision::{BandStatus, DecidedBy};
use crate::key::{ClientKey, KeyRef};
use crate::policy::OnRedisError;
use crate::rules::Limit;
use breaker::BreakerState;

pub(crate) mod breaker;
pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;
mod relay;
mod reservation;
mod runtime;
pub(crate) mod table;
pub(crate) mod usage;

pub use memory::BandStates;
pub use relay::{EventRelay, Heard, MAX_HEARD, MAX_MESSAGE_BYTES};
pub use reservation::{ReservationKey, Settlement};
pub use runtime::{EntryChange, EntryNews, Kept, News, RuntimeStore, StoredEntries};
pub use usage::{ClientCalls, DAYS_READ, HOURS_READ, HourCalls, RuleCalls, UsageBatch, UsageStore};

/// What a store's asynchronous operations return: a boxed future, so that the traits can
/// be used as `dyn` objects. Decisions, which must not allocate in process, return an
/// [`Answer`] instead.
///
/// # Example
///
/// ```
/// use tollgate::backend::StoreFuture;
///
/// fn answer(value: u64) -> StoreFuture<'static, u64> {
///     Box::pin(async move { value })
/// }
/// # futures::executor::block_on(async {
/// assert_eq!(answer(7).await, 7);
/// # });
/// ```
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One rule of the rules in force, as a store keys its state: the rule's identity (stable
/// across reloads and instances: what a shared store's keys use), its state id (a small
/// number, stable while the identity is in force in this process: what an in-process table
/// keys by), and the generation of the rules it belongs to (what a store remembers under
/// older rules is not used for it).
///
/// # Example
///
/// ```
/// use tollgate::backend::{Client, RuleSlot};
///
/// /// Where a shared store keeps one client's bands under one rule.
/// fn key(rule: &RuleSlot, client: Client<'_>) -> String {
///     format!("myapp:{}:{client}", rule.id())
/// }
/// # let _ = key;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSlot {
    pub(crate) id: Arc<str>,
    pub(crate) state: u32,
    pub(crate) generation: u64,
}

impl RuleSlot {
    /// The rule's identity (`default`, `/api/data@GET`, ...).
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// The rule's state id in this process.
    pub fn state(&self) -> u32 {
        self.state
    }

    /// The generation of the rules in force it belongs to; every install adds one.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// The client a decision is for, borrowed from the request: a known client costs no
/// allocation. Written (with [`Display`](fmt::Display)) as its key is written everywhere:
/// `id:user:123`, `ip:10.0.0.1`, `ip:2001:db8::/64`, `unknown`.
///
/// # Example
///
/// ```
/// use tollgate::ClientKey;
/// use tollgate::backend::Client;
///
/// fn name(client: Client<'_>) -> String {
///     client.to_string()
/// }
/// let key = ClientKey::id("user:123");
/// assert_eq!(Client::from(&key).to_key(), key);
/// assert_eq!(name(Client::from(&key)), "id:user:123");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client<'a>(pub(crate) KeyRef<'a>);

impl Client<'_> {
    /// The client's key, owned: to keep it.
    pub fn to_key(self) -> ClientKey {
        self.0.to_owned()
    }
}

impl<'a> From<&'a ClientKey> for Client<'a> {
    fn from(key: &'a ClientKey) -> Self {
        Client(key.as_ref())
    }
}

impl fmt::Display for Client<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether a decision takes what it admits, or only looks.
///
/// # Example
///
/// ```
/// use tollgate::backend::Mode;
///
/// assert_ne!(Mode::Take, Mode::Peek);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Admit and take the cost from every band, or refuse and take nothing.
    Take,
    /// Say what taking would do, and take nothing: the bands are reported as they are now.
    Peek,
}

/// What becomes of one request on a limited rule.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tollgate::{DecidedBy, Decision};
/// use tollgate::backend::Outcome;
///
/// let admitted = Decision::allowed(10, 9, SystemTime::now());
/// let outcome = Outcome::Decided(admitted, DecidedBy::Memory);
/// assert!(matches!(outcome, Outcome::Decided(d, _) if d.allowed));
/// let down = Outcome::Unavailable { retry_after: Duration::from_millis(500) };
/// assert_ne!(down, Outcome::PassThrough);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The bands decided: in the store, or from what the store remembers of it.
    Decided(Decision, DecidedBy),
    /// A [peek](Mode::Peek)'s answer, with every band of the limit as it is now (in the
    /// limit's order), which [`Verdict::bands`](crate::Verdict::bands) lists. A store that
    /// cannot tell each band answers a peek [`Decided`](Outcome::Decided): the verdict then
    /// lists the band reported.
    Peeked {
        /// What a take would have answered.
        decision: Decision,
        /// Who answered.
        decided_by: DecidedBy,
        /// Every band, as it is now.
        bands: Box<[BandStatus]>,
    },
    /// A [reservation](Store::reserve) admitted, and held open by the store until it is
    /// settled, released or expires.
    Reserved(Decision, DecidedBy),
    /// The store could not decide and its failure policy lets the request pass, with no
    /// rate limit headers.
    PassThrough,
    /// The store could not decide and its failure policy refuses: until about
    /// `retry_after`.
    Unavailable {
        /// When to ask again.
        retry_after: Duration,
    },
}

/// An outcome still on its way from a store.
pub type PendingOutcome = Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>;

/// A store's answer to a decision: at once (in process, with nothing allocated), or later
/// (a round trip away).
///
/// # Example
///
/// ```
/// use tollgate::backend::{Answer, Outcome};
///
/// let later = Answer::Later(Box::pin(async { Outcome::PassThrough }));
/// assert!(matches!(later, Answer::Later(_)));
/// assert!(matches!(Answer::Now(Outcome::PassThrough), Answer::Now(_)));
/// ```
pub enum Answer {
    /// The outcome, decided already.
    Now(Outcome),
    /// The outcome, when it comes.
    Later(PendingOutcome),
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Now(outcome) => f.debug_tuple("Now").field(outcome).finish(),
            Answer::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// What a store has counted, for [`Stats`](crate::Stats): zero for what it does not do.
///
/// # Example
///
/// ```
/// use tollgate::backend::StoreStats;
///
/// let mut stats = StoreStats::default();
/// stats.tracked_buckets = 3;
/// assert_eq!((stats.breaker, stats.errors, stats.tracked_buckets), (None, 0, 3));
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// The circuit breaker in front of a store reached over the network (the worst of its
    /// nodes'); `None` for a store with nothing to lose (in process).
    pub breaker: Option<BreakerState>,
    /// Requests decided by the failure policy because the store could not decide.
    pub fallback: u64,
    /// Calls to the store that failed or missed their deadline.
    pub errors: u64,
    /// Requests refused from refusals the store gave earlier, without asking it again.
    pub cached_refusals: u64,
    /// Requests admitted from a lease the store handed out, without asking it.
    pub leased: u64,
    /// Buckets held in this process (the store's own, or its local fallback's).
    pub tracked_buckets: usize,
    /// Live buckets forgotten to stay within the most kept in this process.
    pub evicted_buckets: u64,
}

/// What a store could not do, in its words: `store` names it in messages (`Redis`), and
/// `reason` says what went wrong.
///
/// # Example
///
/// ```
/// use tollgate::backend::StoreError;
///
/// let err = StoreError::new("Postgres", "connection refused");
/// assert_eq!((err.store(), err.reason()), ("Postgres", "connection refused"));
/// assert_eq!(err.to_string(), "connection refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct StoreError {
    store: &'static str,
    reason: String,
}

impl StoreError {
    /// `store` could not do something, for `reason`.
    pub fn new(store: &'static str, reason: impl Into<String>) -> Self {
        Self {
            store,
            reason: reason.into(),
        }
    }

    /// The store, as messages name it.
    pub fn store(&self) -> &'static str {
        self.store
    }

    /// What went wrong.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Where a [`Limiter`](crate::Limiter) keeps what it decides with: every rule's bands per
/// client, and, if the store keeps them too, the usage statistics and the runtime rule
/// entries. Give one to [`LimiterBuilder::store`](crate::LimiterBuilder::store).
///
/// A decision must be atomic over every band of its rule: admitted by all of them and taking
/// its cost from all, or refused and taking nothing. [`BandStates`] does that arithmetic for
/// a store that keeps band states and decides in this process; a store that decides
/// elsewhere (Redis decides in a Lua script) does its own.
///
/// Only [`name`](Self::name), [`decide`](Self::decide) and [`reset`](Self::reset) must be
/// written; the rest has defaults for a store that keeps nothing else: no usage (the
/// limiter keeps it in this process), no runtime entries (the limiter keeps them in its
/// [state file](crate::LimiterBuilder::runtime_state_file), if it has one), no events
/// carried to other instances, nothing counted.
///
/// # Example
///
/// A store in a `Mutex<HashMap>`, used by a limiter:
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
/// use std::time::SystemTime;
/// use tollgate::backend::{Answer, BandStates, Client, Mode, Outcome, RuleSlot, Store, StoreError, StoreFuture};
/// use tollgate::{ClientKey, DecidedBy, Limit, Limiter, Query, Rules};
///
/// #[derive(Default)]
/// struct MapStore(Mutex<HashMap<(Arc<str>, String), BandStates>>);
///
/// impl Store for MapStore {
///     fn name(&self) -> &'static str {
///         "map"
///     }
///
///     fn decide(&self, rule: &RuleSlot, limit: &Limit, cost: u32, client: Client<'_>, mode: Mode) -> Answer {
///         let mut map = self.0.lock().unwrap();
///         let bands = map.entry((rule.id().clone(), client.to_string())).or_default();
///         let decision = bands.decide(limit, cost, mode, SystemTime::now());
///         Answer::Now(Outcome::Decided(decision, DecidedBy::Memory))
///     }
///
///     fn reset<'a>(&'a self, rules: &'a [RuleSlot], client: Client<'a>) -> StoreFuture<'a, Result<(), StoreError>> {
///         let mut map = self.0.lock().unwrap();
///         for rule in rules {
///             map.remove(&(rule.id().clone(), client.to_string()));
///         }
///         Box::pin(async { Ok(()) })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).store(MapStore::default()).build().await?;
/// assert_eq!(limiter.backend_name(), "map");
/// let ann = ClientKey::id("ann");
/// assert!(limiter.check(Query::new(&ann)).await?.allowed());
/// assert!(!limiter.check(Query::new(&ann)).await?.allowed());
/// limiter.reset(&ann).await?;
/// assert!(limiter.check(Query::new(&ann)).await?.allowed());
/// # Ok(())
/// # }
/// ```
pub trait Store: Send + Sync + 'static {
    /// What [`Limiter::backend_name`](crate::Limiter::backend_name) and
    /// [`Stats::backend`](crate::Stats::backend) say: `"memory"`, `"redis"`, ...
    fn name(&self) -> &'static str;

    /// Decides a request of `client` under `rule`, whose limit is `limit`, at `cost` (from
    /// 1 to the limit's smallest capacity): takes `cost` from every band and admits it, or
    /// refuses it and takes nothing; a [peek](Mode::Peek) takes nothing either way and
    /// reports the bands as they are. Answer [at once](Answer::Now) when the answer is at
    /// hand: the request path then allocates nothing.
    fn decide(
        &self,
        rule: &RuleSlot,
        limit: &Limit,
        cost: u32,
        client: Client<'_>,
        mode: Mode,
    ) -> Answer;

    /// Forgets `client`'s state under `rules`: its next request finds full bands. A shared
    /// store tells the other instances to forget what they remember of it.
    fn reset<'a>(
        &'a self,
        rules: &'a [RuleSlot],
        client: Client<'a>,
    ) -> StoreFuture<'a, Result<(), StoreError>>;

    /// New rules are in force, with these slots: the state of rules that are gone may be
    /// dropped, and what was remembered under older rules no longer counts.
    fn rules_changed(&self, rules: &[RuleSlot]) {
        let _ = rules;
    }

    /// One client's override changed, and nothing else: no rule's state is to be dropped,
    /// but what was remembered under the older rules no longer counts.
    fn client_changed(&self, rules: &[RuleSlot]) {
        let _ = rules;
    }

    /// Drops what no longer matters (bands full again); called every
    /// [`memory_cleanup_interval`](crate::LimiterBuilder::memory_cleanup_interval).
    fn sweep(&self) {}

    /// What the store has counted, and its circuit breaker.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }

    /// Each node's circuit breaker, by `host:port`, for metrics; none for a store in
    /// process.
    fn breakers(&self) -> Vec<(String, BreakerState)> {
        Vec::new()
    }

    /// What decides when the store cannot; `None` for a store that always can.
    fn failure_policy(&self) -> Option<OnRedisError> {
        None
    }

    /// Where usage statistics are kept when the store keeps them (shared by every
    /// instance); `None`: the limiter keeps them in this process.
    fn usage(&self) -> Option<Arc<dyn UsageStore>> {
        None
    }

    /// Where runtime rule entries are kept when the store keeps them (shared by every
    /// instance); `None`: the limiter keeps them in its state file, if it has one.
    fn runtime(&self) -> Option<Arc<dyn RuntimeStore>> {
        None
    }

    /// Where live events travel between the instances sharing the store, when it carries
    /// them; `None`: each instance's subscribers see its own decisions only.
    fn events(&self) -> Option<Arc<dyn EventRelay>> {
        None
    }

    /// Decides a request as [`decide`](Self::decide) takes one, at `cost` (an estimate),
    /// and when it is admitted holds `reservation` open at that cost for `lasting`, to be
    /// [settled](Self::settle) with what was used: answers
    /// [`Outcome::Reserved`] then, and any other outcome when nothing is held (a refusal, a
    /// failure policy's answer). An open reservation that expires, or is
    /// [released](Self::release), stays at its estimate. `None`: the store keeps no
    /// reservations (the default).
    fn reserve(
        &self,
        limit: &Limit,
        cost: u32,
        reservation: ReservationKey<'_>,
        lasting: Duration,
    ) -> Option<Answer> {
        let _ = (limit, cost, reservation, lasting);
        None
    }

    /// Settles an open reservation with `used` units, once, atomically: takes what was used
    /// beyond the estimate from every band of `limit` whether or not it fits (a debt the
    /// bands pay back before they admit again, see
    /// [`BandStates::settle`]), or gives back what was not. The default settles nothing:
    /// such a store keeps no reservations.
    fn settle<'a>(
        &'a self,
        limit: &'a Limit,
        reservation: ReservationKey<'a>,
        used: u64,
    ) -> StoreFuture<'a, Result<Settlement, StoreError>> {
        let _ = (limit, reservation, used);
        Box::pin(async { Ok(Settlement::Unknown) })
    }

    /// Lets an open reservation go unsettled: it stays at its estimate, and settling it later
    /// finds it [unknown](Settlement::Unknown).
    fn release(&self, reservation: ReservationKey<'_>) {
        let _ = reservation;
    }
}

/// The in-process store, holding at most `max_tracked_buckets` buckets.
pub(crate) fn in_process(max_tracked_buckets: usize) -> Arc<dyn Store> {
    Arc::new(memory::MemoryBackend::new(max_tracked_buckets, 1))
}

/// The most buckets kept in this process by default.
pub(crate) const DEFAULT_MAX_TRACKED_BUCKETS: usize = memory::DEFAULT_MAX_KEYS;

/// What every store this crate brings is opened with: the builder's settings that are not
/// any one store's.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Opening {
    /// The most buckets kept in this process (a local fallback's).
    pub(crate) max_tracked_buckets: usize,
    /// What decides when the store cannot.
    pub(crate) on_error: OnRedisError,
    /// How many instances share the store: a local fallback divides every band by it.
    pub(crate) local_fallback_instances: u32,
}

/// The settings of the stores this crate brings, set by the builder methods each store adds
/// (see `redis::builder`). A store brought here registers with a field and a line of
/// [`open`](Self::open).
#[derive(Debug, Default)]
pub(crate) struct Options {
    #[cfg(feature = "redis")]
    pub(crate) redis: redis::Options,
}

impl Options {
    /// The store these settings ask for, opened; `None` when they ask for none.
    pub(crate) async fn open(
        self,
        opening: &Opening,
    ) -> Option<Result<Arc<dyn Store>, StoreError>> {
        #[cfg(feature = "redis")]
        if let Some(opened) = self.redis.open(opening).await {
            return Some(opened);
        }
        let _ = opening;
        None
    }
}
