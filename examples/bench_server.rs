//! The server `bench/load.sh` measures: one text route, behind nothing (bare), behind
//! tower_governor keyed by `X-Client-ID`, or behind tollgate (memory or Redis).
//!
//! ```text
//! SETUP=tollgate-memory SCENARIO=denied PORT=8100 cargo run --release --example bench_server
//! ```
//!
//! `SETUP`: `bare`, `governor`, `governor-headers` (tower_governor writing its rate limit
//! headers, `use_headers`, as tollgate writes its own), `tollgate-memory`, `tollgate-redis` or
//! `tollgate-redis-lease`
//! (Redis with 100 ms leases; both with `REDIS_URL`); `tollgate-memory-usage` and
//! `tollgate-redis-usage` are the same with usage statistics recorded. `json` is the baseline of
//! `bench/service.sh`: a bare axum `POST /check` that reads a JSON body shaped like the
//! service's and answers JSON shaped like its answer, with no rate limiting.
//! `SCENARIO`: `allowed` (limits no client reaches) or `denied` (1 request per second per
//! client: under load, nearly every request is refused).

use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use tollgate::{Limiter, RateLimitLayer, Rules};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;

#[path = "../benches/support/governor.rs"]
mod governor_key;
use governor_key::ClientId;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let setup = std::env::var("SETUP").unwrap_or_else(|_| "bare".into());
    let denied = std::env::var("SCENARIO").as_deref() == Ok("denied");
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8100);
    let app = Router::new().route("/", get(|| async { "ok" }));
    let (capacity, per_second) = if denied {
        (1, 1)
    } else {
        (1_000_000, 1_000_000)
    };
    let app = match setup.as_str() {
        "bare" => app,
        "json" => Router::new().route("/check", post(check)),
        "governor" => {
            let config = GovernorConfigBuilder::default()
                .period(Duration::from_secs(1) / per_second)
                .burst_size(capacity)
                .key_extractor(ClientId)
                .finish()
                .ok_or("bad governor config")?;
            app.layer(GovernorLayer::new(config))
        }
        "governor-headers" => {
            let config = GovernorConfigBuilder::default()
                .period(Duration::from_secs(1) / per_second)
                .burst_size(capacity)
                .key_extractor(ClientId)
                .use_headers()
                .finish()
                .ok_or("bad governor config")?;
            app.layer(GovernorLayer::new(config))
        }
        "tollgate-memory"
        | "tollgate-redis"
        | "tollgate-redis-lease"
        | "tollgate-memory-usage"
        | "tollgate-redis-usage" => {
            let json = format!(
                r#"{{"default": {{"capacity": {capacity}, "refill_rate": {per_second}}}}}"#
            );
            let mut builder = Limiter::builder().rules(Rules::from_json(&json)?);
            if setup.starts_with("tollgate-redis") {
                // Fail closed: a decision Redis missed is a 503 that wrk counts, never a
                // local decision passing for a Redis one.
                builder = builder
                    .redis_url(std::env::var("REDIS_URL")?)
                    .on_redis_error(tollgate::OnRedisError::Deny);
            }
            if setup.ends_with("-usage") {
                builder = builder.record_usage(true);
            }
            if setup == "tollgate-redis-lease" {
                builder = builder.redis_lease(Duration::from_millis(100));
            }
            app.layer(RateLimitLayer::new(builder.build().await?))
        }
        other => return Err(format!("unknown SETUP {other}").into()),
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("ready {setup} on {port}");
    axum::serve(listener, app).await?;
    Ok(())
}

/// The body `POST /check` takes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    identifier: String,
    tier: Option<String>,
}

/// The JSON endpoint the service is compared with: the same body in, an answer of the
/// same shape out, no decision.
async fn check(Json(body): Json<CheckBody>) -> Json<serde_json::Value> {
    let limit = if body.tier.as_deref() == Some("pro") {
        1000
    } else {
        100
    };
    Json(serde_json::json!({
        "allowed": !body.identifier.is_empty(),
        "tokens_remaining": limit - 1,
        "reset_at": 1_700_000_060.0,
        "limit": limit,
        "retry_after": null,
    }))
}
