//! What to do when Redis cannot decide.

use serde::Deserialize;

/// What the limiter does with a request when Redis errors, misses its deadline, or is cut
/// off by the circuit breaker. Set it with
/// [`on_redis_error`](crate::LimiterBuilder::on_redis_error), or with the rules file's
/// top-level `"on_redis_error"` (which wins, so operators can set it; it is read when the
/// limiter is built).
///
/// # Example
///
/// ```
/// use axum::{body::Body, http::{Request, StatusCode}, routing::get, Router};
/// use tower::ServiceExt;
/// use tollgate::{Limiter, OnRedisError, RateLimitLayer, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(); // nothing there
/// let limiter = Limiter::builder()
///     .rules(Rules::from_json(r#"{"default": {"capacity": 5, "refill_rate": 1}}"#)?)
///     .redis_url(format!("redis://127.0.0.1:{port}"))
///     .on_redis_error(OnRedisError::Deny)
///     .build()
///     .await?;
/// let app = Router::new().route("/", get(|| async { "hi" })).layer(RateLimitLayer::new(limiter));
/// let response = app.oneshot(Request::get("/").body(Body::empty())?).await?;
/// assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OnRedisError {
    /// Fail open: let the request through, without rate limit headers.
    Allow,
    /// Fail closed: answer `503 Service Unavailable` with `Retry-After`.
    Deny,
    /// Decide in this process with the same rules, each divided by
    /// [`local_fallback_instances`](crate::LimiterBuilder::local_fallback_instances) so
    /// that the instances together stay near the shared limit. The default.
    #[default]
    Local,
}

impl OnRedisError {
    /// `"allow"`, `"deny"` or `"local"`, as in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnRedisError::Allow => "allow",
            OnRedisError::Deny => "deny",
            OnRedisError::Local => "local",
        }
    }
}
