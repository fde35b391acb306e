//! Usage statistics: the key service's `GET /stats/{key}`, and the FastAPI limiter's
//! `GET /admin/stats` and `GET /admin/stats/{client_id}`. Every check counts, allowed or
//! not, per client, hour and rule (see [`Limiter::usage`](tollgate::Limiter::usage)).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::check::{KeyInPath, client_named, rate_of};
use super::json::{Unprocessable, detail};
use tollgate::{Calls, ClientKey, ClientUsage, UsageError};

/// A key's calls, as the key service reported them, with the allowed and denied beside.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct KeyStats {
    /// The key.
    key: String,
    /// Calls per UTC hour (`YYYY-MM-DD-HH`), the last 24 hours, hours with calls only.
    hourly_calls: BTreeMap<String, u64>,
    /// Calls per UTC day (`YYYY-MM-DD`), the last 30 days, days with calls only.
    daily_calls: BTreeMap<String, u64>,
    /// The limit the key has under the default rule.
    current_rate_limit: String,
    /// `hourly_calls`, allowed and denied.
    hourly: BTreeMap<String, Calls>,
    /// `daily_calls`, allowed and denied.
    daily: BTreeMap<String, Calls>,
    /// UTC hours (`YYYY-MM-DD-HH`) of the last 24 in which this key was not tracked: Redis
    /// was counting `TOLLGATE_USAGE_CLIENTS_PER_HOUR` other keys per key already, so its
    /// calls then (if any) are in the totals of `GET /admin/stats` only, not above.
    untracked_hours: Vec<String>,
}

/// A key's calls by hour and day, allowed or not, on every instance sharing the Redis.
#[utoipa::path(
    get,
    path = "/stats/{key}",
    params(("key" = String, Path, description = "The key, as checked with `/check/{key}`")),
    responses(
        (status = 200, description = "Its calls", body = KeyStats),
        (status = 404, description = "This service does not record usage statistics"),
        (status = 422, description = "A key that is not 1 to 128 visible ASCII characters"),
        (status = 503, description = "Redis could not be read"),
    ),
    tag = "keys"
)]
pub(crate) async fn key(
    State(state): State<Arc<super::State>>,
    KeyInPath { key, client }: KeyInPath,
) -> Response {
    let usage = match state.limiter.usage(&client).await {
        Ok(usage) => usage,
        Err(error) => return unavailable(&error),
    };
    let current_rate_limit = match state.limiter.rules().resolve_default(None, &client) {
        Ok(resolved) => rate_of(resolved.limit),
        Err(_) => "unknown".into(),
    };
    let totals = |periods: &BTreeMap<String, Calls>| {
        periods
            .iter()
            .map(|(period, calls)| (period.clone(), calls.total()))
            .collect()
    };
    let (hourly_calls, daily_calls) = (totals(&usage.hours), totals(&usage.days));
    let (hourly, daily) = (usage.hours, usage.days);
    Json(KeyStats {
        key,
        hourly_calls,
        daily_calls,
        current_rate_limit,
        hourly,
        daily,
        untracked_hours: usage.untracked_hours.into_iter().collect(),
    })
    .into_response()
}

/// A client's calls, in the admin API.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ClientStats {
    /// The client key (`id:<client_id>`).
    client: String,
    /// Calls in the last 24 hours.
    last_24_hours: Calls,
    /// Calls per UTC hour, the last 24 hours, hours with calls only.
    hourly: BTreeMap<String, Calls>,
    /// Calls per UTC day, the last 30 days, days with calls only.
    daily: BTreeMap<String, Calls>,
    /// Calls per rule in the last 24 hours.
    rules: BTreeMap<String, Calls>,
    /// UTC hours of the last 24 in which this client was not tracked (as in `GET
    /// /stats/{key}`): its calls then are in the totals of `GET /admin/stats` only.
    untracked_hours: Vec<String>,
}

/// A client's calls: by hour, day and rule.
#[utoipa::path(
    get,
    path = "/admin/stats/{client_id}",
    params(("client_id" = String, Path, description = "The client's `X-Client-ID` (or the key checked with `/check/{key}`), or a client key as `most_limited` lists it: `id:<X-Client-ID>`, `ip:<address>`, `ip:<IPv6 network>/<prefix>`, `unknown`")),
    responses(
        (status = 200, description = "Its calls", body = ClientStats),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 404, description = "This service does not record usage statistics"),
        (status = 422, description = "Neither a client key nor an `X-Client-ID` (1 to 128 visible ASCII characters)"),
        (status = 503, description = "Redis could not be read"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn client(
    State(state): State<Arc<super::State>>,
    Path(client_id): Path<String>,
) -> Response {
    let client = match client_id.parse::<ClientKey>() {
        Ok(key)
            if client_id.starts_with("id:")
                || client_id.starts_with("ip:")
                || client_id == "unknown" =>
        {
            key
        }
        _ => match client_named(["path", "client_id"], &client_id) {
            Ok(client) => client,
            Err(invalid) => return invalid.into_response(),
        },
    };
    match state.limiter.usage(&client).await {
        Ok(usage) => Json(client_stats(usage)).into_response(),
        Err(error) => unavailable(&error),
    }
}

fn client_stats(usage: ClientUsage) -> ClientStats {
    let mut total = Calls::default();
    for calls in usage.hours.values() {
        total += *calls;
    }
    let mut rules: BTreeMap<String, Calls> = BTreeMap::new();
    for (rule, calls) in usage.rules_by_hour.into_values().flatten() {
        *rules.entry(rule).or_default() += calls;
    }
    ClientStats {
        client: usage.client,
        last_24_hours: total,
        hourly: usage.hours,
        daily: usage.days,
        rules,
        untracked_hours: usage.untracked_hours.into_iter().collect(),
    }
}

/// How many of the most-limited clients to list.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct Top {
    /// At most this many (default 10, at most 1000).
    #[param(value_type = Option<u32>)]
    top: Option<String>,
}

/// The calls of every client together.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct GlobalStats {
    /// Always `"last_24_hours"`: what the totals cover.
    period: String,
    /// Calls in the period.
    total_requests: u64,
    /// Calls admitted.
    allowed: u64,
    /// Calls refused.
    denied: u64,
    /// `denied / total_requests` (0 with no calls).
    block_rate: f64,
    /// Per rule (its identity).
    rules: BTreeMap<String, Calls>,
    /// The clients refused most, most first.
    most_limited: Vec<LimitedClient>,
    /// Per UTC hour.
    hourly: BTreeMap<String, Calls>,
}

/// A client and how often it was refused.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LimitedClient {
    /// The client key.
    client: String,
    /// Calls refused in the period.
    denied: u64,
}

/// Every client's calls together: totals, per rule, per hour, and the most-limited clients,
/// over the last 24 hours, on every instance sharing the Redis.
#[utoipa::path(
    get,
    path = "/admin/stats",
    params(Top),
    responses(
        (status = 200, description = "The totals", body = GlobalStats),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 404, description = "This service does not record usage statistics"),
        (status = 422, description = "`top` is not a whole number"),
        (status = 503, description = "Redis could not be read"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn global(
    State(state): State<Arc<super::State>>,
    Query(Top { top }): Query<Top>,
) -> Response {
    let top = match top.as_deref().map(str::parse::<usize>) {
        None => 10,
        Some(Ok(top)) => top.min(1000),
        Some(Err(_)) => {
            return Unprocessable::at(&["query", "top"], "must be a whole number from 0 to 1000")
                .into_response();
        }
    };
    let summary = match state.limiter.usage_summary(top).await {
        Ok(summary) => summary,
        Err(error) => return unavailable(&error),
    };
    let total = summary.allowed + summary.denied;
    Json(GlobalStats {
        period: "last_24_hours".into(),
        total_requests: total,
        allowed: summary.allowed,
        denied: summary.denied,
        block_rate: if total == 0 {
            0.0
        } else {
            summary.denied as f64 / total as f64
        },
        rules: summary.rules,
        most_limited: summary
            .most_limited
            .into_iter()
            .map(|limited| LimitedClient {
                client: limited.client,
                denied: limited.denied,
            })
            .collect(),
        hourly: summary.hours,
    })
    .into_response()
}

/// Statistics that could not be read: 503, or 404 when this service does not record them.
fn unavailable(error: &UsageError) -> Response {
    match error {
        UsageError::NotRecorded => detail(StatusCode::NOT_FOUND, error.to_string()),
        _ => detail(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}
