//! `tollgate serve`'s connections under hostile clients, on the real binary over loopback: a
//! connection that sends nothing (HTTP and gRPC), a request head sent byte by byte, a body
//! sent slowly, a client that stops reading, kept-alive HTTP and gRPC connections left idle,
//! and more idle connections than the cap on both ports while a probe is still answered; the
//! open files limit raised and logged. Each bound is set short through its environment
//! variable, so the tests stay quick.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `ShouldRateLimit` call with one descriptor, `remote_address` = `address`.
fn one_call(address: &str) -> RateLimitRequest {
    RateLimitRequest {
        domain: "edge".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "remote_address".into(),
                value: address.into(),
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 0,
    }
}

/// Waits until the server closes `stream` (EOF or reset), reading whatever it sent before;
/// panics if it is still open after `within`. Returns when it closed and what it sent.
async fn closed(stream: &mut TcpStream, within: Duration) -> (Instant, String) {
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    let deadline = Instant::now() + within;
    loop {
        let read = tokio::time::timeout_at(deadline.into(), stream.read(&mut buffer))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "still open after {within:?}; received {:?}",
                    String::from_utf8_lossy(&received)
                )
            });
        match read {
            Ok(0) | Err(_) => return (Instant::now(), String::from_utf8_lossy(&received).into()),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Reads one HTTP/1.1 answer (head and `Content-Length` body) off `stream`.
async fn answer(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut byte = [0];
    while !received.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("an answer within 10 s")
            .expect("the connection open");
        assert_eq!(read, 1, "closed in the middle of an answer: {received:?}");
        received.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&received).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|n| n.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.expect("the body");
    head + &String::from_utf8_lossy(&body)
}

/// Asserts `elapsed` is past half of `bound` (the connection was not closed at once, nor by
/// a shorter bound) and at most `bound` plus a margin for a busy machine.
fn near(elapsed: Duration, bound: Duration, what: &str) {
    assert!(
        elapsed >= bound / 2 && elapsed < bound + Duration::from_secs(6),
        "{what}: closed after {elapsed:?}, the bound being {bound:?}"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let service = start_service(&[("HTTP_HANDSHAKE_TIMEOUT_MS", "1500")]);
    let grpc = service.grpc_address();
    let bound = Duration::from_millis(1500);
    let opened = Instant::now();
    let mut http = TcpStream::connect(&service.address).await.unwrap();
    let mut grpc_silent = TcpStream::connect(&grpc).await.unwrap();
    // The HTTP/2 preface alone, without the SETTINGS that complete the handshake.
    let mut grpc_preface = TcpStream::connect(&grpc).await.unwrap();
    grpc_preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    for (stream, what) in [
        (&mut http, "HTTP, silent"),
        (&mut grpc_silent, "gRPC, silent"),
        (&mut grpc_preface, "gRPC, preface only"),
    ] {
        let (at, _) = closed(stream, Duration::from_secs(20)).await;
        near(at - opened, bound, what);
    }
}

#[tokio::test]
async fn a_request_head_sent_byte_by_byte_is_closed_after_the_header_timeout() {
    // The handshake bound is long: what closes the connection is the head's.
    let service = start_service(&[
        ("HTTP_HEADER_TIMEOUT_MS", "2000"),
        ("HTTP_HANDSHAKE_TIMEOUT_MS", "60000"),
    ]);
    let stream = TcpStream::connect(&service.address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: tollgate\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(40)
    );
    let started = Instant::now();
    // One byte a second: the whole head would take over a minute.
    let slowloris = tokio::spawn(async move {
        for byte in head.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut buffer = [0; 1024];
    let read = tokio::time::timeout(Duration::from_secs(30), reader.read(&mut buffer))
        .await
        .expect("closed within 30 s");
    slowloris.abort();
    assert!(matches!(read, Ok(0) | Err(_)), "answered: {read:?}");
    near(started.elapsed(), Duration::from_secs(2), "a slow head");
}

#[tokio::test]
async fn a_kept_alive_connection_outlives_the_header_timeout_but_not_the_idle_one() {
    let service = start_service(&[
        ("HTTP_HEADER_TIMEOUT_MS", "1000"),
        ("HTTP_IDLE_TIMEOUT_MS", "3000"),
    ]);
    let mut stream = TcpStream::connect(&service.address).await.unwrap();
    let request = b"GET /health HTTP/1.1\r\nHost: tollgate\r\n\r\n";
    stream.write_all(request).await.unwrap();
    assert!(answer(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Idle for twice the header timeout: still open, and served again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stream.write_all(request).await.unwrap();
    assert!(answer(&mut stream).await.starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    let (at, sent) = closed(&mut stream, Duration::from_secs(20)).await;
    assert_eq!(sent, "", "nothing more is sent before closing");
    near(
        at - answered,
        Duration::from_secs(3),
        "an idle kept-alive connection",
    );
}

#[tokio::test]
async fn a_slow_body_is_answered_408_and_its_connection_closed() {
    let service = start_service(&[("HTTP_BODY_TIMEOUT_MS", "2000")]);
    let stream = TcpStream::connect(&service.address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let body = r#"{"identifier": "slow-body-client-000"}"#;
    let head = format!(
        "POST /check HTTP/1.1\r\nHost: tollgate\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // A byte every half second: the body would take 20 s.
    let slow = tokio::spawn(async move {
        for byte in body.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut received))
        .await
        .unwrap_or_else(|_| panic!("still open after 30 s; received {received:?}"))
        .expect("the answer, then the connection closed");
    slow.abort();
    let answer = String::from_utf8_lossy(&received);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("HTTP_BODY_TIMEOUT_MS"), "{answer}");
    near(started.elapsed(), Duration::from_secs(2), "a slow body");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    let service = start_service(&[("HTTP_SEND_TIMEOUT_MS", "2000")]);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket
        .connect(service.address.parse().unwrap())
        .await
        .unwrap();
    // Far more answer than loopback's buffers hold, asked for at once and never read.
    let request = format!(
        "GET /openapi.json HTTP/1.1\r\nHost: {}\r\n\r\n",
        service.address
    );
    let asked = Instant::now();
    stream
        .write_all(request.repeat(200).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Reading now drains what was sent; a connection left open would then be sent the
    // rest and stay open, kept alive.
    let (at, sent) = closed(&mut stream, Duration::from_secs(15)).await;
    let answers = sent.matches("HTTP/1.1 200").count();
    assert!(answers < 200, "every answer was sent: nothing was cut off");
    println!(
        "closed {:?} after asking, {answers} answers sent",
        at - asked
    );
}

/// A gRPC connection that has made its calls and gone quiet is closed after the idle bound
/// (a GOAWAY, then the socket): the service's open sockets go back to what they were.
#[tokio::test]
async fn an_idle_grpc_connection_is_closed_after_the_idle_timeout() {
    let service = start_service(&[("HTTP_IDLE_TIMEOUT_MS", "2000")]);
    let pid = service.child.id();
    let before = open_files(pid);
    let mut client = RateLimitServiceClient::connect(format!("http://{}", service.grpc_address()))
        .await
        .expect("a gRPC connection");
    let call = one_call("192.0.2.10");
    client.should_rate_limit(call).await.expect("an answer");
    let answered = Instant::now();
    assert_eq!(open_files(pid), before + 1, "the connection's socket");
    while open_files(pid) > before {
        assert!(
            answered.elapsed() < Duration::from_secs(10),
            "the idle gRPC connection is still open after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    near(
        answered.elapsed(),
        Duration::from_secs(2),
        "an idle gRPC connection",
    );
}

/// The open files limit of process `pid`: (soft, hard), from `/proc`.
fn open_files_limit(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut numbers = line.split_whitespace().filter_map(|word| {
        word.parse::<u64>()
            .ok()
            .or((word == "unlimited").then_some(u64::MAX))
    });
    (numbers.next().unwrap(), numbers.next().unwrap())
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc fds")
        .count()
}

#[tokio::test]
async fn the_soft_open_files_limit_is_raised_to_the_hard_one_and_logged() {
    let (_, own_hard) = open_files_limit(std::process::id());
    let hard = own_hard.min(65_536);
    assert!(
        hard > 512,
        "this test needs a hard open files limit above 512 (ulimit -H -n), not {own_hard}"
    );
    let service = start_service_with_open_files(256, hard, &[]);
    let log = service.startup_log.join("\n");
    assert!(
        log.contains(&format!("raised from 256 to {hard} (the hard limit)")),
        "{log}"
    );
    assert_eq!(open_files_limit(service.child.id()), (hard, hard));
    let cap = hard - hard / 4;
    assert!(log.contains(&format!("at most {cap} connections")), "{log}");
}

#[tokio::test]
async fn idle_connections_past_the_cap_on_both_ports_leave_room_for_a_probe() {
    // Soft and hard equal: raising the limit makes no room, only the cap does.
    let limit = 160;
    let cap = 120; // 160 less a quarter
    let service = start_service_with_open_files(
        limit,
        limit,
        &[
            // Long, so that only the cap's closing of idle connections can make room.
            ("HTTP_HANDSHAKE_TIMEOUT_MS", "120000"),
            ("HTTP_IDLE_TIMEOUT_MS", "120000"),
        ],
    );
    let log = service.startup_log.join("\n");
    assert!(
        log.contains(&format!("open files limit {limit}"))
            && log.contains(&format!("at most {cap} connections")),
        "{log}"
    );
    let pid = service.child.id();
    let grpc = service.grpc_address();
    // 200 idle connections on each port, each port's alone more than the cap, and more
    // than the cap and the listen backlog (128) together: without room made, connecting
    // times out, as every new request did in the issue.
    let mut idle = Vec::new();
    for address in [&service.address, &grpc] {
        for _ in 0..200 {
            let connect = TcpStream::connect(address);
            let connected = tokio::time::timeout(Duration::from_secs(10), connect)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{} connections in, the next was not accepted within 10 s",
                        idle.len()
                    )
                });
            idle.push(connected.expect("connect"));
        }
    }
    let started = Instant::now();
    let health = http()
        .get(format!("http://{}/health", service.address))
        .send()
        .await
        .expect("the probe answered");
    assert_eq!(health.status(), 200);
    let mut client = RateLimitServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("a gRPC connection");
    let call = one_call("192.0.2.9");
    let answered = tokio::time::timeout(Duration::from_secs(10), client.should_rate_limit(call))
        .await
        .expect("a gRPC answer within 10 s");
    answered.expect("a gRPC answer");
    println!(
        "HTTP and gRPC probes answered in {:?} past 400 idle connections",
        started.elapsed()
    );
    let held = open_files(pid);
    assert!(
        held < limit as usize,
        "the service holds {held} files, at its limit of {limit}"
    );
    drop(idle);
}
