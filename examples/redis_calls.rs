//! The exact Redis path alone, without HTTP: `TASKS` tasks each ask a [`Limiter`] on Redis for
//! decisions one after another (1,000 clients, every decision allowed, no leases), until
//! `DECISIONS` are made. Prints decisions per second, this process's CPU time and Redis's
//! per decision, and this process's context switches per decision: what `bench/redis_path.sh`
//! compares, with less noise than a load run, since no HTTP client shares the cores.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example redis_calls
//! ```
//!
//! `TASKS` (default 64), `DECISIONS` (default 300000) and `WORKERS` (the runtime's worker
//! threads, default 2) change the load.

use std::time::Instant;

use tollgate::{ClientKey, DecidedBy, Limiter, OnRedisError, Query, Rules};

fn env_or(name: &str, default: usize) -> Result<usize, Box<dyn std::error::Error>> {
    match std::env::var(name) {
        Ok(value) => Ok(value.parse()?),
        Err(_) => Ok(default),
    }
}

/// CPU time (user + system) of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which ends with the last ')'.
    let rest = stat.rsplit_once(')').ok_or("unreadable /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// Context switches of every thread of this process.
fn context_switches() -> Result<u64, Box<dyn std::error::Error>> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        for line in status.lines() {
            if let Some(count) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += count.trim().parse::<u64>()?;
            }
        }
    }
    Ok(total)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").map_err(|_| "set REDIS_URL")?;
    let tasks = env_or("TASKS", 64)?.max(1);
    let decisions = env_or("DECISIONS", 300_000)?;
    let workers = env_or("WORKERS", 2)?.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let redis_pid: u32 = {
            let client = redis::Client::open(url.as_str())?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut connection)
                .await?;
            info.lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .ok_or("no process_id in INFO")?
                .trim()
                .parse()?
        };
        let rules = r#"{"default": {"capacity": 1000000, "refill_rate": 1000000}}"#;
        let limiter = Limiter::builder()
            .rules(Rules::from_json(rules)?)
            .redis_url(url)
            .on_redis_error(OnRedisError::Deny)
            .build()
            .await?;
        let clients: Vec<ClientKey> = (0..1000)
            .map(|n| ClientKey::id(format!("client-{n}")))
            .collect();
        let clients = std::sync::Arc::new(clients);
        let run = |count: usize| {
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    let (limiter, clients) = (limiter.clone(), clients.clone());
                    tokio::spawn(async move {
                        let mut by_redis = 0usize;
                        for n in 0..count / tasks {
                            let client = &clients[(t * 7919 + n) % clients.len()];
                            let verdict = limiter.check(Query::new(client)).await;
                            if verdict.is_ok_and(|v| v.allowed() && v.decided_by() == DecidedBy::Redis) {
                                by_redis += 1;
                            }
                        }
                        by_redis
                    })
                })
                .collect();
            async move {
                let mut by_redis = 0;
                for handle in handles {
                    by_redis += handle.await?;
                }
                Ok::<_, tokio::task::JoinError>(by_redis)
            }
        };
        // Warm: every client's bucket made, the connection up.
        run(tasks * 100).await?;
        let (cpu, redis_cpu, switches) = (
            cpu_ticks(std::process::id())?,
            cpu_ticks(redis_pid)?,
            context_switches()?,
        );
        let started = Instant::now();
        let by_redis = run(decisions).await?;
        let elapsed = started.elapsed();
        let made = (decisions / tasks * tasks) as f64;
        let hz = 100.0; // USER_HZ: /proc reports CPU time in these ticks on Linux
        let per = |ticks: u64| ticks as f64 / hz * 1e6 / made;
        println!(
            "{:.0} decisions/s, {:.2} us CPU/decision here, {:.2} us in Redis, {:.3} context switches/decision; {} of {} allowed by Redis",
            made / elapsed.as_secs_f64(),
            per(cpu_ticks(std::process::id())? - cpu),
            per(cpu_ticks(redis_pid)? - redis_cpu),
            (context_switches()? - switches) as f64 / made,
            by_redis,
            made,
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
