//! Who may change the limits and read the admin API, and who may ask for decisions.
//!
//! With an admin token (`TOLLGATE_ADMIN_TOKEN`), an admin request must carry
//! `Authorization: Bearer <token>` (the scheme in any case, RFC 9110 §11.1); an event stream
//! may instead carry a one-time ticket from `POST /admin/tickets` (see [`super::tickets`]).
//! Without one, admin requests are accepted from this host only: a loopback peer, a
//! loopback `Host`, and no proxy's headers (see [`super::browsers`]). Either way, what
//! [`Browsers::check`](super::browsers::Browsers::check) refuses is refused first.
//!
//! With a check token (`TOLLGATE_CHECK_TOKEN`), the decision routes (`/check`,
//! `/check/{key}`, `/settle`, `/status/{key}`, `/stats/{key}`, `/auth`) need `Authorization: Bearer <check token>`.
//!
//! Tokens are compared in constant time and never logged.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::browsers::Refusal;
use super::json::detail;

/// A bearer token, compared in constant time in its content (its length is not secret).
#[derive(Clone)]
pub(crate) struct Secret(Box<[u8]>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

impl Secret {
    pub(crate) fn new(token: String) -> Self {
        Self(token.into_bytes().into_boxed_slice())
    }

    /// Whether `headers` carry `Authorization: Bearer <this>`.
    fn is_in(&self, headers: &HeaderMap) -> bool {
        self.is_bearer(headers.get(AUTHORIZATION).map(HeaderValue::as_bytes))
    }

    /// Whether `authorization` (a header's or gRPC metadata's value) is `Bearer <this>`.
    pub(crate) fn is_bearer(&self, authorization: Option<&[u8]>) -> bool {
        let given = authorization.and_then(bearer).unwrap_or_default();
        bool::from(given.ct_eq(&self.0))
    }
}

/// The token of `Authorization: Bearer <token>`, the scheme in any case.
fn bearer(authorization: &[u8]) -> Option<&[u8]> {
    let space = authorization.iter().position(|&byte| byte == b' ')?;
    let (scheme, token) = authorization.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii_start())
}

/// How admin requests are allowed.
#[derive(Debug, Clone)]
pub(crate) enum Admin {
    /// From this host only.
    LoopbackOnly,
    /// With this bearer token, from anywhere.
    Token(Secret),
}

/// Why an admin request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No token, or not the right one.
    BadToken,
    /// No token is set and the peer is not loopback (or unknown).
    NotLoopback,
    /// No token is set and the request is not from this host after all.
    NotFromThisHost(Refusal),
}

impl Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::BadToken => unauthorized(
                "this needs `Authorization: Bearer <token>` with the service's admin token",
            ),
            Refused::NotLoopback => unauthorized(
                "no admin token is set (TOLLGATE_ADMIN_TOKEN), so this is accepted from this host only",
            ),
            Refused::NotFromThisHost(refusal) => refused(refusal.status(), refusal.to_string()),
        }
    }
}

/// Whether a route also takes a one-time ticket in place of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tickets {
    Refused,
    Accepted,
}

impl Admin {
    pub(crate) fn loopback_only() -> Self {
        Admin::LoopbackOnly
    }

    pub(crate) fn token(token: String) -> Self {
        Admin::Token(Secret::new(token))
    }

    /// Whether `request` may change the limits or read the admin API, once the browser
    /// checks have passed it.
    fn allows(
        &self,
        request: &Request,
        state: &super::State,
        tickets: Tickets,
    ) -> Result<(), Refused> {
        match self {
            Admin::Token(expected) => {
                if expected.is_in(request.headers())
                    || (tickets == Tickets::Accepted
                        && ticket_of(request).is_some_and(|ticket| state.tickets.redeem(ticket)))
                {
                    Ok(())
                } else {
                    Err(Refused::BadToken)
                }
            }
            Admin::LoopbackOnly => {
                let peer = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(peer)| peer.ip().to_canonical());
                if !peer.is_some_and(|ip| ip.is_loopback()) {
                    return Err(Refused::NotLoopback);
                }
                state
                    .browsers
                    .check_from_this_host(request)
                    .map_err(Refused::NotFromThisHost)
            }
        }
    }
}

/// The `ticket` of the request's query.
fn ticket_of(request: &Request) -> Option<&str> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("ticket="))
}

/// Lets through admin requests; answers anything else 401, 403 or 415 with
/// `{"detail": "<why>"}` (and `WWW-Authenticate` on a 401).
pub(crate) async fn require_admin(
    State(state): State<Arc<super::State>>,
    request: Request,
    next: Next,
) -> Response {
    admit(&state, request, next, Tickets::Refused).await
}

/// [`require_admin`], for the event streams: a one-time ticket stands for the token.
pub(crate) async fn require_admin_or_ticket(
    State(state): State<Arc<super::State>>,
    request: Request,
    next: Next,
) -> Response {
    admit(&state, request, next, Tickets::Accepted).await
}

async fn admit(state: &super::State, request: Request, next: Next, tickets: Tickets) -> Response {
    if let Err(refusal) = state.browsers.check(&request) {
        return refused(refusal.status(), refusal.to_string());
    }
    match state.admin.allows(&request, state, tickets) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// Lets through decision requests with the check token, when one is set.
pub(crate) async fn require_check_token(
    State(state): State<Arc<super::State>>,
    request: Request,
    next: Next,
) -> Response {
    match &state.check_token {
        Some(token) if !token.is_in(request.headers()) => unauthorized(
            "this needs `Authorization: Bearer <token>` with the service's check token \
             (TOLLGATE_CHECK_TOKEN)",
        ),
        _ => next.run(request).await,
    }
}

fn unauthorized(message: &str) -> Response {
    refused(StatusCode::UNAUTHORIZED, message.to_owned())
}

fn refused(status: StatusCode, message: String) -> Response {
    let mut response = detail(status, message);
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for given in [&b"Bearer s3cret"[..], b"bearer s3cret", b"BEARER  s3cret"] {
            assert_eq!(bearer(given), Some(&b"s3cret"[..]), "{given:?}");
        }
        for given in [&b"Basic s3cret"[..], b"Bearers3cret", b"s3cret"] {
            assert_eq!(bearer(given), None, "{given:?}");
        }
    }
}
