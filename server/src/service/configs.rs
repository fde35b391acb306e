//! The FastAPI limiter's admin configs, under `/admin/configs`: per endpoint "N requests per
//! W seconds" with an algorithm and, for a token bucket, a burst. Each config is a
//! top-level route rule, set and removed as a runtime entry:
//!
//! | config | route rule |
//! | --- | --- |
//! | `endpoint` E | `"path": E` (a pattern: `/api/users/{id}` works) |
//! | `requests_per_window` N, `window_seconds` W | a band `{"capacity": N, "refill_rate": N/W}` |
//! | `algorithm` A (default `sliding_window`) | `"algorithm": A` |
//! | `burst_limit` B, `refill_rate` R (token bucket) | a second band `{"capacity": B, "refill_rate": R}` |
//! | `methods` (an extension) | `"methods"` |
//!
//! Read back, a rule's last band gives N and W, and a token bucket's first, when it has two,
//! the burst (as they are written: burst first). A rule of other shapes is listed that way
//! too, but only the native API changes it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::json::{Body, Unprocessable, detail};
use super::rules::{endpoint_of, origin_name, refused};
use tollgate::Algorithm;
use tollgate::{
    Band, Limit, MAX_PERIOD_SECS, MAX_REFILL_PER_SEC, MIN_REFILL_PER_SEC, Rule, RuleTarget, Rules,
};
use tollgate::{Limiter, RuleEntry};

/// A rate limit configuration for an endpoint, as the admin API lists it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Config {
    /// The path pattern the rule applies to.
    endpoint: String,
    /// The methods it applies to; `null`: every method.
    methods: Option<Vec<String>>,
    /// Requests per window (the rule's widest band); `null` for an unlimited rule.
    requests_per_window: Option<u32>,
    /// The window, in seconds; `null` for an unlimited rule.
    #[serde(serialize_with = "whole_if_integral")]
    #[schema(value_type = Option<f64>)]
    window_seconds: Option<f64>,
    /// `sliding_window`, `fixed_window` or `token_bucket`; `null` for an unlimited rule.
    algorithm: Option<String>,
    /// A token bucket's burst (its narrowest band's capacity); `null` for the window
    /// algorithms.
    burst_limit: Option<u32>,
    /// A token bucket's refill, in tokens per second (its narrowest band's).
    refill_rate: Option<f64>,
    /// The rule's identity, as the native API and the rate limit headers name it.
    rule: String,
    /// The tier the rule belongs to, if any (tiers' routes are read-only here).
    tier: Option<String>,
    /// `base` (the rules the service started with: its rules file, or without one
    /// `tollgate serve`'s default rule from `DEFAULT_RATE_LIMIT`) or `runtime` (set through
    /// this API).
    origin: String,
    /// The rule as the rules file writes it.
    native: Value,
}

/// A new configuration, as the FastAPI limiter took it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewConfig {
    /// The path pattern: `/api/data`, `/api/users/{id}`.
    endpoint: String,
    /// Requests per window, at least 1.
    requests_per_window: u32,
    /// The window, in seconds (more than 0).
    window_seconds: f64,
    /// `sliding_window` (the default), `fixed_window` or `token_bucket`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    algorithm: Option<Algorithm>,
    /// A token bucket's burst: at most this many at once (default: `requests_per_window`).
    #[serde(default)]
    burst_limit: Option<u32>,
    /// A token bucket's refill in tokens per second (default: `requests_per_window /
    /// window_seconds`).
    #[serde(default)]
    refill_rate: Option<f64>,
    /// An extension: only these methods (default: every method).
    #[serde(default)]
    methods: Option<Vec<String>>,
}

/// Changes to a configuration: only the fields given change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigUpdate {
    /// Accepted when it is the endpoint in the path.
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    requests_per_window: Option<u32>,
    #[serde(default)]
    window_seconds: Option<f64>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    algorithm: Option<Algorithm>,
    #[serde(default)]
    burst_limit: Option<u32>,
    #[serde(default)]
    refill_rate: Option<f64>,
}

/// A configuration removed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ConfigDeleted {
    /// Always `"deleted"`.
    status: String,
    /// The endpoint.
    endpoint: String,
    /// The rules file's configuration for the endpoint, in force again; `null` if it has
    /// none.
    restored: Option<Config>,
}

/// Every route rule in force, as a configuration.
#[utoipa::path(
    get,
    path = "/admin/configs",
    responses(
        (status = 200, description = "The configurations", body = Vec<Config>),
        (status = 401, description = "No admin token, or the wrong one"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn list(State(state): State<Arc<super::State>>) -> Json<Vec<Config>> {
    let rules = state.limiter.rules();
    let entries = rule_entries(&state.limiter);
    let configs = rules
        .iter()
        .filter(|rule| rule.pattern().is_some())
        .map(|rule| config_of(rule, entries.get(rule.id())))
        .collect();
    Json(configs)
}

/// Creates the configuration of an endpoint, or replaces it (on every instance).
#[utoipa::path(
    post,
    path = "/admin/configs",
    request_body = NewConfig,
    responses(
        (status = 201, description = "Created", body = Config),
        (status = 200, description = "Replaced the endpoint's configuration", body = Config),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 422, description = "A malformed body, a rule the rules file would refuse (its message), or a new rule past the most runtime entries kept (TOLLGATE_MAX_RUNTIME_ENTRIES)"),
        (status = 503, description = "The change could not be kept (Redis or the state file): nothing applied"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn create(
    State(state): State<Arc<super::State>>,
    Body(config): Body<NewConfig>,
) -> Response {
    let NewConfig {
        endpoint,
        requests_per_window,
        window_seconds,
        algorithm,
        burst_limit,
        refill_rate,
        methods,
    } = config;
    let fields = Fields {
        requests_per_window,
        window_seconds,
        algorithm: algorithm.unwrap_or(Algorithm::SlidingWindow),
        burst_limit,
        refill_rate,
    };
    if !endpoint.starts_with('/') {
        return Unprocessable::at(&["body", "endpoint"], "must start with /").into_response();
    }
    if let Err(invalid) = fields.check() {
        return invalid.into_response();
    }
    let mut route = Map::new();
    route.insert("path".into(), Value::from(endpoint));
    if let Some(methods) = methods {
        route.insert("methods".into(), json!(methods));
    }
    fields.write(&mut route);
    let before = state.limiter.rules();
    match state.limiter.set_route(Value::Object(route)).await {
        Ok(id) => {
            let status = if before.find(&id).is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (status, Json(in_force(&state.limiter, &id))).into_response()
        }
        Err(error) => refused(&["body"], &error),
    }
}

/// Changes some fields of an endpoint's configuration (the rules file's or a runtime one),
/// keeping the rest of its rule; the result is a runtime entry, on every instance.
#[utoipa::path(
    put,
    path = "/admin/configs/{endpoint}",
    params(("endpoint" = String, Path, description = "The endpoint without its leading `/`: `api/data`")),
    request_body = ConfigUpdate,
    responses(
        (status = 200, description = "Changed", body = Config),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 404, description = "No route rule has this endpoint"),
        (status = 409, description = "Several route rules have this endpoint (one per method): change them with `/admin/rules/routes`"),
        (status = 422, description = "A malformed body, a rule the rules file would refuse (its message), or a new rule past the most runtime entries kept (TOLLGATE_MAX_RUNTIME_ENTRIES)"),
        (status = 503, description = "The change could not be kept: nothing applied"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn update(
    State(state): State<Arc<super::State>>,
    endpoint: Option<Path<String>>,
    Body(update): Body<ConfigUpdate>,
) -> Response {
    let endpoint = endpoint_of(endpoint);
    if update.endpoint.as_ref().is_some_and(|e| *e != endpoint) {
        let msg = format!("must be the endpoint in the path, {endpoint}");
        return Unprocessable::at(&["body", "endpoint"], msg).into_response();
    }
    let rules = state.limiter.rules();
    let rule = match route_at(&rules, &endpoint) {
        Ok(rule) => rule,
        Err(not_one) => return not_one.into_response(),
    };
    let fields = match rule.limit() {
        Some(limit) if !Fields::say_all_of(limit) => {
            return detail(
                StatusCode::CONFLICT,
                format!(
                    "the rule of {endpoint} has {} {} bands, which a config cannot say: change it with POST /admin/rules/routes",
                    limit.bands().len(),
                    limit.algorithm().as_str()
                ),
            );
        }
        Some(limit) => {
            let current = Fields::of(limit);
            Some(Fields {
                requests_per_window: update
                    .requests_per_window
                    .unwrap_or(current.requests_per_window),
                window_seconds: update.window_seconds.unwrap_or(current.window_seconds),
                algorithm: update.algorithm.unwrap_or(current.algorithm),
                burst_limit: update.burst_limit.or(current.burst_limit),
                refill_rate: update.refill_rate.or(current.refill_rate),
            })
        }
        None => Fields::given(&update),
    };
    let Some(fields) = fields else {
        let msg = format!("{endpoint} is unlimited: give requests_per_window and window_seconds");
        return Unprocessable::missing(&["body"], msg).into_response();
    };
    if let Err(invalid) = fields.check() {
        return invalid.into_response();
    }
    // The rule as it is written, its limit replaced: its methods, cost and shadow stay.
    let mut route = rule_entries(&state.limiter)
        .remove(rule.id())
        .and_then(|entry| match entry.rule {
            Value::Object(route) => Some(route),
            _ => None,
        })
        .unwrap_or_default();
    for key in [
        "limit",
        "limits",
        "capacity",
        "refill_rate",
        "algorithm",
        "unlimited",
    ] {
        route.remove(key);
    }
    route.entry("path").or_insert_with(|| Value::from(endpoint));
    fields.write(&mut route);
    match state.limiter.set_route(Value::Object(route)).await {
        Ok(id) => Json(in_force(&state.limiter, &id)).into_response(),
        Err(error) => refused(&["body"], &error),
    }
}

/// Removes an endpoint's runtime configuration (on every instance): the rules file's, if
/// it has one, applies again.
#[utoipa::path(
    delete,
    path = "/admin/configs/{endpoint}",
    params(("endpoint" = String, Path, description = "The endpoint without its leading `/`: `api/data`")),
    responses(
        (status = 200, description = "Removed", body = ConfigDeleted),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 404, description = "No runtime configuration has this endpoint"),
        (status = 409, description = "The endpoint's configuration is the rules file's: change it in the file"),
        (status = 503, description = "The change could not be kept: nothing applied"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn remove(
    State(state): State<Arc<super::State>>,
    endpoint: Option<Path<String>>,
) -> Response {
    let endpoint = endpoint_of(endpoint);
    let rules = state.limiter.rules();
    let id = match route_at(&rules, &endpoint) {
        Ok(rule) => rule.id().to_owned(),
        Err(not_one) => return not_one.into_response(),
    };
    match state.limiter.remove_route(&id).await {
        Ok(true) => {
            let restored = in_force(&state.limiter, &id);
            Json(ConfigDeleted {
                status: "deleted".into(),
                endpoint,
                restored,
            })
            .into_response()
        }
        Ok(false) => detail(
            StatusCode::CONFLICT,
            format!(
                "the configuration of {endpoint} comes from the rules file: change it in the file, or replace it with POST /admin/configs"
            ),
        ),
        Err(error) => refused(&["path", "endpoint"], &error),
    }
}

/// Why an endpoint does not have one route rule.
enum NotOne {
    None(String),
    Several { endpoint: String, ids: Vec<String> },
}

impl IntoResponse for NotOne {
    fn into_response(self) -> Response {
        match self {
            NotOne::None(endpoint) => no_config(&endpoint),
            NotOne::Several { endpoint, ids } => detail(
                StatusCode::CONFLICT,
                format!(
                    "{} route rules have the endpoint {endpoint} ({}): change one with /admin/rules/routes",
                    ids.len(),
                    ids.join(", ")
                ),
            ),
        }
    }
}

/// The one top-level route rule in force whose pattern is `endpoint`.
fn route_at<'r>(rules: &'r Rules, endpoint: &str) -> Result<&'r Rule, NotOne> {
    let found: Vec<&Rule> = rules
        .iter()
        .filter(|rule| rule.tier().is_none() && rule.pattern() == Some(endpoint))
        .collect();
    match found.as_slice() {
        [] => Err(NotOne::None(endpoint.to_owned())),
        [rule] => Ok(rule),
        several => Err(NotOne::Several {
            endpoint: endpoint.to_owned(),
            ids: several.iter().map(|rule| rule.id().to_owned()).collect(),
        }),
    }
}

fn no_config(endpoint: &str) -> Response {
    detail(
        StatusCode::NOT_FOUND,
        format!("no configuration for {endpoint}"),
    )
}

/// A configuration's limit.
#[derive(Debug, Clone, Copy)]
struct Fields {
    requests_per_window: u32,
    window_seconds: f64,
    algorithm: Algorithm,
    burst_limit: Option<u32>,
    refill_rate: Option<f64>,
}

impl Fields {
    /// A rule's limit, read back: its last band is the window, and a token bucket's first,
    /// when it has two, the burst.
    fn of(limit: &Limit) -> Self {
        let bands = limit.bands();
        let algorithm = limit.algorithm();
        let window = bands.last();
        let burst = match bands {
            [burst, _] if algorithm == Algorithm::TokenBucket => Some(burst),
            _ => None,
        };
        Self {
            requests_per_window: window.map_or(1, |band| band.capacity()),
            window_seconds: window.map_or(1.0, |band| round_secs(band.period().as_secs_f64())),
            algorithm,
            burst_limit: burst.map(|band| band.capacity()),
            refill_rate: burst.map(|band| band.refill_per_sec()),
        }
    }

    /// Whether these fields say all of `limit`: one band, or a token bucket's burst and
    /// window.
    fn say_all_of(limit: &Limit) -> bool {
        match limit.bands().len() {
            1 => true,
            2 => limit.algorithm() == Algorithm::TokenBucket,
            _ => false,
        }
    }

    /// The fields of an update to an unlimited rule, when it gives the window.
    fn given(update: &ConfigUpdate) -> Option<Self> {
        Some(Self {
            requests_per_window: update.requests_per_window?,
            window_seconds: update.window_seconds?,
            algorithm: update.algorithm.unwrap_or(Algorithm::SlidingWindow),
            burst_limit: update.burst_limit,
            refill_rate: update.refill_rate,
        })
    }

    /// The bands these fields make, checked here so that a problem is named by the body's
    /// field rather than by the rule's.
    fn check(&self) -> Result<(), Unprocessable> {
        let n = self.requests_per_window;
        let w = self.window_seconds;
        if n == 0 {
            return Err(Unprocessable::at(
                &["body", "requests_per_window"],
                "must be at least 1",
            ));
        }
        if !(w.is_finite() && w > 0.0) {
            return Err(Unprocessable::at(
                &["body", "window_seconds"],
                "must be more than 0",
            ));
        }
        let band_rule = format!(
            "a band refills from {MIN_REFILL_PER_SEC} to {MAX_REFILL_PER_SEC} tokens a second, over at most {MAX_PERIOD_SECS} s"
        );
        if Band::new(n, f64::from(n) / w).is_none() {
            return Err(Unprocessable::at(
                &["body", "window_seconds"],
                format!("{n} requests per {w} s cannot be a rule: {band_rule}"),
            ));
        }
        if let Some((capacity, rate)) = self.burst() {
            let field = if self.refill_rate.is_some() {
                "refill_rate"
            } else {
                "burst_limit"
            };
            if capacity == 0 {
                return Err(Unprocessable::at(
                    &["body", "burst_limit"],
                    "must be at least 1",
                ));
            }
            if Band::new(capacity, rate).is_none() {
                return Err(Unprocessable::at(
                    &["body", field],
                    format!(
                        "a burst of {capacity} refilled at {rate} a second cannot be a rule: {band_rule}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A token bucket's burst band, capacity and rate, when it differs from the window's.
    fn burst(&self) -> Option<(u32, f64)> {
        let n = self.requests_per_window;
        let window_rate = f64::from(n) / self.window_seconds;
        (self.algorithm == Algorithm::TokenBucket)
            .then(|| {
                let capacity = self.burst_limit.unwrap_or(n);
                let rate = self.refill_rate.unwrap_or(window_rate);
                (capacity, rate)
            })
            .filter(|&burst| burst != (n, window_rate))
    }

    /// Writes the limit into a route rule: one band for the window, and for a token bucket
    /// a burst band beside it when it differs.
    fn write(&self, route: &mut Map<String, Value>) {
        let n = self.requests_per_window;
        let window_rate = f64::from(n) / self.window_seconds;
        let window = json!({"capacity": n, "refill_rate": window_rate});
        route.insert("algorithm".into(), Value::from(self.algorithm.as_str()));
        match self.burst() {
            Some((capacity, rate)) => {
                let burst = json!({"capacity": capacity, "refill_rate": rate});
                route.insert("limits".into(), json!([burst, window]));
            }
            None => {
                route.insert("capacity".into(), Value::from(n));
                route.insert("refill_rate".into(), Value::from(window_rate));
            }
        }
    }
}

/// The configuration of the rule in force with identity `id`.
fn in_force(limiter: &Limiter, id: &str) -> Option<Config> {
    let rules = limiter.rules();
    let entries = rule_entries(limiter);
    rules.find(id).map(|rule| config_of(rule, entries.get(id)))
}

/// The rules in force as the rules file writes them, by rule identity (client overrides
/// left out): read once per answer, not once per rule.
fn rule_entries(limiter: &Limiter) -> HashMap<String, RuleEntry> {
    limiter
        .rule_entries()
        .into_iter()
        .filter_map(|entry| match &entry.target {
            RuleTarget::Rule(id) => Some((id.clone(), entry)),
            RuleTarget::Client(_) => None,
        })
        .collect()
}

/// A rule in force, and its entry, as a configuration.
fn config_of(rule: &Rule, entry: Option<&RuleEntry>) -> Config {
    let fields = rule.limit().map(Fields::of);
    Config {
        endpoint: rule.pattern().unwrap_or_default().to_owned(),
        methods: rule
            .methods()
            .map(|methods| methods.iter().map(ToString::to_string).collect()),
        requests_per_window: fields.map(|f| f.requests_per_window),
        window_seconds: fields.map(|f| f.window_seconds),
        algorithm: fields.map(|f| f.algorithm.as_str().to_owned()),
        burst_limit: fields.and_then(|f| f.burst_limit),
        refill_rate: fields.and_then(|f| f.refill_rate),
        rule: rule.id().to_owned(),
        tier: rule.tier().map(str::to_owned),
        origin: entry
            .map_or("base", |entry| origin_name(entry.origin))
            .to_owned(),
        native: entry.map_or(Value::Null, |entry| entry.rule.clone()),
    }
}

/// Seconds to the microsecond, so that a window of 3600 s reads back as 3600.
fn round_secs(secs: f64) -> f64 {
    (secs * 1e6).round() / 1e6
}

/// `3600`, not `3600.0`: the FastAPI limiter's windows were whole seconds.
fn whole_if_integral<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) if v.fract() == 0.0 && (0.0..9.0e15).contains(v) => {
            serializer.serialize_u64(*v as u64)
        }
        Some(v) => serializer.serialize_f64(*v),
        None => serializer.serialize_none(),
    }
}
