//! The tower layer: [`RateLimitLayer`] wraps a service in [`RateLimit`], which makes each
//! request's query with the kit's [`RequestQueries`](crate::http::RequestQueries), asks the
//! limiter, and answers through [`render`](crate::render): the request goes on with its
//! rate limit headers, or the layer answers by itself ([`ResponseFuture`]). A request whose
//! rule settles from the response holds a [`ReservedCost`], which the response's header,
//! trailer or the app settles.

mod body;
mod future;
mod layer;
mod service;
mod settle;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::{RateLimitLayer, RateLimitLayerBuilder};
pub use service::RateLimit;
pub use settle::ReservedCost;
