//! Token buckets shared by every app instance, in Redis.
//!
//! One Lua script (`decide.lua`) makes decisions atomically, each over all of a rule's
//! bands, kept in one string key, using Redis `TIME` as the clock so instances with skewed
//! clocks agree. Keys are `<prefix>:{<rule id>:<client key>}`; the braces are a Redis
//! Cluster hash tag.
//!
//! On a single Redis, concurrent decisions share script calls (see `batcher`). On a cluster,
//! keys of one call would have to share a slot, so every decision is its own call.
//!
//! Every call has a deadline. Failures feed a [`Breaker`]; when Redis cannot decide, the
//! [`OnRedisError`] policy does.

mod batcher;
mod clock;
mod cluster;
mod config;
mod connection;
mod error;
mod leases;
mod refusals;
mod script;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManagerConfig;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::breaker::{BreakerState, Permit, PermitGuard};
use super::memory::MemoryBackend;
use super::{Outcome, RedisCounts, Verdict};
use crate::key::KeyRef;
use crate::policy::OnRedisError;
use crate::rules::Limit;
use batcher::{Job, MAX_QUEUED, batch};
use clock::monotonic_us;
use cluster::{Server, Servers, refresh_slots};
use connection::Connection;
use error::CallError;
use leases::{Leases, Leasing};
use refusals::Refusals;
use script::{Answered, decode, load, packed, run};

pub(crate) use config::{RedisConfig, redact};
pub(crate) use script::DECIDE_LUA;

/// How decisions reach Redis.
enum Route {
    /// A single Redis: through the batcher's queue.
    Batched(mpsc::Sender<Job>),
    /// A cluster: each decision its own call, once connected (at startup, or later by the
    /// background connector).
    Cluster(Arc<OnceLock<Connection>>),
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
    route: Route,
    script: Arc<Script>,
    prefix: Box<str>,
    timeout: Duration,
    /// How long a lease lives; zero: none are asked for.
    lease: Duration,
    servers: Arc<Servers>,
    cooldown: Duration,
    on_error: OnRedisError,
    /// The in-process buckets the `local` policy decides with.
    local: Option<Arc<MemoryBackend>>,
    fallback: AtomicU64,
    errors: AtomicU64,
}

impl RedisBackend {
    /// Sets up the connection and loads the script. Only an unusable URL is an error: if
    /// Redis does not answer within `connect_timeout`, the backend starts with its breakers
    /// open and keeps trying in the background.
    pub(crate) async fn connect(config: &RedisConfig) -> Result<Self, String> {
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
            None => Self::connect_single(config, &script).await?,
            Some(nodes) => Self::connect_cluster(nodes, config, &script, &servers).await?,
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
        Ok(Self {
            refusals: Refusals::new(),
            refusal_hits: AtomicU64::new(0),
            leases: (!config.lease.is_zero()).then(|| Leases::new(config.timeout)),
            lease_hits: AtomicU64::new(0),
            rules: AtomicU64::new(0),
            route,
            script,
            prefix: config.prefix.as_str().into(),
            timeout: config.timeout,
            lease: config.lease,
            servers,
            cooldown,
            on_error: config.on_error,
            local,
            fallback: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// A reconnecting connection to one Redis, and its batcher. The outer error is an
    /// unusable URL; the inner one says Redis did not answer yet.
    async fn connect_single(
        config: &RedisConfig,
        script: &Arc<Script>,
    ) -> Result<(Route, Result<(), String>), String> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| e.to_string())?;
        // Short, capped reconnect backoff: a restarted Redis is found again quickly.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.connect_timeout))
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(250))
            .set_number_of_retries(6);
        let mut connection =
            Connection::single(client, manager_config).map_err(|e| e.to_string())?;
        let (queue, queued) = mpsc::channel(MAX_QUEUED);
        tokio::spawn(batch(queued, connection.clone(), Arc::clone(script)));
        let ready = load(script, &mut connection, config.connect_timeout).await;
        Ok((Route::Batched(queue), ready))
    }

    /// A cluster connection, made now or, if no node answers in time, by a background task;
    /// and a task that keeps the slot map of the per-master breakers current.
    async fn connect_cluster(
        nodes: &[String],
        config: &RedisConfig,
        script: &Arc<Script>,
        servers: &Arc<Servers>,
    ) -> Result<(Route, Result<(), String>), String> {
        for node in nodes {
            redis::IntoConnectionInfo::into_connection_info(node.as_str())
                .map_err(|e| format!("seed node {} is not a Redis URL: {e}", redact(node)))?;
        }
        let client = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.connect_timeout)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(250)
            .build()
            .map_err(|e| e.to_string())?;
        let connect_timeout = config.connect_timeout;
        let connected = Arc::new(OnceLock::new());
        let first = tokio::time::timeout(connect_timeout, client.get_async_connection()).await;
        let ready = match first {
            Ok(Ok(cluster)) => {
                let mut connection = Connection::Cluster(cluster);
                let _ = connected.set(connection.clone());
                refresh_slots(servers, &mut connection).await;
                load(script, &mut connection, connect_timeout).await
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {connect_timeout:?}")),
        };
        let (cell, script, servers) = (
            Arc::downgrade(&connected),
            Arc::downgrade(script),
            Arc::downgrade(servers),
        );
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(250));
            let mut since_refresh = Duration::ZERO;
            loop {
                ticks.tick().await;
                let (Some(cell), Some(script), Some(servers)) =
                    (cell.upgrade(), script.upgrade(), servers.upgrade())
                else {
                    break;
                };
                match cell.get() {
                    None => {
                        let attempt = client.get_async_connection();
                        if let Ok(Ok(cluster)) =
                            tokio::time::timeout(connect_timeout, attempt).await
                        {
                            let mut connection = Connection::Cluster(cluster);
                            let _ = cell.set(connection.clone());
                            refresh_slots(&servers, &mut connection).await;
                            let _ = load(&script, &mut connection, connect_timeout).await;
                            tracing::info!("connected to the Redis Cluster");
                        }
                    }
                    Some(connection) => {
                        since_refresh += Duration::from_millis(250);
                        if since_refresh >= Duration::from_secs(2) {
                            since_refresh = Duration::ZERO;
                            refresh_slots(&servers, &mut connection.clone()).await;
                        }
                    }
                }
            }
        });
        Ok((Route::Cluster(connected), ready))
    }

    pub(crate) fn key(&self, rule_id: &str, client: KeyRef<'_>) -> String {
        format!("{}:{{{rule_id}:{client}}}", self.prefix)
    }

    pub(crate) fn local(&self) -> Option<&Arc<MemoryBackend>> {
        self.local.as_ref()
    }

    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.servers.state()
    }

    pub(crate) fn counts(&self) -> RedisCounts {
        RedisCounts {
            fallback: self.fallback.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            cached_refusals: self.refusal_hits.load(Ordering::Relaxed),
            leased: self.lease_hits.load(Ordering::Relaxed),
        }
    }

    /// New rules, of generation `generation`, are in force: they may admit what the old
    /// ones refused, and refuse what leases under the old ones would admit.
    pub(crate) fn rules_changed(&self, generation: u64) {
        // Installs are published in order; `fetch_max` keeps the newest regardless.
        self.rules.fetch_max(generation, Ordering::AcqRel);
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
        granted: Option<(u32, i64, crate::Decision)>,
    ) {
        if let Some(leases) = &self.leases {
            let current = rules == self.rules.load(Ordering::Acquire);
            leases.answered(state, client, rules, current, ask, granted);
        }
    }

    fn cached_refusal(
        &self,
        state: u32,
        client: KeyRef<'_>,
        rules: u64,
    ) -> Option<crate::Decision> {
        self.refusals.cached(state, client, rules)
    }

    /// Remembers a refusal Redis gave under rules generation `rules`, unless those are no
    /// longer in force.
    fn remember_refusal(
        &self,
        state: u32,
        client: KeyRef<'_>,
        decision: &crate::Decision,
        rules: u64,
    ) {
        if rules == self.rules.load(Ordering::Acquire) {
            self.refusals.remember(state, client, decision, rules);
        }
    }

    /// Decides a request of `client` under the rule `rule_id` (state id `state`), with
    /// `limit`, under the rules of generation `rules`.
    pub(crate) fn decide(
        self: &Arc<Self>,
        state: u32,
        rule_id: &str,
        limit: &Limit,
        client: KeyRef<'_>,
        rules: u64,
    ) -> Verdict {
        // A lease first: its units are paid for, even while Redis refuses others.
        let ask = match self.spend_lease(state, client, limit.cost(), rules) {
            Leasing::Spent(leased) => {
                self.lease_hits.fetch_add(1, Ordering::Relaxed);
                return Verdict::Now(Outcome::Decided(leased));
            }
            Leasing::Ask => None,
            Leasing::AskLease(ask) => Some(ask),
        };
        if let Some(refused) = self.cached_refusal(state, client, rules) {
            self.refusal_hits.fetch_add(1, Ordering::Relaxed);
            if let Some(ask) = ask {
                self.lease_answered(state, client, rules, ask, None);
            }
            return Verdict::Now(Outcome::Decided(refused));
        }
        let key = self.key(rule_id, client);
        let server = self.servers.for_key(&key);
        let permit = server.breaker.permit();
        if permit == Permit::Skip {
            if let Some(ask) = ask {
                self.lease_answered(state, client, rules, ask, None);
            }
            return Verdict::Now(self.without_redis(state, limit, client));
        }
        // Made now, so that a future dropped before it is polled still ends a probe.
        let guard = PermitGuard::new(Arc::clone(&server.breaker), permit);
        // Taken now, like the mark of an ask for a lease, which ends with it.
        let deadline = Instant::now() + self.timeout;
        let client = client.to_owned();
        let limit = limit.clone();
        let lease = if ask.is_some() {
            self.lease
        } else {
            Duration::ZERO
        };
        let this = Arc::clone(self);
        Verdict::Later(Box::pin(async move {
            let sent_us = monotonic_us();
            let answer = this.call(&server, key, &limit, lease, deadline).await;
            if let Some(ask) = ask {
                let granted = match &answer {
                    Ok((decision, Some((units, ms)))) if decision.allowed => {
                        let until_us = sent_us.saturating_add(ms.saturating_mul(1000));
                        Some((*units, until_us, *decision))
                    }
                    _ => None,
                };
                this.lease_answered(state, client.as_ref(), rules, ask, granted);
            }
            match answer {
                Ok((decision, _)) => {
                    guard.succeeded();
                    if !decision.allowed {
                        this.remember_refusal(state, client.as_ref(), &decision, rules);
                    }
                    Outcome::Decided(decision)
                }
                Err(error) => {
                    this.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%error, "Redis could not decide");
                    guard.failed(&error);
                    this.without_redis(state, &limit, client.as_ref())
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
        lease: Duration,
        deadline: Instant,
    ) -> Result<Answered, CallError> {
        let spec = packed(limit, lease, server.clock.deadline_us(deadline));
        let (reply, at) = match &self.route {
            Route::Batched(queue) => {
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
                );
                let reply = tokio::time::timeout_at(deadline, call)
                    .await
                    .map_err(|_| CallError::Timeout)??;
                (Arc::new(reply), 1)
            }
        };
        if let Some(&now_ms) = reply.first() {
            server.clock.observe(now_ms);
        }
        decode(&reply, at, limit)
    }

    /// The failure policy's answer.
    fn without_redis(&self, state: u32, limit: &Limit, client: KeyRef<'_>) -> Outcome {
        self.fallback.fetch_add(1, Ordering::Relaxed);
        match (&self.local, self.on_error) {
            (Some(local), _) => Outcome::Decided(local.decide(state, limit, client)),
            (None, OnRedisError::Deny) => Outcome::Unavailable {
                retry_after: self.cooldown,
            },
            (None, _) => Outcome::PassThrough,
        }
    }
}
