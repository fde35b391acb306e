//! # tollgate
//!
//! Rate limiting for [tower] and [axum] services in one `.layer(...)`: per-client token
//! buckets (or fixed and sliding windows, several bands per rule), per-path rules from a
//! JSON file operators edit and the layer reloads, decided atomically by a Redis Lua script
//! shared by every app instance (a single Redis or a Redis Cluster), or in process when
//! there is no Redis.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tollgate::RateLimitLayer;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limits = RateLimitLayer::builder().rules_file("rate_limits.json").build().await?;
//! let app = Router::new().route("/api/data", get(|| async { "data" })).layer(limits);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Add `.redis_url("redis://127.0.0.1:6379")` to the builder to share the buckets between
//! instances.
//!
//! Per request, data flows one way: **client key** ([`ClientKey`]: the peer address, or, when
//! the peer is a trusted proxy (loopback and private networks by default), the `X-Client-ID`
//! or `X-Forwarded-For` entry it set; `unknown` when nothing identifies the client)
//! → **rule and limit** ([`Rules::resolve`] by method, path, the request's [`Tier`] and the
//! client's override) → **decision** ([`Decision`], from the backend, over every band of the
//! limit) → the inner service's response with `X-RateLimit-Limit`, `-Remaining` and
//! `-Reset`, or `429 Too Many Requests` with `Retry-After` and a JSON body.
//!
//! [tower]: https://docs.rs/tower
//! [axum]: https://docs.rs/axum
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Every Rust snippet of the README compiles, as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod algorithm;
mod backend;
mod decision;
mod error;
mod future;
mod headers;
mod key;
mod layer;
mod policy;
mod reload;
mod rules;
mod service;
mod stats;
mod tier;

pub use algorithm::Algorithm;
pub use backend::breaker::BreakerState;
pub use decision::Decision;
pub use error::BuildError;
pub use future::ResponseFuture;
pub use headers::{X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET};
pub use key::{ClientKey, InvalidClientId, InvalidClientKey, MAX_CLIENT_ID_LEN};
pub use layer::{RateLimitLayer, RateLimitLayerBuilder};
pub use policy::OnRedisError;
pub use rules::{
    Band, DEFAULT_MAX_RULES_FILE_BYTES, InvalidRule, Limit, Location, MAX_BANDS, MAX_PERIOD_SECS,
    MAX_REFILL_PER_SEC, MIN_REFILL_PER_SEC, Resolved, Rule, Rules, RulesError, UnreachableOverride,
};
pub use service::RateLimit;
pub use stats::Stats;
pub use tier::{Tier, UnknownTier};
