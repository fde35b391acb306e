//! The layer's cost per request over the bare inner service (memory backend), and its parts:
//! rule matching, client key extraction, and what `http::HeaderMap` itself charges for the
//! three headers every allowed response gets.
//!
//! ```sh
//! cargo bench --all-features --bench layer
//! ```
//!
//! The inner service answers at once with a small text response, as an axum handler would,
//! so `layer/*` minus `layer/bare` is what the layer adds. `layer/governor_allowed` and
//! `layer/governor_denied` are tower_governor keyed by the same `X-Client-ID`, with every
//! request allowed and with every request refused: what tollgate's overhead is compared with;
//! `layer/governor_allowed_headers` is tower_governor writing its rate limit headers on
//! allowed responses too (`use_headers`), as tollgate does. `layer/allowed_recording_usage`
//! is `layer/allowed` with usage statistics recorded: the difference is their cost per
//! request. `layer/allowed_one_subscriber` and `layer/allowed_stalled_subscriber` are
//! `layer/allowed` with a subscriber to the live events that reads them all, and with one
//! that never reads. `layer/allowed_settled_by_header` is a rule settled from the response
//! (`settle_header`): a reservation when admitted, settled from the inner service's header.
//!
//! With the `metrics` feature every decision is counted through the `metrics` facade; with
//! `TOLLGATE_BENCH_PROMETHEUS=1` a Prometheus recorder set up as tollgate-server's is
//! installed first, so `layer/*` include recording into it:
//!
//! ```sh
//! cargo bench --features redis,axum --bench layer -- "layer/allowed$"      # no metrics
//! cargo bench --all-features --bench layer -- "layer/allowed$"            # no recorder
//! TOLLGATE_BENCH_PROMETHEUS=1 cargo bench --all-features --bench layer -- "layer/allowed$"
//! ```

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use axum::body::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use tollgate::{ClientKey, Limiter, RateLimitLayer, Rules};
use tower::{Layer, Service, service_fn};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;

#[path = "support/governor.rs"]
mod governor_key;

const CLIENTS: usize = 1000;

fn rules(json: &str) -> Rules {
    Rules::from_json(json).expect("bench rules")
}

fn layer(json: &str) -> RateLimitLayer {
    layer_recording(json, false)
}

/// The layer over a limiter of these rules, recording usage statistics or not. Its runtime
/// ends here, with the background tasks: the usage flusher too, which is off the request
/// path, so what is measured is the counting requests do.
fn layer_recording(json: &str, record_usage: bool) -> RateLimitLayer {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let limiter = runtime
        .block_on(
            Limiter::builder()
                .rules(rules(json))
                .record_usage(record_usage)
                .build(),
        )
        .expect("limiter");
    RateLimitLayer::new(limiter)
}

/// Client IDs as header values, made once.
fn client_ids() -> Vec<HeaderValue> {
    (0..CLIENTS)
        .map(|n| HeaderValue::from_str(&format!("client-{n}")).expect("header value"))
        .collect()
}

fn request(path: &str, (name, value): (&'static str, HeaderValue)) -> Request<Body> {
    let mut request = Request::get(path).body(Body::empty()).expect("request");
    request.headers_mut().insert(name, value);
    request
}

/// One request through `service`, which answers at once.
fn call<S, B>(service: &mut S, request: Request<Body>) -> Response<B>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
{
    futures::executor::block_on(service.call(request)).expect("infallible")
}

fn per_request_overhead(c: &mut Criterion) {
    // Like an axum handler returning text: a response with a body and a content type.
    let inner = service_fn(|_: Request<Body>| async {
        let mut response = Response::new(Body::from("ok"));
        let text = HeaderValue::from_static("text/plain; charset=utf-8");
        response.headers_mut().insert(CONTENT_TYPE, text);
        Ok::<_, Infallible>(response)
    });
    #[cfg(feature = "metrics")]
    if std::env::var_os("TOLLGATE_BENCH_PROMETHEUS").is_some() {
        // As tollgate-server's `prometheus_builder` makes it.
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        use tollgate::metrics::{REDIS_CALL_BUCKETS, REDIS_CALL_DURATION};
        PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(REDIS_CALL_DURATION.into()),
                REDIS_CALL_BUCKETS,
            )
            .expect("the buckets are not empty")
            .install_recorder()
            .expect("the Prometheus recorder, installed once");
    }
    let ids = client_ids();
    let allowing_rules = r#"{"default": {"capacity": 1000, "refill_rate": 1000000000},
                             "routes": [{"path": "/health", "unlimited": true}]}"#;
    let allowing = layer(allowing_rules);
    let recording = layer_recording(allowing_rules, true);
    let denying = layer(r#"{"default": {"capacity": 1, "refill_rate": 0.000001}}"#);
    let banded = layer(
        r#"{"default": {"limits": [{"capacity": 1000, "refill_rate": 1000000000}, "4000000000/day"]}}"#,
    );

    let addresses: Vec<HeaderValue> = (0..CLIENTS)
        .map(|n| {
            let xff = format!("203.0.113.{}, 10.0.{}.{}", n % 250, n / 250, n % 250);
            HeaderValue::from_str(&xff).expect("header value")
        })
        .collect();
    let by_id = |n: usize| ("x-client-id", ids[n].clone());
    let by_address = |n: usize| ("x-forwarded-for", addresses[n].clone());

    let mut group = c.benchmark_group("layer");
    let mut measure =
        |name: &str,
         service: &mut dyn FnMut(Request<Body>) -> StatusCode,
         path: &str,
         header: &dyn Fn(usize) -> (&'static str, HeaderValue)| {
            let mut n = 0;
            group.bench_function(name, |b| {
                b.iter(|| {
                    n = (n + 1) % CLIENTS;
                    black_box(service(request(path, header(n))))
                })
            });
        };
    let mut bare = inner;
    measure(
        "bare",
        &mut |r| call(&mut bare, r).status(),
        "/api/data",
        &by_id,
    );
    let mut allowed = allowing.layer(inner);
    // Each setup is checked once, so that a wrong one cannot measure the wrong path.
    let first = call(&mut allowed, request("/api/data", by_id(0)));
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().contains_key("x-ratelimit-limit"));
    measure(
        "allowed",
        &mut |r| call(&mut allowed, r).status(),
        "/api/data",
        &by_id,
    );
    let mut allowed_recording = recording.layer(inner);
    let first = call(&mut allowed_recording, request("/api/data", by_id(0)));
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(recording.limiter().stats().usage_clients, 1);
    measure(
        "allowed_recording_usage",
        &mut |r| call(&mut allowed_recording, r).status(),
        "/api/data",
        &by_id,
    );
    // With a subscriber to the live events that reads them all (on a thread of its own), and
    // with one that never reads (its buffer full, every event overwriting the oldest).
    let watched = layer(allowing_rules);
    let mut reader = watched.limiter().subscribe();
    std::thread::spawn(move || {
        // With timers: the first read starts the limiter's publisher on this runtime.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async { while reader.next().await.is_some() {} });
    });
    let mut allowed_watched = watched.layer(inner);
    assert_eq!(watched.limiter().stats().event_subscribers, 1);
    measure(
        "allowed_one_subscriber",
        &mut |r| call(&mut allowed_watched, r).status(),
        "/api/data",
        &by_id,
    );
    let stalled = layer(allowing_rules);
    let _never_read = stalled.limiter().subscribe();
    let mut allowed_stalled = stalled.layer(inner);
    assert_eq!(stalled.limiter().stats().event_subscribers, 1);
    measure(
        "allowed_stalled_subscriber",
        &mut |r| call(&mut allowed_stalled, r).status(),
        "/api/data",
        &by_id,
    );
    let mut denied = denying.layer(inner);
    for id in &ids {
        call(
            &mut denied,
            request("/api/data", ("x-client-id", id.clone())),
        );
    }
    let refused = call(&mut denied, request("/api/data", by_id(0)));
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    measure(
        "denied",
        &mut |r| call(&mut denied, r).status(),
        "/api/data",
        &by_id,
    );
    let mut two_bands = banded.layer(inner);
    measure(
        "allowed_two_bands",
        &mut |r| call(&mut two_bands, r).status(),
        "/api/data",
        &by_id,
    );
    // The IETF fields instead of `X-RateLimit-*`, and both, as the rules file chooses them.
    for (name, style) in [("allowed_ietf", "ietf"), ("allowed_both", "both")] {
        let styled = layer(&format!(
            r#"{{"default": {{"capacity": 1000, "refill_rate": 1000000000}}, "headers": "{style}"}}"#
        ));
        let mut service = styled.layer(inner);
        let first = call(&mut service, request("/api/data", by_id(0)));
        assert!(first.headers().contains_key("ratelimit-policy"));
        measure(
            name,
            &mut |r| call(&mut service, r).status(),
            "/api/data",
            &by_id,
        );
    }
    // tower_governor keyed the same way: the overhead the layer's is compared with.
    for (name, capacity, per_second) in [
        ("governor_allowed", 1_000_000, 1_000_000),
        ("governor_denied", 1, 1),
    ] {
        let config = GovernorConfigBuilder::default()
            .period(Duration::from_secs(1) / per_second)
            .burst_size(capacity)
            .key_extractor(governor_key::ClientId)
            .finish()
            .expect("a valid governor configuration");
        let mut governed = GovernorLayer::new(config).layer(inner);
        for n in 0..CLIENTS {
            call(&mut governed, request("/api/data", by_id(n)));
        }
        let expected = if capacity == 1 {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::OK
        };
        assert_eq!(
            call(&mut governed, request("/api/data", by_id(0))).status(),
            expected
        );
        measure(
            name,
            &mut |r| call(&mut governed, r).status(),
            "/api/data",
            &by_id,
        );
    }
    // tower_governor with its rate limit headers (`use_headers`: `x-ratelimit-limit` and
    // `x-ratelimit-remaining` on allowed responses), as tollgate writes its own: the same
    // work asked of both.
    let config = GovernorConfigBuilder::default()
        .period(Duration::from_micros(1))
        .burst_size(1_000_000)
        .key_extractor(governor_key::ClientId)
        .use_headers()
        .finish()
        .expect("a valid governor configuration");
    let mut governed = GovernorLayer::new(config).layer(inner);
    let first = call(&mut governed, request("/api/data", by_id(0)));
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().contains_key("x-ratelimit-remaining"));
    measure(
        "governor_allowed_headers",
        &mut |r| call(&mut governed, r).status(),
        "/api/data",
        &by_id,
    );
    // A rule settled from the response: the request reserves its cost, the inner service
    // says it used 1 in a header, and the layer settles before the response leaves.
    let settling = layer(
        r#"{"default": {"capacity": 1000000000, "refill_rate": 1, "cost": 5,
                        "settle_header": "x-units-used"}}"#,
    );
    let reporting = service_fn(|_: Request<Body>| async {
        let mut response = Response::new(Body::from("ok"));
        let text = HeaderValue::from_static("text/plain; charset=utf-8");
        response.headers_mut().insert(CONTENT_TYPE, text);
        let used = HeaderValue::from_static("1");
        response.headers_mut().insert("x-units-used", used);
        Ok::<_, Infallible>(response)
    });
    let mut settled = settling.layer(reporting);
    let first = call(&mut settled, request("/api/data", by_id(0)));
    assert_eq!(
        first.headers()["x-ratelimit-remaining"],
        "999999999",
        "5 reserved, 1 used"
    );
    assert!(!first.headers().contains_key("x-units-used"));
    measure(
        "allowed_settled_by_header",
        &mut |r| call(&mut settled, r).status(),
        "/api/data",
        &by_id,
    );
    // An unlimited route: the client key and the rule lookup, no decision.
    let mut unlimited = allowing.layer(inner);
    let passed = call(&mut unlimited, request("/health", by_id(0)));
    assert!(!passed.headers().contains_key("x-ratelimit-limit"));
    measure(
        "unlimited_route",
        &mut |r| call(&mut unlimited, r).status(),
        "/health",
        &by_id,
    );
    let mut forwarded = allowing.layer(inner);
    measure(
        "allowed_by_forwarded_for",
        &mut |r| call(&mut forwarded, r).status(),
        "/api/data",
        &by_address,
    );
    group.finish();
}

fn rule_matching(c: &mut Criterion) {
    let shipped = Rules::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/rate_limits.json"))
        .expect("shipped rules");
    let mut group = c.benchmark_group("rules");
    for path in [
        "/api/data",
        "/api/users/42",
        "/static/css/site.css",
        "/not/routed",
    ] {
        group.bench_function(format!("lookup {path}"), |b| {
            b.iter(|| black_box(shipped.lookup(black_box(&Method::GET), black_box(path))))
        });
    }
    let client = ClientKey::Id("internal-batch".into());
    let resolved = shipped.resolve(&Method::GET, "/api/data", Some("pro"), &client);
    assert!(
        resolved
            .expect("the shipped rules have the pro tier")
            .client_override
    );
    group.bench_function("resolve with tier and client override", |b| {
        b.iter(|| {
            black_box(shipped.resolve(&Method::GET, black_box("/api/data"), Some("pro"), &client))
        })
    });
    group.finish();
}

/// The floor under the layer's cost: inserting the three `X-RateLimit-*` headers into a
/// response's header map that already holds a content type, as the layer does, with nothing
/// of tollgate involved.
fn header_inserts(c: &mut Criterion) {
    use tollgate::{X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET};
    let text = HeaderValue::from_static("text/plain; charset=utf-8");
    let count = HeaderValue::from_static("100");
    let reset = HeaderValue::from(1_700_000_000u64);
    let mut group = c.benchmark_group("headermap");
    group.bench_function("content type only", |b| {
        b.iter(|| {
            let mut map = http::HeaderMap::new();
            map.insert(CONTENT_TYPE, text.clone());
            black_box(map)
        })
    });
    group.bench_function("content type + the three rate limit headers", |b| {
        b.iter(|| {
            let mut map = http::HeaderMap::new();
            map.insert(CONTENT_TYPE, text.clone());
            map.insert(X_RATELIMIT_LIMIT.clone(), count.clone());
            map.insert(X_RATELIMIT_REMAINING.clone(), count.clone());
            map.insert(X_RATELIMIT_RESET.clone(), reset.clone());
            black_box(map)
        })
    });
    group.finish();
}

criterion_group!(benches, per_request_overhead, rule_matching, header_inserts);
criterion_main!(benches);
