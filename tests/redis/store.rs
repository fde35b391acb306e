//! The Redis backend against a real redis-server: what it stores, atomicity across
//! instances, agreement with the memory backend, script reloads and a slow Redis.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use testkit::*;
use tollgate::BuildError;

/// A bucket's stored value: the algorithm byte, then the little-endian doubles.
fn bucket(c: &mut redis::Connection, key: &str) -> (u8, Vec<f64>) {
    let raw: Vec<u8> = redis::cmd("GET").arg(key).query(c).unwrap();
    assert_eq!((raw.len() - 1) % 8, 0, "{key}: {raw:?}");
    let doubles = raw[1..]
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (raw[0], doubles)
}

#[tokio::test]
async fn buckets_are_strings_under_the_documented_key_and_expire_when_full() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("keys");
    let store = Store::Redis(&redis, prefix.clone());
    let app = app(layer(&store, rules(r#"{
        "default": {"capacity": 20, "refill_rate": 5},
        "routes": [{"path": "/api/users/{id}", "methods": ["GET"], "capacity": 5, "refill_rate": 0.005}]
        }"#)).await);
    let sent = std::time::Instant::now();
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
    let kind: String = redis::cmd("TYPE").arg(&user_key).query(&mut c).unwrap();
    assert_eq!(kind, "string");
    // Token bucket (1), one band: tokens left, then Redis TIME in µs.
    let (algorithm, values) = bucket(&mut c, &user_key);
    assert_eq!(
        (algorithm, values.len(), values[0]),
        (1, 2, 4.0),
        "{values:?}"
    );
    let ts_micros = values[1] as u64;
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
    // One token short of full at 0.005 tokens/s: full again (and gone) 200 s after the
    // request, less the moments since.
    let pttl: i64 = redis::cmd("PTTL").arg(&user_key).query(&mut c).unwrap();
    let since = i64::try_from(sent.elapsed().as_millis()).unwrap();
    assert!(
        (200_000 - since - 1000..=200_000).contains(&pttl),
        "pttl {pttl}"
    );

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
    clear_of_a_window_end(86_400).await;
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
    // 4 tokens/s: a burst of 5 leaves 2 refused; 600 ms later 2 tokens are back. A run is
    // judged when its burst took under 200 ms and its last request went within 720 ms of
    // its first (2 tokens back, not 3); a busy machine's slower runs are run again.
    let limits = r#"{"default": {"capacity": 3, "refill_rate": 4}}"#;
    let redis = TestRedis::start();
    let (ok, no) = (StatusCode::OK, StatusCode::TOO_MANY_REQUESTS);
    for (name, store) in [
        ("memory", Store::Memory),
        ("redis", Store::Redis(&redis, unique_prefix("refill"))),
    ] {
        let app = app(layer(&store, rules(limits)).await);
        until_one_run_fits(async |client| {
            let get = || request("GET", "/", Some(client));
            let started = std::time::Instant::now();
            let mut seen = statuses(&app, 5, get).await;
            let burst = started.elapsed();
            tokio::time::sleep(Duration::from_millis(600)).await;
            seen.extend(statuses(&app, 3, get).await);
            if burst >= Duration::from_millis(200)
                || started.elapsed() >= Duration::from_millis(720)
            {
                return false;
            }
            assert_eq!(seen, [ok, ok, ok, no, no, ok, ok, no], "{name}");
            true
        })
        .await;
    }
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
        let err = Limiter::builder()
            .rules(rules(r#"{"default": {"capacity": 5, "refill_rate": 1}}"#))
            .redis_url(url)
            .build_layer()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BuildError::Store(store) if store.store() == "Redis"),
            "{url}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with("cannot use the Redis URL "),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        // What is not a Redis URL at all is told what one looks like.
        if url != "redis://:hunter2@127.0.0.1:notaport" {
            assert!(
                message.ends_with(&format!(
                    "{url}: it must start with redis:// (or redis+unix:// or unix:// for a Unix socket)"
                )),
                "{message}"
            );
        }
    }
}

#[tokio::test]
async fn every_band_and_algorithm_uses_the_documented_layout() {
    // The window indexes read below are this hour's and this day's.
    clear_of_a_window_end(3600).await;
    let redis = TestRedis::start();
    let prefix = unique_prefix("layout");
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
    let key = |rule: &str| format!("{prefix}:{{{rule}:id:f}}");
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as f64;

    // Token bucket, two bands: (tokens, ts) each.
    let (algorithm, v) = bucket(&mut c, &key("default"));
    assert_eq!((algorithm, v.len()), (1, 4), "{v:?}");
    assert_eq!((v[0], v[2]), (5.0, 1.0), "{v:?}");
    assert_eq!(v[1], v[3]);
    assert!((now_us - v[1]).abs() < 10e6, "{v:?}");

    // Fixed window, two bands: (window index, count) each; windows of an hour and a day.
    let (algorithm, v) = bucket(&mut c, &key("/api/data"));
    assert_eq!((algorithm, v.len()), (2, 4), "{v:?}");
    assert_eq!((v[1], v[3]), (1.0, 1.0), "{v:?}");
    assert_eq!(v[0], (now_us / 3_600e6).floor(), "{v:?}");
    assert_eq!(v[2], (now_us / 86_400e6).floor(), "{v:?}");
    // The key lives until its longest window (a day) ends, at most.
    let pttl: i64 = redis::cmd("PTTL")
        .arg(key("/api/data"))
        .query(&mut c)
        .unwrap();
    assert!(pttl > 0 && pttl <= 86_400_000, "{pttl}");

    // Sliding window, one band: (window index, count, previous window's count).
    let (algorithm, v) = bucket(&mut c, &key("/api/users/<id>"));
    assert_eq!((algorithm, &v[1..]), (3, &[1.0, 0.0][..]), "{v:?}");
}

#[tokio::test]
async fn values_of_another_type_or_algorithm_read_as_full_buckets() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("leftovers");
    let app = app(layer(
        &Store::Redis(&redis, prefix.clone()),
        rules(r#"{"default": {"capacity": 3, "refill_rate": 0.001}}"#),
    )
    .await);
    let mut c = redis.client();
    // A hash (an older layout), and a fixed window's value where a token bucket is now.
    let hash_key = format!("{prefix}:{{default:id:h}}");
    let _: () = redis::cmd("HSET")
        .arg(&hash_key)
        .arg("tokens")
        .arg(0)
        .query(&mut c)
        .unwrap();
    let mut window = vec![2u8];
    window.extend(1e9f64.to_le_bytes());
    window.extend(3.0f64.to_le_bytes());
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:{{default:id:w}}"))
        .arg(window)
        .query(&mut c)
        .unwrap();
    for client in ["h", "w"] {
        let response = send(&app, request("GET", "/", Some(client))).await;
        assert_eq!(response.status(), StatusCode::OK, "{client}");
        assert_eq!(remaining(&response), Some(2), "{client}");
    }
    let (algorithm, v) = bucket(&mut c, &hash_key);
    assert_eq!((algorithm, v[0]), (1, 2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_share_script_calls_and_stay_exact() {
    clear_of_a_window_end(86_400).await;
    let redis = TestRedis::start();
    let store = Store::Redis(&redis, unique_prefix("batched"));
    // Three algorithms and a two-band rule, so that one script call carries them all.
    let app = app(layer(
        &store,
        rules(
            r#"{
        "default": {"capacity": 30, "refill_rate": 0.00001},
        "routes": [
            {"path": "/api/data", "limits": ["20/day", "25/day"], "algorithm": "fixed_window"},
            {"path": "/api/users/{id}", "limit": "15/day", "algorithm": "sliding_window"},
            {"path": "/api/submit", "methods": ["GET"], "limits": ["10/day", "40/day"]}
        ]}"#,
        ),
    )
    .await);
    let before = redis.evalsha_calls();
    let paths = ["/", "/api/data", "/api/users/1", "/api/submit"];
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let app = app.clone();
            let path = paths[i % paths.len()];
            tokio::spawn(async move {
                let response = send(&app, request("GET", path, Some("many"))).await;
                (path, response.status())
            })
        })
        .collect();
    let mut admitted = std::collections::BTreeMap::new();
    for task in tasks {
        let (path, status) = task.await.unwrap();
        match status {
            StatusCode::OK => *admitted.entry(path).or_insert(0) += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{path}: unexpected {other}"),
        }
    }
    let expected = [
        ("/", 30),
        ("/api/data", 20),
        ("/api/submit", 10),
        ("/api/users/1", 15),
    ];
    assert_eq!(admitted.into_iter().collect::<Vec<_>>(), expected);
    // One call per decision would be about 400 (refusals are cached only once Redis has
    // answered). Queued decisions go out together: 8 or 9 calls when this was written.
    let calls = redis.evalsha_calls() - before;
    assert!(calls <= 100, "{calls} script calls for 400 decisions");
}

#[tokio::test]
async fn a_longer_window_after_a_reload_starts_afresh() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("lengthened");
    // An hour's window, then a day's; both requests in one hour.
    clear_of_a_window_end(3600).await;
    let hour = r#"{"default": {"limit": "1/hour", "algorithm": "fixed_window"}}"#;
    let layer = layer(&Store::Redis(&redis, prefix.clone()), rules(hour)).await;
    let app = app(layer.clone());
    let statuses = |app: Router| async move {
        let response = send(&app, request("GET", "/", Some("w"))).await;
        (response.status(), remaining(&response))
    };
    assert_eq!(statuses(app.clone()).await, (StatusCode::OK, Some(0)));
    assert_eq!(statuses(app.clone()).await.0, StatusCode::TOO_MANY_REQUESTS);

    // Same rule, a day's window: the hour window's count does not carry over, and the key
    // lives at most a day, not until some far-off window ends.
    layer.limiter().set_rules(rules(
        r#"{"default": {"limit": "100/day", "algorithm": "fixed_window"}}"#,
    ));
    assert_eq!(statuses(app.clone()).await, (StatusCode::OK, Some(99)));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}:{{default:id:w}}"))
        .query(&mut redis.client())
        .unwrap();
    assert!(pttl > 0 && pttl <= 86_400_000, "{pttl}");
}

#[tokio::test]
async fn refusals_are_answered_without_redis_until_they_end() {
    let redis = TestRedis::start();
    // A token a second: long enough a refusal for the requests below on a busy machine.
    let limits = layer(
        &Store::Redis(&redis, unique_prefix("refusals")),
        rules(r#"{"default": {"capacity": 2, "refill_rate": 1}}"#),
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
    let asked = redis.evalsha_calls();
    // Refused until the next token, a second after the first request: answered here.
    let again = send(&app, get()).await;
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&again, "retry-after"), Some("1"));
    assert_eq!(
        statuses(&app, 20, get).await,
        [StatusCode::TOO_MANY_REQUESTS; 20]
    );
    assert_eq!(
        redis.evalsha_calls(),
        asked,
        "no round trip while the refusal lasts"
    );
    assert_eq!(limits.limiter().stats().store.cached_refusals, 21);
    // Another client is not affected.
    assert_eq!(
        send(&app, request("GET", "/", Some("patient")))
            .await
            .status(),
        StatusCode::OK
    );

    // When the refusal ends, Redis decides again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while send(&app, get()).await.status() != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "still refused 10 s on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(redis.evalsha_calls() > asked + 1);

    // New rules may admit what the old ones refused: the remembered refusals are dropped.
    assert_eq!(
        statuses(&app, 2, get).await[1],
        StatusCode::TOO_MANY_REQUESTS
    );
    // (The bucket keeps its state across the change; the new rate refills it at once.)
    limits.limiter().set_rules(rules(
        r#"{"default": {"capacity": 10, "refill_rate": 100000}}"#,
    ));
    assert_eq!(send(&app, get()).await.status(), StatusCode::OK);
}

/// A request the script reaches after its deadline (Redis was stopped or busy, and the app
/// answered it without Redis) is not decided and takes nothing; one before it is decided.
#[test]
fn the_script_takes_nothing_past_a_request_deadline() {
    let redis = TestRedis::start();
    let mut c = redis.client();
    let (seconds, micros): (i64, i64) = redis::cmd("TIME").query(&mut c).unwrap();
    let now_us = (seconds * 1_000_000 + micros) as f64;
    let band = [(10.0, 1e-6)];
    let late = spec_with_deadline(1, 1.0, 0.0, 0.0, now_us - 1.0, &band);
    let reply = decide(&mut c, "k", &late);
    assert_eq!(reply[1..], [-1, 0, 0, 0, 0, 0, 0]);
    let exists: bool = redis::cmd("EXISTS").arg("k").query(&mut c).unwrap();
    assert!(!exists, "a late request writes nothing");

    let in_time = spec_with_deadline(1, 1.0, 0.0, 0.0, now_us + 60e6, &band);
    let reply = decide(&mut c, "k", &in_time);
    assert_eq!(reply[1..5], [0, 0, 1, 9]);
    // Without a deadline (0), as before.
    let reply = decide(&mut c, "k", &spec(1, 1.0, 0.0, 0.0, &band));
    assert_eq!(reply[1..5], [0, 0, 1, 8]);
    // A call mixing both: each request on its own deadline.
    let reply: Vec<u8> = redis::Script::new(DECIDE_LUA)
        .key("k")
        .key("other")
        .arg(&late)
        .arg(&in_time)
        .invoke(&mut c)
        .unwrap();
    let reply = values(&reply);
    assert_eq!(reply[1..8], [-1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(reply[8..12], [0, 0, 1, 9]);
    let left: Vec<u8> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    let tokens = f64::from_le_bytes(left[1..9].try_into().unwrap());
    assert!(
        (tokens - 8.0).abs() < 1e-3,
        "the late request took nothing: {tokens}"
    );
}

#[tokio::test]
async fn a_cluster_without_usable_seed_nodes_fails_the_build() {
    let build = |nodes: Vec<&str>| {
        Limiter::builder()
            .rules(rules(r#"{"default": {"capacity": 1, "refill_rate": 1}}"#))
            .redis_cluster(nodes)
            .build_layer()
    };
    let err = build(vec![]).await.unwrap_err();
    assert!(matches!(err, BuildError::Store(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "no Redis Cluster seed nodes: give at least one redis:// URL"
    );
    let err = build(vec!["redis://127.0.0.1:7000", "redis://:secret@host:port"])
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("seed node redis://:***@host:port is not a Redis URL"),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
}

#[tokio::test]
async fn channels_carry_the_database_so_deployments_in_other_databases_do_not_hear() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("channels");
    let mut limiters = Vec::new();
    for db in [0, 1, 2] {
        let limiter = tollgate::Limiter::builder()
            .rules(rules(r#"{"default": {"limit": "5/second"}}"#))
            .redis_url(format!("{}/{db}", redis.url()))
            .redis_prefix(&prefix)
            .build()
            .await
            .unwrap();
        limiters.push(limiter);
    }
    let mut channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(format!("{prefix}*"))
        .query(&mut redis.client())
        .unwrap();
    channels.sort();
    assert_eq!(
        channels,
        [
            format!("{prefix}:db1:resets"),
            format!("{prefix}:db1:runtime"),
            format!("{prefix}:db2:resets"),
            format!("{prefix}:db2:runtime"),
            format!("{prefix}:resets"),
            format!("{prefix}:runtime"),
        ]
    );
    // Each instance keeps its state in its own database.
    let client = tollgate::ClientKey::id("alice");
    limiters[2]
        .check(tollgate::Query::new(&client))
        .await
        .unwrap();
    let in_db = |db: u32| -> Vec<String> {
        let mut connection = redis.client();
        redis::cmd("SELECT").arg(db).exec(&mut connection).unwrap();
        redis::cmd("KEYS")
            .arg(format!("{prefix}:*alice*"))
            .query(&mut connection)
            .unwrap()
    };
    assert_eq!(in_db(2).len(), 1, "{:?}", in_db(2));
    assert!(in_db(0).is_empty() && in_db(1).is_empty());
}

/// When each band has one more unit (the IETF `t`) is computed alike by the script and in
/// memory, per algorithm: over a few takes of rules that move slowly, both say the same
/// moment, within the script's millisecond resolution and the time between the two asks.
#[tokio::test]
async fn memory_and_redis_agree_on_the_next_unit() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("next-unit");
    for algorithm in ["token_bucket", "fixed_window", "sliding_window"] {
        let json = format!(
            r#"{{"default": {{"limits": ["7/day", {{"capacity": 3, "refill_rate": 0.001}}],
                "algorithm": "{algorithm}"}}}}"#
        );
        let memory = Limiter::builder()
            .rules(rules(&json))
            .build()
            .await
            .unwrap();
        let shared = on_test_redis(Limiter::builder().rules(rules(&json)), &redis, &prefix)
            .build()
            .await
            .unwrap();
        let client = tollgate::ClientKey::id(algorithm);
        for take in 0..3 {
            let query = || tollgate::Query::new(&client);
            let (here, there) = (
                memory.check(query()).await.unwrap(),
                shared.check(query()).await.unwrap(),
            );
            let next = |verdict: &tollgate::Verdict| {
                verdict
                    .decision()
                    .and_then(|d| d.next_unit)
                    .unwrap_or_else(|| panic!("{algorithm}: no next unit in {verdict:?}"))
            };
            let (a, b) = (next(&here), next(&there));
            let apart = a
                .duration_since(b)
                .or_else(|_| b.duration_since(a))
                .unwrap();
            assert!(
                apart < Duration::from_millis(250),
                "{algorithm}, take {take}: memory {a:?}, Redis {b:?}"
            );
            let peeked = shared.peek(query()).await.unwrap();
            let later = next(&peeked);
            assert!(
                later.duration_since(std::time::SystemTime::now()).is_ok(),
                "{algorithm}: the next unit is ahead"
            );
        }
    }
}

/// A debt (a bucket below zero, a window counted past its capacity: what settling a
/// reservation that used more than it reserved leaves) is read alike by the script and in
/// memory: the same refusal, the same wait and the same reset, within the moments between
/// the two asks. The debt is written into Redis as the script stores it, and made in memory
/// by a settlement.
#[tokio::test]
async fn memory_and_redis_agree_on_a_debt() {
    use std::time::{SystemTime, UNIX_EPOCH};
    use tollgate::backend::{BandStates, Mode};
    clear_of_a_window_end(3600).await;
    let redis = TestRedis::start();
    let prefix = unique_prefix("debt");
    let mut connection = redis.client();
    let scenarios = [
        (1u8, "token_bucket"),
        (2, "fixed_window"),
        (3, "sliding_window"),
    ]
    .into_iter()
    .flat_map(|(byte, algorithm)| [(byte, algorithm, 0u64), (byte, algorithm, 1)]);
    for (byte, algorithm, hours_ago) in scenarios {
        let json = format!(r#"{{"default": {{"limit": "10/hour", "algorithm": "{algorithm}"}}}}"#);
        let rules = rules(&json);
        let limit = rules.default_rule().limit().unwrap().clone();
        // In memory: one reserved `hours_ago`, 26 used.
        let now = SystemTime::now();
        let then = now - Duration::from_secs(3600 * hours_ago);
        let mut bands = BandStates::default();
        assert!(bands.decide(&limit, 1, Mode::Take, then).allowed);
        bands.settle(&limit, 25, then, then);
        let here = bands.decide(&limit, 1, Mode::Take, now);
        assert!(!here.allowed, "{algorithm}, {hours_ago} h later: owed");
        // In Redis: the same state, as the script stores it.
        let now_us = then.duration_since(UNIX_EPOCH).unwrap().as_micros() as f64;
        let window_us = 3600e6;
        let values: Vec<f64> = match byte {
            1 => vec![10.0 - 26.0, now_us],
            // A window's debt is its count stored negative.
            2 => vec![(now_us / window_us).floor(), -26.0],
            _ => vec![(now_us / window_us).floor(), -26.0, 0.0],
        };
        let mut value = vec![byte];
        for v in values {
            value.extend_from_slice(&v.to_le_bytes());
        }
        let name = format!("debt-{algorithm}-{hours_ago}");
        let key = format!("{prefix}:{{default:id:{name}}}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .query(&mut connection)
            .unwrap();
        let shared = on_test_redis(Limiter::builder().rules(rules), &redis, &prefix)
            .build()
            .await
            .unwrap();
        let client = tollgate::ClientKey::id(name);
        let there = shared
            .check(tollgate::Query::new(&client))
            .await
            .unwrap()
            .decision()
            .unwrap();
        assert!(
            !there.allowed,
            "{algorithm}, {hours_ago} h later: owed in Redis too"
        );
        let close = |a: SystemTime, b: SystemTime| {
            let apart = a
                .duration_since(b)
                .or_else(|_| b.duration_since(a))
                .unwrap();
            apart < Duration::from_secs(2)
        };
        assert!(
            close(
                now + here.retry_after,
                SystemTime::now() + there.retry_after
            ),
            "{algorithm}: memory waits {:?}, Redis {:?}",
            here.retry_after,
            there.retry_after
        );
        assert!(
            close(here.reset, there.reset),
            "{algorithm}: memory is full at {:?}, Redis at {:?}",
            here.reset,
            there.reset
        );
        assert!(
            here.retry_after > Duration::from_secs(3600) || byte == 1 || hours_ago > 0,
            "{algorithm}: a window owes past its end: {:?}",
            here.retry_after
        );
    }

    // A count past the capacity that is no debt (a lowered capacity, stored positive)
    // carries nothing into the next window, in the script as in memory.
    let json = r#"{"default": {"limit": "10/hour", "algorithm": "fixed_window"}}"#;
    let window = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as f64
        / 3600e6)
        .floor();
    let mut value = vec![2u8];
    for v in [window - 1.0, 900.0] {
        value.extend_from_slice(&v.to_le_bytes());
    }
    let key = format!("{prefix}:{{default:id:lowered}}");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(value)
        .query(&mut connection)
        .unwrap();
    let shared = on_test_redis(Limiter::builder().rules(rules(json)), &redis, &prefix)
        .build()
        .await
        .unwrap();
    let verdict = shared
        .check(tollgate::Query::new(&tollgate::ClientKey::id("lowered")))
        .await
        .unwrap();
    assert!(
        verdict.allowed(),
        "900 counted last hour, no debt: {verdict:?}"
    );
}

/// Random sequences of checks, reservations, settlements (under, at and past the estimate)
/// and dropped reservations give the same answers in memory and from the script, for every
/// algorithm over two bands, within one hour window (nothing refills or ends meanwhile).
#[tokio::test]
async fn memory_and_redis_agree_on_reservations_replayed() {
    use tollgate::{ClientKey, Query, Reservation};
    clear_of_a_window_end(3600).await;
    let redis = TestRedis::start();
    let bands = [
        r#""limits": [{"capacity": 300, "refill_rate": 0.000001}, {"capacity": 1000, "refill_rate": 0.000001}]"#,
        r#""limits": ["300/hour", "1000/day"], "algorithm": "fixed_window""#,
        r#""limits": ["300/hour", "1000/day"], "algorithm": "sliding_window""#,
    ];
    for (n, bands) in bands.into_iter().enumerate() {
        let json = format!(r#"{{"default": {{{bands}}}}}"#);
        let memory = Limiter::builder()
            .rules(rules(&json))
            .build()
            .await
            .unwrap();
        let prefix = unique_prefix("replay");
        let shared = on_test_redis(Limiter::builder().rules(rules(&json)), &redis, &prefix)
            .build()
            .await
            .unwrap();
        let ann = ClientKey::id("ann");
        let mut open: Vec<(Reservation, Reservation)> = Vec::new();
        // A fixed sequence of pseudo-random numbers (a linear congruential generator).
        let mut seed: u64 = 0x5eed + n as u64;
        let mut next = |below: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % below
        };
        for step in 0..80 {
            let what = next(4);
            let cost = 1 + next(60) as u32;
            let label = format!("bands {n}, step {step}: op {what}, cost {cost}");
            match what {
                0 => {
                    let here = memory.check(Query::new(&ann).cost(cost)).await.unwrap();
                    let there = shared.check(Query::new(&ann).cost(cost)).await.unwrap();
                    assert_eq!(here.allowed(), there.allowed(), "{label}");
                }
                1 => {
                    let here = memory.reserve(Query::new(&ann).cost(cost)).await.unwrap();
                    let there = shared.reserve(Query::new(&ann).cost(cost)).await.unwrap();
                    assert_eq!(
                        here.verdict().allowed(),
                        there.verdict().allowed(),
                        "{label}"
                    );
                    if let (Some(a), Some(b)) = (here.into_reservation(), there.into_reservation())
                    {
                        open.push((a, b));
                    }
                }
                2 if !open.is_empty() => {
                    let (a, b) = open.swap_remove(next(open.len() as u64) as usize);
                    // Under, at or past the estimate.
                    let used = match next(3) {
                        0 => next(u64::from(a.estimate())),
                        1 => u64::from(a.estimate()),
                        _ => u64::from(a.estimate()) + next(400),
                    };
                    let here = a.settle(used).await.unwrap().decision();
                    let there = b.settle(used).await.unwrap().decision();
                    assert_eq!(here.remaining, there.remaining, "{label}: used {used}");
                }
                _ if !open.is_empty() => drop(open.swap_remove(next(open.len() as u64) as usize)),
                _ => {}
            }
            let left = |verdict: tollgate::Verdict| verdict.decision().unwrap().remaining;
            let here = left(memory.peek(Query::new(&ann)).await.unwrap());
            let there = left(shared.peek(Query::new(&ann)).await.unwrap());
            assert_eq!(here, there, "{label}: what is left");
        }
    }
}

/// A window gives a refund back only to the window the estimate was counted in: a
/// reservation made an hour ago (its key rewritten so) that used nothing gives nothing back to
/// this hour's window, while one of this hour does, and so does one written as the version
/// before wrote them (a bare estimate).
#[tokio::test]
async fn a_window_refunds_only_the_window_the_estimate_was_counted_in() {
    use std::time::{SystemTime, UNIX_EPOCH};
    use tollgate::{ClientKey, Query};
    clear_of_a_window_end(3600).await;
    let redis = TestRedis::start();
    let prefix = unique_prefix("refund-window");
    let json = r#"{"default": {"limit": "100/hour", "algorithm": "fixed_window"}}"#;
    let limiter = on_test_redis(Limiter::builder().rules(rules(json)), &redis, &prefix)
        .build()
        .await
        .unwrap();
    let mut connection = redis.client();
    // A bare estimate, as the version before wrote it: settled as one made now.
    for (name, hours_ago, left) in [("now", 0u64, 100), ("earlier", 1, 20), ("bare", 0, 100)] {
        let client = ClientKey::id(name);
        let reservation = limiter
            .reserve(Query::new(&client).cost(80))
            .await
            .unwrap()
            .into_reservation()
            .unwrap();
        let nonce = &reservation.id()[..32];
        let key = format!("{prefix}:{{default:id:{name}}}:r:{nonce}");
        let made = SystemTime::now() - Duration::from_secs(3600 * hours_ago);
        let made_us = made.duration_since(UNIX_EPOCH).unwrap().as_micros();
        let value = match name {
            "bare" => "80".to_owned(),
            _ => format!("80:{made_us}"),
        };
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .arg("KEEPTTL")
            .query(&mut connection)
            .unwrap();
        let settled = reservation.settle(0).await.unwrap();
        assert_eq!(settled.estimate(), 80, "{name}");
        assert_eq!(
            settled.decision().remaining,
            left,
            "{name}: made {hours_ago} h ago"
        );
    }
}
