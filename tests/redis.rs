//! The Redis backend against a real redis-server: what it stores, atomicity across
//! instances, agreement with the memory backend, script reloads and a slow Redis.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use tollgate::{BuildError, RateLimitLayer};

#[tokio::test]
async fn buckets_are_hashes_under_the_documented_key_and_expire_when_full() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("keys");
    let store = Store::Redis(&redis, prefix.clone());
    let app = app(layer(&store, rules(r#"{
        "default": {"capacity": 20, "refill_rate": 5},
        "routes": [{"path": "/api/users/{id}", "methods": ["GET"], "capacity": 5, "refill_rate": 0.5}]
        }"#)).await);
    assert_eq!(
        send(&app, request("GET", "/api/users/7", Some("alice")))
            .await
            .status(),
        StatusCode::OK
    );
    let mut by_ip = request("GET", "/", None);
    by_ip
        .headers_mut()
        .insert("x-forwarded-for", "192.0.2.1, 10.1.2.3".parse().unwrap());
    assert_eq!(send(&app, by_ip).await.status(), StatusCode::OK);

    let mut c = redis.client();
    let user_key = format!("{prefix}:{{/api/users/<id>@GET:id:alice}}");
    let fields: HashMap<String, String> =
        redis::cmd("HGETALL").arg(&user_key).query(&mut c).unwrap();
    assert_eq!(
        fields.get("tokens").map(String::as_str),
        Some("4"),
        "{fields:?}"
    );
    let ts_micros: u64 = fields["ts"].parse().unwrap();
    let now_micros = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap();
    assert!(
        now_micros.abs_diff(ts_micros) < 10_000_000,
        "ts {ts_micros} is Redis TIME in µs"
    );
    // One token short of full at 0.5 tokens/s: full again (and gone) in 2 s.
    let pttl: i64 = redis::cmd("PTTL").arg(&user_key).query(&mut c).unwrap();
    assert!((1000..=2000).contains(&pttl), "pttl {pttl}");

    let ip_key = format!("{prefix}:{{default:ip:10.1.2.3}}");
    let exists: bool = redis::cmd("EXISTS").arg(&ip_key).query(&mut c).unwrap();
    assert!(exists, "{ip_key} missing");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut c)
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_through_two_instances_admit_exactly_the_capacity() {
    let redis = TestRedis::start();
    let store = Store::Redis(&redis, unique_prefix("atomic"));
    let limits = r#"{"default": {"capacity": 50, "refill_rate": 0.00001}}"#;
    // Two layers, two connection managers: two app instances sharing one Redis.
    let instances = [
        app(layer(&store, rules(limits)).await),
        app(layer(&store, rules(limits)).await),
    ];
    let (admitted, refused) = concurrent_admissions(&instances, 200).await;
    assert_eq!((admitted, refused), (50, 150));
}

/// Status, limit and remaining for each request of a fixed sequence.
async fn run_sequence(
    store: &Store<'_>,
    limits: &str,
    plan: &[(&str, &str, &str)],
) -> Vec<(u16, Option<String>, Option<u32>)> {
    let app = app(layer(store, rules(limits)).await);
    let mut seen = Vec::with_capacity(plan.len());
    for (method, path, client) in plan {
        let response = send(&app, request(method, path, Some(client))).await;
        seen.push((
            response.status().as_u16(),
            header(&response, "x-ratelimit-limit").map(str::to_owned),
            remaining(&response),
        ));
    }
    seen
}

/// A fixed pseudo-random walk over clients and routes.
fn plan() -> Vec<(&'static str, &'static str, &'static str)> {
    let paths = [
        ("GET", "/"),
        ("GET", "/api/data"),
        ("GET", "/api/users/1"),
        ("GET", "/api/users/2"),
        ("POST", "/api/submit"),
        ("GET", "/api/submit"),
        ("GET", "/health"),
    ];
    let clients = ["a", "b", "c", "d"];
    let mut state = 0x2545_f491_u32;
    (0..150)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let (method, path) = paths[(state % paths.len() as u32) as usize];
            let client = clients[((state >> 8) % clients.len() as u32) as usize];
            (method, path, client)
        })
        .collect()
}

/// Day-long windows and negligible refill: the sequence runs well inside one window.
fn rules_for(algorithm: &str) -> String {
    format!(
        r#"{{
        "default": {{"capacity": 3, "refill_rate": 0.00001, "algorithm": "{algorithm}"}},
        "routes": [
            {{"path": "/api/users/{{id}}", "limits": ["6/day", "2/day"], "algorithm": "{algorithm}"}},
            {{"path": "/api/submit", "methods": ["POST"], "limit": "8/day", "cost": 3, "algorithm": "{algorithm}"}},
            {{"path": "/health", "unlimited": true}}
        ]}}"#
    )
}

#[tokio::test]
async fn memory_and_redis_decide_the_same_sequence_identically() {
    let redis = TestRedis::start();
    let plan = plan();
    for algorithm in ["token_bucket", "fixed_window", "sliding_window"] {
        let limits = rules_for(algorithm);
        let from_memory = run_sequence(&Store::Memory, &limits, &plan).await;
        let from_redis = run_sequence(
            &Store::Redis(&redis, unique_prefix(algorithm)),
            &limits,
            &plan,
        )
        .await;
        let denied = from_memory.iter().filter(|(s, _, _)| *s == 429).count();
        assert!(
            denied > 30 && denied < 120,
            "{algorithm}: the plan exercises both answers: {denied} denied"
        );
        for (i, (m, r)) in from_memory.iter().zip(&from_redis).enumerate() {
            assert_eq!(
                m, r,
                "{algorithm}: request {i} {:?}: memory {m:?}, redis {r:?}",
                plan[i]
            );
        }
    }
}

#[tokio::test]
async fn memory_and_redis_refill_alike() {
    // 4 tokens/s: a burst of 5 leaves 2 refused; 600 ms later 2 tokens are back.
    let limits = r#"{"default": {"capacity": 3, "refill_rate": 4}}"#;
    let redis = TestRedis::start();
    let mut results = Vec::new();
    for store in [Store::Memory, Store::Redis(&redis, unique_prefix("refill"))] {
        let app = app(layer(&store, rules(limits)).await);
        let mut seen = statuses(&app, 5, || request("GET", "/", Some("r"))).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        seen.extend(statuses(&app, 3, || request("GET", "/", Some("r"))).await);
        results.push(seen);
    }
    let (ok, no) = (StatusCode::OK, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(results[0], [ok, ok, ok, no, no, ok, ok, no], "memory");
    assert_eq!(results[1], results[0], "redis");
}

#[tokio::test]
async fn script_is_reloaded_after_script_flush() {
    let redis = TestRedis::start();
    let app = app(layer(
        &Store::Redis(&redis, unique_prefix("flush")),
        rules(r#"{"default": {"capacity": 5, "refill_rate": 0.001}}"#),
    )
    .await);
    assert_eq!(
        remaining(&send(&app, request("GET", "/", Some("f"))).await),
        Some(4)
    );
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis.client())
        .unwrap();
    // Still decided by Redis (headers present, state kept), not waved through.
    let response = send(&app, request("GET", "/", Some("f"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(remaining(&response), Some(3));
}

#[tokio::test]
async fn unusable_redis_urls_fail_the_build_with_the_reason() {
    for url in [
        "not a url",
        "redis://:hunter2@127.0.0.1:notaport",
        "http://127.0.0.1:6379",
    ] {
        let err = RateLimitLayer::builder()
            .rules(rules(r#"{"default": {"capacity": 5, "refill_rate": 1}}"#))
            .redis_url(url)
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, BuildError::Redis { .. }), "{url}: {err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("cannot connect to Redis at "),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }
}

#[tokio::test]
async fn every_band_and_algorithm_uses_the_documented_fields() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("fields");
    let app = app(layer(
        &Store::Redis(&redis, prefix.clone()),
        rules(
            r#"{
        "default": {"limits": ["6/day", "2/day"]},
        "routes": [
            {"path": "/api/data", "limits": ["5/hour", "9/day"], "algorithm": "fixed_window"},
            {"path": "/api/users/{id}", "limit": "4/hour", "algorithm": "sliding_window"}
        ]}"#,
        ),
    )
    .await);
    for path in ["/", "/api/data", "/api/users/1"] {
        assert_eq!(
            send(&app, request("GET", path, Some("f"))).await.status(),
            StatusCode::OK
        );
    }
    let mut c = redis.client();
    let fields = |c: &mut redis::Connection, rule: &str| -> Vec<String> {
        let mut names: Vec<String> = redis::cmd("HKEYS")
            .arg(format!("{prefix}:{{{rule}:id:f}}"))
            .query(c)
            .unwrap();
        names.sort();
        names
    };
    assert_eq!(
        fields(&mut c, "default"),
        ["tokens", "tokens:2", "ts", "ts:2"]
    );
    assert_eq!(
        fields(&mut c, "/api/data"),
        ["count", "count:2", "win", "win:2"]
    );
    assert_eq!(fields(&mut c, "/api/users/<id>"), ["count", "prev", "win"]);
    let counted: Vec<String> = redis::cmd("HMGET")
        .arg(format!("{prefix}:{{/api/data:id:f}}"))
        .arg("count")
        .arg("count:2")
        .query(&mut c)
        .unwrap();
    assert_eq!(counted, ["1", "1"]);
    // The fixed window key lives until its longest window (a day) ends, at most.
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}:{{/api/data:id:f}}"))
        .query(&mut c)
        .unwrap();
    assert!(pttl > 0 && pttl <= 86_400_000, "{pttl}");
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
async fn refusals_are_answered_without_redis_until_they_end() {
    let redis = TestRedis::spawn();
    let limits = layer(
        &Store::Redis(&redis, unique_prefix("refusals")),
        rules(r#"{"default": {"capacity": 2, "refill_rate": 5}}"#),
    )
    .await;
    let app = app(limits.clone());
    let get = || request("GET", "/", Some("eager"));
    assert_eq!(
        statuses(&app, 3, get).await,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let asked = evalsha_calls(&redis);
    // Refused until the next token, 200 ms after the first request: answered here.
    let again = send(&app, get()).await;
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&again, "retry-after"), Some("1"));
    assert_eq!(
        statuses(&app, 20, get).await,
        [StatusCode::TOO_MANY_REQUESTS; 20]
    );
    assert_eq!(
        evalsha_calls(&redis),
        asked,
        "no round trip while the refusal lasts"
    );
    assert_eq!(limits.stats().cached_refusals, 21);
    // Another client is not affected.
    assert_eq!(
        send(&app, request("GET", "/", Some("patient")))
            .await
            .status(),
        StatusCode::OK
    );

    // When the refusal ends, Redis decides again.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(send(&app, get()).await.status(), StatusCode::OK);
    assert!(evalsha_calls(&redis) > asked + 1);

    // New rules may admit what the old ones refused: the remembered refusals are dropped.
    assert_eq!(
        statuses(&app, 2, get).await[1],
        StatusCode::TOO_MANY_REQUESTS
    );
    // (The bucket keeps its state across the change; the new rate refills it at once.)
    limits.set_rules(rules(
        r#"{"default": {"capacity": 10, "refill_rate": 100000}}"#,
    ));
    assert_eq!(send(&app, get()).await.status(), StatusCode::OK);
}
