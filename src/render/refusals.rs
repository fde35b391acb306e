//! The answers a front gives by itself: `429 Too Many Requests` (tollgate's JSON body or
//! RFC 9457 problem details), `503` when the limiter cannot decide, `500` for a request the
//! rules cannot answer, `400` for a client ID that cannot be used.

use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::headers::{reported_policy, set_rate_limit_headers, write_rate_limit_headers};
use crate::Decision;
use crate::decision::{DecidedBy, ceil_secs};
use crate::header_style::Rendering;
use crate::key::InvalidClientId;
use crate::limiter::{CheckError, Verdict};
use crate::rules::Limit;

static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
static APPLICATION_PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// The problem type of draft-ietf-httpapi-ratelimit-headers (-10 and -11) for a request over
/// quota.
pub(crate) const QUOTA_EXCEEDED_TYPE: &str =
    "https://iana.org/assignments/http-problem-types#quota-exceeded";
/// That problem type's title.
pub(crate) const QUOTA_EXCEEDED_TITLE: &str =
    "Request cannot be satisfied as assigned quota has been exceeded";

/// The answer to a refused `verdict`, as every HTTP front gives it; `None` when it is
/// allowed (a shadow rule's would-be refusal included): then the request goes on, with
/// [`write_headers`](super::write_headers).
///
/// - Refused by a band: `429 Too Many Requests` with `Retry-After`, the rate limit fields
///   in the verdict's [style](Verdict::header_style), and tollgate's JSON body
///   `{"error":"rate_limited","message":…,"retry_after":N,"limit":L,"remaining":R,"reset":T}`,
///   or, with [`problem_details`](Verdict::problem_details), an RFC 9457
///   `application/problem+json` body of the `quota-exceeded` problem type whose
///   `violated-policies` names the band reported.
/// - Refused by the `deny` failure policy (Redis cannot decide): `503 Service Unavailable`,
///   `{"error":"rate_limiter_unavailable","message":…,"retry_after":N}` with `Retry-After`.
/// - A cost the limit can never hold ([`DecidedBy::OverCapacity`]): the `500` of
///   [`check_error`] for a cost out of range.
///
/// ```
/// use axum::body::Body;
/// use http::StatusCode;
/// use tollgate::{ClientKey, Limiter, Query, Rules, render};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let alice = ClientKey::id("alice");
/// let allowed = limiter.check(Query::new(&alice)).await?;
/// assert!(render::refusal::<Body>(&allowed).is_none());
/// let refused = limiter.check(Query::new(&alice)).await?;
/// let response = render::refusal::<Body>(&refused).expect("a refusal");
/// assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
/// assert!(response.headers().contains_key("retry-after"));
/// # Ok(())
/// # }
/// ```
pub fn refusal<B: From<Bytes>>(verdict: &Verdict) -> Option<Response<B>> {
    if verdict.allowed() {
        return None;
    }
    Some(match verdict.decision() {
        Some(decision) => too_many_requests(
            verdict.rendering,
            verdict.rule(),
            verdict.limit(),
            &decision,
        ),
        None if verdict.decided_by() == DecidedBy::OverCapacity => {
            over_capacity(verdict.rule(), verdict.limit())
        }
        None => unavailable(verdict.retry_after().unwrap_or_default()),
    })
}

/// `429 Too Many Requests` for a refused `decision`, rendered as `rendering` says: the rate
/// limit headers of its style, `Retry-After`, and either tollgate's JSON body
/// `{"error":"rate_limited","message":…,"retry_after":N,"limit":L,"remaining":R,"reset":T}`
/// or an RFC 9457 `application/problem+json` body of the `quota-exceeded` problem type,
/// whose `violated-policies` names the band reported. `rule` and `limit` are as for
/// [`write_rate_limit_headers`].
fn too_many_requests<B: From<Bytes>>(
    rendering: Rendering,
    rule: &str,
    limit: Option<&Limit>,
    decision: &Decision,
) -> Response<B> {
    if rendering.is_default() {
        return x_ratelimit_refusal(decision);
    }
    let retry_after = decision.retry_after_secs();
    let (content_type, body) = if rendering.problem_details {
        let violated = reported_policy(rule, limit, decision);
        (
            APPLICATION_PROBLEM_JSON.clone(),
            problem_body(&violated, retry_after),
        )
    } else {
        (
            APPLICATION_JSON.clone(),
            refusal_body(decision, retry_after),
        )
    };
    let mut response = Response::new(B::from(Bytes::from(body)));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    write_rate_limit_headers(headers, rendering.headers, rule, limit, decision);
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// A refusal's `quota-exceeded` problem details, naming the policy `violated`.
fn problem_body(violated: &str, retry_after: u64) -> String {
    let violated = serde_json::Value::from(violated);
    format!(
        r#"{{"type":"{QUOTA_EXCEEDED_TYPE}","title":"{QUOTA_EXCEEDED_TITLE}","status":429,"detail":"Too many requests; retry after {retry_after} s.","violated-policies":[{violated}]}}"#
    )
}

/// Tollgate's own JSON body of a refusal.
fn refusal_body(decision: &Decision, retry_after: u64) -> String {
    format!(
        r#"{{"error":"rate_limited","message":"Too many requests; retry after {retry_after} s.","retry_after":{retry_after},"limit":{},"remaining":{},"reset":{}}}"#,
        decision.limit,
        decision.remaining,
        decision.reset_unix_secs(),
    )
}

/// The default refusal: `X-RateLimit-*` headers and tollgate's JSON body.
///
/// Under a flood, consecutive refusals are mostly identical (same limit, nothing left, same
/// reset second, same wait), so each thread keeps the last one rendered, body and headers,
/// and clones it: no formatting, and no hashing of header names, then.
fn x_ratelimit_refusal<B: From<Bytes>>(decision: &Decision) -> Response<B> {
    /// (limit, remaining, reset, retry after) → body and headers.
    type Rendered = ((u32, u32, u64, u64), Bytes, HeaderMap);
    thread_local! {
        static LAST: RefCell<Option<Rendered>> = const { RefCell::new(None) };
    }
    let retry_after = decision.retry_after_secs();
    let reset = decision.reset_unix_secs();
    let key = (decision.limit, decision.remaining, reset, retry_after);
    let (body, headers) = LAST.with_borrow_mut(|last| match last {
        Some((seen, body, headers)) if *seen == key => (body.clone(), headers.clone()),
        _ => {
            let body = Bytes::from(refusal_body(decision, retry_after));
            let mut headers = HeaderMap::with_capacity(5);
            headers.insert(CONTENT_TYPE, APPLICATION_JSON.clone());
            set_rate_limit_headers(&mut headers, decision);
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
            *last = Some((key, body.clone(), headers.clone()));
            (body, headers)
        }
    });
    let mut response = Response::new(B::from(body));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    *response.headers_mut() = headers;
    response
}

/// `503 Service Unavailable` when Redis cannot decide and the policy is `deny`:
/// `{"error":"rate_limiter_unavailable","message":…,"retry_after":N}` with `Retry-After`.
fn unavailable<B: From<Bytes>>(retry_after: Duration) -> Response<B> {
    let retry_after = ceil_secs(retry_after).max(1);
    let body = format!(
        r#"{{"error":"rate_limiter_unavailable","message":"The rate limiter cannot decide right now; retry after {retry_after} s.","retry_after":{retry_after}}}"#
    );
    let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, body);
    response
        .headers_mut()
        .insert(RETRY_AFTER, retry_after.into());
    response
}

/// The `500` of a cost out of range, for a verdict refused because its cost can never fit:
/// the same answer as the [`CheckError::Cost`] a query with that cost gets.
fn over_capacity<B: From<Bytes>>(rule: &str, limit: Option<&Limit>) -> Response<B> {
    let max = limit.map_or(0, Limit::smallest_capacity);
    let body = serde_json::json!({
        "error": "invalid_cost",
        "message": format!("the request's cost cannot be taken under rule {rule:?}: it must be from 1 to {max} (the smallest capacity of its limit)"),
    });
    tracing::error!(
        rule,
        "request refused: its cost is more than its rule's smallest capacity"
    );
    json_response(StatusCode::INTERNAL_SERVER_ERROR, body.to_string())
}

/// `500 Internal Server Error` for a request the rules cannot answer:
/// `{"error":"unknown_tier",…}` for a [`Tier`](crate::Tier) the rules do not have,
/// `{"error":"invalid_cost",…}` for a [`Cost`](crate::Cost) the rule's bands cannot take,
/// `{"error":"unknown_rule",…}` for a rule asked for by a name the rules do not have. The
/// app and its rules disagree, so it is logged too.
///
/// ```
/// use axum::body::Body;
/// use http::StatusCode;
/// use tollgate::{ClientKey, Limiter, Query, Rules, render};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "10/minute"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let error = limiter.check(Query::new(&ClientKey::id("a")).tier("gold")).await.unwrap_err();
/// let response = render::check_error::<Body>(&error);
/// assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
/// # Ok(())
/// # }
/// ```
pub fn check_error<B: From<Bytes>>(error: &CheckError) -> Response<B> {
    let code = match error {
        CheckError::UnknownTier(_) => "unknown_tier",
        CheckError::Cost { .. } => "invalid_cost",
        _ => "unknown_rule",
    };
    tracing::error!(%error, "request refused: the rate limit rules cannot answer it");
    let body = serde_json::json!({
        "error": code,
        "message": error.to_string(),
    });
    json_response(StatusCode::INTERNAL_SERVER_ERROR, body.to_string())
}

/// `400 Bad Request` for an `X-Client-ID` that cannot be used:
/// `{"error":"invalid_client_id","message":…}`. The header's value is never echoed.
///
/// ```
/// use axum::body::Body;
/// use http::StatusCode;
/// use tollgate::{InvalidClientId, render};
///
/// let response = render::invalid_client_id::<Body>(&InvalidClientId::Repeated);
/// assert_eq!(response.status(), StatusCode::BAD_REQUEST);
/// assert_eq!(response.headers()["content-type"], "application/json");
/// ```
pub fn invalid_client_id<B: From<Bytes>>(problem: &InvalidClientId) -> Response<B> {
    let body = serde_json::json!({
        "error": "invalid_client_id",
        "message": problem.to_string(),
    });
    json_response(StatusCode::BAD_REQUEST, body.to_string())
}

fn json_response<B: From<Bytes>>(status: StatusCode, body: String) -> Response<B> {
    let mut response = Response::new(B::from(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON.clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header_style::HeaderStyle;
    use crate::render::{RATELIMIT, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET};
    use std::time::{Duration, SystemTime};

    #[test]
    fn denied_response() {
        let reset = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let decision = Decision::denied(10, reset, Duration::from_millis(2500));
        let response: Response<Bytes> =
            too_many_requests(Rendering::default(), "default", None, &decision);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = response.headers();
        assert_eq!(h[RETRY_AFTER], "3");
        assert_eq!(h[CONTENT_TYPE], "application/json");
        assert_eq!(h[&X_RATELIMIT_LIMIT], "10");
        assert_eq!(h[&X_RATELIMIT_REMAINING], "0");
        assert_eq!(h[&X_RATELIMIT_RESET], "1700000000");
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"], "rate_limited");
        assert_eq!(body["retry_after"], 3);
        assert_eq!(body["limit"], 10);
        assert_eq!(body["remaining"], 0);
        assert_eq!(body["reset"], 1_700_000_000u64);
    }

    #[test]
    fn problem_details_response() {
        let limit = crate::rules::default_limit(r#"{"default": {"limit": "5/minute"}}"#);
        let reset = SystemTime::now() + Duration::from_secs(12);
        let decision = Decision::denied(5, reset, Duration::from_millis(11_200));
        let rendering = Rendering {
            headers: HeaderStyle::XRateLimit,
            problem_details: true,
        };
        let response: Response<Bytes> =
            too_many_requests(rendering, "/say \"hi\"", Some(&limit), &decision);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = response.headers();
        assert_eq!(h[CONTENT_TYPE], "application/problem+json");
        assert_eq!(h[RETRY_AFTER], "12");
        assert_eq!(h[&X_RATELIMIT_REMAINING], "0");
        assert!(h.get(&RATELIMIT).is_none());
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["type"], QUOTA_EXCEEDED_TYPE);
        assert_eq!(body["title"], QUOTA_EXCEEDED_TITLE);
        assert_eq!(body["status"], 429);
        assert_eq!(
            body["violated-policies"],
            serde_json::json!(["/say \"hi\""])
        );
    }

    #[test]
    fn unavailable_response() {
        let response: Response<Bytes> = unavailable(Duration::from_millis(500));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert!(response.headers().get(&X_RATELIMIT_LIMIT).is_none());
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"], "rate_limiter_unavailable");
        assert_eq!(body["retry_after"], 1);
    }

    #[test]
    fn bad_client_id_response_is_json_and_does_not_echo() {
        let response: Response<Bytes> = invalid_client_id(&InvalidClientId::TooLong { len: 500 });
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"], "invalid_client_id");
        assert!(body["message"].as_str().unwrap().contains("500 bytes long"));
    }
}
