//! The server `bench/compare.sh` loads: one text route, limited per `X-Client-ID` by
//! tollgate or by limitador, in memory or in Redis.
//!
//! ```text
//! SETUP=limitador-memory SCENARIO=denied PORT=8100 cargo run --release --bin compare_server
//! ```
//!
//! `SETUP`: `tollgate-memory`, `tollgate-redis`, `limitador-memory` or `limitador-redis` (both
//! Redis setups with `REDIS_URL`). `SCENARIO`: `allowed` or `denied` (see the crate's docs).
//!
//! tollgate is its own tower layer, as an app uses it (it also writes the RateLimit headers
//! on every answer). limitador has no HTTP front of its own in the library, so its server is
//! the smallest middleware that asks it: the key from `X-Client-ID`, a 429 when limited, a
//! 503 when Redis fails (failing closed, as the tollgate setup does).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use limitador::{AsyncRateLimiter, RateLimiter};
use tollgate::RateLimitLayer;
use tollgate_compare::{Error, Scenario, limitador_call};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let setup = std::env::var("SETUP").map_err(|_| "SETUP is not set")?;
    let scenario = Scenario::parse(&std::env::var("SCENARIO").unwrap_or_default())?;
    let port: u16 = std::env::var("PORT")
        .map_err(|_| "PORT is not set")?
        .parse()?;
    let redis_url = std::env::var("REDIS_URL").ok();
    let redis_url = || redis_url.as_deref().ok_or("REDIS_URL is not set");
    let app = Router::new().route("/", get(|| async { "ok" }));
    let app = match setup.as_str() {
        "tollgate-memory" => app.layer(RateLimitLayer::new(
            tollgate_compare::tollgate(scenario, None).await?,
        )),
        "tollgate-redis" => app.layer(RateLimitLayer::new(
            tollgate_compare::tollgate(scenario, Some(redis_url()?)).await?,
        )),
        "limitador-memory" => app.layer(middleware::from_fn_with_state(
            Arc::new(tollgate_compare::limitador_memory(scenario)?),
            limitador_memory,
        )),
        "limitador-redis" => app.layer(middleware::from_fn_with_state(
            Arc::new(tollgate_compare::limitador_redis(scenario, redis_url()?).await?),
            limitador_redis,
        )),
        other => return Err(format!("unknown SETUP {other}").into()),
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("ready {setup} {} on {port}", scenario.name());
    axum::serve(listener, app).await?;
    Ok(())
}

/// The request's client key: its `X-Client-ID`, or `None` (answered 400).
fn client_id(request: &Request) -> Option<&str> {
    request.headers().get("x-client-id")?.to_str().ok()
}

/// limitador's answer as HTTP: the handler's response when admitted, 429 when limited, 503
/// when limitador failed (its error is not `Send`, so only its having happened is kept).
async fn answer(limited: Option<bool>, request: Request, next: Next) -> Response {
    match limited {
        Some(false) => next.run(request).await,
        Some(true) => StatusCode::TOO_MANY_REQUESTS.into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn limitador_memory(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(client) = client_id(&request) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let limited = {
        let (namespace, context) = limitador_call(client);
        limiter
            .check_rate_limited_and_update(&namespace, &context, 1)
            .map(|result| result.limited)
            .ok()
    };
    answer(limited, request, next).await
}

async fn limitador_redis(
    State(limiter): State<Arc<AsyncRateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(client) = client_id(&request) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let (namespace, context) = limitador_call(client);
    let limited = limiter
        .check_rate_limited_and_update(&namespace, &context, 1)
        .await
        .map(|result| result.limited)
        .ok();
    answer(limited, request, next).await
}
