//! Who may change the limits and read the admin API.
//!
//! With a token (`TOLLGATE_ADMIN_TOKEN`), a request must carry `Authorization: Bearer
//! <token>`; the token is compared in constant time and never logged. Without one, such
//! requests are accepted from loopback peers only.

use std::fmt;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

/// How admin requests are allowed.
#[derive(Clone)]
pub(crate) enum Admin {
    /// From loopback peers only.
    LoopbackOnly,
    /// With this bearer token, from anywhere.
    Token(Box<[u8]>),
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Admin::LoopbackOnly => f.write_str("LoopbackOnly"),
            Admin::Token(_) => f.write_str("Token(<hidden>)"),
        }
    }
}

/// Why an admin request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No token, or not the right one.
    BadToken,
    /// No token is set and the peer is not loopback (or unknown).
    NotLoopback,
}

impl Refused {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Refused::BadToken => {
                "this needs `Authorization: Bearer <token>` with the service's admin token"
            }
            Refused::NotLoopback => {
                "no admin token is set (TOLLGATE_ADMIN_TOKEN), so this is accepted from this host only"
            }
        }
    }
}

impl Admin {
    pub(crate) fn loopback_only() -> Self {
        Admin::LoopbackOnly
    }

    pub(crate) fn token(token: String) -> Self {
        Admin::Token(token.into_bytes().into_boxed_slice())
    }

    /// Whether `request` may change the limits or read the admin API.
    pub(crate) fn allows(&self, request: &Request) -> Result<(), Refused> {
        match self {
            Admin::Token(expected) => {
                let given = request
                    .headers()
                    .get(AUTHORIZATION)
                    .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
                    .unwrap_or_default();
                // Constant time in the token's content (its length is not secret).
                if bool::from(given.ct_eq(expected)) {
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
                if peer.is_some_and(|ip| ip.is_loopback()) {
                    Ok(())
                } else {
                    Err(Refused::NotLoopback)
                }
            }
        }
    }
}

/// Lets through what [`Admin::allows`]; answers anything else 401 with
/// `{"detail": "<why>"}` and a `WWW-Authenticate` header.
pub(crate) async fn require_admin(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<super::State>>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match state.admin.allows(&request) {
        Ok(()) => next.run(request).await,
        Err(refused) => {
            let mut response =
                super::json::detail(axum::http::StatusCode::UNAUTHORIZED, refused.message());
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}
