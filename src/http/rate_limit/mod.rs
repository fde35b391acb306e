//! The tower layer: [`RateLimitLayer`] wraps a service in [`RateLimit`], which makes each
//! request's query with the kit's [`RequestQueries`](crate::http::RequestQueries), asks the
//! limiter, and answers through [`render`](crate::render): the request goes on with its
//! rate limit headers, or the layer answers by itself ([`ResponseFuture`]).

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{RateLimitLayer, RateLimitLayerBuilder};
pub use service::RateLimit;
