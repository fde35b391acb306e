//! End to end over TCP: a real axum server with the layer, real HTTP clients, and the demo
//! binary itself.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use testkit::*;
use tollgate::RateLimitLayer;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `/api/data` and `/api/submit` give back one token every 20 minutes or more, so that their
/// counts cannot move during a test; `/api/users/{id}` refills ten a second, to see a refill.
const RULES: &str = r#"{
    "default": {"capacity": 20, "refill_rate": 5},
    "routes": [
        {"path": "/api/data", "limit": "3/hour"},
        {"path": "/api/users/{id}", "capacity": 1, "refill_rate": 10},
        {"path": "/api/submit", "methods": ["POST"], "limit": "2/hour"},
        {"path": "/health", "unlimited": true}
    ]}"#;

async fn limits_hold_over_http(store: &Store<'_>) {
    let base = serve(layer(store, rules(RULES)).await).await;
    let http = client();
    let get = |path: &str, who: &str| {
        http.get(format!("{base}{path}"))
            .header("x-client-id", who)
            .send()
    };

    let mut seen = Vec::new();
    for _ in 0..4 {
        let response = get("/api/data", "alice").await.unwrap();
        seen.push((
            response.status(),
            reqwest_header(&response, "x-ratelimit-remaining"),
        ));
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            // One token in 1200 s, less the moments since the bucket emptied.
            let retry_after: u64 = reqwest_number(&response, "retry-after").unwrap();
            assert!((1..=1200).contains(&retry_after), "{retry_after}");
            assert_eq!(
                reqwest_header(&response, "x-ratelimit-limit").as_deref(),
                Some("3")
            );
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(
                (body["error"].as_str(), body["retry_after"].as_u64()),
                (Some("rate_limited"), Some(retry_after))
            );
        } else {
            assert_eq!(response.text().await.unwrap(), "data");
        }
    }
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        seen,
        [
            (StatusCode::OK, some("2")),
            (StatusCode::OK, some("1")),
            (StatusCode::OK, some("0")),
            (StatusCode::TOO_MANY_REQUESTS, some("0"))
        ]
    );
    // Another client is unaffected; unlimited routes never answer 429 and carry no headers.
    assert_eq!(
        get("/api/data", "bob").await.unwrap().status(),
        StatusCode::OK
    );
    for _ in 0..30 {
        let health = get("/health", "alice").await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        assert_eq!(reqwest_header(&health, "x-ratelimit-limit"), None);
    }
    // POST has its own rule; the body reaches the handler.
    for expected in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        let response = http
            .post(format!("{base}/api/submit"))
            .header("x-client-id", "alice")
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
        if expected == StatusCode::OK {
            assert_eq!(response.text().await.unwrap(), "payload");
        }
    }
    // 10 tokens/s: a refusal says to come back in a second at most, and the bucket soon has
    // a token again. (Its one token is taken again by the time a busy machine sends the
    // next request, or not: ask until refused.)
    let refused = async {
        for _ in 0..100 {
            let response = get("/api/users/1", "alice").await.unwrap();
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                return response;
            }
            assert_eq!(response.status(), StatusCode::OK);
        }
        panic!("100 requests in a row to a bucket of one all allowed");
    }
    .await;
    assert_eq!(
        reqwest_header(&refused, "retry-after").as_deref(),
        Some("1")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while get("/api/users/1", "alice").await.unwrap().status() != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "no token back after 10 s at 10/s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn limits_hold_over_http_on_memory() {
    limits_hold_over_http(&Store::Memory).await;
}

#[tokio::test]
async fn limits_hold_over_http_on_redis() {
    let redis = TestRedis::start();
    limits_hold_over_http(&Store::Redis(&redis, unique_prefix("http"))).await;
}

/// Statuses of requests sent with each `X-Forwarded-For` value in turn.
async fn statuses_for(base: &str, forwarded_for: &[&str]) -> Vec<StatusCode> {
    let http = client();
    let mut statuses = Vec::new();
    for xff in forwarded_for {
        let response = http
            .get(base)
            .header("x-forwarded-for", *xff)
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    statuses
}

async fn serve_one_bucket(trusted_proxy_hops: usize) -> String {
    let limiter = Limiter::builder()
        .rules(rules(
            r#"{"default": {"capacity": 2, "refill_rate": 0.001}}"#,
        ))
        .build()
        .await
        .unwrap();
    let layer = RateLimitLayer::builder(limiter)
        .trusted_proxy_hops(trusted_proxy_hops)
        .build()
        .unwrap();
    serve(layer).await
}

#[tokio::test]
async fn without_ids_clients_are_keyed_by_the_trusted_address() {
    let (ok, limited) = (StatusCode::OK, StatusCode::TOO_MANY_REQUESTS);

    // Reached directly (no trusted proxy): X-Forwarded-For is ignored, the peer address
    // counts, so rotating forged values buys nothing.
    let direct = serve_one_bucket(0).await;
    let forged = ["1.1.1.1", "2.2.2.2", "3.3.3.3"];
    assert_eq!(statuses_for(&direct, &forged).await, [ok, ok, limited]);

    // Behind one proxy: the entry that proxy appended is the client; prepended values are not.
    let proxied = serve_one_bucket(1).await;
    let forged = [
        "1.1.1.1, 203.0.113.9",
        "2.2.2.2, 203.0.113.9",
        "3.3.3.3,203.0.113.9",
    ];
    assert_eq!(statuses_for(&proxied, &forged).await, [ok, ok, limited]);
    assert_eq!(statuses_for(&proxied, &["203.0.113.10"]).await, [ok]);
    // No header at all: the peer (127.0.0.1) has its own bucket.
    assert_eq!(client().get(&proxied).send().await.unwrap().status(), ok);
}

async fn demo_enforces_the_shipped_rules(demo: &Demo) {
    let base = format!("http://{}", demo.address);
    let http = client();
    // rate_limits.json: /api/data has capacity 10, refilled at one a second.
    admitted_until_refused(10, 1.0, async |_| {
        http.get(format!("{base}/api/data"))
            .header("x-client-id", "demo-user")
            .send()
            .await
            .unwrap()
            .status()
    })
    .await;
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(reqwest_header(&health, "x-ratelimit-limit"), None);
    let echoed: serde_json::Value = http
        .post(format!("{base}/api/submit"))
        .json(&serde_json::json!({"n": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed, serde_json::json!({"received": {"n": 1}}));
    let user = http
        .get(format!("{base}/api/users/42"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reqwest_header(&user, "x-ratelimit-limit").as_deref(),
        Some("5")
    );
}

#[tokio::test]
async fn demo_runs_on_memory_and_stops_on_sigterm() {
    let mut demo = start_demo(&[]);
    demo_enforces_the_shipped_rules(&demo).await;
    let pid = demo.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = demo.child.try_wait().unwrap() {
            assert!(status.success(), "graceful exit, got {status}");
            break;
        }
        assert!(Instant::now() < deadline, "demo ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn demo_runs_on_redis() {
    let redis = TestRedis::start();
    // The shipped rules, failing closed: a decision Redis missed would be a 503, not a local
    // decision that looks the same.
    let shipped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_file("rate_limits.json")).unwrap())
            .unwrap();
    let mut closed = shipped;
    closed["on_redis_error"] = "deny".into();
    let dir = tempfile::tempdir().unwrap();
    let rules_path = dir.path().join("rate_limits.json");
    std::fs::write(&rules_path, closed.to_string()).unwrap();
    let demo = start_demo(&[
        ("REDIS_URL", redis.url()),
        ("RATE_LIMIT_RULES_PATH", rules_path.to_str().unwrap()),
    ]);
    demo_enforces_the_shipped_rules(&demo).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tollgate:*")
        .query(&mut redis.client())
        .unwrap();
    assert!(
        keys.contains(&"tollgate:{/api/data:id:demo-user}".to_owned()),
        "{keys:?}"
    );
}

#[test]
fn demo_refuses_a_bad_rules_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.json");
    std::fs::write(&file, r#"{"default": {"capacity": 5, "refill_rate": 1}, "routes": [{"path": "/x", "limit": "5/fortnight"}]}"#).unwrap();
    let output = Command::new(demo_binary())
        .env_clear()
        .env("NO_COLOR", "1")
        .env("PORT", "0")
        .env("RATE_LIMIT_RULES_PATH", &file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "error: {}: at routes[0].limit: limit must look like",
            file.display()
        )),
        "{stderr}"
    );
}

/// A `REDIS_CLUSTER_NODES` with no usable node stops the demo with an error, rather than
/// running it on in-memory buckets that no other instance shares.
#[test]
fn demo_refuses_an_unusable_cluster_node_list() {
    for (nodes, expected) in [
        (",", "has an empty entry (number 1)"),
        (" , ", "has an empty entry (number 1)"),
        (
            "redis://127.0.0.1:7000,,redis://127.0.0.1:7001",
            "has an empty entry (number 2)",
        ),
        ("not-a-url", "seed node not-a-url is not a Redis URL"),
    ] {
        let output = Command::new(demo_binary())
            .env_clear()
            .env("NO_COLOR", "1")
            .env("PORT", "0")
            .env("RATE_LIMIT_RULES_PATH", repo_file("rate_limits.json"))
            .env("REDIS_CLUSTER_NODES", nodes)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{nodes:?}: {stderr}");
        assert!(stderr.contains(expected), "{nodes:?}: {stderr}");
    }
}
