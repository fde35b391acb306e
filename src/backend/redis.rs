//! Token buckets shared by every app instance, in Redis.
//!
//! One Lua script (`decide.lua`) makes decisions atomically, each over all of a rule's
//! bands, kept in one string key, using Redis `TIME` as the clock so instances with skewed
//! clocks agree. Keys are `<prefix>:{<rule id>:<client key>}`; the braces are a Redis
//! Cluster hash tag.
//!
//! On a single Redis, concurrent decisions are coalesced: a batcher task takes whatever is
//! queued (up to [`MAX_BATCH`]) and sends it as one script call, with at most
//! [`MAX_IN_FLIGHT`] calls outstanding. Nothing waits for a batch to fill: a lone request
//! goes out at once, alone. On a cluster, keys of one call would have to share a slot, so
//! every decision is its own call.
//!
//! Every call has a deadline. Failures feed a [`Breaker`]; when Redis cannot decide, the
//! [`OnRedisError`] policy does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManagerConfig;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::cluster::{Server, Servers, parse_cluster_slots};
use super::connection::Connection;
use super::memory::MemoryBackend;
use super::table::{BucketTable, Expiring};
use super::{Outcome, RedisCounts, Verdict};
use crate::Decision;
use crate::algorithm::{Algorithm, Combined};
use crate::breaker::{BreakerState, Permit, PermitGuard};
use crate::key::KeyRef;
use crate::policy::OnRedisError;
use crate::rules::Limit;

/// The decision script; `EVALSHA`, loaded at startup and again on `NOSCRIPT`.
pub(crate) const DECIDE_LUA: &str = include_str!("decide.lua");

/// Decisions sent in one script call at most.
pub(crate) const MAX_BATCH: usize = 64;
/// Script calls outstanding at once on a single Redis; while they are, decisions queue and
/// go out together in the next call.
pub(crate) const MAX_IN_FLIGHT: usize = 2;
/// Decisions queued at most; past that a request is decided by the failure policy.
const MAX_QUEUED: usize = 8192;
/// A lease takes at most this share of a band's capacity (1/16), so an instance never holds
/// more than a sixteenth of a limit that other instances could have used.
const LEASE_SHARE: u32 = 16;

/// How the layer reaches Redis and what it does without it.
#[derive(Debug, Clone)]
pub(crate) struct RedisConfig {
    pub(crate) url: String,
    /// Seed nodes of a Redis Cluster; when set, `url` is not used.
    pub(crate) cluster_nodes: Option<Vec<String>>,
    pub(crate) prefix: String,
    /// Deadline for each decision.
    pub(crate) timeout: Duration,
    /// Deadline for connecting at startup and for each reconnect attempt.
    pub(crate) connect_timeout: Duration,
    pub(crate) on_error: OnRedisError,
    /// The local fallback divides every bucket by this.
    pub(crate) local_fallback_instances: u32,
    pub(crate) breaker_failures: u32,
    pub(crate) breaker_cooldown: Duration,
    /// Bound of the local fallback's bucket table.
    pub(crate) max_tracked_buckets: usize,
    /// How long a lease lives; zero: no leases.
    pub(crate) lease: Duration,
}

impl RedisConfig {
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            cluster_nodes: None,
            prefix: "tollgate".to_owned(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            on_error: OnRedisError::Local,
            local_fallback_instances: 1,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_millis(500),
            max_tracked_buckets: super::memory::DEFAULT_MAX_KEYS,
            lease: Duration::ZERO,
        }
    }
}

/// Why Redis could not decide.
#[derive(Debug, Clone, thiserror::Error)]
enum CallError {
    #[error("no answer within the deadline")]
    Timeout,
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply of {0} values from the script")]
    Reply(usize),
    #[error("Redis ran the call after its deadline; it took nothing")]
    Late,
    #[error("not connected to the cluster yet")]
    NotConnected,
    #[error("{MAX_QUEUED} decisions already wait for Redis")]
    Overloaded,
}

/// Loads the script (on every master of a cluster), within `deadline`.
async fn load(
    script: &Script,
    connection: &mut Connection,
    deadline: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(deadline, script.load_async(connection)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {deadline:?}")),
    }
}

/// The units of a lease asked for with `limit`: whole multiples of its cost, at most
/// 1/[`LEASE_SHARE`] of its smallest band's capacity. Zero when that is less than one cost.
fn lease_units(limit: &Limit) -> u32 {
    let cost = limit.cost().max(1);
    let smallest = limit
        .bands()
        .iter()
        .map(|b| b.capacity())
        .min()
        .unwrap_or(0);
    smallest / LEASE_SHARE / cost * cost
}

/// One decision's script argument, packed as `decide.lua` reads it (little-endian): the
/// algorithm (a byte: 1 token bucket, 2 fixed window, 3 sliding window), the cost, the lease
/// asked for in units and its lifetime in µs, the deadline in µs of Redis `TIME` (0: none)
/// (f64 each), the number of bands (a byte), then each band's capacity and second parameter
/// (f64 each: refill rate per second, or window length in µs).
fn packed(limit: &Limit, lease: Duration, deadline_us: i64) -> Vec<u8> {
    let algorithm = limit.algorithm();
    let bands = limit.bands();
    let (units, lease_us) = match lease.as_micros() {
        0 => (0, 0.0),
        us => (lease_units(limit), us as f64),
    };
    let mut spec = Vec::with_capacity(34 + 16 * bands.len());
    spec.push(match algorithm {
        Algorithm::TokenBucket => 1,
        Algorithm::FixedWindow => 2,
        Algorithm::SlidingWindow => 3,
    });
    spec.extend(f64::from(limit.cost()).to_le_bytes());
    spec.extend(f64::from(units).to_le_bytes());
    spec.extend(lease_us.to_le_bytes());
    // Exact: µs of Unix time stay below 2^53 until the year 2255.
    spec.extend((deadline_us as f64).to_le_bytes());
    // Rules hold 1 to MAX_BANDS bands.
    spec.push(bands.len() as u8);
    for band in bands {
        let second = match algorithm {
            Algorithm::TokenBucket => band.refill_per_sec(),
            _ => band.spec().window_us as f64,
        };
        spec.extend(f64::from(band.capacity()).to_le_bytes());
        spec.extend(second.to_le_bytes());
    }
    spec
}

/// Runs the script over some decisions (key and packed limit each): `EVALSHA` with every
/// key, then every packed limit; [`Script`] loads it again after `NOSCRIPT`.
async fn run<'a>(
    script: &Script,
    connection: &mut Connection,
    decisions: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
) -> Result<Vec<i64>, redis::RedisError> {
    let mut invocation = script.prepare_invoke();
    for (key, _) in decisions.clone() {
        invocation.key(key);
    }
    for (_, spec) in decisions {
        invocation.arg(spec);
    }
    invocation.invoke_async(connection).await
}

/// A script reply shared by every decision in it, and the index where one decision's
/// answer starts.
type Answer = Result<(Arc<Vec<i64>>, usize), CallError>;

/// A decision waiting for the batcher, and where its answer goes.
struct Job {
    key: String,
    /// The limit, and any lease asked for, as [`packed`].
    spec: Vec<u8>,
    /// The limit's bands: the answer's length in the reply depends on it.
    bands: usize,
    /// When the request gives up waiting: the job is not sent after that.
    deadline: Instant,
    reply: oneshot::Sender<Answer>,
}

/// Sends queued decisions in batches until every sender is gone.
async fn batch(mut queue: mpsc::Receiver<Job>, connection: Connection, script: Arc<Script>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        if queue.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        // A request that gave up takes nothing from its bucket.
        let now = Instant::now();
        jobs.retain(|job| job.deadline > now && !job.reply.is_closed());
        let Some(deadline) = jobs.iter().map(|job| job.deadline).min() else {
            continue;
        };
        let taken = std::mem::replace(&mut jobs, Vec::with_capacity(MAX_BATCH));
        let (mut connection, script) = (connection.clone(), Arc::clone(&script));
        tokio::spawn(async move {
            let _permit = permit;
            let decisions = taken
                .iter()
                .map(|job| (job.key.as_str(), job.spec.as_slice()));
            let call = run(&script, &mut connection, decisions);
            let reply = match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(reply)) => Ok(Arc::new(reply)),
                Ok(Err(error)) => Err(CallError::Redis(error)),
                Err(_) => Err(CallError::Timeout),
            };
            let mut at = 1;
            for job in taken {
                let _ = job.reply.send(reply.clone().map(|reply| (reply, at)));
                at += 2 + 4 * job.bands;
            }
        });
    }
}

/// Reads `CLUSTER SLOTS` and gives each master its breaker; keeps the old map on failure.
async fn refresh_slots(servers: &Servers, connection: &mut Connection) {
    let Servers::Cluster(slots) = servers else {
        return;
    };
    let mut command = redis::cmd("CLUSTER");
    command.arg("SLOTS");
    let query = command.query_async::<redis::Value>(connection);
    match tokio::time::timeout(Duration::from_secs(1), query).await {
        Ok(Ok(reply)) => match parse_cluster_slots(&reply) {
            Some(ranges) => slots.update(ranges),
            None => tracing::debug!("unexpected CLUSTER SLOTS reply"),
        },
        Ok(Err(error)) => tracing::debug!(%error, "CLUSTER SLOTS failed"),
        Err(_) => tracing::debug!("CLUSTER SLOTS timed out"),
    }
}

/// Microseconds on a monotonic clock (from the first call in this process): when cached
/// refusals and leases end. A wall clock stepped back would stretch them.
fn monotonic_us() -> i64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let elapsed = START.get_or_init(std::time::Instant::now).elapsed();
    i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
}

/// A refusal from Redis, answered locally until it ends.
struct Refusal {
    /// When a request could be admitted again ([`monotonic_us`]; measured from when the
    /// answer arrived, so never earlier than Redis meant).
    until_us: i64,
    decision: Decision,
    /// The rules generation it was given under: after a change it no longer counts.
    rules: u64,
}

impl Expiring for Refusal {
    fn expires_at_us(&self) -> i64 {
        self.until_us
    }
}

/// Refusals remembered at most.
const MAX_REFUSALS: usize = 100_000;

/// Units Redis handed this instance ahead of time for one client under one rule: spent
/// here, without a round trip, until they run out or the lease ends. Redis took them from
/// the bucket when it granted them, so spending them cannot admit more than Redis gave.
///
/// One request at a time asks Redis for a lease for a client; the others ask for their own
/// cost only. So an instance normally holds one lease per client and rule (two can meet if
/// the table evicted the entry while a request was asking; they then merge and end with the
/// earlier).
struct Lease {
    units: u32,
    /// When the lease ends ([`monotonic_us`]; measured from when the call was sent, so never
    /// later than Redis meant).
    until_us: i64,
    /// The answer reported, its `remaining` counted down as the lease is spent.
    decision: Decision,
    /// The rules generation it was granted under: it counts only under those rules.
    rules: u64,
    /// While a request asks Redis for a new lease, until when (its deadline: then the ask is
    /// given up on, its request timed out or was dropped). It also tells that request's
    /// answer from another's. Zero: nobody is asking.
    asking_until_us: i64,
}

impl Expiring for Lease {
    fn expires_at_us(&self) -> i64 {
        self.until_us.max(self.asking_until_us)
    }
}

/// Leases held at most.
const MAX_LEASES: usize = 100_000;

/// What a request does about leases.
enum Leasing {
    /// It was admitted from a lease: the answer to report.
    Spent(Decision),
    /// It asks Redis for itself only.
    Ask,
    /// It asks Redis for a lease too; the number marks its ask in the lease table.
    AskLease(i64),
}

/// What Redis answered for one decision: the decision, and the lease it granted with it
/// (units, and how long it lives in ms), if any.
type Answered = (Decision, Option<(u32, i64)>);

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
    refusals: BucketTable<Refusal>,
    refusal_hits: AtomicU64,
    /// Units Redis leased to this instance; `None` when leases are off.
    leases: Option<BucketTable<Lease>>,
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
            refusals: BucketTable::new(MAX_REFUSALS),
            refusal_hits: AtomicU64::new(0),
            leases: (!config.lease.is_zero()).then(|| BucketTable::new(MAX_LEASES)),
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

    /// Spends `cost` units of this client's lease under rules generation `rules`, if it has
    /// that many left and has not ended. Otherwise: whether this request asks for a new
    /// lease (nobody is asking already), marked with its deadline.
    fn spend_lease(&self, state: u32, client: KeyRef<'_>, cost: u32, rules: u64) -> Leasing {
        let Some(leases) = &self.leases else {
            return Leasing::Ask;
        };
        let now = monotonic_us();
        let timeout_us = i64::try_from(self.timeout.as_micros()).unwrap_or(i64::MAX);
        let asking_until_us = now.saturating_add(timeout_us);
        leases.update(state, client, now, |lease| match lease {
            Some(lease) if lease.rules == rules => {
                if lease.until_us > now && lease.units >= cost {
                    lease.units -= cost;
                    lease.decision.remaining = lease.decision.remaining.saturating_sub(cost);
                    (Leasing::Spent(lease.decision), None)
                } else if lease.asking_until_us > now {
                    (Leasing::Ask, None)
                } else {
                    lease.asking_until_us = asking_until_us;
                    (Leasing::AskLease(asking_until_us), None)
                }
            }
            // Of newer rules than this request's: left to their requests.
            Some(lease) if lease.rules > rules => (Leasing::Ask, None),
            Some(stale) => {
                // Of older rules: worth nothing now.
                *stale = Lease {
                    units: 0,
                    until_us: 0,
                    decision: stale.decision,
                    rules,
                    asking_until_us,
                };
                (Leasing::AskLease(asking_until_us), None)
            }
            None => {
                let asking = Lease {
                    units: 0,
                    until_us: 0,
                    decision: Decision::allowed(0, 0, std::time::SystemTime::UNIX_EPOCH),
                    rules,
                    asking_until_us,
                };
                (Leasing::AskLease(asking_until_us), Some(asking))
            }
        })
    }

    /// The answer to the request whose ask for a lease is marked `ask` has come: keep the
    /// lease granted, if any, under rules generation `rules`, and let the next request ask.
    /// Units left from a lease before (fewer than one request's cost, unless two asks met)
    /// add to the new one, which then ends with the earlier of the two.
    fn lease_answered(
        &self,
        state: u32,
        client: KeyRef<'_>,
        rules: u64,
        ask: i64,
        granted: Option<(u32, i64, Decision)>,
    ) {
        let Some(leases) = &self.leases else {
            return;
        };
        let now = monotonic_us();
        leases.update(state, client, now, |existing| {
            let Some(lease) = existing else {
                // Forgotten meanwhile (a rules change or eviction): nothing to add to.
                return ((), None);
            };
            if lease.rules != rules {
                // The entry belongs to other rules now.
                return ((), None);
            }
            if lease.asking_until_us == ask {
                lease.asking_until_us = 0;
            }
            if let Some((units, until_us, mut decision)) = granted
                && rules == self.rules.load(Ordering::Acquire)
            {
                let left = if lease.until_us > now { lease.units } else { 0 };
                decision.remaining = decision.remaining.saturating_add(left);
                lease.units = units.saturating_add(left);
                lease.until_us = if left > 0 {
                    until_us.min(lease.until_us)
                } else {
                    until_us
                };
                lease.decision = decision;
            }
            ((), None)
        });
    }

    /// The refusal Redis gave this client under rules generation `rules`, if it has not
    /// ended.
    fn cached_refusal(&self, state: u32, client: KeyRef<'_>, rules: u64) -> Option<Decision> {
        let now = monotonic_us();
        self.refusals
            .update(state, client, now, |refusal| match refusal {
                Some(refusal) if refusal.until_us > now && refusal.rules == rules => {
                    let mut decision = refusal.decision;
                    decision.retry_after = Duration::from_micros((refusal.until_us - now) as u64);
                    (Some(decision), None)
                }
                _ => (None, None),
            })
    }

    /// Remembers a refusal Redis gave under rules generation `rules`, unless those are no
    /// longer in force.
    fn remember_refusal(&self, state: u32, client: KeyRef<'_>, decision: &Decision, rules: u64) {
        if rules != self.rules.load(Ordering::Acquire) {
            return;
        }
        let now = monotonic_us();
        let wait = i64::try_from(decision.retry_after.as_micros()).unwrap_or(i64::MAX);
        let refusal = Refusal {
            until_us: now.saturating_add(wait),
            decision: *decision,
            rules,
        };
        self.refusals
            .update(state, client, now, |existing| match existing {
                Some(existing) => {
                    *existing = refusal;
                    ((), None)
                }
                None => ((), Some(refusal)),
            });
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

/// One decision's answer in a script reply `{now_ms, then per decision: lease_units,
/// lease_ms, then per band: admitted, remaining, retry_after_ms, reset_after_ms}`; this
/// decision's starts at `at`. `lease_units` is -1 for a decision Redis reached after its
/// deadline: it decided and took nothing.
fn decode(reply: &[i64], at: usize, limit: &Limit) -> Result<Answered, CallError> {
    let bands = limit.bands();
    let (Some(&now_ms), Some(&[units, lease_ms]), Some(fields)) = (
        reply.first(),
        reply.get(at..at + 2),
        reply.get(at + 2..at + 2 + 4 * bands.len()),
    ) else {
        return Err(CallError::Reply(reply.len()));
    };
    if units < 0 {
        return Err(CallError::Late);
    }
    let mut combined = Combined::new();
    for (band, fields) in bands.iter().zip(fields.chunks_exact(4)) {
        let ms = |v: i64| v as f64 * 1000.0;
        combined.add(
            f64::from(band.capacity()),
            fields[0] == 1,
            fields[1] as f64,
            ms(fields[2]),
            ms(fields[3]),
        );
    }
    let lease = match (u32::try_from(units), lease_ms) {
        (Ok(units), ms) if units > 0 && ms > 0 => Some((units, ms)),
        _ => None,
    };
    Ok((combined.decision(now_ms.saturating_mul(1000)), lease))
}

/// The URL with any password replaced by `***`, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(json: &str) -> Limit {
        let rules = crate::Rules::from_json(json).unwrap();
        rules
            .lookup(&http::Method::GET, "/")
            .limit()
            .unwrap()
            .clone()
    }

    #[test]
    fn leases_ask_for_a_sixteenth_of_the_smallest_band_in_whole_costs() {
        let units = |json| lease_units(&limit(json));
        assert_eq!(
            units(r#"{"default": {"capacity": 15, "refill_rate": 1}}"#),
            0
        );
        assert_eq!(
            units(r#"{"default": {"capacity": 16, "refill_rate": 1}}"#),
            1
        );
        assert_eq!(
            units(r#"{"default": {"capacity": 1000, "refill_rate": 1}}"#),
            62
        );
        assert_eq!(
            units(r#"{"default": {"capacity": 160, "refill_rate": 1, "cost": 3}}"#),
            9
        );
        assert_eq!(
            units(r#"{"default": {"limits": ["1000/second", "320/hour"]}}"#),
            20
        );
        // Off: nothing asked for, whatever the capacity.
        let spec = packed(
            &limit(r#"{"default": {"capacity": 1000, "refill_rate": 1}}"#),
            Duration::ZERO,
            0,
        );
        assert_eq!(spec[9..25], [0; 16]);
        let spec = packed(
            &limit(r#"{"default": {"capacity": 1000, "refill_rate": 1}}"#),
            Duration::from_millis(100),
            1_764_000_000_123_456,
        );
        assert_eq!(spec[9..17], 62f64.to_le_bytes());
        assert_eq!(spec[17..25], 100_000f64.to_le_bytes());
        assert_eq!(spec[25..33], 1_764_000_000_123_456f64.to_le_bytes());
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis://:s3cret@host:6379"),
            "redis://:***@host:6379"
        );
        assert_eq!(redact("rediss://user:p@ss@host"), "rediss://user:***@host");
        assert_eq!(redact("redis://user@host"), "redis://user@host");
    }
}
