//! The Redis store: token buckets shared by every app instance, in Redis (registered by
//! the builder's `redis_url` and `redis_cluster`, in `builder`).
//!
//! One Lua script (`decide.lua`) makes decisions atomically, each over all of a rule's
//! bands, kept in one string key, using Redis `TIME` as the clock so instances with skewed
//! clocks agree. Keys are `<prefix>:{<rule id>:<client key>}`; the braces are a Redis
//! Cluster hash tag.
//!
//! On a single Redis, concurrent decisions share script calls (see `batcher`). On a cluster,
//! keys of one call would have to share a slot, so every decision is its own call.
//!
//! Every call has a deadline. Failures feed a [`Breaker`], and so does a `PING` to each node
//! every second (see `health`); when Redis cannot decide, the [`OnRedisError`] policy does.

mod batcher;
mod builder;
mod clock;
mod cluster;
mod config;
mod connection;
mod error;
mod events;
mod health;
mod leases;
mod pubsub;
mod refusals;
mod reservations;
mod resets;
mod runtime;
mod script;
mod setup;
mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::Script;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::breaker::{BreakerState, Permit, PermitGuard};
use super::memory::MemoryBackend;
use super::{
    Answer, Client, EntryNews, EventRelay, Heard, Mode, Outcome, ReservationKey, RuleSlot,
    RuntimeStore, Settlement, Store, StoreError, StoreFuture, StoreStats, UsageStore,
};
use crate::Decision;
use crate::decision::{BandStatus, DecidedBy};
use crate::key::KeyRef;
use crate::policy::OnRedisError;
use crate::rules::Limit;
use batcher::Job;
use clock::monotonic_us;
use cluster::{Server, Servers};
use connection::Connection;
use error::CallError;
use leases::{Leases, Leasing};
use refusals::Refusals;
use script::{Answered, Call, Held, band_statuses, decode, packed, run};
use setup::Route;

pub(crate) use builder::Options;
use config::{RedisConfig, redact};
use script::DECIDE_LUA;

/// How messages name this store.
const REDIS: &str = "Redis";

/// The Redis store, as the limiter holds it.
pub(crate) struct RedisStore(Arc<RedisBackend>);

impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    #[inline]
    fn decide(
        &self,
        rule: &RuleSlot,
        limit: &Limit,
        cost: u32,
        client: Client<'_>,
        mode: Mode,
    ) -> Answer {
        self.0.decide(rule, limit, cost, client.0, mode)
    }

    fn reset<'a>(
        &'a self,
        rules: &'a [RuleSlot],
        client: Client<'a>,
    ) -> StoreFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.0
                .reset(rules, client.0)
                .await
                .map_err(|reason| StoreError::new(REDIS, reason))
        })
    }

    fn rules_changed(&self, rules: &[RuleSlot]) {
        if let Some(local) = &self.0.local {
            local.keep_only(rules);
        }
        self.0.rules_changed(rules);
    }

    fn client_changed(&self, rules: &[RuleSlot]) {
        self.0.rules_changed(rules);
    }

    fn sweep(&self) {
        if let Some(local) = &self.0.local {
            let kept = local.drop_full();
            tracing::trace!(kept, "local fallback cleanup");
        }
    }

    fn stats(&self) -> StoreStats {
        self.0.stats()
    }

    fn breakers(&self) -> Vec<(String, BreakerState)> {
        self.0.servers.breakers(&self.0.node)
    }

    fn failure_policy(&self) -> Option<OnRedisError> {
        Some(self.0.on_error)
    }

    fn usage(&self) -> Option<Arc<dyn UsageStore>> {
        Some(Arc::clone(&self.0) as Arc<dyn UsageStore>)
    }

    fn runtime(&self) -> Option<Arc<dyn RuntimeStore>> {
        Some(Arc::clone(&self.0) as Arc<dyn RuntimeStore>)
    }

    fn events(&self) -> Option<Arc<dyn EventRelay>> {
        Some(Arc::clone(&self.0) as Arc<dyn EventRelay>)
    }

    fn reserve(
        &self,
        limit: &Limit,
        cost: u32,
        reservation: ReservationKey<'_>,
        lasting: Duration,
    ) -> Option<Answer> {
        Some(self.0.reserve_in_redis(limit, cost, reservation, lasting))
    }

    fn settle<'a>(
        &'a self,
        limit: &'a Limit,
        reservation: ReservationKey<'a>,
        used: u64,
    ) -> StoreFuture<'a, Result<Settlement, StoreError>> {
        Box::pin(self.0.settle_in_redis(limit, reservation, used))
    }

    fn release(&self, reservation: ReservationKey<'_>) {
        self.0.release_in_redis(reservation);
    }
}

pub(crate) struct RedisBackend {
    /// Clients Redis refused, with when the refusal ends: until then they are refused here,
    /// without a round trip. This can only refuse, never admit, so it cannot over-admit; it
    /// is emptied when the rules change.
    refusals: Refusals,
    refusal_hits: AtomicU64,
    /// Units Redis leased to this instance; `None` when leases are off.
    leases: Option<Leases>,
    lease_hits: AtomicU64,
    /// The generation of the rules in force (see `Installed`): refusals and leases of
    /// older ones are not kept.
    rules: AtomicU64,
    /// The rules in force, for resets that other instances publish by rule identity.
    slots: ArcSwap<Box<[RuleSlot]>>,
    /// Counts this instance's forgetting of clients (resets): a refusal whose call was sent
    /// before the last one is not remembered.
    resets: AtomicU64,
    route: Route,
    script: Arc<Script>,
    prefix: Box<str>,
    /// The prefix of its channels: `prefix` in database 0, `<prefix>:db<N>` in database N.
    /// Keys are the database's own, channels are the server's: deployments kept apart only
    /// by their database must not hear each other.
    channels: Box<str>,
    timeout: Duration,
    /// How long a lease lives; zero: none are asked for.
    lease: Duration,
    servers: Arc<Servers>,
    /// The single Redis's `host:port`, as metrics name it.
    node: Box<str>,
    cooldown: Duration,
    on_error: OnRedisError,
    /// The in-process buckets the `local` policy decides with.
    local: Option<Arc<MemoryBackend>>,
    fallback: AtomicU64,
    errors: AtomicU64,
    /// What was heard about the runtime rule entries (see `runtime`).
    runtime_news: Arc<EntryNews>,
    /// The other instances' live events, heard while this one listens (see `events`).
    events_heard: Arc<Heard>,
    /// Whether this instance listens to the others' live events: subscribed to their
    /// channel while it does.
    listening: watch::Sender<bool>,
}

impl RedisBackend {
    /// Sets up the connection and loads the script. Only an unusable URL is an error: if
    /// Redis does not answer within `connect_timeout`, the backend starts with its breakers
    /// open and keeps trying in the background.
    async fn connect(config: &RedisConfig) -> Result<Arc<Self>, String> {
        let local = (config.on_error == OnRedisError::Local).then(|| {
            Arc::new(MemoryBackend::new(
                config.max_tracked_buckets,
                config.local_fallback_instances,
            ))
        });
        let (failures, cooldown) = (config.breaker_failures, config.breaker_cooldown);
        let script = Arc::new(Script::new(DECIDE_LUA));
        let servers = Arc::new(match config.cluster_nodes {
            Some(_) => Servers::cluster(failures, cooldown),
            None => Servers::single(failures, cooldown),
        });
        let (route, ready) = match &config.cluster_nodes {
            None => setup::connect_single(config, &script).await?,
            Some(nodes) => setup::connect_cluster(nodes, config, &script, &servers).await?,
        };
        if let Err(error) = ready {
            let url = match &config.cluster_nodes {
                Some(nodes) => nodes
                    .iter()
                    .map(|n| redact(n))
                    .collect::<Vec<_>>()
                    .join(","),
                None => redact(&config.url),
            };
            tracing::warn!(
                %url,
                %error,
                policy = config.on_error.as_str(),
                "Redis unreachable at startup; deciding by the failure policy until it answers"
            );
            servers.open_all("Redis unreachable at startup");
        }
        let backend = Arc::new(Self {
            refusals: Refusals::new(),
            refusal_hits: AtomicU64::new(0),
            leases: (!config.lease.is_zero()).then(|| Leases::new(config.timeout)),
            lease_hits: AtomicU64::new(0),
            rules: AtomicU64::new(0),
            slots: ArcSwap::from_pointee(Box::default()),
            resets: AtomicU64::new(0),
            route,
            script,
            prefix: config.prefix.as_str().into(),
            channels: channels_of(&config.prefix, &config.url).into(),
            timeout: config.timeout,
            lease: config.lease,
            servers,
            node: node_name(&config.url).into(),
            cooldown,
            on_error: config.on_error,
            local,
            fallback: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            runtime_news: Arc::default(),
            events_heard: Arc::default(),
            listening: watch::Sender::new(false),
        });
        let urls = config
            .cluster_nodes
            .clone()
            .unwrap_or_else(|| vec![config.url.clone()]);
        let (subscribed, listening) = oneshot::channel();
        pubsub::spawn_listener(
            Arc::downgrade(&backend),
            backend.listening.subscribe(),
            urls,
            &backend.channels,
            config.connect_timeout,
            subscribed,
        );
        // Like the script, the subscription is in place before the first request when
        // Redis answers; if it does not, it comes with Redis.
        let _ = tokio::time::timeout(config.connect_timeout, listening).await;
        health::spawn(Arc::downgrade(&backend));
        Ok(backend)
    }

    /// A connection for commands other than decisions (they go through the batcher on a
    /// single Redis); `None` before a cluster is first reached.
    pub(crate) fn connection(&self) -> Option<Connection> {
        match &self.route {
            Route::Batched { connection, .. } => Some(connection.clone()),
            Route::Cluster(connected) => connected.get().cloned(),
        }
    }

    /// The connection live events go over: their own on a single Redis (made on first
    /// use), the cluster's on a cluster (where each node has its own).
    pub(crate) fn events_connection(&self) -> Option<Connection> {
        match &self.route {
            Route::Batched { events, .. } => Some(events.clone()),
            Route::Cluster(connected) => connected.get().cloned(),
        }
    }

    /// The prefix of every key and channel.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How long a command other than a decision (a reset, a runtime rule change) may take:
    /// the decisions' deadline, but at least a second.
    pub(crate) fn command_timeout(&self) -> Duration {
        self.timeout.max(Duration::from_secs(1))
    }

    pub(crate) fn key(&self, rule_id: &str, client: KeyRef<'_>) -> String {
        format!("{}:{{{rule_id}:{client}}}", self.prefix)
    }

    /// What this instance counted, its breakers and its local fallback's buckets.
    fn stats(&self) -> StoreStats {
        let local = self.local.as_deref();
        StoreStats {
            breaker: Some(self.servers.state()),
            fallback: self.fallback.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            cached_refusals: self.refusal_hits.load(Ordering::Relaxed),
            leased: self.lease_hits.load(Ordering::Relaxed),
            tracked_buckets: local.map_or(0, MemoryBackend::len),
            evicted_buckets: local.map_or(0, MemoryBackend::evicted),
        }
    }

    /// New rules, of generation `generation`, are in force: they may admit what the old
    /// ones refused, and refuse what leases under the old ones would admit.
    fn rules_changed(&self, slots: &[RuleSlot]) {
        let generation = slots.first().map_or(0, |slot| slot.generation);
        // Installs are published in order; `fetch_max` keeps the newest regardless.
        if self.rules.fetch_max(generation, Ordering::AcqRel) < generation {
            self.slots.store(Arc::new(slots.into()));
        }
        self.refusals.clear();
        if let Some(leases) = &self.leases {
            leases.clear();
        }
    }

    fn spend_lease(&self, state: u32, client: KeyRef<'_>, cost: u32, rules: u64) -> Leasing {
        match &self.leases {
            Some(leases) => leases.spend(state, client, cost, rules),
            None => Leasing::Ask,
        }
    }

    fn lease_answered(
        &self,
        state: u32,
        client: KeyRef<'_>,
        rules: u64,
        ask: i64,
        granted: Option<(u32, i64, Decision)>,
    ) {
        if let Some(leases) = &self.leases {
            let current = rules == self.rules.load(Ordering::Acquire);
            leases.answered(state, client, rules, current, ask, granted);
        }
    }

    /// Remembers a refusal Redis gave to a request of `cost` sent at reset epoch `epoch`
    /// under rules generation `rules`, unless those are no longer in force or the client
    /// may have been reset since.
    fn remember_refusal(
        &self,
        state: u32,
        client: KeyRef<'_>,
        refused: (&Decision, u32),
        rules: u64,
        epoch: u64,
    ) {
        if rules == self.rules.load(Ordering::Acquire)
            && epoch == self.resets.load(Ordering::Acquire)
        {
            self.refusals.remember(state, client, refused, rules);
        }
    }

    /// Decides a request of `client` under `rule` with `limit`, at `cost`: from this
    /// instance's lease or remembered refusals when it can, else by Redis, else by the
    /// failure policy.
    fn decide(
        self: &Arc<Self>,
        rule: &RuleSlot,
        limit: &Limit,
        cost: u32,
        client: KeyRef<'_>,
        mode: Mode,
    ) -> Answer {
        let (state, rules) = (rule.state, rule.generation);
        let taking = mode == Mode::Take;
        // A lease first: its units are paid for, even while Redis refuses others.
        let ask = match mode {
            Mode::Take => match self.spend_lease(state, client, cost, rules) {
                Leasing::Spent(leased) => {
                    self.lease_hits.fetch_add(1, Ordering::Relaxed);
                    return Answer::Now(Outcome::Decided(leased, DecidedBy::Lease));
                }
                Leasing::Ask => None,
                Leasing::AskLease(ask) => Some(ask),
            },
            // A peek asks Redis, which holds every band: what this instance remembers
            // (a lease, a refusal) is one band's.
            Mode::Peek => None,
        };
        if let Some(refused) = self
            .refusals
            .cached(state, client, cost, rules)
            .filter(|_| taking)
        {
            if taking {
                self.refusal_hits.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(ask) = ask {
                self.lease_answered(state, client, rules, ask, None);
            }
            return Answer::Now(Outcome::Decided(refused, DecidedBy::RememberedRefusal));
        }
        let key = self.key(&rule.id, client);
        let server = self.servers.for_key(&key);
        let permit = server.breaker.permit();
        if permit == Permit::Skip {
            if let Some(ask) = ask {
                self.lease_answered(state, client, rules, ask, None);
            }
            return Answer::Now(self.without_redis(state, limit, cost, client, mode));
        }
        // Made now, so that a future dropped before it is polled still ends a probe.
        let guard = PermitGuard::new(Arc::clone(&server.breaker), permit);
        // Taken now, like the mark of an ask for a lease, which ends with it.
        let deadline = Instant::now() + self.timeout;
        // The same deadline in Redis's time, taken at the same moment.
        let redis_deadline_us = server.clock.deadline_us(self.timeout);
        let epoch = self.resets.load(Ordering::Acquire);
        let client = client.to_owned();
        let limit = limit.clone();
        let call = Call {
            cost,
            lease: if ask.is_some() {
                self.lease
            } else {
                Duration::ZERO
            },
            mode,
            deadline,
            redis_deadline_us,
            held: Held::No,
        };
        let this = Arc::clone(self);
        Answer::Later(Box::pin(async move {
            // A lease's lifetime counts from when it was asked for.
            let asked = ask.map(|ask| (ask, monotonic_us()));
            #[cfg(feature = "metrics")]
            let started = std::time::Instant::now();
            let answer = this.call(&server, key, &limit, &call).await;
            #[cfg(feature = "metrics")]
            crate::metrics::redis_call(
                started.elapsed(),
                answer.as_ref().err().map(CallError::metrics_kind),
            );
            if let Some((ask, sent_us)) = asked {
                let granted = match &answer {
                    Ok(((decision, Some((units, ms))), _)) if decision.allowed => {
                        let until_us = sent_us.saturating_add(ms.saturating_mul(1000));
                        Some((*units, until_us, *decision))
                    }
                    _ => None,
                };
                this.lease_answered(state, client.as_ref(), rules, ask, granted);
            }
            match answer {
                Ok(((decision, _), bands)) => {
                    guard.succeeded();
                    if !decision.allowed && taking {
                        let refused = (&decision, cost);
                        this.remember_refusal(state, client.as_ref(), refused, rules, epoch);
                    }
                    match bands {
                        Some(bands) => Outcome::Peeked {
                            decision,
                            decided_by: DecidedBy::Redis,
                            bands,
                        },
                        None => Outcome::Decided(decision, DecidedBy::Redis),
                    }
                }
                Err(error) => {
                    this.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, "Redis could not decide");
                    guard.failed(&error);
                    this.without_redis(state, &limit, cost, client.as_ref(), mode)
                }
            }
        }))
    }

    /// Redis's decision: through the batcher on a single Redis, as its own call on a
    /// cluster. `server` holds the key.
    async fn call(
        &self,
        server: &Server,
        key: String,
        limit: &Limit,
        call: &Call,
    ) -> Result<(Answered, Option<Box<[BandStatus]>>), CallError> {
        let deadline = call.deadline;
        let spec = packed(limit, call);
        let (reply, at) = match &self.route {
            Route::Batched { queue, .. } => {
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    key,
                    spec,
                    bands: limit.bands().len(),
                    deadline,
                    reply,
                };
                queue.try_send(job).map_err(|_| CallError::Overloaded)?;
                match tokio::time::timeout_at(deadline, answer).await {
                    Ok(Ok(answer)) => answer?,
                    // The batcher drops a job only once its deadline has passed.
                    Ok(Err(_)) | Err(_) => return Err(CallError::Timeout),
                }
            }
            Route::Cluster(connected) => {
                let mut connection = connected.get().ok_or(CallError::NotConnected)?.clone();
                let call = run(
                    &self.script,
                    &mut connection,
                    std::iter::once((key.as_str(), spec.as_slice())),
                    &[],
                );
                let reply = tokio::time::timeout_at(deadline, call)
                    .await
                    .map_err(|_| CallError::Timeout)??;
                (Arc::new(reply), 1)
            }
        };
        // One reading per reply: the first decision of a shared call takes it.
        if at == 1
            && let Some(now_ms) = reply.now_ms()
        {
            server.clock.observe(now_ms);
        }
        let bands = match call.mode {
            Mode::Peek => Some(band_statuses(&reply, at, limit)?),
            Mode::Take => None,
        };
        Ok((decode(&reply, at, limit)?, bands))
    }

    /// The failure policy's answer.
    fn without_redis(
        &self,
        state: u32,
        limit: &Limit,
        cost: u32,
        client: KeyRef<'_>,
        mode: Mode,
    ) -> Outcome {
        if mode == Mode::Take {
            self.fallback.fetch_add(1, Ordering::Relaxed);
        }
        match (&self.local, self.on_error) {
            (Some(local), _) => Outcome::Decided(
                local.decide(state, limit, cost, client, mode),
                DecidedBy::LocalFallback,
            ),
            (None, OnRedisError::Deny) => Outcome::Unavailable {
                retry_after: self.cooldown,
            },
            (None, _) => Outcome::PassThrough,
        }
    }
}

/// The prefix of the channels of `prefix` in the database `url` names: `prefix` in database
/// 0 (and on a cluster, which has no other), `<prefix>:db<N>` in database N.
fn channels_of(prefix: &str, url: &str) -> String {
    use redis::IntoConnectionInfo;
    match url
        .into_connection_info()
        .map(|info| info.redis_settings().db())
    {
        Ok(db) if db != 0 => format!("{prefix}:db{db}"),
        _ => prefix.to_owned(),
    }
}

/// `host:port` of a Redis URL, without the credentials; the redacted URL if it does not
/// parse.
fn node_name(url: &str) -> String {
    use redis::IntoConnectionInfo;
    match url.into_connection_info() {
        Ok(info) => info.addr().to_string(),
        Err(_) => redact(url),
    }
}
