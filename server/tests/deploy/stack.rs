//! The compose stack's topology, run without Docker: a private `redis-server`, two demo
//! processes sharing it, and Debian's nginx serving the very template the compose stack
//! mounts (`server/tests/deploy/files.rs` checks the files themselves).
//!
//! Needs `python3` with PyYAML (to read the compose file), `redis-server` and `nginx`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use testkit::*;
// ---------------------------------------------------------------------------------------
// The topology, without Docker.
// ---------------------------------------------------------------------------------------

/// Small limits so the tests reach them quickly; refills too slow to matter during a test.
const RULES: &str = r#"{
    "default": {"capacity": 5, "refill_rate": 0.001},
    "routes": [
        {"path": "/api/data", "capacity": 6, "refill_rate": 0.001},
        {"path": "/health", "unlimited": true}
    ],
    "clients": {"id:internal-batch": {"capacity": 50, "refill_rate": 0.001}},
    "on_redis_error": "deny"
}"#;

/// The compose topology from local processes. Fields drop in order: nginx, the apps, the
/// service, Redis.
struct Stack {
    nginx: Nginx,
    apps: [Demo; 2],
    /// `tollgate serve` on the same Redis, as the compose file's `tollgate` service.
    service: Demo,
    redis: TestRedis,
    _rules: tempfile::TempDir,
}

impl Stack {
    fn start() -> Self {
        Self::start_with(RULES, &[])
    }

    /// The stack with these rules, and these variables for the apps too.
    fn start_with(rules_json: &str, env: &[(&str, &str)]) -> Self {
        let redis = TestRedis::start();
        let rules = tempfile::tempdir().unwrap();
        let rules_file = rules.path().join("rate_limits.json");
        std::fs::write(&rules_file, rules_json).unwrap();
        let rules_path = rules_file.to_str().unwrap();
        let app = || {
            let mut vars = vec![
                ("REDIS_URL", redis.url()),
                ("PORT", "0"),
                ("TRUSTED_PROXY_HOPS", "1"),
                ("RATE_LIMIT_RULES_PATH", rules_path),
            ];
            vars.extend_from_slice(env);
            start_demo(&vars)
        };
        let apps = [app(), app()];
        let service = start_service(&[
            ("REDIS_URL", redis.url()),
            ("RATE_LIMIT_RULES_PATH", rules_path),
        ]);
        let nginx = Nginx::start(
            TEMPLATE,
            &[
                ("APP1_ADDR", apps[0].address.as_str()),
                ("APP2_ADDR", apps[1].address.as_str()),
            ],
        );
        Self {
            nginx,
            apps,
            service,
            redis,
            _rules: rules,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.nginx.port)
    }

    fn app_addresses(&self) -> BTreeSet<String> {
        self.apps.iter().map(|a| a.address.clone()).collect()
    }

    fn redis_keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg("*")
            .query(&mut self.redis.client())
            .unwrap()
    }

    /// The shared Redis holds a key for each client in `present`, and none that contains
    /// anything in `absent` (what a client wrote).
    fn assert_keys(&self, present: &[&str], absent: &[&str]) {
        let keys = self.redis_keys();
        for client in present {
            assert!(
                keys.iter().any(|k| k.contains(client)),
                "{client}: {keys:?}"
            );
        }
        for written in absent {
            assert!(
                !keys.iter().any(|k| k.contains(written)),
                "{written}, which a client wrote, became a key: {keys:?}"
            );
        }
    }
}

/// An HTTP client whose connections come from `source` (any 127.0.0.0/8 address is this
/// machine on Linux), so nginx sees different client addresses.
fn client_from(source: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn client() -> reqwest::Client {
    client_from(Ipv4Addr::LOCALHOST)
}

/// Status, `X-RateLimit-Remaining` and `X-Upstream` of one response.
struct Seen {
    status: StatusCode,
    remaining: Option<u32>,
    upstream: String,
}

async fn get(request: reqwest::RequestBuilder) -> Seen {
    let response = request.send().await.expect("a response through nginx");
    Seen {
        status: response.status(),
        remaining: reqwest_header(&response, "x-ratelimit-remaining").map(|v| v.parse().unwrap()),
        upstream: reqwest_header(&response, "x-upstream").expect("nginx adds X-Upstream"),
    }
}

#[tokio::test]
async fn one_limit_holds_across_both_replicas() {
    let stack = Stack::start();
    let http = client();
    let mut seen = Vec::new();
    for _ in 0..20 {
        let request = http
            .get(stack.url("/api/data"))
            .header("x-api-key", "demo-key-alice");
        seen.push(get(request).await);
    }

    let statuses: Vec<u16> = seen.iter().map(|s| s.status.as_u16()).collect();
    let mut expected = vec![200; 6];
    expected.extend([429; 14]);
    assert_eq!(
        statuses, expected,
        "capacity 6 in total, whichever replica answers"
    );
    let remaining: Vec<Option<u32>> = seen.iter().map(|s| s.remaining).collect();
    let mut expected: Vec<Option<u32>> = (0..6).rev().map(Some).collect();
    expected.extend([Some(0); 14]);
    assert_eq!(
        remaining, expected,
        "one token per request, across replicas"
    );

    // Round robin: both replicas served, and both refused, so neither kept a bucket of its own.
    let answered: BTreeSet<String> = seen.iter().map(|s| s.upstream.clone()).collect();
    let refused: BTreeSet<String> = seen
        .iter()
        .filter(|s| s.status == StatusCode::TOO_MANY_REQUESTS)
        .map(|s| s.upstream.clone())
        .collect();
    assert_eq!(answered, stack.app_addresses(), "both replicas answered");
    assert_eq!(refused, stack.app_addresses(), "both replicas refused");

    let keys: Vec<String> = stack
        .redis_keys()
        .into_iter()
        .filter(|k| k.contains("id:alice"))
        .collect();
    assert_eq!(keys.len(), 1, "one bucket in the shared Redis: {keys:?}");
}

/// A limit set through the service is what both replicas enforce behind nginx, within a
/// second: they share its Redis, where the change is kept and announced.
#[tokio::test]
async fn a_limit_configured_through_the_service_holds_on_both_replicas() {
    let stack = Stack::start();
    let http = client();
    let response = http
        .post(format!("http://{}/configure", stack.service.address))
        .json(&serde_json::json!({"key": "alice", "limit": "3/hour"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The replicas hear of it within a second (the first answer that shows it takes one):
    // a request sent later than that must show it, however long a busy machine takes to
    // answer it.
    let configured = std::time::Instant::now();
    let mut seen = Vec::new();
    loop {
        let sent = configured.elapsed();
        let response = http
            .get(stack.url("/api/data"))
            .header("x-api-key", "demo-key-alice")
            .send()
            .await
            .unwrap();
        if reqwest_header(&response, "x-ratelimit-limit").as_deref() == Some("3") {
            seen.push(response.status().as_u16());
            break;
        }
        assert!(
            sent < Duration::from_secs(1),
            "the replicas did not apply the limit within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut upstreams = BTreeSet::new();
    for _ in 0..5 {
        let seen_now = get(http
            .get(stack.url("/api/data"))
            .header("x-api-key", "demo-key-alice"))
        .await;
        seen.push(seen_now.status.as_u16());
        upstreams.insert(seen_now.upstream);
    }
    assert_eq!(seen, [200, 200, 200, 429, 429, 429]);
    assert_eq!(upstreams, stack.app_addresses(), "both replicas answered");
}

/// The service's statistics count the replicas' requests: all three record into the shared
/// Redis.
#[tokio::test]
async fn the_service_counts_the_replicas_requests() {
    let stack = Stack::start();
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let request = http
            .get(stack.url("/api/data"))
            .header("x-api-key", "demo-key-alice");
        statuses.push(get(request).await.status.as_u16());
    }
    let allowed = statuses.iter().filter(|&&s| s == 200).count() as u64;
    assert_eq!(
        (allowed, statuses.len() as u64 - allowed),
        (6, 2),
        "{statuses:?}"
    );
    let started = std::time::Instant::now();
    loop {
        let response = http
            .get(format!(
                "http://{}/admin/stats/alice",
                stack.service.address
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let stats: serde_json::Value = response.json().await.unwrap();
        if stats["last_24_hours"] == serde_json::json!({"allowed": 6, "denied": 2}) {
            assert_eq!(
                stats["rules"],
                serde_json::json!({"/api/data": {"allowed": 6, "denied": 2}})
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the replicas' calls did not reach the statistics: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The shipped rules and the compose file's count of deciders (two replicas and the
/// service): with Redis killed, each replica decides alone with its share of the burst of
/// 10 on `/api/data`, so together they admit at most one limit's worth, not one each.
#[tokio::test]
async fn with_redis_gone_the_replicas_share_one_limit() {
    let compose = compose();
    let instances = app_environment(&compose, APPS[0])
        .get("LOCAL_FALLBACK_INSTANCES")
        .cloned()
        .expect("compose tells the apps how many processes decide");
    let share: u32 = instances.parse().unwrap();
    assert_eq!(share as usize, DECIDERS.len());
    let per_replica = 10 / share;
    let shipped = std::fs::read_to_string(repo_file("rate_limits.json")).unwrap();
    let mut stack = Stack::start_with(&shipped, &[("LOCAL_FALLBACK_INSTANCES", &instances)]);
    stack.redis.kill();
    let http = client();
    let started = Instant::now();
    let mut admitted = 0;
    for _ in 0..30 {
        let request = http
            .get(stack.url("/api/data"))
            .header("x-api-key", "demo-key-alice");
        let response = request.send().await.expect("a response through nginx");
        assert_eq!(
            reqwest_header(&response, "x-ratelimit-limit"),
            Some(per_replica.to_string()),
            "the local fallback decides, with 1/{share} of the burst of 10"
        );
        if response.status() == StatusCode::OK {
            admitted += 1;
        }
    }
    // The burst share per replica, and what each refilled (1/s, divided) while the test
    // ran: a token or so, more on a busy machine.
    let burst = 2 * per_replica;
    let refilled = (started.elapsed().as_secs_f64() * 2.0 / f64::from(share)).ceil() as u32 + 1;
    assert!(
        (burst..=burst + refilled).contains(&admitted),
        "{admitted} admitted across both replicas with Redis gone in {:?}, expected {burst} \
         and {refilled} refilled at most",
        started.elapsed()
    );
    assert!(
        admitted <= 10.max(burst + refilled),
        "never more than one limit's worth (and what came back while the test ran)"
    );
}

#[tokio::test]
async fn clients_are_keyed_by_the_address_nginx_saw() {
    let stack = Stack::start();
    let first = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let second = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let data = stack.url("/api/data");

    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(get(first.get(&data)).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429]);

    // What the client writes in X-Forwarded-For stays left of the entry nginx appends, and
    // the apps read only that one: spoofing through the proxy gets the same bucket.
    for spoofed in ["1.2.3.4", "127.0.0.2", "1.2.3.4, 5.6.7.8"] {
        let seen = get(first.get(&data).header("x-forwarded-for", spoofed)).await;
        assert_eq!(
            (seen.status, seen.remaining),
            (StatusCode::TOO_MANY_REQUESTS, Some(0)),
            "X-Forwarded-For: {spoofed} must not reach another bucket"
        );
    }

    // Another address, as nginx sees it, is another client.
    let other = get(second.get(&data)).await;
    assert_eq!((other.status, other.remaining), (StatusCode::OK, Some(5)));

    stack.assert_keys(&["ip:127.0.0.1", "ip:127.0.0.2"], &["1.2.3.4", "5.6.7.8"]);
}

/// The gateway pattern: nginx replaces whatever X-Client-ID a client sends with the name
/// its map gives the client's X-API-Key, or with nothing.
#[tokio::test]
async fn nginx_names_clients_by_api_key_and_drops_their_own_ids() {
    let stack = Stack::start();
    let http = client_from(Ipv4Addr::new(127, 0, 0, 3));
    let data = stack.url("/api/data");

    // A client's own X-Client-ID never reaches the apps: fresh values on every request all
    // draw from the bucket of its address.
    let mut statuses = Vec::new();
    for n in 0..7 {
        let forged = format!("forged-{n}");
        let seen = get(http.get(&data).header("x-client-id", forged)).await;
        statuses.push(seen.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429]);
    // Nor does the name of a client with an override, nor an unknown key.
    for (name, value) in [("x-client-id", "internal-batch"), ("x-api-key", "nope")] {
        let seen = get(http.get(&data).header(name, value)).await;
        assert_eq!(
            (seen.status, seen.remaining),
            (StatusCode::TOO_MANY_REQUESTS, Some(0)),
            "{name}: {value} must not leave the address's bucket"
        );
    }

    // A known key is the client's own bucket, whatever X-Client-ID it sends beside it.
    let alice = get(http
        .get(&data)
        .header("x-api-key", "demo-key-alice")
        .header("x-client-id", "bob"))
    .await;
    assert_eq!((alice.status, alice.remaining), (StatusCode::OK, Some(5)));
    // And the gateway alone can give a client its override (capacity 50).
    let batch = get(http.get(&data).header("x-api-key", "demo-key-batch")).await;
    assert_eq!((batch.status, batch.remaining), (StatusCode::OK, Some(49)));

    stack.assert_keys(
        &["ip:127.0.0.3", "id:alice", "id:internal-batch"],
        &["forged", "id:bob"],
    );
}

#[tokio::test]
async fn health_passes_through_nginx_unlimited() {
    let stack = Stack::start();
    let http = client();
    let mut upstreams = BTreeSet::new();
    // More than the default capacity of 5: /health is unlimited.
    for _ in 0..10 {
        let response = http.get(stack.url("/health")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        for name in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert_eq!(
                reqwest_header(&response, name),
                None,
                "/health carries no {name}"
            );
        }
        upstreams.insert(reqwest_header(&response, "x-upstream").expect("proxied"));
        // The service's health, which the demo mounts.
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ok", "{body}");
        assert_eq!(body["redis"], "connected", "{body}");
    }
    assert_eq!(upstreams, stack.app_addresses());

    let own = http.get(stack.url("/nginx-health")).send().await.unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(
        reqwest_header(&own, "x-upstream"),
        None,
        "answered by nginx itself"
    );
    assert_eq!(own.text().await.unwrap(), "ok\n");
}

// ---------------------------------------------------------------------------------------
// `tollgate healthcheck`, the probe the image's HEALTHCHECK runs.
// ---------------------------------------------------------------------------------------

/// Runs `tollgate healthcheck` against `port`: its exit status, stderr and how long it took.
fn healthcheck(port: u16) -> (ExitStatus, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(tollgate_binary())
        .arg("healthcheck")
        .env_clear()
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tollgate healthcheck");
    let deadline = started + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tollgate healthcheck still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr, started.elapsed())
}

/// A one-connection server on a free port that answers `reply` (or nothing, holding the
/// connection open until the client leaves).
fn fake_server(reply: Option<&'static str>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut request = [0u8; 1024];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = stream.read(&mut request);
            match reply {
                Some(reply) => {
                    let _ = stream.write_all(reply.as_bytes());
                }
                // Wait for the client to give up and close.
                None => while matches!(stream.read(&mut request), Ok(n) if n > 0) {},
            }
        }
    });
    port
}

#[test]
fn healthcheck_exits_0_only_for_a_healthy_demo() {
    let demo = start_demo(&[]);
    let port: u16 = demo.address.rsplit(':').next().unwrap().parse().unwrap();
    let (status, stderr, _) = healthcheck(port);
    assert_eq!(
        status.code(),
        Some(0),
        "a running demo is healthy: {stderr}"
    );

    let nothing = free_port();
    let (status, stderr, _) = healthcheck(nothing);
    assert_eq!(status.code(), Some(1), "nothing listening");
    assert!(stderr.contains("unhealthy: cannot connect"), "{stderr}");

    let failing = fake_server(Some(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
    ));
    let (status, stderr, _) = healthcheck(failing);
    assert_eq!(status.code(), Some(1), "a 503 is unhealthy");
    assert!(stderr.contains("answered 503"), "{stderr}");

    let silent = fake_server(None);
    let (status, stderr, took) = healthcheck(silent);
    assert_eq!(status.code(), Some(1), "no answer is unhealthy");
    assert!(stderr.contains("within 2s"), "{stderr}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "gives up after its 2 s timeout, took {took:?}"
    );
}
