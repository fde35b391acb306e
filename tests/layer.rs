//! Behaviour through the layer (tower `oneshot`), run once per backend: the same scenarios
//! must pass on the in-memory backend and on a real Redis.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;

const OK: StatusCode = StatusCode::OK;
const LIMITED: StatusCode = StatusCode::TOO_MANY_REQUESTS;

async fn allowed_responses_carry_the_bucket_state(store: &Store<'_>) {
    let app = app(layer(
        store,
        rules(r#"{"default": {"capacity": 5, "refill_rate": 1}}"#),
    )
    .await);
    let before = unix_now();
    let first = send(&app, request("GET", "/api/data", Some("alice"))).await;
    assert_eq!(first.status(), OK);
    assert_eq!(header(&first, "x-ratelimit-limit"), Some("5"));
    assert_eq!(remaining(&first), Some(4));
    let reset: u64 = header(&first, "x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    // One token used at 1 token/s: full again about one second from now, rounded up.
    assert!(
        (before + 1..=before + 3).contains(&reset),
        "reset {reset}, now {before}"
    );
    assert_eq!(header(&first, "retry-after"), None);

    let second = send(&app, request("GET", "/api/data", Some("alice"))).await;
    assert_eq!(remaining(&second), Some(3));
    let reset2: u64 = header(&second, "x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        reset2 >= reset,
        "reset moves later as tokens are used: {reset} then {reset2}"
    );
}

async fn capacity_exhausted_gives_429_with_retry_after(store: &Store<'_>) {
    let app = app(layer(
        store,
        rules(r#"{"default": {"capacity": 3, "refill_rate": 0.1}}"#),
    )
    .await);
    let got = statuses(&app, 3, || request("GET", "/", Some("bob"))).await;
    assert_eq!(got, [OK, OK, OK]);
    let before = unix_now();
    let denied = send(&app, request("GET", "/", Some("bob"))).await;
    assert_eq!(denied.status(), LIMITED);
    assert_eq!(header(&denied, "content-type"), Some("application/json"));
    assert_eq!(header(&denied, "x-ratelimit-limit"), Some("3"));
    assert_eq!(remaining(&denied), Some(0));
    // The next token comes 10 s after the first request.
    let retry: u64 = header(&denied, "retry-after").unwrap().parse().unwrap();
    assert!((9..=10).contains(&retry), "retry-after {retry}");
    let reset: u64 = header(&denied, "x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (before + 28..=before + 31).contains(&reset),
        "reset {reset}, now {before}"
    );
    let body = body_json(denied).await;
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["retry_after"], retry);
    assert_eq!(body["limit"], 3);
    // Refused requests take nothing: still refused, still the same wait.
    let again = send(&app, request("GET", "/", Some("bob"))).await;
    assert_eq!(again.status(), LIMITED);
}

async fn tokens_refill_over_time(store: &Store<'_>) {
    // 20 tokens/s: one token every 50 ms.
    let app = app(layer(
        store,
        rules(r#"{"default": {"capacity": 2, "refill_rate": 20}}"#),
    )
    .await);
    let got = statuses(&app, 3, || request("GET", "/", Some("carol"))).await;
    assert_eq!(got[..2], [OK, OK]);
    let denied = send(&app, request("GET", "/", Some("carol"))).await;
    assert_eq!(denied.status(), LIMITED);
    assert_eq!(header(&denied, "retry-after"), Some("1"));
    // Waiting is the behaviour under test: after 150 ms at least two tokens are back.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let got = statuses(&app, 2, || request("GET", "/", Some("carol"))).await;
    assert_eq!(got, [OK, OK]);
}

async fn clients_have_their_own_buckets(store: &Store<'_>) {
    let app = app(layer(
        store,
        rules(r#"{"default": {"capacity": 2, "refill_rate": 0.001}}"#),
    )
    .await);
    assert_eq!(
        statuses(&app, 3, || request("GET", "/", Some("alice"))).await,
        [OK, OK, LIMITED]
    );
    assert_eq!(
        statuses(&app, 2, || request("GET", "/", Some("bob"))).await,
        [OK, OK]
    );
    // An X-Client-ID that looks like an address is not that address's bucket.
    let by_ip = || {
        let mut r = request("GET", "/", None);
        r.headers_mut()
            .insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        r
    };
    assert_eq!(statuses(&app, 3, by_ip).await, [OK, OK, LIMITED]);
    assert_eq!(
        statuses(&app, 1, || request("GET", "/", Some("10.0.0.1"))).await,
        [OK]
    );
}

async fn each_rule_has_its_own_bucket(store: &Store<'_>) {
    let app = app(layer(
        store,
        rules(
            r#"{
        "default": {"capacity": 1, "refill_rate": 0.001},
        "routes": [
            {"path": "/api/users/{id}", "capacity": 2, "refill_rate": 0.001},
            {"path": "/api/data", "capacity": 3, "refill_rate": 0.001}
        ]}"#,
        ),
    )
    .await);
    // Paths matching one pattern share the rule's bucket.
    let first = send(&app, request("GET", "/api/users/1", Some("dave"))).await;
    assert_eq!(header(&first, "x-ratelimit-limit"), Some("2"));
    assert_eq!(
        send(&app, request("GET", "/api/users/2", Some("dave")))
            .await
            .status(),
        OK
    );
    assert_eq!(
        send(&app, request("GET", "/api/users/3", Some("dave")))
            .await
            .status(),
        LIMITED
    );
    let data = send(&app, request("GET", "/api/data", Some("dave"))).await;
    assert_eq!((data.status(), remaining(&data)), (OK, Some(2)));
    let root = send(&app, request("GET", "/", Some("dave"))).await;
    assert_eq!(
        (root.status(), header(&root, "x-ratelimit-limit")),
        (OK, Some("1"))
    );
}

async fn unlimited_routes_pass_without_headers(store: &Store<'_>) {
    let app = app(layer(store, rules(r#"{
        "default": {"capacity": 1, "refill_rate": 0.001},
        "routes": [{"path": "/health", "unlimited": true}, {"path": "/static/{*rest}", "unlimited": true}]
        }"#)).await);
    for path in ["/health", "/static/css/site.css"] {
        for _ in 0..20 {
            let response = send(&app, request("GET", path, Some("erin"))).await;
            assert_eq!(response.status(), OK, "{path}");
            assert!(
                response
                    .headers()
                    .keys()
                    .all(|k| !k.as_str().starts_with("x-ratelimit"))
            );
        }
    }
}

async fn methods_pick_the_rule(store: &Store<'_>) {
    let app = app(layer(
        store,
        rules(
            r#"{
        "default": {"capacity": 3, "refill_rate": 0.001},
        "routes": [{"path": "/api/submit", "methods": ["POST"], "limit": "1/minute"}]
        }"#,
        ),
    )
    .await);
    let post = || request("POST", "/api/submit", Some("frank"));
    assert_eq!(statuses(&app, 2, post).await, [OK, LIMITED]);
    let get = send(&app, request("GET", "/api/submit", Some("frank"))).await;
    assert_eq!(
        (get.status(), header(&get, "x-ratelimit-limit")),
        (OK, Some("3"))
    );
}

async fn bad_client_ids_get_400(store: &Store<'_>) {
    let app = app(layer(
        store,
        rules(r#"{"default": {"capacity": 1, "refill_rate": 0.001}}"#),
    )
    .await);
    let long = "x".repeat(129);
    for (value, why) in [
        (long.as_str(), "129 bytes long"),
        ("two words", "position 3"),
        ("", "empty"),
    ] {
        let mut r = request("GET", "/", None);
        r.headers_mut()
            .insert("x-client-id", value.parse().unwrap());
        let response = send(&app, r).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{value:?}");
        assert_eq!(header(&response, "content-type"), Some("application/json"));
        let body = body_json(response).await;
        assert_eq!(body["error"], "invalid_client_id");
        assert!(body["message"].as_str().unwrap().contains(why), "{body}");
    }
}

async fn unidentified_clients_share_one_bucket(store: &Store<'_>) {
    let app = app(layer(
        store,
        rules(r#"{"default": {"capacity": 2, "refill_rate": 0.001}}"#),
    )
    .await);
    assert_eq!(
        statuses(&app, 3, || request("GET", "/", None)).await,
        [OK, OK, LIMITED]
    );
}

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(&super::Store::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let redis = super::TestRedis::start();
                    let prefix = super::unique_prefix(stringify!($scenario));
                    super::$scenario(&super::Store::Redis(&redis, prefix)).await;
                }
            )*
        }
    };
}

on_both_backends!(
    allowed_responses_carry_the_bucket_state,
    capacity_exhausted_gives_429_with_retry_after,
    tokens_refill_over_time,
    clients_have_their_own_buckets,
    each_rule_has_its_own_bucket,
    unlimited_routes_pass_without_headers,
    methods_pick_the_rule,
    bad_client_ids_get_400,
    unidentified_clients_share_one_bucket,
);
