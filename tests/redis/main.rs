//! The Redis store's own behaviour on real `redis-server`s and Redis Clusters that the tests
//! kill, stop, restart and flush: what it stores, leases, failures under load, and clusters.

mod cluster;
mod faults;
mod lease;
mod store;

/// One test at a time of those that start many redis-server processes (a cluster) or measure
/// latency (a fault), which two such tests side by side on two cores would distort.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
