//! A private `redis-server` per test, a server that is not Redis for fault tests, and the
//! decision script called directly.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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

/// The server the tests start: `redis-server`, or the Redis-protocol server that
/// `TOLLGATE_TEST_REDIS_SERVER` names (a path to `valkey-server`, say), to run the Redis
/// suites against it (see docs/stores.md).
fn server_binary() -> String {
    std::env::var("TOLLGATE_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

pub(super) fn launch_with(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    let spawned = Command::new(server_binary())
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub(super) fn wait_for_ping(port: u16, child: &mut Child, limit: Duration) -> Result<(), String> {
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

/// `decide.lua` called directly, as the README documents it; its reply as numbers.
pub fn decide(c: &mut redis::Connection, key: &str, spec: &[u8]) -> Vec<i64> {
    let reply: Vec<u8> = redis::Script::new(DECIDE_LUA)
        .key(key)
        .arg(spec)
        .invoke(c)
        .unwrap();
    values(&reply)
}

/// A script reply's values: little-endian doubles, each an integer.
pub fn values(reply: &[u8]) -> Vec<i64> {
    assert_eq!(reply.len() % 8, 0, "a reply of whole doubles: {reply:?}");
    reply
        .chunks_exact(8)
        .map(|bytes| {
            let value = f64::from_le_bytes(bytes.try_into().unwrap());
            assert_eq!(value.fract(), 0.0, "an integer: {value}");
            value as i64
        })
        .collect()
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
    // The algorithm, then the flags: none (a peek would be 1). No reservation: its key's
    // index and lifetime are 0.
    let mut spec = vec![algorithm, 0];
    for value in [cost, lease, lease_us, deadline_us, 0.0, 0.0] {
        spec.extend(value.to_le_bytes());
    }
    spec.push(u8::try_from(bands.len()).expect("at most 8 bands"));
    for (capacity, second) in bands {
        spec.extend(capacity.to_le_bytes());
        spec.extend(second.to_le_bytes());
    }
    spec
}
