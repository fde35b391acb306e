//! Redis failures under load: real redis-server processes that the tests kill, stop,
//! restart and flush while concurrent clients send real HTTP requests through the layer.
//!
//! Run with `--nocapture` to see the measured worst latency and recovery time of each run
//! (they are recorded in docs/PERFORMANCE.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use testkit::*;
use tollgate::{BreakerState, OnRedisError, RateLimitLayer};

const DEADLINE: Duration = Duration::from_millis(50);
/// What a request may take beyond the deadline on a shared, noisy two-core machine (205 ms
/// in all were seen with two CPU hogs and other builds running). Still well under the
/// second a fault lasts, which a request waiting on Redis would take.
const MARGIN: Duration = Duration::from_millis(350);
/// Redis's limit; the local fallback's is a quarter of it (four instances).
const REDIS_LIMIT: u32 = 1000;
const LOCAL_LIMIT: u32 = 250;
const RULES: &str = r#"{"default": {"capacity": 1000, "refill_rate": 1000}}"#;

#[derive(Debug, Clone)]
struct Sample {
    /// When the request was sent, since the run began.
    sent: Duration,
    latency: Duration,
    status: Option<StatusCode>,
    limit: Option<u32>,
    retry_after: Option<u64>,
}

impl Sample {
    fn decided_by_redis(&self) -> bool {
        self.limit == Some(REDIS_LIMIT)
    }

    /// Whether the request took at least the decision deadline: on a loaded machine, a
    /// healthy Redis's answer may come too late, and the failure policy then answers,
    /// rightly. One that was quicker had no reason not to be Redis's.
    fn missed_the_deadline(&self) -> bool {
        self.latency >= DEADLINE
    }
}

async fn fault_layer(redis_url: &str, policy: OnRedisError) -> RateLimitLayer {
    Limiter::builder()
        .rules(rules(RULES))
        .redis_url(redis_url)
        .redis_prefix(unique_prefix("faults"))
        .redis_timeout(DEADLINE)
        .on_redis_error(policy)
        .local_fallback_instances(4)
        .build_layer()
        .await
        .unwrap()
}

async fn probe(http: &reqwest::Client, base: &str, client: &str, began: Instant) -> Sample {
    let sent = began.elapsed();
    let started = Instant::now();
    let response = http
        .get(format!("{base}/api/data"))
        .header("x-client-id", client)
        .send()
        .await;
    let latency = started.elapsed();
    match response {
        Ok(response) => Sample {
            sent,
            latency,
            status: Some(response.status()),
            limit: reqwest_number(&response, "x-ratelimit-limit"),
            retry_after: reqwest_number(&response, "retry-after"),
        },
        Err(_) => Sample {
            sent,
            latency,
            status: None,
            limit: None,
            retry_after: None,
        },
    }
}

/// Concurrent clients sending requests back to back until stopped (or for 20 s at most).
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

impl Load {
    fn start(base: &str, clients: usize, began: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cap = Instant::now() + Duration::from_secs(20);
        let tasks = (0..clients)
            .map(|i| {
                let (base, stop) = (base.to_owned(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let http = reqwest::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .build()
                        .unwrap();
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < cap {
                        samples.push(probe(&http, &base, &format!("load-{i}"), began).await);
                    }
                    samples
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.expect("load task"));
        }
        all
    }
}

/// Whether a response is what `policy` answers when Redis cannot decide.
fn is_policy_answer(policy: OnRedisError, sample: &Sample) -> bool {
    match policy {
        OnRedisError::Allow => sample.status == Some(StatusCode::OK) && sample.limit.is_none(),
        OnRedisError::Deny => {
            sample.status == Some(StatusCode::SERVICE_UNAVAILABLE) && sample.retry_after >= Some(1)
        }
        _ => {
            matches!(
                sample.status,
                Some(StatusCode::OK | StatusCode::TOO_MANY_REQUESTS)
            ) && sample.limit == Some(LOCAL_LIMIT)
        }
    }
}

/// Whether Redis decided this request.
fn from_redis(policy: OnRedisError, sample: &Sample) -> bool {
    match policy {
        OnRedisError::Local => sample.decided_by_redis(),
        _ => sample.status == Some(StatusCode::OK) && sample.limit == Some(REDIS_LIMIT),
    }
}

/// Whether a request Redis could answer was answered rightly: by Redis, or by the policy
/// after the deadline passed.
fn redis_or_late(policy: OnRedisError, sample: &Sample) -> bool {
    from_redis(policy, sample) || (sample.missed_the_deadline() && is_policy_answer(policy, sample))
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Stop,
}

/// Healthy for 300 ms, then Redis killed (or stopped) for one second under load from four
/// clients, then restarted (or continued) until Redis decides again.
async fn outage(policy: OnRedisError, fault: Fault) {
    let _serial = crate::ALONE.lock().await;
    let mut redis = TestRedis::start();
    let layer = fault_layer(redis.url(), policy).await;
    let base = serve(layer.clone()).await;
    let began = Instant::now();
    let load = Load::start(&base, 4, began);

    tokio::time::sleep(Duration::from_millis(300)).await;
    // Healthy until the signal is sent, faulty once it has been: on a busy machine,
    // starting `kill` takes a while.
    let healthy_until = began.elapsed();
    match fault {
        Fault::Kill => redis.signal("KILL"),
        Fault::Stop => redis.signal("STOP"),
    }
    let fault_at = began.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let repair_at = began.elapsed();
    match fault {
        Fault::Kill => redis.restart(),
        Fault::Stop => redis.signal("CONT"),
    }
    // Recovery: when the first request sent after the repair that Redis decided was
    // answered. (Requests sent while that one was on its way may still have been answered
    // by the policy, the breaker letting one request through at a time.)
    let http = reqwest::Client::new();
    let recovered_at = loop {
        let sample = probe(&http, &base, "recovery-probe", began).await;
        if from_redis(policy, &sample) {
            break sample.sent + sample.latency;
        }
        assert!(
            began.elapsed() < repair_at + Duration::from_secs(5),
            "Redis decisions never came back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = load.finish().await;

    // Nothing failed at the transport level: no panic, no dropped connection.
    assert!(
        samples.iter().all(|s| s.status.is_some()),
        "a request failed outright"
    );
    // Answered before the fault.
    let before: Vec<_> = samples
        .iter()
        .filter(|s| s.sent + s.latency < healthy_until)
        .collect();
    // Sent after the fault took hold and answered before the repair.
    let during: Vec<_> = samples
        .iter()
        .filter(|s| s.sent > fault_at + Duration::from_millis(20) && s.sent + s.latency < repair_at)
        .collect();
    let after: Vec<_> = samples.iter().filter(|s| s.sent > recovered_at).collect();
    assert!(
        before.len() > 10 && during.len() > 10 && !after.is_empty(),
        "{} {} {}",
        before.len(),
        during.len(),
        after.len()
    );
    // Once Redis decides again, it keeps deciding; and before the fault, it decided. The
    // policy answers only what Redis answered too late on a loaded two-core machine.
    let by_redis = after.iter().filter(|s| from_redis(policy, s)).count();
    let wrong_after: Vec<_> = after.iter().filter(|s| !redis_or_late(policy, s)).collect();
    assert!(
        wrong_after.is_empty(),
        "{by_redis} of {} after recovery decided by Redis; not late: {:?}",
        after.len(),
        &wrong_after[..wrong_after.len().min(5)]
    );
    let wrong_before: Vec<_> = before
        .iter()
        .filter(|s| !redis_or_late(policy, s))
        .collect();
    assert!(
        wrong_before.is_empty(),
        "healthy: Redis decides: {:?}",
        &wrong_before[..wrong_before.len().min(5)]
    );
    assert!(
        before.iter().any(|s| from_redis(policy, s)),
        "healthy: Redis decides"
    );
    let wrong: Vec<_> = during
        .iter()
        .filter(|s| !is_policy_answer(policy, s))
        .collect();
    assert!(
        wrong.is_empty(),
        "{policy:?}/{fault:?}: not the policy's answer: {:?}",
        &wrong[..wrong.len().min(5)]
    );
    let worst = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    let worst_during = during.iter().map(|s| s.latency).max().unwrap_or_default();
    let recovery = recovered_at.saturating_sub(repair_at);
    let stats = layer.limiter().stats();
    eprintln!(
        "outage {policy:?}/{fault:?}: {} requests ({} during the outage); worst latency {:.1} ms \
         (during the outage {:.1} ms); recovery {:.0} ms; stats {stats:?}",
        samples.len(),
        during.len(),
        worst.as_secs_f64() * 1e3,
        worst_during.as_secs_f64() * 1e3,
        recovery.as_secs_f64() * 1e3,
    );
    assert!(worst <= DEADLINE + MARGIN, "worst latency {worst:?}");
    assert!(
        recovery <= Duration::from_secs(2),
        "recovery took {recovery:?}"
    );
    assert!(
        stats.store.errors >= 1 && stats.store.fallback as usize >= during.len(),
        "{stats:?}"
    );
    assert_eq!(stats.store.breaker, Some(BreakerState::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_under_local_policy() {
    outage(OnRedisError::Local, Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_under_allow_policy() {
    outage(OnRedisError::Allow, Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_under_deny_policy() {
    outage(OnRedisError::Deny, Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_redis_under_local_policy() {
    outage(OnRedisError::Local, Fault::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_redis_under_allow_policy() {
    outage(OnRedisError::Allow, Fault::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_redis_under_deny_policy() {
    outage(OnRedisError::Deny, Fault::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_while_serving_fails_nothing() {
    let _serial = crate::ALONE.lock().await;
    let redis = TestRedis::start();
    let layer = fault_layer(redis.url(), OnRedisError::Local).await;
    let base = serve(layer.clone()).await;
    let began = Instant::now();
    let load = Load::start(&base, 4, began);
    let mut control = redis.client();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut control)
            .unwrap();
    }
    let samples = load.finish().await;
    assert!(samples.len() > 50, "{}", samples.len());
    // Every request Redis's, but those a loaded machine answered past the deadline: a
    // flushed script is loaded again, never a failure.
    let not_redis: Vec<_> = samples.iter().filter(|s| !s.decided_by_redis()).collect();
    let not_late: Vec<_> = not_redis
        .iter()
        .filter(|s| !redis_or_late(OnRedisError::Local, s))
        .collect();
    assert!(
        not_late.is_empty(),
        "{:?}",
        &not_late[..not_late.len().min(5)]
    );
    let late = not_redis.len() as u64;
    let stats = layer.limiter().stats();
    assert_eq!(
        (stats.store.errors, stats.store.fallback),
        (late, late),
        "{stats:?}"
    );
    let worst = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    eprintln!(
        "script flush x20: {} requests, all decided by Redis; worst latency {:.1} ms",
        samples.len(),
        worst.as_secs_f64() * 1e3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_without_redis_then_redis_appears() {
    let _serial = crate::ALONE.lock().await;
    let port = free_port();
    let started = Instant::now();
    let layer = fault_layer(&format!("redis://127.0.0.1:{port}"), OnRedisError::Local).await;
    let build_time = started.elapsed();
    assert!(
        build_time < Duration::from_secs(3),
        "build waited {build_time:?}"
    );
    assert_eq!(
        layer.limiter().stats().store.breaker,
        Some(BreakerState::Open)
    );
    let base = serve(layer.clone()).await;
    let http = reqwest::Client::new();
    let began = Instant::now();
    let sample = probe(&http, &base, "early", began).await;
    assert!(is_policy_answer(OnRedisError::Local, &sample), "{sample:?}");
    assert!(
        sample.latency < DEADLINE + MARGIN,
        "breaker open: no Redis wait, took {:?}",
        sample.latency
    );

    let appeared = began.elapsed();
    let _redis = TestRedis::spawn_on(port);
    let recovered = loop {
        let sample = probe(&http, &base, "late", began).await;
        if sample.decided_by_redis() {
            break sample.sent;
        }
        assert!(
            began.elapsed() < appeared + Duration::from_secs(5),
            "Redis never took over"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let recovery = recovered.saturating_sub(appeared);
    eprintln!(
        "start without Redis: build {build_time:?}; Redis decides {recovery:?} after it starts"
    );
    assert!(recovery <= Duration::from_secs(2), "{recovery:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_dropped_before_it_runs_does_not_wedge_the_breaker() {
    use tower::{Service, ServiceExt};
    let _serial = crate::ALONE.lock().await;
    let port = free_port();
    let layer = fault_layer(&format!("redis://127.0.0.1:{port}"), OnRedisError::Local).await;
    assert_eq!(
        layer.limiter().stats().store.breaker,
        Some(BreakerState::Open)
    );
    let mut service = tower::Layer::layer(
        &layer,
        tower::service_fn(|_: axum::http::Request<axum::body::Body>| async {
            Ok::<_, std::convert::Infallible>(axum::http::Response::new(axum::body::Body::empty()))
        }),
    );
    let _redis = TestRedis::spawn_on(port);
    // Past the cooldown (500 ms), the next request is the probe; its future is dropped
    // without ever being polled, as a caller that gives up at once would.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let probe = service
        .ready()
        .await
        .unwrap()
        .call(request("GET", "/", Some("dropped")));
    drop(probe);
    // The breaker must probe again after another cooldown, and Redis then decides.
    let began = Instant::now();
    loop {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request("GET", "/", Some("after")))
            .await
            .unwrap();
        if header(&response, "x-ratelimit-limit") == Some(&REDIS_LIMIT.to_string()[..]) {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "Redis never decided again: {:?}",
            layer.limiter().stats().store.breaker
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a request got with `policy` deny: Redis's decision, or the policy's 503.
async fn deny_probe(app: &axum::Router, client: &str) -> bool {
    let response = send(app, request("GET", "/api/data", Some(client))).await;
    let limit = header(&response, "x-ratelimit-limit").map(str::to_owned);
    match response.status() {
        axum::http::StatusCode::SERVICE_UNAVAILABLE => false,
        axum::http::StatusCode::OK if limit.as_deref() == Some("1000") => true,
        other => panic!("neither Redis's answer nor the policy's: {other} {limit:?}"),
    }
}

/// Healthy: Redis decides (a probe a loaded machine answered past the deadline is sent
/// again, five times at most).
async fn healthy(app: &axum::Router) {
    for _ in 0..5 {
        let started = Instant::now();
        if deny_probe(app, "before").await {
            return;
        }
        assert!(started.elapsed() >= DEADLINE, "healthy: Redis decides");
    }
    panic!("healthy: Redis decides, but five probes in a row missed the deadline");
}

/// Probes until Redis decides, and fails the test if a probe sent more than a second after
/// it began (however long a busy machine takes to answer it) does not see it.
async fn decides_again_within_a_second(app: &axum::Router, layer: &RateLimitLayer) -> Duration {
    let back = Instant::now();
    loop {
        let sent = back.elapsed();
        if deny_probe(app, "after").await {
            return sent;
        }
        assert!(
            sent < Duration::from_secs(1),
            "Redis did not decide again within 1 s of being back: {:?}",
            layer.limiter().stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Another server answering on Redis's port (an HTTP server's 400, or bytes that are no
/// protocol) for two seconds, then a real Redis again: every request meanwhile gets the
/// policy's answer within the deadline, and Redis decides again within a second.
async fn wrong_server_on_redis_port(reply: &'static [u8]) {
    let _serial = crate::ALONE.lock().await;
    let mut redis = TestRedis::start();
    let layer = fault_layer(redis.url(), OnRedisError::Deny).await;
    let app = app(layer.clone());
    healthy(&app).await;

    redis.kill();
    let wrong = WrongServer::start(redis.port(), reply);
    let until = Instant::now() + Duration::from_secs(2);
    let mut answered = 0;
    while Instant::now() < until {
        let started = Instant::now();
        assert!(
            !deny_probe(&app, "during").await,
            "the wrong server decided"
        );
        let latency = started.elapsed();
        assert!(latency <= DEADLINE + MARGIN, "a request took {latency:?}");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(wrong);
    redis.restart();
    let recovery = decides_again_within_a_second(&app, &layer).await;
    eprintln!(
        "wrong server on Redis's port for 2 s ({answered} requests, all answered by the policy); \
         Redis decides {recovery:?} after it is back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_server_on_redis_port_does_not_wedge_the_backend() {
    wrong_server_on_redis_port(WrongServer::HTTP_400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_redis_port_does_not_wedge_the_backend() {
    wrong_server_on_redis_port(WrongServer::GARBAGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_against_a_wrong_server_then_redis_appears() {
    let _serial = crate::ALONE.lock().await;
    let port = free_port();
    let wrong = WrongServer::start(port, WrongServer::HTTP_400);
    let layer = fault_layer(&format!("redis://127.0.0.1:{port}"), OnRedisError::Deny).await;
    let app = app(layer.clone());
    for _ in 0..20 {
        assert!(
            !deny_probe(&app, "during").await,
            "the wrong server decided"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(wrong);
    let _redis = TestRedis::spawn_on(port);
    let recovery = decides_again_within_a_second(&app, &layer).await;
    eprintln!("started against a wrong server; Redis decides {recovery:?} after it appears");
}

/// A request answered by the failure policy takes nothing in Redis, even if Redis runs its
/// call later: capacity 10, one request, Redis stopped, three requests (answered by the
/// policy), Redis continued, one more request: 8 remain, not 5.
async fn stalled_calls_take_nothing(policy: OnRedisError) {
    let _serial = crate::ALONE.lock().await;
    let redis = TestRedis::start();
    let layer = Limiter::builder()
        .rules(rules(
            r#"{"default": {"capacity": 10, "refill_rate": 0.0001}}"#,
        ))
        .redis_url(redis.url())
        .redis_prefix(unique_prefix("stalled"))
        .redis_timeout(DEADLINE)
        .on_redis_error(policy)
        .build_layer()
        .await
        .unwrap();
    let app = app(layer.clone());
    let first = send(&app, request("GET", "/", Some("s"))).await;
    assert_eq!(remaining(&first), Some(9));

    redis.signal("STOP");
    for _ in 0..3 {
        let response = send(&app, request("GET", "/", Some("s"))).await;
        match policy {
            OnRedisError::Deny => {
                assert_eq!(
                    response.status(),
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                )
            }
            _ => assert_eq!(
                header(&response, "x-ratelimit-limit"),
                Some("10"),
                "the local fallback decides"
            ),
        }
    }
    let stats = layer.limiter().stats();
    assert_eq!(
        (stats.store.errors, stats.store.fallback),
        (3, 3),
        "{stats:?}"
    );
    redis.signal("CONT");
    // The stalled calls run now, on the same connection, before the next one.
    let after = send(&app, request("GET", "/", Some("s"))).await;
    assert_eq!(after.status(), axum::http::StatusCode::OK);
    assert_eq!(remaining(&after), Some(8), "{:?}", layer.limiter().stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_stalled_under_deny_take_nothing_when_redis_resumes() {
    stalled_calls_take_nothing(OnRedisError::Deny).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_stalled_under_local_take_nothing_when_redis_resumes() {
    stalled_calls_take_nothing(OnRedisError::Local).await;
}
