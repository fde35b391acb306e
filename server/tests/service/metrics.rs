//! `GET /metrics` of `tollgate serve`, the real binary: counters move by exactly the
//! requests sent, the text parses with Prometheus's own Python parser, every metric has its
//! `# HELP`, Redis calls, errors and the breaker show, and so do failed reloads.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use testkit::*;

async fn scrape(base: &str) -> Scrape {
    let response = http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = reqwest_header(&response, "content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    parse(&response.text().await.unwrap())
}

async fn check(base: &str, key: &str) -> StatusCode {
    http()
        .get(format!("{base}/check/{key}"))
        .send()
        .await
        .expect("an answer")
        .status()
}

/// Scrapes until `done` holds, for at most 10 s.
async fn scrape_until(base: &str, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scraped = scrape(base).await;
        if done(&scraped) {
            return scraped;
        }
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const DECISIONS: &str = "tollgate_decisions_total";

#[tokio::test]
async fn decisions_move_by_exactly_the_checks_sent() {
    let service = start_service(&[("DEFAULT_RATE_LIMIT", "3/hour")]);
    let base = format!("http://{}", service.address);
    let allowed = [("rule", "default"), ("outcome", "allowed")];
    let denied = [("rule", "default"), ("outcome", "denied")];

    let before = scrape(&base).await;
    for expected in [200, 200, 200, 429, 429] {
        assert_eq!(check(&base, "alice").await, expected);
    }
    let after = scrape(&base).await;
    assert_eq!(
        after.value(DECISIONS, &allowed) - before.value(DECISIONS, &allowed),
        3.0
    );
    assert_eq!(
        after.value(DECISIONS, &denied) - before.value(DECISIONS, &denied),
        2.0
    );
    assert_eq!(after.value("tollgate_buckets", &[]), 1.0);
    for name in [
        "tollgate_buckets_evicted_total",
        "tollgate_rule_reloads_total",
        "tollgate_rule_reloads_failed_total",
        "tollgate_usage_dropped_total",
        "tollgate_usage_flush_errors_total",
        "tollgate_event_subscribers",
    ] {
        assert!(after.has(name), "{name} is shown");
    }
    // No Redis, no breaker.
    assert!(!after.has("tollgate_redis_breaker_open"));
    after.assert_described();
}

#[tokio::test]
async fn redis_calls_errors_and_the_breaker_show() {
    let mut redis = TestRedis::start();
    let service = start_service(&[
        ("DEFAULT_RATE_LIMIT", "100/hour"),
        ("REDIS_URL", redis.url()),
        ("REDIS_PREFIX", &unique_prefix("metrics")),
    ]);
    let base = format!("http://{}", service.address);
    let node = format!("127.0.0.1:{}", redis.port());
    let breaker = [("node", node.as_str())];
    let sent = 7;
    for _ in 0..sent {
        assert_eq!(check(&base, "bob").await, 200);
    }
    let scraped = scrape(&base).await;
    let calls = scraped.value("tollgate_redis_call_duration_seconds_count", &[]);
    assert!(
        calls >= f64::from(sent),
        "{calls} Redis calls for {sent} checks"
    );
    assert_eq!(
        scraped.value(
            "tollgate_redis_call_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        calls
    );
    assert_eq!(scraped.value("tollgate_redis_breaker_open", &breaker), 0.0);
    let errors = |s: &Scrape| {
        s.value("tollgate_redis_errors_total", &[("kind", "error")])
            + s.value("tollgate_redis_errors_total", &[("kind", "timeout")])
    };
    assert_eq!(errors(&scraped), 0.0);
    // Redis's own metrics too.
    scraped.assert_described();

    redis.kill();
    // The breaker opens after 5 failures in a row; the local policy answers meanwhile.
    for _ in 0..8 {
        check(&base, "bob").await;
    }
    let scraped = scrape(&base).await;
    assert!(errors(&scraped) >= 5.0, "errors counted");
    assert_eq!(scraped.value("tollgate_redis_breaker_open", &breaker), 1.0);
    let local = [("rule", "default"), ("outcome", "local_fallback")];
    assert!(scraped.value(DECISIONS, &local) >= 1.0);
}

#[tokio::test]
async fn a_failed_reload_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rate_limits.json");
    std::fs::write(&file, r#"{"default": {"limit": "3/hour"}}"#).unwrap();
    let service = start_service(&[("RATE_LIMIT_RULES_PATH", file.to_str().unwrap())]);
    let base = format!("http://{}", service.address);
    let failed = "tollgate_rule_reloads_failed_total";
    assert_eq!(scrape(&base).await.value(failed, &[]), 0.0);

    files::save_by_rename(&file, r#"{"default": {"limit": "three per hour"}}"#);
    scrape_until(&base, "the failed reload counted", |s| {
        s.value(failed, &[]) == 1.0
    })
    .await;

    files::save_by_rename(&file, r#"{"default": {"limit": "4/hour"}}"#);
    let reloaded = scrape_until(&base, "the good file reloaded", |s| {
        s.value("tollgate_rule_reloads_total", &[]) >= 1.0
    })
    .await;
    assert_eq!(reloaded.value(failed, &[]), 1.0);
}
