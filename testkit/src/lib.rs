//! What tollgate's integration tests share, split by what it starts: a private
//! `redis-server` (`redis`), a local Redis Cluster (`cluster`), layers and requests (`http`),
//! the demo and `tollgate` binaries (`demo`), nginx (`nginx`); the deployment files read
//! (`deploy`); structured-field lists (`sf`); Prometheus scrapes
//! (`prometheus`); captured logs ([`logs`]); and files written as
//! editors and operators write them ([`files`]). Everything but the last two is re-exported
//! at the top, so a test says `use testkit::*;`.
//!
//! A crate of its own (not published), so each test binary links it rather than compiling
//! a copy of every helper, used or not.
#![forbid(unsafe_code)]

mod cluster;
mod demo;
mod deploy;
pub mod files;
mod fleet;
mod http;
pub mod logs;
mod nginx;
mod prometheus;
mod redis;
mod sf;

use std::path::PathBuf;

pub use cluster::TestCluster;
pub use demo::{
    Demo, demo_binary, serve_in_until_it_exits, serve_until_it_exits, start_demo, start_service,
    start_service_in, start_service_with_open_files, tollgate_binary,
};
pub use deploy::*;
pub use fleet::Fleet;
pub use http::*;
pub use nginx::{Nginx, nginx_binary};
pub use prometheus::{Scrape, parse};
pub use redis::*;
pub use sf::{Member, sf_bytes, sf_list};
pub use tollgate::Limiter;
use tollgate::Rules;

pub fn rules(json: &str) -> Rules {
    Rules::from_json(json).unwrap_or_else(|e| panic!("test rules: {e}"))
}

/// `name`, a path from the repository's top (the workspace's), whichever of its packages
/// the test belongs to.
pub fn repo_file(name: &str) -> PathBuf {
    let package = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let top = package
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(package);
    top.join(name)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Waits for the next multiple of `period_secs` of Unix time when less than 30 s are left
/// before it: a test that counts in fixed windows of that period (or by UTC hour or day)
/// then runs inside one.
pub async fn clear_of_a_window_end(period_secs: u64) {
    let into = unix_now() % period_secs;
    if into + 30 > period_secs {
        tokio::time::sleep(std::time::Duration::from_secs(period_secs - into + 1)).await;
    }
}

/// Runs a scenario that needs its requests to fall within chosen moments, for one fresh
/// client after another, until one run's requests all did: the scenario returns whether
/// they did, and judges its answers only then. (A busy machine may stall a run past a
/// moment; such a run proves nothing either way.) Fails after 5 runs that missed.
pub async fn until_one_run_fits(mut scenario: impl AsyncFnMut(&str) -> bool) {
    for attempt in 0..5 {
        if scenario(&format!("client-{attempt}")).await {
            return;
        }
    }
    panic!("5 runs each missed their moments: the machine is too busy to time this test");
}
