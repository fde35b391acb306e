//! The admin API, under `/admin`: resets (and, beside them, the runtime rules and the
//! statistics). Every route here needs the admin token, or a loopback peer when none is set.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::check::client_named;
use super::json::detail;
use tollgate::ResetError;

/// A reset done.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Reset {
    /// Always `"ok"`.
    status: String,
    /// The key reset.
    key: String,
    /// The rule reset, or `null` for every rule.
    rule: Option<String>,
}

/// Forgets a key's state under every rule, on every instance sharing the Redis.
#[utoipa::path(
    post,
    path = "/admin/reset/{key}",
    params(("key" = String, Path, description = "The key (as checked with `/check`)")),
    responses(
        (status = 200, description = "Reset", body = Reset),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 503, description = "Redis could not delete the key or tell the other instances"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn reset(
    State(state): State<Arc<super::State>>,
    Path(key): Path<String>,
) -> Response {
    reset_key(&state, key, None).await
}

/// Forgets a key's state under one rule (its identity, URL-encoded), on every instance.
#[utoipa::path(
    post,
    path = "/admin/reset/{key}/{rule}",
    params(
        ("key" = String, Path, description = "The key (as checked with `/check`)"),
        ("rule" = String, Path, description = "The rule's identity, e.g. `default`"),
    ),
    responses(
        (status = 200, description = "Reset", body = Reset),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 404, description = "No rule has this identity"),
        (status = 503, description = "Redis could not delete the key or tell the other instances"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn reset_rule(
    State(state): State<Arc<super::State>>,
    Path((key, rule)): Path<(String, String)>,
) -> Response {
    reset_key(&state, key, Some(rule)).await
}

async fn reset_key(state: &super::State, key: String, rule: Option<String>) -> Response {
    let client = match client_named(["path", "key"], &key) {
        Ok(client) => client,
        Err(invalid) => return invalid.into_response(),
    };
    let done = match &rule {
        Some(rule) => state.limiter.reset_rule(&client, rule).await,
        None => state.limiter.reset(&client).await,
    };
    match done {
        Ok(()) => Json(Reset {
            status: "ok".into(),
            key,
            rule,
        })
        .into_response(),
        Err(error @ ResetError::UnknownRule { .. }) => {
            detail(StatusCode::NOT_FOUND, error.to_string())
        }
        Err(error) => detail(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}
