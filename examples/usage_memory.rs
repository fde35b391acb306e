//! What usage statistics cost Redis: `used_memory` (Redis's `INFO memory`) and the keys
//! added per 100,000 distinct clients, each counted once in one hour (an unlimited rule, so
//! no bucket is kept), with the per-hour bound on clients counted per client at its default
//! (`DEFAULT_USAGE_CLIENTS_PER_HOUR`, 100,000) and, for comparison, at 10,000. Each run
//! brings 200,000 clients in two halves and prints what each half added: with the default,
//! the second half is past the bound and adds nothing per client.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --features redis --example usage_memory
//! ```
//!
//! `bench/usage_memory.sh` runs it on a redis-server of its own. It flushes the Redis it is
//! given between runs: never point it at one that holds anything else.

use std::time::Duration;

use tollgate::{ClientKey, DEFAULT_USAGE_CLIENTS_PER_HOUR, Limiter, Query, Rules};

const HALF: usize = 100_000;

fn used_memory(connection: &mut redis::Connection) -> Result<i64, Box<dyn std::error::Error>> {
    let info: String = redis::cmd("INFO").arg("memory").query(connection)?;
    let used = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .ok_or("no used_memory in INFO memory")?;
    Ok(used.trim().parse()?)
}

fn keys(connection: &mut redis::Connection) -> Result<i64, Box<dyn std::error::Error>> {
    Ok(redis::cmd("DBSIZE").query(connection)?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").map_err(|_| "set REDIS_URL")?;
    let mut connection = redis::Client::open(url.as_str())?.get_connection()?;
    println!(
        "{:>16} {:>8} {:>14} {:>10} {:>12}",
        "clients/hour", "half", "used_memory MB", "keys", "B per client"
    );
    for per_hour in [DEFAULT_USAGE_CLIENTS_PER_HOUR, 10_000] {
        let _: () = redis::cmd("FLUSHALL").query(&mut connection)?;
        let limiter = Limiter::builder()
            .rules(Rules::from_json(r#"{"default": {"unlimited": true}}"#)?)
            .redis_url(&url)
            .redis_timeout(Duration::from_secs(5))
            .record_usage(true)
            .usage_clients_per_hour(per_hour)
            .build()
            .await?;
        for half in 0..2 {
            let (memory, count) = (used_memory(&mut connection)?, keys(&mut connection)?);
            for n in 0..HALF {
                let client = ClientKey::id(format!("client-{:07}", half * HALF + n));
                limiter.check(Query::new(&client)).await?;
                // A flush a second writes at most what a second brings; flushing every
                // 10,000 clients does the same here, without waiting.
                if n % 10_000 == 9_999 {
                    limiter.flush_usage().await?;
                }
            }
            limiter.flush_usage().await?;
            let added = used_memory(&mut connection)? - memory;
            println!(
                "{per_hour:>16} {:>8} {:>14.1} {:>10} {:>12.0}",
                half + 1,
                added as f64 / 1e6,
                keys(&mut connection)? - count,
                added as f64 / HALF as f64
            );
        }
        let summary = limiter.usage_summary(0).await?;
        assert_eq!(
            summary.allowed,
            2 * HALF as u64,
            "the totals count every call"
        );
    }
    Ok(())
}
