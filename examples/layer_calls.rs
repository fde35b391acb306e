//! A fixed number of requests through one setup of the layer (or tower_governor, or nothing),
//! on one thread with no runtime in the way: what `bench/instructions.sh` runs under
//! `valgrind --tool=callgrind` to count the instructions each setup spends per request.
//!
//! ```sh
//! cargo run --release --example layer_calls -- allowed 10000
//! ```
//!
//! Setups: `bare` (the inner service alone), `allowed`, `denied`, `governor_allowed`,
//! `governor_allowed_headers` (with tower_governor's rate limit headers, as tollgate writes
//! its own), `governor_denied`. The requests are those of `benches/layer.rs`: `GET /api/data`
//! from 1,000 clients named by `X-Client-ID`, each client seen once before counting starts,
//! so that the counted requests find their buckets made. A third argument runs that many
//! threads at once, each making its own calls from its own stretch of clients, sharing the
//! limiter. The process prints the statuses it saw, so that a wrong setup cannot pass for a
//! fast one, and the time per call.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use axum::body::Body;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use tollgate::{Limiter, RateLimitLayer, Rules};
use tower::{Layer, Service, service_fn};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;

#[path = "../benches/support/governor.rs"]
mod governor_key;

const CLIENTS: usize = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: layer_calls <bare|allowed|denied|governor_allowed|governor_allowed_headers|governor_denied> <calls> [threads]";
    let setup = args.next().ok_or(usage)?;
    let calls: usize = args.next().ok_or(usage)?.parse()?;
    let threads: usize = args.next().map_or(Ok(1), |t| t.parse())?;
    let ids: Vec<HeaderValue> = (0..CLIENTS)
        .map(|n| HeaderValue::from_str(&format!("client-{n}")))
        .collect::<Result<_, _>>()?;
    let inner = service_fn(|_: Request<Body>| async {
        let mut response = Response::new(Body::from("ok"));
        let text = HeaderValue::from_static("text/plain; charset=utf-8");
        response.headers_mut().insert(CONTENT_TYPE, text);
        Ok::<_, Infallible>(response)
    });
    let started = std::time::Instant::now();
    let statuses = match setup.as_str() {
        "bare" => on_threads(inner, &ids, calls, threads),
        "allowed" => on_threads(
            tollgate(r#"{"default": {"capacity": 1000, "refill_rate": 1000000000}}"#)?.layer(inner),
            &ids,
            calls,
            threads,
        ),
        "denied" => on_threads(
            tollgate(r#"{"default": {"capacity": 1, "refill_rate": 0.000001}}"#)?.layer(inner),
            &ids,
            calls,
            threads,
        ),
        "governor_allowed" => {
            on_threads(governed(1_000_000, 1_000_000, inner)?, &ids, calls, threads)
        }
        "governor_allowed_headers" => {
            on_threads(governed_with_headers(inner)?, &ids, calls, threads)
        }
        "governor_denied" => on_threads(governed(1, 1, inner)?, &ids, calls, threads),
        other => return Err(format!("unknown setup {other:?}; {usage}").into()),
    };
    let elapsed = started.elapsed();
    println!(
        "{setup}: {calls} calls on each of {threads} threads, statuses {statuses:?}, {:.0} ns per call per thread",
        elapsed.as_nanos() as f64 / calls.max(1) as f64
    );
    Ok(())
}

/// [`run`] on `threads` threads at once, each with its own clone of `service` (sharing the
/// limiter, as a server's connections do) and its own stretch of clients; their tallies
/// added up.
fn on_threads<S, B>(
    service: S,
    ids: &[HeaderValue],
    calls: usize,
    threads: usize,
) -> Vec<(StatusCode, usize)>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send,
{
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..threads.max(1))
            .map(|thread| {
                let service = service.clone();
                // Each thread starts at another client, as a server's connections would.
                let first = thread * ids.len() / threads.max(1);
                scope.spawn(move || run(service, ids, calls, first))
            })
            .collect();
        let mut tally: Vec<(StatusCode, usize)> = Vec::new();
        for counted in runs.into_iter().filter_map(|r| r.join().ok()) {
            for (status, count) in counted {
                match tally.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, total)) => *total += count,
                    None => tally.push((status, count)),
                }
            }
        }
        tally
    })
}

fn tollgate(json: &str) -> Result<RateLimitLayer, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let limiter = runtime.block_on(Limiter::builder().rules(Rules::from_json(json)?).build())?;
    Ok(RateLimitLayer::new(limiter))
}

/// `inner` behind tower_governor keyed by `X-Client-ID`, as in `benches/layer.rs`.
fn governed<S>(
    burst: u32,
    per_second: u32,
    inner: S,
) -> Result<
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send,
    Box<dyn std::error::Error>,
>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send,
    S::Future: Send + 'static,
{
    let config = GovernorConfigBuilder::default()
        .period(Duration::from_secs(1) / per_second)
        .burst_size(burst)
        .key_extractor(governor_key::ClientId)
        .finish()
        .ok_or("an invalid governor configuration")?;
    Ok(GovernorLayer::new(config).layer(inner))
}

/// [`governed`], every request allowed, with tower_governor's rate limit headers on.
fn governed_with_headers<S>(
    inner: S,
) -> Result<
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send,
    Box<dyn std::error::Error>,
>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send,
    S::Future: Send + 'static,
{
    let config = GovernorConfigBuilder::default()
        .period(Duration::from_micros(1))
        .burst_size(1_000_000)
        .key_extractor(governor_key::ClientId)
        .use_headers()
        .finish()
        .ok_or("an invalid governor configuration")?;
    Ok(GovernorLayer::new(config).layer(inner))
}

/// Every client once, then `calls` requests round the clients from client `first`; the
/// statuses of the counted ones, tallied.
fn run<S, B>(
    mut service: S,
    ids: &[HeaderValue],
    calls: usize,
    first: usize,
) -> Vec<(StatusCode, usize)>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
{
    let mut call = |n: usize| {
        let mut request = Request::get("/api/data")
            .body(Body::empty())
            .unwrap_or_default();
        request
            .headers_mut()
            .insert("x-client-id", ids[(first + n) % ids.len()].clone());
        match futures::executor::block_on(service.call(request)) {
            Ok(response) => black_box(response).status(),
            Err(never) => match never {},
        }
    };
    for n in 0..ids.len() {
        call(n);
    }
    let mut tally: Vec<(StatusCode, usize)> = Vec::new();
    for n in 0..calls {
        let status = call(n);
        match tally.iter_mut().find(|(s, _)| *s == status) {
            Some((_, count)) => *count += 1,
            None => tally.push((status, 1)),
        }
    }
    tally
}
