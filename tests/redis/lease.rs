//! Leases (`redis_lease`) against a real redis-server: what the script grants and stores,
//! and that instances spending leases never admit more than the limit.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use testkit::*;
use tollgate::{RateLimitLayer, Rules};

async fn leasing(redis: &TestRedis, prefix: &str, rules: Rules, ttl: Duration) -> RateLimitLayer {
    on_test_redis(Limiter::builder().rules(rules), redis, prefix)
        .redis_lease(ttl)
        .build_layer()
        .await
        .unwrap_or_else(|e| panic!("build layer: {e}"))
}

/// One leasing instance with 160 tokens that do not refill within a test, and its app.
async fn one_instance(redis: &TestRedis, test: &str, ttl: Duration) -> (RateLimitLayer, Router) {
    let json = r#"{"default": {"capacity": 160, "refill_rate": 0.0001}}"#;
    let limits = leasing(redis, &unique_prefix(test), rules(json), ttl).await;
    let app = app(limits.clone());
    (limits, app)
}

/// Two leasing instances sharing one Redis and key prefix, and their apps.
async fn two_instances(
    redis: &TestRedis,
    test: &str,
    json: &str,
    ttl: Duration,
) -> ([RateLimitLayer; 2], [Router; 2]) {
    let prefix = unique_prefix(test);
    let layers = [
        leasing(redis, &prefix, rules(json), ttl).await,
        leasing(redis, &prefix, rules(json), ttl).await,
    ];
    let apps = layers.clone().map(app);
    (layers, apps)
}

#[tokio::test]
async fn one_instance_spends_its_leases_and_admits_exactly_the_capacity() {
    let redis = TestRedis::start();
    let (limits, app) = one_instance(&redis, "lease-one", Duration::from_secs(30)).await;
    let mut remaining = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        let response = send(&app, request("GET", "/", Some("a"))).await;
        match response.status() {
            StatusCode::OK => remaining.push(testkit::remaining(&response).unwrap()),
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // Every token, counted down one by one, whether Redis or a lease admitted it.
    assert_eq!(remaining, (0..160).rev().collect::<Vec<u32>>());
    assert_eq!(refused, 40);
    // Each call took 1 + 10 (1/16 of 160): about 15 calls for 160 requests, and one refusal
    // (the others are remembered).
    let calls = redis.evalsha_calls();
    assert!(calls <= 20, "{calls} script calls");
    let stats = limits.limiter().stats();
    assert_eq!(stats.allowed, 160);
    assert!(stats.store.leased >= 140, "{stats:?}");
}

/// Two instances sharing one Redis, each with its own leases: the day's 320 are never
/// exceeded, and leases spent to the end make it exactly 320.
#[tokio::test]
async fn instances_spending_leases_admit_exactly_the_limit() {
    let redis = TestRedis::start();
    let json = r#"{"default": {"limit": "320/day", "algorithm": "fixed_window"}}"#;
    clear_of_a_window_end(86_400).await;
    let (layers, apps) = two_instances(&redis, "lease-two", json, Duration::from_secs(30)).await;
    let mut admitted = 0;
    for n in 0..800 {
        let response = send(&apps[n % 2], request("GET", "/", Some("shared"))).await;
        if response.status() == StatusCode::OK {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 320);
    for layer in &layers {
        assert!(
            layer.limiter().stats().store.leased >= 100,
            "{:?}",
            layer.limiter().stats()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_instances_with_leases_never_exceed_the_limit() {
    let redis = TestRedis::start();
    let json = r#"{"default": {"limit": "320/day", "algorithm": "sliding_window"}}"#;
    clear_of_a_window_end(86_400).await;
    let (layers, apps) =
        two_instances(&redis, "lease-concurrent", json, Duration::from_secs(30)).await;
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let app = apps[n % 2].clone();
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
    // Never more than the limit. Each instance may end holding up to one lease (1/16 of
    // 320) it had no request left to spend on.
    assert!(admitted <= 320, "{admitted} admitted");
    assert!(admitted >= 320 - 2 * 20, "{admitted} admitted");
    for layer in &layers {
        assert!(
            layer.limiter().stats().store.leased > 0,
            "{:?}",
            layer.limiter().stats()
        );
    }
}

/// Concurrent requests of one client on one instance: one of them asks for a lease, and the
/// lease is spent even while Redis refuses the others (their refusals are remembered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_of_one_client_waste_no_lease() {
    let redis = TestRedis::start();
    let (limits, app) = one_instance(&redis, "lease-burst", Duration::from_secs(30)).await;
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, request("GET", "/", Some("c"))).await.status() })
        })
        .collect();
    let mut admitted = 0;
    for task in burst {
        if task.await.unwrap() == StatusCode::OK {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 20);
    admitted += statuses(&app, 200, || request("GET", "/", Some("c")))
        .await
        .iter()
        .filter(|s| **s == StatusCode::OK)
        .count();
    assert_eq!(admitted, 160, "{:?}", limits.limiter().stats());
    assert!(
        limits.limiter().stats().store.leased >= 100,
        "{:?}",
        limits.limiter().stats()
    );
}

#[tokio::test]
async fn a_lease_ends_after_its_ttl() {
    let redis = TestRedis::start();
    let (limits, app) = one_instance(&redis, "lease-ttl", Duration::from_millis(500)).await;
    // The second request must come while the lease lives: a run a busy machine stretched
    // past 400 ms is run again, for another client.
    until_one_run_fits(async |client| {
        let get = || request("GET", "/", Some(client));
        let leased = limits.limiter().stats().store.leased;
        let started = std::time::Instant::now();
        let first_two = statuses(&app, 2, get).await;
        if started.elapsed() >= Duration::from_millis(400) {
            return false;
        }
        assert_eq!(first_two, [StatusCode::OK; 2]);
        assert_eq!(limits.limiter().stats().store.leased, leased + 1);
        let calls = redis.evalsha_calls();
        tokio::time::sleep(Duration::from_millis(700)).await;
        // The 9 units left have ended: Redis decides (and leases again).
        let response = send(&app, get()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(redis.evalsha_calls(), calls + 1);
        assert_eq!(limits.limiter().stats().store.leased, leased + 1);
        // Redis counted the whole first lease as taken (160 - 1 - 10), unspent units
        // included.
        assert_eq!(testkit::remaining(&response), Some(148));
        true
    })
    .await;
}

#[tokio::test]
async fn a_ttl_under_a_millisecond_turns_leases_off() {
    let redis = TestRedis::start();
    let (limits, app) = one_instance(&redis, "lease-tiny", Duration::from_micros(500)).await;
    let answers = statuses(&app, 200, || request("GET", "/", Some("tiny"))).await;
    assert_eq!(
        answers.iter().filter(|s| **s == StatusCode::OK).count(),
        160
    );
    assert_eq!(limits.limiter().stats().store.leased, 0);
}

/// A token bucket's burst exceeds its capacity by at most the leases held when it starts
/// (1/16 of the capacity per instance) and the refill meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bucket_burst_stays_within_the_documented_bound() {
    let redis = TestRedis::start();
    let json = r#"{"default": {"capacity": 160, "refill_rate": 160}}"#;
    let (layers, apps) = two_instances(&redis, "lease-bound", json, Duration::from_secs(5)).await;
    let get = || request("GET", "/", Some("bursty"));
    // Both instances take leases, concurrently, then the bucket refills in Redis.
    let warm: Vec<_> = (0..28)
        .map(|n| {
            let app = apps[n % 2].clone();
            tokio::spawn(async move { send(&app, get()).await.status() })
        })
        .collect();
    for task in warm {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = std::time::Instant::now();
    let burst: Vec<_> = (0..8)
        .map(|n| {
            let app = apps[n % 2].clone();
            tokio::spawn(async move {
                let answers = statuses(&app, 50, get).await;
                answers.iter().filter(|s| **s == StatusCode::OK).count()
            })
        })
        .collect();
    let mut admitted = 0;
    for task in burst {
        admitted += task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bound = 160.0 + 2.0 * 10.0 + 160.0 * elapsed + 1.0;
    assert!(
        admitted as f64 <= bound,
        "{admitted} admitted in {elapsed:.3} s; at most {bound:.0}"
    );
    assert!(admitted >= 160, "{admitted} admitted");
    let leased: u64 = layers
        .iter()
        .map(|l| l.limiter().stats().store.leased)
        .sum();
    assert!(leased > 0, "the burst spent no lease");
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
    let calls = redis.evalsha_calls();
    assert_eq!(
        limits.limiter().stats().store.leased,
        1,
        "the second request spent the lease"
    );
    limits.limiter().set_rules(rules(json));
    assert_eq!(send(&app, get()).await.status(), StatusCode::OK);
    assert_eq!(redis.evalsha_calls(), calls + 1, "Redis decided again");
    assert_eq!(limits.limiter().stats().store.leased, 1);
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
    assert_eq!(redis.evalsha_calls(), 5);
    assert_eq!(limits.limiter().stats().store.leased, 0);
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
    assert_eq!(reply[8..10], [1, 6]);
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
    assert_eq!((reply[3], reply[8]), (1, 0));

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

/// A small deterministic generator for the property test below.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Asked {
    key: String,
    algorithm: u8,
    cost: f64,
    bands: Vec<(f64, f64)>,
    lease: f64,
    lease_us: f64,
}

/// Calls of several requests, mixed algorithms and band counts, leases asked for or not,
/// at a clock the test sets: every grant is admitted, at most what was asked, whole costs,
/// at least 1 ms and never past the ttl or the window's end; and what is stored is what a
/// request costing cost + lease, without a lease, would have stored.
#[test]
fn leases_granted_in_shared_calls_keep_their_invariants() {
    let redis = TestRedis::start();
    let mut c = redis.client();
    // The script with the clock read from two keys instead of TIME, and keys that do not
    // expire: their PX is in the test's time, Redis would count it in its own. (An expired
    // key is a full bucket, as the state it held would have become by then.)
    let px = "redis.call('SET', key, value, 'PX', format('%d', max(1, ceil(ttl_us / 1000))))";
    assert!(DECIDE_LUA.contains(px));
    let script = redis::Script::new(
        &DECIDE_LUA
            .replace(
                "redis.call('TIME')",
                "{redis.call('GET', 'clock:s'), redis.call('GET', 'clock:us')}",
            )
            .replace(px, "redis.call('SET', key, value)"),
    );
    let call = |c: &mut redis::Connection, prefix: &str, asked: &[Asked], lease: bool| {
        let mut invocation = script.prepare_invoke();
        for a in asked {
            invocation.key(format!("{prefix}:{}", a.key));
        }
        for a in asked {
            let (units, us) = if lease {
                (a.lease, a.lease_us)
            } else {
                (0.0, 0.0)
            };
            invocation.arg(spec(a.algorithm, a.cost, units, us, &a.bands));
        }
        values(&invocation.invoke::<Vec<u8>>(c).unwrap())
    };
    let stored = |c: &mut redis::Connection, prefix: &str| -> Vec<Option<Vec<u8>>> {
        (0..4)
            .map(|k| {
                redis::cmd("GET")
                    .arg(format!("{prefix}:k{k}"))
                    .query(c)
                    .unwrap()
            })
            .collect()
    };
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut now: i64 = 1_700_000_000_000_000;
    let mut granted = 0;
    for round in 0..2000 {
        now += rng.below(5) as i64 * rng.below(400_000) as i64;
        redis::pipe()
            .set("clock:s", now / 1_000_000)
            .set("clock:us", now % 1_000_000)
            .exec(&mut c)
            .unwrap();
        let mut asked: Vec<Asked> = (0..1 + rng.below(5))
            .map(|_| {
                let algorithm = 1 + rng.below(3) as u8;
                let bands = (0..1 + rng.below(3))
                    .map(|_| {
                        let capacity = (1 + rng.below(60)) as f64;
                        let second = match algorithm {
                            1 => [0.5, 1.0, 3.0, 10.0][rng.below(4) as usize],
                            _ => [200_000.0, 1_000_000.0, 3_000_000.0][rng.below(3) as usize],
                        };
                        (capacity, second)
                    })
                    .collect();
                Asked {
                    key: format!("k{}", rng.below(4)),
                    algorithm,
                    cost: (1 + rng.below(3)) as f64,
                    bands,
                    lease: rng.below(12) as f64,
                    lease_us: [0.0, 500.0, 1000.0, 100_000.0, 5_000_000.0][rng.below(5) as usize],
                }
            })
            .collect();
        let reply = call(&mut c, "leased", &asked, true);
        let mut at = 1;
        let mut taken = Vec::new();
        for a in &asked {
            let (units, ms) = (reply[at], reply[at + 1]);
            taken.push(units as f64);
            at += 2;
            // Five values per band: admitted, remaining, retry, reset, next unit.
            let admitted = (0..a.bands.len()).all(|k| reply[at + 5 * k] == 1);
            at += 5 * a.bands.len();
            let context = format!(
                "round {round}, {} at {now}: {units} units for {ms} ms",
                a.key
            );
            if units == 0 {
                assert_eq!(ms, 0, "{context}");
                continue;
            }
            granted += 1;
            assert!(admitted, "{context}: granted on a refusal");
            assert!(units as f64 <= a.lease, "{context}: more than asked");
            assert_eq!(units % a.cost as i64, 0, "{context}: not whole costs");
            assert!(
                ms >= 1 && ms as f64 <= a.lease_us / 1000.0,
                "{context}: lifetime"
            );
            if a.algorithm != 1 {
                let end = a.bands.iter().map(|(_, w)| {
                    let w = *w as i64;
                    (now / w + 1) * w - now
                });
                assert!(
                    ms * 1000 <= end.min().unwrap(),
                    "{context}: past the window"
                );
            }
        }
        // The same requests, each costing what it took (cost + lease), no lease asked.
        for (a, units) in asked.iter_mut().zip(taken) {
            a.cost += units;
        }
        let _ = call(&mut c, "shadow", &asked, false);
        assert_eq!(
            stored(&mut c, "leased"),
            stored(&mut c, "shadow"),
            "round {round}"
        );
    }
    assert!(granted > 500, "only {granted} leases granted");
}
