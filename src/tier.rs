//! Tiers: which named rule set applies to a request.

use std::fmt;
use std::sync::Arc;

/// The tier of a request, for rules files with `tiers`. Your own authentication inserts it
/// as a request extension before the rate limit layer runs; clients cannot choose it with a
/// header. Requests without one use the file's `default_tier`, or the base rules.
///
/// # Example
///
/// ```
/// use axum::{body::Body, http::{Request, StatusCode}, routing::get, Router};
/// use tower::ServiceExt;
/// use tollgate::{RateLimitLayer, Rules, Tier};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{
///     "default": {"limit": "1/minute"},
///     "tiers": {"pro": {"default": {"limit": "100/minute"}}}
/// }"#)?;
/// let layer = RateLimitLayer::builder().rules(rules).build().await?;
/// let app = Router::new().route("/", get(|| async { "hi" })).layer(layer);
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

/// A request named a tier the rules file does not have (it gets a 500, and the reason is
/// logged: this is a mismatch between your authentication and your rules).
///
/// # Example
///
/// ```
/// use http::Method;
/// use tollgate::{ClientKey, Rules};
///
/// let rules = Rules::from_json(r#"{"default": {"limit": "1/minute"}}"#).unwrap();
/// let err = rules.resolve(&Method::GET, "/", Some("gold"), &ClientKey::Unknown).unwrap_err();
/// assert_eq!(err.to_string(), "tier \"gold\" is not in the rules file");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tier {name:?} is not in the rules file")]
pub struct UnknownTier {
    name: Box<str>,
}

impl UnknownTier {
    pub(crate) fn new(name: &str) -> Self {
        Self { name: name.into() }
    }

    /// The tier that was asked for.
    pub fn name(&self) -> &str {
        &self.name
    }
}
