//! Reservations through `tollgate serve`, as an LLM gateway would use them: two services on
//! one real Redis, a reservation made on one and settled on the other, an overrun owed
//! across both, a reservation left to expire at its estimate, and the check token guarding
//! `/settle` as it guards `/check`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::*;

async fn post(base: &str, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = http().post(format!("http://{base}{path}")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_made_on_one_service_is_settled_on_another() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("reservations-service");
    let token = "check-token";
    let env = [
        ("REDIS_URL", redis.url()),
        ("REDIS_PREFIX", prefix.as_str()),
        // 1,000 tokens, one back every 86.4 s: no whole token comes back during the test.
        ("DEFAULT_RATE_LIMIT", "1000/day"),
        ("TOLLGATE_CHECK_TOKEN", token),
        ("TOLLGATE_RESERVATION_TIMEOUT_SECS", "2"),
    ];
    let (one, two) = (start_service(&env), start_service(&env));
    let (one, two) = (one.address.clone(), two.address.clone());
    let reserve = |base: String, cost: u32| async move {
        let body = json!({"identifier": "user:7", "cost": cost, "settle": true});
        post(&base, "/check", Some(token), body).await
    };

    // The check token guards /settle as it guards /check.
    let (status, _) = post(
        &one,
        "/settle",
        None,
        json!({"reservation": "x", "cost": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, reserved) = reserve(one.clone(), 500).await;
    assert_eq!(status, StatusCode::OK, "{reserved}");
    assert_eq!(reserved["tokens_remaining"], 500);
    let id = reserved["reservation"].as_str().expect("an id").to_owned();
    // Used 1,300: 800 more than reserved, 300 past empty, owed.
    let (status, settled) = post(
        &two,
        "/settle",
        Some(token),
        json!({"reservation": id, "cost": 1300}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{settled}");
    assert_eq!(
        (&settled["estimate"], &settled["tokens_remaining"]),
        (&json!(500), &json!(0))
    );
    let (status, again) = post(
        &one,
        "/settle",
        Some(token),
        json!({"reservation": id, "cost": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let (status, refused) = reserve(two.clone(), 1).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "owed on every instance: {refused}"
    );
    assert!(refused["reservation"].is_null());

    // Left unsettled, a reservation expires at its estimate.
    let (status, other) = post(
        &one,
        "/check",
        Some(token),
        json!({"identifier": "user:8", "cost": 100, "settle": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{other}");
    let id = other["reservation"].as_str().expect("an id").to_owned();
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let (status, _) = post(
        &two,
        "/settle",
        Some(token),
        json!({"reservation": id, "cost": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, peeked) = post(
        &two,
        "/check",
        Some(token),
        json!({"identifier": "user:8", "peek": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(peeked["tokens_remaining"], 900, "{peeked}");
}
