//! The rate limit header styles and the refusal bodies, as a client sees them: the
//! `X-RateLimit-*` fields (the default, unchanged), the IETF `RateLimit-Policy` and
//! `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers-11), both, and RFC 9457 problem
//! details, chosen by the builder or by the rules file (and its reloads). The IETF fields
//! are read with a structured-field parser, as a client would.

use std::path::Path;

use axum::body::Body;
use axum::http::{Response, StatusCode};
use testkit::*;
use tollgate::{HeaderStyle, RateLimitLayer, RulesError};

fn policy(response: &Response<Body>) -> Vec<Member> {
    sf_list(header(response, "ratelimit-policy").expect("RateLimit-Policy"))
}

fn service_limit(response: &Response<Body>) -> Member {
    let mut list = sf_list(header(response, "ratelimit").expect("RateLimit"));
    assert_eq!(list.len(), 1, "{list:?}");
    list.remove(0)
}

async fn app_with(json: &str, style: Option<HeaderStyle>, problem_details: bool) -> axum::Router {
    let mut builder = Limiter::builder().rules(rules(json));
    if let Some(style) = style {
        builder = builder.header_style(style);
    }
    let layer = builder
        .problem_details(problem_details)
        .build_layer()
        .await
        .unwrap();
    app(layer)
}

/// One token back every 20 minutes: no count moves during a test, however busy the machine.
const ONE_BAND: &str = r#"{"default": {"limit": "3/hour"}}"#;

fn has_x_ratelimit(response: &Response<Body>) -> bool {
    [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ]
    .iter()
    .all(|name| header(response, name).is_some())
}

#[tokio::test]
async fn default_is_x_ratelimit_only_and_unchanged() {
    // Not set at all, and set to the default: the same three fields, nothing else.
    for style in [None, Some(HeaderStyle::XRateLimit)] {
        let app = app_with(ONE_BAND, style, false).await;
        let response = send(&app, request("GET", "/api/data", Some("a"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-ratelimit-limit"), Some("3"));
        assert_eq!(header(&response, "x-ratelimit-remaining"), Some("2"));
        let reset: u64 = header(&response, "x-ratelimit-reset")
            .unwrap()
            .parse()
            .unwrap();
        assert!((unix_now()..=unix_now() + 1201).contains(&reset), "{reset}");
        assert!(header(&response, "ratelimit").is_none());
        assert!(header(&response, "ratelimit-policy").is_none());

        send(&app, request("GET", "/api/data", Some("a"))).await;
        send(&app, request("GET", "/api/data", Some("a"))).await;
        let refused = send(&app, request("GET", "/api/data", Some("a"))).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&refused, "content-type"), Some("application/json"));
        assert!(header(&refused, "ratelimit").is_none());
        let body = body_json(refused).await;
        assert_eq!(body["error"], "rate_limited");
        assert_eq!(body["limit"], 3);
    }
}

#[tokio::test]
async fn ietf_only() {
    let app = app_with(ONE_BAND, Some(HeaderStyle::Ietf), false).await;
    let response = send(&app, request("GET", "/api/data", Some("a"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "x-ratelimit-limit").is_none());
    assert!(header(&response, "x-ratelimit-remaining").is_none());
    assert!(header(&response, "x-ratelimit-reset").is_none());
    assert_eq!(
        policy(&response),
        [Member {
            name: "default".into(),
            params: vec![("q".into(), 3), ("w".into(), 3600)],
        }]
    );
    let limit = service_limit(&response);
    assert_eq!(limit.name, "default");
    assert_eq!(limit.param("r"), 2);
    assert!((1..=1200).contains(&limit.param("t")), "{limit:?}");
}

/// The partition key names the client when its key is no secret: an address, never an
/// `X-Client-ID` (it may be an API key).
#[tokio::test]
async fn the_partition_key_is_an_address_never_an_id() {
    use axum::extract::ConnectInfo;
    let app = app_with(ONE_BAND, Some(HeaderStyle::Ietf), false).await;
    let mut by_address = request("GET", "/api/data", None);
    let peer: std::net::SocketAddr = "203.0.113.7:40000".parse().unwrap();
    by_address.extensions_mut().insert(ConnectInfo(peer));
    let response = send(&app, by_address).await;
    let field = header(&response, "ratelimit").expect("RateLimit");
    assert_eq!(sf_bytes(field, "pk"), [Some(b"ip:203.0.113.7".to_vec())]);
    assert_eq!(service_limit(&response).param("r"), 2);

    let response = send(&app, request("GET", "/api/data", Some("sk_live_secret"))).await;
    let field = header(&response, "ratelimit").expect("RateLimit");
    assert_eq!(sf_bytes(field, "pk"), [None], "{field}");
    assert!(!field.contains("pk"), "{field}");
}

#[tokio::test]
async fn both_agree_with_each_other() {
    let app = app_with(ONE_BAND, Some(HeaderStyle::Both), false).await;
    for expected_remaining in [2, 1, 0] {
        let response = send(&app, request("GET", "/api/data", Some("a"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        let limit = service_limit(&response);
        let x = |name| header(&response, name).unwrap().parse::<i64>().unwrap();
        assert_eq!(limit.param("r"), expected_remaining);
        assert_eq!(limit.param("r"), x("x-ratelimit-remaining"));
        assert_eq!(policy(&response)[0].param("q"), x("x-ratelimit-limit"));
        // `t` counts to the next token (one every 20 minutes); `X-RateLimit-Reset` keeps
        // its meaning, the Unix time when the bucket is full again: a token's time for each
        // one used.
        let used = 3 - expected_remaining;
        assert!((1199..=1200).contains(&limit.param("t")), "{limit:?}");
        let from_x = x("x-ratelimit-reset") - unix_now() as i64;
        assert!(
            (from_x - 1200 * used).abs() <= 1,
            "reset in {from_x} s after {used} used"
        );
    }
}

/// draft-11's `t`, "until more quota": with 10 a minute and three requests at once, 7 are
/// left and the next token is 6 s away (draft-10 counted the 18 s until full again).
#[tokio::test]
async fn t_counts_to_the_next_unit_per_algorithm() {
    let json = r#"{"default": {"limit": "10/minute"},
        "routes": [{"path": "/window", "limit": "10/minute", "algorithm": "fixed_window"}]}"#;
    let app = app_with(json, Some(HeaderStyle::Ietf), false).await;
    let mut last = None;
    for _ in 0..3 {
        last = Some(send(&app, request("GET", "/api/data", Some("a"))).await);
    }
    let limit = service_limit(&last.expect("three answers"));
    assert_eq!(limit.param("r"), 7);
    assert!((5..=6).contains(&limit.param("t")), "{limit:?}");
    // A fixed window gives everything back at its end: `t` is the time left in the minute.
    let before = unix_now();
    let windowed = service_limit(&send(&app, request("GET", "/window", Some("a"))).await);
    let after = unix_now();
    // `t` reaches a minute's end from the moment of the request (whole seconds, rounded up).
    let t = u64::try_from(windowed.param("t")).expect("t is not negative");
    assert!((1..=60).contains(&t), "{windowed:?}");
    let ends_a_minute = (before + t - 1..=after + t + 1).any(|moment| moment % 60 == 0);
    assert!(
        ends_a_minute,
        "{windowed:?} from {before}..{after} ends no minute"
    );
}

#[tokio::test]
async fn one_policy_item_per_band() {
    let json = r#"{"default": {"limit": "100/minute"},
        "routes": [{"path": "/api/data", "limits": [{"capacity": 2, "refill_rate": 0.5}, "1000/hour", "5000/day"]}]}"#;
    let app = app_with(json, Some(HeaderStyle::Ietf), false).await;
    let response = send(&app, request("GET", "/api/data", Some("a"))).await;
    let policies = policy(&response);
    let shapes: Vec<(&str, i64, i64)> = policies
        .iter()
        .map(|p| (p.name.as_str(), p.param("q"), p.param("w")))
        .collect();
    assert_eq!(
        shapes,
        [
            ("/api/data#0", 2, 4),
            ("/api/data#1", 1000, 3600),
            ("/api/data#2", 5000, 86400),
        ]
    );
    // The band closest to running out is reported, under its policy's name.
    let limit = service_limit(&response);
    assert_eq!((limit.name.as_str(), limit.param("r")), ("/api/data#0", 1));
    // The policy stays the same from response to response.
    let again = send(&app, request("GET", "/api/data", Some("b"))).await;
    assert_eq!(policy(&again), policies);
}

#[tokio::test]
async fn refusal_has_retry_after_and_both_forms() {
    let app = app_with(ONE_BAND, Some(HeaderStyle::Both), false).await;
    for _ in 0..3 {
        send(&app, request("GET", "/api/data", Some("a"))).await;
    }
    let refused = send(&app, request("GET", "/api/data", Some("a"))).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: i64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=1200).contains(&retry_after), "{retry_after}");
    assert!(has_x_ratelimit(&refused));
    assert_eq!(header(&refused, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(policy(&refused)[0].param("q"), 3);
    // On a refusal `t` names the moment `Retry-After` names, as the draft asks.
    let limit = service_limit(&refused);
    assert_eq!((limit.param("r"), limit.param("t")), (0, retry_after));
    assert_eq!(header(&refused, "content-type"), Some("application/json"));
    assert_eq!(body_json(refused).await["error"], "rate_limited");
}

#[tokio::test]
async fn problem_details_body() {
    let json = r#"{"default": {"limit": "100/minute"},
        "routes": [{"path": "/api/data", "limits": ["1/hour", "100/day"]}]}"#;
    let app = app_with(json, None, true).await;
    let allowed = send(&app, request("GET", "/api/data", Some("a"))).await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert!(has_x_ratelimit(&allowed));
    let refused = send(&app, request("GET", "/api/data", Some("a"))).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&refused, "content-type"),
        Some("application/problem+json")
    );
    assert!(header(&refused, "retry-after").is_some());
    assert!(has_x_ratelimit(&refused));
    let body = body_json(refused).await;
    assert_eq!(
        body["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    assert_eq!(
        body["title"],
        "Request cannot be satisfied as assigned quota has been exceeded"
    );
    assert_eq!(body["status"], 429);
    assert!(body["detail"].as_str().unwrap().contains("retry after"));
    assert_eq!(
        body["violated-policies"],
        serde_json::json!(["/api/data#0"])
    );
}

/// Real HTTP: the fields survive the wire, and the rules file's `headers` and
/// `problem_details` win over the builder and follow reloads.
#[tokio::test]
async fn rules_file_switches_style_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rate_limits.json");
    let write = |path: &Path, extra: &str| {
        let text = format!(r#"{{"default": {{"limit": "2/hour"}}{extra}}}"#);
        std::fs::write(path, text).unwrap();
    };
    write(&path, r#", "headers": "ietf""#);
    let limiter = Limiter::builder()
        .rules_file(&path)
        .watch_rules_file(false)
        .header_style(HeaderStyle::XRateLimit)
        .build()
        .await
        .unwrap();
    let base = serve(RateLimitLayer::new(limiter.clone())).await;
    let http = http();
    let get = async |client: &str| {
        http.get(format!("{base}/api/data"))
            .header("x-client-id", client)
            .send()
            .await
            .unwrap()
    };

    let response = get("a").await;
    assert_eq!(reqwest_header(&response, "x-ratelimit-limit"), None);
    let policy = sf_list(&reqwest_header(&response, "ratelimit-policy").unwrap());
    assert_eq!(policy[0].param("q"), 2);
    let limit = sf_list(&reqwest_header(&response, "ratelimit").unwrap());
    assert_eq!(limit[0].param("r"), 1);

    write(&path, r#", "headers": "both", "problem_details": true"#);
    limiter.reload().await.unwrap();
    let response = get("a").await;
    assert_eq!(
        reqwest_header(&response, "x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(
        sf_list(&reqwest_header(&response, "ratelimit").unwrap())[0].param("r"),
        0
    );
    let refused = get("a").await;
    assert_eq!(refused.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        reqwest_header(&refused, "content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(reqwest_header(&refused, "ratelimit").is_some());
    assert!(reqwest_header(&refused, "x-ratelimit-limit").is_some());

    // Without `headers`, the builder's choice is back: byte for byte the default.
    write(&path, "");
    limiter.reload().await.unwrap();
    let response = get("b").await;
    assert_eq!(reqwest_header(&response, "ratelimit"), None);
    assert_eq!(
        reqwest_header(&response, "x-ratelimit-limit").as_deref(),
        Some("2")
    );
    let refused = {
        get("b").await;
        get("b").await
    };
    assert_eq!(
        reqwest_header(&refused, "content-type").as_deref(),
        Some("application/json")
    );
}

#[test]
fn bad_headers_value_is_located() {
    let text = "{\n  \"default\": {\"limit\": \"2/minute\"},\n  \"headers\": \"ietf-draft\"\n}";
    let err = tollgate::Rules::from_json(text).unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("<inline>: at headers"), "{message}");
    assert!(
        message.contains(
            "unknown variant `ietf-draft`, expected one of `x-ratelimit`, `ietf`, `both`"
        ),
        "{message}"
    );
    let RulesError::Invalid { location, .. } = err else {
        panic!("{err:?}");
    };
    assert_eq!(location.json_path, "headers");
    assert_eq!(location.line_column.map(|(line, _)| line), Some(3));

    let err = tollgate::Rules::from_json(
        r#"{"default": {"limit": "2/minute"}, "problem_details": "yes"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("at problem_details"), "{err}");
}
