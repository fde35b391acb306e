//! `GET /health` follows Redis with no traffic at all: the real `tollgate serve`, a real
//! `redis-server` killed (SIGKILL) and started again empty on the same port, and a real
//! Redis Cluster with a master killed and started again. Every instance pings each Redis
//! node once a second, so `/health` says `disconnected` within 2 s of Redis going away and
//! `connected` within 2 s of it coming back, in every failure mode, and under
//! `FAIL_MODE=closed` the instance is back to 200 without a single `/check`.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::*;

/// What the service promises: a change of Redis shows within this.
const PROMISED: Duration = Duration::from_secs(2);
/// What a busy two-core machine may add to it (scheduling, the poll's own period).
const SLACK: Duration = Duration::from_millis(1500);

async fn health(base: &str) -> (u16, Value) {
    let response = http()
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("/health answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// Polls `/health` until its `redis` field is `wanted`; returns the last answer and how long
/// it took, failing well past the promise.
async fn until_redis_is(base: &str, wanted: &str) -> ((u16, Value), Duration) {
    let started = Instant::now();
    loop {
        let answer = health(base).await;
        if answer.1["redis"] == wanted {
            return (answer, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "/health still says {} after 15 s, not {wanted}",
            answer.1
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// No decision was made: the probes are not decisions (and no test request was sent).
async fn no_decisions(base: &str) {
    let metrics = metrics_text(base).await;
    assert!(
        !metrics.contains("tollgate_decisions_total"),
        "a decision was counted:\n{metrics}"
    );
}

async fn health_follows_a_killed_and_restarted_redis(fail_mode: &str) {
    let mut redis = TestRedis::start();
    let prefix = unique_prefix("health");
    let service = start_service(&[
        ("DEFAULT_RATE_LIMIT", "100/hour"),
        ("REDIS_URL", redis.url()),
        ("REDIS_PREFIX", &prefix),
        ("FAIL_MODE", fail_mode),
    ]);
    let base = format!("http://{}", service.address);
    let ((status, body), _) = until_redis_is(&base, "connected").await;
    assert_eq!(
        (status, &body["status"]),
        (200, &Value::from("ok")),
        "{body}"
    );

    redis.kill();
    let ((status, body), gone) = until_redis_is(&base, "disconnected").await;
    let expected = match fail_mode {
        "closed" => (503, "unavailable"),
        _ => (200, "degraded"),
    };
    assert_eq!(
        (status, body["status"].as_str().unwrap()),
        expected,
        "{body}"
    );

    redis.restart();
    let ((status, body), back) = until_redis_is(&base, "connected").await;
    assert_eq!(
        (status, &body["status"]),
        (200, &Value::from("ok")),
        "{body}"
    );
    eprintln!(
        "FAIL_MODE={fail_mode}: /health said disconnected {gone:?} after the kill, connected \
         {back:?} after the restart"
    );
    assert!(gone <= PROMISED + SLACK, "disconnected only after {gone:?}");
    assert!(back <= PROMISED + SLACK, "connected only after {back:?}");
    no_decisions(&base).await;
}

#[tokio::test]
async fn health_follows_redis_with_no_traffic_under_local() {
    health_follows_a_killed_and_restarted_redis("local").await;
}

#[tokio::test]
async fn health_follows_redis_with_no_traffic_under_open() {
    health_follows_a_killed_and_restarted_redis("open").await;
}

/// The case a load balancer that drains on 503 depends on: without the probe, the instance
/// stayed 503 until a check happened to go through.
#[tokio::test]
async fn health_follows_redis_with_no_traffic_under_closed() {
    health_follows_a_killed_and_restarted_redis("closed").await;
}

/// Each master of a cluster is pinged: one killed shows as `disconnected` (its slots are
/// decided by the failure policy), and it is `connected` again once the master is back.
#[tokio::test]
async fn health_follows_each_master_of_a_cluster() {
    let mut cluster = TestCluster::start(3, 0);
    let prefix = unique_prefix("health-cluster");
    let nodes = cluster.urls().join(",");
    let service = start_service(&[
        ("DEFAULT_RATE_LIMIT", "100/hour"),
        ("REDIS_CLUSTER_NODES", &nodes),
        ("REDIS_PREFIX", &prefix),
        ("FAIL_MODE", "closed"),
    ]);
    let base = format!("http://{}", service.address);
    until_redis_is(&base, "connected").await;

    let victim = cluster.master_ports()[1];
    cluster.kill(victim);
    let ((status, _), gone) = until_redis_is(&base, "disconnected").await;
    assert_eq!(status, 503);
    cluster.restart(victim);
    cluster.wait_until_serving(victim, Duration::from_secs(20));
    let ((status, _), back) = until_redis_is(&base, "connected").await;
    assert_eq!(status, 200);
    eprintln!("cluster: disconnected {gone:?} after a master's kill, connected {back:?} after");
    assert!(gone <= PROMISED + SLACK, "disconnected only after {gone:?}");
    assert!(back <= PROMISED + SLACK, "connected only after {back:?}");
    no_decisions(&base).await;
}
