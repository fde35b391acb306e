//! `tollgate serve` and the demo as their users run them: the real binaries (and the
//! service's router in process) over real HTTP and gRPC, with real `redis-server`s and Redis
//! Clusters: the command line, the HTTP APIs, Envoy's service, events, metrics, health,
//! reloads, who may reach what, and hostile connections.

mod cli;
mod connections;
mod envoy;
mod events;
mod exactness;
mod health;
mod http;
mod metrics;
mod reload;
mod reservations;
mod runtime_store;
mod security;
mod seeds;
mod service;
mod trust;
mod usage_bounds;
