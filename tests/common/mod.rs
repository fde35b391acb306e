//! Test harness shared by the integration tests, split by what it starts: a private
//! `redis-server` ([`redis`]), a local Redis Cluster ([`cluster`]), layers and requests
//! ([`http`]), the demo binary ([`demo`]), nginx ([`nginx`]); the deployment files read ([`deploy`]); and structured-field
//! lists ([`sf`]).
#![allow(dead_code, unused_imports)]

mod cluster;
mod demo;
mod deploy;
pub mod files;
mod http;
mod nginx;
mod redis;
mod sf;

use std::path::PathBuf;

pub use cluster::TestCluster;
pub use demo::{
    Demo, demo_binary, start_demo, start_service, start_service_with_open_files, tollgate_binary,
};
pub use deploy::*;
pub use http::*;
pub use nginx::{Nginx, nginx_binary};
pub use redis::*;
pub use sf::{Member, sf_list};
pub use tollgate::Limiter;
use tollgate::Rules;

pub fn rules(json: &str) -> Rules {
    Rules::from_json(json).unwrap_or_else(|e| panic!("test rules: {e}"))
}

pub fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
