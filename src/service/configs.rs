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
//! Read back, a rule's widest band gives N and W, and its narrowest the burst.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::json::{Body, Unprocessable, detail};
use super::rules::{origin_name, refused};
use crate::algorithm::Algorithm;
use crate::limiter::Limiter;
use crate::rules::{Limit, Rule, RuleTarget};

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
    /// `base` (the rules file) or `runtime` (set through this API).
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
    let entries = state.limiter.rule_entries();
    let configs = rules
        .iter()
        .filter(|rule| rule.pattern().is_some())
        .map(|rule| config_of(rule, &entries))
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
        (status = 422, description = "A malformed body, or a rule the rules file would refuse (its message)"),
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
        (status = 422, description = "A malformed body, or a rule the rules file would refuse (its message)"),
        (status = 503, description = "The change could not be kept: nothing applied"),
    ),
    security(("admin_token" = [])),
    tag = "admin"
)]
pub(crate) async fn update(
    State(state): State<Arc<super::State>>,
    Path(endpoint): Path<String>,
    Body(update): Body<ConfigUpdate>,
) -> Response {
    let endpoint = format!("/{endpoint}");
    if update.endpoint.as_ref().is_some_and(|e| *e != endpoint) {
        let msg = format!("must be the endpoint in the path, {endpoint}");
        return Unprocessable::at(&["body", "endpoint"], msg).into_response();
    }
    let rules = state.limiter.rules();
    let found: Vec<&Rule> = rules
        .iter()
        .filter(|rule| rule.tier().is_none() && rule.pattern() == Some(endpoint.as_str()))
        .collect();
    let rule = match found.as_slice() {
        [] => return no_config(&endpoint),
        [rule] => *rule,
        several => {
            let ids: Vec<&str> = several.iter().map(|rule| rule.id()).collect();
            return detail(
                StatusCode::CONFLICT,
                format!(
                    "{} route rules have the endpoint {endpoint} ({}): change one with PUT /admin/rules/routes",
                    ids.len(),
                    ids.join(", ")
                ),
            );
        }
    };
    let current = rule.limit().map(Fields::of);
    let Some(fields) = current
        .map(|current| Fields {
            requests_per_window: update
                .requests_per_window
                .unwrap_or(current.requests_per_window),
            window_seconds: update.window_seconds.unwrap_or(current.window_seconds),
            algorithm: update.algorithm.unwrap_or(current.algorithm),
            burst_limit: update.burst_limit.or(current.burst_limit),
            refill_rate: update.refill_rate.or(current.refill_rate),
        })
        .or_else(|| Fields::given(&update))
    else {
        let msg = format!("{endpoint} is unlimited: give requests_per_window and window_seconds");
        return Unprocessable::missing(&["body"], msg).into_response();
    };
    if let Err(invalid) = fields.check() {
        return invalid.into_response();
    }
    // The rule as it is written, its limit replaced: its methods, cost and shadow stay.
    let entries = state.limiter.rule_entries();
    let mut route = native_of(rule.id(), &entries)
        .and_then(|native| native.as_object().cloned())
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
    route.insert("path".into(), Value::from(endpoint));
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
    Path(endpoint): Path<String>,
) -> Response {
    let endpoint = format!("/{endpoint}");
    match state.limiter.remove_route(&endpoint).await {
        Ok(true) => {
            let restored = in_force(&state.limiter, &endpoint);
            Json(ConfigDeleted {
                status: "deleted".into(),
                endpoint,
                restored,
            })
            .into_response()
        }
        Ok(false) if state.limiter.rules().find(&endpoint).is_some() => detail(
            StatusCode::CONFLICT,
            format!(
                "the configuration of {endpoint} comes from the rules file: change it in the file, or replace it with POST /admin/configs"
            ),
        ),
        Ok(false) => no_config(&endpoint),
        Err(error) => refused(&["path", "endpoint"], &error),
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
    /// A rule's limit, read back: its widest band is the window, its narrowest the burst.
    fn of(limit: &Limit) -> Self {
        let bands = limit.bands();
        let by_period = |a: &&crate::Band, b: &&crate::Band| a.period().cmp(&b.period());
        let widest = bands.iter().max_by(by_period);
        let narrowest = bands.iter().min_by(by_period);
        let algorithm = limit.algorithm();
        let burst = narrowest.filter(|_| algorithm == Algorithm::TokenBucket);
        Self {
            requests_per_window: widest.map_or(1, |band| band.capacity()),
            window_seconds: widest.map_or(1.0, |band| round_secs(band.period().as_secs_f64())),
            algorithm,
            burst_limit: burst.map(|band| band.capacity()),
            refill_rate: burst.map(|band| band.refill_per_sec()),
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

    /// What the rules file cannot say at the body's field: a window of zero requests or
    /// seconds.
    fn check(&self) -> Result<(), Unprocessable> {
        let problem = if self.requests_per_window == 0 {
            Some(("requests_per_window", "must be at least 1"))
        } else if !(self.window_seconds.is_finite() && self.window_seconds > 0.0) {
            Some(("window_seconds", "must be more than 0"))
        } else if self.burst_limit == Some(0) {
            Some(("burst_limit", "must be at least 1"))
        } else {
            None
        };
        match problem {
            Some((field, msg)) => Err(Unprocessable::at(&["body", field], msg)),
            None => Ok(()),
        }
    }

    /// Writes the limit into a route rule: one band for the window, and for a token bucket
    /// a burst band beside it when it differs.
    fn write(&self, route: &mut Map<String, Value>) {
        let n = self.requests_per_window;
        let window_rate = f64::from(n) / self.window_seconds;
        let window = json!({"capacity": n, "refill_rate": window_rate});
        route.insert("algorithm".into(), Value::from(self.algorithm.as_str()));
        let burst = (self.algorithm == Algorithm::TokenBucket)
            .then(|| {
                let capacity = self.burst_limit.unwrap_or(n);
                let rate = self.refill_rate.unwrap_or(window_rate);
                (capacity, rate)
            })
            .filter(|&burst| burst != (n, window_rate));
        match burst {
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
    let entries = limiter.rule_entries();
    rules.find(id).map(|rule| config_of(rule, &entries))
}

fn config_of(rule: &Rule, entries: &[crate::RuleEntry]) -> Config {
    let fields = rule.limit().map(Fields::of);
    let entry = entries
        .iter()
        .find(|entry| entry.target == RuleTarget::Rule(rule.id().to_owned()));
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

fn native_of(id: &str, entries: &[crate::RuleEntry]) -> Option<Value> {
    entries
        .iter()
        .find(|entry| entry.target == RuleTarget::Rule(id.to_owned()))
        .map(|entry| entry.rule.clone())
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
