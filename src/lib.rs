//! # tollgate
//!
//! Rate limiting, decided in one place: a [`Limiter`] holds the rules (per-route, per-tier
//! and per-client limits, from a JSON file operators edit and that it reloads) and decides
//! whether a client's request may go on, atomically over every band of its rule: in
//! process, or by a Redis Lua script shared by every instance (a single Redis or a Redis
//! Cluster). Fronts translate their requests into a [`Query`] and the [`Verdict`] into
//! their answer; the tower/axum [`RateLimitLayer`] is the one here, added with one
//! `.layer(...)`. Other HTTP fronts make their queries with the same kit ([`http`]) and
//! answer through the same [`render`]ing.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tollgate::{Limiter, RateLimitLayer};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = Limiter::builder().rules_file("rate_limits.json").build().await?;
//! let app = Router::new()
//!     .route("/api/data", get(|| async { "data" }))
//!     .layer(RateLimitLayer::new(limiter));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Add `.redis_url("redis://127.0.0.1:6379")` to the limiter's builder to share the state
//! between instances, or give it a store of your own ([`backend::Store`]). Keep a clone of the limiter to [`check`](Limiter::check),
//! [`peek`](Limiter::peek), [`wait`](Limiter::wait) or [`reset`](Limiter::reset) from your
//! own code, on the same limits.
//!
//! Per request, data flows one way: **client key** ([`ClientKey`]: the [`ClientIdentity`]
//! your authentication set; else the peer address, or, when the peer is a trusted proxy
//! (loopback and private networks by default), the `X-Client-ID` or `X-Forwarded-For` entry
//! it set; `unknown` when nothing identifies the client)
//! → **query** ([`Query`]: the client, the method and path, the request's [`Tier`] and
//! [`Cost`]) → **rule and limit** (the most specific route, and the client's override)
//! → **decision** ([`Decision`], from the backend, over every band of the limit; a
//! [`Verdict`] says who decided) → the inner service's response with `X-RateLimit-Limit`,
//! `-Remaining` and `-Reset`, or `429 Too Many Requests` with `Retry-After` and a JSON body.
//!
//! [tower]: https://docs.rs/tower
//! [axum]: https://docs.rs/axum
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Every Rust snippet of the guide (docs/guide/) compiles, as a doc test; the README's and the
// service chapter's are tollgate-server's doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/README.md")]
struct GuideContentsDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/layer.md")]
struct GuideLayerDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/limiter.md")]
struct GuideLimiterDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/costs.md")]
struct GuideCostsDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/rules.md")]
struct GuideRulesDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/clients.md")]
struct GuideClientsDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/stores-and-failures.md")]
struct GuideStoresDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/gateways.md")]
struct GuideGatewaysDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/operations.md")]
struct GuideOperationsDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/performance.md")]
struct GuidePerformanceDoctests;
#[cfg(doctest)]
#[doc = include_str!("../docs/guide/coming-from.md")]
struct GuideComingFromDoctests;

mod algorithm;
pub mod backend;
mod decision;
mod error;
mod header_style;
pub mod http;
mod key;
mod limiter;
#[cfg(feature = "metrics")]
pub mod metrics;
mod policy;
pub mod render;
mod rules;

pub use algorithm::Algorithm;
pub use backend::breaker::BreakerState;
pub use decision::{BandStatus, DecidedBy, Decision};
pub use error::BuildError;
pub use header_style::HeaderStyle;
pub use http::{
    ClientIdentity, Cost, InvalidTrustedProxy, RateLimit, RateLimitLayer, RateLimitLayerBuilder,
    ReservedCost, ResponseBody, ResponseFuture, Tier,
};
pub use key::{ClientKey, InvalidClientId, InvalidClientKey, MAX_CLIENT_ID_LEN};
pub use limiter::{
    Calls, CheckError, Checking, ClientUsage, DEFAULT_MAX_RUNTIME_ENTRIES,
    DEFAULT_MAX_STATE_FILE_BYTES, DEFAULT_USAGE_CLIENTS_PER_HOUR, DEFAULT_USAGE_MAX_BYTES,
    DEFAULT_USAGE_MAX_CLIENTS, DescriptorCheck, LimitedClient, Limiter, LimiterBuilder, Origin,
    Query, ResetError, RuleEntry, RuntimeEntry, RuntimeError, Stats, UsageError, UsageSummary,
    Verdict, host_name,
};
pub use limiter::{
    DEFAULT_RESERVATION_TIMEOUT, MAX_OWED_CAPACITIES, Reservation, Reserved, Reserving,
    SettleError, Settled,
};
pub use limiter::{
    DecisionEvent, EVENT_BUFFER, Event, EventSummary, Events, MAX_DENIED_EVENTS_PER_SECOND,
    MAX_RELAYED_EVENTS_PER_SECOND, PublishedEvent, RuleChange, RuleCounts,
};
pub use policy::OnRedisError;
pub use render::{
    RATELIMIT, RATELIMIT_POLICY, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
    X_RATELIMIT_UNIT,
};
#[cfg(feature = "envoy")]
pub use rules::envoy::{EnvoyConfigError, EnvoyDomain, InvalidEnvoyConfig};
pub use rules::{
    Band, DEFAULT_MAX_RULES_FILE_BYTES, DescriptorMatch, InvalidRule, InvalidRuleTarget, Limit,
    Location, MAX_BANDS, MAX_PERIOD_SECS, MAX_REFILL_PER_SEC, MIN_REFILL_PER_SEC, Resolved, Rule,
    RuleTarget, Rules, RulesError, UnknownTier, UnreachableOverride, UnusedRule,
};
