//! Envoy's rate limit service: `tollgate serve`'s gRPC `ShouldRateLimit`, asked by a real
//! gRPC client over TCP, as Envoy asks it, on memory and on Redis.

use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use serde_json::{Value, json};
use testkit::files::save_by_rename;
use testkit::*;
use tonic::transport::Channel;

/// The limits whose counts the tests follow call after call give nothing back while a
/// test runs, however busy the machine: per hour or per day, and the fixed window per day,
/// its end kept clear of with [`clear_of_a_window_end`]. (Those only asked once may refill.)
const RULES: &str = r#"{
    "default": {"limit": "100/second"},
    "descriptors": {
        "edge": [
            {"key": "remote_address", "limit": "3/day", "algorithm": "fixed_window"},
            {"key": "path", "value": "/login", "limit": "2/hour"},
            {"key": "path", "value": "/static/*", "unlimited": true},
            {"key": "user", "limit": "2/hour", "shadow": true},
            {"key": "tenant", "descriptors": [{"key": "user", "limits": ["4/minute", "100/day"]}]},
            {"key": "key1", "limit": "10/minute", "name": "limit1"},
            {"key": "key2", "limit": "20/minute", "replaces": ["limit1"]},
            {"key": "tokens", "limit": "10/day"}
        ]
    }
}"#;

/// Seconds in a day: the fixed window of `remote_address`.
const DAY: u64 = 86_400;

fn write_rules(dir: &Path, json: &str) -> String {
    let path = dir.join("rate_limits.json");
    std::fs::write(&path, json).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `tollgate serve` with `rules`, and `more` in its environment.
fn serve(dir: &Path, rules: &str, more: &[(&str, &str)]) -> Demo {
    let path = write_rules(dir, rules);
    let mut envs = vec![("RATE_LIMIT_RULES_PATH", path.as_str())];
    envs.extend_from_slice(more);
    start_service(&envs)
}

async fn client(service: &Demo) -> RateLimitServiceClient<Channel> {
    RateLimitServiceClient::connect(format!("http://{}", service.grpc_address()))
        .await
        .expect("connect to the gRPC service")
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: (*key).into(),
                value: (*value).into(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: "edge".into(),
        descriptors,
        hits_addend: 0,
    }
}

async fn ask(
    client: &mut RateLimitServiceClient<Channel>,
    request: RateLimitRequest,
) -> RateLimitResponse {
    client
        .should_rate_limit(request)
        .await
        .expect("a ShouldRateLimit answer")
        .into_inner()
}

fn code(status: &DescriptorStatus) -> Code {
    Code::try_from(status.code).unwrap()
}

fn header_to_add<'r>(response: &'r RateLimitResponse, name: &str) -> Option<&'r str> {
    response
        .response_headers_to_add
        .iter()
        .find(|header| header.key == name)
        .map(|header| header.value.as_str())
}

/// A structured-field list of `response_headers_to_add`, parsed: each item's name and its
/// first two parameters (`q`, `w` of a policy; `r`, `t` of a limit).
fn field(response: &RateLimitResponse, name: &str) -> Vec<(String, i64, i64)> {
    let value = header_to_add(response, name).unwrap_or_else(|| panic!("no {name}"));
    sf_list(value)
        .into_iter()
        .map(|member| (member.name, member.params[0].1, member.params[1].1))
        .collect()
}

fn overall(response: &RateLimitResponse) -> Code {
    Code::try_from(response.overall_code).unwrap()
}

/// Every point of the Envoy semantics, on the service `service`.
async fn envoy_semantics(service: &Demo) {
    clear_of_a_window_end(DAY).await;
    let mut client = client(service).await;
    let ip = descriptor(&[("remote_address", "10.0.0.7")]);
    let login = descriptor(&[("path", "/login")]);
    let unknown = descriptor(&[("nothing", "here")]);

    // Several descriptors in one call: one status each, in order.
    let first = ask(
        &mut client,
        request(vec![ip.clone(), unknown.clone(), login.clone()]),
    )
    .await;
    assert_eq!(overall(&first), Code::Ok);
    assert_eq!(first.statuses.len(), 3);
    let [by_ip, none, by_path] = &first.statuses[..] else {
        unreachable!()
    };
    assert_eq!(code(by_ip), Code::Ok);
    let limit = by_ip.current_limit.as_ref().expect("a current limit");
    assert_eq!(
        (limit.requests_per_unit, Unit::try_from(limit.unit).unwrap()),
        (3, Unit::Day)
    );
    assert_eq!(limit.name, "@edge/remote_address");
    assert_eq!(by_ip.limit_remaining, 2);
    let reset = by_ip.duration_until_reset.expect("a duration until reset");
    assert!((0..=86_400).contains(&reset.seconds), "{reset:?}");
    // No rule: OK, no limit.
    assert_eq!(code(none), Code::Ok);
    assert!(none.current_limit.is_none());
    assert_eq!((code(by_path), by_path.limit_remaining), (Code::Ok, 1));
    // The IETF fields of the two limited descriptors, for Envoy to add to its response.
    assert_eq!(
        field(&first, "ratelimit-policy"),
        [
            ("@edge/remote_address".into(), 3, 86_400),
            ("@edge/path=%2Flogin".into(), 2, 3600)
        ]
    );
    let left: Vec<(String, i64)> = field(&first, "ratelimit")
        .into_iter()
        .map(|(name, r, _)| (name, r))
        .collect();
    assert_eq!(
        left,
        [
            ("@edge/remote_address".into(), 2),
            ("@edge/path=%2Flogin".into(), 1)
        ]
    );
    assert!(header_to_add(&first, "retry-after").is_none());

    // The path runs out first: its status, and the call's, turn OVER_LIMIT.
    let second = ask(&mut client, request(vec![ip.clone(), login.clone()])).await;
    assert_eq!(overall(&second), Code::Ok);
    let third = ask(&mut client, request(vec![ip.clone(), login.clone()])).await;
    assert_eq!(overall(&third), Code::OverLimit);
    assert_eq!(code(&third.statuses[0]), Code::Ok);
    assert_eq!(third.statuses[0].limit_remaining, 0);
    assert_eq!(code(&third.statuses[1]), Code::OverLimit);
    assert_eq!(third.statuses[1].limit_remaining, 0);
    let wait: u64 = header_to_add(&third, "retry-after")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1800).contains(&wait), "{wait}");

    // Another address counts on its own.
    let other = ask(
        &mut client,
        request(vec![descriptor(&[("remote_address", "10.0.0.8")])]),
    )
    .await;
    assert_eq!(other.statuses[0].limit_remaining, 2);

    // Wildcard values and unlimited rules.
    let assets = ask(
        &mut client,
        request(vec![descriptor(&[("path", "/static/app.js")])]),
    )
    .await;
    assert_eq!(code(&assets.statuses[0]), Code::Ok);
    assert!(assets.statuses[0].current_limit.is_none());
    assert_eq!(assets.statuses[0].limit_remaining, u32::MAX);

    // Nested descriptors, with two bands: the narrower is reported.
    let nested = descriptor(&[("tenant", "acme"), ("user", "alice")]);
    let answer = ask(&mut client, request(vec![nested.clone()])).await;
    let limit = answer.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, Unit::try_from(limit.unit).unwrap()),
        (4, Unit::Minute)
    );
    assert_eq!(answer.statuses[0].limit_remaining, 3);
    // The tenant alone reaches a node without a limit.
    let tenant = ask(
        &mut client,
        request(vec![descriptor(&[("tenant", "acme")])]),
    )
    .await;
    assert!(tenant.statuses[0].current_limit.is_none());

    // hits_addend: the request's, then the descriptor's, which wins; 0 there only looks.
    let tokens = descriptor(&[("tokens", "t1")]);
    let mut weighed = request(vec![tokens.clone()]);
    weighed.hits_addend = 4;
    assert_eq!(
        ask(&mut client, weighed.clone()).await.statuses[0].limit_remaining,
        6
    );
    let mut own = tokens.clone();
    own.hits_addend = Some(UInt64Value { value: 1 });
    weighed.descriptors = vec![own];
    assert_eq!(
        ask(&mut client, weighed.clone()).await.statuses[0].limit_remaining,
        5
    );
    let mut look = tokens.clone();
    look.hits_addend = Some(UInt64Value { value: 0 });
    let looked = ask(&mut client, request(vec![look.clone()])).await;
    assert_eq!(
        (
            code(&looked.statuses[0]),
            looked.statuses[0].limit_remaining
        ),
        (Code::Ok, 5)
    );
    assert_eq!(
        ask(&mut client, request(vec![look])).await.statuses[0].limit_remaining,
        5
    );
    // More than the limit holds can never fit.
    let mut huge = tokens;
    huge.hits_addend = Some(UInt64Value { value: 11 });
    let refused = ask(&mut client, request(vec![huge])).await;
    assert_eq!(overall(&refused), Code::OverLimit);

    // Shadow rules answer OK, and count: the third call would have been refused.
    let user = descriptor(&[("user", "mallory")]);
    for _ in 0..3 {
        let answer = ask(&mut client, request(vec![user.clone()])).await;
        assert_eq!(overall(&answer), Code::Ok);
    }
    let answer = ask(&mut client, request(vec![user])).await;
    assert_eq!(
        answer.statuses[0].limit_remaining, 0,
        "shadow calls are counted"
    );

    // replaces: with key2's limit matched, key1's does not count.
    let both = request(vec![
        descriptor(&[("key1", "a")]),
        descriptor(&[("key2", "b")]),
    ]);
    for _ in 0..12 {
        let answer = ask(&mut client, both.clone()).await;
        assert_eq!(overall(&answer), Code::Ok);
        assert!(answer.statuses[0].current_limit.is_none());
    }
    let alone = ask(&mut client, request(vec![descriptor(&[("key1", "a")])])).await;
    assert_eq!(alone.statuses[0].limit_remaining, 9);

    // A request without a domain or descriptors is refused as invalid.
    let mut no_domain = request(vec![descriptor(&[("remote_address", "x")])]);
    no_domain.domain.clear();
    let error = client.should_rate_limit(no_domain).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    let error = client.should_rate_limit(request(vec![])).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn should_rate_limit_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let service = serve(dir.path(), RULES, &[]);
    envoy_semantics(&service).await;
}

#[tokio::test]
async fn should_rate_limit_on_redis() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("envoy");
    let service = serve(
        dir.path(),
        RULES,
        &[("REDIS_URL", redis.url()), ("REDIS_PREFIX", &prefix)],
    );
    envoy_semantics(&service).await;
}

/// Connections are served by several gRPC threads (one per runtime worker): calls on
/// connections held by different threads count against one limit exactly, and SIGTERM
/// stops every thread and lets the service end cleanly.
#[tokio::test]
async fn connections_on_every_grpc_thread_share_one_count_and_stop_together() {
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"{"default": {"unlimited": true}, "descriptors": {"edge": [
        {"key": "client", "limit": "20/day", "algorithm": "fixed_window"}]}}"#;
    clear_of_a_window_end(DAY).await;
    let mut service = serve(dir.path(), rules, &[("TOKIO_WORKER_THREADS", "3")]);
    // A thread names itself once it runs: read the names until all three are there.
    let grpc_threads = || {
        let mut names: Vec<String> =
            std::fs::read_dir(format!("/proc/{}/task", service.child.id()))
                .expect("the service's threads in /proc")
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .map(|name| name.trim().to_owned())
                .filter(|name| name.starts_with("tollgate-grpc"))
                .collect();
        names.sort();
        names
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut threads = grpc_threads();
    while threads.len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        threads = grpc_threads();
    }
    assert_eq!(
        threads,
        ["tollgate-grpc-0", "tollgate-grpc-1", "tollgate-grpc-2"],
        "one gRPC thread per runtime worker"
    );
    let mut calls = tokio::task::JoinSet::new();
    // Each client is a connection of its own; handed out in turn, they reach every thread.
    for _ in 0..6 {
        let mut client = client(&service).await;
        calls.spawn(async move {
            let mut allowed = 0;
            for _ in 0..10 {
                let answer = ask(&mut client, request(vec![descriptor(&[("client", "c")])])).await;
                if overall(&answer) == Code::Ok {
                    allowed += 1;
                }
            }
            allowed
        });
    }
    let allowed: u32 = calls.join_all().await.into_iter().sum();
    assert_eq!(allowed, 20, "60 calls over 6 connections under 20/day");
    let log = service.stop_and_read_log();
    assert!(log.contains("stopped"), "no clean stop in:\n{log}");
    assert!(
        !log.contains("gRPC server:"),
        "the gRPC side failed:\n{log}"
    );
}

/// What a refused call failed with: its code and message.
async fn refusal(
    client: &mut RateLimitServiceClient<Channel>,
    request: RateLimitRequest,
) -> (tonic::Code, String) {
    let status = client
        .should_rate_limit(request)
        .await
        .expect_err("a refusal");
    (status.code(), status.message().to_owned())
}

/// A call over a bound is refused whole, with `INVALID_ARGUMENT` naming the bound, and
/// nothing of it counts; a call at every bound is answered.
#[tokio::test]
async fn calls_over_a_bound_are_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let service = serve(
        dir.path(),
        RULES,
        &[
            ("GRPC_MAX_DESCRIPTORS", "4"),
            ("GRPC_MAX_ENTRIES", "3"),
            ("GRPC_MAX_ENTRY_BYTES", "64"),
            ("GRPC_MAX_MESSAGE_BYTES", "2048"),
        ],
    );
    let mut client = client(&service).await;
    // "tokens" (10/hour) with a value that makes the entry 64 bytes.
    let value = "v".repeat(64 - "tokens".len());
    let counted = descriptor(&[("tokens", &value)]);
    let three = descriptor(&[("a", "1"), ("b", "2"), ("c", "3")]);
    let at_the_bounds = request(vec![
        counted.clone(),
        three.clone(),
        three.clone(),
        three.clone(),
    ]);
    let answer = ask(&mut client, at_the_bounds).await;
    assert_eq!(overall(&answer), Code::Ok);
    assert_eq!(answer.statuses[0].limit_remaining, 9);

    let five = request(vec![
        counted.clone(),
        three.clone(),
        three.clone(),
        three.clone(),
        three.clone(),
    ]);
    let four_entries = descriptor(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
    let long_entry = descriptor(&[("tokens", &format!("{value}v"))]);
    let refused = [
        (
            five,
            "the call has 5 descriptors, over the limit of 4 descriptors per call",
        ),
        (
            request(vec![counted.clone(), four_entries]),
            "descriptor 1 has 4 entries, over the limit of 3 entries per descriptor",
        ),
        (
            request(vec![counted.clone(), long_entry]),
            "has 65 bytes of key and value, over the limit of 64 bytes per entry",
        ),
    ];
    for (call, message) in refused {
        let (code, said) = refusal(&mut client, call).await;
        assert_eq!(code, tonic::Code::InvalidArgument, "{said}");
        assert!(said.contains(message), "{said:?} does not say {message:?}");
    }
    // Larger than the message bound: refused before it is decoded.
    let huge = request(vec![descriptor(&[("tokens", &"v".repeat(3000))])]);
    let (code, said) = refusal(&mut client, huge).await;
    assert_eq!(code, tonic::Code::OutOfRange, "{said}");
    assert!(said.contains("2048"), "{said}");
    // None of the refused calls took from "tokens".
    let answer = ask(&mut client, request(vec![counted])).await;
    assert_eq!(answer.statuses[0].limit_remaining, 8);
}

/// The issue's calls, under the default bounds: a value of a megabyte, and more
/// descriptors than any Envoy route builds.
#[tokio::test]
async fn the_default_bounds_refuse_megabyte_values_and_thousands_of_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let service = serve(dir.path(), RULES, &[]);
    let mut client = client(&service).await;
    let megabyte = request(vec![descriptor(&[(
        "remote_address",
        &"1".repeat(1_000_000),
    )])]);
    let (code, said) = refusal(&mut client, megabyte).await;
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(
        said.contains("over the limit of 2048 bytes per entry"),
        "{said}"
    );
    let many = request(vec![descriptor(&[("remote_address", "192.0.2.7")]); 10_000]);
    let (code, said) = refusal(&mut client, many).await;
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(
        said.contains("over the limit of 64 descriptors per call"),
        "{said}"
    );
    // At the default bounds, answered.
    let most = request(vec![descriptor(&[("remote_address", "192.0.2.7")]); 64]);
    assert_eq!(ask(&mut client, most).await.statuses.len(), 64);
}

/// A key counts the same whether it arrives over gRPC or over the HTTP API, on one
/// instance or on two sharing a Redis.
#[tokio::test]
async fn grpc_and_http_share_the_limits() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("envoy-shared");
    let envs = [
        ("REDIS_URL", redis.url()),
        ("REDIS_PREFIX", prefix.as_str()),
    ];
    clear_of_a_window_end(DAY).await;
    let grpc_side = serve(dir.path(), RULES, &envs);
    let http_side = serve(dir.path(), RULES, &envs);
    let mut client = client(&grpc_side).await;
    let ip = request(vec![descriptor(&[("remote_address", "192.0.2.1")])]);
    assert_eq!(
        ask(&mut client, ip.clone()).await.statuses[0].limit_remaining,
        2
    );
    // The same rule and client over HTTP, on the other instance.
    let body = json!({"identifier": "192.0.2.1", "rule": "@edge/remote_address"});
    assert_eq!(post_check(&http_side.address, body.clone()).await.0, 200);
    assert_eq!(post_check(&grpc_side.address, body.clone()).await.0, 200);
    let answer = ask(&mut client, ip).await;
    assert_eq!(overall(&answer), Code::OverLimit);
    assert_eq!(post_check(&http_side.address, body).await.0, 429);
}

/// When Redis cannot decide, the failure policy answers: `closed` fails the call
/// (UNAVAILABLE, for Envoy's failure_mode_deny), `open` says OK, `local` decides here.
#[tokio::test]
async fn the_failure_policy_answers_when_redis_is_down() {
    let mut redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("envoy-down");
    let mut services = Vec::new();
    for mode in ["closed", "open", "local"] {
        services.push(serve(
            dir.path(),
            RULES,
            &[
                ("REDIS_URL", redis.url()),
                ("REDIS_PREFIX", &prefix),
                ("FAIL_MODE", mode),
                ("REDIS_TIMEOUT_MS", "50"),
            ],
        ));
    }
    redis.kill();
    clear_of_a_window_end(DAY).await;
    let ip = request(vec![descriptor(&[("remote_address", "198.51.100.1")])]);
    let mut closed = client(&services[0]).await;
    let error = tokio::time::timeout(Duration::from_secs(5), closed.should_rate_limit(ip.clone()))
        .await
        .expect("an answer within the timeout")
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unavailable, "{error}");
    let mut open = client(&services[1]).await;
    let answer = ask(&mut open, ip.clone()).await;
    assert_eq!(overall(&answer), Code::Ok);
    assert!(answer.statuses[0].current_limit.is_none());
    let mut local = client(&services[2]).await;
    let codes: Vec<Code> = {
        let mut codes = Vec::new();
        for _ in 0..4 {
            codes.push(overall(&ask(&mut local, ip.clone()).await));
        }
        codes
    };
    assert_eq!(codes, [Code::Ok, Code::Ok, Code::Ok, Code::OverLimit]);
}

/// Descriptor rules follow the rules file, as routes do.
#[tokio::test]
async fn descriptor_rules_reload_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let service = serve(dir.path(), RULES, &[]);
    let mut client = client(&service).await;
    let ip = request(vec![descriptor(&[("remote_address", "203.0.113.9")])]);
    assert_eq!(
        ask(&mut client, ip.clone()).await.statuses[0].limit_remaining,
        2
    );
    let changed = RULES.replace(
        r#"{"key": "remote_address", "limit": "3/day", "algorithm": "fixed_window"}"#,
        r#"{"key": "remote_address", "limit": "50/day", "algorithm": "fixed_window"}"#,
    );
    assert_ne!(changed, RULES);
    save_by_rename(&dir.path().join("rate_limits.json"), &changed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = ask(&mut client, ip.clone()).await;
        let limit = answer.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit;
        if limit == 50 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new limit did not apply"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A config of one domain with a per-second limit, for counting windows.
fn per_second(limit: u32) -> String {
    format!(
        "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit:\n      unit: second\n      requests_per_unit: {limit}\n"
    )
}

/// `tollgate serve --envoy-config DIR` (through ENVOY_RATELIMIT_CONFIG), without a rules file.
fn serve_envoy(config: &Path) -> Demo {
    start_service(&[("ENVOY_RATELIMIT_CONFIG", config.to_str().unwrap())])
}

#[tokio::test]
async fn envoy_ratelimit_configuration_is_served_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_file("tests/data/envoy_ratelimit/messaging.yaml"),
        dir.path().join("messaging.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("edge.yml"), per_second(2)).unwrap();
    let service = serve_envoy(dir.path());
    let mut client = client(&service).await;
    let marketing = |number: &str| RateLimitRequest {
        domain: "messaging".into(),
        descriptors: vec![descriptor(&[
            ("message_type", "marketing"),
            ("to_number", number),
        ])],
        hits_addend: 0,
    };
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(overall(&ask(&mut client, marketing("2061111111")).await));
    }
    assert_eq!(codes[..5], [Code::Ok; 5]);
    assert_eq!(codes[5], Code::OverLimit);
    // Another number has its own 5; a plain message to the first number has its 100.
    assert_eq!(
        overall(&ask(&mut client, marketing("2062222222")).await),
        Code::Ok
    );
    let plain = RateLimitRequest {
        domain: "messaging".into(),
        descriptors: vec![descriptor(&[("to_number", "2061111111")])],
        hits_addend: 0,
    };
    let answer = ask(&mut client, plain).await;
    let limit = answer.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, Unit::try_from(limit.unit).unwrap()),
        (100, Unit::Day)
    );
    assert_eq!(answer.statuses[0].limit_remaining, 99);

    // Fixed windows, as envoy ratelimit counts: 2 per second, then the next second's 2.
    let ip = request(vec![descriptor(&[("remote_address", "10.1.1.1")])]);
    let mut seen_over = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = ask(&mut client, ip.clone()).await;
        let status = &answer.statuses[0];
        let reset = status.duration_until_reset.unwrap();
        assert!(
            reset.seconds == 0 || (reset.seconds == 1 && reset.nanos == 0),
            "{reset:?}"
        );
        if code(status) == Code::OverLimit {
            seen_over = true;
        } else if seen_over {
            // A new window started: allowed again.
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new window within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn envoy_configuration_changes_reload_and_bad_ones_keep_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.yaml");
    std::fs::write(&file, per_second(2)).unwrap();
    let service = serve_envoy(dir.path());
    let mut client = client(&service).await;
    let ip = request(vec![descriptor(&[("remote_address", "10.2.2.2")])]);
    let limit_now = |answer: RateLimitResponse| {
        answer.statuses[0]
            .current_limit
            .as_ref()
            .map(|l| l.requests_per_unit)
    };
    assert_eq!(limit_now(ask(&mut client, ip.clone()).await), Some(2));

    // A broken save is refused: the old limit stays.
    save_by_rename(
        &file,
        "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(limit_now(ask(&mut client, ip.clone()).await), Some(2));

    save_by_rename(&file, &per_second(7));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while limit_now(ask(&mut client, ip.clone()).await) != Some(7) {
        assert!(
            std::time::Instant::now() < deadline,
            "the new configuration did not apply"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_bad_envoy_configuration_stops_the_service_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.yaml");
    std::fs::write(
        &file,
        "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
    )
    .unwrap();
    let output = serve_until_it_exits(&[("ENVOY_RATELIMIT_CONFIG", file.as_os_str())]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "{}: at descriptors[0].rate_limit.unit (line 4, column 24): unit must be one of second, minute, hour, day, week, month, year; got \"fortnight\"",
        file.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// The shipped Envoy example (deploy/envoy/): Envoy's rate_limits, the tollgate rules they
// fall under, and the same rules in envoy ratelimit's format, as the guide describes them.
// ---------------------------------------------------------------------------------------

/// The descriptor one `rate_limits` entry of Envoy's route makes, with sample values.
fn descriptor_of(actions: &Value) -> Vec<(String, String)> {
    let actions = actions.as_array().expect("a list of actions");
    actions
        .iter()
        .map(|action| {
            if action.get("remote_address").is_some() {
                ("remote_address".to_owned(), "203.0.113.1".to_owned())
            } else if let Some(generic) = action.get("generic_key") {
                let value = generic["descriptor_value"].as_str().unwrap();
                let key = generic.get("descriptor_key").and_then(Value::as_str);
                (key.unwrap_or("generic_key").to_owned(), value.to_owned())
            } else if let Some(header) = action.get("request_headers") {
                let key = header["descriptor_key"].as_str().unwrap();
                (key.to_owned(), "alice".to_owned())
            } else {
                panic!("an action this test does not know: {action}")
            }
        })
        .collect()
}

#[test]
fn the_shipped_envoy_routes_fall_under_the_shipped_rules() {
    let envoy: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo_file("deploy/envoy/envoy.yaml")).unwrap(),
    )
    .expect("envoy.yaml is YAML");
    let rules = tollgate::Rules::from_file(repo_file("deploy/envoy/rate_limits.json")).unwrap();
    let manager = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let filter = &manager["http_filters"][0]["typed_config"];
    assert_eq!(filter["domain"], "edge");
    let cluster = filter["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]
        .as_str()
        .unwrap();
    let tollgate = envoy["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == cluster)
        .expect("the rate limit service's cluster");
    let address = &tollgate["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    assert_eq!(address["port_value"], 8081, "tollgate serve's GRPC_PORT");
    let mut seen = 0;
    for route in manager["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap()
    {
        for rate_limit in route["route"]["rate_limits"].as_array().unwrap() {
            let entries = descriptor_of(&rate_limit["actions"]);
            let found = rules
                .descriptor(
                    "edge",
                    entries.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .unwrap_or_else(|| panic!("no rule for the descriptor {entries:?}"));
            assert!(found.rule.limit().is_some(), "{entries:?}");
            seen += 1;
        }
    }
    assert_eq!(seen, 3);
}

#[test]
fn the_shipped_envoy_ratelimit_config_says_what_the_rules_file_says() {
    let domains = tollgate::EnvoyDomain::read(&repo_file("deploy/envoy/ratelimit-config")).unwrap();
    let json =
        tollgate::EnvoyDomain::rules_document(&json!({"limit": "10/second"}), &domains).unwrap();
    let from_yaml = tollgate::Rules::from_json(&json).unwrap();
    let from_json = tollgate::Rules::from_file(repo_file("deploy/envoy/rate_limits.json")).unwrap();
    let rules = |rules: &tollgate::Rules| {
        rules
            .iter()
            .map(|rule| (rule.id().to_owned(), rule.limit().cloned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(rules(&from_yaml), rules(&from_json));
}

/// With a check token, a call needs it as `authorization` metadata; without it (or with
/// another), nothing is decided and nothing is spent.
#[tokio::test]
async fn the_check_token_guards_should_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let token = "grpc-check-token";
    let service = serve(dir.path(), RULES, &[("TOLLGATE_CHECK_TOKEN", token)]);
    let mut client = client(&service).await;
    let call = |authorization: Option<&str>| {
        let mut call = tonic::Request::new(request(vec![descriptor(&[("path", "/login")])]));
        if let Some(authorization) = authorization {
            call.metadata_mut()
                .insert("authorization", authorization.parse().unwrap());
        }
        call
    };
    for authorization in [None, Some("Bearer guess"), Some(token)] {
        let refused = client
            .should_rate_limit(call(authorization))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::Unauthenticated,
            "{authorization:?}"
        );
        assert!(
            refused.message().contains("TOLLGATE_CHECK_TOKEN"),
            "{refused}"
        );
    }
    // 2/hour: both calls with the token are the first two, nothing was spent before.
    for _ in 0..2 {
        let answer = client
            .should_rate_limit(call(Some(&format!("bearer {token}"))))
            .await
            .expect("decided with the token")
            .into_inner();
        assert_eq!(overall(&answer), Code::Ok);
    }
    let third = client
        .should_rate_limit(call(Some(&format!("Bearer {token}"))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall(&third), Code::OverLimit);
}
