//! Behaviour through the layer (tower `oneshot`), run once per backend: the same scenarios
//! must pass on the in-memory backend and on a real Redis.

use std::time::Duration;

use axum::http::StatusCode;
use testkit::*;

const OK: StatusCode = StatusCode::OK;
const LIMITED: StatusCode = StatusCode::TOO_MANY_REQUESTS;

async fn allowed_responses_carry_the_bucket_state(store: &Store<'_>) {
    // One token every 12 minutes: no count moves during the test.
    let app = app(layer(store, rules(r#"{"default": {"limit": "5/hour"}}"#)).await);
    let before = unix_now();
    let first = send(&app, request("GET", "/api/data", Some("alice"))).await;
    let after = unix_now();
    assert_eq!(first.status(), OK);
    assert_eq!(header(&first, "x-ratelimit-limit"), Some("5"));
    assert_eq!(remaining(&first), Some(4));
    let reset: u64 = header(&first, "x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    // One token used at one per 720 s: full again 720 s after the request, rounded up.
    assert!(
        (before + 720..=after + 721).contains(&reset),
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
    // One token every 20 minutes: no count moves during the test.
    let app = app(layer(store, rules(r#"{"default": {"limit": "3/hour"}}"#)).await);
    let first_sent = unix_now();
    let got = statuses(&app, 3, || request("GET", "/", Some("bob"))).await;
    assert_eq!(got, [OK, OK, OK]);
    let denied = send(&app, request("GET", "/", Some("bob"))).await;
    let now = unix_now();
    assert_eq!(denied.status(), LIMITED);
    assert_eq!(header(&denied, "content-type"), Some("application/json"));
    assert_eq!(header(&denied, "x-ratelimit-limit"), Some("3"));
    assert_eq!(remaining(&denied), Some(0));
    // The next token comes 1200 s after the first request, the whole bucket 3600 s after
    // it (less the moments between the requests, which a busy machine stretches).
    let retry: u64 = header(&denied, "retry-after").unwrap().parse().unwrap();
    assert!(
        (1200 - (now - first_sent) - 1..=1200).contains(&retry),
        "retry-after {retry}"
    );
    let reset: u64 = header(&denied, "x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (first_sent + 3599..=now + 3601).contains(&reset),
        "reset {reset}, now {now}"
    );
    let body = body_json(denied).await;
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["retry_after"], retry);
    assert_eq!(body["limit"], 3);
    // Refused requests take nothing: still refused, with nothing left, and a wait no longer
    // than before.
    let again = send(&app, request("GET", "/", Some("bob"))).await;
    assert_eq!(again.status(), LIMITED);
    assert_eq!(remaining(&again), Some(0));
    let again_retry: u64 = header(&again, "retry-after").unwrap().parse().unwrap();
    assert!(again_retry <= retry, "{again_retry} after {retry}");
}

/// The first refusal of requests sent one after another; fails after 100 admitted.
async fn until_refused(
    app: &axum::Router,
    make: impl Fn() -> axum::http::Request<axum::body::Body>,
) -> axum::http::Response<axum::body::Body> {
    for _ in 0..100 {
        let response = send(app, make()).await;
        if response.status() == LIMITED {
            return response;
        }
        assert_eq!(response.status(), OK);
    }
    panic!("100 requests in a row admitted");
}

async fn tokens_refill_over_time(store: &Store<'_>) {
    // 20 tokens/s: one token every 50 ms.
    let app = app(layer(
        store,
        rules(r#"{"default": {"capacity": 2, "refill_rate": 20}}"#),
    )
    .await);
    let got = statuses(&app, 2, || request("GET", "/", Some("carol"))).await;
    assert_eq!(got, [OK, OK]);
    // On a busy machine a token may be back before the next request: ask until refused.
    let denied = until_refused(&app, || request("GET", "/", Some("carol"))).await;
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
        "routes": [{"path": "/api/submit", "methods": ["POST"], "limit": "1/hour"}]
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

async fn every_band_must_admit_and_refusals_take_nothing(store: &Store<'_>) {
    // A slow band of 5 per day and a fast band of 2 refilled every 200 ms.
    let app = app(layer(
        store,
        rules(r#"{"default": {"limits": ["5/day", {"capacity": 2, "refill_rate": 5}]}}"#),
    )
    .await);
    let get = || request("GET", "/", Some("bands"));
    let first = send(&app, get()).await;
    // The fast band (2 - 1 = 1 left) is closer to running out than the day band (4 left).
    assert_eq!(
        (header(&first, "x-ratelimit-limit"), remaining(&first)),
        (Some("2"), Some(1))
    );
    // Until the fast band refuses: the second request, unless a busy machine let a token
    // back in between.
    let mut admitted = 1;
    let refused = loop {
        let response = send(&app, get()).await;
        if response.status() != OK {
            break response;
        }
        admitted += 1;
    };
    assert_eq!(
        (refused.status(), header(&refused, "x-ratelimit-limit")),
        (LIMITED, Some("2")),
        "the fast band refuses before the day band, after {admitted} admitted"
    );
    assert_eq!(header(&refused, "retry-after"), Some("1"));
    // Then until the day band refuses, waiting for the fast band as often as it refuses.
    // Exactly five are admitted in all: had a refused request taken from the day band, fewer
    // would be.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let day_refusal = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no day refusal in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        let response = send(&app, get()).await;
        match (response.status(), header(&response, "x-ratelimit-limit")) {
            (LIMITED, Some("2")) => continue,
            (LIMITED, _) => break response,
            (status, _) => assert_eq!(status, OK),
        }
        admitted += 1;
        assert!(admitted <= 5, "a sixth admitted");
        if admitted == 5 {
            // The day band is spent; on a tie with the fast band, the later reset is named.
            assert_eq!(
                (
                    response.status(),
                    header(&response, "x-ratelimit-limit"),
                    remaining(&response)
                ),
                (OK, Some("5"), Some(0))
            );
        }
    };
    assert_eq!(admitted, 5, "admitted before the day band refused");
    assert_eq!(header(&day_refusal, "x-ratelimit-limit"), Some("5"));
    let retry: u64 = header(&day_refusal, "retry-after")
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 3600, "the day band's wait: {retry}");
}

async fn cost_takes_several_tokens(store: &Store<'_>) {
    let app = app(layer(
        store,
        rules(r#"{"default": {"capacity": 10, "refill_rate": 0.001, "cost": 3}}"#),
    )
    .await);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let response = send(&app, request("GET", "/", Some("costly"))).await;
        seen.push((response.status(), remaining(&response)));
    }
    assert_eq!(
        seen,
        [
            (OK, Some(7)),
            (OK, Some(4)),
            (OK, Some(1)),
            (LIMITED, Some(1))
        ]
    );
}

async fn shadow_rules_report_but_never_refuse(store: &Store<'_>) {
    let limits = layer(
        store,
        rules(r#"{"default": {"limit": "2/day", "shadow": true}}"#),
    )
    .await;
    let app = app(limits.clone());
    let mut seen = Vec::new();
    for _ in 0..5 {
        let response = send(&app, request("GET", "/", Some("watched"))).await;
        seen.push((response.status(), remaining(&response)));
    }
    assert_eq!(
        seen,
        [
            (OK, Some(1)),
            (OK, Some(0)),
            (OK, Some(0)),
            (OK, Some(0)),
            (OK, Some(0))
        ]
    );
    let stats = limits.limiter().stats();
    assert_eq!((stats.shadowed, stats.denied), (3, 0));
}

fn with_tier(
    mut request: axum::http::Request<axum::body::Body>,
    tier: &str,
) -> axum::http::Request<axum::body::Body> {
    request.extensions_mut().insert(tollgate::Tier::new(tier));
    request
}

async fn tiers_pick_a_rule_set_and_unknown_tiers_are_500(store: &Store<'_>) {
    let limits = layer(store, rules(r#"{
        "default": {"limit": "1/day"},
        "routes": [{"path": "/api/data", "limit": "2/day"}],
        "tiers": {
            "pro": {"default": {"limit": "5/day"}, "routes": [{"path": "/api/data", "limit": "50/day"}]},
            "free": {"default": {"limit": "3/day"}}
        },
        "default_tier": "free"
        }"#)).await;
    let app = app(limits.clone());
    let limit_of = |r: &axum::http::Response<axum::body::Body>| {
        header(r, "x-ratelimit-limit").map(str::to_owned)
    };
    let pro = send(&app, with_tier(request("GET", "/", Some("t")), "pro")).await;
    assert_eq!(limit_of(&pro).as_deref(), Some("5"));
    let pro_data = send(
        &app,
        with_tier(request("GET", "/api/data", Some("t")), "pro"),
    )
    .await;
    assert_eq!(limit_of(&pro_data).as_deref(), Some("50"));
    // No tier on the request: the default tier, whose rules do not have /api/data.
    let untiered = send(&app, request("GET", "/api/data", Some("t"))).await;
    assert_eq!(limit_of(&untiered).as_deref(), Some("3"));
    // A tier the rules do not know: the app and its rules disagree.
    let unknown = send(&app, with_tier(request("GET", "/", Some("t")), "gold")).await;
    assert_eq!(unknown.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = body_json(unknown).await;
    assert_eq!(body["error"], "unknown_tier");
    assert!(
        body["message"].as_str().unwrap().contains("\"gold\""),
        "{body}"
    );
    assert_eq!(limits.limiter().stats().unknown_tiers, 1);
    // The header a client could send is not a tier.
    let mut sneaky = request("GET", "/", Some("t2"));
    sneaky
        .headers_mut()
        .insert("x-tier", "pro".parse().unwrap());
    assert_eq!(limit_of(&send(&app, sneaky).await).as_deref(), Some("3"));
}

async fn clients_can_have_their_own_limits(store: &Store<'_>) {
    let app = app(layer(store, rules(r#"{
        "default": {"limit": "1/day"},
        "routes": [{"path": "/health", "unlimited": true}],
        "clients": {"id:vip": {"limit": "100/day"}, "id:internal": {"unlimited": true}, "ip:10.9.9.9": {"limit": "7/day"}}
        }"#)).await);
    let vip = send(&app, request("GET", "/", Some("vip"))).await;
    assert_eq!(
        (vip.status(), header(&vip, "x-ratelimit-limit")),
        (OK, Some("100"))
    );
    let internal = statuses(&app, 5, || request("GET", "/", Some("internal"))).await;
    assert_eq!(internal, [OK; 5]);
    assert_eq!(
        header(
            &send(&app, request("GET", "/", Some("internal"))).await,
            "x-ratelimit-limit"
        ),
        None
    );
    let mut by_ip = request("GET", "/", None);
    by_ip
        .headers_mut()
        .insert("x-forwarded-for", "10.9.9.9".parse().unwrap());
    assert_eq!(
        header(&send(&app, by_ip).await, "x-ratelimit-limit"),
        Some("7")
    );
    assert_eq!(
        statuses(&app, 2, || request("GET", "/", Some("someone"))).await,
        [OK, LIMITED]
    );
    // Unlimited routes stay unlimited for everyone.
    assert_eq!(
        header(
            &send(&app, request("GET", "/health", Some("vip"))).await,
            "x-ratelimit-limit"
        ),
        None
    );
}

/// Sleeps until `offset` past the next whole second of Unix time.
async fn sleep_until_second_plus(offset: Duration) {
    tokio::time::sleep(Duration::from_secs(1) - now().1 + offset).await;
}

/// The whole second of Unix time, and how far into it we are.
fn now() -> (u64, Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (
        now.as_secs(),
        Duration::from_nanos(u64::from(now.subsec_nanos())),
    )
}

/// The statuses of `n` requests, and whether all were sent and answered within one second
/// of Unix time, between `from` and `to` into it.
async fn statuses_within(
    app: &axum::Router,
    n: usize,
    make: impl Fn() -> axum::http::Request<axum::body::Body>,
    from: Duration,
    to: Duration,
) -> (Vec<StatusCode>, Option<u64>) {
    let (second, start) = now();
    let got = statuses(app, n, make).await;
    let (end_second, end) = now();
    let inside = second == end_second && start >= from && end < to;
    (got, inside.then_some(second))
}

async fn fixed_window_starts_afresh_at_the_boundary(store: &Store<'_>) {
    let app = app(layer(
        store,
        rules(r#"{"default": {"limit": "2/second", "algorithm": "fixed_window"}}"#),
    )
    .await);
    let end = Duration::from_millis(990);
    until_one_run_fits(async |client| {
        let get = || request("GET", "/", Some(client));
        sleep_until_second_plus(Duration::from_millis(100)).await;
        let (got, first) = statuses_within(&app, 3, get, Duration::ZERO, end).await;
        // Just after the boundary the window is new, whatever happened just before it.
        sleep_until_second_plus(Duration::from_millis(50)).await;
        let (again, next) = statuses_within(&app, 3, get, Duration::ZERO, end).await;
        let (Some(first), Some(next)) = (first, next) else {
            return false;
        };
        assert!(next > first);
        assert_eq!(got, [OK, OK, LIMITED]);
        assert_eq!(again, [OK, OK, LIMITED]);
        true
    })
    .await;
}

async fn sliding_window_still_counts_the_previous_window(store: &Store<'_>) {
    let app = app(layer(
        store,
        rules(r#"{"default": {"limit": "2/second", "algorithm": "sliding_window"}}"#),
    )
    .await);
    let ms = Duration::from_millis;
    until_one_run_fits(async |client| {
        let get = || request("GET", "/", Some(client));
        sleep_until_second_plus(ms(100)).await;
        let (full, first) = statuses_within(&app, 3, get, ms(0), ms(990)).await;
        // Until 500 ms into the next window the previous one still weighs more than 2 × 0.5:
        // full (at 100 ms, 2 × 0.9 = 1.8).
        sleep_until_second_plus(ms(100)).await;
        let (early, second) = statuses_within(&app, 1, get, ms(0), ms(450)).await;
        // From then on one more fits (at 700 ms it weighs 0.6), and only one.
        tokio::time::sleep(ms(600).saturating_sub(now().1)).await;
        let (late, third) = statuses_within(&app, 2, get, ms(550), ms(990)).await;
        let (Some(first), Some(second), Some(third)) = (first, second, third) else {
            return false;
        };
        if second != first + 1 || third != second {
            return false;
        }
        assert_eq!(full, [OK, OK, LIMITED]);
        assert_eq!(early, [LIMITED]);
        assert_eq!(late, [OK, LIMITED]);
        true
    })
    .await;
}

/// The rule is the normal form's: a path written with dot segments, encoded unreserved
/// characters or doubled slashes counts under the rule of the path it names, while the
/// request itself reaches the app unchanged and is never refused for its form.
async fn paths_are_decided_by_their_normal_form(store: &Store<'_>) {
    let app = app(layer(
        store,
        rules(
            r#"{"default": {"limit": "100/day"},
                "routes": [{"path": "/static/{*rest}", "unlimited": true},
                           {"path": "/api/data", "limit": "3/day"}]}"#,
        ),
    )
    .await);
    let mut seen = Vec::new();
    for path in [
        "/static/../api/data",
        "/api/%64ata",
        "/api//data",
        "/api/./data",
    ] {
        let response = send(&app, request("GET", path, Some("mallory"))).await;
        seen.push((
            path,
            response.status(),
            header(&response, "x-ratelimit-limit").map(str::to_owned),
        ));
    }
    let three = Some("3".to_owned());
    // axum routes the request as it was written: `/static/../api/data` is its static
    // route; the others are not routes of the app at all.
    assert_eq!(
        seen,
        [
            ("/static/../api/data", OK, three.clone()),
            ("/api/%64ata", StatusCode::NOT_FOUND, three.clone()),
            ("/api//data", StatusCode::NOT_FOUND, three.clone()),
            ("/api/./data", LIMITED, three),
        ]
    );
    // An encoded slash is a character of its segment: the static route's, unlimited, and
    // not refused.
    let encoded = send(
        &app,
        request("GET", "/static/..%2Fapi/data", Some("mallory")),
    )
    .await;
    assert_eq!(encoded.status(), OK);
    assert_eq!(header(&encoded, "x-ratelimit-limit"), None);
}

/// The token-bucket middleware's own `rate_limits.json`, byte for byte: 20 at once, then 5
/// a second.
async fn the_token_bucket_middlewares_rules_file_loads_unchanged(store: &Store<'_>) {
    let file = repo_file("tests/data/seed003/rate_limits.json");
    let rules = tollgate::Rules::from_file(&file).unwrap_or_else(|e| panic!("{e}"));
    let app = app(layer(store, rules).await);
    let started = std::time::Instant::now();
    let mut allowed = 0;
    let mut refused = None;
    for _ in 0..40 {
        let response = send(&app, request("GET", "/api/data", Some("seed-client"))).await;
        assert_eq!(header(&response, "x-ratelimit-limit"), Some("20"));
        match response.status() {
            OK => allowed += 1,
            LIMITED => refused = Some(response),
            other => panic!("{other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let most = 20 + (5.0 * elapsed).ceil() as u32;
    assert!(
        (20..=most).contains(&allowed),
        "{allowed} of 40 in {elapsed:.2} s"
    );
    // The next token is a fifth of a second away.
    let refused = refused.expect("a refusal past 20");
    assert_eq!(header(&refused, "retry-after"), Some("1"));
}

/// Routes that name one rule count against one budget per client.
async fn routes_naming_a_rule_share_its_budget(store: &Store<'_>) {
    // One token an hour: no count moves during the test.
    let app = app(layer(
        store,
        rules(
            r#"{"default": {"limit": "100/hour"},
                "rules": {"writes": {"limit": "3/hour"}},
                "routes": [{"path": "/api/submit", "methods": ["POST"], "rule": "writes"},
                           {"path": "/api/users/{id}", "methods": ["PUT"], "rule": "writes"}]}"#,
        ),
    )
    .await);
    let first = send(&app, request("POST", "/api/submit", Some("alice"))).await;
    assert_eq!(remaining(&first), Some(2));
    let second = send(&app, request("PUT", "/api/users/7", Some("alice"))).await;
    assert_eq!(remaining(&second), Some(1));
    let third = send(&app, request("PUT", "/api/users/8", Some("alice"))).await;
    assert_eq!(remaining(&third), Some(0));
    let fourth = send(&app, request("POST", "/api/submit", Some("alice"))).await;
    assert_eq!(fourth.status(), LIMITED);
    // Another client, and another rule, have their own.
    let bob = send(&app, request("POST", "/api/submit", Some("bob"))).await;
    assert_eq!(remaining(&bob), Some(2));
    let read = send(&app, request("GET", "/api/submit", Some("alice"))).await;
    assert_eq!(remaining(&read), Some(99));
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
    every_band_must_admit_and_refusals_take_nothing,
    cost_takes_several_tokens,
    shadow_rules_report_but_never_refuse,
    tiers_pick_a_rule_set_and_unknown_tiers_are_500,
    clients_can_have_their_own_limits,
    fixed_window_starts_afresh_at_the_boundary,
    sliding_window_still_counts_the_previous_window,
    paths_are_decided_by_their_normal_form,
    the_token_bucket_middlewares_rules_file_loads_unchanged,
    routes_naming_a_rule_share_its_budget,
);

/// `Router::layer` runs the layer for every request, so a 404 is charged to the rule its
/// path matches, `default` here; `Router::route_layer` runs it only for paths a route
/// serves, so a 404 is free. A 405 (a method the path's route does not serve) comes from
/// inside the route, and is charged either way.
#[tokio::test]
async fn layer_charges_404_while_route_layer_does_not() {
    let limits = || async {
        layer(
            &Store::Memory,
            rules(r#"{"default": {"capacity": 10, "refill_rate": 0.001}}"#),
        )
        .await
    };
    let routes = || axum::Router::new().route("/api/data", axum::routing::get(|| async { "data" }));
    let whole = routes().layer(limits().await);
    let matched_only = routes().route_layer(limits().await);
    // Remaining after a 404, a 405 and a served request.
    for (app, expected) in [
        (whole, [Some(9), Some(8), Some(7)]),
        (matched_only, [None, Some(9), Some(8)]),
    ] {
        let mut seen = Vec::new();
        for (method, path, status) in [
            ("GET", "/nowhere", StatusCode::NOT_FOUND),
            ("POST", "/api/data", StatusCode::METHOD_NOT_ALLOWED),
            ("GET", "/api/data", StatusCode::OK),
        ] {
            let response = send(&app, request(method, path, Some("prober"))).await;
            assert_eq!(response.status(), status, "{method} {path}");
            seen.push(remaining(&response));
        }
        assert_eq!(seen, expected);
    }
}
