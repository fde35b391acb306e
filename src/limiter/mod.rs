//! [`Limiter`]: the one place where requests are decided. The HTTP layer, and any other
//! front, turns its input into a [`Query`] and the [`Verdict`] into its output.

mod builder;
mod checking;
mod descriptors;
mod error;
mod events;
mod fleet;
mod installed;
#[cfg(feature = "metrics")]
mod metrics;
mod query;
mod reload;
mod reservation;
mod runtime;
mod stats;
mod ticket;
mod usage;
mod verdict;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::backend::{Answer, Client, Mode, Outcome, ReservationKey, RuleSlot, Settlement, Store};
use crate::decision::DecidedBy;
use crate::header_style::Rendering;
use crate::key::{ClientKey, KeyRef};
use crate::rules::{Limit, Rule, Rules, RulesError};
use installed::{Installed, StateIds};
use query::Choice;
use reload::{ReloadState, RulesFile, Trigger, off_runtime};
use stats::{Count, Counters};

pub use builder::{LimiterBuilder, host_name};
pub use checking::Checking;
pub use descriptors::DescriptorCheck;
pub use error::{CheckError, ResetError, RuntimeError};
pub use events::{
    DecisionEvent, EVENT_BUFFER, Event, EventSummary, Events, MAX_DENIED_EVENTS_PER_SECOND,
    MAX_RELAYED_EVENTS_PER_SECOND, PublishedEvent, RuleChange, RuleCounts,
};
pub use query::Query;
pub use reservation::{
    DEFAULT_RESERVATION_TIMEOUT, MAX_OWED_CAPACITIES, Reservation, Reserved, Reserving,
    SettleError, Settled,
};
pub use runtime::{
    DEFAULT_MAX_RUNTIME_ENTRIES, DEFAULT_MAX_STATE_FILE_BYTES, Origin, RuleEntry, RuntimeEntry,
};
pub use stats::Stats;
pub use usage::{
    Calls, ClientUsage, DEFAULT_USAGE_CLIENTS_PER_HOUR, DEFAULT_USAGE_MAX_BYTES,
    DEFAULT_USAGE_MAX_CLIENTS, LimitedClient, UsageError, UsageSummary,
};
pub use verdict::Verdict;

/// Decides whether a client's request may go on, under the rules, in memory or in Redis.
///
/// Cheap to clone: clones share the rules and the state. Build one with
/// [`Limiter::builder`], put it behind the HTTP layer
/// ([`RateLimitLayer::new`](crate::RateLimitLayer::new)), and call it from your own code too:
/// both count against the same limits.
///
/// | operation | what it does |
/// | --- | --- |
/// | [`check`](Self::check) | decides one request: admits it and takes its cost, or refuses it |
/// | [`peek`](Self::peek) | the same answer without taking anything |
/// | [`wait`](Self::wait) | waits until admitted, up to a maximum wait |
/// | [`reset`](Self::reset), [`reset_rule`](Self::reset_rule) | forgets a client's state, here and on every instance sharing the Redis |
/// | [`rules`](Self::rules), [`reload`](Self::reload), [`set_rules`](Self::set_rules) | the rules in force, and changing them |
/// | [`set_client_override`](Self::set_client_override), [`set_route`](Self::set_route), their `remove_`, [`rule_entries`](Self::rule_entries), [`runtime_entries`](Self::runtime_entries) | rule changes made while running, kept and shared |
/// | [`stats`](Self::stats) | what it has counted |
/// | [`usage`](Self::usage), [`usage_summary`](Self::usage_summary), [`flush_usage`](Self::flush_usage) | usage statistics, when [recorded](LimiterBuilder::record_usage): calls per client, hour, day and rule |
///
/// # Example
///
/// ```
/// use tollgate::{ClientKey, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "2/hour"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
///
/// let user = ClientKey::id("user:123");
/// assert!(limiter.check(Query::new(&user)).await?.allowed());
/// let status = limiter.peek(Query::new(&user)).await?;
/// assert_eq!(status.decision().unwrap().remaining, 1);
/// assert!(limiter.check(Query::new(&user)).await?.allowed());
/// assert!(!limiter.check(Query::new(&user)).await?.allowed());
///
/// limiter.reset(&user).await?;
/// assert!(limiter.check(Query::new(&user)).await?.allowed());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Limiter {
    core: Arc<Core>,
}

/// What every clone of a limiter shares.
pub(crate) struct Core {
    /// The rules in force; swapped whole by a reload.
    installed: ArcSwap<Installed>,
    state_ids: StateIds,
    rules_file: Option<RulesFile>,
    reload: Mutex<ReloadState>,
    /// Runtime rule entries, and the layers every install goes through.
    runtime: runtime::Runtime,
    /// Where the state is kept: the one store, behind its trait.
    store: Arc<dyn Store>,
    counters: Counters,
    /// Usage statistics, when recorded.
    usage: Option<Arc<usage::Usage>>,
    /// IPv6 clients are keyed by their network of this many bits.
    ipv6_prefix_len: u8,
    /// How verdicts are rendered when the rules do not say.
    rendering: Rendering,
    /// Live events, for subscribers.
    events: Arc<events::Hub>,
    /// How long a reservation stays open before it settles at its estimate.
    reservation_timeout: Duration,
}

impl Limiter {
    /// Starts configuring a limiter.
    pub fn builder() -> LimiterBuilder {
        LimiterBuilder::default()
    }

    /// Decides one request: admits it and takes its cost from every band of its rule, or
    /// refuses it and takes nothing. Counted in [`stats`](Self::stats).
    #[inline]
    pub fn check(&self, query: Query<'_>) -> Checking {
        self.core.check(query, Mode::Take)
    }

    /// What [`check`](Self::check) would answer now, taking nothing: whether a request of
    /// this cost would be admitted, and every band of the rule as it is
    /// ([`Verdict::bands`]: limit, period, remaining before any cost, reset), which a status
    /// page shows. Neither the state (in memory or in Redis) nor the request counters
    /// change. On Redis a peek always asks Redis, which holds every band (what this instance
    /// remembers, a refusal or a lease, is one band's; units leased to instances count as
    /// taken there), and is a call like any other: it counts toward the circuit breaker
    /// (and `errors` if it fails), and may be the breaker's probe.
    pub fn peek(&self, query: Query<'_>) -> Checking {
        self.core.check(query, Mode::Peek)
    }

    /// Waits until the request is admitted, for at most `max_wait`: decides it, and while it
    /// is refused, sleeps for as long as the refusal says (at least a millisecond) and asks
    /// again. Returns the refusal at once when waiting would take longer than what is left
    /// of `max_wait`; each decision may add its own time (a Redis round trip) to that.
    ///
    /// At most one admission is taken. Dropping the future while it sleeps takes nothing;
    /// dropping it while Redis decides is like dropping any request then (Redis may already
    /// have taken the cost).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{ClientKey, Limiter, Query, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"capacity": 1, "refill_rate": 20},
    ///     "routes": [{"path": "/export", "limit": "1/hour"}]}"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// let erin = ClientKey::id("erin");
    /// assert!(limiter.check(Query::new(&erin)).await?.allowed());
    /// // The next token comes in 50 ms: worth waiting for, up to a second.
    /// let admitted = limiter.wait(Query::new(&erin), Duration::from_secs(1)).await?;
    /// assert!(admitted.allowed());
    /// // The next export comes in an hour: not worth waiting for, up to a second; the
    /// // refusal comes back at once.
    /// let export = || Query::new(&erin).route("GET", "/export");
    /// assert!(limiter.check(export()).await?.allowed());
    /// let refused = limiter.wait(export(), Duration::from_secs(1)).await?;
    /// assert!(!refused.allowed());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait(&self, query: Query<'_>, max_wait: Duration) -> Result<Verdict, CheckError> {
        // No deadline for a wait too long to be one (`Duration::MAX`: until admitted).
        let deadline = tokio::time::Instant::now().checked_add(max_wait);
        loop {
            let verdict = self.check(query).await?;
            let Some(retry_after) = verdict.retry_after() else {
                return Ok(verdict);
            };
            // A refusal with no wait (a failure policy with no cooldown) must not spin.
            let sleep = retry_after.max(Duration::from_millis(1));
            let now = tokio::time::Instant::now();
            if deadline
                .is_some_and(|deadline| now.checked_add(sleep).is_none_or(|end| end > deadline))
            {
                return Ok(verdict);
            }
            tokio::time::sleep(sleep).await;
        }
    }

    /// Forgets `client`'s state under every rule: its next request finds full bands. On
    /// Redis, the keys are deleted and every instance sharing the Redis forgets what it
    /// remembers of the client (refusals, leases, local fallback buckets), over Redis
    /// pub/sub.
    ///
    /// ```
    /// use tollgate::{ClientKey, Limiter, Query, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// let frank = ClientKey::id("frank");
    /// assert!(limiter.check(Query::new(&frank)).await?.allowed());
    /// assert!(!limiter.check(Query::new(&frank)).await?.allowed());
    /// limiter.reset(&frank).await?;
    /// assert!(limiter.check(Query::new(&frank)).await?.allowed());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reset(&self, client: &ClientKey) -> Result<(), ResetError> {
        let installed = self.core.installed.load_full();
        self.core.reset(&installed.slots, client).await
    }

    /// Forgets `client`'s state under the rule with identity `rule` only, as
    /// [`reset`](Self::reset) does for every rule.
    ///
    /// ```
    /// use tollgate::{ClientKey, Limiter, Query, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"},
    ///     "routes": [{"path": "/upload", "limit": "1/hour"}]}"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// let gina = ClientKey::id("gina");
    /// let upload = || Query::new(&gina).route("PUT", "/upload");
    /// assert!(limiter.check(upload()).await?.allowed());
    /// assert!(limiter.check(Query::new(&gina)).await?.allowed());
    /// limiter.reset_rule(&gina, "/upload").await?;
    /// assert!(limiter.check(upload()).await?.allowed());
    /// assert!(!limiter.check(Query::new(&gina)).await?.allowed(), "other rules keep their state");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reset_rule(&self, client: &ClientKey, rule: &str) -> Result<(), ResetError> {
        let installed = self.core.installed.load_full();
        let rule = installed
            .rules
            .find(rule)
            .ok_or_else(|| ResetError::UnknownRule { rule: rule.into() })?;
        let slot = installed.slot(rule);
        self.core.reset(std::slice::from_ref(slot), client).await
    }

    /// The rules in force now: the base rules (the file, or rules given to the builder or
    /// [`set_rules`](Self::set_rules)) with the runtime entries merged
    /// ([`set_client_override`](Self::set_client_override), [`set_route`](Self::set_route)).
    pub fn rules(&self) -> Arc<Rules> {
        Arc::clone(&self.core.installed.load().rules)
    }

    /// Reads the rules file again and, if it validates, puts it in force; otherwise the
    /// running rules stay and the error is returned (and shown by [`stats`](Self::stats)).
    /// `Ok(false)` when the limiter was built from [`Rules`] rather than a file, or when the
    /// file holds what is in force already (unless rules from
    /// [`set_rules`](Self::set_rules) are in force: then the file replaces them). The file
    /// watcher and SIGHUP reload the same way. The file is read and validated on Tokio's
    /// blocking pool, so no runtime worker waits for it. The runtime entries are merged over
    /// the file's rules, as over any base rules.
    pub async fn reload(&self) -> Result<bool, RulesError> {
        let core = Arc::clone(&self.core);
        off_runtime(move || core.reload_file(Trigger::Reload)).await
    }

    /// Puts these rules in force, as a reload would; state survives for every rule whose
    /// identity is unchanged. They are the base rules: the runtime entries are merged over
    /// them (an entry that no longer fits is left out, and logged). With runtime entries,
    /// the merged rules are validated on the calling thread.
    ///
    /// On a limiter built with [`rules_file`](LimiterBuilder::rules_file), the last install
    /// wins: the next change to the file, SIGHUP or [`reload`](Self::reload) puts the file
    /// back, with a warning in the log. To keep rules set here, turn off
    /// [`watch_rules_file`](LimiterBuilder::watch_rules_file) and
    /// [`reload_on_sighup`](LimiterBuilder::reload_on_sighup).
    pub fn set_rules(&self, rules: Rules) {
        self.core.set_rules(rules);
    }

    /// `"memory"`, `"redis"`, or another store's [name](crate::backend::Store::name): where
    /// the state lives.
    pub fn backend_name(&self) -> &'static str {
        self.core.store.name()
    }

    /// What decides when the store cannot (for Redis: the rules file's `on_redis_error`,
    /// else the builder's); `None` for a store that always can (in process).
    pub fn on_redis_error(&self) -> Option<crate::OnRedisError> {
        self.core.store.failure_policy()
    }

    /// Counters and the circuit breaker's state, for metrics and health checks.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// Checks `query` at its cost, an estimate of what the request will use, and when it is
    /// admitted holds that cost as a reservation to settle with what was used
    /// ([`Reservation::settle`], or [`Limiter::settle`] with its id from any instance
    /// sharing the store): the difference is then taken from every band, or given back.
    /// What is used past the estimate is owed, not forgiven: the bands go below empty and
    /// the client is refused until their refill pays it back. A reservation left unsettled
    /// (dropped, or open past [`reservation_timeout`](LimiterBuilder::reservation_timeout))
    /// stays at its estimate. Counted as a check.
    ///
    /// See [`Reserved`] and [`Reservation`] for examples.
    pub fn reserve(&self, query: Query<'_>) -> Reserving {
        Reserving::new(self.core.check_as(query, Mode::Take, Hold::Always))
    }

    /// [`reserve`](Self::reserve) when the request's rule settles its cost from the response
    /// ([`Limit::settle_header`]), [`check`](Self::check) otherwise: what a front that sees
    /// the response asks. A plain rule's check costs nothing more than through `check`.
    ///
    /// ```
    /// use tollgate::{ClientKey, Limiter, Query, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{
    ///     "default": {"limit": "10/second"},
    ///     "rules": {"chat": {"limit": "30000/minute", "settle_header": "x-tokens-used"}}
    /// }"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// let eve = ClientKey::id("eve");
    /// let plain = limiter.check_or_reserve(Query::new(&eve)).await?;
    /// assert!(plain.reservation().is_none());
    /// let chat = limiter.check_or_reserve(Query::new(&eve).rule("chat").cost(1000)).await?;
    /// assert_eq!(chat.reservation().unwrap().estimate(), 1000);
    /// # Ok(())
    /// # }
    /// ```
    pub fn check_or_reserve(&self, query: Query<'_>) -> Reserving {
        Reserving::new(self.check_settling(query))
    }

    /// [`check_or_reserve`](Self::check_or_reserve) for the layer, whose verdict carries
    /// the reservation ([`Verdict::take_reservation`]): a plain check moves nothing more.
    #[inline]
    pub(crate) fn check_settling(&self, query: Query<'_>) -> Checking {
        self.core.check_as(query, Mode::Take, Hold::WhenSettled)
    }

    /// Settles the reservation `id` (from [`Reservation::id`] or
    /// [`Reservation::detach`]) with `used` units, on whichever instance sharing the store
    /// made it; once.
    pub async fn settle(&self, id: &str, used: u64) -> Result<Settled, SettleError> {
        match ticket::Ticket::parse(id) {
            Some(ticket) => self.settle_ticket(&ticket, used).await,
            None => Err(SettleError::Unknown),
        }
    }

    /// Settles the reservation `ticket` names.
    pub(crate) async fn settle_ticket(
        &self,
        ticket: &ticket::Ticket,
        used: u64,
    ) -> Result<Settled, SettleError> {
        let installed = self.core.installed.load_full();
        let rules = &installed.rules;
        let Some(rule) = rules.find(&ticket.rule) else {
            return Err(SettleError::Unknown);
        };
        let client = ticket.client.as_ref();
        let Some(limit) = rules.for_client(rule, client).limit else {
            return Err(SettleError::Unknown);
        };
        let slot = installed.slot(rule);
        let key = ReservationKey::new(slot, Client(client), &ticket.nonce);
        // A debt paid back within a bounded time, in numbers every store holds exactly.
        let largest = limit.bands().iter().map(|band| u64::from(band.capacity()));
        let most =
            reservation::MAX_OWED_CAPACITIES * largest.max().unwrap_or(1) + u64::from(u32::MAX);
        let settled = match self.core.store.settle(limit, key, used.min(most)).await {
            Ok(Settlement::Settled { estimate, decision }) => {
                Ok(Settled::new(estimate, used, decision))
            }
            Ok(Settlement::AlreadySettled) => Err(SettleError::AlreadySettled),
            Ok(_) => Err(SettleError::Unknown),
            Err(error) => Err(SettleError::Store(error)),
        };
        #[cfg(feature = "metrics")]
        {
            let (outcome, charged) = match &settled {
                Ok(_) => ("settled", Some(used.min(most))),
                Err(SettleError::AlreadySettled) => ("already_settled", None),
                Err(SettleError::Unknown) => ("unknown", None),
                Err(_) => ("failed", None),
            };
            crate::metrics::settlement(&ticket.rule, limit.unit(), charged, outcome);
        }
        settled
    }

    /// Lets the reservation `ticket` names go at its estimate.
    pub(crate) fn release_ticket(&self, ticket: &ticket::Ticket) {
        let installed = self.core.installed.load();
        if let Some(rule) = installed.rules.find(&ticket.rule) {
            let slot = installed.slot(rule);
            let client = Client(ticket.client.as_ref());
            self.core
                .store
                .release(ReservationKey::new(slot, client, &ticket.nonce));
        }
    }

    /// Live events from now on: each counted decision, each change of the rules in force,
    /// and a summary each second (see [`Event`]). Bounded: a subscriber that falls behind
    /// misses events and is told how many; with no subscriber (here, or on another instance
    /// sharing the store), deciding costs nothing more.
    ///
    /// On a store that carries events between instances (Redis does), the decisions and
    /// summaries of every instance sharing it come too, each naming its
    /// [`instance`](LimiterBuilder::instance), from about a second after subscribing: each
    /// instance sends them while another listens, and only then.
    pub fn subscribe(&self) -> Events {
        self.core.events.subscribe()
    }

    /// The name of this instance in its events (see [`LimiterBuilder::instance`]).
    pub fn instance(&self) -> &str {
        self.core.events.instance()
    }

    /// IPv6 clients are keyed by their network of this many bits (see
    /// [`ipv6_prefix_len`](LimiterBuilder::ipv6_prefix_len)): what an HTTP front needs to
    /// key a peer address as the limiter will.
    ///
    /// ```
    /// use tollgate::{Limiter, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "5/second"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).ipv6_prefix_len(48).build().await?;
    /// assert_eq!(limiter.ipv6_prefix_len(), 48);
    /// # Ok(())
    /// # }
    /// ```
    pub fn ipv6_prefix_len(&self) -> u8 {
        self.core.ipv6_prefix_len
    }

    /// Counts a request a front refused because its client ID could not be used (an
    /// `X-Client-ID` that is empty, too long, sent twice...), in
    /// [`Stats::invalid_client_ids`]. The HTTP kit ([`RequestQueries`](crate::http::RequestQueries))
    /// counts those it refuses itself.
    ///
    /// ```
    /// use tollgate::{Limiter, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "5/second"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// limiter.count_invalid_client_id();
    /// assert_eq!(limiter.stats().invalid_client_ids, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn count_invalid_client_id(&self) {
        self.core.counters.bump(Count::InvalidClientIds);
    }

    /// Each Redis node's circuit breaker, by `host:port`; empty on the memory backend.
    ///
    /// ```
    /// use tollgate::{Limiter, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "5/second"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// assert!(limiter.breakers().is_empty());
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "metrics")]
    pub fn breakers(&self) -> Vec<(String, crate::BreakerState)> {
        self.core.store.breakers()
    }

    /// What every clone shares, for the limiter's own modules.
    fn core(&self) -> &Core {
        &self.core
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("backend", &self.backend_name())
            .field("rules", &self.core.installed.load().rules)
            .finish()
    }
}

impl Core {
    /// Forgets `client`'s state under `slots`, keyed as every front keys it.
    async fn reset(&self, slots: &[RuleSlot], client: &ClientKey) -> Result<(), ResetError> {
        let client = client.as_ref().normalized(self.ipv6_prefix_len);
        self.store
            .reset(slots, Client(client))
            .await
            .map_err(ResetError::Store)
    }

    /// One decision for `query`: at once when the backend can, else a future.
    #[inline]
    pub(crate) fn check(self: &Arc<Self>, query: Query<'_>, mode: Mode) -> Checking {
        self.check_as(query, mode, Hold::No)
    }

    /// One decision for `query`, taking or peeking as `mode` says, and holding a
    /// reservation when it admits if `hold` asks for one.
    #[inline]
    fn check_as(self: &Arc<Self>, query: Query<'_>, mode: Mode, hold: Hold) -> Checking {
        let installed = self.installed.load();
        let rules = &installed.rules;
        let rule = match query.rule {
            Choice::Default => rules.tier_default(query.tier),
            Choice::Route { method, path } => rules.route(query.tier, method, path),
            Choice::Named(_)
                if query
                    .tier
                    .is_some_and(|t| rules.tier_names().all(|n| n != t)) =>
            {
                rules.tier_default(query.tier)
            }
            Choice::Named(id) => match rules.find(id) {
                // A named rule is no tier's: every tier may ask for it.
                Some(rule)
                    if rule.is_named()
                        || query.tier.is_none_or(|tier| rule.tier() == Some(tier)) =>
                {
                    Ok(rule)
                }
                _ => {
                    return Checking::ready(Err(CheckError::UnknownRule {
                        rule: id.into(),
                        tier: query.tier.map(Into::into),
                    }));
                }
            },
        };
        let rule = match rule {
            Ok(rule) => rule,
            Err(unknown) => {
                if mode == Mode::Take {
                    self.counters.bump(Count::UnknownTiers);
                }
                return Checking::ready(Err(unknown.into()));
            }
        };
        let weight = match query.cost {
            None => Weight::RuleCost,
            Some(cost) => Weight::Exactly(cost),
        };
        self.decide(&installed, rule, query.client, weight, (mode, hold))
    }

    /// Decides `client`'s request under `rule`, one of `installed`'s rules: the limit for
    /// the client (its override, if it has one), what the request takes from it, and the
    /// backend's answer, at once or as a future.
    #[inline]
    fn decide(
        self: &Arc<Self>,
        installed: &Installed,
        rule: &Rule,
        client: KeyRef<'_>,
        weight: Weight,
        (mode, hold): (Mode, Hold),
    ) -> Checking {
        // As the HTTP front keys them: one IPv6 client is one network, whichever front asks.
        let client = client.normalized(self.ipv6_prefix_len);
        let counted = mode == Mode::Take;
        let rules = &installed.rules;
        let slot = installed.slot(rule);
        let resolved = rules.for_client(rule, client);
        let rendering = rules.rendering(self.rendering);
        let Some(limit) = resolved.limit else {
            if let (true, Some(usage)) = (counted, &self.usage) {
                usage.record(client, &slot.id, true);
            }
            #[cfg(feature = "metrics")]
            if counted {
                crate::metrics::decision(&slot.id, DecidedBy::Unlimited, true, false);
            }
            if counted && self.events.watched() {
                let by = DecidedBy::Unlimited;
                self.events
                    .decided(Some(client), &slot.id, true, by, None, None);
            }
            return Checking::ready(Ok(Verdict {
                allowed: true,
                decision: None,
                rule: Arc::clone(&slot.id),
                decided_by: DecidedBy::Unlimited,
                shadow_refused: false,
                unavailable_for: None,
                rendering,
                limit: None,
                bands: None,
                partition: client.public_key(),
                held: None,
            }));
        };
        // A client's override counts in the rule's unit, and settles as the rule does.
        let inherited;
        let limit = match (resolved.client_override, rule.limit()) {
            (true, Some(own)) if limit.lacks_metering_of(own) => {
                inherited = limit.with_metering_of(own);
                &inherited
            }
            _ => limit,
        };
        let cost = match weight {
            Weight::RuleCost => limit.cost(),
            Weight::Exactly(cost) => {
                let max = limit.smallest_capacity();
                if !(1..=max).contains(&cost) {
                    return Checking::ready(Err(CheckError::Cost {
                        cost,
                        rule: slot.id.to_string(),
                        max,
                    }));
                }
                cost
            }
            Weight::Hits(hits) => {
                let fits = u32::try_from(hits)
                    .ok()
                    .filter(|&hits| (1..=limit.smallest_capacity()).contains(&hits));
                let Some(cost) = fits else {
                    return Checking::ready(Ok(Verdict {
                        allowed: false,
                        decision: None,
                        rule: Arc::clone(&slot.id),
                        decided_by: DecidedBy::OverCapacity,
                        shadow_refused: false,
                        unavailable_for: None,
                        rendering,
                        limit: Some(limit.clone()),
                        bands: None,
                        partition: client.public_key(),
                        held: None,
                    }));
                };
                cost
            }
        };
        let reserving = match hold {
            Hold::Always => true,
            Hold::WhenSettled => limit.settle_header().is_some(),
            Hold::No => false,
        };
        let ticket = match reserving {
            false => None,
            true => match ticket::Ticket::new(&slot.id, client) {
                Ok(ticket) => Some(ticket),
                Err(error) => return Checking::ready(Err(error)),
            },
        };
        let shadow = limit.shadow();
        // The client is needed after the decision only to log a shadow refusal, to count
        // usage or to tell subscribers.
        let logged = (shadow || self.usage.is_some() || self.events.watched()).then_some(client);
        // The limit's bands are shared with the rules: cloning it copies a pointer.
        let applied = Applied {
            rendering,
            limit: limit.clone(),
            partition: client.public_key(),
            cost,
            ticket,
        };
        // The one call through the store's trait on the way.
        let answer = match applied.ticket.as_deref() {
            None => self.store.decide(slot, limit, cost, Client(client), mode),
            Some(ticket) => {
                let key = ReservationKey::new(slot, Client(client), &ticket.nonce);
                let lasting = self.reservation_timeout;
                match (self.store.reserve(limit, cost, key, lasting), hold) {
                    (Some(answer), _) => answer,
                    // A rule that settles from the response, on a store that keeps no
                    // reservations: a plain check, at the estimate.
                    (None, Hold::WhenSettled) => {
                        self.store.decide(slot, limit, cost, Client(client), mode)
                    }
                    (None, _) => {
                        let store = self.store.name();
                        return Checking::ready(Err(CheckError::Reservation {
                            reason: format!("the {store} store keeps no reservations"),
                        }));
                    }
                }
            }
        };
        match answer {
            Answer::Now(outcome) => Checking::ready(Ok(self.verdict(
                outcome,
                Arc::clone(&slot.id),
                applied,
                Counting {
                    counted,
                    shadow,
                    client: logged,
                },
            ))),
            Answer::Later(pending) => Checking::waiting(checking::Waiting {
                pending,
                core: Arc::clone(self),
                rule: Arc::clone(&slot.id),
                applied,
                counted,
                shadow,
                client: logged.map(KeyRef::to_owned),
            }),
        }
    }

    /// The verdict on an outcome, counted as `counting` says. Under a shadow rule, nothing
    /// is refused: what would have been is counted, logged, and let through.
    #[inline]
    pub(crate) fn verdict(
        self: &Arc<Self>,
        outcome: Outcome,
        rule: Arc<str>,
        applied: Applied,
        counting: Counting<'_>,
    ) -> Verdict {
        let Counting {
            counted,
            shadow,
            client,
        } = counting;
        // Held when the store took the estimate: not for a refusal a shadow rule lets by.
        let held = match (&outcome, applied.ticket) {
            (Outcome::Reserved(decision, _), Some(ticket)) if decision.allowed => {
                Some(ticket::Held::new(self, *ticket, applied.cost))
            }
            _ => None,
        };
        let (decision, decided_by, unavailable_for, refused, bands) = match outcome {
            Outcome::Decided(decision, by) | Outcome::Reserved(decision, by) => {
                (Some(decision), by, None, !decision.allowed, None)
            }
            Outcome::Peeked {
                decision,
                decided_by,
                bands,
            } => (
                Some(decision),
                decided_by,
                None,
                !decision.allowed,
                Some(bands),
            ),
            Outcome::PassThrough => (None, DecidedBy::FailOpen, None, false, None),
            Outcome::Unavailable { retry_after } => {
                (None, DecidedBy::FailClosed, Some(retry_after), true, None)
            }
        };
        let shadow_refused = refused && shadow;
        let allowed = !refused || shadow_refused;
        if counted {
            self.counters.bump(if allowed {
                Count::Allowed
            } else {
                Count::Denied
            });
            if shadow_refused {
                self.counters.bump(Count::Shadowed);
                if let Some(client) = client {
                    tracing::info!(rule = &*rule, %client, "shadow rule would have refused this request");
                }
            }
            if let (Some(usage), Some(client)) = (&self.usage, client) {
                usage.record(client, &rule, allowed);
            }
            #[cfg(feature = "metrics")]
            crate::metrics::decision(&rule, decided_by, allowed, shadow_refused);
            if self.events.watched() {
                let band = decision.as_ref();
                self.events
                    .decided(client, &rule, allowed, decided_by, band, unavailable_for);
            }
        }
        Verdict {
            allowed,
            decision,
            rule,
            decided_by,
            shadow_refused,
            unavailable_for: if shadow_refused {
                None
            } else {
                unavailable_for
            },
            rendering: applied.rendering,
            limit: Some(applied.limit),
            partition: applied.partition,
            bands,
            held,
        }
    }

    /// IPv6 clients are keyed by their network of this many bits.
    fn ipv6_prefix_len(&self) -> u8 {
        self.ipv6_prefix_len
    }

    /// Usage recording, when on.
    fn usage(&self) -> Option<&usage::Usage> {
        self.usage.as_deref()
    }

    fn stats(&self) -> Stats {
        let Core {
            store, counters, ..
        } = self;
        let reload = self.reload_state();
        let usage = self.usage.as_ref().map(|u| u.counts()).unwrap_or_default();
        Stats {
            shadowed: counters.read(Count::Shadowed),
            unknown_tiers: counters.read(Count::UnknownTiers),
            reloads: reload.reloads,
            failed_reloads: reload.failures,
            last_reload_error: reload.last_error.clone(),
            backend: store.name(),
            store: store.stats(),
            allowed: counters.read(Count::Allowed),
            denied: counters.read(Count::Denied),
            invalid_client_ids: counters.read(Count::InvalidClientIds),
            usage_clients: usage.clients,
            usage_dropped: usage.dropped,
            usage_evicted: usage.evicted,
            usage_flush_errors: usage.flush_errors,
            runtime_read_errors: self.runtime.read_errors(),
            event_subscribers: self.events.subscribers(),
        }
    }
}

/// What a verdict carries of the rule that applied: how the fronts render it, and the
/// client's limit under it.
#[derive(Debug, Clone)]
pub(crate) struct Applied {
    pub(crate) rendering: Rendering,
    pub(crate) limit: Limit,
    /// The client, when its key is no secret (an address or a network, never an ID): the
    /// IETF fields' partition key.
    pub(crate) partition: Option<ClientKey>,
    /// What the request takes: a reservation's estimate.
    pub(crate) cost: u32,
    /// The reservation the check holds if the store admits it.
    pub(crate) ticket: Option<Box<ticket::Ticket>>,
}

/// Whether a check holds a reservation when it admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    No,
    Always,
    /// When the rule settles its cost from the response.
    WhenSettled,
}

/// What a request takes from every band of its limit.
#[derive(Debug, Clone, Copy)]
enum Weight {
    /// The rule's `cost`.
    RuleCost,
    /// This cost, which must be from 1 to the smallest capacity ([`CheckError::Cost`]).
    Exactly(u32),
    /// These hits, at least 1; more than the smallest capacity is refused
    /// ([`DecidedBy::OverCapacity`]).
    Hits(u64),
}

/// How a decision counts: in the counters at all (`false` for peeks), as a shadow rule's
/// (refusals let through), and against which client in the logs and usage statistics
/// (`None` when neither needs it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counting<'a> {
    pub(crate) counted: bool,
    pub(crate) shadow: bool,
    pub(crate) client: Option<KeyRef<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal that `wait` cannot outwait comes back without a sleep: the paused clock
    /// does not move.
    #[tokio::test(start_paused = true)]
    async fn wait_returns_what_it_cannot_outwait_without_sleeping() {
        let rules = Rules::from_json(r#"{"default": {"capacity": 1, "refill_rate": 0.001}}"#);
        let limiter = Limiter::builder()
            .rules(rules.expect("valid rules"))
            .build()
            .await
            .expect("a limiter");
        let key = ClientKey::id("a");
        assert!(
            limiter
                .check(Query::new(&key))
                .await
                .expect("a verdict")
                .allowed()
        );
        let started = tokio::time::Instant::now();
        let refused = limiter
            .wait(Query::new(&key), Duration::from_secs(99))
            .await
            .expect("a verdict");
        assert!(!refused.allowed());
        assert!(refused.retry_after() > Some(Duration::from_secs(99)));
        assert_eq!(tokio::time::Instant::now(), started);
        assert_eq!(limiter.stats().allowed, 1);
    }
}
