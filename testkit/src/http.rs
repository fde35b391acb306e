//! Layers built for tests, the demo's routes behind them, and sending requests through them
//! (`oneshot`, or real HTTP on a bound listener).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::routing::{get, post};
use tollgate::{Limiter, RateLimitLayer, Rules};
use tower::ServiceExt;

use super::redis::TestRedis;

/// A real HTTP client for a test's server: no proxy, 10 s at most per request.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `POST /check` with `body` to the service at `base` (`host:port`): its status and JSON body.
pub async fn post_check(
    base: &str,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let response = http()
        .post(format!("http://{base}/check"))
        .json(&body)
        .send()
        .await
        .expect("an answer");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

/// `GET url`'s JSON body.
pub async fn get_json(url: &str) -> serde_json::Value {
    http()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// `GET {base}/metrics`: the Prometheus text of a service at `base` (`http://host:port`).
pub async fn metrics_text(base: &str) -> String {
    http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("a text body")
}

/// The value of the unlabelled metric `name` in [`metrics_text`], 0 if it is not there.
pub async fn metric(base: &str, name: &str) -> u64 {
    metrics_text(base)
        .await
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Which backend a test runs against.
pub enum Store<'a> {
    Memory,
    Redis(&'a TestRedis, String),
}

pub async fn layer(store: &Store<'_>, rules: Rules) -> RateLimitLayer {
    assert!(
        matches!(store, Store::Memory) || rules.on_redis_error().is_none(),
        "rules for Redis tests must not set on_redis_error: it would override failing closed"
    );
    let builder = Limiter::builder().rules(rules);
    let builder = match store {
        Store::Memory => builder,
        Store::Redis(redis, prefix) => on_test_redis(builder, redis, prefix),
    };
    builder
        .build_layer()
        .await
        .unwrap_or_else(|e| panic!("build layer: {e}"))
}

/// `builder` deciding on `redis` under `prefix`, for tests of decisions: a generous
/// deadline, and failing closed, since a failed Redis call must not pass for a decision (the
/// local fallback would give the same answers; a 503 does not).
pub fn on_test_redis(
    builder: tollgate::LimiterBuilder,
    redis: &TestRedis,
    prefix: &str,
) -> tollgate::LimiterBuilder {
    builder
        .redis_url(redis.url())
        .redis_prefix(prefix)
        .redis_timeout(Duration::from_secs(5))
        .on_redis_error(tollgate::OnRedisError::Deny)
}

/// Builds a limiter and puts the default layer in front of it, for tests that only send
/// requests through the layer.
pub trait BuildLayer {
    fn build_layer(
        self,
    ) -> impl Future<Output = Result<RateLimitLayer, tollgate::BuildError>> + Send;
}

impl BuildLayer for tollgate::LimiterBuilder {
    async fn build_layer(self) -> Result<RateLimitLayer, tollgate::BuildError> {
        Ok(RateLimitLayer::new(self.build().await?))
    }
}

/// The demo's routes behind `layer`.
pub fn app(layer: RateLimitLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "root" }))
        .route("/api/data", get(|| async { "data" }))
        .route(
            "/api/submit",
            post(|body: String| async move { body }).get(|| async { "form" }),
        )
        .route("/api/users/{id}", get(|| async { "user" }))
        .route("/health", get(|| async { "ok" }))
        .route("/static/{*rest}", get(|| async { "file" }))
        .layer(layer)
}

pub fn request(method: &str, path: &str, client: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(client) = client {
        builder = builder.header("x-client-id", client);
    }
    builder.body(Body::empty()).expect("test request")
}

/// Sends one request through the app (oneshot).
pub async fn send(app: &Router, request: Request<Body>) -> Response<Body> {
    app.clone().oneshot(request).await.expect("infallible")
}

pub fn header<'a, B>(response: &'a Response<B>, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header"))
}

/// A header of a response received over HTTP.
pub fn reqwest_header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_owned())
}

/// A numeric header of a response received over HTTP.
pub fn reqwest_number<T: std::str::FromStr>(response: &reqwest::Response, name: &str) -> Option<T> {
    reqwest_header(response, name).and_then(|v| v.parse().ok())
}

pub fn remaining<B>(response: &Response<B>) -> Option<u32> {
    header(response, "x-ratelimit-remaining").map(|v| v.parse().expect("integer"))
}

pub async fn body_json(response: Response<Body>) -> serde_json::Value {
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    serde_json::from_slice(&bytes).expect("JSON body")
}

/// Status codes of `n` requests sent one after another.
pub async fn statuses(app: &Router, n: usize, make: impl Fn() -> Request<Body>) -> Vec<StatusCode> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(send(app, make()).await.status());
    }
    out
}

/// Sends requests one after another (`send(n)` sends the n-th) to a bucket of `capacity`
/// refilled at `refill_per_sec` until one is refused; returns how many were admitted. The
/// first `capacity` must be admitted, and no more than the tokens that came back while the
/// requests ran: exactly `capacity` when they take less than one refill, a few more when a
/// busy machine slows them.
pub async fn admitted_until_refused(
    capacity: usize,
    refill_per_sec: f64,
    mut send: impl AsyncFnMut(usize) -> StatusCode,
) -> usize {
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    loop {
        let status = send(statuses.len()).await;
        statuses.push(status);
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(status, StatusCode::OK, "{statuses:?}");
        let refilled = (started.elapsed().as_secs_f64() * refill_per_sec).ceil() as usize;
        assert!(
            statuses.len() <= capacity + refilled,
            "{} admitted in {:?}: more than a bucket of {capacity} refilled at {refill_per_sec}/s \
             holds: {statuses:?}",
            statuses.len(),
            started.elapsed()
        );
    }
    let admitted = statuses.len() - 1;
    assert!(
        admitted >= capacity,
        "refused after {admitted}, before the bucket of {capacity} was spent: {statuses:?}"
    );
    admitted
}

/// Serves `layer` in front of [`app`] on a free loopback port, with the peer address
/// available to the layer; returns the base URL.
pub async fn serve(layer: RateLimitLayer) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = app(layer).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// Sends `n` requests for one client at once, spread over `instances` in turn; returns how
/// many were admitted and how many refused (anything else fails the test).
pub async fn concurrent_admissions(instances: &[Router], n: usize) -> (usize, usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let app = instances[i % instances.len()].clone();
            tokio::spawn(async move {
                send(&app, request("GET", "/api/data", Some("crowd")))
                    .await
                    .status()
            })
        })
        .collect();
    let (mut admitted, mut refused) = (0, 0);
    for task in tasks {
        match task.await.expect("request task") {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    (admitted, refused)
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `head` (a request line and headers, each line ending in CRLF, without the blank
/// line) and `body` as they are, with `Connection: close`, and reads the whole answer. For
/// what an HTTP client would tidy first: dot segments, a forged `Host`, odd methods.
pub fn raw_http(address: &str, head: &str, body: &str) -> RawResponse {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(address).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    write!(socket, "{head}{length}Connection: close\r\n\r\n{body}").expect("send");
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}
