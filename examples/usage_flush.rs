//! What writing usage statistics costs: the time of one flush (`Limiter::flush_usage`) of
//! the calls of N distinct clients under one rule, in memory and, with `REDIS_URL`, to
//! Redis. `bench/usage_flush.sh` runs it on a redis-server of its own.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example usage_flush -- [rounds]
//! ```
//!
//! Each round counts one call for each of N new clients (an unlimited rule: no decision
//! to wait for), then times the flush that writes them. Prints, per backend and N, the
//! median, min and max over the rounds, and the median per client.

use std::time::{Duration, Instant};

use tollgate::{ClientKey, Limiter, Query, Rules};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(rounds) => rounds.parse()?,
        None => 11,
    };
    let redis = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    println!(
        "{:8} {:>7} {:>10} {:>10} {:>10} {:>12}",
        "backend", "clients", "median ms", "min ms", "max ms", "us/client"
    );
    for backend in ["memory", "redis"] {
        if backend == "redis" && redis.is_none() {
            println!("redis: set REDIS_URL to measure flushes to Redis");
            continue;
        }
        for clients in [1, 100, 1_000, 10_000] {
            let mut builder = Limiter::builder()
                .rules(Rules::from_json(r#"{"default": {"unlimited": true}}"#)?)
                .record_usage(true);
            if let (true, Some(url)) = (backend == "redis", &redis) {
                builder = builder
                    .redis_url(url)
                    .redis_prefix(format!("usage-flush-{clients}"))
                    .redis_timeout(Duration::from_secs(5));
            }
            let limiter = builder.build().await?;
            let mut times = Vec::with_capacity(rounds);
            for round in 0..rounds {
                for n in 0..clients {
                    let client = ClientKey::id(format!("r{round}-c{n}"));
                    limiter.check(Query::new(&client)).await?;
                }
                let started = Instant::now();
                limiter.flush_usage().await?;
                times.push(started.elapsed());
            }
            times.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let median = times[times.len() / 2];
            println!(
                "{backend:8} {clients:>7} {:>10.3} {:>10.3} {:>10.3} {:>12.2}",
                ms(median),
                ms(times[0]),
                ms(times[times.len() - 1]),
                median.as_secs_f64() * 1e6 / clients as f64
            );
        }
    }
    Ok(())
}
