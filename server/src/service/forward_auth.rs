//! `/auth`: the limiter behind a gateway's external authorization (nginx `auth_request`,
//! Traefik `forwardAuth`, Caddy `forward_auth`). The gateway asks before it proxies a
//! request, describing it in headers; the answer is the layer's, for that request.
//!
//! The original request's method and URI come from one pair of headers: `X-Original-Method`
//! and `X-Original-URI` (set by the shipped nginx configuration), or `X-Forwarded-Method`
//! and `X-Forwarded-Uri` (sent by Traefik and Caddy). The client is found as the layer finds
//! it, with the gateway as the trusted proxy (see [`Service::client_identity`]); the rule by
//! `Query::route(method, path)` on the URI's path, as the layer does. Allowed: `200` with an
//! empty body and the rate limit headers, in the limiter's configured style; refused: the
//! layer's `429`, rendered as the layer renders it (or the status
//! `X-Tollgate-Deny-Status` asks for, since nginx passes on only 2xx, 401 and 403); Redis
//! out under the closed policy: the layer's `503`.
//!
//! [`Service::client_identity`]: super::Service::client_identity

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use tollgate::http::{AmbiguousPath, forwarded_path};
use tollgate::render;

/// The original method, as nginx is configured to send it.
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
/// The original URI, as nginx is configured to send it (`$request_uri`).
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
/// The original method, as Traefik and Caddy send it.
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
/// The original URI, as Traefik and Caddy send it.
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
/// The status a refusal is answered with instead of 429, 400 or 503.
static X_TOLLGATE_DENY_STATUS: HeaderName = HeaderName::from_static("x-tollgate-deny-status");
/// The status a refusal answered with `X-Tollgate-Deny-Status` had.
static X_TOLLGATE_STATUS: HeaderName = HeaderName::from_static("x-tollgate-status");

/// A header of the gateway's request that cannot be used: answered 400, naming it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum BadHeader {
    #[error(
        "{header} is missing: the gateway must send the original request's method and URI \
         (nginx: X-Original-Method and X-Original-URI; Traefik and Caddy send \
         X-Forwarded-Method and X-Forwarded-Uri)"
    )]
    Missing { header: &'static str },
    #[error("{header} is sent more than once")]
    Repeated { header: &'static str },
    #[error("{header} is not an HTTP method")]
    NotAMethod { header: &'static str },
    #[error("{header} is not a request URI whose path starts with /")]
    NotAPath { header: &'static str },
    #[error("{header} cannot be decided as the upstream would read it: {problem}")]
    Ambiguous {
        header: &'static str,
        problem: AmbiguousPath,
    },
    #[error(
        "X-Original-Method/X-Original-URI (nginx) and X-Forwarded-Method/X-Forwarded-Uri \
         (Traefik, Caddy) are both present: a gateway sends one pair, so one of them came from \
         the client; the gateway must drop the other pair"
    )]
    BothPairs,
    #[error("X-Tollgate-Deny-Status must be a status from 400 to 499, such as 403")]
    DenyStatus,
}

impl BadHeader {
    /// The header at fault.
    fn header(&self) -> &'static str {
        match self {
            BadHeader::Missing { header }
            | BadHeader::Repeated { header }
            | BadHeader::NotAMethod { header }
            | BadHeader::NotAPath { header }
            | BadHeader::Ambiguous { header, .. } => header,
            BadHeader::BothPairs => "X-Original-URI",
            BadHeader::DenyStatus => "X-Tollgate-Deny-Status",
        }
    }
}

/// The answer to a gateway request `/auth` cannot use (400).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BadForwardAuth {
    /// Always `"invalid_forward_auth_header"`.
    error: &'static str,
    /// The header at fault, e.g. `"X-Original-URI"`.
    header: &'static str,
    /// What is wrong with it.
    message: String,
}

impl IntoResponse for BadHeader {
    fn into_response(self) -> Response {
        let body = BadForwardAuth {
            error: "invalid_forward_auth_header",
            header: self.header(),
            message: self.to_string(),
        };
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

/// Decides the request a gateway describes, as the layer would decide it. Any method: some
/// gateways send the original one.
#[utoipa::path(
    get,
    path = "/auth",
    params(
        ("X-Original-Method" = Option<String>, Header, description = "The original request's method (nginx, as the shipped configuration sets it)"),
        ("X-Original-URI" = Option<String>, Header, description = "The original request's URI, path and query (nginx: `$request_uri`)"),
        ("X-Forwarded-Method" = Option<String>, Header, description = "The original request's method (Traefik, Caddy), instead of X-Original-Method"),
        ("X-Forwarded-Uri" = Option<String>, Header, description = "The original request's URI (Traefik, Caddy), instead of X-Original-URI"),
        ("X-Client-ID" = Option<String>, Header, description = "The client, as the gateway names it; else X-Forwarded-For, else the gateway's address (as the layer reads them)"),
        ("X-Tollgate-Deny-Status" = Option<u16>, Header, description = "A 4xx status to answer a refusal with instead of 429 (403 for nginx's auth_request)"),
    ),
    responses(
        (status = 200, description = "Allowed: an empty body, and the rate limit headers for the gateway to copy"),
        (status = 429, description = "Refused: `Retry-After`, the rate limit headers and the layer's JSON body (or the status X-Tollgate-Deny-Status asks for)"),
        (status = 400, description = "The original method or URI is missing or not usable, or X-Client-ID is invalid", body = BadForwardAuth),
        (status = 500, description = "The rules cannot answer the request (an unknown tier or a cost the rule cannot take)"),
        (status = 503, description = "Redis cannot decide and the failure policy is closed"),
    ),
    tag = "check"
)]
pub(crate) async fn check(State(state): State<Arc<super::State>>, request: Request) -> Response {
    let headers = request.headers();
    let deny_status = match deny_status(headers) {
        Ok(status) => status,
        Err(bad) => return bad.into_response(),
    };
    let (method, path) = match original_request(headers) {
        Ok(original) => original,
        Err(bad) => return refuse(bad.into_response(), deny_status),
    };
    let query = match state.queries.query_for(&request, method.as_str(), &path) {
        Ok(query) => query,
        Err(problem) => return render::invalid_client_id(&problem),
    };
    let verdict = match state.limiter.check(query).await {
        Ok(verdict) => verdict,
        Err(error) => return render::check_error(&error),
    };
    match render::refusal::<Body>(&verdict) {
        Some(refused) => refuse(refused, deny_status),
        None => {
            let mut allowed = StatusCode::OK.into_response();
            render::write_headers(allowed.headers_mut(), &verdict);
            allowed
        }
    }
}

/// `refused`, with the status `X-Tollgate-Deny-Status` asks for when it is a refusal the
/// gateway passes on only in that status (400, 429, 503), and its own status in
/// `X-Tollgate-Status` so the gateway can answer the client with it.
fn refuse(mut refused: Response, deny_status: Option<StatusCode>) -> Response {
    let original = refused.status();
    let replaced = matches!(original.as_u16(), 400 | 429 | 503);
    if let Some(status) = deny_status.filter(|_| replaced) {
        *refused.status_mut() = status;
        refused
            .headers_mut()
            .insert(&X_TOLLGATE_STATUS, HeaderValue::from(original.as_u16()));
    }
    refused
}

/// The original request's method and URI, from one gateway's pair of headers.
fn original_request(headers: &HeaderMap) -> Result<(Method, String), BadHeader> {
    let nginx = headers.contains_key(&X_ORIGINAL_METHOD) || headers.contains_key(&X_ORIGINAL_URI);
    let forwarded =
        headers.contains_key(&X_FORWARDED_METHOD) || headers.contains_key(&X_FORWARDED_URI);
    let ((method_name, method_header), (uri_name, uri_header)) = match (nginx, forwarded) {
        (true, true) => return Err(BadHeader::BothPairs),
        (false, true) => (
            ("X-Forwarded-Method", &X_FORWARDED_METHOD),
            ("X-Forwarded-Uri", &X_FORWARDED_URI),
        ),
        _ => (
            ("X-Original-Method", &X_ORIGINAL_METHOD),
            ("X-Original-URI", &X_ORIGINAL_URI),
        ),
    };
    let uri = one(headers, uri_header, uri_name)?.as_bytes();
    let method = one(headers, method_header, method_name)?;
    // Methods are case-sensitive, but a gateway's header may be written in any case, and a
    // `post` must not escape the `POST` rules.
    let method = Method::from_bytes(&method.as_bytes().to_ascii_uppercase()).map_err(|_| {
        BadHeader::NotAMethod {
            header: method_name,
        }
    })?;
    let ambiguous = |problem| BadHeader::Ambiguous {
        header: uri_name,
        problem,
    };
    // The URI parser drops a fragment, which must not hide the rest of the path.
    if uri.contains(&b'#') {
        return Err(ambiguous(AmbiguousPath::Fragment));
    }
    let uri = Uri::try_from(uri)
        .ok()
        .filter(|uri| uri.path().starts_with('/'))
        .ok_or(BadHeader::NotAPath { header: uri_name })?;
    let path = forwarded_path(uri.path()).map_err(ambiguous)?.into_owned();
    Ok((method, path))
}

/// The one value of `header`.
fn one<'h>(
    headers: &'h HeaderMap,
    header: &HeaderName,
    name: &'static str,
) -> Result<&'h HeaderValue, BadHeader> {
    let mut values = headers.get_all(header).iter();
    let value = values.next().ok_or(BadHeader::Missing { header: name })?;
    match values.next() {
        Some(_) => Err(BadHeader::Repeated { header: name }),
        None => Ok(value),
    }
}

/// The status `X-Tollgate-Deny-Status` asks a refusal to be answered with, if any.
fn deny_status(headers: &HeaderMap) -> Result<Option<StatusCode>, BadHeader> {
    if !headers.contains_key(&X_TOLLGATE_DENY_STATUS) {
        return Ok(None);
    }
    let value = one(headers, &X_TOLLGATE_DENY_STATUS, "X-Tollgate-Deny-Status")?;
    StatusCode::from_bytes(value.as_bytes())
        .ok()
        .filter(StatusCode::is_client_error)
        .map(Some)
        .ok_or(BadHeader::DenyStatus)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::extract::ConnectInfo;

    use serde_json::Value;
    use tower::ServiceExt;

    use super::super::Service;
    use super::*;
    use tollgate::{Limiter, Rules};

    const RULES: &str = r#"{
        "default": {"limit": "100/minute"},
        "routes": [
            {"path": "/api/data", "limit": "2/hour"},
            {"path": "/api/submit", "methods": ["POST"], "limit": "3/minute"}
        ],
        "clients": {"ip:203.0.113.7": {"limit": "7/minute"}}
    }"#;

    async fn app() -> axum::Router {
        let rules = Rules::from_json(RULES).unwrap();
        let limiter = Limiter::builder().rules(rules).build().await.unwrap();
        Service::new(limiter).router()
    }

    /// `/auth` asked with `method`, from `peer`, with these headers.
    async fn ask(
        app: &axum::Router,
        method: &str,
        peer: &str,
        headers: &[(&str, &[u8])],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::builder().method(method).uri("/auth");
        for (name, value) in headers {
            request = request.header(*name, HeaderValue::from_bytes(value).unwrap());
        }
        let request = request
            .extension(ConnectInfo(peer.parse::<SocketAddr>().unwrap()))
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    const GATEWAY: &str = "127.0.0.1:40000";

    /// Request headers, by name and raw value.
    type Headers<'a> = Vec<(&'a str, &'a [u8])>;

    #[tokio::test]
    async fn nginx_headers_allow_then_refuse_with_the_headers() {
        let app = app().await;
        let nginx: &[(&str, &[u8])] = &[
            ("x-original-method", b"GET"),
            ("x-original-uri", b"/api/data?page=2&q=%20x"),
            ("x-client-id", b"alice"),
            ("x-forwarded-for", b"198.51.100.1"),
        ];
        for remaining in ["1", "0"] {
            let (status, headers, body) = ask(&app, "GET", GATEWAY, nginx).await;
            assert_eq!(status, StatusCode::OK);
            assert!(body.is_empty());
            assert_eq!(headers["x-ratelimit-limit"], "2");
            assert_eq!(headers["x-ratelimit-remaining"], remaining);
            assert!(headers.contains_key("x-ratelimit-reset"));
            assert!(!headers.contains_key("retry-after"));
        }
        let (status, headers, body) = ask(&app, "GET", GATEWAY, nginx).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers["x-ratelimit-limit"], "2");
        assert_eq!(headers["x-ratelimit-remaining"], "0");
        let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=1800).contains(&retry_after), "{retry_after}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "rate_limited");

        // What nginx's configuration asks for: the refusal as a 403, headers and all.
        let mut asking_403 = nginx.to_vec();
        asking_403.push(("x-tollgate-deny-status", b"403"));
        let (status, headers, _) = ask(&app, "GET", GATEWAY, &asking_403).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["x-ratelimit-limit"], "2");
        assert!(headers.contains_key("retry-after"));

        // Another client, and another route, count apart.
        let mut bob = nginx.to_vec();
        bob[2] = ("x-client-id", b"bob");
        assert_eq!(ask(&app, "GET", GATEWAY, &bob).await.0, StatusCode::OK);
        let mut other_route = nginx.to_vec();
        other_route[1] = ("x-original-uri", b"/elsewhere");
        let (status, headers, _) = ask(&app, "GET", GATEWAY, &other_route).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-ratelimit-limit"], "100");
        // The deny status changes nothing for an allowed request.
        asking_403[2] = ("x-client-id", b"carol");
        assert_eq!(
            ask(&app, "GET", GATEWAY, &asking_403).await.0,
            StatusCode::OK
        );
    }

    /// Every spelling of `/api/data` that was tried counts against `/api/data`'s 2/minute;
    /// what an upstream could read otherwise is refused.
    #[tokio::test]
    async fn dot_segments_and_encodings_cannot_pick_another_rule() {
        let app = app().await;
        let ask_for = |uri: &'static [u8], method: &'static [u8]| -> Headers<'static> {
            vec![
                ("x-original-method", method),
                ("x-original-uri", uri),
                ("x-client-id", b"mallory"),
            ]
        };
        let mut remaining = Vec::new();
        for uri in [
            &b"/static/../api/data"[..],
            b"/static/x/../../api/data",
            b"/static/%2e%2e/api/data",
            b"http://evil.example/static/../api/data",
            b"/api/%64ata",
            b"/api//data",
            b"/api/./data",
        ] {
            let (status, headers, _) = ask(&app, "GET", GATEWAY, &ask_for(uri, b"GET")).await;
            let limit = headers
                .get("x-ratelimit-limit")
                .map(|v| v.to_str().unwrap().to_owned());
            remaining.push((String::from_utf8_lossy(uri).into_owned(), status, limit));
        }
        for (uri, status, limit) in &remaining[..2] {
            assert_eq!(
                (*status, limit.as_deref()),
                (StatusCode::OK, Some("2")),
                "{uri}"
            );
        }
        for (uri, status, limit) in &remaining[2..] {
            assert_eq!(
                (*status, limit.as_deref()),
                (StatusCode::TOO_MANY_REQUESTS, Some("2")),
                "{uri}"
            );
        }

        // A lower-case method is the method: `post` counts under the POST rule.
        let (status, headers, _) =
            ask(&app, "GET", GATEWAY, &ask_for(b"/api/submit", b"post")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-ratelimit-limit"], "3");

        for (uri, problem) in [
            (&b"/static/..%2Fapi/data"[..], "encoded"),
            (b"/static/x#/api/data", "'#'"),
            (b"/../api/data", "above the root"),
            (b"/api/data%00", "NUL"),
        ] {
            let (status, _, body) = ask(&app, "GET", GATEWAY, &ask_for(uri, b"GET")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri:?}");
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["header"], "X-Original-URI");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains(problem), "{message}");
            // Asked for the gateway's refusal status, with the real one beside it.
            let mut nginx = ask_for(uri, b"GET");
            nginx.push(("x-tollgate-deny-status", b"403"));
            let (status, headers, _) = ask(&app, "GET", GATEWAY, &nginx).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(headers["x-tollgate-status"], "400");
        }
    }

    /// The headers and the refusal follow the style the limiter is configured with.
    #[tokio::test]
    async fn answers_in_the_configured_style() {
        let rules = Rules::from_json(
            r#"{"headers": "ietf", "problem_details": true,
                                         "default": {"limit": "1/hour"}}"#,
        )
        .unwrap();
        let limiter = Limiter::builder().rules(rules).build().await.unwrap();
        let app = Service::new(limiter).router();
        let nginx: &[(&str, &[u8])] = &[
            ("x-original-method", b"GET"),
            ("x-original-uri", b"/"),
            ("x-client-id", b"erin"),
            ("x-tollgate-deny-status", b"403"),
        ];
        let (status, headers, _) = ask(&app, "GET", GATEWAY, nginx).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["ratelimit-policy"], r#""default";q=1;w=3600"#);
        assert!(headers.contains_key("ratelimit"));
        assert!(!headers.contains_key("x-ratelimit-limit"));
        let (status, headers, body) = ask(&app, "GET", GATEWAY, nginx).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["content-type"], "application/problem+json");
        assert_eq!(headers["ratelimit-policy"], r#""default";q=1;w=3600"#);
        assert!(headers.contains_key("retry-after"));
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["violated-policies"][0], "default");
    }

    /// Traefik's forwardAuth asks with the original method and its X-Forwarded-* headers,
    /// X-Forwarded-For being the address it saw.
    #[tokio::test]
    async fn traefik_headers_choose_the_route_and_the_client() {
        let app = app().await;
        let traefik: &[(&str, &[u8])] = &[
            ("x-forwarded-method", b"POST"),
            ("x-forwarded-proto", b"https"),
            ("x-forwarded-host", b"api.example.com"),
            ("x-forwarded-uri", b"/api/submit?draft=1"),
            ("x-forwarded-for", b"203.0.113.7"),
        ];
        let (status, headers, _) = ask(&app, "POST", GATEWAY, traefik).await;
        assert_eq!(status, StatusCode::OK);
        // The client is the address Traefik saw, whose override is 7/minute; the route's
        // rule is POST /api/submit.
        assert_eq!(headers["x-ratelimit-limit"], "7");
        assert_eq!(headers["x-ratelimit-remaining"], "6");
    }

    /// Caddy's forward_auth asks with GET, the original method in X-Forwarded-Method.
    #[tokio::test]
    async fn caddy_headers_choose_the_route_and_the_client() {
        let app = app().await;
        let caddy: &[(&str, &[u8])] = &[
            ("x-forwarded-method", b"GET"),
            ("x-forwarded-uri", b"/api/data"),
            ("x-forwarded-proto", b"http"),
            ("x-forwarded-host", b"localhost"),
            ("x-forwarded-for", b"198.51.100.9"),
            ("x-client-id", b"dave"),
        ];
        for expected in [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
        ] {
            let (status, headers, _) = ask(&app, "GET", GATEWAY, caddy).await;
            assert_eq!(status, expected);
            assert_eq!(headers["x-ratelimit-limit"], "2");
        }
    }

    /// A peer that is not a trusted proxy is keyed by its own address, whatever it sends.
    #[tokio::test]
    async fn an_untrusted_peer_cannot_name_its_client() {
        let app = app().await;
        let headers: &[(&str, &[u8])] = &[
            ("x-original-method", b"GET"),
            ("x-original-uri", b"/api/data"),
            ("x-client-id", b"someone-else"),
        ];
        for expected in [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
        ] {
            assert_eq!(
                ask(&app, "GET", "203.0.113.50:1", headers).await.0,
                expected
            );
        }
        let other: &[(&str, &[u8])] = &[
            ("x-original-method", b"GET"),
            ("x-original-uri", b"/api/data"),
            ("x-client-id", b"yet-another"),
        ];
        assert_eq!(
            ask(&app, "GET", "203.0.113.50:1", other).await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test]
    async fn bad_headers_are_400s_naming_the_header() {
        let app = app().await;
        let uri: (&str, &[u8]) = ("x-original-uri", b"/api/data");
        let get: (&str, &[u8]) = ("x-original-method", b"GET");
        let cases: Vec<(Headers, &str, &str)> = vec![
            (vec![], "X-Original-URI", "is missing"),
            (vec![get], "X-Original-URI", "is missing"),
            (vec![uri], "X-Original-Method", "is missing"),
            (
                vec![("x-forwarded-method", b"GET")],
                "X-Forwarded-Uri",
                "is missing",
            ),
            (
                vec![("x-forwarded-uri", b"/a")],
                "X-Forwarded-Method",
                "is missing",
            ),
            (vec![uri, uri, get], "X-Original-URI", "more than once"),
            (
                vec![uri, ("x-original-method", b"GE T")],
                "X-Original-Method",
                "not an HTTP method",
            ),
            (
                vec![uri, ("x-original-method", b"")],
                "X-Original-Method",
                "not an HTTP method",
            ),
            (
                vec![get, ("x-original-uri", b"api/data")],
                "X-Original-URI",
                "starts with /",
            ),
            (
                vec![get, ("x-original-uri", b"*")],
                "X-Original-URI",
                "starts with /",
            ),
            (
                vec![get, ("x-original-uri", b"/a b")],
                "X-Original-URI",
                "starts with /",
            ),
            (
                vec![get, ("x-original-uri", b"/caf\xc3\xa9\xff")],
                "X-Original-URI",
                "starts with /",
            ),
            (
                vec![get, ("x-original-uri", b"")],
                "X-Original-URI",
                "starts with /",
            ),
            (
                vec![get, uri, ("x-forwarded-uri", b"/cheap")],
                "X-Original-URI",
                "both present",
            ),
            (
                vec![get, uri, ("x-tollgate-deny-status", b"200")],
                "X-Tollgate-Deny-Status",
                "from 400 to 499",
            ),
            (
                vec![get, uri, ("x-tollgate-deny-status", b"forbidden")],
                "X-Tollgate-Deny-Status",
                "from 400 to 499",
            ),
        ];
        for (headers, header, says) in cases {
            let (status, _, body) = ask(&app, "GET", GATEWAY, &headers).await;
            let body: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{headers:?}: not JSON: {e}"));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?}: {body}");
            assert_eq!(body["error"], "invalid_forward_auth_header", "{body}");
            assert_eq!(body["header"], header, "{headers:?}: {body}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains(says), "{headers:?}: {message}");
        }
        // An X-Client-ID the layer would refuse is refused alike, without echoing it.
        let (status, _, body) = ask(
            &app,
            "GET",
            GATEWAY,
            &[get, uri, ("x-client-id", b"secret value")],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "invalid_client_id");
        assert!(!body.to_string().contains("secret"), "{body}");
    }
}
