//! `tollgate serve`, run as its users run it: the real binary, a real Redis, real HTTP. The
//! tiered check service's own test list first, then the key service's flow, bad input, two
//! instances on one Redis, and the OpenAPI document against the real answers.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The service with seed 004's tiers (free 100/min, pro 1000/min, enterprise 10000/min) on
/// its own Redis.
fn tiered(redis: &TestRedis) -> Demo {
    start_service(&[
        (
            "RATE_LIMIT_RULES_PATH",
            repo_file("examples/tiers.json").to_str().unwrap(),
        ),
        ("REDIS_URL", redis.url()),
        ("REDIS_PREFIX", &unique_prefix("service")),
    ])
}

async fn post_check(base: &str, body: Value) -> (StatusCode, Value) {
    let response = http()
        .post(format!("http://{base}/check"))
        .json(&body)
        .send()
        .await
        .expect("an answer");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

// The tiered check service's tests, against tollgate.

#[tokio::test]
async fn health_check_reports_redis() {
    let redis = TestRedis::start();
    let service = tiered(&redis);
    let response = http()
        .get(format!("http://{}/health", service.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["redis"], "connected");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn rate_limit_allowed_tokens_decrement_and_default_tier() {
    let redis = TestRedis::start();
    let service = tiered(&redis);
    let (status, body) = post_check(
        &service.address,
        json!({"identifier": "user:1", "tier": "free"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["allowed"], true);
    assert_eq!(body["tokens_remaining"], 99);
    assert_eq!(body["limit"], 100);
    assert_eq!(body["retry_after"], Value::Null);
    assert!(body["reset_at"].as_f64().unwrap() > 1.7e9);
    let (_, body) = post_check(
        &service.address,
        json!({"identifier": "user:1", "tier": "free"}),
    )
    .await;
    assert_eq!(body["tokens_remaining"], 98);
    // No tier: `default_tier` (free), the same bucket.
    let (_, body) = post_check(&service.address, json!({"identifier": "user:1"})).await;
    assert_eq!(
        (body["limit"].clone(), body["tokens_remaining"].clone()),
        (json!(100), json!(97))
    );
}

#[tokio::test]
async fn invalid_tier_is_400() {
    let redis = TestRedis::start();
    let service = tiered(&redis);
    let (status, body) = post_check(
        &service.address,
        json!({"identifier": "user:1", "tier": "invalid_tier"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"detail": "Invalid tier: invalid_tier"}));
}

#[tokio::test]
async fn rate_limit_exceeded_is_429_and_identifiers_are_independent() {
    let redis = TestRedis::start();
    let service = tiered(&redis);
    for n in 0..100 {
        let (status, _) = post_check(&service.address, json!({"identifier": "user:2"})).await;
        assert_eq!(status, StatusCode::OK, "request {n}");
    }
    let response = http()
        .post(format!("http://{}/check", service.address))
        .json(&json!({"identifier": "user:2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = reqwest_number(&response, "retry-after").unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["detail"]["allowed"], false);
    assert_eq!(body["detail"]["limit"], 100);
    assert_eq!(body["detail"]["retry_after"], retry_after);
    assert!(
        (1..=1).contains(&retry_after),
        "one token comes back in 0.6 s: {retry_after}"
    );
    // Another identifier has its own bucket.
    let (status, body) = post_check(&service.address, json!({"identifier": "user:3"})).await;
    assert_eq!(
        (status, body["tokens_remaining"].clone()),
        (StatusCode::OK, json!(99))
    );
}

#[tokio::test]
async fn pro_tier_has_its_higher_limit() {
    let redis = TestRedis::start();
    let service = tiered(&redis);
    let (_, body) = post_check(
        &service.address,
        json!({"identifier": "user:4", "tier": "pro"}),
    )
    .await;
    assert_eq!(
        (body["limit"].clone(), body["tokens_remaining"].clone()),
        (json!(1000), json!(999))
    );
}

// The key service's flow.

#[tokio::test]
async fn keys_are_checked_against_the_default_limit_until_429() {
    let service = start_service(&[("DEFAULT_RATE_LIMIT", "5")]);
    let base = format!("http://{}", service.address);
    for n in 0..5 {
        let response = http()
            .get(format!("{base}/check/key-a"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "call {n}");
        assert_eq!(
            reqwest_number::<u32>(&response, "x-ratelimit-remaining"),
            Some(4 - n)
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["key"], "key-a");
        assert_eq!(body["rate_limit"], "5/second");
    }
    let refused = http()
        .get(format!("{base}/check/key-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(reqwest_header(&refused, "retry-after").is_some());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "Rate limit exceeded: 5/second");
    // Another key is not affected.
    let other = http()
        .get(format!("{base}/check/key-b"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

// Bad input: a clear 4xx, never a 500, and nothing taken.

#[tokio::test]
async fn bad_bodies_get_a_clear_4xx() {
    let service = start_service(&[("DEFAULT_RATE_LIMIT", "5/minute")]);
    let url = format!("http://{}/check", service.address);
    let cases: Vec<(&str, Vec<u8>, StatusCode, Value)> = vec![
        (
            "not JSON",
            b"{identifier".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!(["body"]),
        ),
        (
            "missing field",
            b"{}".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!(["body", "identifier"]),
        ),
        (
            "wrong type",
            br#"{"identifier": 5}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!(["body", "identifier"]),
        ),
        (
            "unknown field",
            br#"{"identifier": "x", "tierr": "pro"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!(["body", "tierr"]),
        ),
        (
            "text after it",
            br#"{"identifier": "x"} {}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!(["body"]),
        ),
        (
            "cost too high",
            br#"{"identifier": "x", "cost": 6}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!(["body", "cost"]),
        ),
        (
            "negative cost",
            br#"{"identifier": "x", "cost": -1}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!(["body", "cost"]),
        ),
        (
            "empty identifier",
            br#"{"identifier": ""}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            json!(["body", "identifier"]),
        ),
    ];
    for (what, body, status, loc) in cases {
        let response = http().post(&url).body(body).send().await.unwrap();
        assert_eq!(response.status(), status, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["detail"][0]["loc"], loc, "{what}: {body}");
        assert!(
            body["detail"][0]["msg"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    let huge = format!(r#"{{"identifier": "{}"}}"#, "x".repeat(100_000));
    let response = http().post(&url).body(huge).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let long_key = "k".repeat(600);
    let response = http()
        .get(format!("http://{}/check/{long_key}", service.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // None of that took anything: x still has its 5.
    let (_, body) = post_check(&service.address, json!({"identifier": "x"})).await;
    assert_eq!(body["tokens_remaining"], 4);
}

#[test]
fn a_bad_default_rate_limit_stops_the_service() {
    let output = std::process::Command::new(tollgate_binary())
        .arg("serve")
        .env_clear()
        .env("NO_COLOR", "1")
        .env("PORT", "0")
        .env("DEFAULT_RATE_LIMIT", "0/second")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("DEFAULT_RATE_LIMIT=\"0/second\""),
        "{stderr}"
    );
}

/// Two instances on one Redis: 200 concurrent checks of one identifier, spread over both,
/// admit exactly the capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_admit_exactly_the_capacity() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("service-two");
    let envs = [
        (
            "RATE_LIMIT_RULES_PATH",
            repo_file("examples/tiers.json")
                .to_str()
                .unwrap()
                .to_owned(),
        ),
        ("REDIS_URL", redis.url().to_owned()),
        ("REDIS_PREFIX", prefix),
        ("REDIS_TIMEOUT_MS", "5000".to_owned()),
        ("FAIL_MODE", "closed".to_owned()),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (a, b) = (start_service(&envs), start_service(&envs));
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let base = if n % 2 == 0 {
                a.address.clone()
            } else {
                b.address.clone()
            };
            tokio::spawn(async move { post_check(&base, json!({"identifier": "crowd"})).await.0 })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(admitted, 100);
}

/// Every answer the service gave here fits the OpenAPI document it serves: its status is
/// documented for the route, and its body has the schema's required fields and no other.
#[tokio::test]
async fn the_openapi_document_describes_the_real_answers() {
    let service = start_service(&[(
        "RATE_LIMIT_RULES_PATH",
        repo_file("examples/tiers.json").to_str().unwrap(),
    )]);
    let base = format!("http://{}", service.address);
    let document: Value = http()
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    let mut seen = Vec::new();
    seen.push(("get", "/health", get(&format!("{base}/health")).await));
    seen.push(("get", "/check/{key}", get(&format!("{base}/check/k")).await));
    for _ in 0..100 {
        get(&format!("{base}/check/k")).await;
    }
    seen.push(("get", "/check/{key}", get(&format!("{base}/check/k")).await));
    seen.push((
        "post",
        "/check",
        post(&format!("{base}/check"), json!({"identifier": "o"})).await,
    ));
    seen.push((
        "post",
        "/check",
        post(
            &format!("{base}/check"),
            json!({"identifier": "o", "tier": "gold"}),
        )
        .await,
    ));
    seen.push((
        "post",
        "/check",
        post(&format!("{base}/check"), json!({})).await,
    ));
    for _ in 0..100 {
        post(&format!("{base}/check"), json!({"identifier": "o"})).await;
    }
    seen.push((
        "post",
        "/check",
        post(&format!("{base}/check"), json!({"identifier": "o"})).await,
    ));
    let statuses: Vec<u16> = seen.iter().map(|(_, _, (status, _))| *status).collect();
    assert_eq!(
        statuses,
        [200, 200, 429, 200, 400, 422, 429],
        "the answers this test meant to see"
    );
    for (method, path, (status, body)) in &seen {
        let response = &document["paths"][path][method]["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path}: {status} is not documented"
        );
        let schema = &response["content"]["application/json"]["schema"];
        if schema.is_object() {
            fits(
                &document,
                schema,
                body,
                &format!("{method} {path} {status}"),
            );
        }
    }
}

async fn get(url: &str) -> (u16, Value) {
    let response = http().get(url).send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let response = http().post(url).json(&body).send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Whether `value` fits `schema` (following `$ref`s into `document`): types, required
/// properties, and no property the schema does not name.
fn fits(document: &Value, schema: &Value, value: &Value, at: &str) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return fits(
            document,
            &document["components"]["schemas"][name],
            value,
            at,
        );
    }
    if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        assert!(
            options.iter().any(|option| {
                std::panic::catch_unwind(|| fits(document, option, value, at)).is_ok()
            }),
            "{at}: {value} fits none of {options:?}"
        );
        return;
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => return,
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    assert!(
        types.contains(&kind) || (kind == "integer" && types.contains(&"number")),
        "{at}: {value} is {kind}, the schema says {types:?}"
    );
    if let Value::Object(fields) = value {
        let properties = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap();
            assert!(fields.contains_key(name), "{at}: {value} lacks {name}");
        }
        for (name, field) in fields {
            let property = properties
                .get(name)
                .unwrap_or_else(|| panic!("{at}: {name} is not in the schema"));
            fits(document, property, field, &format!("{at}.{name}"));
        }
    }
}

// Auth.

/// With a token: writes need it, and the right one; a wrong or missing one is a 401 with a
/// JSON reason, and the token never shows in the log.
#[tokio::test]
async fn admin_writes_need_the_token() {
    let token = "s3cret-token-for-tests";
    let mut service = start_service(&[
        ("DEFAULT_RATE_LIMIT", "1/hour"),
        ("TOLLGATE_ADMIN_TOKEN", token),
    ]);
    let base = format!("http://{}", service.address);
    assert_eq!(get(&format!("{base}/check/k")).await.0, 200);
    assert_eq!(get(&format!("{base}/check/k")).await.0, 429);
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some(token),
        Some("Basic czNjcmV0"),
    ] {
        let mut request = http().post(format!("{base}/admin/reset/k"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{authorization:?}"
        );
        assert_eq!(
            reqwest_header(&response, "www-authenticate").as_deref(),
            Some("Bearer")
        );
        let body: Value = response.json().await.unwrap();
        assert!(
            body["detail"].as_str().unwrap().contains("Bearer"),
            "{body}"
        );
    }
    assert_eq!(
        get(&format!("{base}/check/k")).await.0,
        429,
        "nothing was reset"
    );
    let response = http()
        .post(format!("{base}/admin/reset/k"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(get(&format!("{base}/check/k")).await.0, 200, "reset");
    let log = service.stop_and_read_log();
    assert!(!log.contains(token), "the token is in the log:\n{log}");
    assert!(log.contains("token required"), "{log}");
}

/// Without a token: writes from this host (loopback) are accepted, and the log says that
/// only this host may write.
#[tokio::test]
async fn without_a_token_loopback_may_write() {
    let mut service = start_service(&[("DEFAULT_RATE_LIMIT", "1/hour")]);
    let base = format!("http://{}", service.address);
    assert_eq!(get(&format!("{base}/check/k")).await.0, 200);
    let response = http()
        .post(format!("{base}/admin/reset/k"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(get(&format!("{base}/check/k")).await.0, 200);
    let log = service.stop_and_read_log();
    assert!(log.contains("accepted from this host only"), "{log}");
}

/// Without a token, a peer that is not loopback (or not known) may not write.
#[tokio::test]
async fn without_a_token_other_peers_may_not_write() {
    use tower::ServiceExt;
    let limiter = Limiter::builder()
        .rules(rules(r#"{"default": {"limit": "1/hour"}}"#))
        .build()
        .await
        .unwrap();
    let app = tollgate::service::Service::new(limiter).router();
    let request = |peer: Option<&str>| {
        let mut request = axum::http::Request::post("/admin/reset/k")
            .body(axum::body::Body::empty())
            .unwrap();
        if let Some(peer) = peer {
            let peer: std::net::SocketAddr = peer.parse().unwrap();
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
        }
        request
    };
    for (peer, expected) in [
        (Some("203.0.113.9:5000"), 401),
        (Some("10.0.0.8:5000"), 401),
        (None, 401),
        (Some("127.0.0.1:5000"), 200),
        (Some("[::1]:5000"), 200),
        (Some("[::ffff:127.0.0.1]:5000"), 200),
    ] {
        let response = app.clone().oneshot(request(peer)).await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{peer:?}");
    }
}
