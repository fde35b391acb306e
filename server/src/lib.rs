//! # tollgate-server
//!
//! The rate limit service on a [`tollgate::Limiter`]: the HTTP APIs of the systems tollgate
//! replaces, the admin API, live events, the dashboard and `GET /metrics`
//! ([`service::Service`]), and Envoy's rate limit service over gRPC
//! ([`grpc::EnvoyRateLimit`]). The `tollgate` command (feature `cli`, on by default) serves
//! both: `tollgate serve`.
//!
//! Both are fronts like the tower layer: they turn their requests into a
//! [`Query`](tollgate::Query) with the library's HTTP kit
//! ([`tollgate::http::RequestQueries`]) or [`Limiter::check_descriptors`](tollgate::Limiter::check_descriptors),
//! and write each [`Verdict`](tollgate::Verdict) with [`tollgate::render`], using only the
//! library's public API. An app mounts the routes beside its own, on the limiter its layer
//! uses:
//!
//! ```
//! use axum::{routing::get, Router};
//! use tollgate::{Limiter, RateLimitLayer, Rules};
//! use tollgate_server::service::Service;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = Limiter::builder()
//!     .rules(Rules::from_json(r#"{"default": {"limit": "100/minute"}}"#)?)
//!     .build()
//!     .await?;
//! let layer = RateLimitLayer::new(limiter.clone());
//! let service = Service::new(limiter).client_identity(&layer);
//! let app: Router = Router::new()
//!     .route("/api/data", get(|| async { "data" }))
//!     .layer(layer)
//!     .merge(service.router());
//! # drop(app);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Every Rust snippet of the README compiles, as a doc test: here, where both the library's
// API and the service's are in reach.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
// And the guide's chapter on the service.
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/service.md")]
struct GuideServiceDoctests;

pub mod grpc;
pub mod service;
