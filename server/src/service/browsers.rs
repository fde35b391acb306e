//! What a browser may make the admin, write and event routes do: nothing, unless the page
//! is the service's own or one listed. Browsers send other sites' requests with the user's
//! network position (a page can `POST` to `http://127.0.0.1:8000`, and a DNS name can be
//! rebound to it), so these routes refuse, in every mode:
//!
//! - an `Origin` that is neither the request's own (`http` or `https` with the request's
//!   `Host`, so it holds behind a proxy that keeps `Host`) nor listed
//!   (`TOLLGATE_ALLOWED_ORIGINS`), and `Sec-Fetch-Site: cross-site` without a listed
//!   `Origin` (403, WebSocket upgrades included);
//! - a body that is not `application/json`, unless it has no `Content-Type` and no `Origin`
//!   (a non-browser client): no form or `text/plain` body, which a page can send without
//!   asking (415).
//!
//! And without an admin token, where "from this host" is what admits a request:
//!
//! - a `Host` that is not a loopback name or address, nor listed (`TOLLGATE_ALLOWED_HOSTS`):
//!   a rebound name (403);
//! - a request carrying `Forwarded`, `X-Forwarded-For`, `X-Real-IP` or `Via`: a proxy on this
//!   host relays other hosts' requests (401, saying to set the token).
//!
//! As Jupyter (its `Host` and `Origin` checks) and Grafana (its CSRF origin check) do.

use std::net::IpAddr;

use axum::body::HttpBody;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN, TRANSFER_ENCODING, VIA};
use axum::http::{HeaderName, StatusCode};

static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// The headers a proxy adds: their presence means the request was relayed.
static FORWARDING: [HeaderName; 4] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-real-ip"),
    VIA,
];

/// The origins and hosts listed besides the service's own.
#[derive(Debug, Clone, Default)]
pub(crate) struct Browsers {
    /// `scheme://host[:port]`, in lower case.
    allowed_origins: Vec<String>,
    /// `host[:port]` or `host`, in lower case.
    allowed_hosts: Vec<String>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(
        "cross-origin request refused: {origin} is not this service's origin; list it in \
         TOLLGATE_ALLOWED_ORIGINS to allow its pages"
    )]
    Origin { origin: String },
    #[error(
        "cross-site request refused (Sec-Fetch-Site: cross-site); list the page's origin in \
         TOLLGATE_ALLOWED_ORIGINS to allow it"
    )]
    CrossSite,
    #[error(
        "the body must be application/json (a request with no Content-Type is accepted only \
         without an Origin); got {content_type}"
    )]
    ContentType { content_type: String },
    #[error(
        "Host {host} is not a name of this host: without TOLLGATE_ADMIN_TOKEN this is accepted \
         only for localhost and loopback addresses (list other names in TOLLGATE_ALLOWED_HOSTS)"
    )]
    Host { host: String },
    #[error(
        "this request came through a proxy ({header}), so it is not from this host: set \
         TOLLGATE_ADMIN_TOKEN and send it as `Authorization: Bearer <token>`"
    )]
    Relayed { header: &'static str },
}

impl Refusal {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refusal::Origin { .. } | Refusal::CrossSite | Refusal::Host { .. } => {
                StatusCode::FORBIDDEN
            }
            Refusal::ContentType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::Relayed { .. } => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A listed origin or host that cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidListing {
    /// An origin is `http://` or `https://` with a host and an optional port, and nothing
    /// after: no path, no trailing slash.
    #[error(
        "{given:?} is not an origin: write scheme://host[:port], e.g. https://admin.example.com"
    )]
    Origin {
        /// As given.
        given: String,
    },
    /// A host is a name or an address with an optional port.
    #[error("{given:?} is not a host: write a name or an address, with an optional :port")]
    Host {
        /// As given.
        given: String,
    },
}

impl Browsers {
    /// Lists `origin` as one whose pages may call these routes.
    pub(crate) fn allow_origin(&mut self, origin: &str) -> Result<(), InvalidListing> {
        let invalid = || InvalidListing::Origin {
            given: origin.to_owned(),
        };
        let lower = origin.trim().to_ascii_lowercase();
        let authority = lower
            .strip_prefix("http://")
            .or_else(|| lower.strip_prefix("https://"))
            .ok_or_else(invalid)?;
        if !is_authority(authority) {
            return Err(invalid());
        }
        self.allowed_origins.push(lower);
        Ok(())
    }

    /// Lists `host` as a name this host answers to.
    pub(crate) fn allow_host(&mut self, host: &str) -> Result<(), InvalidListing> {
        let lower = host.trim().to_ascii_lowercase();
        if !is_authority(&lower) {
            return Err(InvalidListing::Host {
                given: host.to_owned(),
            });
        }
        self.allowed_hosts.push(lower);
        Ok(())
    }

    /// What every mode refuses.
    pub(crate) fn check(&self, request: &Request) -> Result<(), Refusal> {
        let headers = request.headers();
        let origin = headers.get(ORIGIN);
        match origin {
            Some(origin) => {
                let origin = String::from_utf8_lossy(origin.as_bytes()).to_ascii_lowercase();
                if !self.is_own_or_listed(&origin, request) {
                    return Err(Refusal::Origin { origin });
                }
            }
            None => {
                if headers
                    .get(&SEC_FETCH_SITE)
                    .is_some_and(|site| site.as_bytes().eq_ignore_ascii_case(b"cross-site"))
                {
                    return Err(Refusal::CrossSite);
                }
            }
        }
        if has_body(request) {
            match headers.get(CONTENT_TYPE) {
                Some(content_type) if !is_json(content_type.as_bytes()) => {
                    return Err(Refusal::ContentType {
                        content_type: String::from_utf8_lossy(content_type.as_bytes()).into_owned(),
                    });
                }
                None if origin.is_some() => {
                    return Err(Refusal::ContentType {
                        content_type: "no Content-Type, from a browser page".to_owned(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// What the token-less mode refuses besides: a request that is not from this host. A
    /// request naming no host at all (no `Host`, no authority: not a browser's) has no name
    /// to check.
    pub(crate) fn check_from_this_host(&self, request: &Request) -> Result<(), Refusal> {
        let headers = request.headers();
        if let Some(header) = FORWARDING.iter().find(|name| headers.contains_key(*name)) {
            return Err(Refusal::Relayed {
                header: match header.as_str() {
                    "forwarded" => "Forwarded",
                    "x-forwarded-for" => "X-Forwarded-For",
                    "x-real-ip" => "X-Real-IP",
                    _ => "Via",
                },
            });
        }
        let Some(host) = host_of(request) else {
            return Ok(());
        };
        if is_loopback_host(&host) || self.allowed_hosts.contains(&host) {
            Ok(())
        } else {
            Err(Refusal::Host { host })
        }
    }

    fn is_own_or_listed(&self, origin: &str, request: &Request) -> bool {
        if self.allowed_origins.iter().any(|listed| listed == origin) {
            return true;
        }
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        matches!((authority, host_of(request)), (Some(authority), Some(host)) if authority == host)
    }
}

/// The host the request names, in lower case: its `Host`, else its URI's authority (HTTP/2's
/// `:authority`).
fn host_of(request: &Request) -> Option<String> {
    let host = match request.headers().get(HOST) {
        Some(host) => String::from_utf8_lossy(host.as_bytes()).into_owned(),
        None => request.uri().authority()?.as_str().to_owned(),
    };
    Some(host.to_ascii_lowercase())
}

/// Whether the request has a body to read.
fn has_body(request: &Request) -> bool {
    let headers = request.headers();
    let declared = headers
        .get(CONTENT_LENGTH)
        .is_some_and(|length| length.as_bytes() != b"0")
        || headers.contains_key(TRANSFER_ENCODING);
    declared || !request.body().is_end_stream()
}

/// `application/json`, with any parameters (`; charset=utf-8`).
fn is_json(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&byte| byte == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    essence.eq_ignore_ascii_case(b"application/json")
}

/// `host[:port]`: visible ASCII, no path, no user information.
fn is_authority(authority: &str) -> bool {
    !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// `localhost`, a name under `.localhost` (RFC 6761: never resolved elsewhere), or a
/// loopback address; with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:8000`
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn request(headers: &[(&str, &str)], body: &'static str) -> Request {
        let mut request = Request::post("/configure");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Body::from(body)).unwrap()
    }

    #[test]
    fn loopback_names_and_addresses_with_or_without_a_port() {
        for host in [
            "localhost",
            "localhost:8000",
            "app.localhost:8000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:8000",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "rebind.evil.example:8000",
            "localhost.evil.example",
            "10.0.0.1:8000",
            "",
            "[::2]:80",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn pages_of_other_origins_are_refused_and_the_own_and_listed_are_not() {
        let mut browsers = Browsers::default();
        browsers.allow_origin("https://Admin.Example.com").unwrap();
        let own = [
            ("host", "127.0.0.1:8000"),
            ("origin", "http://127.0.0.1:8000"),
        ];
        assert_eq!(browsers.check(&request(&own, "")), Ok(()));
        let proxied = [
            ("host", "limits.example"),
            ("origin", "https://limits.example"),
        ];
        assert_eq!(browsers.check(&request(&proxied, "")), Ok(()));
        let listed = [
            ("host", "127.0.0.1:8000"),
            ("origin", "https://admin.example.com"),
            ("sec-fetch-site", "cross-site"),
        ];
        assert_eq!(browsers.check(&request(&listed, "")), Ok(()));
        for headers in [
            vec![
                ("host", "127.0.0.1:8000"),
                ("origin", "https://evil.example"),
            ],
            vec![("host", "127.0.0.1:8000"), ("origin", "null")],
            vec![
                ("host", "127.0.0.1:8000"),
                ("origin", "http://127.0.0.1:9999"),
            ],
        ] {
            let refused = browsers.check(&request(&headers, "")).unwrap_err();
            assert!(matches!(refused, Refusal::Origin { .. }), "{refused}");
            assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        }
        let cross_site = [("host", "127.0.0.1:8000"), ("sec-fetch-site", "cross-site")];
        assert_eq!(
            browsers.check(&request(&cross_site, "")),
            Err(Refusal::CrossSite)
        );
    }

    #[test]
    fn bodies_are_json_or_come_from_a_client_that_is_not_a_browser() {
        let browsers = Browsers::default();
        let host = ("host", "localhost:8000");
        let own = ("origin", "http://localhost:8000");
        for accepted in [
            vec![host, ("content-type", "application/json")],
            vec![
                host,
                ("content-type", "Application/JSON; charset=utf-8"),
                own,
            ],
            vec![host],
        ] {
            assert_eq!(
                browsers.check(&request(&accepted, "{}")),
                Ok(()),
                "{accepted:?}"
            );
        }
        for refused in [
            vec![host, ("content-type", "text/plain")],
            vec![host, ("content-type", "application/x-www-form-urlencoded")],
            vec![host, ("content-type", "multipart/form-data; boundary=x")],
            vec![host, own],
        ] {
            let refusal = browsers.check(&request(&refused, "{}")).unwrap_err();
            assert_eq!(
                refusal.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{refused:?}"
            );
        }
        // No body: a reset or a removal, whatever the headers say.
        let bodyless = [host, ("content-type", "text/plain"), own];
        assert_eq!(browsers.check(&request(&bodyless, "")), Ok(()));
    }

    #[test]
    fn without_a_token_relayed_requests_and_other_hosts_are_not_from_this_host() {
        let mut browsers = Browsers::default();
        let headers = |pairs: &[(&str, &str)]| request(pairs, "");
        assert_eq!(
            browsers.check_from_this_host(&headers(&[("host", "localhost:8000")])),
            Ok(())
        );
        assert_eq!(browsers.check_from_this_host(&headers(&[])), Ok(()));
        for (name, value) in [
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
            ("via", "1.1 nginx"),
        ] {
            let refused = browsers
                .check_from_this_host(&headers(&[("host", "localhost"), (name, value)]))
                .unwrap_err();
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
            assert!(
                refused.to_string().contains("TOLLGATE_ADMIN_TOKEN"),
                "{refused}"
            );
        }
        let rebound = headers(&[("host", "rebind.evil.example:8000")]);
        assert!(matches!(
            browsers.check_from_this_host(&rebound),
            Err(Refusal::Host { .. })
        ));
        browsers.allow_host("Rebind.Evil.Example:8000").unwrap();
        assert_eq!(browsers.check_from_this_host(&rebound), Ok(()));
        assert!(browsers.allow_host("a/b").is_err());
        assert!(browsers.allow_origin("https://a.example/").is_err());
        assert!(browsers.allow_origin("a.example").is_err());
    }
}
