//! Everything the layer writes into responses, rendered from a [`Verdict`] in one place.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use std::cell::RefCell;
use std::time::Duration;

use crate::Decision;
use crate::decision::ceil_secs;
use crate::key::InvalidClientId;
use crate::limiter::{CheckError, Verdict};

/// `X-RateLimit-Limit`: the capacity of the reported band (the one closest to running out).
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: whole units that band has left after this request.
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`: Unix time in seconds when that band is full again.
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A header value for a count: below 4096 from a table of static values made once (cloning
/// copies a pointer), otherwise made now.
fn count(n: u32) -> HeaderValue {
    const SMALL: u32 = 4096;
    static TABLE: std::sync::LazyLock<Box<[HeaderValue]>> = std::sync::LazyLock::new(|| {
        (0..SMALL)
            .map(|n| {
                let text: &'static str = Box::leak(n.to_string().into_boxed_str());
                HeaderValue::from_static(text)
            })
            .collect()
    });
    match TABLE.get(n as usize) {
        Some(value) => value.clone(),
        None => n.into(),
    }
}

/// Adds `X-RateLimit-Limit`, `-Remaining` and `-Reset`, replacing any the inner service set.
pub(crate) fn set_rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(X_RATELIMIT_LIMIT.clone(), count(decision.limit));
    headers.insert(X_RATELIMIT_REMAINING.clone(), count(decision.remaining));
    headers.insert(
        X_RATELIMIT_RESET.clone(),
        unix_time(decision.reset_unix_secs()),
    );
}

/// A header value for a Unix time: each thread keeps the last one, which every request in
/// the same second shares.
fn unix_time(secs: u64) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<(u64, Option<HeaderValue>)> = const { RefCell::new((0, None)) };
    }
    LAST.with_borrow_mut(|(last, value)| match value {
        Some(value) if *last == secs => value.clone(),
        _ => {
            let made = HeaderValue::from(secs);
            *last = secs;
            *value = Some(made.clone());
            made
        }
    })
}

/// `429 Too Many Requests` with the rate limit headers, `Retry-After` and a JSON body
/// `{"error":"rate_limited","message":…,"retry_after":N,"limit":L,"remaining":R,"reset":T}`.
///
/// Under a flood, consecutive refusals are mostly identical (same limit, nothing left, same
/// reset second, same wait), so each thread keeps the last one rendered, body and headers,
/// and clones it: no formatting, and no hashing of header names, then.
pub(crate) fn too_many_requests<B: From<Bytes>>(decision: &Decision) -> Response<B> {
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
            let body = Bytes::from(format!(
                r#"{{"error":"rate_limited","message":"Too many requests; retry after {retry_after} s.","retry_after":{retry_after},"limit":{},"remaining":{},"reset":{reset}}}"#,
                decision.limit, decision.remaining,
            ));
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
pub(crate) fn unavailable<B: From<Bytes>>(retry_after: Duration) -> Response<B> {
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

/// What the layer does with a verdict: answer by itself, or forward the request (and add
/// the headers of the decision, if there is one).
pub(crate) enum Step<B> {
    Respond(Response<B>),
    Forward(Option<Decision>),
}

/// The layer's next step for `verdict`.
pub(crate) fn step<B: From<Bytes>>(verdict: &Verdict) -> Step<B> {
    if verdict.allowed() {
        return Step::Forward(verdict.decision());
    }
    match verdict.decision() {
        Some(decision) => Step::Respond(too_many_requests(&decision)),
        None => Step::Respond(unavailable(verdict.retry_after().unwrap_or_default())),
    }
}

/// `500 Internal Server Error` for a request the rules cannot answer:
/// `{"error":"unknown_tier",…}` for a [`Tier`](crate::Tier) the rules do not have,
/// `{"error":"invalid_cost",…}` for a [`Cost`](crate::Cost) the rule's bands cannot take.
/// The app and its rules disagree, so it is logged too.
pub(crate) fn check_error<B: From<Bytes>>(error: &CheckError) -> Response<B> {
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
pub(crate) fn bad_client_id<B: From<Bytes>>(problem: &InvalidClientId) -> Response<B> {
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
    use std::time::{Duration, SystemTime};

    #[test]
    fn cached_values_are_the_numbers() {
        for n in [0, 1, 9, 10, 99, 100, 1000, 4095, 4096, 70_000, u32::MAX] {
            assert_eq!(count(n), HeaderValue::from(n), "{n}");
        }
        for secs in [
            1_700_000_000,
            1_700_000_000,
            1_700_000_001,
            1_700_000_000,
            0,
        ] {
            assert_eq!(unix_time(secs), HeaderValue::from(secs), "{secs}");
        }
    }

    #[test]
    fn denied_response() {
        let reset = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let decision = Decision::denied(10, reset, Duration::from_millis(2500));
        let response: Response<Bytes> = too_many_requests(&decision);
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
        let response: Response<Bytes> = bad_client_id(&InvalidClientId::TooLong { len: 500 });
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"], "invalid_client_id");
        assert!(body["message"].as_str().unwrap().contains("500 bytes long"));
    }
}
