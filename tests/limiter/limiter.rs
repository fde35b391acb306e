//! The `Limiter` API with no HTTP in sight, on memory, on a real Redis and on a real local
//! Redis Cluster: check (by route, by rule identity, by tier, with a cost), peek, reset
//! (across instances sharing a Redis) and wait.

use std::time::{Duration, Instant};

use testkit::*;
use tollgate::{CheckError, ClientKey, DecidedBy, Limiter, OnRedisError, Query, ResetError};

/// Every count the tests follow gives one token back in 12 minutes or more: none moves while
/// a test runs, however busy the machine.
const RULES: &str = r#"{
    "default": {"limit": "5/hour"},
    "routes": [
        {"path": "/api/data", "methods": ["GET"], "limits": [{"capacity": 10, "refill_rate": 0.001}, "100/hour"]},
        {"path": "/v1/completions", "capacity": 10000, "refill_rate": 0.001},
        {"path": "/health", "unlimited": true}
    ],
    "tiers": {"pro": {"default": {"limit": "50/day"}}},
    "clients": {"id:partner": {"limit": "500/hour"}}
}"#;

/// Which backend a scenario runs on.
enum Backend<'a> {
    Memory,
    Redis(&'a TestRedis),
    Cluster(&'a TestCluster),
}

async fn limiter(backend: &Backend<'_>, json: &str, prefix: &str) -> Limiter {
    let builder = Limiter::builder().rules(rules(json));
    let builder = match backend {
        Backend::Memory => builder,
        Backend::Redis(redis) => builder.redis_url(redis.url()),
        Backend::Cluster(cluster) => builder.redis_cluster(cluster.urls()),
    };
    builder
        .redis_prefix(prefix)
        .redis_timeout(Duration::from_secs(5))
        .on_redis_error(OnRedisError::Deny)
        .build()
        .await
        .unwrap_or_else(|e| panic!("build limiter: {e}"))
}

/// Who decides on this backend.
fn decider(backend: &Backend<'_>) -> DecidedBy {
    match backend {
        Backend::Memory => DecidedBy::Memory,
        _ => DecidedBy::Redis,
    }
}

async fn remaining(limiter: &Limiter, query: Query<'_>) -> u32 {
    let verdict = limiter.check(query).await.expect("a verdict");
    verdict.decision().expect("a limited rule").remaining
}

/// Check by route, by rule identity, by tier, with a client override and a cost.
async fn check_chooses_rule_tier_and_cost(backend: &Backend<'_>) {
    let limiter = limiter(backend, RULES, &unique_prefix("check")).await;
    let alice = ClientKey::id("alice");
    let by = decider(backend);

    let default = limiter.check(Query::new(&alice)).await.unwrap();
    assert!(default.allowed());
    assert_eq!((default.rule(), default.decided_by()), ("default", by));
    assert_eq!(default.decision().unwrap().remaining, 4);

    // By route: the rule the layer would pick for GET (and HEAD) /api/data.
    let data = limiter
        .check(Query::new(&alice).route("GET", "/api/data"))
        .await
        .unwrap();
    assert_eq!(data.rule(), "/api/data@GET");
    assert_eq!(data.decision().unwrap().remaining, 9);
    let head = limiter
        .check(Query::new(&alice).route("HEAD", "/api/data"))
        .await
        .unwrap();
    assert_eq!(head.rule(), "/api/data@GET");
    assert_eq!(head.decision().unwrap().remaining, 8);
    // POST names no rule for that path: the default.
    let post = limiter
        .check(Query::new(&alice).route("POST", "/api/data"))
        .await
        .unwrap();
    assert_eq!(post.rule(), "default");

    // By identity: the same state as by route.
    let named = limiter
        .check(Query::new(&alice).rule("/api/data@GET"))
        .await
        .unwrap();
    assert_eq!(named.decision().unwrap().remaining, 7);

    // A cost within the bands: an LLM call of 1,200 tokens.
    let tokens = Query::new(&alice)
        .route("POST", "/v1/completions")
        .cost(1200);
    assert_eq!(remaining(&limiter, tokens).await, 8800);
    assert_eq!(remaining(&limiter, tokens).await, 7600);

    // The tier's default, by tier and by name; a rule of the tier named with the tier.
    let pro = limiter.check(Query::new(&alice).tier("pro")).await.unwrap();
    assert_eq!(
        (pro.rule(), pro.decision().unwrap().remaining),
        ("pro:default", 49)
    );
    let pro_named = Query::new(&alice).rule("pro:default").tier("pro");
    assert_eq!(remaining(&limiter, pro_named).await, 48);

    // A client override applies under any rule it covers.
    let partner = ClientKey::id("partner");
    let verdict = limiter.check(Query::new(&partner)).await.unwrap();
    assert_eq!(verdict.decision().unwrap().limit, 500);

    // Unlimited: allowed, nothing counted.
    let health = limiter
        .check(Query::new(&alice).route("GET", "/health"))
        .await
        .unwrap();
    assert!(health.allowed() && health.decision().is_none());
    assert_eq!(health.decided_by(), DecidedBy::Unlimited);

    // Questions the rules cannot answer.
    let errors = [
        (
            Query::new(&alice).tier("gold"),
            "tier \"gold\" is not in the rules file",
        ),
        (
            Query::new(&alice).rule("/nowhere"),
            "no rule \"/nowhere\": the rules' identities are listed by `tollgate check-rules`",
        ),
        (
            Query::new(&alice).rule("default").tier("pro"),
            "no rule \"default\" in tier \"pro\"",
        ),
        (
            Query::new(&alice).route("GET", "/api/data").cost(11),
            "cost 11 cannot be taken under rule \"/api/data@GET\": it must be from 1 to 10",
        ),
        (Query::new(&alice).cost(0), "it must be from 1 to 5"),
    ];
    for (query, message) in errors {
        let err = limiter.check(query).await.unwrap_err();
        assert!(err.to_string().contains(message), "{err}");
    }
    assert!(matches!(
        limiter.check(Query::new(&alice).tier("gold")).await,
        Err(CheckError::UnknownTier(_))
    ));
    // Nothing was taken by them: 5 checks of the default so far... one.
    assert_eq!(remaining(&limiter, Query::new(&alice)).await, 2);
    let stats = limiter.stats();
    assert_eq!(stats.unknown_tiers, 2, "{stats:?}");
}

/// A peek says what a check would, and takes nothing: the state (and, on Redis, the key's
/// bytes) is unchanged.
async fn peek_takes_nothing(backend: &Backend<'_>, stored: impl Fn(&str) -> Option<Vec<u8>>) {
    let prefix = unique_prefix("peek");
    let limiter = limiter(backend, RULES, &prefix).await;
    let bob = ClientKey::id("bob");
    let data = || Query::new(&bob).route("GET", "/api/data");
    let key = format!("{prefix}:{{/api/data@GET:id:bob}}");

    // A client never seen: full bands, and no key is written.
    let fresh = limiter.peek(data()).await.unwrap();
    assert!(fresh.allowed());
    assert_eq!(fresh.decision().unwrap().remaining, 10);
    assert_eq!(stored(&key), None);

    for _ in 0..3 {
        limiter.check(data()).await.unwrap();
    }
    let before = stored(&key);
    let allowed_before = limiter.stats().allowed;
    for _ in 0..5 {
        let status = limiter.peek(data()).await.unwrap();
        assert!(status.allowed());
        assert_eq!(status.decision().unwrap().remaining, 7, "before any cost");
        assert_eq!(status.decided_by(), decider(backend));
    }
    assert_eq!(stored(&key), before, "the key is byte for byte the same");
    assert_eq!(
        limiter.stats().allowed,
        allowed_before,
        "peeks are not counted"
    );
    // A cost that does not fit: refused, with when it would, and still nothing taken.
    let big = limiter.peek(data().cost(8)).await.unwrap();
    assert!(!big.allowed());
    assert_eq!(big.decision().unwrap().remaining, 7);
    assert!(big.retry_after().unwrap() > Duration::ZERO);
    assert_eq!(stored(&key), before);
    assert_eq!(remaining(&limiter, data()).await, 6);
}

/// Reset forgets one rule's state, or every rule's, for one client only.
async fn reset_forgets_a_client(backend: &Backend<'_>, keys: impl Fn(&str) -> usize) {
    let prefix = unique_prefix("reset");
    let limiter = limiter(backend, RULES, &prefix).await;
    let (carol, dan) = (ClientKey::id("carol"), ClientKey::id("dan"));
    for client in [&carol, &dan] {
        for _ in 0..5 {
            limiter.check(Query::new(client)).await.unwrap();
            limiter
                .check(Query::new(client).route("GET", "/api/data"))
                .await
                .unwrap();
        }
    }
    assert!(!limiter.check(Query::new(&carol)).await.unwrap().allowed());
    assert_eq!(keys("carol"), 2);

    limiter.reset_rule(&carol, "default").await.unwrap();
    assert_eq!(keys("carol"), 1);
    assert_eq!(remaining(&limiter, Query::new(&carol)).await, 4);
    let data = Query::new(&carol).route("GET", "/api/data");
    assert_eq!(
        remaining(&limiter, data).await,
        4,
        "other rules keep their state"
    );

    limiter.reset(&carol).await.unwrap();
    assert_eq!(keys("carol"), 0);
    assert_eq!(remaining(&limiter, data).await, 9);
    assert_eq!(remaining(&limiter, Query::new(&carol)).await, 4);
    // Another client is untouched.
    assert!(!limiter.check(Query::new(&dan)).await.unwrap().allowed());
    assert_eq!(keys("dan"), 2);

    let err = limiter.reset_rule(&carol, "/nowhere").await.unwrap_err();
    assert!(matches!(err, ResetError::UnknownRule { .. }), "{err}");
}

/// `wait` sleeps as the refusal says and admits once; past its maximum it returns the
/// refusal at once; dropped while it sleeps, it takes nothing.
async fn wait_admits_once_within_its_maximum(backend: &Backend<'_>) {
    // A bucket of one refilled in 100 ms, to wait for; and one refilled in 1000 s, not worth
    // waiting for however slow the machine.
    let limiter = limiter(
        backend,
        r#"{"default": {"capacity": 1, "refill_rate": 10},
            "routes": [{"path": "/slow", "capacity": 1, "refill_rate": 0.001}]}"#,
        &unique_prefix("wait"),
    )
    .await;
    let erin = ClientKey::id("erin");
    // Until refused: a busy machine may give the token back between two checks.
    let mut checks = 0;
    let (asked, refused) = loop {
        let asked = Instant::now();
        let verdict = limiter.check(Query::new(&erin)).await.unwrap();
        if !verdict.allowed() {
            break (asked, verdict);
        }
        checks += 1;
        assert!(
            checks < 100,
            "100 checks admitted in a row by a bucket of one"
        );
    };
    let token_in = refused.retry_after().unwrap();
    let allowed_before = limiter.stats().allowed;
    let admitted = limiter
        .wait(Query::new(&erin), Duration::from_secs(5))
        .await
        .unwrap();
    let waited = asked.elapsed();
    assert!(admitted.allowed());
    assert_eq!(limiter.stats().allowed, allowed_before + 1, "one admission");
    assert_eq!(admitted.decision().unwrap().remaining, 0);
    // Not before the token the refusal announced (give or take a clock's millisecond).
    assert!(
        waited + Duration::from_millis(2) >= token_in,
        "it slept: {waited:?} for a token in {token_in:?}"
    );

    // Not worth waiting: the refusal, without sleeping for it.
    let slow = || Query::new(&erin).route("GET", "/slow");
    assert!(limiter.check(slow()).await.unwrap().allowed());
    let started = Instant::now();
    let refused = limiter
        .wait(slow(), Duration::from_millis(20))
        .await
        .unwrap();
    assert!(!refused.allowed());
    let retry_after = refused.retry_after().unwrap();
    assert!(retry_after > Duration::from_millis(20), "{retry_after:?}");
    assert!(
        started.elapsed() < retry_after,
        "returned before the wait it refused to make"
    );

    // Dropped while sleeping: nothing taken.
    let allowed_before = limiter.stats().allowed;
    let dropped = tokio::time::timeout(
        Duration::from_millis(30),
        limiter.wait(slow(), Duration::from_secs(5000)),
    )
    .await;
    assert!(dropped.is_err(), "still waiting when dropped");
    assert_eq!(limiter.stats().allowed, allowed_before);
    // Errors come back as they are.
    assert!(
        limiter
            .wait(Query::new(&erin).tier("gold"), Duration::from_secs(1))
            .await
            .is_err()
    );
}

/// The Redis keys of `client` under `prefix`, on one Redis.
fn keys_on(redis: &TestRedis, prefix: &str, client: &str) -> usize {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*:id:{client}}}"))
        .query(&mut redis.client())
        .unwrap();
    keys.len()
}

fn get_on(redis: &TestRedis, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut redis.client())
        .unwrap()
}

#[tokio::test]
async fn check_on_memory() {
    check_chooses_rule_tier_and_cost(&Backend::Memory).await;
}

#[tokio::test]
async fn check_on_redis() {
    let redis = TestRedis::start();
    check_chooses_rule_tier_and_cost(&Backend::Redis(&redis)).await;
}

#[tokio::test]
async fn peek_on_memory() {
    peek_takes_nothing(&Backend::Memory, |_| None).await;
}

#[tokio::test]
async fn peek_on_redis_leaves_the_key_unchanged() {
    let redis = TestRedis::start();
    peek_takes_nothing(&Backend::Redis(&redis), |key| get_on(&redis, key)).await;
}

/// Memory has no keys to count: the decisions show the reset.
#[tokio::test]
async fn reset_on_memory() {
    let limiter = limiter(&Backend::Memory, RULES, "memory").await;
    let carol = ClientKey::id("carol");
    for _ in 0..6 {
        limiter.check(Query::new(&carol)).await.unwrap();
    }
    assert!(!limiter.check(Query::new(&carol)).await.unwrap().allowed());
    limiter.reset(&carol).await.unwrap();
    assert_eq!(remaining(&limiter, Query::new(&carol)).await, 4);
}

#[tokio::test]
async fn reset_on_redis() {
    let redis = TestRedis::start();
    let backend = Backend::Redis(&redis);
    // The prefix is made inside; count every key of the client, whatever the prefix.
    reset_forgets_a_client(&backend, |client| keys_on(&redis, "t*", client)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_on_memory() {
    wait_admits_once_within_its_maximum(&Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_on_redis() {
    let redis = TestRedis::start();
    wait_admits_once_within_its_maximum(&Backend::Redis(&redis)).await;
}

/// Another instance's remembered refusals and leases are forgotten when one instance
/// resets the client: over Redis pub/sub, within about 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_reaches_every_instance_sharing_the_redis() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("reset-shared");
    let json = r#"{"default": {"capacity": 32, "refill_rate": 0.0001},
                   "routes": [{"path": "/leased", "capacity": 320, "refill_rate": 0.0001}]}"#;
    let build = || async {
        Limiter::builder()
            .rules(rules(json))
            .redis_url(redis.url())
            .redis_prefix(&prefix)
            .redis_timeout(Duration::from_secs(5))
            .on_redis_error(OnRedisError::Deny)
            .redis_lease(Duration::from_secs(60))
            .build()
            .await
            .unwrap()
    };
    let (a, b) = (build().await, build().await);
    let frank = ClientKey::id("frank");

    // B spends the whole default bucket, then remembers Redis's refusal.
    while b.check(Query::new(&frank)).await.unwrap().allowed() {}
    let refused = b.check(Query::new(&frank)).await.unwrap();
    assert_eq!(refused.decided_by(), DecidedBy::RememberedRefusal);
    // B holds a lease under /leased.
    let leased = || Query::new(&frank).route("GET", "/leased");
    b.check(leased()).await.unwrap();
    assert_eq!(
        b.check(leased()).await.unwrap().decided_by(),
        DecidedBy::Lease
    );

    a.reset(&frank).await.unwrap();
    let reset_at = Instant::now();
    // B learns of it: its next decisions come from Redis, on full buckets. (Judged by when
    // each question was asked, however long a busy machine takes to answer it. A check, not
    // a peek: a peek always asks Redis, whatever B remembers.)
    let learned = loop {
        let asked = reset_at.elapsed();
        let verdict = b.check(Query::new(&frank)).await.unwrap();
        if verdict.decided_by() == DecidedBy::Redis {
            assert!(verdict.allowed());
            assert_eq!(
                verdict.decision().unwrap().remaining,
                31,
                "a full bucket, less this one"
            );
            break asked;
        }
        assert!(
            asked < Duration::from_secs(1),
            "instance B still answers from what it remembered: {verdict:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let verdict = b.check(leased()).await.unwrap();
    assert_eq!(verdict.decided_by(), DecidedBy::Redis, "the lease is gone");
    assert_eq!(verdict.decision().unwrap().remaining, 319);
    eprintln!("instance B forgot the client {learned:?} after A reset it");
    assert!(learned < Duration::from_millis(500), "{learned:?}");
}

/// On a real cluster: check by rule, peek leaving the key as it was, reset across slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_peek_and_reset_on_a_cluster() {
    let cluster = TestCluster::start(3, 0);
    let backend = Backend::Cluster(&cluster);
    check_chooses_rule_tier_and_cost(&backend).await;
    let get = |key: &str| -> Option<Vec<u8>> {
        let port = cluster.master_port_of(key);
        let node = (0..3).find(|i| cluster.port(*i) == port).unwrap();
        redis::cmd("GET")
            .arg(key)
            .query(&mut cluster.node(node))
            .unwrap()
    };
    peek_takes_nothing(&backend, get).await;
    let count = |client: &str| {
        (0..3)
            .map(|node| {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("t*:id:{client}}}"))
                    .query(&mut cluster.node(node))
                    .unwrap();
                keys.len()
            })
            .sum()
    };
    reset_forgets_a_client(&backend, count).await;
    wait_admits_once_within_its_maximum(&backend).await;
}

/// Built with no HTTP in sight, a limiter and a layer on it count against the same limits.
#[tokio::test]
async fn the_layer_and_direct_checks_share_the_limits() {
    let limiter = Limiter::builder()
        .rules(rules(
            r#"{"default": {"capacity": 3, "refill_rate": 0.001}}"#,
        ))
        .build()
        .await
        .unwrap();
    let app = app(tollgate::RateLimitLayer::new(limiter.clone()));
    let response = send(&app, request("GET", "/", Some("gina"))).await;
    assert_eq!(testkit::remaining(&response), Some(2));
    let gina = ClientKey::id("gina");
    assert_eq!(remaining(&limiter, Query::new(&gina)).await, 1);
    let response = send(&app, request("GET", "/", Some("gina"))).await;
    assert_eq!(testkit::remaining(&response), Some(0));
    assert!(!limiter.check(Query::new(&gina)).await.unwrap().allowed());
}

/// A refusal of a large cost, remembered, does not refuse a smaller one that fits.
#[tokio::test]
async fn a_remembered_refusal_refuses_only_what_it_refused() {
    let redis = TestRedis::start();
    let limiter = limiter(
        &Backend::Redis(&redis),
        r#"{"default": {"capacity": 100, "refill_rate": 0.0001}}"#,
        &unique_prefix("refusal-cost"),
    )
    .await;
    let hana = ClientKey::id("hana");
    assert!(
        limiter
            .check(Query::new(&hana).cost(90))
            .await
            .unwrap()
            .allowed()
    );
    let big = limiter.check(Query::new(&hana).cost(90)).await.unwrap();
    assert_eq!((big.allowed(), big.decided_by()), (false, DecidedBy::Redis));
    let again = limiter.check(Query::new(&hana).cost(95)).await.unwrap();
    assert_eq!(again.decided_by(), DecidedBy::RememberedRefusal);
    let small = limiter.check(Query::new(&hana).cost(5)).await.unwrap();
    assert_eq!(
        (small.allowed(), small.decided_by()),
        (true, DecidedBy::Redis)
    );
    assert_eq!(small.decision().unwrap().remaining, 5);
}

/// Every client key resets exactly, across instances: one that is not a valid
/// `X-Client-ID` (a space, non-ASCII, long), and an IPv6 address keyed by its network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_client_key_resets_across_instances() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("reset-any-key");
    let json = r#"{"default": {"capacity": 2, "refill_rate": 0.0001}}"#;
    let (a, b) = (
        limiter(&Backend::Redis(&redis), json, &prefix).await,
        limiter(&Backend::Redis(&redis), json, &prefix).await,
    );
    let long = "x".repeat(300);
    let keys = [
        ClientKey::id("user 123 ünïcode"),
        ClientKey::id(long.as_str()),
        ClientKey::Ip("2001:db8:1:2::9".parse().unwrap()),
    ];
    for key in &keys {
        while b.check(Query::new(key)).await.unwrap().allowed() {}
        let refused = b.check(Query::new(key)).await.unwrap();
        assert_eq!(refused.decided_by(), DecidedBy::RememberedRefusal, "{key}");
        a.reset(key).await.unwrap();
        let started = Instant::now();
        // Checks, not peeks: a peek always asks Redis, whatever B remembers.
        loop {
            let asked = started.elapsed();
            let verdict = b.check(Query::new(key)).await.unwrap();
            if verdict.allowed() {
                assert_eq!(
                    verdict.decision().unwrap().remaining,
                    1,
                    "{key}: full, less this one"
                );
                break;
            }
            assert!(
                asked < Duration::from_secs(1),
                "{key}: instance B still refuses: {verdict:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// One IPv6 client is one network, whichever front asks: a direct check of an address
/// draws from the bucket the layer keys by its /64.
#[tokio::test]
async fn ipv6_clients_count_by_network_in_direct_checks_too() {
    let limiter = limiter(
        &Backend::Memory,
        r#"{"default": {"capacity": 10, "refill_rate": 0.0001}}"#,
        "v6",
    )
    .await;
    let one = ClientKey::Ip("2001:db8:1:2::1".parse().unwrap());
    let other = ClientKey::Ip("2001:db8:1:2:ffff::7".parse().unwrap());
    assert_eq!(remaining(&limiter, Query::new(&one)).await, 9);
    assert_eq!(remaining(&limiter, Query::new(&other)).await, 8);
    let network: ClientKey = "ip:2001:db8:1:2::/64".parse().unwrap();
    assert_eq!(remaining(&limiter, Query::new(&network)).await, 7);
    limiter.reset(&one).await.unwrap();
    assert_eq!(remaining(&limiter, Query::new(&network)).await, 9);
}

/// `wait` with no real bound, and a failure policy that refuses with no wait at all: it
/// neither panics nor spins past its maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_survives_extreme_bounds_and_waits() {
    let limiter = limiter(
        &Backend::Memory,
        r#"{"default": {"capacity": 5, "refill_rate": 1}}"#,
        "extremes",
    )
    .await;
    let ivy = ClientKey::id("ivy");
    let admitted = limiter.wait(Query::new(&ivy), Duration::MAX).await.unwrap();
    assert!(admitted.allowed());

    let nothing_there = free_port();
    let closed = Limiter::builder()
        .rules(rules(r#"{"default": {"capacity": 5, "refill_rate": 1}}"#))
        .redis_url(format!("redis://127.0.0.1:{nothing_there}"))
        .on_redis_error(OnRedisError::Deny)
        .circuit_breaker(1, Duration::ZERO)
        .build()
        .await
        .unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        closed.wait(Query::new(&ivy), Duration::from_millis(100)),
    )
    .await
    .expect("wait returns past its maximum")
    .unwrap();
    assert!(!refused.allowed());
    assert_eq!(refused.decided_by(), DecidedBy::FailClosed);
}
