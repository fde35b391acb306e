//! The admin API's rules in tollgate's own words, under `/admin/rules`: the rules in force
//! with where each comes from, the runtime entries, and client overrides and routes set and
//! removed as rules file fragments.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::json::{Body, Unprocessable, detail};
use tollgate::ClientKey;
use tollgate::{Origin, RuntimeError};

/// A runtime change refused: a 422 at `loc` for an entry that is not a valid rule or does
/// not fit the rules in force (the rules file's message, with its JSON path), a 422 naming
/// the cap for one past the most entries or state file bytes kept, a 503 for one that could
/// not be kept. Either way nothing was applied.
pub(crate) fn refused(loc: &[&str], error: &RuntimeError) -> Response {
    match error {
        RuntimeError::Invalid(_) | RuntimeError::Conflict { .. } => {
            Unprocessable::at(loc, error.to_string()).into_response()
        }
        RuntimeError::TooManyEntries { .. } | RuntimeError::StateFileTooLarge { .. } => {
            Unprocessable::at(&["body"], error.to_string()).into_response()
        }
        _ => detail(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

/// The route a path's tail names, with its leading `/` back: `/admin/configs/api/data`
/// names `/api/data`, `/admin/rules/routes/api/data@GET` names `/api/data@GET`, and a path
/// that ends at `/` names `/`.
pub(crate) fn endpoint_of(path: Option<Path<String>>) -> String {
    format!("/{}", path.map(|Path(path)| path).unwrap_or_default())
}

/// `"base"` or `"runtime"`.
pub(crate) fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Base => "base",
        Origin::Runtime => "runtime",
    }
}

/// A rule in force.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RuleInForce {
    /// `rule:<identity>` (`rule:default`, `rule:/api/data@GET`, `rule:pro:default`) or
    /// `client:<client key>` (`client:id:k`).
    target: String,
    /// `base` (the rules the service started with: its rules file, or without one
    /// `tollgate serve`'s default rule from `DEFAULT_RATE_LIMIT`) or `runtime` (set through
    /// this API or the library).
    origin: String,
    /// The rule as the rules file writes it.
    rule: Value,
}

/// A runtime entry, as stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct StoredEntry {
    /// As in [`RuleInForce`].
    target: String,
    /// The rule as the rules file writes it.
    rule: Value,
    /// Whether the rules file has a rule for the same target, which removing the entry
    /// puts back in force.
    replaces_base: bool,
    /// Why the entry is not in force, when it is not (the rules file changed under it).
    left_out: Option<String>,
}

/// The rules in force and the runtime entries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RulesView {
    /// Every rule in force: the default, the routes, each tier's, then client overrides.
    rules: Vec<RuleInForce>,
    /// Every runtime entry stored.
    runtime: Vec<StoredEntry>,
}

/// A runtime entry set or removed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct EntryChanged {
    /// `"ok"` when set, `"deleted"` when removed.
    status: String,
    /// What it applies to: `rule:<identity>` or `client:<client key>`.
    target: String,
}

/// The rules in force, where each comes from, and the runtime entries.
#[utoipa::path(
    get,
    path = "/admin/rules",
    responses(
        (status = 200, description = "The rules", body = RulesView),
        (status = 401, description = "No admin token, or the wrong one"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn list(State(state): State<Arc<super::State>>) -> Json<RulesView> {
    let rules = state
        .limiter
        .rule_entries()
        .into_iter()
        .map(|entry| RuleInForce {
            target: entry.target.to_string(),
            origin: origin_name(entry.origin).to_owned(),
            rule: entry.rule,
        })
        .collect();
    let runtime = state
        .limiter
        .runtime_entries()
        .into_iter()
        .map(|entry| StoredEntry {
            target: entry.target.to_string(),
            rule: entry.rule,
            replaces_base: entry.replaces_base,
            left_out: entry.left_out,
        })
        .collect();
    Json(RulesView { rules, runtime })
}

/// Sets a client's limit on every limited rule: the body is the value of a rules file
/// `clients` entry, like `{"limit": "100/minute"}` or `{"unlimited": true}`.
#[utoipa::path(
    put,
    path = "/admin/rules/clients/{client}",
    params(("client" = String, Path, description = "The client key: `id:<X-Client-ID>`, `ip:<address>`, `ip:<IPv6 network>/<prefix>` (its `/` as is) or `unknown`")),
    request_body(content = Object, description = "A `clients` entry of the rules file"),
    responses(
        (status = 200, description = "Set, on every instance", body = EntryChanged),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 422, description = "Not a client key, not a valid rule (the rules file's message), or a new entry past the most kept (TOLLGATE_MAX_RUNTIME_ENTRIES)"),
        (status = 503, description = "The change could not be kept (Redis or the state file): nothing applied"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn set_client(
    State(state): State<Arc<super::State>>,
    Path(client): Path<String>,
    Body(rule): Body<Value>,
) -> Response {
    let client = match client_key(&client) {
        Ok(client) => client,
        Err(invalid) => return invalid.into_response(),
    };
    match state.limiter.set_client_override(&client, rule).await {
        Ok(()) => changed("ok", format!("client:{client}")),
        Err(error) => refused(&["body"], &error),
    }
}

/// Removes a client's runtime override: the rules file's, if any, applies again.
#[utoipa::path(
    delete,
    path = "/admin/rules/clients/{client}",
    params(("client" = String, Path, description = "The client key")),
    responses(
        (status = 200, description = "Removed, on every instance", body = EntryChanged),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 404, description = "The client has no runtime override"),
        (status = 422, description = "Not a client key"),
        (status = 503, description = "The change could not be kept: nothing applied"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn remove_client(
    State(state): State<Arc<super::State>>,
    Path(client): Path<String>,
) -> Response {
    let client = match client_key(&client) {
        Ok(client) => client,
        Err(invalid) => return invalid.into_response(),
    };
    match state.limiter.remove_client_override(&client).await {
        Ok(true) => changed("deleted", format!("client:{client}")),
        Ok(false) => detail(
            StatusCode::NOT_FOUND,
            format!("client:{client} has no runtime override"),
        ),
        Err(error) => refused(&["path", "client"], &error),
    }
}

/// Adds a route rule, or replaces the one with the same identity: the body is an entry of
/// the rules file's `routes`, like `{"path": "/api/data", "limit": "100/hour"}`.
#[utoipa::path(
    post,
    path = "/admin/rules/routes",
    request_body(content = Object, description = "A `routes` entry of the rules file"),
    responses(
        (status = 200, description = "Set, on every instance; `target` has the route's identity", body = EntryChanged),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 422, description = "Not a valid route, one that conflicts with the routes in force (the rules file's message), or a new entry past the most kept (TOLLGATE_MAX_RUNTIME_ENTRIES)"),
        (status = 503, description = "The change could not be kept: nothing applied"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn set_route(
    State(state): State<Arc<super::State>>,
    Body(route): Body<Value>,
) -> Response {
    match state.limiter.set_route(route).await {
        Ok(id) => changed("ok", format!("rule:{id}")),
        Err(error) => refused(&["body"], &error),
    }
}

/// Removes a runtime route rule by identity (`/api/data@GET`) or pattern: the rules file's
/// rule with that identity, if any, applies again.
#[utoipa::path(
    delete,
    path = "/admin/rules/routes/{identity}",
    params(("identity" = String, Path, description = "The route's identity without its leading `/`: `api/data`, `api/users/{id}@GET`")),
    responses(
        (status = 200, description = "Removed, on every instance", body = EntryChanged),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 404, description = "No runtime route has this identity"),
        (status = 503, description = "The change could not be kept: nothing applied"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn remove_route(
    State(state): State<Arc<super::State>>,
    identity: Option<Path<String>>,
) -> Response {
    let identity = endpoint_of(identity);
    match state.limiter.remove_route(&identity).await {
        Ok(true) => changed("deleted", format!("rule:{identity}")),
        Ok(false) => detail(
            StatusCode::NOT_FOUND,
            format!(
                "no runtime route {identity}: routes of the rules file are changed in the file"
            ),
        ),
        Err(error) => refused(&["path", "identity"], &error),
    }
}

fn changed(status: &str, target: String) -> Response {
    let status = status.to_owned();
    Json(EntryChanged { status, target }).into_response()
}

/// The client key in a path, or a 422 saying what a client key looks like.
fn client_key(text: &str) -> Result<ClientKey, Unprocessable> {
    text.parse::<ClientKey>()
        .map_err(|error| Unprocessable::at(&["path", "client"], error.to_string()))
}
