//! Request extensions your own middleware sets for the layer: the request's [`Tier`], its
//! [`Cost`], and the [`ClientIdentity`] your authentication decided.

use std::fmt;
use std::sync::Arc;

use crate::key::ClientKey;

/// The tier of a request, for rules files with `tiers`. Your own authentication inserts it
/// as a request extension before the rate limit layer runs; clients cannot choose it with a
/// header. Requests without one use the file's `default_tier`, or the base rules.
///
/// # Example
///
/// ```
/// use axum::{body::Body, http::{Request, StatusCode}, routing::get, Router};
/// use tower::ServiceExt;
/// use tollgate::{Limiter, RateLimitLayer, Rules, Tier};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{
///     "default": {"limit": "1/minute"},
///     "tiers": {"pro": {"default": {"limit": "100/minute"}}}
/// }"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let app = Router::new().route("/", get(|| async { "hi" })).layer(RateLimitLayer::new(limiter));
///
/// let mut request = Request::get("/").header("x-client-id", "alice").body(Body::empty())?;
/// request.extensions_mut().insert(Tier::new("pro")); // normally done by your auth layer
/// let response = app.oneshot(request).await?;
/// assert_eq!(response.status(), StatusCode::OK);
/// assert_eq!(response.headers()["x-ratelimit-limit"], "100");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tier(Arc<str>);

impl Tier {
    /// The tier named `name` in the rules file's `tiers`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// Its name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a request takes from every band of its rule, instead of the rule's `cost`: your
/// middleware (or handler, ahead of the layer) weighs the request by what it uses, such as
/// the tokens an LLM call asks for or the bytes of an upload. From 1 to the smallest
/// capacity of the limit; outside that, the request is answered 500 (`invalid_cost`) and
/// the reason is logged.
///
/// # Example
///
/// ```
/// use axum::{body::Body, http::{Request, StatusCode}, routing::post, Router};
/// use tower::ServiceExt;
/// use tollgate::{Cost, Limiter, RateLimitLayer, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "10000/minute"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let app = Router::new().route("/v1/completions", post(|| async { "..." }))
///     .layer(RateLimitLayer::new(limiter));
///
/// let mut request = Request::post("/v1/completions").header("x-client-id", "alice").body(Body::empty())?;
/// request.extensions_mut().insert(Cost::new(1500)); // the tokens asked for
/// let response = app.oneshot(request).await?;
/// assert_eq!(response.status(), StatusCode::OK);
/// assert_eq!(response.headers()["x-ratelimit-remaining"], "8500");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cost(u32);

impl Cost {
    /// A request that takes `units` from every band.
    pub fn new(units: u32) -> Self {
        Self(units)
    }

    /// The units it takes.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// The client of a request, as your own authentication decided it: the layer (and every
/// HTTP front, through [`RequestQueries`](crate::http::RequestQueries)) counts the request
/// against this key instead of reading `X-Client-ID`, `X-Forwarded-For` or the peer
/// address. Your middleware inserts it as a request extension before the rate limit layer
/// runs, once it knows who is calling (a verified API key, a session, a token's subject).
///
/// **The layer believes it without question: your middleware vouches for it.** Insert it
/// only from what your app has verified, never from a value the client chose unchecked
/// (the raw `X-Client-ID` it sent, a token you have not validated): whoever can set it
/// picks whose limits a request spends, and which `clients` override applies. Requests
/// without it are identified as before, from headers only when the peer is a trusted proxy.
///
/// # Example
///
/// ```
/// use axum::{body::Body, extract::Request, http::StatusCode, middleware::{self, Next}, routing::get, Router};
/// use tower::ServiceExt;
/// use tollgate::{ClientIdentity, ClientKey, Limiter, RateLimitLayer, Rules};
///
/// // The app's own authentication: a known API key names its user.
/// async fn authenticate(mut request: Request, next: Next) -> axum::response::Response {
///     let user = match request.headers().get("x-api-key").map(|key| key.as_bytes()) {
///         Some(b"key-of-alice") => Some("alice"),
///         Some(b"key-of-bob") => Some("bob"),
///         _ => None,
///     };
///     if let Some(user) = user {
///         request.extensions_mut().insert(ClientIdentity(ClientKey::id(user)));
///     }
///     next.run(request).await
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"},
///     "clients": {"id:bob": {"limit": "100/hour"}}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let app = Router::new()
///     .route("/", get(|| async { "hi" }))
///     .layer(RateLimitLayer::new(limiter))
///     // Added last, so it runs first: the identity is there when the layer looks.
///     .layer(middleware::from_fn(authenticate));
///
/// let as_user = |key: &str| Request::get("/").header("x-api-key", key).body(Body::empty()).unwrap();
/// assert_eq!(app.clone().oneshot(as_user("key-of-alice")).await?.status(), StatusCode::OK);
/// assert_eq!(app.clone().oneshot(as_user("key-of-alice")).await?.status(), StatusCode::TOO_MANY_REQUESTS);
/// // bob's own limit, from the rules' `clients`.
/// let bob = app.oneshot(as_user("key-of-bob")).await?;
/// assert_eq!(bob.headers()["x-ratelimit-limit"], "100");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity(pub ClientKey);
