//! One behaviour, every store: the in-process store, a store written here through the
//! public traits only (`map_store.rs`), a real Redis and a real Redis Cluster each
//! pass the shared suite (`suite.rs`) through the public `Limiter` API and the tower
//! layer.

mod map_store;
mod settling;
mod suite;

use suite::Backend;
use testkit::{TestCluster, TestRedis};

#[tokio::test]
async fn the_in_process_store_passes_the_suite() {
    let dir = tempfile::tempdir().expect("a directory for the state files");
    suite::run(&Backend::Memory(dir.path().to_path_buf())).await;
}

#[tokio::test]
async fn a_store_written_outside_the_crate_passes_the_suite() {
    suite::run(&Backend::Map(Default::default())).await;
}

#[tokio::test]
async fn the_redis_store_passes_the_suite() {
    let redis = TestRedis::start();
    suite::run(&Backend::Redis(&redis)).await;
}

#[tokio::test]
async fn the_redis_store_on_a_cluster_passes_the_suite() {
    let cluster = TestCluster::start(3, 0);
    suite::run(&Backend::Cluster(&cluster)).await;
}
