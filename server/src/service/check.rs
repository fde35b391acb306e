//! Checks: `GET /check/{key}` (the key service's shape) and `POST /check` (the tiered check
//! service's shape), both one [`Limiter::check`](tollgate::Limiter::check); and peeks, which
//! take nothing and tell every band: `GET /status/{key}` and `POST /check` with `"peek":
//! true`, both one [`Limiter::peek`](tollgate::Limiter::peek).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::RETRY_AFTER;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::json::{Body, Unprocessable, detail};
use tollgate::http::forwarded_path;
use tollgate::{
    CheckError, ClientKey, DecidedBy, InvalidClientId, Limit, MAX_CLIENT_ID_LEN, Query, Verdict,
    render,
};

/// The answer to an allowed `GET /check/{key}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct KeyAllowed {
    /// Always `"ok"`.
    status: String,
    /// The key checked.
    key: String,
    /// The key's limit: its own (`POST /configure`) or the default, e.g. `"10/second"`.
    rate_limit: String,
    /// When it was checked, RFC 3339 in UTC.
    timestamp: String,
}

/// The answer to a refused `GET /check/{key}` (429).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct KeyRefused {
    /// `"Rate limit exceeded: <limit>"`.
    error: String,
    /// The key checked.
    key: String,
    /// The key's limit.
    rate_limit: String,
    /// Whole seconds until a call could be allowed.
    retry_after: u64,
}

/// Checks `key` against its own limit or the default rule. Every call counts, allowed or not.
#[utoipa::path(
    get,
    path = "/check/{key}",
    params(("key" = String, Path, description = "The key to check: 1 to 128 visible ASCII characters, as an `X-Client-ID`")),
    responses(
        (status = 200, description = "Within its limit", body = KeyAllowed),
        (status = 429, description = "Over its limit; `Retry-After` says for how long", body = KeyRefused),
        (status = 422, description = "A key that is not 1 to 128 visible ASCII characters"),
        (status = 503, description = "Redis cannot decide and the failure policy is closed"),
    ),
    tag = "check"
)]
pub(crate) async fn by_key(
    State(state): State<Arc<super::State>>,
    KeyInPath { key, client }: KeyInPath,
) -> Response {
    let verdict = match asked(&state, Query::new(&client), Ask::Check).await {
        Ok(verdict) => verdict,
        Err(answer) => return answer,
    };
    let rate_limit = rate_of(verdict.limit());
    let mut response = if verdict.allowed() {
        Json(KeyAllowed {
            status: "ok".into(),
            key,
            rate_limit,
            timestamp: now_rfc3339(),
        })
        .into_response()
    } else {
        let retry_after = verdict.decision().map_or(1, |d| d.retry_after_secs());
        let body = KeyRefused {
            error: format!("Rate limit exceeded: {rate_limit}"),
            key,
            rate_limit,
            retry_after,
        };
        (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response()
    };
    add_headers(response.headers_mut(), &verdict);
    response
}

/// A check of an identifier, in a tier.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckRequest {
    /// Who is checked, e.g. `"user:123"`: 1 to 128 visible ASCII characters, as an
    /// `X-Client-ID`.
    identifier: String,
    /// The tier; without it, the rules file's `default_tier`.
    #[serde(default)]
    tier: Option<String>,
    /// What the call takes from every band, instead of the rule's cost.
    #[serde(default)]
    cost: Option<u32>,
    /// The rule, by its identity (`tollgate check-rules` lists them), instead of the tier's
    /// default.
    #[serde(default)]
    rule: Option<String>,
    /// With `path`: the rule the rules file gives this method and path.
    #[serde(default)]
    method: Option<String>,
    /// With `method` (GET without it): the rule the rules file gives this path, by its
    /// normal form (dot segments removed, unreserved characters decoded, slashes merged). A
    /// path another server could read differently (a `#`, a `..` above the root, `%2F`,
    /// `%5C`, a NUL) is a 422.
    #[serde(default)]
    path: Option<String>,
    /// Take nothing and count nothing: answer what a check would (200 or 429), with every
    /// band of the rule as it is now in `bands`.
    #[serde(default)]
    peek: bool,
    /// Take `cost` (or the rule's) as an estimate, held as a reservation to settle with what
    /// was used (`POST /settle`): an allowed answer's `reservation` is its id. Unsettled, it
    /// stays at the estimate when it expires (`TOLLGATE_RESERVATION_TIMEOUT_SECS`).
    #[serde(default)]
    settle: bool,
}

/// What a check would answer now, taking nothing, with every band of the rule: the answer
/// of `GET /status/{key}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Status {
    /// The key or identifier.
    key: String,
    /// Whether a check now would be allowed.
    allowed: bool,
    /// The rule's identity.
    rule: String,
    /// The limit, in the rules file's words (`"10/minute + 100/hour"`), or `"unlimited"`.
    rate_limit: String,
    /// Whole seconds until a check would be allowed; `null` when it would be now.
    retry_after: Option<u64>,
    /// Every band of the limit as it is now, in the rule's order; empty when the rule is
    /// unlimited or the store could not tell.
    bands: Vec<BandView>,
    /// Who answered: `memory`, `redis`, `local_fallback`, `fail_open`, `unlimited`...
    decided_by: String,
}

/// One band of a rule as it is now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct BandView {
    /// The band's capacity.
    limit: u32,
    /// Its period in seconds: a window's length, or the time a token bucket takes to fill.
    period: f64,
    /// Units used now: `limit - remaining`.
    used: u32,
    /// Units left now.
    remaining: u32,
    /// Unix time, in seconds, when the band is full again.
    reset_at: f64,
}

/// `verdict`, a peek's, as a [`Status`] of `key`.
fn status_of(key: String, verdict: &Verdict) -> Status {
    Status {
        key,
        allowed: verdict.allowed(),
        rule: verdict.rule().to_owned(),
        rate_limit: rate_of(verdict.limit()),
        retry_after: verdict
            .decision()
            .filter(|_| !verdict.allowed())
            .map(|decision| decision.retry_after_secs()),
        bands: bands_of(verdict).unwrap_or_default(),
        decided_by: verdict.decided_by().as_str().to_owned(),
    }
}

/// A peek's bands, as the answers write them; `None` for a check's verdict.
fn bands_of(verdict: &Verdict) -> Option<Vec<BandView>> {
    let bands = verdict.bands();
    (!bands.is_empty()).then(|| {
        bands
            .iter()
            .map(|band| BandView {
                limit: band.limit,
                period: band.period.as_secs_f64(),
                used: band.used(),
                remaining: band.remaining,
                reset_at: unix_secs(band.reset),
            })
            .collect()
    })
}

/// What checking `key` now would answer, with every band, taking nothing.
#[utoipa::path(
    get,
    path = "/status/{key}",
    params(("key" = String, Path, description = "The key: 1 to 128 visible ASCII characters, as an `X-Client-ID`")),
    responses(
        (status = 200, description = "The key's bands; `allowed` says whether a check now would be", body = Status),
        (status = 422, description = "A key that is not 1 to 128 visible ASCII characters"),
        (status = 503, description = "Redis cannot answer and the failure policy is closed"),
    ),
    tag = "check"
)]
pub(crate) async fn status(
    State(state): State<Arc<super::State>>,
    KeyInPath { key, client }: KeyInPath,
) -> Response {
    match asked(&state, Query::new(&client), Ask::Peek).await {
        Ok(verdict) => Json(status_of(key, &verdict)).into_response(),
        Err(answer) => answer,
    }
}

/// Whether to take (a check) or only look (a peek).
#[derive(Clone, Copy)]
enum Ask {
    Check,
    Peek,
}

/// The limiter's verdict on `query`; otherwise the answer to give instead: a 400 for a
/// question the rules cannot answer, the 503 of a closed failure policy.
async fn asked(state: &super::State, query: Query<'_>, ask: Ask) -> Result<Verdict, Response> {
    let verdict = match ask {
        Ask::Check => state.limiter.check(query).await,
        Ask::Peek => state.limiter.peek(query).await,
    }
    .map_err(|error| detail(StatusCode::BAD_REQUEST, error.to_string()))?;
    match unavailable(&verdict) {
        Some(unavailable) => Err(unavailable),
        None => Ok(verdict),
    }
}

/// The `{key}` of a route's path and the client it names, as an `X-Client-ID` would: a key
/// that is not one is a 422 naming it.
pub(crate) struct KeyInPath {
    pub(crate) key: String,
    pub(crate) client: ClientKey,
}

impl<S: Send + Sync> FromRequestParts<S> for KeyInPath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(key) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let client = client_named(["path", "key"], &key).map_err(IntoResponse::into_response)?;
        Ok(Self { key, client })
    }
}

/// The answer to an allowed `POST /check`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CheckAllowed {
    /// Always `true`.
    allowed: bool,
    /// Tokens (or requests) left in the band closest to running out; `null` when the rule
    /// is unlimited or Redis could not decide and the policy let it through.
    tokens_remaining: Option<u32>,
    /// Unix time, in seconds, when that band is full again.
    reset_at: Option<f64>,
    /// That band's capacity.
    limit: Option<u32>,
    /// Always `null`.
    retry_after: Option<u64>,
    /// The rule's identity.
    rule: String,
    /// Who decided: `memory`, `redis`, `lease`, `local_fallback`, `fail_open`, `unlimited`.
    decided_by: String,
    /// For a peek (`"peek": true`): every band of the rule as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bands: Option<Vec<BandView>>,
    /// With `"settle": true`: the reservation's id, for `POST /settle` (absent when the rule
    /// is unlimited or Redis could not decide: nothing is held then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reservation: Option<String>,
}

/// Why a `POST /check` was refused (the `detail` of a 429).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CheckRefusal {
    /// Always `false`.
    allowed: bool,
    /// Whole seconds until a call could be allowed.
    retry_after: u64,
    /// Unix time, in seconds, when the band is full again.
    reset_at: f64,
    /// The band's capacity.
    limit: u32,
    /// The rule's identity.
    rule: String,
    /// For a peek (`"peek": true`): every band of the rule as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bands: Option<Vec<BandView>>,
}

/// A refused `POST /check` (429).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CheckRefused {
    detail: CheckRefusal,
}

/// Checks an identifier, in a tier, under the tier's default rule (or the rule named).
#[utoipa::path(
    post,
    path = "/check",
    request_body = CheckRequest,
    responses(
        (status = 200, description = "Allowed (a peek: would be allowed, with `bands`; `\"settle\": true`: held, with its `reservation`)", body = CheckAllowed),
        (status = 429, description = "Refused; `Retry-After` says for how long", body = CheckRefused),
        (status = 400, description = "An unknown tier (`{\"detail\": \"Invalid tier: gold\"}`) or rule"),
        (status = 422, description = "A body that does not fit: `detail` lists where and why"),
        (status = 503, description = "Redis cannot decide and the failure policy is closed"),
    ),
    tag = "check"
)]
pub(crate) async fn by_identifier(
    State(state): State<Arc<super::State>>,
    Body(request): Body<CheckRequest>,
) -> Response {
    let client = match client_named(["body", "identifier"], &request.identifier) {
        Ok(client) => client,
        Err(invalid) => return invalid.into_response(),
    };
    let mut query = Query::new(&client);
    if let Some(tier) = &request.tier {
        query = query.tier(tier);
    }
    let path = match request.path.as_deref().map(forwarded_path) {
        Some(Err(ambiguous)) => {
            let problem = json!([{"loc": ["body", "path"], "msg": ambiguous.to_string(), "type": "value_error"}]);
            return detail(StatusCode::UNPROCESSABLE_ENTITY, problem);
        }
        Some(Ok(path)) => Some(path),
        None => None,
    };
    if let Some(path) = &path {
        query = query.route(request.method.as_deref().unwrap_or("GET"), path);
    }
    if let Some(rule) = &request.rule {
        query = query.rule(rule);
    }
    if let Some(cost) = request.cost {
        query = query.cost(cost);
    }
    if request.peek && request.settle {
        let problem = json!([{"loc": ["body", "settle"], "msg": "a peek holds nothing to settle: ask for one of `peek` and `settle`", "type": "value_error"}]);
        return detail(StatusCode::UNPROCESSABLE_ENTITY, problem);
    }
    let (asked, reservation) = if request.peek {
        (state.limiter.peek(query).await, None)
    } else if request.settle {
        match state.limiter.reserve(query).await {
            Ok(reserved) => {
                let (verdict, reservation) = reserved.into_parts();
                (Ok(verdict), reservation.map(tollgate::Reservation::detach))
            }
            Err(error) => (Err(error), None),
        }
    } else {
        (state.limiter.check(query).await, None)
    };
    let verdict = match asked {
        Ok(verdict) => verdict,
        Err(CheckError::UnknownTier(unknown)) => {
            return detail(
                StatusCode::BAD_REQUEST,
                format!("Invalid tier: {}", unknown.name()),
            );
        }
        Err(error @ CheckError::Cost { .. }) => {
            let problem =
                json!([{"loc": ["body", "cost"], "msg": error.to_string(), "type": "value_error"}]);
            return detail(StatusCode::UNPROCESSABLE_ENTITY, problem);
        }
        // The store keeps no reservations: the service's doing, not the caller's.
        Err(error @ CheckError::Reservation { .. }) => {
            return detail(StatusCode::INTERNAL_SERVER_ERROR, error.to_string());
        }
        Err(error) => return detail(StatusCode::BAD_REQUEST, error.to_string()),
    };
    if let Some(unavailable) = unavailable(&verdict) {
        return unavailable;
    }
    let bands = bands_of(&verdict);
    let decision = verdict.decision();
    let mut response = match decision {
        Some(decision) if !verdict.allowed() => {
            let detail = CheckRefusal {
                allowed: false,
                retry_after: decision.retry_after_secs(),
                reset_at: unix_secs(decision.reset),
                limit: decision.limit,
                rule: verdict.rule().to_owned(),
                bands,
            };
            (StatusCode::TOO_MANY_REQUESTS, Json(CheckRefused { detail })).into_response()
        }
        _ => Json(CheckAllowed {
            allowed: true,
            tokens_remaining: decision.map(|d| d.remaining),
            reset_at: decision.map(|d| unix_secs(d.reset)),
            limit: decision.map(|d| d.limit),
            retry_after: None,
            rule: verdict.rule().to_owned(),
            decided_by: verdict.decided_by().as_str().to_owned(),
            bands,
            reservation,
        })
        .into_response(),
    };
    add_headers(response.headers_mut(), &verdict);
    response
}

/// A settlement: a reservation's id and the units used.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettleRequest {
    /// The id `POST /check` with `"settle": true` answered.
    reservation: String,
    /// The units used: what is taken from every band instead of the estimate (more is owed:
    /// the bands go below empty, and the identifier is refused until their refill pays it
    /// back; less is given back).
    cost: u64,
}

/// The answer to `POST /settle`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SettleAnswer {
    /// Always `true`.
    settled: bool,
    /// The units reserved.
    estimate: u32,
    /// The units used.
    cost: u64,
    /// Units left in the band closest to running out (0 while a debt is owed).
    tokens_remaining: u32,
    /// Unix time, in seconds, when that band is full again.
    reset_at: f64,
    /// That band's capacity.
    limit: u32,
}

/// Settles a reservation with the units used, once, on whichever instance sharing the
/// store made it.
#[utoipa::path(
    post,
    path = "/settle",
    request_body = SettleRequest,
    responses(
        (status = 200, description = "Settled", body = SettleAnswer),
        (status = 404, description = "No open reservation has this id: not one, or expired (it then stayed at its estimate)"),
        (status = 409, description = "Settled already"),
        (status = 422, description = "A body that does not fit: `detail` lists where and why"),
        (status = 503, description = "The store could not settle it"),
    ),
    tag = "check"
)]
pub(crate) async fn settle(
    State(state): State<Arc<super::State>>,
    Body(request): Body<SettleRequest>,
) -> Response {
    match state
        .limiter
        .settle(&request.reservation, request.cost)
        .await
    {
        Ok(settled) => {
            let decision = settled.decision();
            Json(SettleAnswer {
                settled: true,
                estimate: settled.estimate(),
                cost: settled.used(),
                tokens_remaining: decision.remaining,
                reset_at: unix_secs(decision.reset),
                limit: decision.limit,
            })
            .into_response()
        }
        Err(tollgate::SettleError::AlreadySettled) => {
            detail(StatusCode::CONFLICT, "this reservation was settled already")
        }
        Err(tollgate::SettleError::Unknown) => detail(
            StatusCode::NOT_FOUND,
            "no open reservation has this id: it is not one, or it expired at its estimate",
        ),
        Err(error) => detail(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

/// The 503 of a refusal by the closed failure policy.
fn unavailable(verdict: &Verdict) -> Option<Response> {
    if verdict.decided_by() != DecidedBy::FailClosed || verdict.allowed() {
        return None;
    }
    let retry_after = verdict.retry_after().unwrap_or_default().as_secs().max(1);
    let mut response = detail(
        StatusCode::SERVICE_UNAVAILABLE,
        "the rate limiter cannot decide: Redis does not answer and the failure policy is closed",
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after));
    Some(response)
}

/// `X-RateLimit-*`, and `Retry-After` on a refusal.
fn add_headers(headers: &mut HeaderMap, verdict: &Verdict) {
    if let Some(decision) = verdict.decision() {
        render::write_headers(headers, verdict);
        if !verdict.allowed() {
            headers.insert(RETRY_AFTER, HeaderValue::from(decision.retry_after_secs()));
        }
    }
}

/// The client a key or identifier names: `id:<key>`, the client the layer sees in a
/// request with `X-Client-ID: <key>`, so that the service and an app's layer count the
/// same client alike, and so that every key checked can be configured. Otherwise a 422 at
/// `loc` (the value is not echoed).
pub(crate) fn client_named(loc: [&str; 2], key: &str) -> Result<ClientKey, Unprocessable> {
    let why = match ClientKey::try_id(key) {
        Ok(client) => return Ok(client),
        Err(InvalidClientId::Empty) => "it is empty".to_owned(),
        Err(InvalidClientId::TooLong { len }) => format!("it is {len} bytes long"),
        Err(InvalidClientId::NotVisibleAscii { position }) => {
            format!("the byte at position {position} is a space, a control character or not ASCII")
        }
        Err(other) => other.to_string(),
    };
    let message = format!(
        "must be 1 to {MAX_CLIENT_ID_LEN} visible ASCII characters, as an X-Client-ID: {why}"
    );
    Err(Unprocessable::at(&loc, message))
}

/// A limit in the rules file's words: `"10/second"`, or `"unlimited"`.
pub(crate) fn rate_of(limit: Option<&Limit>) -> String {
    limit.map_or_else(|| "unlimited".into(), Limit::rate)
}

fn unix_secs(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// Now, RFC 3339 in UTC, to the microsecond.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}
