//! Who may name the client: `X-Client-ID` and `X-Forwarded-For` count only from trusted
//! peers. Over real TCP (the layer sees the connection's peer address), through `oneshot`
//! with the peer in the request's extensions, and through the demo binary's environment.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use testkit::*;
use tollgate::{RateLimitLayer, RateLimitLayerBuilder};

/// As the shipped rules: an override that only one trusted caller should reach.
const RULES: &str = r#"{
    "default": {"capacity": 5, "refill_rate": 0.001},
    "clients": {"id:internal-batch": {"limit": "6000/minute"}}
}"#;

/// The layer on `store`, with the trust options `trust` sets.
async fn build(
    store: &Store<'_>,
    trust: impl FnOnce(RateLimitLayerBuilder) -> RateLimitLayerBuilder,
) -> RateLimitLayer {
    let builder = Limiter::builder().rules(rules(RULES));
    let builder = match store {
        Store::Memory => builder,
        Store::Redis(redis, prefix) => on_test_redis(builder, redis, prefix),
    };
    let limiter = builder.build().await.expect("build limiter");
    trust(RateLimitLayer::builder(limiter))
        .build()
        .expect("build layer")
}

/// Status, `X-RateLimit-Limit` and `X-RateLimit-Remaining` of one GET /api/data.
async fn seen(base: &str, headers: &[(&str, &str)]) -> (StatusCode, String, String) {
    let mut request = http().get(format!("{base}/api/data"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("a response");
    let header = |name| reqwest_header(&response, name).unwrap_or_default();
    (
        response.status(),
        header("x-ratelimit-limit"),
        header("x-ratelimit-remaining"),
    )
}

/// Served on 127.0.0.1 with trusted proxies that exclude loopback: this client is not a
/// proxy, so whatever it sends, it is `ip:127.0.0.1`.
async fn untrusted_clients_cannot_choose_their_key(store: &Store<'_>) {
    let trust = |layer: RateLimitLayerBuilder| layer.trusted_proxies(["10.0.0.0/8", "fd00::/8"]);
    let base = serve(build(store, trust).await).await;
    let (ok, limited) = (StatusCode::OK, StatusCode::TOO_MANY_REQUESTS);

    // A fresh identity on every request buys nothing: one bucket of 5.
    let mut statuses = Vec::new();
    for n in 0..8 {
        let id = format!("fresh-{n}");
        let forwarded = format!("198.51.100.{n}");
        let (status, limit, remaining) = seen(
            &base,
            &[("x-client-id", &id), ("x-forwarded-for", &forwarded)],
        )
        .await;
        assert_eq!(limit, "5");
        statuses.push((status, remaining));
    }
    let expected: Vec<(StatusCode, String)> = ["4", "3", "2", "1", "0"]
        .map(|r| (ok, r.to_owned()))
        .into_iter()
        .chain(std::iter::repeat_n((limited, "0".to_owned()), 3))
        .collect();
    assert_eq!(statuses, expected);

    // The override is out of reach: the header is not read at all, not even to refuse it.
    let batch = seen(&base, &[("x-client-id", "internal-batch")]).await;
    assert_eq!(batch, (limited, "5".to_owned(), "0".to_owned()));
    let unusable = seen(&base, &[("x-client-id", "has space")]).await;
    assert_eq!(
        unusable.0, limited,
        "an untrusted peer's X-Client-ID is not read"
    );

    if let Store::Redis(redis, prefix) = store {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut redis.client())
            .unwrap();
        assert!(!keys.is_empty());
        for key in &keys {
            assert!(key.contains("ip:127.0.0.1"), "{key} in {keys:?}");
            assert!(
                !key.contains("id:") && !key.contains("198.51.100"),
                "a key the client chose: {keys:?}"
            );
        }
    }
}

#[tokio::test]
async fn untrusted_clients_cannot_choose_their_key_on_memory() {
    untrusted_clients_cannot_choose_their_key(&Store::Memory).await;
}

#[tokio::test]
async fn untrusted_clients_cannot_choose_their_key_on_redis() {
    let redis = TestRedis::start();
    untrusted_clients_cannot_choose_their_key(&Store::Redis(&redis, unique_prefix("trust"))).await;
}

/// With the default trusted peers, a proxy on this host (loopback) names its clients.
#[tokio::test]
async fn by_default_loopback_names_its_clients() {
    let base = serve(build(&Store::Memory, |layer| layer).await).await;
    for n in 0..8 {
        let id = format!("fresh-{n}");
        let seen = seen(&base, &[("x-client-id", &id)]).await;
        assert_eq!(
            seen,
            (StatusCode::OK, "5".to_owned(), "4".to_owned()),
            "{id}"
        );
    }
    for n in 0..8 {
        let forwarded = format!("6.6.6.1, 198.51.100.{n}");
        let seen = seen(&base, &[("x-forwarded-for", &forwarded)]).await;
        assert_eq!(
            seen,
            (StatusCode::OK, "5".to_owned(), "4".to_owned()),
            "{forwarded}"
        );
    }
    let batch = seen(&base, &[("x-client-id", "internal-batch")]).await;
    assert_eq!(batch.0, StatusCode::OK);
    assert_eq!(batch.1, "6000");
    let unusable = seen(&base, &[("x-client-id", "has space")]).await;
    assert_eq!(unusable.0, StatusCode::BAD_REQUEST);
}

/// `X-RateLimit-Limit` for a request claiming `internal-batch` from `peer`, with the peer
/// given as axum's `ConnectInfo` or as a bare `SocketAddr` extension.
async fn limit_claimed_from(app: &axum::Router, peer: &str, connect_info: bool) -> String {
    let peer: SocketAddr = peer.parse().unwrap();
    let mut request = Request::get("/api/data")
        .header("x-client-id", "internal-batch")
        .header("x-forwarded-for", "198.51.100.200")
        .body(Body::empty())
        .unwrap();
    if connect_info {
        request.extensions_mut().insert(ConnectInfo(peer));
    } else {
        request.extensions_mut().insert(peer);
    }
    let response = send(app, request).await;
    header(&response, "x-ratelimit-limit")
        .expect("a limited route")
        .to_owned()
}

#[tokio::test]
async fn the_peer_address_decides_whether_headers_count() {
    let app = app(build(&Store::Memory, |layer| layer).await);
    let trusted = [
        "127.0.0.1:40000",
        "127.1.2.3:40000",
        "10.20.30.40:40000",
        "172.16.5.4:40000",
        "172.31.0.1:40000",
        "192.168.0.10:40000",
        "[::1]:40000",
        "[fd00::10]:40000",
        "[fc00::1]:40000",
        "[::ffff:127.0.0.1]:40000",
        "[::ffff:192.168.0.10]:40000",
    ];
    let untrusted = [
        "203.0.113.7:40000",
        "8.8.8.8:40000",
        "172.32.0.1:40000",
        "100.64.0.1:40000",
        "[2001:db8::1]:40000",
        "[fe80::1]:40000",
        "[::ffff:203.0.113.7]:40000",
    ];
    for connect_info in [true, false] {
        for peer in trusted {
            assert_eq!(
                limit_claimed_from(&app, peer, connect_info).await,
                "6000",
                "{peer} is trusted (ConnectInfo: {connect_info})"
            );
        }
        for peer in untrusted {
            assert_eq!(
                limit_claimed_from(&app, peer, connect_info).await,
                "5",
                "{peer} is not trusted (ConnectInfo: {connect_info})"
            );
        }
    }
    // Without a peer address there is nothing to check: the headers are honoured.
    let response = send(&app, request("GET", "/api/data", Some("internal-batch"))).await;
    assert_eq!(header(&response, "x-ratelimit-limit"), Some("6000"));
}

#[tokio::test]
async fn trusting_every_peer_honours_anyone() {
    let app = app(build(&Store::Memory, RateLimitLayerBuilder::trust_any_peer).await);
    for peer in [
        "203.0.113.7:40000",
        "[2001:db8::1]:40000",
        "127.0.0.1:40000",
    ] {
        assert_eq!(limit_claimed_from(&app, peer, true).await, "6000", "{peer}");
    }
}

/// The demo's `TRUSTED_PROXIES`: a list that leaves out loopback makes a local client an
/// untrusted one; `*` trusts every peer, with a warning; a list covering every address is
/// refused.
#[tokio::test]
async fn demo_trusted_proxies_environment() {
    let demo = start_demo(&[("TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8")]);
    let base = format!("http://{}", demo.address);
    // The shipped rules: /api/data allows a burst of 10 (refilled at one a second), which
    // a fresh identity on every request does not escape.
    admitted_until_refused(10, 1.0, async |n| {
        seen(&base, &[("x-client-id", &format!("fresh-{n}"))])
            .await
            .0
    })
    .await;
    drop(demo);

    let demo = start_demo(&[("TRUSTED_PROXIES", "*")]);
    let warning = demo
        .startup_log
        .iter()
        .find(|line| line.contains("WARN") && line.contains("trust_any_peer()"));
    assert!(warning.is_some(), "{:#?}", demo.startup_log);
    let batch = seen(
        &format!("http://{}", demo.address),
        &[("x-client-id", "internal-batch")],
    )
    .await;
    assert_eq!(batch.1, "6000");
    drop(demo);

    for everything in ["0.0.0.0/0", "::/0"] {
        let output = Command::new(demo_binary())
            .env_clear()
            .env("PORT", "0")
            .env("NO_COLOR", "1")
            .env("RATE_LIMIT_RULES_PATH", repo_file("rate_limits.json"))
            .env("TRUSTED_PROXIES", everything)
            .stdin(Stdio::null())
            .output()
            .expect("run the demo");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{everything}: the demo started");
        assert!(
            stderr.contains(everything) && stderr.contains("trust_any_peer()"),
            "{everything}: {stderr}"
        );
    }
}

/// The app's own authentication: a known bearer token names its user with a
/// `ClientIdentity`; any other request goes on without one.
async fn authenticate(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let user = match request.headers().get("authorization").map(|v| v.as_bytes()) {
        Some(b"Bearer token-of-alice") => Some("alice"),
        Some(b"Bearer token-of-bob") => Some("bob"),
        _ => None,
    };
    if let Some(user) = user {
        request
            .extensions_mut()
            .insert(tollgate::ClientIdentity(tollgate::ClientKey::id(user)));
    }
    next.run(request).await
}

/// Over real HTTP: the identity the app's middleware vouches for is the client, over the
/// identity headers and the peer address; requests without one are keyed as before.
#[tokio::test]
async fn the_apps_own_client_identity_wins() {
    let rules = rules(
        r#"{"default": {"capacity": 2, "refill_rate": 0.001},
            "clients": {"id:bob": {"limit": "50/hour"}}}"#,
    );
    let limiter = Limiter::builder()
        .rules(rules)
        .build()
        .await
        .expect("limiter");
    // Loopback is not a trusted proxy here: without an identity, this client is its address.
    let layer = RateLimitLayer::builder(limiter)
        .trusted_proxies(["10.0.0.0/8"])
        .build()
        .expect("layer");
    let app = app(layer).layer(axum::middleware::from_fn(authenticate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, served).await.unwrap() });
    let (ok, limited) = (StatusCode::OK, StatusCode::TOO_MANY_REQUESTS);
    let alice = ("authorization", "Bearer token-of-alice");
    let claims_bob = ("x-client-id", "bob");

    // alice, whatever X-Client-ID she sends: her own bucket of 2, not bob's override.
    assert_eq!(
        seen(&base, &[alice, claims_bob]).await,
        (ok, "2".into(), "1".into())
    );
    assert_eq!(seen(&base, &[alice]).await, (ok, "2".into(), "0".into()));
    assert_eq!(seen(&base, &[alice, claims_bob]).await.0, limited);
    // Without a token: the peer's address, a bucket of its own; the header is not read.
    assert_eq!(
        seen(&base, &[claims_bob]).await,
        (ok, "2".into(), "1".into())
    );
    assert_eq!(seen(&base, &[]).await, (ok, "2".into(), "0".into()));
    assert_eq!(seen(&base, &[claims_bob]).await.0, limited);
    // bob's token: his override from the rules' `clients`.
    let bob = ("authorization", "Bearer token-of-bob");
    assert_eq!(seen(&base, &[bob]).await, (ok, "50".into(), "49".into()));
}
