//! Usage statistics on the `Limiter`: counted per client by hour and day, per rule, in all,
//! with the most-limited clients; in memory, and shared through a real Redis (two limiters
//! as two instances), a real Redis that is killed, stopped or replaced by a server that
//! answers garbage, and a real Redis Cluster. Also what a client's hour costs in Redis's
//! memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use testkit::*;
use tollgate::{Calls, ClientKey, ClientUsage, OnRedisError, Query, UsageError};

const RULES: &str = r#"{
    "default": {"limit": "2/hour"},
    "routes": [
        {"path": "/api/data", "limit": "3/hour"},
        {"path": "/health", "unlimited": true}
    ]
}"#;

async fn memory_limiter() -> Limiter {
    Limiter::builder()
        .rules(rules(RULES))
        .record_usage(true)
        .build()
        .await
        .unwrap()
}

/// `n` checks of `client` on `path` (`/` falls under the default rule).
async fn calls(limiter: &Limiter, client: &str, path: &str, n: usize) {
    let client = ClientKey::id(client);
    for _ in 0..n {
        limiter
            .check(Query::new(&client).route("GET", path))
            .await
            .unwrap();
    }
}

fn sum(periods: &BTreeMap<String, Calls>) -> (u64, u64) {
    periods
        .values()
        .fold((0, 0), |(a, d), c| (a + c.allowed, d + c.denied))
}

/// Per hour, the rule's calls summed over hours.
fn rule_sum(usage: &ClientUsage, rule: &str) -> (u64, u64) {
    usage
        .rules_by_hour
        .values()
        .filter_map(|rules| rules.get(rule))
        .fold((0, 0), |(a, d), c| (a + c.allowed, d + c.denied))
}

fn is_hour_name(name: &str) -> bool {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() == 4
        && [4, 2, 2, 2]
            == [
                parts[0].len(),
                parts[1].len(),
                parts[2].len(),
                parts[3].len(),
            ]
        && parts.iter().all(|p| digits(p))
}

/// Calls counted by hour and day, allowed and denied, per rule, unlimited rules as allowed;
/// peeks are not counted; a read right after the calls sees them.
#[tokio::test(start_paused = true)]
async fn memory_counts_by_hour_day_and_rule() {
    let limiter = memory_limiter().await;
    calls(&limiter, "a", "/", 3).await; // 2 allowed, 1 denied
    calls(&limiter, "a", "/api/data", 4).await; // 3 allowed, 1 denied
    calls(&limiter, "a", "/health", 2).await; // unlimited: 2 allowed
    let a = ClientKey::id("a");
    limiter.peek(Query::new(&a)).await.unwrap();
    calls(&limiter, "b", "/", 1).await;

    let usage = limiter.usage(&a).await.unwrap();
    assert_eq!(usage.client, "id:a");
    assert_eq!(sum(&usage.hours), (7, 2), "{usage:?}");
    assert_eq!(sum(&usage.days), (7, 2));
    assert!(usage.hours.len() <= 2, "one hour (two across a boundary)");
    assert!(usage.hours.keys().all(|h| is_hour_name(h)), "{usage:?}");
    for hour in usage.hours.keys() {
        let day = &hour[..10];
        assert!(usage.days.contains_key(day), "{hour} is in a day listed");
    }
    assert_eq!(rule_sum(&usage, "default"), (2, 1));
    assert_eq!(rule_sum(&usage, "/api/data"), (3, 1));
    assert_eq!(rule_sum(&usage, "/health"), (2, 0));

    let nobody = limiter.usage(&ClientKey::id("nobody")).await.unwrap();
    assert!(nobody.hours.is_empty() && nobody.days.is_empty());
    assert_eq!(nobody.client, "id:nobody");

    // More calls: read again at once, counted once.
    calls(&limiter, "a", "/", 1).await;
    let again = limiter.usage(&a).await.unwrap();
    assert_eq!(sum(&again.hours), (7, 3));
    assert_eq!(sum(&again.days), (7, 3));
}

/// Totals over every client, per rule and per hour, and the most-limited clients, most
/// refused first.
#[tokio::test(start_paused = true)]
async fn memory_summary_totals_and_most_limited() {
    let limiter = memory_limiter().await;
    calls(&limiter, "light", "/", 3).await; // 2 + 1 denied
    calls(&limiter, "heavy", "/", 7).await; // 2 + 5 denied
    calls(&limiter, "heavy", "/api/data", 5).await; // 3 + 2 denied
    calls(&limiter, "middle", "/api/data", 6).await; // 3 + 3 denied
    calls(&limiter, "fine", "/health", 4).await; // 4

    let summary = limiter.usage_summary(2).await.unwrap();
    assert_eq!((summary.allowed, summary.denied), (14, 11));
    assert_eq!(summary.rules["default"], calls_of(4, 6));
    assert_eq!(summary.rules["/api/data"], calls_of(6, 5));
    assert_eq!(summary.rules["/health"], calls_of(4, 0));
    assert_eq!(sum(&summary.hours), (14, 11));
    let top: Vec<(&str, u64)> = summary
        .most_limited
        .iter()
        .map(|c| (c.client.as_str(), c.denied))
        .collect();
    assert_eq!(top, [("id:heavy", 7), ("id:middle", 3)]);
    let all = limiter.usage_summary(10).await.unwrap();
    assert_eq!(
        all.most_limited.len(),
        3,
        "clients never refused are not ranked"
    );
    assert_eq!(all.most_limited[2].client, "id:light");
    let json = serde_json::to_value(&all).unwrap();
    assert_eq!(json["most_limited"][0]["client"], "id:heavy");
    assert_eq!(json["rules"]["default"]["denied"], 6);
}

fn calls_of(allowed: u64, denied: u64) -> Calls {
    let mut calls = Calls::default();
    calls.allowed = allowed;
    calls.denied = denied;
    calls
}

/// Off by default: nothing to read, nothing held.
#[tokio::test(start_paused = true)]
async fn not_recorded_unless_asked() {
    let limiter = Limiter::builder()
        .rules(rules(RULES))
        .build()
        .await
        .unwrap();
    calls(&limiter, "a", "/", 3).await;
    let a = ClientKey::id("a");
    assert_eq!(limiter.usage(&a).await, Err(UsageError::NotRecorded));
    assert_eq!(limiter.usage_summary(5).await, Err(UsageError::NotRecorded));
    assert_eq!(limiter.flush_usage().await, Err(UsageError::NotRecorded));
    let stats = limiter.stats();
    assert_eq!((stats.allowed, stats.denied), (2, 1));
    assert_eq!(
        (
            stats.usage_clients,
            stats.usage_dropped,
            stats.usage_evicted
        ),
        (0, 0, 0)
    );
}

/// A flood of fresh clients: at most `usage_max_clients` held, the rest counted as dropped
/// and still in the totals; the history forgets the clients seen longest ago.
#[tokio::test(start_paused = true)]
async fn memory_bound_on_clients() {
    const MAX: usize = 50;
    let limiter = Limiter::builder()
        .rules(rules(RULES))
        .record_usage(true)
        .usage_max_clients(MAX)
        .build()
        .await
        .unwrap();
    for n in 0..MAX + 30 {
        calls(&limiter, &format!("flood-{n}"), "/", 1).await;
    }
    let stats = limiter.stats();
    assert_eq!(stats.usage_clients, MAX, "{stats:?}");
    assert_eq!(stats.usage_dropped, 30);

    let summary = limiter.usage_summary(1).await.unwrap();
    assert_eq!((summary.allowed, summary.denied), (80, 0), "totals exact");
    let stats = limiter.stats();
    assert!(stats.usage_clients <= MAX, "{stats:?}");
    let first = limiter.usage(&ClientKey::id("flood-0")).await.unwrap();
    assert_eq!(sum(&first.hours), (1, 0), "held");
    let over = limiter.usage(&ClientKey::id("flood-79")).await.unwrap();
    assert!(over.hours.is_empty(), "over the bound: not per client");

    // 20 more fresh clients: the 20 seen longest ago are forgotten.
    calls(&limiter, "flood-0", "/", 1).await;
    limiter.flush_usage().await.unwrap();
    for n in 100..120 {
        calls(&limiter, &format!("flood-{n}"), "/", 1).await;
    }
    limiter.flush_usage().await.unwrap();
    let stats = limiter.stats();
    assert_eq!(stats.usage_clients, MAX, "{stats:?}");
    assert_eq!(stats.usage_evicted, 20);
    let kept = limiter.usage(&ClientKey::id("flood-0")).await.unwrap();
    assert_eq!(sum(&kept.hours), (2, 0), "seen last: kept");
    let newest = limiter.usage(&ClientKey::id("flood-119")).await.unwrap();
    assert_eq!(sum(&newest.hours), (1, 0));
    let summary = limiter.usage_summary(1).await.unwrap();
    assert_eq!(summary.allowed, 101, "totals exact after eviction too");
}

/// Keys the clients choose, 60 KB each (gRPC descriptor values make such keys): the usage
/// held stays within `usage_max_bytes`, between flushes and in the history; the rest is
/// counted as dropped (or evicted) and is still in the totals.
#[tokio::test(start_paused = true)]
async fn memory_bound_on_bytes() {
    const MAX_BYTES: usize = 1 << 20;
    const KEY_BYTES: usize = 60_000;
    let limiter = Limiter::builder()
        .rules(rules(RULES))
        .record_usage(true)
        .usage_max_bytes(MAX_BYTES)
        .build()
        .await
        .unwrap();
    let big = |n: usize| format!("{n:04}{}", "v".repeat(KEY_BYTES));
    for n in 0..200 {
        calls(&limiter, &big(n), "/", 1).await;
    }
    let stats = limiter.stats();
    assert!(
        stats.usage_clients * KEY_BYTES <= MAX_BYTES,
        "{} clients of 60 KB held",
        stats.usage_clients
    );
    assert!(stats.usage_clients >= 10, "{stats:?}");
    assert_eq!(stats.usage_dropped as usize, 200 - stats.usage_clients);
    for round in 1..=5 {
        limiter.flush_usage().await.unwrap();
        for n in 0..20 {
            calls(&limiter, &big(1000 * round + n), "/", 1).await;
        }
    }
    limiter.flush_usage().await.unwrap();
    let stats = limiter.stats();
    assert!(
        stats.usage_clients * KEY_BYTES <= MAX_BYTES,
        "{} clients of 60 KB in the history",
        stats.usage_clients
    );
    assert!(stats.usage_evicted > 0, "{stats:?}");
    let summary = limiter.usage_summary(1).await.unwrap();
    assert_eq!(summary.allowed, 300, "totals exact");
    // Short keys are not crowded out by a bound meant for long ones.
    for n in 0..100 {
        calls(&limiter, &format!("short-{n}"), "/", 1).await;
    }
    limiter.flush_usage().await.unwrap();
    let short = limiter.usage(&ClientKey::id("short-99")).await.unwrap();
    assert_eq!(sum(&short.hours), (1, 0));
}

/// Repeats `read` until `done` holds of its answer, for at most `limit`; returns the last
/// answer and how long it took.
async fn poll<T: std::fmt::Debug, F: Future<Output = T>>(
    limit: Duration,
    mut read: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        let answer = read().await;
        if done(&answer) || started.elapsed() > limit {
            return (answer, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn redis_limiter(url: &str, prefix: &str) -> Limiter {
    Limiter::builder()
        .rules(rules(RULES))
        .redis_url(url)
        .redis_prefix(prefix)
        .redis_timeout(Duration::from_millis(200))
        .record_usage(true)
        .build()
        .await
        .unwrap()
}

/// Two limiters on one Redis with one prefix, as two instances: both count, either reads
/// the sum within about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_usage_through_redis() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("usage");
    let (one, two) = (
        redis_limiter(redis.url(), &prefix).await,
        redis_limiter(redis.url(), &prefix).await,
    );
    calls(&one, "x", "/", 3).await; // 2 allowed, 1 denied
    calls(&two, "x", "/", 2).await; // the shared bucket is empty: 2 denied
    calls(&two, "y", "/api/data", 1).await;
    calls(&one, "y", "/health", 1).await;

    let x = ClientKey::id("x");
    let (usage, took) = poll(
        Duration::from_secs(3),
        || one.usage(&x),
        |u| u.as_ref().is_ok_and(|u| sum(&u.hours) == (2, 3)),
    )
    .await;
    let usage = usage.unwrap();
    assert_eq!(sum(&usage.hours), (2, 3), "{usage:?}");
    assert_eq!(sum(&usage.days), (2, 3));
    assert_eq!(rule_sum(&usage, "default"), (2, 3));
    eprintln!("the other instance's counts read {took:?} after they were made");

    let (summary, _) = poll(
        Duration::from_secs(3),
        || two.usage_summary(5),
        |s| s.as_ref().is_ok_and(|s| s.allowed + s.denied == 7),
    )
    .await;
    let summary = summary.unwrap();
    assert_eq!((summary.allowed, summary.denied), (4, 3));
    assert_eq!(summary.rules["default"], calls_of(2, 3));
    assert_eq!(summary.rules["/api/data"], calls_of(1, 0));
    assert_eq!(summary.rules["/health"], calls_of(1, 0));
    assert_eq!(sum(&summary.hours), (4, 3));
    assert_eq!(summary.most_limited.len(), 1);
    assert_eq!(
        (
            summary.most_limited[0].client.as_str(),
            summary.most_limited[0].denied
        ),
        ("id:x", 3)
    );
    assert_eq!(one.stats().usage_flush_errors, 0);
}

/// The keys are named as documented, hold the documented fields, and expire: hours within
/// 25 h, days within 31 d.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_are_named_as_documented_and_expire() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("keys");
    let limiter = redis_limiter(redis.url(), &prefix).await;
    calls(&limiter, "user:123", "/", 3).await;
    let usage = limiter.usage(&ClientKey::id("user:123")).await.unwrap();
    let hour = usage.hours.keys().next().unwrap().clone();
    let day = usage.days.keys().next().unwrap().clone();

    let mut c = redis.client();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:usage:*"))
        .query(&mut c)
        .unwrap();
    keys.sort();
    let mut expected = vec![
        format!("{prefix}:usage:global:{hour}"),
        format!("{prefix}:usage:limited:{hour}"),
        format!("{prefix}:usage:{{id:user:123}}:{hour}"),
        format!("{prefix}:usage:{{id:user:123}}:{day}"),
    ];
    expected.sort();
    assert_eq!(keys, expected);

    let hash = |c: &mut redis::Connection, key: &str| -> BTreeMap<String, u64> {
        redis::cmd("HGETALL").arg(key).query(c).unwrap()
    };
    let fields = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(f, n)| (f.to_string(), *n)).collect()
    };
    let by_hour = fields(&[
        ("allowed", 2),
        ("denied", 1),
        ("allowed:default", 2),
        ("denied:default", 1),
    ]);
    assert_eq!(
        hash(&mut c, &format!("{prefix}:usage:{{id:user:123}}:{hour}")),
        by_hour
    );
    assert_eq!(
        hash(&mut c, &format!("{prefix}:usage:global:{hour}")),
        by_hour
    );
    assert_eq!(
        hash(&mut c, &format!("{prefix}:usage:{{id:user:123}}:{day}")),
        fields(&[("allowed", 2), ("denied", 1)])
    );
    let ranked: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}:usage:limited:{hour}"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut c)
        .unwrap();
    assert_eq!(ranked, [("id:user:123".to_owned(), 1)]);

    for key in &keys {
        let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut c).unwrap();
        let most = if key.ends_with(&day) {
            31 * 86_400
        } else {
            25 * 3600
        };
        assert!(ttl > 0 && ttl <= most, "{key}: TTL {ttl}");
    }
}

/// Redis killed: requests are answered as promptly as the failure policy answers, flushes
/// fail (counted, not waited for), and once Redis is back the counts made meanwhile are
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_made_while_redis_is_down_are_written_when_it_is_back() {
    let mut redis = TestRedis::start();
    let prefix = unique_prefix("down");
    let limiter = redis_limiter(redis.url(), &prefix).await;
    calls(&limiter, "warm", "/", 1).await;
    limiter.flush_usage().await.unwrap();

    redis.kill();
    let client = ClientKey::id("z");
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        limiter.check(Query::new(&client)).await.unwrap();
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a request took {slowest:?} with Redis down"
    );
    let started = Instant::now();
    assert!(matches!(
        limiter.flush_usage().await,
        Err(UsageError::Store(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a flush is bounded"
    );
    assert!(limiter.stats().usage_flush_errors >= 1);

    // An empty Redis on the same port: only what was counted while it was down is there.
    redis.restart();
    let (usage, took) = poll(
        Duration::from_secs(5),
        || limiter.usage(&client),
        |u| {
            u.as_ref()
                .is_ok_and(|u| sum(&u.hours).0 + sum(&u.hours).1 == 20)
        },
    )
    .await;
    let usage = usage.unwrap();
    assert_eq!(sum(&usage.hours), (2, 18), "{usage:?}");
    eprintln!(
        "counts made while Redis was down written {took:?} after it was back ({} failed flushes)",
        limiter.stats().usage_flush_errors
    );
}

/// Redis stopped (slow: it takes calls and answers nothing), then a server that answers
/// garbage in its place: flushes fail within their deadline and are counted; nothing hangs;
/// nothing counted meanwhile is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_or_garbage_costs_flush_errors_not_hangs() {
    let mut redis = TestRedis::start();
    let prefix = unique_prefix("slow");
    let limiter = Limiter::builder()
        .rules(rules(RULES))
        .redis_url(redis.url())
        .redis_prefix(&prefix)
        .redis_timeout(Duration::from_millis(50))
        .on_redis_error(OnRedisError::Allow)
        .record_usage(true)
        .build()
        .await
        .unwrap();
    let client = ClientKey::id("s");
    limiter.check(Query::new(&client)).await.unwrap();
    limiter.flush_usage().await.unwrap();

    redis.signal("STOP");
    limiter.check(Query::new(&client)).await.unwrap();
    let started = Instant::now();
    assert!(limiter.flush_usage().await.is_err());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "the flush took {took:?}");
    let errors = limiter.stats().usage_flush_errors;
    assert!(errors >= 1);
    redis.signal("CONT");
    // The flush that timed out may still have been run by Redis: counts may be written
    // twice after a timeout, never lost.
    let (usage, _) = poll(
        Duration::from_secs(5),
        || limiter.usage(&client),
        |u| u.as_ref().is_ok_and(|u| sum(&u.hours).0 >= 2),
    )
    .await;
    let calls = sum(&usage.unwrap().hours).0;
    assert!((2..=3).contains(&calls), "{calls} calls written");

    redis.kill();
    let wrong = WrongServer::start(redis.port(), WrongServer::GARBAGE);
    limiter.check(Query::new(&client)).await.unwrap();
    let started = Instant::now();
    assert!(limiter.flush_usage().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(limiter.stats().usage_flush_errors > errors);
    drop(wrong);
    redis.restart();
    let (usage, took) = poll(
        Duration::from_secs(5),
        || limiter.usage(&client),
        |u| u.as_ref().is_ok_and(|u| !u.hours.is_empty()),
    )
    .await;
    assert_eq!(
        sum(&usage.unwrap().hours),
        (1, 0),
        "the call made meanwhile"
    );
    eprintln!("written {took:?} after Redis replaced the garbage");
}

/// On a Redis Cluster: each client's keys in its slot, the hours' keys where they hash;
/// two limiters count together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_on_a_cluster() {
    let cluster = TestCluster::start(3, 0);
    let prefix = unique_prefix("cluster");
    let build = || async {
        Limiter::builder()
            .rules(rules(RULES))
            .redis_cluster(cluster.urls())
            .redis_prefix(&prefix)
            .redis_timeout(Duration::from_millis(500))
            .record_usage(true)
            .build()
            .await
            .unwrap()
    };
    let (one, two) = (build().await, build().await);
    for n in 0..30 {
        let limiter = if n % 2 == 0 { &one } else { &two };
        calls(limiter, &format!("c{n}"), "/", 3).await;
    }
    let (summary, took) = poll(
        Duration::from_secs(5),
        || one.usage_summary(3),
        |s| s.as_ref().is_ok_and(|s| s.allowed + s.denied == 90),
    )
    .await;
    let summary = summary.unwrap();
    assert_eq!((summary.allowed, summary.denied), (60, 30));
    assert_eq!(summary.most_limited.len(), 3);
    assert!(summary.most_limited.iter().all(|c| c.denied == 1));
    for n in [0, 1, 17] {
        let usage = two.usage(&ClientKey::id(format!("c{n}"))).await.unwrap();
        assert_eq!(sum(&usage.hours), (2, 1), "c{n}");
        assert_eq!(sum(&usage.days), (2, 1), "c{n}");
    }
    let masters: std::collections::BTreeSet<u16> = (0..30)
        .map(|n| cluster.master_port_of(&format!("{prefix}:usage:{{id:c{n}}}:x")))
        .collect();
    assert!(masters.len() > 1, "clients spread over the masters");
    assert_eq!(one.stats().usage_flush_errors, 0);
    eprintln!("both instances' counts read {took:?} after they were made, on a cluster");
}

/// What usage costs Redis: 1,000 clients, one rule, one hour. Prints `MEMORY USAGE` of each
/// kind of key and `used_memory` before and after, per client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_memory_per_client_hour() {
    const CLIENTS: usize = 1000;
    let redis = TestRedis::start();
    let prefix = unique_prefix("memory");
    let limiter = Limiter::builder()
        .rules(rules(r#"{"default": {"limit": "1/hour"}}"#))
        .redis_url(redis.url())
        .redis_prefix(&prefix)
        .redis_timeout(Duration::from_secs(1))
        .record_usage(true)
        .build()
        .await
        .unwrap();
    let mut c = redis.client();
    let used = |c: &mut redis::Connection| -> i64 {
        let info: String = redis::cmd("INFO").arg("memory").query(c).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    // The decisions' buckets are counted apart: made first, then deleted after.
    for n in 0..CLIENTS {
        calls(&limiter, &format!("user:{n:06}"), "/", 2).await; // 1 allowed, 1 denied
    }
    let summary = limiter.usage_summary(1).await.unwrap();
    assert_eq!((summary.allowed, summary.denied), (1000, 1000));
    let usage = limiter.usage(&ClientKey::id("user:000000")).await.unwrap();
    let hour = usage.hours.keys().next().unwrap().clone();
    let day = usage.days.keys().next().unwrap().clone();

    let memory = |c: &mut redis::Connection, key: &str| -> i64 {
        redis::cmd("MEMORY").arg("USAGE").arg(key).query(c).unwrap()
    };
    let client_hour = memory(&mut c, &format!("{prefix}:usage:{{id:user:000000}}:{hour}"));
    let client_day = memory(&mut c, &format!("{prefix}:usage:{{id:user:000000}}:{day}"));
    let ranking = memory(&mut c, &format!("{prefix}:usage:limited:{hour}"));
    let global = memory(&mut c, &format!("{prefix}:usage:global:{hour}"));
    let with_usage = used(&mut c);
    let usage_keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:usage:*"))
        .query(&mut c)
        .unwrap();
    assert_eq!(usage_keys.len(), 2 * CLIENTS + 2);
    let _: () = redis::cmd("DEL").arg(&usage_keys).query(&mut c).unwrap();
    let without_usage = used(&mut c);
    let per_client = (with_usage - without_usage) as f64 / CLIENTS as f64;
    eprintln!(
        "usage in Redis, {CLIENTS} clients x 1 rule x 1 hour: MEMORY USAGE client hour hash \
         {client_hour} B, client day hash {client_day} B, ranking zset {ranking} B \
         ({:.1} B per client), global hash {global} B; used_memory {with_usage} -> \
         {without_usage} after DEL of the usage keys: {per_client:.0} B per client-hour",
        ranking as f64 / CLIENTS as f64
    );
    assert!(client_hour > 0 && client_day > 0 && per_client > 0.0);
}
