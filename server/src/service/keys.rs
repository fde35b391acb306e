//! The key service's writes and reads beside `GET /check/{key}`: `POST /configure` gives a
//! key its own limit, on every instance.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::check::client_named;
use super::json::Body;
use super::rules::refused;

/// A key's new limit.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Configure {
    /// The key, as checked with `GET /check/{key}`.
    key: String,
    /// `N/unit` (unit: second, minute, hour or day), as the rules file writes a limit.
    limit: String,
}

/// A limit set.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Configured {
    /// Always `"ok"`.
    status: String,
    /// The key.
    key: String,
    /// Its limit from now on.
    rate_limit: String,
}

/// Gives a key its own limit, on every limited rule and every instance: the runtime client
/// override `id:<key>` with `{"limit": <limit>}`, kept in Redis or in the state file.
#[utoipa::path(
    post,
    path = "/configure",
    request_body = Configure,
    responses(
        (status = 200, description = "Set, on every instance", body = Configured),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 422, description = "A malformed body, a key that is not 1 to 128 visible ASCII characters, or a limit the rules file would refuse (its message), or a new key past the most runtime entries kept (TOLLGATE_MAX_RUNTIME_ENTRIES)"),
        (status = 503, description = "The change could not be kept (Redis or the state file): nothing applied"),
    ),
    security(("admin_token" = [])),
    tag = "keys"
)]
pub(crate) async fn configure(
    State(state): State<Arc<super::State>>,
    Body(request): Body<Configure>,
) -> Response {
    let client = match client_named(["body", "key"], &request.key) {
        Ok(client) => client,
        Err(invalid) => return invalid.into_response(),
    };
    let rule = json!({"limit": request.limit});
    if let Err(error) = state.limiter.set_client_override(&client, rule).await {
        return refused(&["body", "limit"], &error);
    }
    Json(Configured {
        status: "ok".into(),
        key: request.key,
        rate_limit: request.limit,
    })
    .into_response()
}
