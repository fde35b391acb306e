//! Everything the layer writes into responses, rendered from a [`Verdict`] in one place:
//! every front (the layer, the service's endpoints, gRPC) writes rate limit headers and
//! refusals through [`write_rate_limit_headers`] and [`too_many_requests`].

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use std::cell::RefCell;
use std::time::Duration;

use crate::Decision;
use crate::decision::ceil_secs;
use crate::header_style::{HeaderStyle, Rendering};
use crate::key::InvalidClientId;
use crate::limiter::{CheckError, Verdict};
use crate::rules::{Band, Limit};

/// `X-RateLimit-Limit`: the capacity of the reported band (the one closest to running out).
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: whole units that band has left after this request.
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`: Unix time in seconds when that band is full again.
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10): one quota policy item per
/// band of the rule, `"<name>";q=<capacity>;w=<period in seconds>`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10): the reported band's service limit
/// item, `"<name>";r=<remaining>;t=<seconds until reset>`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
static APPLICATION_PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// The problem type of draft-ietf-httpapi-ratelimit-headers-10 for a request over quota.
pub(crate) const QUOTA_EXCEEDED_TYPE: &str =
    "https://iana.org/assignments/http-problem-types#quota-exceeded";
/// That problem type's title.
pub(crate) const QUOTA_EXCEEDED_TITLE: &str =
    "Request cannot be satisfied as assigned quota has been exceeded";

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

/// Writes the rate limit fields of `decision` in `style`, replacing any already there:
/// `X-RateLimit-*`, or `RateLimit-Policy` (one item per band of `limit`, named after `rule`:
/// see [`policy_name`]) and `RateLimit` (the band `decision` reports), or both. `limit` is
/// the limit that decided (`Verdict::limit`); without it, `RateLimit-Policy` is left out and
/// `RateLimit` is named after the rule.
pub(crate) fn write_rate_limit_headers(
    headers: &mut HeaderMap,
    style: HeaderStyle,
    rule: &str,
    limit: Option<&Limit>,
    decision: &Decision,
) {
    if style.x_ratelimit() {
        set_rate_limit_headers(headers, decision);
    }
    if style.ietf() {
        set_ietf_headers(headers, rule, limit, decision);
    }
}

/// [`write_rate_limit_headers`] for a verdict, as its limiter says to render it; nothing
/// when no band decided (an unlimited rule, or a failure policy's answer).
pub(crate) fn write_verdict_headers(headers: &mut HeaderMap, verdict: &Verdict) {
    if let Some(decision) = &verdict.decision {
        let style = verdict.rendering.headers;
        write_rate_limit_headers(
            headers,
            style,
            &verdict.rule,
            verdict.limit.as_ref(),
            decision,
        );
    }
}

/// The name of band `index` of a limit of `bands` bands under `rule`, in `RateLimit-Policy`,
/// `RateLimit` and a problem's `violated-policies`: the rule's identity for a one-band
/// limit, else the identity, `#` and the band's position in the rules file's `limits`,
/// from 0 (`/api/data#1`).
pub(crate) fn policy_name(rule: &str, index: usize, bands: usize) -> String {
    if bands <= 1 {
        rule.to_owned()
    } else {
        format!("{rule}#{index}")
    }
}

/// `name` as a structured-field String: quoted, `"` and `\` escaped. Characters an sf-string
/// cannot hold (controls, non-ASCII) are percent-encoded, byte by byte of their UTF-8.
fn push_sf_string(out: &mut String, name: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {
                let mut utf8 = [0; 4];
                for byte in c.encode_utf8(&mut utf8).bytes() {
                    let _ = write!(out, "%{byte:02X}");
                }
            }
        }
    }
    out.push('"');
}

/// The position in `limit` of the band `decision` reports: the first band of its capacity
/// (the decision names the band by capacity alone), else the first band.
fn reported_band(limit: &Limit, decision: &Decision) -> usize {
    limit
        .bands()
        .iter()
        .position(|band| band.capacity() == decision.limit)
        .unwrap_or(0)
}

/// The policy name of the band `decision` reports; the rule's identity when the limit is
/// not known.
fn reported_policy(rule: &str, limit: Option<&Limit>, decision: &Decision) -> String {
    match limit {
        Some(limit) => policy_name(rule, reported_band(limit, decision), limit.bands().len()),
        None => rule.to_owned(),
    }
}

/// `RateLimit-Policy: "<name>";q=<capacity>;w=<period>, …`, one item per band.
fn policy_value(rule: &str, limit: &Limit) -> String {
    use std::fmt::Write;
    let bands = limit.bands();
    let mut value = String::with_capacity(bands.len() * (rule.len() + 24));
    for (index, band) in bands.iter().enumerate() {
        if index > 0 {
            value.push_str(", ");
        }
        push_sf_string(&mut value, &policy_name(rule, index, bands.len()));
        let window = ceil_secs(band.period()).max(1);
        let _ = write!(value, ";q={};w={window}", band.capacity());
    }
    value
}

/// `RateLimit-Policy` for `rule` and `limit`. A policy changes only with the rules, so each
/// thread keeps the last one made, and the requests under the same rule share it.
fn policy_header(rule: &str, limit: &Limit) -> Option<HeaderValue> {
    /// (rule, bands) → value.
    type Made = (Box<str>, Box<[Band]>, HeaderValue);
    thread_local! {
        static LAST: RefCell<Option<Made>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((seen_rule, seen_bands, value))
            if **seen_rule == *rule && **seen_bands == *limit.bands() =>
        {
            Some(value.clone())
        }
        _ => {
            let value = HeaderValue::try_from(policy_value(rule, limit)).ok()?;
            *last = Some((rule.into(), limit.bands().into(), value.clone()));
            Some(value)
        }
    })
}

/// `RateLimit: "<name>";r=<remaining>;t=<seconds until reset>` for the band reported. For a
/// refusal, `t` is the `Retry-After` wait, as the draft asks when a response has both.
fn service_limit_value(rule: &str, limit: Option<&Limit>, decision: &Decision) -> String {
    use std::fmt::Write;
    let name = reported_policy(rule, limit, decision);
    let seconds = if decision.allowed {
        let until_reset = decision
            .reset
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        ceil_secs(until_reset)
    } else {
        decision.retry_after_secs()
    };
    let mut value = String::with_capacity(name.len() + 24);
    push_sf_string(&mut value, &name);
    let _ = write!(value, ";r={};t={seconds}", decision.remaining);
    value
}

/// Adds `RateLimit-Policy` (when the limit is known) and `RateLimit`.
fn set_ietf_headers(
    headers: &mut HeaderMap,
    rule: &str,
    limit: Option<&Limit>,
    decision: &Decision,
) {
    // Both values are visible ASCII by construction; a value that were not is left out.
    if let Some(value) = limit.and_then(|limit| policy_header(rule, limit)) {
        headers.insert(RATELIMIT_POLICY.clone(), value);
    }
    if let Ok(value) = HeaderValue::try_from(service_limit_value(rule, limit, decision)) {
        headers.insert(RATELIMIT.clone(), value);
    }
}

/// Adds `X-RateLimit-Limit`, `-Remaining` and `-Reset`, replacing any the inner service set.
fn set_rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
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

/// `429 Too Many Requests` for a refused `decision`, rendered as `rendering` says: the rate
/// limit headers of its style, `Retry-After`, and either tollgate's JSON body
/// `{"error":"rate_limited","message":…,"retry_after":N,"limit":L,"remaining":R,"reset":T}`
/// or an RFC 9457 `application/problem+json` body of the `quota-exceeded` problem type,
/// whose `violated-policies` names the band reported. `rule` and `limit` are as for
/// [`write_rate_limit_headers`].
pub(crate) fn too_many_requests<B: From<Bytes>>(
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
/// the verdict's headers, with [`write_verdict_headers`]).
pub(crate) enum Step<B> {
    Respond(Response<B>),
    Forward(Verdict),
}

/// The layer's next step for `verdict`.
pub(crate) fn step<B: From<Bytes>>(verdict: Verdict) -> Step<B> {
    if verdict.allowed() {
        return Step::Forward(verdict);
    }
    match &verdict.decision {
        Some(decision) => Step::Respond(too_many_requests(
            verdict.rendering,
            &verdict.rule,
            verdict.limit.as_ref(),
            decision,
        )),
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
    fn policy_names_are_sf_strings() {
        let mut out = String::new();
        push_sf_string(&mut out, r#"/a"b\c/café"#);
        assert_eq!(out, r#""/a\"b\\c/caf%C3%A9""#);
        assert_eq!(policy_name("/api", 0, 1), "/api");
        assert_eq!(policy_name("/api", 1, 2), "/api#1");
    }

    #[test]
    fn ietf_headers_name_every_band_and_report_one() {
        let limit = crate::rules::default_limit(
            r#"{"default": {"limits": [{"capacity": 10, "refill_rate": 3}, "1000/hour"]}}"#,
        );
        let reset = SystemTime::now() + Duration::from_millis(4500);
        let decision = Decision::allowed(1000, 998, reset);
        let mut headers = HeaderMap::new();
        write_rate_limit_headers(
            &mut headers,
            HeaderStyle::Ietf,
            "pro:default",
            Some(&limit),
            &decision,
        );
        assert_eq!(
            headers[&RATELIMIT_POLICY],
            r#""pro:default#0";q=10;w=4, "pro:default#1";q=1000;w=3600"#
        );
        assert_eq!(headers[&RATELIMIT], r#""pro:default#1";r=998;t=5"#);
        assert!(headers.get(&X_RATELIMIT_LIMIT).is_none());
        write_rate_limit_headers(
            &mut headers,
            HeaderStyle::Both,
            "pro:default",
            None,
            &decision,
        );
        assert_eq!(headers[&X_RATELIMIT_LIMIT], "1000");
        assert_eq!(headers[&RATELIMIT], r#""pro:default";r=998;t=5"#);
        // The same rule with other bands (after a reload): the policy made for it changes.
        let reloaded = crate::rules::default_limit(r#"{"default": {"limit": "1000/minute"}}"#);
        write_rate_limit_headers(
            &mut headers,
            HeaderStyle::Ietf,
            "pro:default",
            Some(&reloaded),
            &decision,
        );
        assert_eq!(headers[&RATELIMIT_POLICY], r#""pro:default";q=1000;w=60"#);
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
        let response: Response<Bytes> = bad_client_id(&InvalidClientId::TooLong { len: 500 });
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"], "invalid_client_id");
        assert!(body["message"].as_str().unwrap().contains("500 bytes long"));
    }
}
