//! A fixed number of requests through one setup of the layer (or tower_governor, or nothing),
//! on one thread with no runtime in the way: what `bench/instructions.sh` runs under
//! `valgrind --tool=callgrind` to count the instructions each setup spends per request.
//!
//! ```sh
//! cargo run --release --example layer_calls -- allowed 10000
//! ```
//!
//! Setups: `bare` (the inner service alone), `allowed`, `denied`, `governor_allowed`,
//! `governor_denied`. The requests are those of `benches/layer.rs`: `GET /api/data` from 1,000
//! clients named by `X-Client-ID`, each client seen once before counting starts, so that the
//! counted requests find their buckets made. The process prints the statuses it saw, so that
//! a wrong setup cannot pass for a fast one.

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
    let usage = "usage: layer_calls <bare|allowed|denied|governor_allowed|governor_denied> <calls>";
    let setup = args.next().ok_or(usage)?;
    let calls: usize = args.next().ok_or(usage)?.parse()?;
    let ids: Vec<HeaderValue> = (0..CLIENTS)
        .map(|n| HeaderValue::from_str(&format!("client-{n}")))
        .collect::<Result<_, _>>()?;
    let inner = service_fn(|_: Request<Body>| async {
        let mut response = Response::new(Body::from("ok"));
        let text = HeaderValue::from_static("text/plain; charset=utf-8");
        response.headers_mut().insert(CONTENT_TYPE, text);
        Ok::<_, Infallible>(response)
    });
    let statuses = match setup.as_str() {
        "bare" => run(inner, &ids, calls),
        "allowed" => run(
            tollgate(r#"{"default": {"capacity": 1000, "refill_rate": 1000000000}}"#)?.layer(inner),
            &ids,
            calls,
        ),
        "denied" => run(
            tollgate(r#"{"default": {"capacity": 1, "refill_rate": 0.000001}}"#)?.layer(inner),
            &ids,
            calls,
        ),
        "governor_allowed" => run(governed(1_000_000, 1_000_000, inner)?, &ids, calls),
        "governor_denied" => run(governed(1, 1, inner)?, &ids, calls),
        other => return Err(format!("unknown setup {other:?}; {usage}").into()),
    };
    println!("{setup}: {calls} calls, statuses {statuses:?}");
    Ok(())
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
    impl Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    Box<dyn std::error::Error>,
>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
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

/// Every client once, then `calls` requests round the clients; the statuses of the counted
/// ones, tallied.
fn run<S>(mut service: S, ids: &[HeaderValue], calls: usize) -> Vec<(StatusCode, usize)>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let mut call = |n: usize| {
        let mut request = Request::get("/api/data")
            .body(Body::empty())
            .unwrap_or_default();
        request
            .headers_mut()
            .insert("x-client-id", ids[n % ids.len()].clone());
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
