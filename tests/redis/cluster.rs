//! The Redis backend on a real local Redis Cluster: correct decisions with keys spread over
//! every master, exact admission across instances, a dead master that only affects its own
//! slots, and a failover to a replica.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use testkit::*;
use tollgate::{BreakerState, OnRedisError, RateLimitLayer};

const DEADLINE: Duration = Duration::from_millis(50);
/// What a request may take beyond the deadline on a shared, noisy two-core machine: 430 ms
/// was seen with two CPU hogs beside the whole suite. A request stalled on a dead master
/// (a connect or a reply that never comes) would take seconds.
const MARGIN: Duration = Duration::from_millis(950);

async fn cluster_layer(
    cluster: &TestCluster,
    rules_json: &str,
    prefix: &str,
    timeout: Duration,
) -> RateLimitLayer {
    Limiter::builder()
        .rules(rules(rules_json))
        .redis_cluster(cluster.urls())
        .redis_prefix(prefix)
        .redis_timeout(timeout)
        .on_redis_error(OnRedisError::Local)
        .local_fallback_instances(4)
        .build_layer()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_right_and_keys_land_on_every_master() {
    let _serial = crate::ALONE.lock().await;
    clear_of_a_window_end(86_400).await;
    let cluster = TestCluster::start(3, 0);
    let prefix = unique_prefix("cluster");
    let limits = r#"{"default": {"capacity": 2, "refill_rate": 0.001},
                     "routes": [{"path": "/api/data", "limits": ["3/day", "5/day"], "algorithm": "sliding_window"}]}"#;
    let app = app(cluster_layer(&cluster, limits, &prefix, Duration::from_secs(5)).await);
    let (ok, no) = (StatusCode::OK, StatusCode::TOO_MANY_REQUESTS);
    for n in 0..60 {
        let client = format!("c{n}");
        assert_eq!(
            statuses(&app, 3, || request("GET", "/", Some(&client))).await,
            [ok, ok, no],
            "{client}"
        );
        let data = statuses(&app, 4, || request("GET", "/api/data", Some(&client))).await;
        assert_eq!(data, [ok, ok, ok, no], "{client}");
    }
    let mut per_master = Vec::new();
    for port in cluster.master_ports() {
        let node = (0..3).find(|i| cluster.port(*i) == port).unwrap();
        let keys: usize = redis::cmd("DBSIZE").query(&mut cluster.node(node)).unwrap();
        per_master.push(keys);
    }
    eprintln!("keys per master: {per_master:?}");
    assert_eq!(per_master.len(), 3);
    assert!(
        per_master.iter().all(|k| *k >= 10),
        "keys spread over every master: {per_master:?}"
    );
    assert_eq!(per_master.iter().sum::<usize>(), 120);

    // Leases work on a cluster as on a single Redis: every token, no more, and most of
    // them without a round trip. (In this test, to start one cluster fewer.)
    let leasing = Limiter::builder()
        .rules(rules(
            r#"{"default": {"capacity": 160, "refill_rate": 0.0001}}"#,
        ))
        .redis_cluster(cluster.urls())
        .redis_prefix(unique_prefix("cluster-lease"))
        .redis_timeout(Duration::from_secs(5))
        .on_redis_error(OnRedisError::Deny)
        .redis_lease(Duration::from_secs(30))
        .build_layer()
        .await
        .unwrap();
    let lease_app = testkit::app(leasing.clone());
    let answers = statuses(&lease_app, 200, || request("GET", "/", Some("leaser"))).await;
    assert_eq!(answers.iter().filter(|s| **s == ok).count(), 160);
    assert_eq!(answers.iter().filter(|s| **s == no).count(), 40);
    assert!(
        leasing.limiter().stats().store.leased >= 140,
        "{:?}",
        leasing.limiter().stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_through_two_instances_admit_exactly_the_capacity() {
    let _serial = crate::ALONE.lock().await;
    let cluster = TestCluster::start(3, 0);
    let prefix = unique_prefix("cluster-atomic");
    let limits = r#"{"default": {"capacity": 50, "refill_rate": 0.00001}}"#;
    let instances = [
        app(cluster_layer(&cluster, limits, &prefix, Duration::from_secs(5)).await),
        app(cluster_layer(&cluster, limits, &prefix, Duration::from_secs(5)).await),
    ];
    let (admitted, refused) = concurrent_admissions(&instances, 200).await;
    assert_eq!((admitted, refused), (50, 150));
}

/// Healthy: Redis decides (limit 1000). `ask` answers a request's limit and how long it took;
/// one a loaded machine answered past the deadline, by the fallback, is asked again (five
/// times at most).
async fn healthy(mut ask: impl AsyncFnMut() -> (Option<String>, Duration)) {
    for _ in 0..5 {
        let (limit, took) = ask().await;
        if limit.as_deref() == Some("1000") {
            return;
        }
        assert!(
            limit.as_deref() == Some("250") && took >= DEADLINE,
            "healthy: Redis decides, got {limit:?} in {took:?}"
        );
    }
    panic!("healthy: Redis decides, but five requests in a row missed the deadline");
}

/// For each client, whether Redis decided (limit 1000) or the local fallback (250).
async fn probe_all(
    app: &axum::Router,
    clients: &[String],
) -> Vec<(String, Option<String>, Duration)> {
    let mut seen = Vec::new();
    for client in clients {
        let started = Instant::now();
        let response = send(app, request("GET", "/", Some(client))).await;
        seen.push((
            client.clone(),
            header(&response, "x-ratelimit-limit").map(str::to_owned),
            started.elapsed(),
        ));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_only_affects_its_own_slots() {
    let _serial = crate::ALONE.lock().await;
    let mut cluster = TestCluster::start(3, 0);
    let prefix = unique_prefix("cluster-dead");
    let limits = r#"{"default": {"capacity": 1000, "refill_rate": 1000}}"#;
    let layer = cluster_layer(&cluster, limits, &prefix, DEADLINE).await;
    let app = app(layer.clone());
    let clients: Vec<String> = (0..90).map(|n| format!("d{n}")).collect();
    let master_of: Vec<u16> = clients
        .iter()
        .map(|c| cluster.master_port_of(&format!("{prefix}:{{default:id:{c}}}")))
        .collect();
    let victim = master_of[0];
    assert!(
        probe_all(&app, &clients)
            .await
            .iter()
            .all(|(_, limit, _)| limit.as_deref() == Some("1000"))
    );

    cluster.kill(victim);
    let killed_at = Instant::now();
    let mut worst = Duration::ZERO;
    let mut rounds = 0;
    let (mut live, mut late) = (0, 0);
    while killed_at.elapsed() < Duration::from_secs(2) {
        rounds += 1;
        for ((client, limit, took), master) in
            probe_all(&app, &clients).await.into_iter().zip(&master_of)
        {
            worst = worst.max(took);
            if *master == victim {
                assert_eq!(
                    limit.as_deref(),
                    Some("250"),
                    "{client} lives on the dead master: local fallback"
                );
                continue;
            }
            live += 1;
            if limit.as_deref() == Some("250") {
                // A live master that missed the deadline on a loaded machine: the fallback
                // is right, and it is not the dead master's doing.
                assert!(
                    took >= DEADLINE,
                    "{client} lives on a live master and was answered by the fallback in {took:?}"
                );
                late += 1;
            } else {
                assert_eq!(
                    limit.as_deref(),
                    Some("1000"),
                    "{client} lives on a live master: Redis decides"
                );
            }
        }
    }
    assert!(
        late * 20 <= live,
        "{late} of {live} requests to live masters missed the deadline"
    );
    let on_victim = master_of.iter().filter(|m| **m == victim).count();
    let stats = layer.limiter().stats();
    eprintln!(
        "dead master: {on_victim} of {} clients on it; {rounds} rounds in 2 s; worst latency {worst:?}; {stats:?}",
        clients.len()
    );
    assert!(on_victim > 0 && on_victim < clients.len());
    assert!(worst < DEADLINE + MARGIN, "worst latency {worst:?}");
    assert_eq!(
        stats.store.breaker,
        Some(BreakerState::Open),
        "the dead master's breaker is open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_takes_over_a_dead_master() {
    let _serial = crate::ALONE.lock().await;
    let mut cluster = TestCluster::start(3, 1);
    let prefix = unique_prefix("cluster-failover");
    let limits = r#"{"default": {"capacity": 1000, "refill_rate": 1000}}"#;
    let app = app(cluster_layer(&cluster, limits, &prefix, DEADLINE).await);
    let client = "f0".to_owned();
    let master = cluster.master_port_of(&format!("{prefix}:{{default:id:{client}}}"));
    let limit_now = |app: axum::Router, client: String| async move {
        header(
            &send(&app, request("GET", "/", Some(&client))).await,
            "x-ratelimit-limit",
        )
        .map(str::to_owned)
    };
    healthy(async || {
        let started = Instant::now();
        let limit = limit_now(app.clone(), client.clone()).await;
        (limit, started.elapsed())
    })
    .await;

    cluster.kill(master);
    let killed_at = Instant::now();
    let recovered = loop {
        if limit_now(app.clone(), client.clone()).await.as_deref() == Some("1000")
            && cluster.master_port_of(&format!("{prefix}:{{default:id:{client}}}")) != master
        {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(20),
            "no failover:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("failover: Redis decides the dead master's slots again {recovered:?} after the kill");
    cluster.wait_until_ok(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_server_in_place_of_a_master_does_not_wedge_its_slots() {
    let _serial = crate::ALONE.lock().await;
    let mut cluster = TestCluster::start(3, 0);
    let prefix = unique_prefix("cluster-wrong");
    let limits = r#"{"default": {"capacity": 1000, "refill_rate": 1000}}"#;
    let layer = cluster_layer(&cluster, limits, &prefix, DEADLINE).await;
    let app = app(layer.clone());
    let client = "w0";
    let victim = cluster.master_port_of(&format!("{prefix}:{{default:id:{client}}}"));
    let limit_now = || async {
        let started = Instant::now();
        let response = send(&app, request("GET", "/", Some(client))).await;
        let limit = header(&response, "x-ratelimit-limit").map(str::to_owned);
        (limit, started.elapsed())
    };
    healthy(limit_now).await;

    cluster.kill(victim);
    let wrong = WrongServer::start(victim, WrongServer::HTTP_400);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let (limit, took) = limit_now().await;
        assert_eq!(limit.as_deref(), Some("250"), "the local fallback decides");
        assert!(took < DEADLINE + MARGIN, "a request took {took:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(wrong);
    cluster.restart(victim);
    // A restarted master serves its slots only once it has rejoined (Redis waits 2 s); from
    // then on, tollgate must decide there within a second.
    cluster.wait_until_serving(victim, Duration::from_secs(10));
    // (Judged by when each request was sent, however long a busy machine takes to answer.)
    let back = Instant::now();
    loop {
        let sent = back.elapsed();
        if limit_now().await.0.as_deref() == Some("1000") {
            break;
        }
        assert!(
            sent < Duration::from_secs(1),
            "the master's slots are not decided by Redis 1 s after it is back: {:?}\n{}",
            layer.limiter().stats(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "wrong server in place of a master for 2 s; Redis decides its slots {:?} after it is back",
        back.elapsed()
    );
}
