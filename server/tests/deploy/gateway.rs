//! `tollgate serve` as a gateway's rate limiter (`GET /auth`): Debian's nginx serving
//! `deploy/gateways/nginx-forward-auth.conf.template` and Debian's Caddy serving
//! `deploy/gateways/Caddyfile`, each in front of a Python app, and the request Traefik's
//! `forwardAuth` sends, replayed against the real binary.
//!
//! Needs `nginx`, `caddy` and `python3`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use serde_json::Value;
use testkit::*;

/// The shipped nginx configuration.
const NGINX_FORWARD_AUTH: &str = "deploy/gateways/nginx-forward-auth.conf.template";

/// A small limit on one route, another on a second; refills too slow to move a count during
/// a test, however busy the machine (one token every 12 minutes or more). Both header
/// styles, so that the gateways are seen to carry each.
const RULES: &str = r#"{
    "headers": "both",
    "default": {"limit": "100/day"},
    "routes": [
        {"path": "/limited.txt", "limit": "3/hour"},
        {"path": "/other.txt", "limit": "5/hour"}
    ]
}"#;

/// The app behind the gateway: Python's file server over a temporary directory, answering
/// `/forbidden` with its own 403, and `/echo-remaining` with the `X-RateLimit-Remaining` it
/// received.
const UPSTREAM: &str = r#"
import http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/echo-remaining":
            body = str(self.headers.get("X-RateLimit-Remaining")).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/forbidden":
            body = b"the app itself says no\n"
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            super().do_GET()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Handler(*a, directory=sys.argv[1]))
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The Python app; killed when dropped.
struct Upstream {
    child: Child,
    address: String,
    _root: tempfile::TempDir,
}

impl Upstream {
    fn start() -> Self {
        Self::start_script(UPSTREAM)
    }

    /// Python running `script`, which prints its port.
    fn start_script(script: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("limited.txt"), "limited file\n").unwrap();
        std::fs::write(root.path().join("other.txt"), "other file\n").unwrap();
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(root.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("python3 is needed by this test: apt-get install python3 ({e})")
            });
        let mut port = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut port)
            .unwrap();
        let port = port.trim();
        assert!(
            port.parse::<u16>().is_ok(),
            "the Python app did not say its port: {port:?}"
        );
        Self {
            child,
            address: format!("127.0.0.1:{port}"),
            _root: root,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx, `tollgate serve` and the app. Fields drop in order.
struct Gateway {
    nginx: Nginx,
    _service: Demo,
    _upstream: Upstream,
    _rules: tempfile::TempDir,
}

impl Gateway {
    fn start() -> Self {
        Self::start_with(RULES)
    }

    fn start_with(rules: &str) -> Self {
        let (rules, service) = service_on(rules);
        let upstream = Upstream::start();
        let nginx = Nginx::start(
            NGINX_FORWARD_AUTH,
            &[
                ("TOLLGATE_ADDR", service.address.as_str()),
                ("APP_ADDR", upstream.address.as_str()),
            ],
        );
        Self {
            nginx,
            _service: service,
            _upstream: upstream,
            _rules: rules,
        }
    }

    async fn get(&self, path: &str, client: &str) -> Seen {
        self.get_with(path, client, &[]).await
    }

    async fn get_with(&self, path: &str, client: &str, headers: &[(&str, &str)]) -> Seen {
        let mut request = http()
            .get(format!("http://127.0.0.1:{}{path}", self.nginx.port))
            .header("x-client-id", client);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("a response through nginx");
        Seen::from(response).await
    }
}

/// A response, as the client saw it.
#[derive(Debug)]
struct Seen {
    status: StatusCode,
    limit: Option<u32>,
    remaining: Option<u32>,
    reset: Option<u64>,
    retry_after: Option<u64>,
    /// `RateLimit`, the IETF service limit item.
    ietf: Option<String>,
    /// `RateLimit-Policy`.
    policy: Option<String>,
    body: String,
}

impl Seen {
    async fn from(response: reqwest::Response) -> Self {
        Self {
            status: response.status(),
            limit: reqwest_number(&response, "x-ratelimit-limit"),
            remaining: reqwest_number(&response, "x-ratelimit-remaining"),
            reset: reqwest_number(&response, "x-ratelimit-reset"),
            retry_after: reqwest_number(&response, "retry-after"),
            ietf: reqwest_header(&response, "ratelimit"),
            policy: reqwest_header(&response, "ratelimit-policy"),
            body: response.text().await.unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_asks_tollgate_and_turns_its_refusal_into_a_429() {
    let gateway = Gateway::start();
    for remaining in [2, 1, 0] {
        let seen = gateway.get("/limited.txt", "alice").await;
        assert_eq!(seen.status, StatusCode::OK, "{seen:?}");
        assert_eq!(seen.body, "limited file\n", "the app's own body");
        assert_eq!((seen.limit, seen.remaining), (Some(3), Some(remaining)));
        let reset = seen.reset.expect("X-RateLimit-Reset");
        assert!(reset >= unix_now() && reset <= unix_now() + 3601, "{reset}");
        assert_eq!(seen.retry_after, None);
        assert_eq!(seen.policy.as_deref(), Some(r#""/limited.txt";q=3;w=3600"#));
        let ietf = seen.ietf.expect("RateLimit");
        assert!(
            ietf.starts_with(&format!(r#""/limited.txt";r={remaining};t="#)),
            "{ietf}"
        );
    }
    let refused = gateway.get("/limited.txt", "alice").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{refused:?}\n{}",
        gateway.nginx.error_log()
    );
    assert_eq!((refused.limit, refused.remaining), (Some(3), Some(0)));
    assert!(refused.reset.is_some());
    assert_eq!(
        refused.policy.as_deref(),
        Some(r#""/limited.txt";q=3;w=3600"#)
    );
    assert!(
        refused
            .ietf
            .is_some_and(|v| v.starts_with(r#""/limited.txt";r=0;t="#))
    );
    let retry_after = refused.retry_after.expect("Retry-After");
    assert!((1..=1200).contains(&retry_after), "{retry_after}");
    let body: Value = serde_json::from_str(&refused.body).expect("a JSON body");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["retry_after"], retry_after);

    // The query is not part of the route; the refusal holds.
    let with_query = gateway.get("/limited.txt?page=2", "alice").await;
    assert_eq!(with_query.status, StatusCode::TOO_MANY_REQUESTS);

    // Another route counts apart, under its own limit.
    let other = gateway.get("/other.txt", "alice").await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body, "other file\n");
    assert_eq!((other.limit, other.remaining), (Some(5), Some(4)));

    // Another client counts apart.
    let bob = gateway.get("/limited.txt", "bob").await;
    assert_eq!(bob.status, StatusCode::OK);
    assert_eq!((bob.limit, bob.remaining), (Some(3), Some(2)));

    // A client naming another route in Traefik's headers changes nothing: nginx drops them.
    let spoof = gateway
        .get_with(
            "/limited.txt",
            "bob",
            &[
                ("x-forwarded-uri", "/other.txt"),
                ("x-forwarded-method", "GET"),
            ],
        )
        .await;
    assert_eq!(spoof.status, StatusCode::OK, "{spoof:?}");
    assert_eq!((spoof.limit, spoof.remaining), (Some(3), Some(1)));

    // The app's own 404 and 403 pass through untouched, with the headers of the default rule.
    let missing = gateway.get("/missing.txt", "carol").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("File not found"), "{}", missing.body);
    assert_eq!((missing.limit, missing.remaining), (Some(100), Some(99)));
    let forbidden = gateway.get("/forbidden", "carol").await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN, "{forbidden:?}");
    assert_eq!(forbidden.body, "the app itself says no\n");
    assert_eq!(forbidden.limit, Some(100));
    assert_eq!(forbidden.retry_after, None);
}

/// A client behind the shipped nginx configuration cannot pick the unlimited `/static`
/// rule, nor fall to the default one, by how it writes its path: each spelling counts
/// against `/api/data`, and what the app could read otherwise is a 400 (not nginx's 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_clients_cannot_escape_their_rule_with_dot_segments() {
    let gateway = Gateway::start_with(
        r#"{
            "default": {"limit": "1000/day"},
            "routes": [
                {"path": "/static/{*rest}", "unlimited": true},
                {"path": "/api/data", "limit": "3/day"}
            ]
        }"#,
    );
    let address = format!("127.0.0.1:{}", gateway.nginx.port);
    let get = |target: &str| {
        raw_http(
            &address,
            &format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nX-Client-ID: mallory\r\n"),
            "",
        )
    };
    let escapes = [
        "/static/../api/data",
        "/static/x/../../api/data",
        "/static/%2e%2e/api/data",
        "http://evil.example/static/../api/data",
        "/api/%64ata",
        "/api//data",
        "/api/./data",
    ];
    let seen: Vec<_> = escapes.iter().map(|target| (target, get(target))).collect();
    for (target, answer) in &seen {
        assert_eq!(
            answer.header("x-ratelimit-limit"),
            Some("3"),
            "{target}: {answer:?}"
        );
    }
    let statuses: Vec<u16> = seen.iter().map(|(_, answer)| answer.status).collect();
    // The Python app has no /api/data: the three allowed are its 404s.
    assert_eq!(statuses, [404, 404, 404, 429, 429, 429, 429], "{seen:?}");
    let refused: Value = serde_json::from_str(&seen[3].1.body).expect("a JSON 429 body");
    assert_eq!(refused["error"], "rate_limited");

    // nginx refuses an encoded NUL itself, before it asks.
    assert_eq!(get("/api/data%00").status, 400);
    for target in [
        "/static/..%2Fapi/data",
        "/static/..%2fapi/data",
        "/static/..%5Capi/data",
    ] {
        let answer = get(target);
        assert_eq!(
            answer.status,
            400,
            "{target}: {answer:?}\n{}",
            gateway.nginx.error_log()
        );
        let body: Value = serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("{target}: not JSON ({e}): {:?}", answer.body));
        assert_eq!(body["error"], "bad_request");
    }

    // A refusal that carries no Retry-After (here from an auth service that answers a bare
    // 403) still gets a JSON body.
    let bare = Upstream::start_script(BARE_403);
    let nginx = Nginx::start(
        NGINX_FORWARD_AUTH,
        &[
            ("TOLLGATE_ADDR", bare.address.as_str()),
            ("APP_ADDR", bare.address.as_str()),
        ],
    );
    let answer = raw_http(
        &format!("127.0.0.1:{}", nginx.port),
        "GET /api/data HTTP/1.1\r\nHost: localhost\r\n",
        "",
    );
    assert_eq!(answer.status, 429, "{answer:?}");
    assert_eq!(answer.header("retry-after"), None);
    let body: Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", answer.body));
    assert_eq!(body["retry_after"], Value::Null);
}

/// An auth service that refuses everything with a bare 403.
const BARE_403: &str = r#"
import http.server
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// What Traefik's forwardAuth sends: a GET to the address, the client's headers, and
/// X-Forwarded-Method, -Proto, -Host, -Uri and -For. A refusal reaches the client as
/// tollgate answered it.
#[tokio::test]
async fn traefiks_request_replayed_against_tollgate_serve() {
    let (_rules, service) = service();
    let traefik = |client: &'static str| {
        http()
            .get(format!("http://{}/auth", service.address))
            .header("x-client-id", client)
            .header("x-forwarded-method", "POST")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "api.example.com")
            .header("x-forwarded-uri", "/limited.txt?draft=1")
            .header("x-forwarded-for", "203.0.113.7")
    };
    allowed_three_times_then_refused(traefik).await;
}

/// Debian's Caddy serving the shipped Caddyfile in front of the same app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_asks_tollgate_and_passes_its_refusal_on() {
    let (_rules, service) = service();
    let upstream = Upstream::start();
    let caddy = Caddy::start(&service.address, &upstream.address);
    let get = |path: &str, client: &str| {
        http()
            .get(format!("{}{path}", caddy.site))
            .header("x-client-id", client)
    };
    for remaining in [2, 1, 0] {
        let seen = Seen::from(get("/limited.txt", "alice").send().await.unwrap()).await;
        assert_eq!(seen.status, StatusCode::OK, "{seen:?}");
        assert_eq!(seen.body, "limited file\n");
        // copy_headers puts them on the app's request, not on the client's response.
        assert_eq!(seen.limit, None);
        let echoed = get("/echo-remaining", "alice").send().await.unwrap();
        assert_eq!(
            echoed.text().await.unwrap(),
            (99 - 2 + remaining).to_string()
        );
    }
    let refused = Seen::from(get("/limited.txt", "alice").send().await.unwrap()).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{refused:?}");
    assert!(refused.retry_after.is_some_and(|secs| secs >= 1));
    assert_eq!((refused.limit, refused.remaining), (Some(3), Some(0)));
    let body: Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body["error"], "rate_limited");
    // nginx's header names from a client are dropped: they name no other route.
    let spoof = get("/limited.txt", "alice")
        .header("x-original-uri", "/other.txt")
        .header("x-original-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(spoof.status(), StatusCode::TOO_MANY_REQUESTS);
    let bob = Seen::from(get("/limited.txt", "bob").send().await.unwrap()).await;
    assert_eq!(bob.status, StatusCode::OK);
    let other = Seen::from(get("/other.txt", "alice").send().await.unwrap()).await;
    assert_eq!(other.status, StatusCode::OK);
    let missing = Seen::from(get("/missing.txt", "alice").send().await.unwrap()).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("File not found"), "{}", missing.body);
}

/// With a check token on tollgate, Caddy asks with the same token, and a Caddy without it
/// gets nothing decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_sends_the_check_token() {
    let token = "gateway-check-token";
    let rules = tempfile::tempdir().unwrap();
    let rules_file = rules.path().join("rate_limits.json");
    std::fs::write(&rules_file, RULES).unwrap();
    let service = start_service(&[
        ("RATE_LIMIT_RULES_PATH", rules_file.to_str().unwrap()),
        ("TOLLGATE_CHECK_TOKEN", token),
    ]);
    let upstream = Upstream::start();
    let with_token = Caddy::start_with(
        &service.address,
        &upstream.address,
        &[("TOLLGATE_CHECK_TOKEN", token)],
    );
    let without = Caddy::start(&service.address, &upstream.address);
    let get = |caddy: &Caddy| {
        http()
            .get(format!("{}/limited.txt", caddy.site))
            .header("x-client-id", "alice")
            // A client's own credentials do not stand for the gateway's.
            .bearer_auth(token)
    };
    let allowed = get(&with_token).send().await.unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(allowed.text().await.unwrap(), "limited file\n");
    let refused = get(&without).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

/// Caddy running `deploy/gateways/Caddyfile`, imported under global options that keep it
/// to plain HTTP and off the admin port; killed when dropped.
struct Caddy {
    child: Child,
    site: String,
    _dir: tempfile::TempDir,
}

impl Caddy {
    fn start(tollgate: &str, app: &str) -> Self {
        Self::start_with(tollgate, app, &[])
    }

    /// With `envs` in Caddy's environment besides.
    fn start_with(tollgate: &str, app: &str, envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let site = format!("http://127.0.0.1:{port}");
        let config = dir.path().join("Caddyfile");
        let shipped = repo_file("deploy/gateways/Caddyfile");
        std::fs::write(
            &config,
            format!(
                "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {}\n}}\nimport {}\n",
                dir.path().display(),
                shipped.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("caddy.log");
        let mut child = Command::new("caddy")
            .arg("run")
            .arg("--adapter")
            .arg("caddyfile")
            .arg("--config")
            .arg(&config)
            .env("CADDY_SITE", &site)
            .env("TOLLGATE_ADDR", tollgate)
            .env("APP_ADDR", app)
            .envs(envs.iter().copied())
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("caddy is needed by this test but did not run: apt-get install caddy ({e})")
            });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "caddy exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "caddy not listening after 10 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self {
            child,
            site,
            _dir: dir,
        }
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tollgate serve` on [`RULES`].
fn service() -> (tempfile::TempDir, Demo) {
    service_on(RULES)
}

/// `tollgate serve` on `json`.
fn service_on(json: &str) -> (tempfile::TempDir, Demo) {
    let rules = tempfile::tempdir().unwrap();
    let rules_file = rules.path().join("rate_limits.json");
    std::fs::write(&rules_file, json).unwrap();
    let service = start_service(&[("RATE_LIMIT_RULES_PATH", rules_file.to_str().unwrap())]);
    (rules, service)
}

async fn allowed_three_times_then_refused(
    request: impl Fn(&'static str) -> reqwest::RequestBuilder,
) {
    for remaining in [2, 1, 0] {
        let seen = Seen::from(request("alice").send().await.unwrap()).await;
        assert_eq!(seen.status, StatusCode::OK, "{seen:?}");
        assert_eq!(seen.body, "");
        assert_eq!((seen.limit, seen.remaining), (Some(3), Some(remaining)));
    }
    let refused = Seen::from(request("alice").send().await.unwrap()).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.retry_after.is_some_and(|secs| secs >= 1));
    assert_eq!((refused.limit, refused.remaining), (Some(3), Some(0)));
    assert_eq!(
        refused.policy.as_deref(),
        Some(r#""/limited.txt";q=3;w=3600"#)
    );
    let body: Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body["error"], "rate_limited");
    let bob = Seen::from(request("bob").send().await.unwrap()).await;
    assert_eq!((bob.status, bob.remaining), (StatusCode::OK, Some(2)));

    let bad = request("alice")
        .header("x-forwarded-uri", "no-slash")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["header"], "X-Forwarded-Uri", "{body}");
}
