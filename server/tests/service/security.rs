//! Who reaches what on `tollgate serve` (the real binary): the admin, write and event routes
//! against requests relayed by a proxy on this host (real nginx), browsers' cross-site
//! requests and rebound names, WebSocket hijacking, the event streams' one-time tickets,
//! and the check token on the decision routes.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::*;

/// The shipped nginx template in front of the demo apps, here in front of the service
/// itself: it keeps `Host` and appends `X-Forwarded-For`, as a reverse proxy does.
const PROXY: &str = "deploy/nginx/default.conf.template";

/// Rules that cannot move during a test.
fn service(envs: &[(&str, &str)]) -> Demo {
    let mut all = vec![("DEFAULT_RATE_LIMIT", "2/day")];
    all.extend_from_slice(envs);
    start_service(&all)
}

/// `head` (request line and headers) sent raw to `address`, as a browser or a proxy would
/// send it.
fn raw(address: &str, head: &str, body: &str) -> RawResponse {
    raw_http(address, head, body)
}

fn detail(answer: &RawResponse) -> String {
    let body: Value =
        serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer:?}"));
    body["detail"].as_str().unwrap_or_default().to_owned()
}

/// What a remote client reaching a reverse proxy on the service's host gets: nothing of
/// the admin API, whatever it writes. Token-less mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_a_proxy_on_this_host_relays_no_admin_request() {
    let service = service(&[]);
    let proxy = Nginx::start(
        PROXY,
        &[
            ("APP1_ADDR", service.address.as_str()),
            ("APP2_ADDR", service.address.as_str()),
        ],
    );
    let through = format!("127.0.0.1:{}", proxy.port);
    let json = "Content-Type: application/json\r\n";
    for (head, body) in [
        (
            format!("POST /configure HTTP/1.1\r\nHost: {through}\r\n{json}"),
            r#"{"key":"victim","limit":"1/day"}"#,
        ),
        (
            format!("PUT /admin/rules/clients/id:attacker HTTP/1.1\r\nHost: {through}\r\n{json}"),
            r#"{"unlimited":true}"#,
        ),
        (
            format!("GET /admin/stats HTTP/1.1\r\nHost: {through}\r\n"),
            "",
        ),
        (
            format!("GET /admin/rules HTTP/1.1\r\nHost: {through}\r\n"),
            "",
        ),
    ] {
        let answer = raw(&through, &head, body);
        assert_eq!(answer.status, 401, "{head}: {answer:?}");
        assert!(
            detail(&answer).contains("TOLLGATE_ADMIN_TOKEN"),
            "says to set the token: {answer:?}"
        );
    }
    // Nothing was changed: the victim keeps the default rule.
    let direct = &service.address;
    let rules = raw(
        direct,
        "GET /admin/rules HTTP/1.1\r\nHost: localhost\r\n",
        "",
    );
    assert_eq!(rules.status, 200, "{rules:?}");
    assert!(!rules.body.contains("victim") && !rules.body.contains("attacker"));
    // The decisions still pass through the proxy.
    let check = raw(
        &through,
        &format!("GET /check/k HTTP/1.1\r\nHost: {through}\r\n"),
        "",
    );
    assert_eq!(check.status, 200, "{check:?}");
}

/// A page of another site cannot make the user's browser write, reset or read, in either
/// mode; a non-browser client with or without a content type still can.
#[tokio::test]
async fn cross_site_requests_are_refused_and_seed_clients_are_not() {
    let service = service(&[]);
    let address = service.address.as_str();
    let host = format!("Host: {address}\r\n");
    let evil = "Origin: https://evil.example\r\nSec-Fetch-Site: cross-site\r\n";
    let configure = r#"{"key":"victim","limit":"1/day"}"#;
    for (head, body, status) in [
        // A form-like body from another site: refused for its origin.
        (
            format!("POST /configure HTTP/1.1\r\n{host}{evil}Content-Type: text/plain\r\n"),
            configure,
            403,
        ),
        (
            format!(
                "POST /admin/rules/routes HTTP/1.1\r\n{host}{evil}Content-Type: text/plain\r\n"
            ),
            r#"{"path":"/api/data","unlimited":true}"#,
            403,
        ),
        (
            format!(
                "POST /admin/configs HTTP/1.1\r\n{host}{evil}Content-Type: application/json\r\n"
            ),
            r#"{"endpoint":"/x","requests_per_window":1,"window_seconds":60}"#,
            403,
        ),
        (
            format!("POST /admin/reset/carol HTTP/1.1\r\n{host}Origin: null\r\n"),
            "",
            403,
        ),
        // A cross-site read with no Origin (an <img>, a <script>).
        (
            format!("GET /admin/rules HTTP/1.1\r\n{host}Sec-Fetch-Site: cross-site\r\n"),
            "",
            403,
        ),
        // The service's own page may; a text/plain body may not, even from it.
        (
            format!(
                "POST /configure HTTP/1.1\r\n{host}Origin: http://{address}\r\nContent-Type: text/plain\r\n"
            ),
            configure,
            415,
        ),
        (
            format!(
                "POST /configure HTTP/1.1\r\n{host}Content-Type: application/x-www-form-urlencoded\r\n"
            ),
            configure,
            415,
        ),
        (
            format!(
                "POST /configure HTTP/1.1\r\n{host}Content-Type: multipart/form-data; boundary=x\r\n"
            ),
            configure,
            415,
        ),
    ] {
        let answer = raw(address, &head, body);
        assert_eq!(answer.status, status, "{head}: {answer:?}");
    }
    let rules = raw(address, &format!("GET /admin/rules HTTP/1.1\r\n{host}"), "");
    assert!(
        !rules.body.contains("victim") && !rules.body.contains("/x"),
        "{rules:?}"
    );

    // carol's exhausted bucket stays exhausted after the refused reset.
    for _ in 0..3 {
        raw(address, &format!("GET /check/carol HTTP/1.1\r\n{host}"), "");
    }
    let reset = raw(
        address,
        &format!("POST /admin/reset/carol HTTP/1.1\r\n{host}Origin: https://evil.example\r\n"),
        "",
    );
    assert_eq!(reset.status, 403);
    let carol = raw(address, &format!("GET /check/carol HTTP/1.1\r\n{host}"), "");
    assert_eq!(carol.status, 429, "{carol:?}");

    // Seed clients: JSON with its content type (curl -H, requests' json=), or a body with
    // no content type and no Origin; and the service's own page.
    let base = format!("http://{address}");
    let answer = http()
        .post(format!("{base}/configure"))
        .json(&json!({"key": "seed-a", "limit": "5/minute"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let bare = raw(
        address,
        &format!("POST /configure HTTP/1.1\r\n{host}"),
        r#"{"key":"seed-b","limit":"5/minute"}"#,
    );
    assert_eq!(bare.status, 200, "{bare:?}");
    let own = raw(
        address,
        &format!(
            "POST /configure HTTP/1.1\r\n{host}Origin: {base}\r\nSec-Fetch-Site: same-origin\r\nContent-Type: application/json\r\n"
        ),
        r#"{"key":"seed-c","limit":"5/minute"}"#,
    );
    assert_eq!(own.status, 200, "{own:?}");
    let reset = raw(
        address,
        &format!("POST /admin/reset/carol HTTP/1.1\r\n{host}"),
        "",
    );
    assert_eq!(
        reset.status, 200,
        "a bodyless POST from a non-browser client: {reset:?}"
    );
}

/// A name rebound to 127.0.0.1 is not this host's, unless listed.
#[tokio::test]
async fn without_a_token_a_rebound_host_name_is_refused() {
    let service = service(&[("TOLLGATE_ALLOWED_HOSTS", "limits.internal:8000")]);
    let address = service.address.as_str();
    let port = address.rsplit(':').next().unwrap();
    let ask = |host: &str| {
        raw(
            address,
            &format!("GET /admin/rules HTTP/1.1\r\nHost: {host}\r\n"),
            "",
        )
    };
    let rebound = ask(&format!("rebind.evil.example:{port}"));
    assert_eq!(rebound.status, 403, "{rebound:?}");
    assert!(
        detail(&rebound).contains("TOLLGATE_ALLOWED_HOSTS"),
        "{rebound:?}"
    );
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "limits.internal:8000".to_owned(),
    ] {
        assert_eq!(ask(&host).status, 200, "{host}");
    }
}

/// The WebSocket handshake a hijacking page would start: refused for its origin; a listed
/// origin's page is served.
#[tokio::test]
async fn websockets_from_other_origins_are_refused() {
    let service = service(&[("TOLLGATE_ALLOWED_ORIGINS", "http://localhost:3000")]);
    let address = service.address.as_str();
    let upgrade = |origin: &str| {
        let head = format!(
            "GET /ws/global HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n"
        );
        // Read the status line only: an upgraded connection stays open.
        use std::io::{BufRead, BufReader, Write};
        let mut socket = std::net::TcpStream::connect(address).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(socket, "{head}\r\n").unwrap();
        let mut status = String::new();
        BufReader::new(socket).read_line(&mut status).unwrap();
        status
    };
    let hijack = upgrade("https://evil.example");
    assert!(hijack.starts_with("HTTP/1.1 403"), "{hijack}");
    let listed = upgrade("http://localhost:3000");
    assert!(listed.starts_with("HTTP/1.1 101"), "{listed}");
}

/// With a token, a browser client gets a one-time ticket for its stream; the token itself
/// is never accepted in the URL, a ticket is good once, and a stream still refuses other
/// origins.
#[tokio::test]
async fn with_a_token_streams_take_one_time_tickets() {
    let token = "t0k3n-for-tests";
    let service = service(&[
        ("TOLLGATE_ADMIN_TOKEN", token),
        ("TOLLGATE_ALLOWED_ORIGINS", "http://localhost:3000"),
    ]);
    let base = format!("http://{}", service.address);
    let client = http();
    let ticket = || async {
        let answer = client
            .post(format!("{base}/admin/tickets"))
            // The scheme in any case (RFC 9110 §11.1).
            .header("authorization", format!("bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["expires_in"], 30);
        body["ticket"].as_str().unwrap().to_owned()
    };
    let unauthorized = client
        .post(format!("{base}/admin/tickets"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);

    let first = ticket().await;
    let stream = |query: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let answer = client
                .get(format!("{base}/events?{query}"))
                .header("origin", "http://localhost:3000")
                .send()
                .await
                .unwrap();
            (
                answer.status(),
                answer.headers().get("content-type").cloned(),
            )
        }
    };
    let (status, content_type) = stream(format!("ticket={first}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.unwrap(), "text/event-stream");
    assert_eq!(
        stream(format!("ticket={first}")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        stream(format!("ticket={token}")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        stream(format!("token={token}")).await.0,
        StatusCode::UNAUTHORIZED
    );

    // A WebSocket with a ticket, from a listed page.
    let second = ticket().await;
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/ws/global?ticket={second}",
            service.address
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "http://localhost:3000".parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("a WebSocket opened with a ticket");
    // A ticket does not let another site's page in.
    let third = ticket().await;
    let evil = client
        .get(format!("{base}/events?ticket={third}"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), StatusCode::FORBIDDEN);
    // Nor is a ticket the token for anything else.
    let fourth = ticket().await;
    let rules = client
        .get(format!("{base}/admin/rules?ticket={fourth}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rules.status(), StatusCode::UNAUTHORIZED);
}

/// With a check token, the decision routes need it; health and metrics do not.
#[tokio::test]
async fn the_check_token_guards_the_decision_routes() {
    let token = "check-s3cret";
    let service = service(&[("TOLLGATE_CHECK_TOKEN", token)]);
    let base = format!("http://{}", service.address);
    let client = http();
    let requests = || {
        [
            client.get(format!("{base}/check/alice")),
            client
                .post(format!("{base}/check"))
                .json(&json!({"identifier": "alice"})),
            client.get(format!("{base}/stats/alice")),
            client
                .get(format!("{base}/auth"))
                .header("x-original-method", "GET")
                .header("x-original-uri", "/api/data"),
        ]
    };
    for request in requests() {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(answer.headers()["www-authenticate"], "Bearer");
        let body: Value = answer.json().await.unwrap();
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("TOLLGATE_CHECK_TOKEN")
        );
    }
    for request in requests() {
        let wrong = request.bearer_auth("guess").send().await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    for request in requests() {
        let answer = request
            .header("authorization", format!("BEARER {token}"))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{answer:?}");
    }
    for open in ["/health", "/metrics", "/openapi.json"] {
        let answer = client.get(format!("{base}{open}")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{open}");
    }
}

/// `POST /check` decides a path by its normal form, and refuses one another server could
/// read otherwise.
#[tokio::test]
async fn check_paths_are_decided_by_their_normal_form() {
    let rules = tempfile::tempdir().unwrap();
    let file = rules.path().join("rate_limits.json");
    std::fs::write(
        &file,
        r#"{"default": {"limit": "100/day"},
            "routes": [{"path": "/static/{*rest}", "unlimited": true},
                       {"path": "/api/data", "limit": "3/day"}]}"#,
    )
    .unwrap();
    let service = start_service(&[("RATE_LIMIT_RULES_PATH", file.to_str().unwrap())]);
    let base = format!("http://{}", service.address);
    let check = |path: &str| {
        http()
            .post(format!("{base}/check"))
            .json(&json!({"identifier": "mallory", "path": path}))
            .send()
    };
    for path in ["/static/../api/data", "/api/%64ata", "/api//data"] {
        let answer = check(path).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["rule"], "/api/data", "{path}");
    }
    assert_eq!(
        check("/api/./data").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    for path in ["/static/..%2Fapi/data", "/../api/data", "/api/data#x"] {
        let answer = check(path).await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["detail"][0]["loc"], json!(["body", "path"]), "{body}");
    }
}

/// With `ADMIN_ADDR`, the admin API is served there only, and the decisions on `PORT` only.
#[tokio::test]
async fn admin_addr_serves_the_admin_api_apart() {
    let service = service(&[("ADMIN_ADDR", "127.0.0.1:0")]);
    let admin = service
        .startup_log
        .iter()
        .find_map(|line| line.split("admin API on http://").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no admin address logged: {:?}", service.startup_log))
        .to_owned();
    let decisions = format!("http://{}", service.address);
    let admin = format!("http://{admin}");
    let status = |url: String| async move { http().get(url).send().await.unwrap().status() };
    assert_eq!(status(format!("{decisions}/check/k")).await, StatusCode::OK);
    assert_eq!(
        status(format!("{admin}/check/k")).await,
        StatusCode::NOT_FOUND
    );
    for path in ["/admin/rules", "/admin/stats", "/dashboard", "/metrics"] {
        assert_eq!(
            status(format!("{admin}{path}")).await,
            StatusCode::OK,
            "{path}"
        );
        assert_eq!(
            status(format!("{decisions}{path}")).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for both in ["/health", "/openapi.json"] {
        assert_eq!(status(format!("{admin}{both}")).await, StatusCode::OK);
        assert_eq!(status(format!("{decisions}{both}")).await, StatusCode::OK);
    }
    let configure = http()
        .post(format!("{decisions}/configure"))
        .json(&json!({"key": "k", "limit": "1/day"}))
        .send()
        .await
        .unwrap();
    assert_eq!(configure.status(), StatusCode::NOT_FOUND);
}
