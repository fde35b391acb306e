//! Leases (`redis_lease`) against a real redis-server: what the script grants and stores,
//! and that instances spending leases never admit more than the limit.

mod common;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use common::*;
use tollgate::{RateLimitLayer, Rules};

const DECIDE_LUA: &str = include_str!("../src/backend/decide.lua");

async fn leasing(redis: &TestRedis, prefix: &str, rules: Rules, ttl: Duration) -> RateLimitLayer {
    RateLimitLayer::builder()
        .rules(rules)
        .redis_url(redis.url())
        .redis_prefix(prefix)
        .redis_timeout(Duration::from_secs(5))
        // Fail closed: a lease must never be confused with the local fallback.
        .on_redis_error(tollgate::OnRedisError::Deny)
        .redis_lease(ttl)
        .build()
        .await
        .unwrap_or_else(|e| panic!("build layer: {e}"))
}

/// How many times Redis ran EVALSHA, from its own statistics.
fn evalsha_calls(redis: &TestRedis) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.client())
        .unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

#[tokio::test]
async fn one_instance_spends_its_leases_and_admits_exactly_the_capacity() {
    let redis = TestRedis::start();
    let limits = leasing(
        &redis,
        &unique_prefix("lease-one"),
        rules(r#"{"default": {"capacity": 160, "refill_rate": 0.0001}}"#),
        Duration::from_secs(30),
    )
    .await;
    let app = app(limits.clone());
    let mut remaining = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        let response = send(&app, request("GET", "/", Some("a"))).await;
        match response.status() {
            StatusCode::OK => remaining.push(common::remaining(&response).unwrap()),
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // Every token, counted down one by one, whether Redis or a lease admitted it.
    assert_eq!(remaining, (0..160).rev().collect::<Vec<u32>>());
    assert_eq!(refused, 40);
    // Each call took 1 + 10 (1/16 of 160): about 15 calls for 160 requests, and one refusal
    // (the others are remembered).
    let calls = evalsha_calls(&redis);
    assert!(calls <= 20, "{calls} script calls");
    let stats = limits.stats();
    assert_eq!(stats.allowed, 160);
    assert!(stats.leased >= 140, "{stats:?}");
}

/// Two instances sharing one Redis, each with its own leases: the day's 320 are never
/// exceeded, and leases spent to the end make it exactly 320.
#[tokio::test]
async fn instances_spending_leases_admit_exactly_the_limit() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("lease-two");
    let json = r#"{"default": {"limit": "320/day", "algorithm": "fixed_window"}}"#;
    let a = app(leasing(&redis, &prefix, rules(json), Duration::from_secs(30)).await);
    let b = app(leasing(&redis, &prefix, rules(json), Duration::from_secs(30)).await);
    let mut admitted = 0;
    for n in 0..800 {
        let instance: &Router = if n % 2 == 0 { &a } else { &b };
        let response = send(instance, request("GET", "/", Some("shared"))).await;
        if response.status() == StatusCode::OK {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 320);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_instances_with_leases_never_exceed_the_limit() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("lease-concurrent");
    let json = r#"{"default": {"limit": "320/day", "algorithm": "sliding_window"}}"#;
    let a = app(leasing(&redis, &prefix, rules(json), Duration::from_secs(30)).await);
    let b = app(leasing(&redis, &prefix, rules(json), Duration::from_secs(30)).await);
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let app = if n % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..100 {
                    let response = send(&app, request("GET", "/", Some("shared"))).await;
                    if response.status() == StatusCode::OK {
                        admitted += 1;
                    }
                }
                admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap();
    }
    // Concurrent grants can replace a lease and give up its remainder: never more, but
    // possibly a little less, than the limit.
    assert!(admitted <= 320, "{admitted} admitted");
    assert!(admitted >= 320 - 2 * 20, "{admitted} admitted");
}

#[tokio::test]
async fn a_rules_change_drops_the_leases() {
    let redis = TestRedis::start();
    let json = r#"{"default": {"capacity": 160, "refill_rate": 1}}"#;
    let limits = leasing(
        &redis,
        &unique_prefix("lease-reload"),
        rules(json),
        Duration::from_secs(30),
    )
    .await;
    let app = app(limits.clone());
    let get = || request("GET", "/", Some("r"));
    assert_eq!(statuses(&app, 2, get).await, [StatusCode::OK; 2]);
    let calls = evalsha_calls(&redis);
    assert_eq!(
        limits.stats().leased,
        1,
        "the second request spent the lease"
    );
    limits.set_rules(rules(json));
    assert_eq!(send(&app, get()).await.status(), StatusCode::OK);
    assert_eq!(evalsha_calls(&redis), calls + 1, "Redis decided again");
    assert_eq!(limits.stats().leased, 1);
}

#[tokio::test]
async fn without_redis_lease_nothing_is_leased() {
    let redis = TestRedis::start();
    let limits = leasing(
        &redis,
        &unique_prefix("lease-off"),
        rules(r#"{"default": {"capacity": 160, "refill_rate": 1}}"#),
        Duration::ZERO,
    )
    .await;
    let app = app(limits.clone());
    statuses(&app, 5, || request("GET", "/", Some("o"))).await;
    assert_eq!(evalsha_calls(&redis), 5);
    assert_eq!(limits.stats().leased, 0);
}

/// `decide.lua` called directly, as the README documents it.
fn decide(c: &mut redis::Connection, key: &str, spec: &[u8]) -> Vec<i64> {
    redis::Script::new(DECIDE_LUA)
        .key(key)
        .arg(spec)
        .invoke(c)
        .unwrap()
}

/// algorithm, cost, lease units, lease µs, then (capacity, second parameter) per band.
fn spec(algorithm: u8, cost: f64, lease: f64, lease_us: f64, bands: &[(f64, f64)]) -> Vec<u8> {
    let mut spec = vec![algorithm];
    for value in [cost, lease, lease_us] {
        spec.extend(value.to_le_bytes());
    }
    spec.push(bands.len() as u8);
    for (capacity, second) in bands {
        spec.extend(capacity.to_le_bytes());
        spec.extend(second.to_le_bytes());
    }
    spec
}

fn doubles(c: &mut redis::Connection, key: &str) -> Vec<f64> {
    let raw: Vec<u8> = redis::cmd("GET").arg(key).query(c).unwrap();
    raw[1..]
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn the_script_grants_what_every_band_can_spare_and_stores_it_taken() {
    let redis = TestRedis::start();
    let mut c = redis.client();
    // Token bucket, two bands: 100 and 8 tokens. Asked for 5 at cost 2: the smaller band
    // can spare 6 beyond the cost, so 4 (whole costs) are granted, for the full 10 s.
    let reply = decide(
        &mut c,
        "t",
        &spec(1, 2.0, 5.0, 10_000_000.0, &[(100.0, 1e-9), (8.0, 1e-9)]),
    );
    assert_eq!(reply[1..3], [4, 10_000]);
    // The bands report only the request's cost taken...
    assert_eq!(reply[3..5], [1, 98]);
    assert_eq!(reply[7..9], [1, 6]);
    // ...and store the cost and the lease taken.
    let stored = doubles(&mut c, "t");
    assert!((stored[0] - 94.0).abs() < 1e-3, "{stored:?}");
    assert!((stored[2] - 2.0).abs() < 1e-3, "{stored:?}");

    // Nothing to spare: no lease, and the request is still admitted.
    let reply = decide(
        &mut c,
        "t",
        &spec(1, 2.0, 5.0, 10_000_000.0, &[(100.0, 1e-9), (8.0, 1e-9)]),
    );
    assert_eq!(reply[1..3], [0, 0]);
    assert_eq!(reply[3], 1);
    assert!((doubles(&mut c, "t")[2] - 0.0).abs() < 1e-3);

    // A refusal (by the second band) grants nothing.
    let reply = decide(
        &mut c,
        "t",
        &spec(1, 2.0, 5.0, 10_000_000.0, &[(100.0, 1e-9), (8.0, 1e-9)]),
    );
    assert_eq!(reply[1..3], [0, 0]);
    assert_eq!((reply[3], reply[7]), (1, 0));

    // No lease asked: none granted, only the cost taken.
    let reply = decide(&mut c, "u", &spec(1, 1.0, 0.0, 0.0, &[(100.0, 1.0)]));
    assert_eq!(reply[1..3], [0, 0]);
    assert!((doubles(&mut c, "u")[0] - 99.0).abs() < 1e-3);
}

#[test]
fn a_window_lease_ends_with_its_window() {
    let redis = TestRedis::start();
    let mut c = redis.client();
    for (algorithm, key) in [(2u8, "fixed"), (3, "sliding")] {
        // A 2 s window; a lease asked for 60 s.
        let window_us = 2_000_000.0;
        let reply = decide(
            &mut c,
            key,
            &spec(algorithm, 1.0, 5.0, 60_000_000.0, &[(100.0, window_us)]),
        );
        let (now_ms, units, lease_ms) = (reply[0], reply[1], reply[2]);
        let window_end_ms = (now_ms / 2000 + 1) * 2000;
        assert_eq!(units, 5, "{key}");
        assert!(
            lease_ms <= window_end_ms - now_ms && lease_ms >= 0,
            "{key}: lease of {lease_ms} ms at {now_ms}, window ends at {window_end_ms}"
        );
        // The window counts the request and the lease.
        assert!((doubles(&mut c, key)[1] - 6.0).abs() < 1e-9, "{key}");
    }
}
