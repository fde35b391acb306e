//! `GET /health`: the service's state and Redis's.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::check::now_rfc3339;
use tollgate::BreakerState;
use tollgate::OnRedisError;

/// The service's state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Health {
    /// `"ok"`; `"degraded"` when Redis is down and requests are decided by the `local` or
    /// `open` failure policy; `"unavailable"` when Redis is down and the policy is `closed`
    /// (every check is refused).
    status: String,
    /// `"connected"`, `"disconnected"` (the circuit in front of Redis is open: decisions
    /// failed or missed their deadlines, or Redis did not answer the `PING` each instance
    /// sends it every second, with a 500 ms deadline), or `"not_configured"` (in-memory
    /// limits). Follows Redis within 2 s either way, with or without traffic.
    redis: String,
    /// Now, RFC 3339 in UTC.
    timestamp: String,
    /// `"memory"` or `"redis"`.
    backend: String,
}

/// The service's state: 200, or 503 when no check can be allowed (Redis down, failure
/// policy closed), so that a load balancer stops sending traffic that would only be refused.
#[utoipa::path(
    get,
    path = "/health",
    responses(
        (status = 200, description = "Checks are decided (by Redis, in memory, or by an open or local failure policy)", body = Health),
        (status = 503, description = "Redis is down and the failure policy is closed", body = Health),
    ),
    tag = "health"
)]
pub(crate) async fn health(State(state): State<Arc<super::State>>) -> Response {
    let limiter = &state.limiter;
    let (redis, status, code) = match limiter.stats().store.breaker {
        None => ("not_configured", "ok", StatusCode::OK),
        Some(BreakerState::Closed) => ("connected", "ok", StatusCode::OK),
        Some(_) if limiter.on_redis_error() == Some(OnRedisError::Deny) => (
            "disconnected",
            "unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        Some(_) => ("disconnected", "degraded", StatusCode::OK),
    };
    let body = Health {
        status: status.into(),
        redis: redis.into(),
        timestamp: now_rfc3339(),
        backend: limiter.backend_name().into(),
    };
    (code, Json(body)).into_response()
}
