//! The rate limit header fields of a verdict: `X-RateLimit-*`, or the IETF
//! `RateLimit-Policy` and `RateLimit` fields, or both.

use std::cell::RefCell;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::Decision;
use crate::decision::ceil_secs;
use crate::header_style::HeaderStyle;
use crate::key::ClientKey;
use crate::limiter::Verdict;
use crate::rules::{Band, Limit};

/// `X-RateLimit-Limit`: the capacity of the reported band (the one closest to running out).
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: whole units that band has left after this request.
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`: Unix time in seconds when that band is full again.
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// `X-RateLimit-Unit`: what the limit counts, when its rule names a unit (`"unit":
/// "tokens"`); absent for requests.
pub static X_RATELIMIT_UNIT: HeaderName = HeaderName::from_static("x-ratelimit-unit");
/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-11): one quota policy item per
/// band of the rule, `"<name>";q=<capacity>;w=<period in seconds>`, and `;qu="<unit>"` when
/// the rule names a unit.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-11): the reported band's service limit
/// item, `"<name>";r=<remaining>;t=<seconds until more quota>`: until the band has one unit
/// more than `r` (the next token of a bucket, a fixed window's end, a sliding window's next
/// expiry), and for a refusal the `Retry-After` wait; with `;pk=:<base64>:`, the client key,
/// when the client is keyed by its address or network ([`Verdict::partition_key`]).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

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
/// the rule's name for a one-band limit, else the name, `#` and the band's position in the
/// rules file's `limits` from 0, as in `/api/data#1`) and `RateLimit` (the band `decision`
/// reports), or both. `limit` is the limit that decided ([`Verdict::limit`]); without it,
/// `RateLimit-Policy` is left out and `RateLimit` is named after the rule.
///
/// For a front that renders one decision under a name of its own (gRPC names a descriptor's
/// limit as Envoy shows it); [`write_headers`] renders a verdict as its limiter says.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use tollgate::{Decision, HeaderStyle, Rules, render};
///
/// let rules = Rules::from_json(r#"{"default": {"limit": "10/minute"}}"#).unwrap();
/// let limit = rules.default_rule().limit();
/// let decision = Decision::allowed(10, 9, SystemTime::now() + Duration::from_secs(6));
/// let mut headers = HeaderMap::new();
/// render::write_rate_limit_headers(&mut headers, HeaderStyle::Ietf, "per_user", limit, &decision);
/// assert_eq!(headers["ratelimit-policy"], r#""per_user";q=10;w=60"#);
/// assert!(headers["ratelimit"].to_str().unwrap().starts_with(r#""per_user";r=9;t="#));
/// ```
pub fn write_rate_limit_headers(
    headers: &mut HeaderMap,
    style: HeaderStyle,
    rule: &str,
    limit: Option<&Limit>,
    decision: &Decision,
) {
    write_fields(headers, style, (rule, limit, None), decision);
}

/// The fields of `decision` in `style`, under `rule` and `limit`, with the partition key
/// if there is one.
fn write_fields(
    headers: &mut HeaderMap,
    style: HeaderStyle,
    (rule, limit, partition): (&str, Option<&Limit>, Option<&ClientKey>),
    decision: &Decision,
) {
    if style.x_ratelimit() {
        set_rate_limit_headers(headers, decision);
        if let Some(unit) = limit.and_then(Limit::unit) {
            // A unit is letters, digits, `_` and `-` (the rules check it).
            if let Ok(value) = HeaderValue::from_str(unit) {
                headers.insert(X_RATELIMIT_UNIT.clone(), value);
            }
        }
    }
    if style.ietf() {
        set_ietf_headers(headers, rule, limit, decision, partition);
    }
}

/// Writes `verdict`'s rate limit fields, in the style its limiter says
/// ([`Verdict::header_style`]); nothing when no band decided (an unlimited rule, or a
/// failure policy's answer). What the layer adds to the inner service's response, and
/// `/auth` to its answer.
///
/// ```
/// use http::HeaderMap;
/// use tollgate::{ClientKey, Limiter, Query, Rules, render};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "10/minute"}, "headers": "both"}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let verdict = limiter.check(Query::new(&ClientKey::id("alice"))).await?;
/// let mut headers = HeaderMap::new();
/// render::write_headers(&mut headers, &verdict);
/// assert_eq!(headers[&render::X_RATELIMIT_REMAINING], "9");
/// assert_eq!(headers[&render::RATELIMIT_POLICY], r#""default";q=10;w=60"#);
/// # Ok(())
/// # }
/// ```
pub fn write_headers(headers: &mut HeaderMap, verdict: &Verdict) {
    let Some(decision) = &verdict.decision() else {
        return;
    };
    let applied = (verdict.rule(), verdict.limit(), verdict.partition_key());
    write_fields(headers, verdict.header_style(), applied, decision);
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
pub(super) fn reported_policy(rule: &str, limit: Option<&Limit>, decision: &Decision) -> String {
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
        if let Some(unit) = limit.unit() {
            let _ = write!(value, ";qu=\"{unit}\"");
        }
    }
    value
}

/// `RateLimit-Policy` for `rule` and `limit`. A policy changes only with the rules, so each
/// thread keeps the last one made, and the requests under the same rule share it.
fn policy_header(rule: &str, limit: &Limit) -> Option<HeaderValue> {
    /// (rule, bands, unit) → value.
    type Made = (Box<str>, Box<[Band]>, Option<Box<str>>, HeaderValue);
    thread_local! {
        static LAST: RefCell<Option<Made>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((seen_rule, seen_bands, seen_unit, value))
            if **seen_rule == *rule
                && **seen_bands == *limit.bands()
                && seen_unit.as_deref() == limit.unit() =>
        {
            Some(value.clone())
        }
        _ => {
            let value = HeaderValue::try_from(policy_value(rule, limit)).ok()?;
            let unit = limit.unit().map(Into::into);
            *last = Some((rule.into(), limit.bands().into(), unit, value.clone()));
            Some(value)
        }
    })
}

/// `RateLimit: "<name>";r=<remaining>;t=<seconds>` for the band reported: `t` is draft-11's
/// effective window, the seconds within which no more than `r` can be used, that is until
/// the band has one unit more (a store that does not say when counts to its reset). For a
/// refusal, `t` is the `Retry-After` wait, which the draft asks not to fall before the
/// window's end. With `partition` (a client key that is no secret), `;pk=:<base64 of
/// the key>:`.
fn service_limit_value(
    rule: &str,
    limit: Option<&Limit>,
    decision: &Decision,
    partition: Option<&ClientKey>,
) -> String {
    use std::fmt::Write;
    let name = reported_policy(rule, limit, decision);
    let seconds = if decision.allowed {
        let more = decision.next_unit.unwrap_or(decision.reset);
        ceil_secs(
            more.duration_since(std::time::SystemTime::now())
                .unwrap_or_default(),
        )
    } else {
        decision.retry_after_secs()
    };
    let mut value = String::with_capacity(name.len() + 24);
    push_sf_string(&mut value, &name);
    let _ = write!(value, ";r={};t={seconds}", decision.remaining);
    if let Some(key) = partition {
        push_partition_key(&mut value, key);
    }
    value
}

/// `;pk=:<base64 of key>:`: the partition key parameter, a structured-field Byte Sequence.
fn push_partition_key(out: &mut String, key: &ClientKey) {
    use base64::Engine;
    out.push_str(";pk=:");
    base64::engine::general_purpose::STANDARD.encode_string(key.to_string(), out);
    out.push(':');
}

/// Adds `RateLimit-Policy` (when the limit is known) and `RateLimit`.
fn set_ietf_headers(
    headers: &mut HeaderMap,
    rule: &str,
    limit: Option<&Limit>,
    decision: &Decision,
    partition: Option<&ClientKey>,
) {
    // Both values are visible ASCII by construction; a value that were not is left out.
    if let Some(value) = limit.and_then(|limit| policy_header(rule, limit)) {
        headers.insert(RATELIMIT_POLICY.clone(), value);
    }
    let value = service_limit_value(rule, limit, decision, partition);
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(RATELIMIT.clone(), value);
    }
}

/// Adds `X-RateLimit-Limit`, `-Remaining` and `-Reset`, replacing any the inner service set.
pub(super) fn set_rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
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
        // A store that says when the next unit comes: `t` counts down to it (draft-11).
        let mut sooner = decision;
        sooner.next_unit = Some(SystemTime::now() + Duration::from_millis(1200));
        write_rate_limit_headers(
            &mut headers,
            HeaderStyle::Ietf,
            "pro:default",
            Some(&limit),
            &sooner,
        );
        assert_eq!(headers[&RATELIMIT], r#""pro:default#1";r=998;t=2"#);
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
    fn a_rules_unit_is_shown_in_both_styles() {
        let tokens = crate::rules::default_limit(
            r#"{"default": {"limits": ["30000/minute", "1000000/day"], "unit": "tokens"}}"#,
        );
        let decision = Decision::allowed(30000, 29000, SystemTime::now());
        let mut headers = HeaderMap::new();
        let style = HeaderStyle::Both;
        write_rate_limit_headers(&mut headers, style, "chat", Some(&tokens), &decision);
        assert_eq!(headers[&X_RATELIMIT_UNIT], "tokens");
        assert_eq!(
            headers[&RATELIMIT_POLICY],
            r#""chat#0";q=30000;w=60;qu="tokens", "chat#1";q=1000000;w=86400;qu="tokens""#
        );
        // The same rule and bands counting requests (after a reload): no unit, no cached one.
        let requests = crate::rules::default_limit(
            r#"{"default": {"limits": ["30000/minute", "1000000/day"]}}"#,
        );
        let mut headers = HeaderMap::new();
        write_rate_limit_headers(&mut headers, style, "chat", Some(&requests), &decision);
        assert!(headers.get(&X_RATELIMIT_UNIT).is_none());
        assert_eq!(
            headers[&RATELIMIT_POLICY],
            r#""chat#0";q=30000;w=60, "chat#1";q=1000000;w=86400"#
        );
    }
}
