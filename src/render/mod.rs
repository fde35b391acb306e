//! How every front writes a [`Verdict`](crate::Verdict) into HTTP: the rate limit header
//! fields ([`write_headers`], in the limiter's [`HeaderStyle`](crate::HeaderStyle)), and
//! the answers a front gives by itself ([`refusal`], [`check_error`],
//! [`invalid_client_id`]). The layer, the service's routes and `/auth` answer through
//! these, and gRPC writes its IETF fields with [`write_rate_limit_headers`]: a response
//! reads the same whichever front sent it.
//!
//! ```
//! use axum::body::Body;
//! use http::{Response, StatusCode};
//! use tollgate::{ClientKey, Limiter, Query, Rules, render};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"}}"#)?;
//! let limiter = Limiter::builder().rules(rules).build().await?;
//! // A front of your own: decide, then answer as the layer would.
//! let answer = async |client: &str| -> Result<Response<Body>, tollgate::CheckError> {
//!     let verdict = limiter.check(Query::new(&ClientKey::id(client))).await?;
//!     Ok(render::refusal(&verdict).unwrap_or_else(|| {
//!         let mut response = Response::new(Body::from("done"));
//!         render::write_headers(response.headers_mut(), &verdict);
//!         response
//!     }))
//! };
//! assert_eq!(answer("alice").await?.status(), StatusCode::OK);
//! assert_eq!(answer("alice").await?.status(), StatusCode::TOO_MANY_REQUESTS);
//! # Ok(())
//! # }
//! ```

mod headers;
mod refusals;

pub use headers::{
    RATELIMIT, RATELIMIT_POLICY, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
    X_RATELIMIT_UNIT, write_headers, write_rate_limit_headers,
};
pub use refusals::{check_error, invalid_client_id, refusal};
