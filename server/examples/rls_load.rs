//! The load generator `bench/envoy.sh` runs: `ShouldRateLimit` calls against Envoy's rate
//! limit service (gRPC), or the same decisions through the HTTP API's `POST /check`, as
//! fast as the answers come back.
//!
//! ```text
//! cargo run --release -p tollgate-server --example rls_load -- grpc 127.0.0.1:8081 --concurrency 64
//! cargo run --release -p tollgate-server --example rls_load -- http 127.0.0.1:8000 --concurrency 64
//! ```
//!
//! Both protocols ask the same thing: client `key-N` (N in turn over `--keys`) under the
//! rule of descriptor `client_id` in domain `bench` (`{"key": "client_id", ...}` in the
//! rules file's `descriptors`), as the gRPC descriptor `[("client_id", "key-N")]` or as
//! `{"identifier": "key-N", "rule": "@bench/client_id"}`. `limitador-http` asks the same of
//! limitador-server's `POST /check_and_report` (`{"namespace": "bench", "values":
//! {"client_id": "key-N"}, "delta": 1}`), for `bench/limitador_server.sh`. Calls during `--warmup` are not
//! counted. With `--server-pid`, the server's CPU time (user + system, from
//! `/proc/PID/stat`) over the measured window is divided by the calls answered in it.
//!
//! The last line is for scripts: `calls/s p50_ms p99_ms ok over_limit errors calls
//! server_cpu_us_per_call client_cpu_us_per_call` (`-` for a CPU time not measured).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tonic::transport::{Channel, Endpoint};

const DOMAIN: &str = "bench";
const DESCRIPTOR_KEY: &str = "client_id";
/// The identity `tollgate check-rules` gives the rule of `DESCRIPTOR_KEY` in `DOMAIN`.
const RULE: &str = "@bench/client_id";

#[derive(Parser)]
struct Args {
    /// The protocol: Envoy's rate limit service, or the HTTP API's `POST /check`.
    protocol: Protocol,
    /// The server's address, HOST:PORT.
    address: String,
    /// Calls in flight at any time.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// gRPC: HTTP/2 connections the calls share (default: one per 16 calls in flight).
    #[arg(long)]
    channels: Option<usize>,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Clients, asked in turn.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// The server's process, whose CPU time per call is reported.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    Grpc,
    Http,
    /// limitador-server's `POST /check_and_report`, asking the same of a limit in namespace
    /// `bench` keyed by `descriptors[0].client_id`: the HTTP side of the comparison with it.
    LimitadorHttp,
}

/// What one call came back with.
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    OverLimit,
    Error,
}

/// Where the run is: answers are counted only while `MEASURING`.
const WARMING_UP: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

/// One caller's tally over the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok: u64,
    over_limit: u64,
    errors: u64,
}

/// The calls one protocol makes: each answers the call for key number `n`.
#[derive(Clone)]
enum Caller {
    Grpc {
        client: RateLimitServiceClient<Channel>,
        requests: Arc<[RateLimitRequest]>,
    },
    Http {
        // Boxed: the client is twice the size of the gRPC variant.
        client: Box<Client<HttpConnector, Full<Bytes>>>,
        uri: http::Uri,
        bodies: Arc<[Bytes]>,
    },
}

impl Caller {
    async fn call(&mut self, n: usize) -> Answer {
        match self {
            Caller::Grpc { client, requests } => {
                let request = requests[n % requests.len()].clone();
                match client.should_rate_limit(request).await {
                    Ok(response) if response.get_ref().overall_code == i32::from(Code::Ok) => {
                        Answer::Ok
                    }
                    Ok(response)
                        if response.get_ref().overall_code == i32::from(Code::OverLimit) =>
                    {
                        Answer::OverLimit
                    }
                    _ => Answer::Error,
                }
            }
            Caller::Http {
                client,
                uri,
                bodies,
            } => {
                let request = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(bodies[n % bodies.len()].clone()))
                    .expect("a valid request");
                let Ok(response) = client.request(request).await else {
                    return Answer::Error;
                };
                let status = response.status();
                // Read to the end, so that the connection goes back to the pool.
                if response.into_body().collect().await.is_err() {
                    return Answer::Error;
                }
                match status {
                    http::StatusCode::OK => Answer::Ok,
                    http::StatusCode::TOO_MANY_REQUESTS => Answer::OverLimit,
                    _ => Answer::Error,
                }
            }
        }
    }
}

fn key(n: usize) -> String {
    format!("key-{n}")
}

/// One caller per call in flight; gRPC callers share `channels` connections.
async fn callers(args: &Args) -> Result<Vec<Caller>, Box<dyn std::error::Error>> {
    match args.protocol {
        Protocol::Grpc => {
            let requests: Arc<[RateLimitRequest]> = (0..args.keys)
                .map(|n| RateLimitRequest {
                    domain: DOMAIN.into(),
                    descriptors: vec![RateLimitDescriptor {
                        entries: vec![Entry {
                            key: DESCRIPTOR_KEY.into(),
                            value: key(n),
                        }],
                        ..RateLimitDescriptor::default()
                    }],
                    hits_addend: 1,
                })
                .collect();
            let channels = args
                .channels
                .unwrap_or(args.concurrency.div_ceil(16))
                .max(1);
            let mut clients = Vec::with_capacity(channels);
            for _ in 0..channels {
                // Each `connect` opens its own HTTP/2 connection.
                let channel = Endpoint::from_shared(format!("http://{}", args.address))?
                    .tcp_nodelay(true)
                    .connect()
                    .await?;
                clients.push(RateLimitServiceClient::new(channel));
            }
            Ok((0..args.concurrency)
                .map(|i| Caller::Grpc {
                    client: clients[i % channels].clone(),
                    requests: requests.clone(),
                })
                .collect())
        }
        Protocol::Http | Protocol::LimitadorHttp => {
            let limitador = args.protocol == Protocol::LimitadorHttp;
            let bodies: Arc<[Bytes]> = (0..args.keys)
                .map(|n| {
                    let body = if limitador {
                        serde_json::json!({"namespace": DOMAIN, "values": {DESCRIPTOR_KEY: key(n)}, "delta": 1})
                    } else {
                        serde_json::json!({"identifier": key(n), "rule": RULE})
                    };
                    Bytes::from(body.to_string())
                })
                .collect();
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            // One HTTP/1.1 connection per call in flight, as the pool opens them.
            let client = Client::builder(TokioExecutor::new()).build(connector);
            let path = if limitador {
                "check_and_report"
            } else {
                "check"
            };
            let uri: http::Uri = format!("http://{}/{path}", args.address).parse()?;
            Ok((0..args.concurrency)
                .map(|_| Caller::Http {
                    client: Box::new(client.clone()),
                    uri: uri.clone(),
                    bodies: bodies.clone(),
                })
                .collect())
        }
    }
}

/// User + system CPU time of process `pid` ("self" for this one), from `/proc/PID/stat`.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which sits in parentheses and may hold spaces:
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|t| *t > 0)?;
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

fn percentile_ms(sorted_us: &[u32], fraction: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let index = ((sorted_us.len() as f64 * fraction).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[index - 1]) / 1000.0
}

fn per_call_us(spent: Option<Duration>, calls: u64) -> String {
    match spent {
        Some(spent) if calls > 0 => format!("{:.2}", spent.as_secs_f64() * 1e6 / calls as f64),
        _ => "-".into(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let phase = Arc::new(AtomicU8::new(WARMING_UP));
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = callers(&args)
        .await?
        .into_iter()
        .map(|mut caller| {
            let phase = phase.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let answer = caller.call(n).await;
                    match phase.load(Ordering::Relaxed) {
                        MEASURING => {}
                        STOPPED => return tally,
                        _ => continue,
                    }
                    let micros = started.elapsed().as_micros();
                    tally
                        .latencies_us
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
                    match answer {
                        Answer::Ok => tally.ok += 1,
                        Answer::OverLimit => tally.over_limit += 1,
                        Answer::Error => tally.errors += 1,
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let server = args.server_pid.map(|pid| pid.to_string());
    let server_before = server.as_deref().and_then(cpu_time);
    let client_before = cpu_time("self");
    let started = Instant::now();
    phase.store(MEASURING, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    phase.store(STOPPED, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let server_spent = server
        .as_deref()
        .and_then(cpu_time)
        .zip(server_before)
        .map(|(after, before)| after.saturating_sub(before));
    let client_spent = cpu_time("self")
        .zip(client_before)
        .map(|(after, before)| after.saturating_sub(before));

    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await?;
        total.latencies_us.extend(tally.latencies_us);
        total.ok += tally.ok;
        total.over_limit += tally.over_limit;
        total.errors += tally.errors;
    }
    total.latencies_us.sort_unstable();
    let calls = total.latencies_us.len() as u64;
    let rate = calls as f64 / elapsed.as_secs_f64();
    let p50 = percentile_ms(&total.latencies_us, 0.50);
    let p99 = percentile_ms(&total.latencies_us, 0.99);
    let server_per_call = per_call_us(server_spent, calls);
    let client_per_call = per_call_us(client_spent, calls);
    eprintln!(
        "{rate:.0} calls/s, p50 {p50:.3} ms, p99 {p99:.3} ms, ok {}, over limit {}, errors {}, \
         server CPU {server_per_call} µs/call, client CPU {client_per_call} µs/call",
        total.ok, total.over_limit, total.errors
    );
    println!(
        "{rate:.1} {p50:.3} {p99:.3} {} {} {} {calls} {server_per_call} {client_per_call}",
        total.ok, total.over_limit, total.errors
    );
    Ok(())
}
