//! The behaviour every store passes, through the public `Limiter` API: take and peek over
//! multi-band rules, refusal and retry-after, costs, resets (here and, for a shared store,
//! on every instance), runtime entries (kept, listed, removed, and seen by every instance
//! of a shared store), usage statistics, health, and the tower layer on top, settling
//! reservations from responses (`settling.rs`).
//!
//! A later store operation adds its behaviour here, so that every store passes it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::{Router, routing::get};
use serde_json::json;
use tollgate::{
    BreakerState, CheckError, ClientKey, Event, Limiter, LimiterBuilder, OnRedisError, Query,
    RateLimitLayer, RuleTarget, SettleError,
};
use tower::ServiceExt;

use super::map_store::{MapStore, Shared};
use testkit::{TestCluster, TestRedis, clear_of_a_window_end, rules, unique_prefix};

/// A store under test, and how a limiter on it is built.
pub enum Backend<'a> {
    /// In this process, with runtime entries in a state file in this directory.
    Memory(PathBuf),
    /// The store written outside the crate: one shared map per prefix.
    Map(Mutex<HashMap<String, Arc<Shared>>>),
    /// A real Redis.
    Redis(&'a TestRedis),
    /// A real Redis Cluster.
    Cluster(&'a TestCluster),
}

impl Backend<'_> {
    /// What `Limiter::backend_name` says.
    fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::Map(_) => "map",
            Backend::Redis(_) | Backend::Cluster(_) => "redis",
        }
    }

    /// Whether limiters with the same prefix share their state, as instances would.
    fn shared(&self) -> bool {
        !matches!(self, Backend::Memory(_))
    }

    /// Whether the store is reached over the network, behind a circuit breaker and a
    /// failure policy.
    fn remote(&self) -> bool {
        matches!(self, Backend::Redis(_) | Backend::Cluster(_))
    }

    /// A limiter of `json` on this store, its state under `prefix`, recording usage.
    pub(super) async fn limiter(&self, json: &str, prefix: &str) -> Limiter {
        self.instance(json, prefix, "").await
    }

    /// [`limiter`](Self::limiter), named `instance` in its events (blank: by default).
    async fn instance(&self, json: &str, prefix: &str, instance: &str) -> Limiter {
        self.built(Limiter::builder().instance(instance), json, prefix)
            .await
    }

    /// [`limiter`](Self::limiter), from `builder`.
    async fn built(&self, builder: LimiterBuilder, json: &str, prefix: &str) -> Limiter {
        let builder = builder
            .rules(rules(json))
            .record_usage(true)
            .runtime_resync_interval(Duration::from_millis(200));
        let builder = match self {
            Backend::Memory(dir) => builder.runtime_state_file(dir.join(format!("{prefix}.json"))),
            Backend::Map(maps) => {
                let mut maps = maps.lock().expect("the maps");
                let shared = maps.entry(prefix.to_owned()).or_default();
                builder.store(MapStore::new(shared))
            }
            Backend::Redis(redis) => builder
                .redis_url(redis.url())
                .redis_prefix(prefix)
                .redis_timeout(Duration::from_secs(2)),
            Backend::Cluster(cluster) => builder
                .redis_cluster(cluster.urls())
                .redis_prefix(prefix)
                .redis_timeout(Duration::from_secs(2)),
        };
        let limiter = builder.build().await.expect("a limiter on the store");
        assert_eq!(limiter.backend_name(), self.name());
        limiter
    }
}

/// Runs every behaviour on `backend`.
pub async fn run(backend: &Backend<'_>) {
    take_and_peek_over_bands(backend).await;
    costs(backend).await;
    refusal_and_retry_after(backend).await;
    resets(backend).await;
    instances_share_the_store(backend).await;
    the_fleet_live(backend).await;
    reservations(backend).await;
    runtime_entries(backend).await;
    usage(backend).await;
    health(backend).await;
    the_layer_on_top(backend).await;
    super::settling::the_layer_settles_from_the_response(backend).await;
}

/// Two slow bands (nothing refills during the test): the smaller decides and is reported;
/// a peek takes nothing, a refusal says how long until the binding band has room.
async fn take_and_peek_over_bands(backend: &Backend<'_>) {
    let prefix = unique_prefix("bands");
    let limiter = backend
        .limiter(
            r#"{"default": {"limits": [{"capacity": 5, "refill_rate": 0.001},
                                       {"capacity": 3, "refill_rate": 0.0001}]}}"#,
            &prefix,
        )
        .await;
    let ann = ClientKey::id("ann");
    let peeked = limiter.peek(Query::new(&ann)).await.expect("a verdict");
    let before = peeked.decision().expect("a decision");
    assert!(before.allowed);
    assert_eq!((before.limit, before.remaining), (3, 3), "{before:?}");
    for left in [2, 1, 0] {
        let verdict = limiter.check(Query::new(&ann)).await.expect("a verdict");
        let decision = verdict.decision().expect("a decision");
        assert!(verdict.allowed(), "{decision:?}");
        assert_eq!((decision.limit, decision.remaining), (3, left));
    }
    let again = limiter.peek(Query::new(&ann)).await.expect("a verdict");
    assert!(!again.allowed(), "a peek sees the refusal to come");
    // A peek tells every band, in the rule's order: what is left, and when it is full.
    let bands: Vec<(u32, u32, u32)> = again
        .bands()
        .iter()
        .map(|band| (band.limit, band.remaining, band.used()))
        .collect();
    assert_eq!(bands, [(5, 2, 3), (3, 0, 3)]);
    assert_eq!(again.bands()[0].period, Duration::from_secs(5_000));
    assert_eq!(again.bands()[1].period, Duration::from_secs(30_000));
    let now = std::time::SystemTime::now();
    for (band, full_in) in again.bands().iter().zip([3_000, 30_000]) {
        // Three units used: back in 3 / rate seconds (give or take the test's time).
        let reset = band.reset.duration_since(now).unwrap_or_default().as_secs();
        assert!(
            (full_in - 60..=full_in + 1).contains(&reset),
            "{band:?}: full again in {reset} s, not about {full_in} s"
        );
    }
    assert!(
        refused_free(&limiter, &ann).await.bands().is_empty(),
        "a check lists no bands"
    );
    let refused = refused_free(&limiter, &ann).await;
    let decision = refused.decision().expect("a decision");
    assert_eq!((decision.limit, decision.remaining), (3, 0));
    // One unit of the binding band comes back in 10,000 s.
    assert!(
        decision.retry_after > Duration::from_secs(5_000),
        "{decision:?}"
    );
    assert_eq!(refused.retry_after(), Some(decision.retry_after));
    // Another client has its own bands.
    let bo = ClientKey::id("bo");
    assert!(
        limiter
            .check(Query::new(&bo))
            .await
            .expect("a verdict")
            .allowed()
    );
    let stats = limiter.stats();
    assert_eq!(
        (stats.allowed, stats.denied),
        (4, 2),
        "peeks are not counted"
    );
}

/// A check that is refused (and takes nothing).
async fn refused_free(limiter: &Limiter, client: &ClientKey) -> tollgate::Verdict {
    let refused = limiter.check(Query::new(client)).await.expect("a verdict");
    assert!(!refused.allowed());
    refused
}

/// A request's cost is taken from every band, refused whole when it does not fit, and
/// bounded by the smallest capacity.
async fn costs(backend: &Backend<'_>) {
    let prefix = unique_prefix("costs");
    let limiter = backend
        .limiter(
            r#"{"default": {"capacity": 10, "refill_rate": 0.0001}}"#,
            &prefix,
        )
        .await;
    let cy = ClientKey::id("cy");
    let remaining = async |cost: u32, peek: bool| {
        let query = Query::new(&cy).cost(cost);
        let verdict = if peek {
            limiter.peek(query).await
        } else {
            limiter.check(query).await
        };
        let verdict = verdict.expect("a verdict");
        (
            verdict.allowed(),
            verdict.decision().expect("a decision").remaining,
        )
    };
    assert_eq!(remaining(4, false).await, (true, 6));
    assert_eq!(remaining(4, false).await, (true, 2));
    assert!(!remaining(4, false).await.0, "4 do not fit in 2");
    assert_eq!(
        remaining(2, true).await,
        (true, 2),
        "the refusal took nothing"
    );
    assert_eq!(remaining(2, false).await, (true, 0));
    let err = limiter
        .check(Query::new(&cy).cost(11))
        .await
        .expect_err("more than the capacity");
    assert!(
        matches!(
            err,
            CheckError::Cost {
                cost: 11,
                max: 10,
                ..
            }
        ),
        "{err}"
    );
}

/// A refusal says when to come back, and coming back then is admitted.
async fn refusal_and_retry_after(backend: &Backend<'_>) {
    let prefix = unique_prefix("retry");
    let limiter = backend
        .limiter(r#"{"default": {"capacity": 1, "refill_rate": 2}}"#, &prefix)
        .await;
    let di = ClientKey::id("di");
    assert!(
        limiter
            .check(Query::new(&di))
            .await
            .expect("a verdict")
            .allowed()
    );
    let refused = limiter.check(Query::new(&di)).await.expect("a verdict");
    if !refused.allowed() {
        // A token every 500 ms: back within that (less, if time passed since the first).
        let wait = refused.retry_after().expect("a refusal's wait");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }
    let admitted = limiter
        .wait(Query::new(&di), Duration::from_secs(5))
        .await
        .expect("a verdict");
    assert!(admitted.allowed(), "{admitted:?}");
}

/// A reset forgets the client under every rule, or one rule, and no other client.
async fn resets(backend: &Backend<'_>) {
    let prefix = unique_prefix("resets");
    let limiter = backend
        .limiter(
            r#"{"default": {"limit": "1/hour"},
                "routes": [{"path": "/upload", "limit": "1/hour"}]}"#,
            &prefix,
        )
        .await;
    let (gina, hal) = (ClientKey::id("gina"), ClientKey::id("hal"));
    let allowed = async |client: &ClientKey, upload: bool| {
        let query = Query::new(client);
        let query = if upload {
            query.route("PUT", "/upload")
        } else {
            query
        };
        limiter.check(query).await.expect("a verdict").allowed()
    };
    for client in [&gina, &hal] {
        assert!(allowed(client, false).await && allowed(client, true).await);
        assert!(!allowed(client, false).await && !allowed(client, true).await);
    }
    limiter
        .reset_rule(&gina, "/upload")
        .await
        .expect("reset under one rule");
    assert!(allowed(&gina, true).await, "forgotten under /upload");
    assert!(!allowed(&gina, false).await, "the default keeps its state");
    limiter.reset(&gina).await.expect("reset");
    assert!(allowed(&gina, false).await, "forgotten under every rule");
    assert!(!allowed(&hal, false).await, "another client is not reset");
}

/// Two limiters on one shared store are two instances: one's admissions count for the
/// other, and one's reset frees the client for both.
async fn instances_share_the_store(backend: &Backend<'_>) {
    if !backend.shared() {
        return;
    }
    let prefix = unique_prefix("instances");
    let json = r#"{"default": {"limit": "1/hour"}}"#;
    let (a, b) = (
        backend.limiter(json, &prefix).await,
        backend.limiter(json, &prefix).await,
    );
    let ivy = ClientKey::id("ivy");
    assert!(
        a.check(Query::new(&ivy))
            .await
            .expect("a verdict")
            .allowed()
    );
    assert!(
        !b.check(Query::new(&ivy))
            .await
            .expect("a verdict")
            .allowed()
    );
    a.reset(&ivy).await.expect("reset");
    // Redis tells the other instance of the reset over pub/sub: what it remembers goes
    // within moments.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if b.check(Query::new(&ivy))
            .await
            .expect("a verdict")
            .allowed()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other instance never saw the reset"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A subscriber sees its instance's events, named; on a shared store, every instance's
/// decisions and summaries too, each once.
async fn the_fleet_live(backend: &Backend<'_>) {
    let prefix = unique_prefix("fleet");
    let json = r#"{"default": {"limit": "100/hour"}}"#;
    let a = backend.instance(json, &prefix, "instance-a").await;
    let mut heard_by_a = a.subscribe();
    let ada = ClientKey::id("ada");
    a.check(Query::new(&ada)).await.expect("a verdict");
    let decision = next_decision(&mut heard_by_a).await;
    assert_eq!(
        (&*decision.instance, decision.client.as_str()),
        ("instance-a", "id:ada")
    );
    if !backend.shared() {
        return;
    }
    let b = backend.instance(json, &prefix, "instance-b").await;
    let mut heard_by_b = b.subscribe();
    // Each sends the other its summaries once it finds it listening.
    for (events, other) in [
        (&mut heard_by_a, "instance-b"),
        (&mut heard_by_b, "instance-a"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, events.next()).await {
                Ok(Some(Event::Summary(summary))) if &*summary.instance == other => break,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the limiter is gone"),
                Err(_) => panic!("no summary of {other} within 5 s"),
            }
        }
    }
    let bo = ClientKey::id("bo");
    a.check(Query::new(&ada)).await.expect("a verdict");
    b.check(Query::new(&bo)).await.expect("a verdict");
    // Both decisions reach a, each once: its own is not heard again from the store.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut quiet_from = None;
    loop {
        let now = Instant::now();
        if quiet_from.is_some_and(|since: Instant| now > since + Duration::from_millis(500)) {
            break;
        }
        assert!(now < deadline, "decisions seen by a within 5 s: {seen:?}");
        let wait = Duration::from_millis(100);
        if let Ok(Some(Event::Decision(decision))) =
            tokio::time::timeout(wait, heard_by_a.next()).await
        {
            seen.push((
                decision.instance.to_string(),
                decision.client,
                decision.rule,
            ));
        }
        if quiet_from.is_none() && seen.len() >= 2 {
            quiet_from = Some(Instant::now());
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "instance-a".to_owned(),
                "id:ada".to_owned(),
                "default".to_owned()
            ),
            (
                "instance-b".to_owned(),
                "id:bo".to_owned(),
                "default".to_owned()
            ),
        ]
    );
}

/// What a peek says is left for `client`.
pub(super) async fn left(limiter: &Limiter, client: &ClientKey) -> u32 {
    let peeked = limiter.peek(Query::new(client)).await.expect("a peek");
    peeked.decision().expect("a limited rule").remaining
}

/// Reservations: an estimate taken at the check, the difference settled afterwards (given
/// back, or owed past empty), once; by id on another instance of a shared store; let go
/// when dropped; expired at the estimate; concurrent settlements on two instances adding up
/// exactly. The rules refill so slowly that nothing moves during the test.
async fn reservations(backend: &Backend<'_>) {
    let prefix = unique_prefix("reservations");
    // 1,000 units, one back every 1,000 s.
    let slow = r#"{"default": {"capacity": 1000, "refill_rate": 0.001}}"#;
    let a = backend.limiter(slow, &prefix).await;
    let ann = ClientKey::id("ann");
    let reserved = a
        .reserve(Query::new(&ann).cost(500))
        .await
        .expect("a verdict");
    assert_eq!(reserved.verdict().decision().unwrap().remaining, 500);
    let reservation = reserved.into_reservation().expect("held");
    let settled = reservation.settle(120).await.expect("settled");
    assert_eq!((settled.estimate(), settled.used()), (500, 120));
    assert_eq!(left(&a, &ann).await, 880, "380 given back");
    // Reserved 10, used 2,000: 1,000 more than there was, owed.
    let reservation = a
        .reserve(Query::new(&ann).cost(10))
        .await
        .unwrap()
        .into_reservation()
        .unwrap();
    reservation.settle(2_000).await.expect("settled");
    assert_eq!(left(&a, &ann).await, 0);
    let refused = a.check(Query::new(&ann)).await.unwrap();
    assert!(!refused.allowed(), "owed, not forgiven");
    // 880 - 10 - 1,990 = -1,120: 1,121 units at one per 1,000 s.
    let wait = refused.decision().unwrap().retry_after.as_secs();
    assert!((1_120_000..=1_121_001).contains(&wait), "{wait}");
    let refused = a.reserve(Query::new(&ann).cost(1)).await.unwrap();
    assert!(
        refused.reservation().is_none(),
        "nothing held for a refusal"
    );

    // Settled once; by id, on another instance when the store is shared; ids that are not.
    let other = match backend.shared() {
        true => backend.limiter(slow, &prefix).await,
        false => a.clone(),
    };
    let bo = ClientKey::Ip("203.0.113.9".parse().unwrap());
    let id = a
        .reserve(Query::new(&bo).cost(100))
        .await
        .unwrap()
        .into_reservation()
        .unwrap()
        .detach();
    assert_eq!(left(&other, &bo).await, 900, "held while detached");
    other.settle(&id, 40).await.expect("settled by id");
    assert_eq!(left(&a, &bo).await, 960);
    assert_eq!(a.settle(&id, 40).await, Err(SettleError::AlreadySettled));
    let mut forged = id.clone();
    forged.replace_range(0..1, if id.starts_with('0') { "1" } else { "0" });
    assert_eq!(a.settle(&forged, 1).await, Err(SettleError::Unknown));
    for junk in ["", "nope", "0.0.0"] {
        assert_eq!(a.settle(junk, 1).await, Err(SettleError::Unknown));
    }

    // Dropped, or expired: at the estimate, and no longer settled.
    let cy = ClientKey::id("cy");
    let dropped = a
        .reserve(Query::new(&cy).cost(100))
        .await
        .unwrap()
        .into_reservation()
        .unwrap();
    let id = dropped.id().to_owned();
    drop(dropped);
    // Let go in the background on a remote store: a moment, then never settled again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.settle(&id, 1).await, Err(SettleError::Unknown));
    assert_eq!(left(&a, &cy).await, 900);
    let brief = backend
        .built(
            Limiter::builder().reservation_timeout(Duration::from_secs(1)),
            slow,
            &prefix,
        )
        .await;
    let id = brief
        .reserve(Query::new(&cy).cost(100))
        .await
        .unwrap()
        .into_reservation()
        .unwrap()
        .detach();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(brief.settle(&id, 1).await, Err(SettleError::Unknown));
    // Its 100 stay taken: with the 100 dropped, on a shared store.
    match backend.shared() {
        true => assert_eq!(left(&a, &cy).await, 800),
        false => assert_eq!(left(&brief, &cy).await, 900),
    }

    // Concurrent settlements on two instances: 100 used nothing, 100 used 100 each.
    let big = r#"{"default": {"capacity": 100000, "refill_rate": 0.001}}"#;
    let prefix = unique_prefix("reservations-concurrent");
    let (a, b) = (
        backend.limiter(big, &prefix).await,
        backend.limiter(big, &prefix).await,
    );
    let dee = ClientKey::id("dee");
    let tasks: Vec<_> = (0..200u64)
        .map(|n| {
            let (limiter, dee) = (if n % 3 == 0 { a.clone() } else { b.clone() }, dee.clone());
            tokio::spawn(async move {
                let reserved = limiter
                    .reserve(Query::new(&dee).cost(50))
                    .await
                    .expect("a verdict");
                let reservation = reserved.into_reservation().expect("held");
                reservation.settle(n % 2 * 100).await.expect("settled");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a settlement");
    }
    if backend.shared() {
        assert_eq!(left(&a, &dee).await, 90_000);
        assert_eq!(left(&b, &dee).await, 90_000);
    } else {
        // Two instances in memory hold their own bands: 10,000 used across both.
        assert_eq!(left(&a, &dee).await + left(&b, &dee).await, 190_000);
    }
}

/// The next decision event, within 5 s.
async fn next_decision(events: &mut tollgate::Events) -> tollgate::DecisionEvent {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.next()).await {
            Ok(Some(Event::Decision(decision))) => return decision,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the limiter is gone"),
            Err(_) => panic!("no decision within 5 s"),
        }
    }
}

/// Runtime entries are kept, listed and removed, and a shared store's other instance
/// applies them too.
async fn runtime_entries(backend: &Backend<'_>) {
    let prefix = unique_prefix("runtime");
    let json = r#"{"default": {"limit": "5/hour"}}"#;
    let a = backend.limiter(json, &prefix).await;
    let b = match backend.shared() {
        true => Some(backend.limiter(json, &prefix).await),
        false => None,
    };
    let kim = ClientKey::id("kim");
    a.set_client_override(&kim, json!({"limit": "1/hour"}))
        .await
        .expect("kept");
    let entries = a.runtime_entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].target, RuleTarget::Client(kim.clone()));
    assert_eq!(entries[0].rule, json!({"limit": "1/hour"}));
    assert!(
        a.check(Query::new(&kim))
            .await
            .expect("a verdict")
            .allowed()
    );
    assert!(
        !a.check(Query::new(&kim))
            .await
            .expect("a verdict")
            .allowed(),
        "the override is in force"
    );
    let seen = |limiter: &Limiter| limiter.rules().clients().count();
    if let Some(b) = &b {
        until(|| seen(b) == 1, "the other instance applies the entry").await;
        assert_eq!(b.runtime_entries(), a.runtime_entries());
    }
    let route = a
        .set_route(json!({"path": "/api/new", "limit": "2/hour"}))
        .await
        .expect("kept");
    assert_eq!(route, "/api/new");
    assert!(a.rules().find("/api/new").is_some());
    assert!(a.remove_client_override(&kim).await.expect("removed"));
    assert!(
        !a.remove_client_override(&kim)
            .await
            .expect("nothing to remove")
    );
    assert!(a.remove_route("/api/new").await.expect("removed"));
    assert!(a.runtime_entries().is_empty());
    assert_eq!(seen(&a), 0);
    if let Some(b) = &b {
        until(
            || seen(b) == 0 && b.rules().find("/api/new").is_none(),
            "the other instance drops the entries",
        )
        .await;
        assert!(b.runtime_entries().is_empty());
    }
    // Kept: a limiter built afresh on the store starts with what is there.
    a.set_client_override(&kim, json!({"unlimited": true}))
        .await
        .expect("kept");
    drop(a);
    let again = backend.limiter(json, &prefix).await;
    assert_eq!(again.runtime_entries().len(), 1, "kept across a restart");
}

/// Waits up to 5 s for `done`.
async fn until(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Usage statistics count every check, allowed or denied, per client and in all.
async fn usage(backend: &Backend<'_>) {
    clear_of_a_window_end(3600).await;
    let prefix = unique_prefix("usage");
    let limiter = backend
        .limiter(r#"{"default": {"limit": "1/hour"}}"#, &prefix)
        .await;
    let lu = ClientKey::id("lu");
    for _ in 0..3 {
        limiter.check(Query::new(&lu)).await.expect("a verdict");
    }
    limiter.peek(Query::new(&lu)).await.expect("a verdict");
    let usage = limiter.usage(&lu).await.expect("usage");
    assert_eq!(usage.client, "id:lu");
    let hours: Vec<_> = usage
        .hours
        .values()
        .map(|c| (c.allowed, c.denied))
        .collect();
    assert_eq!(hours, [(1, 2)], "{usage:?}");
    assert_eq!(
        usage.rules_by_hour.values().next().expect("an hour")["default"].denied,
        2
    );
    let summary = limiter.usage_summary(5).await.expect("a summary");
    assert_eq!((summary.allowed, summary.denied), (1, 2), "{summary:?}");
    assert_eq!(summary.most_limited[0].client, "id:lu");
    assert_eq!(summary.most_limited[0].denied, 2);
}

/// The store's health and counts, as `Stats` and the failure policy show them.
async fn health(backend: &Backend<'_>) {
    let prefix = unique_prefix("health");
    let limiter = backend
        .limiter(r#"{"default": {"limit": "1/hour"}}"#, &prefix)
        .await;
    let mo = ClientKey::id("mo");
    limiter.check(Query::new(&mo)).await.expect("a verdict");
    limiter.check(Query::new(&mo)).await.expect("a verdict");
    let stats = limiter.stats();
    assert_eq!(stats.backend, backend.name());
    assert_eq!((stats.allowed, stats.denied), (1, 1));
    assert_eq!(stats.store.errors, 0, "{stats:?}");
    if backend.remote() {
        assert_eq!(stats.store.breaker, Some(BreakerState::Closed));
        assert_eq!(limiter.on_redis_error(), Some(OnRedisError::Local));
    } else {
        assert_eq!(stats.store.breaker, None, "nothing to lose");
        assert_eq!(limiter.on_redis_error(), None);
        assert!(stats.store.tracked_buckets >= 1, "{stats:?}");
    }
}

/// The tower layer decides through the store like any front.
async fn the_layer_on_top(backend: &Backend<'_>) {
    let prefix = unique_prefix("layer");
    let limiter = backend
        .limiter(r#"{"default": {"limit": "1/hour"}}"#, &prefix)
        .await;
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(RateLimitLayer::new(limiter));
    let request = || Request::get("/").body(Body::empty()).expect("a request");
    let first = app.clone().oneshot(request()).await.expect("a response");
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-ratelimit-remaining"], "0");
    let second = app.oneshot(request()).await.expect("a response");
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers().contains_key("retry-after"));
}
