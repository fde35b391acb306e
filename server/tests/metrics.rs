//! `GET /metrics` of `tollgate serve`, the real binary: counters move by exactly the
//! requests sent, the text parses with Prometheus's own Python parser, every metric has its
//! `# HELP`, Redis calls, errors and the breaker show, and so do failed reloads.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

/// Every sample of a scrape, parsed by `prometheus_client`: `(name, labels, value)`; and
/// each metric family's `# HELP` text (empty without one).
struct Scrape(
    Vec<(String, serde_json::Map<String, Value>, f64)>,
    BTreeMap<String, String>,
);

impl Scrape {
    /// The sample named `name` whose labels include `labels`; 0 when absent (a counter
    /// not moved yet).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(v))
            })
            .map_or(0.0, |(_, _, value)| *value)
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }

    /// Fails unless every metric family scraped has a `# HELP` description.
    fn assert_described(&self) {
        assert!(!self.1.is_empty(), "no metrics scraped");
        let undescribed: Vec<&String> = self
            .1
            .iter()
            .filter(|(_, help)| help.trim().is_empty())
            .map(|(family, _)| family)
            .collect();
        assert!(undescribed.is_empty(), "no # HELP for {undescribed:?}");
    }
}

/// Parses the Prometheus text format with Python's `prometheus_client` parser.
fn parse(text: &str) -> Scrape {
    const PARSER: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    print("MISSING", end="")
    sys.exit(3)
samples = []
help = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    help[family.name] = family.documentation
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps([samples, help]))
"#;
    // The first Python that has the module: `python3` on the PATH may be a pyenv one,
    // without Debian's packages.
    let mut missing = Vec::new();
    for python in ["python3", "/usr/bin/python3"] {
        let mut child = match Command::new(python)
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => {
                missing.push(format!("{python}: {error}"));
                continue;
            }
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if stdout == "MISSING" {
            missing.push(format!("{python}: no prometheus_client"));
            continue;
        }
        assert!(
            output.status.success(),
            "prometheus_client could not parse /metrics: {}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        let (samples, help) = serde_json::from_str(&stdout).expect("the parser's JSON");
        return Scrape(samples, help);
    }
    panic!(
        "Python's prometheus_client parser reads /metrics in this test: \
         apt-get install python3-prometheus-client (or pip install prometheus-client); {}",
        missing.join("; ")
    );
}

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

/// In an app that installed its own global recorder first, the router's `/metrics` says so
/// (503), and renders from the Prometheus handle the app gives it.
#[tokio::test]
async fn an_app_with_its_own_recorder() {
    use axum::body::Body;
    use axum::http::Request;
    use tollgate_server::service::{Service, prometheus_builder};
    use tower::ServiceExt;

    metrics::set_global_recorder(metrics_util::debugging::DebuggingRecorder::new())
        .expect("the first recorder of this test process");
    let limiter = Limiter::builder()
        .rules(rules(r#"{"default": {"limit": "2/minute"}}"#))
        .build()
        .await
        .unwrap();
    let get = || Request::get("/metrics").body(Body::empty()).unwrap();

    let app = Service::new(limiter.clone()).router();
    let response = app.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_json(response).await;
    let why = body["detail"].as_str().unwrap();
    assert!(why.contains("Service::metrics_handle"), "{why}");

    let handle = prometheus_builder().build_recorder().handle();
    let app = Service::new(limiter).metrics_handle(handle).router();
    let response = app.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    // This recorder is not the global one here, so it has recorded nothing: an app gives
    // the handle of the recorder it installed.
    assert!(parse(&text).0.is_empty(), "{text}");
}
