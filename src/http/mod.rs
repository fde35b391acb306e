//! The HTTP front: a tower layer that turns each request into a [`Query`](crate::Query)
//! for a [`Limiter`](crate::Limiter) and its [`Verdict`](crate::Verdict) into a response.
//!
//! The client key comes from [`identity`]; the rule from the request's method and path (and
//! the [`Tier`] and [`Cost`] your middleware sets); the response headers and the layer's
//! own answers (400, 429, 500, 503) from [`response`].

mod extensions;
mod future;
pub(crate) mod identity;
mod layer;
pub(crate) mod response;
mod service;

pub use extensions::{Cost, Tier};
pub use future::ResponseFuture;
pub use identity::InvalidTrustedProxy;
pub use layer::{RateLimitLayer, RateLimitLayerBuilder};
pub use response::{
    RATELIMIT, RATELIMIT_POLICY, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
};
pub use service::RateLimit;
