//! The `Limiter` and the layer through the public API, each scenario on memory and on real
//! `redis-server`s and Redis Clusters started for the test: decisions through the layer,
//! the `Limiter` calls, usage statistics, runtime rule changes, and the store seam's shared
//! behavioural suite (also run against a store written here).

mod layer;
mod limiter;
mod llm_gateway;
mod runtime;
mod stores;
mod usage;
