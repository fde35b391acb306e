//! The compose stack's shape, as real processes: two app instances (the demo, each with the
//! layer) and `tollgate serve`, on one real Redis and prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Demo, TestRedis, start_demo, start_service, unique_prefix};

/// Two demo instances, named `app-1` and `app-2`, and the service, named `limiter`, on one
/// Redis. Traffic sent with [`send_traffic`](Self::send_traffic) stops when it is dropped.
pub struct Fleet {
    pub redis: TestRedis,
    /// Their Redis prefix.
    pub prefix: String,
    pub apps: [Demo; 2],
    pub service: Demo,
    stop: Arc<AtomicBool>,
}

impl Fleet {
    /// The processes, with the variables `also` set in each.
    pub fn start(test: &str, also: &[(&str, &str)]) -> Self {
        let redis = TestRedis::start();
        let prefix = unique_prefix(test);
        let named = |name: &'static str| {
            let mut env = vec![
                ("REDIS_URL", redis.url()),
                ("REDIS_PREFIX", prefix.as_str()),
                ("TOLLGATE_INSTANCE", name),
            ];
            env.extend_from_slice(also);
            env
        };
        let apps = [start_demo(&named("app-1")), start_demo(&named("app-2"))];
        let service = start_service(&named("limiter"));
        Self {
            redis,
            prefix,
            apps,
            service,
            stop: Arc::default(),
        }
    }

    /// `GET /api/data` every 100 ms: as `carol` at `app-1`, as `dave` at `app-2`.
    pub fn send_traffic(&self) {
        for (app, client) in self.apps.iter().zip(["carol", "dave"]) {
            let (base, stop) = (app.address.clone(), Arc::clone(&self.stop));
            tokio::spawn(async move {
                let http = reqwest::Client::builder().no_proxy().build().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let _ = http
                        .get(format!("http://{base}/api/data"))
                        .header("X-Client-ID", client)
                        .send()
                        .await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
