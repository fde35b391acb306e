//! Hostile input through the layer: floods of fresh client IDs, and random header values
//! and rules files (property tests).

use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use testkit::*;
use tollgate::{RateLimitLayer, Rules, RulesError};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// The flood measures this process's memory: nothing else runs beside it.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("rss pages");
    pages * 4
}

#[test]
fn a_million_fresh_client_ids_do_not_grow_memory_or_free_real_clients() {
    let _serial = serial();
    runtime().block_on(flood());
}

async fn flood() {
    const BOUND: usize = 20_000;
    let layer = Limiter::builder()
        .rules(rules(
            // One token in 10,000 s: none comes back during the flood, however slow.
            r#"{"default": {"capacity": 5, "refill_rate": 0.0001}}"#,
        ))
        .max_tracked_buckets(BOUND)
        .build_layer()
        .await
        .unwrap();
    let mut service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }));
    let mut send = async |client: &str| -> StatusCode {
        let request = Request::get("/")
            .header("x-client-id", client)
            .body(Body::empty())
            .unwrap();
        service
            .ready()
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap()
            .status()
    };
    // Real clients use up their burst.
    for client in ["alice", "bob", "carol"] {
        for _ in 0..5 {
            assert_eq!(send(client).await, StatusCode::OK);
        }
        assert_eq!(send(client).await, StatusCode::TOO_MANY_REQUESTS);
    }
    let started = Instant::now();
    let mut rss_at = Vec::new();
    let mut id = String::with_capacity(32);
    for n in 0..1_000_000u32 {
        id.clear();
        std::fmt::Write::write_fmt(&mut id, format_args!("flood-{n}")).unwrap();
        assert_eq!(send(&id).await, StatusCode::OK);
        if n % 200_000 == 199_999 {
            let stats = layer.limiter().stats();
            assert!(stats.store.tracked_buckets <= BOUND, "{stats:?}");
            rss_at.push(rss_kib());
        }
    }
    let took = started.elapsed();
    // The real clients still have no tokens left.
    for client in ["alice", "bob", "carol"] {
        assert_eq!(
            send(client).await,
            StatusCode::TOO_MANY_REQUESTS,
            "{client} got a fresh bucket"
        );
    }
    let stats = layer.limiter().stats();
    eprintln!("flood of 1,000,000 IDs in {took:?}: {stats:?}; RSS KiB every 200k: {rss_at:?}");
    assert!(stats.store.tracked_buckets <= BOUND);
    assert!(stats.store.evicted_buckets >= 1_000_000 - BOUND as u64);
    // Bounded: after the table fills, the last 800,000 IDs add no memory to speak of.
    let growth = rss_at.last().unwrap() - rss_at.first().unwrap();
    assert!(
        growth < 16 * 1024,
        "RSS grew {growth} KiB during the flood: {rss_at:?}"
    );
}

/// Bytes an HTTP header value may hold, with commas and spaces common.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => 0x21u8..=0x7e,
        1 => 0x80u8..=0xff,
        1 => Just(b','),
        1 => Just(b' '),
        1 => Just(b'\t'),
        1 => prop::sample::select(b"0123456789.:[]abcdef".to_vec()),
    ];
    prop_oneof![
        8 => prop::collection::vec(byte.clone(), 0..160),
        1 => prop::collection::vec(byte, 16_000..16_500),
        1 => (1usize..3000).prop_map(|n| b",".repeat(n)),
    ]
}

fn visible_ascii_id(bytes: &[u8]) -> bool {
    (1..=128).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
}

#[test]
fn random_header_values_never_panic_and_every_rejection_says_why() {
    let _serial = serial();
    let rt = runtime();
    let layer = rt
        .block_on(
            Limiter::builder()
                .rules_file(repo_file("rate_limits.json"))
                .build_layer(),
        )
        .unwrap();
    let app = app(layer);
    let paths = prop::sample::select(vec![
        "/",
        "/api/data",
        "/api/users/7",
        "/health",
        "/static/x",
        "/nope",
    ]);
    let strategy = (
        proptest::option::of(header_bytes()),
        prop::collection::vec(header_bytes(), 0..3),
        paths,
    );
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(client_id, forwarded, path)| {
            let mut request = request("GET", path, None);
            if let Some(id) = &client_id {
                let value = HeaderValue::from_bytes(id).expect("strategy makes valid header bytes");
                request.headers_mut().insert("x-client-id", value);
            }
            for xff in &forwarded {
                let value =
                    HeaderValue::from_bytes(xff).expect("strategy makes valid header bytes");
                request.headers_mut().append("x-forwarded-for", value);
            }
            let response = rt.block_on(send(&app, request));
            let status = response.status();
            match &client_id {
                Some(id) if !visible_ascii_id(id) => {
                    prop_assert_eq!(status, StatusCode::BAD_REQUEST);
                    let body = rt.block_on(body_json(response));
                    prop_assert_eq!(&body["error"], "invalid_client_id");
                    let message = body["message"].as_str().unwrap_or_default();
                    prop_assert!(message.starts_with("X-Client-ID "), "{}", message);
                }
                // 404 is the app's answer for an unrouted path the layer let through.
                _ => prop_assert!(
                    matches!(
                        status,
                        StatusCode::OK | StatusCode::TOO_MANY_REQUESTS | StatusCode::NOT_FOUND
                    ),
                    "{}",
                    status
                ),
            }
            Ok(())
        })
        .unwrap();
}

/// An `X-Forwarded-For` entry a client may write: addresses in every form proxies write
/// (some of them other clients' or the proxies' own), tokens that are not addresses, empty
/// entries and random text.
fn written_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
        any::<[u16; 8]>().prop_map(|s| Ipv6Addr::from(s).to_string()),
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(o, p)| format!("{}:{p}", Ipv4Addr::from(o))),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]:443", Ipv6Addr::from(s))),
        any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_ipv6_mapped().to_string()),
        prop::sample::select(vec![
            VICTIM,
            PROXY_PEER,
            "10.0.0.1",
            "127.0.0.1",
            "::1",
            "unknown",
            "_hidden",
            "fe80::1%eth0",
            "",
            " ",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,24}",
    ]
}

/// What the proxy in front appended for the client: its address, or (as RFC 7239 practice
/// allows) something that is not one.
const REAL: &str = "203.0.113.50";
/// The trusted proxy the app is connected to.
const PROXY_PEER: &str = "10.0.0.2";
/// A client reaching the app directly.
const DIRECT_PEER: &str = "198.51.100.77";
/// An address a client would like to be keyed as.
const VICTIM: &str = "198.51.100.200";

/// Whatever a client writes in `X-Forwarded-For` (and, reaching the app directly, in
/// `X-Client-ID`), the key is the address the trusted proxy appended, or the peer: never
/// an address the client wrote. Each candidate key has its own override capacity, so the
/// `X-RateLimit-Limit` of the answer says which key was used.
#[test]
fn whatever_a_client_writes_the_key_is_what_the_proxy_appended_or_the_peer() {
    let _serial = serial();
    let rt = runtime();
    let json = format!(
        r#"{{"default": {{"capacity": 5, "refill_rate": 0.001}},
            "clients": {{
                "ip:{REAL}": {{"capacity": 7, "refill_rate": 0.001}},
                "ip:{PROXY_PEER}": {{"capacity": 9, "refill_rate": 0.001}},
                "ip:{DIRECT_PEER}": {{"capacity": 11, "refill_rate": 0.001}}
            }}}}"#
    );
    let limiter = || {
        rt.block_on(Limiter::builder().rules(rules(&json)).build())
            .unwrap()
    };
    let build = |builder: tollgate::RateLimitLayerBuilder| app(builder.build().unwrap());
    // Each mode: the app, and the entries the proxies append after the client's address.
    let modes = [
        ("1 hop", build(RateLimitLayer::builder(limiter())), vec![]),
        (
            "2 hops",
            build(RateLimitLayer::builder(limiter()).trusted_proxy_hops(2)),
            vec!["10.0.0.1"],
        ),
        (
            "cidrs",
            build(RateLimitLayer::builder(limiter()).trusted_proxies(["10.0.0.0/8"])),
            vec!["10.0.0.1"],
        ),
    ];
    let not_an_address = prop::sample::select(vec!["unknown", "_hidden", "fe80::1%eth0", ""]);
    let strategy = (
        0..modes.len(),
        prop::collection::vec(prop::collection::vec(written_entry(), 0..5), 0..3),
        any::<bool>(),
        proptest::option::weighted(0.2, not_an_address),
        proptest::option::weighted(0.2, proptest::option::of(header_bytes())),
    );
    let mut runner = TestRunner::new(Config {
        cases: 600,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &strategy,
            |(mode, client_lines, one_line, proxy_wrote, direct)| {
                let (name, app, inner_proxies) = &modes[mode];
                let client_lines: Vec<String> =
                    client_lines.iter().map(|line| line.join(", ")).collect();
                let mut appended = vec![proxy_wrote.unwrap_or(REAL)];
                appended.extend(inner_proxies);
                let appended = appended.join(", ");
                // nginx joins what the client sent and appends to it; other proxies add a
                // header line of their own.
                let mut lines = client_lines.clone();
                match lines.last_mut() {
                    Some(last) if one_line => *last = format!("{last}, {appended}"),
                    _ => lines.push(appended),
                }
                let mut request = request("GET", "/api/data", None);
                let peer = if let Some(client_id) = &direct {
                    // Reaching the app directly, the client writes the header itself.
                    lines = client_lines;
                    if let Some(id) = client_id {
                        let value = HeaderValue::from_bytes(id).expect("valid header bytes");
                        request.headers_mut().insert("x-client-id", value);
                    }
                    DIRECT_PEER
                } else {
                    PROXY_PEER
                };
                for line in &lines {
                    let value = HeaderValue::from_str(line).expect("valid header text");
                    request.headers_mut().append("x-forwarded-for", value);
                }
                let peer: SocketAddr = format!("{peer}:40000").parse().unwrap();
                request.extensions_mut().insert(ConnectInfo(peer));
                let response = rt.block_on(send(app, request));
                let limit = response
                    .headers()
                    .get("x-ratelimit-limit")
                    .map(|v| v.to_str().unwrap().to_owned());
                let expected = match (&direct, proxy_wrote) {
                    (Some(_), _) => "11",
                    (None, Some(_)) => "9",
                    (None, None) => "7",
                };
                prop_assert_eq!(
                    limit.as_deref(),
                    Some(expected),
                    "{}: X-Forwarded-For {:?} from {} ({})",
                    name,
                    lines,
                    peer,
                    response.status()
                );
                Ok(())
            },
        )
        .unwrap();
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..50).prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e12f64..1e12).prop_map(|x| json!(x)),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(0.5),
            json!(1e-9),
            json!(4294967296u64),
            json!("10")
        ]),
    ]
}

fn junk() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        ".{0,12}".prop_map(Value::String),
        Just(json!([])),
        Just(json!({"x": 1})),
    ]
}

fn rule() -> impl Strategy<Value = Value> {
    let positive = || prop_oneof![4 => (1u64..100).prop_map(|n| json!(n)), 1 => number()];
    // Mostly one well-formed limit, sometimes a mess.
    let form = prop_oneof![
        3 => (positive(), prop_oneof![3 => (1u32..50).prop_map(|n| json!(f64::from(n) / 4.0)), 1 => number()])
            .prop_map(|(c, r)| json!({"capacity": c, "refill_rate": r})),
        3 => prop_oneof![
            3 => "[1-9][0-9]{0,3}/(second|minute|hour|day)".prop_map(Value::String),
            1 => "[0-9]{0,5}/(second|minute|week|)".prop_map(Value::String),
            1 => junk(),
        ]
        .prop_map(|l| json!({"limit": l})),
        2 => prop_oneof![4 => Just(json!(true)), 1 => junk()].prop_map(|u| json!({"unlimited": u})),
        2 => prop::collection::vec(
            prop_oneof![
                "[1-9][0-9]{0,3}/(second|minute|hour|day)".prop_map(Value::String),
                (1u32..50, 1u32..20).prop_map(|(c, r)| json!({"capacity": c, "refill_rate": r})),
                junk(),
            ],
            0..10
        )
        .prop_map(|bands| json!({"limits": bands})),
        1 => (
            proptest::option::of(number()),
            proptest::option::of(number()),
            proptest::option::of(junk()),
            proptest::option::of(junk()),
        )
            .prop_map(|(c, r, l, u)| {
                let mut rule = Map::new();
                for (name, value) in [("capacity", c), ("refill_rate", r), ("limit", l), ("unlimited", u)] {
                    if let Some(value) = value {
                        rule.insert(name.to_owned(), value);
                    }
                }
                Value::Object(rule)
            }),
    ];
    let path = prop_oneof![
        6 => "/[a-z]{1,6}(/([a-z]{1,4}|\\{[a-z]{1,3}\\})){0,2}".prop_map(Value::String),
        1 => "/[a-z]{0,3}/\\{\\*[a-z]{1,3}\\}".prop_map(Value::String),
        1 => "[a-z{}*/]{0,10}".prop_map(Value::String),
        1 => junk(),
    ];
    let methods = prop_oneof![
        prop::collection::vec(
            prop::sample::select(vec!["GET", "post", "PUT", "", "G T", "PATCH"]),
            0..4
        )
        .prop_map(|m| json!(m)),
        junk(),
    ];
    let algorithm = prop_oneof![
        4 => prop::sample::select(vec!["token_bucket", "fixed_window", "sliding_window"]).prop_map(|a| json!(a)),
        1 => junk(),
    ];
    let cost = prop_oneof![3 => (1u32..4).prop_map(|c| json!(c)), 1 => number()];
    (
        form,
        proptest::option::weighted(0.95, path),
        proptest::option::weighted(0.3, methods),
        proptest::option::weighted(0.03, junk()),
        (
            proptest::option::weighted(0.2, algorithm),
            proptest::option::weighted(0.15, cost),
            proptest::option::weighted(0.1, any::<bool>().prop_map(Value::Bool)),
        ),
    )
        .prop_map(
            |(mut rule, path, methods, extra, (algorithm, cost, shadow))| {
                let fields = rule.as_object_mut().expect("forms are objects");
                for (name, value) in [
                    ("path", path),
                    ("methods", methods),
                    ("extra", extra),
                    ("algorithm", algorithm),
                    ("cost", cost),
                    ("shadow", shadow),
                ] {
                    if let Some(value) = value {
                        fields.insert(name.to_owned(), value);
                    }
                }
                rule
            },
        )
}

fn rules_document() -> impl Strategy<Value = String> {
    let policy = prop_oneof![
        prop::sample::select(vec!["allow", "deny", "local", "ignore"]).prop_map(|p| json!(p)),
        junk(),
    ];
    let default = || {
        rule().prop_map(|mut rule| {
            // `path` and `methods` are errors in the default; keep them rare there.
            if let Some(fields) = rule.as_object_mut() {
                fields.remove("methods");
                if fields.contains_key("path") && fields.len() > 1 {
                    fields.remove("path");
                }
            }
            rule
        })
    };
    let tier = (default(), prop::collection::vec(rule(), 0..3))
        .prop_map(|(default, routes)| json!({"default": default, "routes": routes}));
    let tiers = prop::collection::btree_map(
        prop_oneof![4 => "[a-z]{1,6}", 1 => ".{0,6}"],
        prop_oneof![4 => tier, 1 => junk()],
        0..3,
    )
    .prop_map(|tiers| json!(tiers));
    let clients = prop::collection::btree_map(
        prop_oneof![
            3 => "id:[a-z]{1,8}",
            2 => prop::sample::select(vec!["ip:10.0.0.1", "ip:2001:db8::/64", "unknown", "ip:300.1.1.1", "bob"])
                .prop_map(str::to_owned),
        ],
        rule().prop_map(|mut rule| {
            if let Some(fields) = rule.as_object_mut() {
                fields.remove("path");
                fields.remove("methods");
            }
            rule
        }),
        0..3,
    )
    .prop_map(|clients| json!(clients));
    let structured = (
        proptest::option::weighted(0.95, default()),
        proptest::option::weighted(0.8, prop::collection::vec(rule(), 0..5)),
        proptest::option::weighted(0.2, policy),
        proptest::option::weighted(0.2, number()),
        proptest::option::weighted(0.05, junk()),
        (
            proptest::option::weighted(0.2, tiers),
            proptest::option::weighted(
                0.1,
                prop::sample::select(vec!["pro", "free", "x"]).prop_map(|t| json!(t)),
            ),
            proptest::option::weighted(0.2, clients),
            proptest::option::weighted(0.05, any::<bool>().prop_map(Value::Bool)),
        ),
    )
        .prop_map(
            |(
                default,
                routes,
                policy,
                instances,
                extra,
                (tiers, default_tier, clients, shadow),
            )| {
                let mut doc = Map::new();
                for (name, value) in [
                    ("default", default),
                    ("routes", routes.map(Value::Array)),
                    ("on_redis_error", policy),
                    ("local_fallback_instances", instances),
                    ("rotues", extra),
                    ("tiers", tiers),
                    ("default_tier", default_tier),
                    ("clients", clients),
                    ("shadow", shadow),
                ] {
                    if let Some(value) = value {
                        doc.insert(name.to_owned(), value);
                    }
                }
                Value::Object(doc).to_string()
            },
        );
    prop_oneof![
        8 => structured,
        1 => ".{0,80}",
        1 => "[\\[\\]{}:,\"0-9a-z ]{0,80}",
    ]
}

#[test]
fn random_rules_files_never_panic_and_every_error_says_where_and_why() {
    let _serial = serial();
    // The composed strategies nest deeply; debug builds need a larger stack for them.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(random_rules_files)
        .expect("spawn the property test")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

fn random_rules_files() {
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    });
    let accepted = std::cell::Cell::new(0u32);
    runner
        .run(&rules_document(), |text| {
            match Rules::from_json(&text) {
                Ok(rules) => {
                    accepted.set(accepted.get() + 1);
                    prop_assert_eq!(rules.default_rule().id(), "default");
                    let tiers: Vec<Option<&str>> = std::iter::once(None)
                        .chain(rules.tier_names().map(Some))
                        .collect();
                    for path in ["/", "/a", "/a/b/c", "", "//", "/{x}"] {
                        let _ = rules.lookup(&axum::http::Method::GET, path);
                        for tier in &tiers {
                            let resolved = rules.resolve(
                                &axum::http::Method::POST,
                                path,
                                *tier,
                                &tollgate::ClientKey::Unknown,
                            );
                            prop_assert!(resolved.is_ok());
                        }
                    }
                }
                Err(RulesError::Invalid {
                    source_name,
                    location,
                    problem,
                }) => {
                    prop_assert_eq!(source_name, "<inline>");
                    prop_assert!(!location.json_path.is_empty());
                    prop_assert!(!problem.to_string().trim().is_empty());
                }
                Err(other) => prop_assert!(false, "unexpected error kind: {}", other),
            }
            Ok(())
        })
        .unwrap();
    // The generator reaches valid documents too, so both paths are exercised.
    let accepted = accepted.get();
    eprintln!("{accepted} of 2000 random rules documents were valid");
    assert!(accepted > 60, "only {accepted} documents were valid");
}
