//! The HTTP kit and the tower layer.
//!
//! Every HTTP front turns a request into a [`Query`](crate::Query) with [`RequestQueries`]
//! (the client: a [`ClientIdentity`] your middleware set, or the headers of a trusted
//! proxy, or the peer address; the rule from
//! the method and path; the [`Tier`] and [`Cost`] your middleware set), and writes the
//! [`Verdict`](crate::Verdict) with [`render`](crate::render). The tower/axum
//! [`RateLimitLayer`] is one such front; the service's `/auth` and a front of your own are
//! others, and count a client the same way.
//!
//! A path a gateway or a caller forwards is decided by its normal form, and refused when an
//! upstream could read it otherwise: [`forwarded_path`].

mod extensions;
mod identity;
mod queries;
mod rate_limit;

pub use crate::rules::path::{AmbiguousPath, forwarded as forwarded_path};
pub use extensions::{ClientIdentity, Cost, Tier};
pub use identity::InvalidTrustedProxy;
pub use queries::{RequestQueries, RequestQueriesBuilder};
pub use rate_limit::{
    RateLimit, RateLimitLayer, RateLimitLayerBuilder, ReservedCost, ResponseBody, ResponseFuture,
};
