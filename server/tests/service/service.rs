//! `tollgate serve`, run as its users run it: the real binary, a real Redis, real HTTP. The
//! tiered check service's own test list first, then the key service's flow, bad input, two
//! instances on one Redis, and the OpenAPI document against the real answers.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::*;

/// Seed 004's tiers (free 100/min, pro 1000/min, enterprise 10000/min) counted per day
/// instead, in a file of their own: at 100 a minute a token comes back every 0.6 s, which a
/// busy machine lets pass between two checks; at 100 a day, every 14 minutes.
fn tiers_per_day() -> (tempfile::TempDir, String) {
    let seed = std::fs::read_to_string(repo_file("examples/tiers.json")).unwrap();
    assert_eq!(seed.matches("/minute").count(), 4, "{seed}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiers.json");
    std::fs::write(&path, seed.replace("/minute", "/day")).unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

/// The service with [`tiers_per_day`] on its own Redis; the rules file's directory with it.
fn tiered(redis: &TestRedis) -> (tempfile::TempDir, Demo) {
    let (dir, tiers) = tiers_per_day();
    let service = start_service(&[
        ("RATE_LIMIT_RULES_PATH", &tiers),
        ("REDIS_URL", redis.url()),
        ("REDIS_PREFIX", &unique_prefix("service")),
    ]);
    (dir, service)
}

// The tiered check service's tests, against tollgate.

#[tokio::test]
async fn health_check_reports_redis() {
    let redis = TestRedis::start();
    let (_tiers, service) = tiered(&redis);
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
    let (_tiers, service) = tiered(&redis);
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
    let (_tiers, service) = tiered(&redis);
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
    let (_tiers, service) = tiered(&redis);
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
        (1..=864).contains(&retry_after),
        "one token comes back in 864 s: {retry_after}"
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
    let (_tiers, service) = tiered(&redis);
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
    // A bare number is per second: the first check says so.
    let service = start_service(&[("DEFAULT_RATE_LIMIT", "5")]);
    let (status, body) = get(&format!("http://{}/check/key-a", service.address)).await;
    assert_eq!((status, &body["rate_limit"]), (200, &json!("5/second")));
    // The flow, on a limit that gives nothing back while the test runs.
    let service = start_service(&[("DEFAULT_RATE_LIMIT", "5/day")]);
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
        assert_eq!(body["rate_limit"], "5/day");
    }
    let refused = http()
        .get(format!("{base}/check/key-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(reqwest_header(&refused, "retry-after").is_some());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "Rate limit exceeded: 5/day");
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
    let service = start_service(&[("DEFAULT_RATE_LIMIT", "5/day")]);
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
    let output = serve_until_it_exits(&[("DEFAULT_RATE_LIMIT", "0/second".as_ref())]);
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
    let (_tiers, tiers) = tiers_per_day();
    let envs = [
        ("RATE_LIMIT_RULES_PATH", tiers),
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
    let (_tiers, path) = tiers_per_day();
    let service = start_service(&[("RATE_LIMIT_RULES_PATH", &path)]);
    let base = format!("http://{}", service.address);
    let document = get_json(&format!("{base}/openapi.json")).await;
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
    // A gateway's question: allowed, refused, and without the original URI.
    let ask = |uri: Option<&str>| {
        let mut request = http()
            .get(format!("{base}/auth"))
            .header("x-client-id", "g")
            .header("x-original-method", "GET");
        if let Some(uri) = uri {
            request = request.header("x-original-uri", uri);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    seen.push(("get", "/auth", ask(Some("/api/data")).await));
    for _ in 0..100 {
        ask(Some("/api/data")).await;
    }
    seen.push(("get", "/auth", ask(Some("/api/data")).await));
    seen.push(("get", "/auth", ask(None).await));
    let statuses: Vec<u16> = seen.iter().map(|(_, _, (status, _))| *status).collect();
    assert_eq!(
        statuses,
        [200, 200, 429, 200, 400, 422, 429, 200, 429, 400],
        "the answers this test meant to see"
    );
    // Peeks: every band, taking nothing.
    let status = get(&format!("{base}/status/p")).await;
    assert_eq!(status.0, 200, "{}", status.1);
    assert_eq!(
        status.1["bands"],
        json!([{"limit": 100, "period": 86400.0, "used": 0, "remaining": 100,
                "reset_at": status.1["bands"][0]["reset_at"]}]),
        "{}",
        status.1
    );
    seen.push(("get", "/status/{key}", status));
    seen.push((
        "get",
        "/status/{key}",
        get(&format!("{base}/status/a%20b")).await,
    ));
    let peeked = post(
        &format!("{base}/check"),
        json!({"identifier": "p", "tier": "pro", "peek": true}),
    )
    .await;
    assert_eq!(peeked.0, 200, "{}", peeked.1);
    assert_eq!(peeked.1["bands"][0]["remaining"], 1000, "{}", peeked.1);
    assert_eq!(
        peeked.1["tokens_remaining"], 1000,
        "nothing taken: {}",
        peeked.1
    );
    seen.push(("post", "/check", peeked));
    let refused = post(
        &format!("{base}/check"),
        json!({"identifier": "o", "peek": true}),
    )
    .await;
    assert_eq!(refused.0, 429, "{}", refused.1);
    assert_eq!(
        refused.1["detail"]["bands"][0]["remaining"], 0,
        "{}",
        refused.1
    );
    seen.push(("post", "/check", refused));
    // A reservation, settled once; an id that is none.
    let reserved = post(
        &format!("{base}/check"),
        json!({"identifier": "s", "tier": "pro", "cost": 100, "settle": true}),
    )
    .await;
    assert_eq!(reserved.0, 200, "{}", reserved.1);
    let id = reserved.1["reservation"]
        .as_str()
        .expect("an id")
        .to_owned();
    seen.push(("post", "/check", reserved));
    let settle_url = format!("{base}/settle");
    let settle = || post(&settle_url, json!({"reservation": id, "cost": 40}));
    let settled = settle().await;
    assert_eq!(settled.0, 200, "{}", settled.1);
    assert_eq!(
        (&settled.1["estimate"], &settled.1["cost"]),
        (&json!(100), &json!(40))
    );
    let left = settled.1["tokens_remaining"].as_u64().expect("a count");
    assert!((960..=1000).contains(&left), "60 given back: {}", settled.1);
    seen.push(("post", "/settle", settled));
    let again = settle().await;
    assert_eq!(again.0, 409, "{}", again.1);
    seen.push(("post", "/settle", again));
    let unknown = post(
        &format!("{base}/settle"),
        json!({"reservation": "not-one", "cost": 1}),
    )
    .await;
    assert_eq!(unknown.0, 404, "{}", unknown.1);
    seen.push(("post", "/settle", unknown));
    let both = post(
        &format!("{base}/check"),
        json!({"identifier": "s", "peek": true, "settle": true}),
    )
    .await;
    assert_eq!(both.0, 422, "{}", both.1);
    seen.push(("post", "/check", both));
    // The writes and the admin API (from loopback, with no token set).
    let writes: Vec<(&str, &str, String, Option<Value>, u16)> = vec![
        (
            "post",
            "/configure",
            format!("{base}/configure"),
            Some(json!({"key": "k", "limit": "5/minute"})),
            200,
        ),
        (
            "post",
            "/configure",
            format!("{base}/configure"),
            Some(json!({"key": "k", "limit": "0/minute"})),
            422,
        ),
        (
            "get",
            "/admin/configs",
            format!("{base}/admin/configs"),
            None,
            200,
        ),
        (
            "post",
            "/admin/configs",
            format!("{base}/admin/configs"),
            Some(
                json!({"endpoint": "/api/custom", "requests_per_window": 50, "window_seconds": 1800, "algorithm": "token_bucket", "burst_limit": 10, "refill_rate": 0.028}),
            ),
            201,
        ),
        (
            "post",
            "/admin/configs",
            format!("{base}/admin/configs"),
            Some(json!({"endpoint": "/api/custom"})),
            422,
        ),
        (
            "put",
            "/admin/configs/{endpoint}",
            format!("{base}/admin/configs/api/custom"),
            Some(json!({"window_seconds": 900})),
            200,
        ),
        (
            "put",
            "/admin/configs/{endpoint}",
            format!("{base}/admin/configs/api/none"),
            Some(json!({"window_seconds": 900})),
            404,
        ),
        (
            "delete",
            "/admin/configs/{endpoint}",
            format!("{base}/admin/configs/api/custom"),
            None,
            200,
        ),
        (
            "get",
            "/admin/rules",
            format!("{base}/admin/rules"),
            None,
            200,
        ),
        (
            "put",
            "/admin/rules/clients/{client}",
            format!("{base}/admin/rules/clients/id:k"),
            Some(json!({"unlimited": true})),
            200,
        ),
        (
            "delete",
            "/admin/rules/clients/{client}",
            format!("{base}/admin/rules/clients/id:k"),
            None,
            200,
        ),
        (
            "post",
            "/admin/rules/routes",
            format!("{base}/admin/rules/routes"),
            Some(json!({"path": "/z", "limit": "1/hour"})),
            200,
        ),
        (
            "delete",
            "/admin/rules/routes/{identity}",
            format!("{base}/admin/rules/routes/nothing"),
            None,
            404,
        ),
        (
            "post",
            "/admin/reset/{key}",
            format!("{base}/admin/reset/k"),
            None,
            200,
        ),
        ("get", "/stats/{key}", format!("{base}/stats/k"), None, 200),
        (
            "get",
            "/stats/{key}",
            format!("{base}/stats/a%20b"),
            None,
            422,
        ),
        (
            "get",
            "/admin/stats",
            format!("{base}/admin/stats"),
            None,
            200,
        ),
        (
            "get",
            "/admin/stats/{client_id}",
            format!("{base}/admin/stats/k"),
            None,
            200,
        ),
    ];
    for (method, path, url, body, expected) in writes {
        let answer = call(&method.to_uppercase(), &url, body, None).await;
        assert_eq!(answer.0, expected, "{method} {url}: {}", answer.1);
        seen.push((method, path, answer));
    }
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
    call("GET", url, None, None).await
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    call("POST", url, Some(body), None).await
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
        // A map's entries fit its `additionalProperties`.
        let extra = schema["additionalProperties"]
            .as_object()
            .map(|_| &schema["additionalProperties"]);
        for (name, field) in fields {
            let property = properties
                .get(name)
                .or(extra)
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
    // Every write and admin read needs it.
    let configure = json!({"key": "k", "limit": "5/minute"});
    let config = json!({"endpoint": "/a", "requests_per_window": 5, "window_seconds": 60});
    for (method, path, body) in [
        ("POST", "/configure", Some(configure.clone())),
        ("GET", "/admin/configs", None),
        ("POST", "/admin/configs", Some(config.clone())),
        (
            "PUT",
            "/admin/configs/a",
            Some(json!({"window_seconds": 5})),
        ),
        ("DELETE", "/admin/configs/a", None),
        ("GET", "/admin/rules", None),
        (
            "PUT",
            "/admin/rules/clients/id:k",
            Some(json!({"limit": "5/minute"})),
        ),
        ("DELETE", "/admin/rules/clients/id:k", None),
        (
            "POST",
            "/admin/rules/routes",
            Some(json!({"path": "/a", "limit": "5/minute"})),
        ),
        ("DELETE", "/admin/rules/routes/a", None),
        ("POST", "/admin/reset/k/default", None),
        ("GET", "/admin/stats", None),
        ("GET", "/admin/stats/k", None),
    ] {
        for wrong in [None, Some("wrong")] {
            let (status, answer) =
                call(method, &format!("{base}{path}"), body.clone(), wrong).await;
            assert_eq!(status, 401, "{method} {path} with {wrong:?}: {answer}");
        }
    }
    let (status, _) = call(
        "POST",
        &format!("{base}/configure"),
        Some(configure),
        Some(token),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        "POST",
        &format!("{base}/admin/configs"),
        Some(config),
        Some(token),
    )
    .await;
    assert_eq!(status, 201);
    let (status, rules) = call("GET", &format!("{base}/admin/rules"), None, Some(token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        rules["runtime"].as_array().map(Vec::len),
        Some(2),
        "{rules}"
    );
    let (status, _) = call(
        "DELETE",
        &format!("{base}/admin/rules/clients/id:k"),
        None,
        Some(token),
    )
    .await;
    assert_eq!(status, 200);
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
    let app = tollgate_server::service::Service::new(limiter).router();
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

// Runtime changes: `POST /configure`, the admin configs and the native rules API.

/// A request with an optional JSON body and bearer token; its status and JSON body.
async fn call(method: &str, url: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// The limit `GET /check/{key}` reports for `key` (it takes one request).
async fn limit_of(base: &str, key: &str) -> Option<u32> {
    let response = http()
        .get(format!("{base}/check/{key}"))
        .send()
        .await
        .unwrap();
    reqwest_number(&response, "x-ratelimit-limit")
}

/// Seed 000's flow: a key is checked against the default until 429; `POST /configure`
/// gives another key its own limit, which holds from the next check on.
#[tokio::test]
async fn configure_gives_a_key_its_own_limit() {
    let service = start_service(&[("DEFAULT_RATE_LIMIT", "2/hour")]);
    let base = format!("http://{}", service.address);
    let statuses = [
        get(&format!("{base}/check/k")).await.0,
        get(&format!("{base}/check/k")).await.0,
        get(&format!("{base}/check/k")).await.0,
    ];
    assert_eq!(statuses, [200, 200, 429]);
    let (status, body) = call(
        "POST",
        &format!("{base}/configure"),
        Some(json!({"key": "vip", "limit": "3/hour"})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ok", "key": "vip", "rate_limit": "3/hour"})
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (status, body) = get(&format!("{base}/check/vip")).await;
        seen.push((status, body["rate_limit"].clone()));
    }
    assert_eq!(
        seen,
        [
            (200, json!("3/hour")),
            (200, json!("3/hour")),
            (200, json!("3/hour")),
            (429, json!("3/hour"))
        ]
    );
    assert_eq!(
        get(&format!("{base}/check/k")).await.0,
        429,
        "k keeps the default"
    );
}

/// Without Redis, runtime limits are kept in the state file and in force again after a
/// restart.
#[tokio::test]
async fn configured_limits_survive_a_restart_in_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let envs = [
        ("DEFAULT_RATE_LIMIT", "10/second"),
        ("TOLLGATE_STATE_FILE", state.to_str().unwrap()),
    ];
    let mut service = start_service(&envs);
    let base = format!("http://{}", service.address);
    let (status, _) = call(
        "POST",
        &format!("{base}/configure"),
        Some(json!({"key": "vip", "limit": "3/hour"})),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let log = service.stop_and_read_log();
    assert!(
        log.contains(state.to_str().unwrap()),
        "the log names the state file:\n{log}"
    );
    let kept = std::fs::read_to_string(&state).unwrap();
    assert!(kept.contains("client:id:vip"), "{kept}");

    let service = start_service(&envs);
    let base = format!("http://{}", service.address);
    assert_eq!(limit_of(&base, "vip").await, Some(3));
    assert_eq!(limit_of(&base, "other").await, Some(10));
}

/// Two instances on one Redis: a limit configured on one is enforced by the other within a
/// second, and is still there after the first restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_on_one_instance_reaches_the_other_and_survives_a_restart() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("service-configure");
    let envs = [
        ("DEFAULT_RATE_LIMIT", "1000/second"),
        ("REDIS_URL", redis.url()),
        ("REDIS_PREFIX", prefix.as_str()),
    ];
    let mut a = start_service(&envs);
    let b = start_service(&envs);
    let (base_a, base_b) = (
        format!("http://{}", a.address),
        format!("http://{}", b.address),
    );
    assert_eq!(limit_of(&base_b, "vip").await, Some(1000));
    let (status, body) = call(
        "POST",
        &format!("{base_a}/configure"),
        Some(json!({"key": "vip", "limit": "500/hour"})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A check sent later than a second after must show it, however long a busy machine
    // takes to answer it.
    let configured = std::time::Instant::now();
    loop {
        let sent = configured.elapsed();
        if limit_of(&base_b, "vip").await == Some(500) {
            break;
        }
        assert!(
            sent < Duration::from_secs(1),
            "the other instance did not apply the limit within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.stop_and_read_log();
    drop(a);
    let a = start_service(&envs);
    assert_eq!(
        limit_of(&format!("http://{}", a.address), "vip").await,
        Some(500)
    );
}

/// Bad `POST /configure` bodies: a clear 4xx naming the field, and nothing applied.
#[tokio::test]
async fn bad_configure_bodies_change_nothing() {
    let service = start_service(&[("DEFAULT_RATE_LIMIT", "5/minute")]);
    let base = format!("http://{}", service.address);
    let url = format!("{base}/configure");
    let cases: Vec<(&str, Vec<u8>, u16, Value, &str)> = vec![
        (
            "a limit of zero",
            br#"{"key": "k", "limit": "0/second"}"#.to_vec(),
            422,
            json!(["body", "limit"]),
            "runtime entry: at clients.id:k.limit: limit must look like",
        ),
        (
            "an unknown unit",
            br#"{"key": "k", "limit": "5/fortnight"}"#.to_vec(),
            422,
            json!(["body", "limit"]),
            "runtime entry: at clients.id:k.limit:",
        ),
        (
            "a number",
            br#"{"key": "k", "limit": 100}"#.to_vec(),
            422,
            json!(["body", "limit"]),
            "invalid type",
        ),
        (
            "no limit",
            br#"{"key": "k"}"#.to_vec(),
            422,
            json!(["body", "limit"]),
            "missing field",
        ),
        (
            "an unknown field",
            br#"{"key": "k", "limit": "1/minute", "burst": 3}"#.to_vec(),
            422,
            json!(["body", "burst"]),
            "unknown field",
        ),
        (
            "a key with a space",
            br#"{"key": "a b", "limit": "1/minute"}"#.to_vec(),
            422,
            json!(["body", "key"]),
            "visible ASCII",
        ),
        (
            "not JSON",
            b"key=k&limit=1/minute".to_vec(),
            422,
            json!(["body"]),
            "expected value",
        ),
    ];
    for (what, body, status, loc, message) in cases {
        let response = http()
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["detail"][0]["loc"], loc, "{what}: {body}");
        let msg = body["detail"][0]["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(message), "{what}: {msg}");
    }
    let huge = json!({"key": "k", "limit": "1".repeat(100_000)});
    assert_eq!(call("POST", &url, Some(huge), None).await.0, 413);
    let (_, rules) = call("GET", &format!("{base}/admin/rules"), None, None).await;
    assert_eq!(rules["runtime"], json!([]), "nothing was applied");
    assert_eq!(limit_of(&base, "k").await, Some(5));
}

/// The FastAPI limiter's admin configs: listed from the rules in force, created, replaced,
/// changed in part, deleted (the file's rule in force again), with the seed's fields, and
/// enforced.
#[tokio::test]
async fn admin_configs_are_route_rules() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rate_limits.json");
    std::fs::write(
        &file,
        r#"{"default": {"limit": "10/second"},
            "routes": [{"path": "/api/data", "limit": "100/hour", "cost": 2}]}"#,
    )
    .unwrap();
    let service = start_service(&[("RATE_LIMIT_RULES_PATH", file.to_str().unwrap())]);
    let base = format!("http://{}", service.address);
    let configs = format!("{base}/admin/configs");

    let (status, listed) = call("GET", &configs, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let data = &listed[0];
    assert_eq!(
        (
            &data["endpoint"],
            &data["requests_per_window"],
            &data["window_seconds"],
            &data["algorithm"],
            &data["origin"]
        ),
        (
            &json!("/api/data"),
            &json!(100),
            &json!(3600),
            &json!("token_bucket"),
            &json!("base")
        )
    );

    // Seed 002's own example.
    let custom = json!({
        "endpoint": "/api/custom",
        "requests_per_window": 50,
        "window_seconds": 1800,
        "algorithm": "token_bucket",
        "burst_limit": 10,
        "refill_rate": 0.028
    });
    let (status, created) = call("POST", &configs, Some(custom.clone()), None).await;
    assert_eq!(status, 201, "{created}");
    for field in [
        "endpoint",
        "requests_per_window",
        "window_seconds",
        "algorithm",
        "burst_limit",
        "refill_rate",
    ] {
        assert_eq!(created[field], custom[field], "{field}: {created}");
    }
    assert_eq!(created["origin"], "runtime");
    // Enforced: a burst of 10 for /api/custom, refilled at 0.028 a second.
    admitted_until_refused(10, 0.028, async |_| {
        let body = json!({"identifier": "u", "path": "/api/custom"});
        StatusCode::from_u16(post(&format!("{base}/check"), body).await.0).unwrap()
    })
    .await;
    let (status, replaced) = call("POST", &configs, Some(custom), None).await;
    assert_eq!(
        status, 200,
        "the same endpoint again replaces it: {replaced}"
    );

    // Seed 002's PUT: only the fields given change; the file's cost stays.
    let (status, changed) = call(
        "PUT",
        &format!("{configs}/api/data"),
        Some(json!({"requests_per_window": 200, "window_seconds": 7200})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["requests_per_window"], 200);
    assert_eq!(changed["window_seconds"], 7200);
    assert_eq!(changed["algorithm"], "token_bucket");
    assert_eq!(changed["origin"], "runtime");
    assert_eq!(changed["native"]["cost"], 2, "{changed}");

    // Deleting it puts the file's rule back; the file's own cannot be deleted.
    let (status, deleted) = call("DELETE", &format!("{configs}/api/data"), None, None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["restored"]["requests_per_window"], 100);
    assert_eq!(deleted["restored"]["origin"], "base");
    let (status, body) = call("DELETE", &format!("{configs}/api/data"), None, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("rules file"));
    assert_eq!(
        call("DELETE", &format!("{configs}/api/none"), None, None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(
            "PUT",
            &format!("{configs}/api/none"),
            Some(json!({"window_seconds": 5})),
            None
        )
        .await
        .0,
        404
    );

    // Bad configs: the field and why, and nothing applied.
    for (body, loc) in [
        (
            json!({"endpoint": "/x", "requests_per_window": 5, "window_seconds": 0}),
            json!(["body", "window_seconds"]),
        ),
        (
            json!({"endpoint": "/x", "requests_per_window": 0, "window_seconds": 5}),
            json!(["body", "requests_per_window"]),
        ),
        (
            json!({"endpoint": "/x", "requests_per_window": 5, "window_seconds": 5, "algorithm": "leaky"}),
            json!(["body", "algorithm"]),
        ),
        (
            json!({"endpoint": "x", "requests_per_window": 5, "window_seconds": 5}),
            json!(["body", "endpoint"]),
        ),
        (
            json!({"endpoint": "/x", "requests_per_window": "5", "window_seconds": 5}),
            json!(["body", "requests_per_window"]),
        ),
    ] {
        let (status, answer) = call("POST", &configs, Some(body.clone()), None).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["detail"][0]["loc"], loc, "{body}: {answer}");
    }
    let (_, listed) = call("GET", &configs, None, None).await;
    let endpoints: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(endpoints, ["/api/data", "/api/custom"]);
}

/// What the configs API must not get wrong: a partial update of a one-band rule changes its
/// limit (not a burst beside it); a rule of more bands than a config says is not flattened;
/// a burst slower than its window reads back as written; `/` can be changed and removed; a
/// pattern or a method-bound route is removed by its endpoint; bad numbers are named by the
/// field the client sent.
#[tokio::test]
async fn admin_configs_keep_what_they_do_not_say() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rate_limits.json");
    std::fs::write(
        &file,
        r#"{"default": {"limit": "10/second"},
            "routes": [
                {"path": "/api/data", "limit": "100/hour"},
                {"path": "/api/multi", "limits": ["10/second", "100/minute", "1000/hour"], "algorithm": "sliding_window"},
                {"path": "/api/users/{id}", "limit": "5/second"}
            ]}"#,
    )
    .unwrap();
    let service = start_service(&[("RATE_LIMIT_RULES_PATH", file.to_str().unwrap())]);
    let base = format!("http://{}", service.address);
    let configs = format!("{base}/admin/configs");

    let (status, changed) = call(
        "PUT",
        &format!("{configs}/api/data"),
        Some(json!({"requests_per_window": 1000})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["burst_limit"], Value::Null, "{changed}");
    assert_eq!(changed["native"]["capacity"], 1000, "{changed}");
    let mut admitted = 0;
    for _ in 0..150 {
        let (status, _) = post(
            &format!("{base}/check"),
            json!({"identifier": "u", "path": "/api/data"}),
        )
        .await;
        admitted += u32::from(status == 200);
    }
    assert_eq!(admitted, 150, "the new limit, not the old one beside it");

    let (status, body) = call(
        "PUT",
        &format!("{configs}/api/multi"),
        Some(json!({"requests_per_window": 2000})),
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("/admin/rules/routes")
    );

    let slow_burst = json!({"endpoint": "/api/slow", "requests_per_window": 100, "window_seconds": 3600,
        "algorithm": "token_bucket", "burst_limit": 50, "refill_rate": 0.01});
    let (status, created) = call("POST", &configs, Some(slow_burst.clone()), None).await;
    assert_eq!(status, 201, "{created}");
    for field in [
        "requests_per_window",
        "window_seconds",
        "burst_limit",
        "refill_rate",
    ] {
        assert_eq!(created[field], slow_burst[field], "{field}: {created}");
    }

    // `/`: created, changed and removed.
    let root = json!({"endpoint": "/", "requests_per_window": 5, "window_seconds": 60});
    assert_eq!(call("POST", &configs, Some(root), None).await.0, 201);
    let (status, body) = call(
        "PUT",
        &format!("{configs}/"),
        Some(json!({"window_seconds": 30})),
        None,
    )
    .await;
    assert_eq!(
        (status, &body["window_seconds"]),
        (200, &json!(30)),
        "{body}"
    );
    let (status, body) = call("DELETE", &format!("{configs}/"), None, None).await;
    assert_eq!((status, &body["endpoint"]), (200, &json!("/")), "{body}");

    // Removed by endpoint: a pattern's, and a method-bound one's.
    let (status, body) = call("DELETE", &format!("{configs}/api/users/{{id}}"), None, None).await;
    assert_eq!(status, 409, "the file's own: {body}");
    let (status, _) = call(
        "PUT",
        &format!("{configs}/api/users/{{id}}"),
        Some(json!({"requests_per_window": 7})),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call("DELETE", &format!("{configs}/api/users/{{id}}"), None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["restored"]["requests_per_window"], 5, "{body}");
    let post_only = json!({"endpoint": "/api/x", "methods": ["POST"], "requests_per_window": 5, "window_seconds": 60});
    assert_eq!(call("POST", &configs, Some(post_only), None).await.0, 201);
    let (status, body) = call("DELETE", &format!("{configs}/api/x"), None, None).await;
    assert_eq!(
        (status, &body["endpoint"]),
        (200, &json!("/api/x")),
        "{body}"
    );

    // Bad numbers, named by the client's field.
    for (body, loc) in [
        (
            json!({"endpoint": "/w", "requests_per_window": 1, "window_seconds": 2000000}),
            json!(["body", "window_seconds"]),
        ),
        (
            json!({"endpoint": "/w", "requests_per_window": 5, "window_seconds": 5, "algorithm": "token_bucket", "refill_rate": 0}),
            json!(["body", "refill_rate"]),
        ),
        (
            json!({"endpoint": "/w", "requests_per_window": 5, "window_seconds": 5, "algorithm": "token_bucket", "burst_limit": 0}),
            json!(["body", "burst_limit"]),
        ),
        (
            json!({"endpoint": "api/w", "requests_per_window": 5, "window_seconds": 5}),
            json!(["body", "endpoint"]),
        ),
    ] {
        let (status, answer) = call("POST", &configs, Some(body.clone()), None).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["detail"][0]["loc"], loc, "{body}: {answer}");
    }
    let (status, answer) = call("GET", &format!("{base}/admin/stats?top=abc"), None, None).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["detail"][0]["loc"], json!(["query", "top"]));
    let (status, answer) = call(
        "GET",
        &format!("{base}/admin/stats/ip:127.0.0.1"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, &answer["client"]),
        (200, &json!("ip:127.0.0.1")),
        "{answer}"
    );
    let network = format!("{base}/admin/rules/clients/ip:2001:db8::/64");
    let (status, answer) = call("PUT", &network, Some(json!({"limit": "1/second"})), None).await;
    assert_eq!(
        (status, &answer["target"]),
        (200, &json!("client:ip:2001:db8::/64")),
        "{answer}"
    );
}

/// The native rules API: client overrides and routes as rules file fragments, listed with
/// where each rule comes from.
#[tokio::test]
async fn native_rules_api_sets_and_removes_entries() {
    let service = start_service(&[("DEFAULT_RATE_LIMIT", "10/second")]);
    let base = format!("http://{}", service.address);
    let vip = format!("{base}/admin/rules/clients/id:vip");
    let (status, body) = call("PUT", &vip, Some(json!({"limit": "2/hour"})), None).await;
    assert_eq!(
        (status, body),
        (200, json!({"status": "ok", "target": "client:id:vip"}))
    );
    let statuses = [
        get(&format!("{base}/check/vip")).await.0,
        get(&format!("{base}/check/vip")).await.0,
        get(&format!("{base}/check/vip")).await.0,
    ];
    assert_eq!(statuses, [200, 200, 429]);
    let (_, rules) = call("GET", &format!("{base}/admin/rules"), None, None).await;
    assert_eq!(
        rules["rules"],
        json!([
            {"target": "rule:default", "origin": "base", "rule": {"limit": "10/second"}},
            {"target": "client:id:vip", "origin": "runtime", "rule": {"limit": "2/hour"}}
        ])
    );
    assert_eq!(
        rules["runtime"],
        json!([{"target": "client:id:vip", "rule": {"limit": "2/hour"}, "replaces_base": false, "left_out": null}])
    );
    assert_eq!(call("DELETE", &vip, None, None).await.0, 200);
    assert_eq!(call("DELETE", &vip, None, None).await.0, 404);
    // The default again: 10 a second, refilling what vip had used (its state stays).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(limit_of(&base, "vip").await, Some(10), "the default again");
    let (status, body) = call(
        "PUT",
        &format!("{base}/admin/rules/clients/vip"),
        Some(json!({"limit": "2/hour"})),
        None,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["path", "client"]));

    let routes = format!("{base}/admin/rules/routes");
    let (status, body) = call(
        "POST",
        &routes,
        Some(json!({"path": "/x/{id}", "methods": ["GET"], "limit": "1/hour"})),
        None,
    )
    .await;
    assert_eq!(
        (status, body["target"].clone()),
        (200, json!("rule:/x/<id>@GET"))
    );
    let (status, body) = call(
        "POST",
        &routes,
        Some(json!({"path": "/y", "limit": "lots"})),
        None,
    )
    .await;
    assert_eq!(status, 422);
    let msg = body["detail"][0]["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("runtime entry: at routes[0].limit:"),
        "{msg}"
    );
    assert_eq!(
        call("DELETE", &format!("{routes}/x/<id>@GET"), None, None)
            .await
            .0,
        200
    );
    assert_eq!(
        call("DELETE", &format!("{routes}/x/<id>@GET"), None, None)
            .await
            .0,
        404
    );
}

/// A route path with a control character is refused with the rules file's message, naming
/// the path and the character, by both route APIs; nothing is applied.
#[tokio::test]
async fn route_paths_with_control_characters_are_a_422() {
    let service = start_service(&[("DEFAULT_RATE_LIMIT", "10/hour")]);
    let base = format!("http://{}", service.address);
    let named = "path \"/a\\0b\" is not a valid pattern: it contains the control character U+0000 at byte 2";
    let (status, body) = call(
        "POST",
        &format!("{base}/admin/rules/routes"),
        Some(json!({"path": "/a\u{0}b", "limit": "1/hour"})),
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let msg = body["detail"][0]["msg"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with(&format!("runtime entry: at routes[0].path: {named}")),
        "{body}"
    );
    let (status, body) = call(
        "POST",
        &format!("{base}/admin/configs"),
        Some(json!({"endpoint": "/a\u{0}b", "requests_per_window": 5, "window_seconds": 60})),
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let msg = body["detail"][0]["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(named), "{body}");
    // Neither was kept, and the same route without the NUL is taken.
    let (_, rules) = call("GET", &format!("{base}/admin/rules"), None, None).await;
    assert_eq!(rules["runtime"], json!([]), "{rules}");
    let (status, body) = call(
        "POST",
        &format!("{base}/admin/rules/routes"),
        Some(json!({"path": "/ab", "limit": "1/hour"})),
        None,
    )
    .await;
    assert_eq!(
        (status, &body["target"]),
        (200, &json!("rule:/ab")),
        "{body}"
    );
}

/// The demo mounts the service on the limiter its layer uses: a limit configured through
/// the demo's `/configure` is what its layer enforces on the demo's own routes.
#[tokio::test]
async fn the_demo_mounts_the_service_on_its_layers_limiter() {
    let demo = start_demo(&[]);
    let base = format!("http://{}", demo.address);
    let (status, body) = call(
        "POST",
        &format!("{base}/configure"),
        Some(json!({"key": "vip", "limit": "2/hour"})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = http()
            .get(format!("{base}/api/data"))
            .header("x-client-id", "vip")
            .send()
            .await
            .unwrap();
        statuses.push((
            response.status().as_u16(),
            reqwest_number::<u32>(&response, "x-ratelimit-limit"),
        ));
    }
    assert_eq!(statuses, [(200, Some(2)), (200, Some(2)), (429, Some(2))]);
    assert!(
        demo.workdir.path().join("tollgate-runtime.json").exists(),
        "kept in the demo's state file"
    );
}

// Statistics.

/// The current UTC hour and day, named as the statistics name them.
fn utc_hour_and_day() -> (String, String) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    (now[..13].replace('T', "-"), now[..10].to_owned())
}

/// Seed 000's statistics: every call to a key counts, allowed or not, by UTC hour and day;
/// the limit shown is the key's current one.
#[tokio::test]
async fn stats_count_every_call_by_hour_and_day() {
    let service = start_service(&[("DEFAULT_RATE_LIMIT", "3/hour")]);
    let base = format!("http://{}", service.address);
    // Counted by UTC hour: all in one hour, so that one hour holds them all.
    clear_of_a_window_end(3600).await;
    let (hour_before, _) = utc_hour_and_day();
    for _ in 0..5 {
        get(&format!("{base}/check/k")).await;
    }
    // The tiered check names the same client.
    post(&format!("{base}/check"), json!({"identifier": "k"})).await;
    get(&format!("{base}/check/other")).await;
    let (status, stats) = get(&format!("{base}/stats/k")).await;
    let (hour_after, day) = utc_hour_and_day();
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["key"], "k");
    let hourly = stats["hourly_calls"].as_object().unwrap();
    assert_eq!(hourly.len(), 1, "{stats}");
    let (hour, calls) = hourly.iter().next().unwrap();
    assert!(
        *hour == hour_before || *hour == hour_after,
        "{hour} is not this hour"
    );
    assert_eq!(calls, 6);
    assert_eq!(stats["daily_calls"], json!({ day.clone(): 6 }));
    assert_eq!(stats["hourly"][hour], json!({"allowed": 3, "denied": 3}));
    assert_eq!(stats["daily"][&day], json!({"allowed": 3, "denied": 3}));
    assert_eq!(stats["current_rate_limit"], "3/hour");

    call(
        "POST",
        &format!("{base}/configure"),
        Some(json!({"key": "k", "limit": "100/minute"})),
        None,
    )
    .await;
    let (_, stats) = get(&format!("{base}/stats/k")).await;
    assert_eq!(stats["current_rate_limit"], "100/minute");
    let (_, never) = get(&format!("{base}/stats/never-seen")).await;
    assert_eq!(never["hourly_calls"], json!({}));
    assert_eq!(never["daily_calls"], json!({}));
    assert_eq!(get(&format!("{base}/stats/a%20b")).await.0, 422);

    // Every client's together, and one client's, in the admin API.
    let (status, global) = call("GET", &format!("{base}/admin/stats"), None, None).await;
    assert_eq!(status, 200, "{global}");
    assert_eq!(
        (
            &global["total_requests"],
            &global["allowed"],
            &global["denied"]
        ),
        (&json!(7), &json!(4), &json!(3))
    );
    assert_eq!(
        global["rules"]["default"],
        json!({"allowed": 4, "denied": 3})
    );
    assert_eq!(
        global["most_limited"],
        json!([{"client": "id:k", "denied": 3}])
    );
    let (status, client) = call("GET", &format!("{base}/admin/stats/k"), None, None).await;
    assert_eq!(status, 200, "{client}");
    assert_eq!(client["client"], "id:k");
    assert_eq!(client["last_24_hours"], json!({"allowed": 3, "denied": 3}));
    assert_eq!(
        client["rules"],
        json!({"default": {"allowed": 3, "denied": 3}})
    );
}

/// Two instances on one Redis count into the same statistics: either reads the calls made
/// on both, within the second the background flush takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_are_shared_by_instances_on_one_redis() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("service-stats");
    let envs = [
        ("DEFAULT_RATE_LIMIT", "1000/second"),
        ("REDIS_URL", redis.url()),
        ("REDIS_PREFIX", prefix.as_str()),
    ];
    let (a, b) = (start_service(&envs), start_service(&envs));
    for n in 0..10 {
        let base = if n % 2 == 0 { &a.address } else { &b.address };
        assert_eq!(get(&format!("http://{base}/check/k")).await.0, 200);
    }
    let started = std::time::Instant::now();
    loop {
        let (_, stats) = get(&format!("http://{}/stats/k", a.address)).await;
        let total: u64 = stats["daily_calls"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_u64)
            .sum();
        if total == 10 {
            break;
        }
        assert!(total < 10, "counted twice: {stats}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the other instance's calls did not arrive: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A change that cannot be kept is refused with why, and applied nowhere: a state file that
/// cannot be written, and a Redis that is gone.
#[tokio::test]
async fn a_change_that_cannot_be_kept_is_a_503_and_applies_nowhere() {
    let service = start_service(&[
        ("DEFAULT_RATE_LIMIT", "10/second"),
        ("TOLLGATE_STATE_FILE", "/nonexistent-directory/state.json"),
    ]);
    let base = format!("http://{}", service.address);
    let (status, body) = call(
        "POST",
        &format!("{base}/configure"),
        Some(json!({"key": "k", "limit": "1/hour"})),
        None,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let why = body["detail"].as_str().unwrap();
    assert!(why.contains("/nonexistent-directory/state.json"), "{why}");
    assert_eq!(limit_of(&base, "k").await, Some(10), "not applied here");
    let (_, rules) = call("GET", &format!("{base}/admin/rules"), None, None).await;
    assert_eq!(rules["runtime"], json!([]));

    let mut redis = TestRedis::start();
    let prefix = unique_prefix("service-gone");
    let service = start_service(&[
        ("DEFAULT_RATE_LIMIT", "10/second"),
        ("REDIS_URL", redis.url()),
        ("REDIS_PREFIX", &prefix),
    ]);
    let base = format!("http://{}", service.address);
    redis.kill();
    let started = std::time::Instant::now();
    let (status, body) = call(
        "POST",
        &format!("{base}/admin/configs"),
        Some(json!({"endpoint": "/a", "requests_per_window": 1, "window_seconds": 60})),
        None,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("Redis"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered in time"
    );
    let (_, configs) = call("GET", &format!("{base}/admin/configs"), None, None).await;
    assert_eq!(configs, json!([]), "not applied here");
}
