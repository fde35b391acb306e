//! Test harness shared by the integration tests: a private `redis-server` per test, and
//! small helpers for sending requests through the layer.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::routing::{get, post};
pub use tollgate::Limiter;
use tollgate::{RateLimitLayer, Rules};
use tower::ServiceExt;

const INSTALL_HINT: &str = "redis-server is needed by this test but was not found on PATH. \
Install it (Debian/Ubuntu: `sudo apt-get install redis-server`; macOS: `brew install redis`).";

/// A Redis for one test: a `redis-server` process of its own on a free loopback port, in a
/// temporary directory, persisting nothing; stopped when dropped. Never a server the
/// machine already runs: tests read server-wide statistics and flush, stop and kill it.
pub struct TestRedis {
    url: String,
    port: u16,
    process: Option<Child>,
    dir: tempfile::TempDir,
}

impl TestRedis {
    pub fn start() -> Self {
        let mut last_error = String::new();
        for _ in 0..5 {
            match Self::try_spawn_on(free_port()) {
                Ok(redis) => return redis,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// A private process on this port.
    pub fn spawn_on(port: u16) -> Self {
        Self::try_spawn_on(port).unwrap_or_else(|e| panic!("redis-server did not start: {e}"))
    }

    fn try_spawn_on(port: u16) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut process = launch(port, dir.path());
        wait_for_ping(port, &mut process, Duration::from_secs(10))?;
        Ok(Self {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            process: Some(process),
            dir,
        })
    }

    /// Kills this private server (if still running) and starts an empty one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let mut process = launch(self.port, self.dir.path());
        wait_for_ping(self.port, &mut process, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("redis-server did not restart: {e}"));
        self.process = Some(process);
    }

    /// SIGKILLs this private server, leaving its port free until [`restart`](Self::restart).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends a signal (`STOP`, `CONT`, `KILL`) to this test's own redis-server.
    pub fn signal(&self, signal: &str) {
        let pid = self
            .process
            .as_ref()
            .expect("the redis-server is running")
            .id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// How many times this Redis ran EVALSHA, from its own statistics.
    pub fn evalsha_calls(&self) -> u64 {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.client())
            .unwrap();
        stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse().unwrap())
    }

    /// A synchronous connection for inspecting what the layer stored.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection())
            .expect("connect to the test redis")
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn launch(port: u16, dir: &std::path::Path) -> Child {
    launch_with(port, dir, &[])
}

fn launch_with(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    let spawned = Command::new("redis-server")
        .args(extra)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
        Err(e) => panic!("cannot run redis-server: {e}. {INSTALL_HINT}"),
    }
}

/// A real local Redis Cluster for one test: `masters` masters, each with `replicas`
/// replicas, on free loopback ports (their cluster bus ports, +10000, free too), formed with
/// `redis-cli --cluster create`. A master that dies leaves the other masters serving their
/// slots (`cluster-require-full-coverage no`); a master with replicas fails over after about
/// a second (`cluster-node-timeout 1000`). Every node is stopped when dropped.
pub struct TestCluster {
    ports: Vec<u16>,
    processes: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    pub fn start(masters: usize, replicas: usize) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for the cluster");
        let count = masters * (1 + replicas);
        let mut ports = Vec::with_capacity(count);
        while ports.len() < count {
            let port = free_port();
            let bus_free = port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
            if bus_free && !ports.contains(&port) {
                ports.push(port);
            }
        }
        let mut processes = Vec::with_capacity(count);
        for port in &ports {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir(&node_dir).expect("node directory");
            processes.push(Some(launch_node(*port, &node_dir)));
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}); install it with `apt-get install redis-tools`")
            });
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = Self {
            ports,
            processes,
            _dir: dir,
        };
        cluster.wait_until_ok(Duration::from_secs(30));
        cluster
    }

    /// Waits until every live node reports `cluster_state:ok` with all slots assigned, and
    /// every replica has synced with its master (a replica that never synced does not stand
    /// for election when its master dies).
    pub fn wait_until_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let all_ok = self.live().all(|i| {
                let info: Result<String, _> =
                    redis::cmd("CLUSTER").arg("INFO").query(&mut self.node(i));
                let replication: Result<String, _> = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut self.node(i));
                info.is_ok_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_assigned:16384")
                }) && replication
                    .is_ok_and(|r| !r.contains("role:slave") || r.contains("master_link_status:up"))
            });
            if all_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the node on `port` reports `cluster_state:ok`: it serves its slots.
    pub fn wait_until_serving(&self, port: u16, limit: Duration) {
        let node = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("a node of this cluster");
        let deadline = Instant::now() + limit;
        loop {
            let info: Result<String, _> = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut self.node(node));
            if info.is_ok_and(|info| info.contains("cluster_state:ok")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {port} does not serve after {limit:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.ports.len()).filter(|i| self.processes[*i].is_some())
    }

    /// Seed URLs, one per node.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    pub fn port(&self, node: usize) -> u16 {
        self.ports[node]
    }

    /// A direct connection to one node.
    pub fn node(&self, node: usize) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.ports[node]))
            .and_then(|c| c.get_connection())
            .expect("connect to a cluster node")
    }

    /// The port of the master serving `key`, asked of a live node.
    pub fn master_port_of(&self, key: &str) -> u16 {
        let node = self.live().next().expect("a live node");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.node(node))
            .unwrap();
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.node(node))
            .unwrap();
        let redis::Value::Array(ranges) = slots else {
            panic!("CLUSTER SLOTS: {slots:?}")
        };
        for range in ranges {
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let (redis::Value::Int(first), redis::Value::Int(last), redis::Value::Array(master)) =
                (&parts[0], &parts[1], &parts[2])
            else {
                continue;
            };
            if (*first..=*last).contains(&i64::from(slot)) {
                let redis::Value::Int(port) = master[1] else {
                    panic!("{master:?}")
                };
                return u16::try_from(port).unwrap();
            }
        }
        panic!("no master for slot {slot}");
    }

    /// The ports of the current masters.
    pub fn master_ports(&self) -> Vec<u16> {
        let node = self.live().next().expect("a live node");
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut self.node(node))
            .unwrap();
        let mut masters: Vec<u16> = nodes
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter_map(|addr| addr.split(['@', ':']).nth(1)?.parse().ok())
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The end of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.ports
            .iter()
            .map(|port| {
                let log = std::fs::read_to_string(
                    self._dir.path().join(port.to_string()).join("redis.log"),
                )
                .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(12).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- node {port}\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts the node on `port` again, after [`kill`](Self::kill), with its own
    /// `nodes.conf`: it comes back as the same node, with the slots it had.
    pub fn restart(&mut self, port: u16) {
        let node = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("a node of this cluster");
        assert!(self.processes[node].is_none(), "node {port} is running");
        let node_dir = self._dir.path().join(port.to_string());
        self.processes[node] = Some(launch_node(port, &node_dir));
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("a node of this cluster");
        if let Some(mut child) = self.processes[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One cluster node in `dir`, answering PING.
fn launch_node(port: u16, dir: &std::path::Path) -> Child {
    let mut child = launch_with(
        port,
        dir,
        &[
            "--logfile",
            "redis.log",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
            "--cluster-require-full-coverage",
            "no",
        ],
    );
    wait_for_ping(port, &mut child, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("cluster node did not start: {e}"));
    child
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in self.processes.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_for_ping(port: u16, child: &mut Child, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "redis-server exited with {status} (port {port} taken?)"
            ));
        }
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut reply = [0u8; 7];
            if stream.write_all(b"PING\r\n").is_ok()
                && stream.read_exact(&mut reply).is_ok()
                && &reply == b"+PONG\r\n"
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    Err(format!("no PONG on port {port} within {limit:?}"))
}

/// A key prefix no other test uses, so tests never share Redis state.
pub fn unique_prefix(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}-{test}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn rules(json: &str) -> Rules {
    Rules::from_json(json).unwrap_or_else(|e| panic!("test rules: {e}"))
}

pub fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
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

pub fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
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

pub fn remaining(response: &Response<Body>) -> Option<u32> {
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

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The demo example, built by `cargo test` next to this test binary.
pub fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let demo = profile_dir
        .join("examples")
        .join(format!("demo{}", std::env::consts::EXE_SUFFIX));
    let hint = "run the whole suite with `cargo test --all-features`, which builds the examples \
                (or `cargo build --all-features --examples` first, with --release for release tests)";
    let built = std::fs::metadata(&demo)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} not found: {hint}", demo.display()));
    // A demo built before the sources it comes from changed would test old code. (The
    // `tollgate` binary's sources are not the demo's.)
    let newest_source = newest_files(&repo_file("src"))
        .into_iter()
        .filter(|(_, path)| !path.starts_with(repo_file("src/bin")))
        .chain(newest_files(&repo_file("examples")))
        .max();
    if let Some((changed, source)) = newest_source {
        assert!(
            changed <= built,
            "{} is older than {}: {hint}",
            demo.display(),
            source.display()
        );
    }
    demo
}

/// The files under `dir` (recursively) with their modification times.
fn newest_files(dir: &std::path::Path) -> Vec<(std::time::SystemTime, PathBuf)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(newest_files(&path));
        } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
            found.push((modified, path));
        }
    }
    found
}

pub struct Demo {
    pub child: Child,
    pub address: String,
    /// What it logged before it listened.
    pub startup_log: Vec<String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the demo on a free port and waits for its "listening on" line.
pub fn start_demo(envs: &[(&str, &str)]) -> Demo {
    let mut child = Command::new(demo_binary())
        .env_clear()
        .env("PORT", "0")
        .env("NO_COLOR", "1")
        .env("RATE_LIMIT_RULES_PATH", repo_file("rate_limits.json"))
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let address = rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .to_owned();
            return Demo {
                child,
                address,
                startup_log: log,
            };
        }
        log.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("demo did not start:\n{}", log.join("\n"));
}

/// A TCP server that is not Redis, on a port where the layer expects one: it answers every
/// connection with `reply` (once something arrives, or at once) and closes it. Stops when
/// dropped, freeing the port.
pub struct WrongServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WrongServer {
    /// What an HTTP server answers to a Redis command.
    pub const HTTP_400: &'static [u8] =
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    /// Bytes that are no protocol at all.
    pub const GARBAGE: &'static [u8] = b"\x9c\x01\xffz\x00\x13\x80garbage\x07\xfe\r\n\x01\x02";

    pub fn start(port: u16, reply: &'static [u8]) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("the wrong server cannot listen on {port}: {e}"));
        listener.set_nonblocking(true).expect("non-blocking accept");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
                        let mut request = [0u8; 512];
                        let _ = stream.read(&mut request);
                        let _ = stream.write_all(reply);
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for WrongServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The decision script, as the backend runs it.
pub const DECIDE_LUA: &str = include_str!("../../src/backend/redis/decide.lua");

/// `decide.lua` called directly, as the README documents it.
pub fn decide(c: &mut redis::Connection, key: &str, spec: &[u8]) -> Vec<i64> {
    redis::Script::new(DECIDE_LUA)
        .key(key)
        .arg(spec)
        .invoke(c)
        .unwrap()
}

/// One request's script argument: algorithm, cost, lease units, lease µs, then (capacity,
/// second parameter) per band; no deadline.
pub fn spec(algorithm: u8, cost: f64, lease: f64, lease_us: f64, bands: &[(f64, f64)]) -> Vec<u8> {
    spec_with_deadline(algorithm, cost, lease, lease_us, 0.0, bands)
}

/// [`spec`] with a deadline, in µs of Redis `TIME` (0: none).
pub fn spec_with_deadline(
    algorithm: u8,
    cost: f64,
    lease: f64,
    lease_us: f64,
    deadline_us: f64,
    bands: &[(f64, f64)],
) -> Vec<u8> {
    // The algorithm, then the flags: none (a peek would be 1).
    let mut spec = vec![algorithm, 0];
    for value in [cost, lease, lease_us, deadline_us] {
        spec.extend(value.to_le_bytes());
    }
    spec.push(u8::try_from(bands.len()).expect("at most 8 bands"));
    for (capacity, second) in bands {
        spec.extend(capacity.to_le_bytes());
        spec.extend(second.to_le_bytes());
    }
    spec
}

/// Builds a limiter and puts the default layer in front of it, for tests that only send
/// requests through the layer.
pub trait BuildLayer {
    async fn build_layer(self) -> Result<RateLimitLayer, tollgate::BuildError>;
}

impl BuildLayer for tollgate::LimiterBuilder {
    async fn build_layer(self) -> Result<RateLimitLayer, tollgate::BuildError> {
        Ok(RateLimitLayer::new(self.build().await?))
    }
}
