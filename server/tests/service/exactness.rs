//! Several demo server processes against one Redis (and one Redis Cluster): concurrent
//! requests for the same client, spread across every instance for a bounded time, are
//! admitted exactly as one token bucket would: at most `capacity + refill_rate × elapsed`,
//! and not fewer than that minus a small tolerance.
//!
//! The size is set by environment variables, so `scripts/exactness.sh` can run the same test
//! bigger: `EXACTNESS_INSTANCES` (default 3), `EXACTNESS_CONCURRENCY` (requests in flight,
//! default 8), `EXACTNESS_SECS` (default 2), and `REDIS_TIMEOUT_MS` for the demos' decision
//! deadline (default 1000: what is counted here is the admissions, and a machine busy with
//! other work misses the service's 50 ms). The rules fail closed, so a decision Redis could not make shows as
//! a 503 and fails the test instead of being made locally per instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use testkit::*;

const CAPACITY: f64 = 20.0;
const REFILL_PER_SEC: f64 = 10.0;

fn setting(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Outcome {
    admitted: usize,
    refused: usize,
    /// 503: Redis missed its deadline (the machine could not keep up).
    unavailable: usize,
    /// When the last answer came, since the load began: no decision was later.
    elapsed: Duration,
    /// When the last request was sent: the last decision was no earlier.
    last_sent: Duration,
}

/// Runs the demos with `redis_env`, loads them, and checks the bounds.
/// `check_redis_decided` asserts that the client's bucket is in Redis: the decisions came from
/// the shared store, not from each instance alone.
async fn shared_limit_holds(
    label: &str,
    redis_env: &[(&str, &str)],
    check_redis_decided: &dyn Fn(&str),
) {
    let instances = setting("EXACTNESS_INSTANCES", 3.0) as usize;
    let concurrency = setting("EXACTNESS_CONCURRENCY", 8.0) as usize;
    let secs = setting("EXACTNESS_SECS", 2.0);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rate_limits.json");
    std::fs::write(
        &rules,
        // Fail closed: a decision Redis could not make must not be made locally (each
        // instance's local bucket would add its own capacity), so it shows as a 503.
        format!(
            r#"{{"default": {{"capacity": {CAPACITY}, "refill_rate": {REFILL_PER_SEC}}}, "on_redis_error": "deny"}}"#
        ),
    )
    .unwrap();
    let rules = rules.display().to_string();
    let prefix = unique_prefix("exact");
    let timeout = std::env::var("REDIS_TIMEOUT_MS").unwrap_or_else(|_| "1000".to_owned());
    let mut env: Vec<(&str, &str)> = redis_env.to_vec();
    env.push(("REDIS_TIMEOUT_MS", timeout.as_str()));
    env.extend([
        ("RATE_LIMIT_RULES_PATH", rules.as_str()),
        ("WATCH_RULES", "false"),
        ("REDIS_PREFIX", prefix.as_str()),
    ]);
    let demos: Vec<Demo> = (0..instances).map(|_| start_demo(&env)).collect();
    let bases: Arc<Vec<String>> = Arc::new(
        demos
            .iter()
            .map(|d| format!("http://{}", d.address))
            .collect(),
    );

    let outcome = load(bases, concurrency, Duration::from_secs_f64(secs)).await;
    drop(demos);
    (check_redis_decided)(&format!("{prefix}:{{default:id:shared}}"));
    let elapsed = outcome.elapsed.as_secs_f64();
    let most = CAPACITY + REFILL_PER_SEC * elapsed;
    // Every token refilled before the last decision is taken, but those just before it:
    // allow 0.1 s of them. (A busy machine may answer long after it decided.)
    let least = CAPACITY + REFILL_PER_SEC * outcome.last_sent.as_secs_f64()
        - (REFILL_PER_SEC * 0.1).max(2.0);
    eprintln!(
        "{label}: {instances} instances, {concurrency} in flight, {elapsed:.3} s: admitted {} \
         (bounds {least:.1} ..= {most:.1}), refused {}, unavailable {}",
        outcome.admitted, outcome.refused, outcome.unavailable
    );
    assert!(outcome.refused > 0, "the load must exceed the limit");
    assert_eq!(
        outcome.unavailable, 0,
        "{label}: Redis missed its deadline; this machine cannot carry this load (lower EXACTNESS_CONCURRENCY or raise REDIS_TIMEOUT_MS)"
    );
    assert!(outcome.admitted as f64 <= most, "{label}: over-admitted");
    assert!(outcome.admitted as f64 >= least, "{label}: under-admitted");
}

/// `concurrency` tasks, task `i` sending to instance `i % n`, back to back, for `duration`.
async fn load(bases: Arc<Vec<String>>, concurrency: usize, duration: Duration) -> Outcome {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let stop = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let (http, bases) = (http.clone(), Arc::clone(&bases));
            tokio::spawn(async move {
                let base = &bases[i % bases.len()];
                let (mut admitted, mut refused, mut unavailable, mut last) = (0, 0, 0, started);
                let mut last_sent = started;
                while Instant::now() < stop {
                    last_sent = Instant::now();
                    let response = http
                        .get(format!("{base}/api/data"))
                        .header("x-client-id", "shared")
                        .send()
                        .await;
                    match response.map(|r| r.status()) {
                        Ok(StatusCode::OK) => admitted += 1,
                        Ok(StatusCode::TOO_MANY_REQUESTS) => refused += 1,
                        Ok(StatusCode::SERVICE_UNAVAILABLE) => unavailable += 1,
                        other => panic!("unexpected answer: {other:?}"),
                    }
                    last = Instant::now();
                }
                (admitted, refused, unavailable, last, last_sent)
            })
        })
        .collect();
    let mut outcome = Outcome {
        admitted: 0,
        refused: 0,
        unavailable: 0,
        elapsed: Duration::ZERO,
        last_sent: Duration::ZERO,
    };
    for task in tasks {
        let (admitted, refused, unavailable, last, last_sent) = task.await.unwrap();
        outcome.admitted += admitted;
        outcome.refused += refused;
        outcome.unavailable += unavailable;
        outcome.elapsed = outcome.elapsed.max(last - started);
        outcome.last_sent = outcome.last_sent.max(last_sent - started);
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_one_redis_admit_one_buckets_worth() {
    let redis = TestRedis::start();
    let in_redis = |key: &str| {
        let exists: bool = redis::cmd("EXISTS")
            .arg(key)
            .query(&mut redis.client())
            .unwrap();
        assert!(exists, "{key} is not in Redis");
    };
    shared_limit_holds("one Redis", &[("REDIS_URL", redis.url())], &in_redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_redis_cluster_admit_one_buckets_worth() {
    let cluster = TestCluster::start(3, 0);
    let nodes = cluster.urls().join(",");
    let in_cluster = |key: &str| {
        let port = cluster.master_port_of(key);
        let node = (0..3).find(|i| cluster.port(*i) == port).unwrap();
        let exists: bool = redis::cmd("EXISTS")
            .arg(key)
            .query(&mut cluster.node(node))
            .unwrap();
        assert!(exists, "{key} is not on its master {port}");
    };
    shared_limit_holds(
        "Redis Cluster",
        &[("REDIS_CLUSTER_NODES", nodes.as_str())],
        &in_cluster,
    )
    .await;
}
