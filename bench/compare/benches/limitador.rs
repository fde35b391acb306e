//! One decision, in process: tollgate's `Limiter::check` next to limitador's
//! `check_rate_limited_and_update`, on the same limit per key over 1000 keys in turn, every
//! call allowed and nearly every call refused.
//!
//! ```sh
//! cd bench/compare && cargo bench --bench limitador                      # memory only
//! REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench limitador         # and Redis
//! ```
//!
//! `memory/*`: tollgate's in-memory backend and limitador's in-memory `RateLimiter`. Each
//! call builds what a caller builds per request from a key it holds as text: tollgate's
//! `ClientKey`, limitador's `Context`. tollgate's check is a future ready at once in memory,
//! so it is polled once (a second poll would be a bug the bench reports by panicking);
//! limitador's in-memory limiter is called directly.
//!
//! `redis/*/sequential`: one call at a time, awaited, on a current-thread runtime: a Redis
//! round trip and each library's work around it. `redis/*/concurrent64`: 64 calls at once,
//! awaited together: what each library does when many requests wait on Redis (tollgate
//! shares its calls; limitador pipelines on one multiplexed connection). The Redis setups
//! fail closed in tollgate and propagate errors in limitador; an error panics the bench.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures::future::join_all;
use tollgate::{ClientKey, Limiter, Query};
use tollgate_compare::{CLIENTS, Scenario, client_keys, limitador_call};

/// How many calls the concurrent Redis benches await together.
const CONCURRENT: usize = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One tollgate check, polled once: in memory it is ready at once.
fn tollgate_check_now(limiter: &Limiter, client: &str) -> bool {
    let key = ClientKey::id(client);
    let check = pin!(limiter.check(Query::new(&key)));
    match check.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(verdict) => verdict.expect("tollgate check").allowed(),
        Poll::Pending => panic!("an in-memory check waited"),
    }
}

async fn tollgate_check(limiter: &Limiter, client: &str) -> bool {
    let key = ClientKey::id(client);
    let verdict = limiter.check(Query::new(&key)).await;
    verdict.expect("tollgate check").allowed()
}

async fn limitador_check(limiter: &limitador::AsyncRateLimiter, client: &str) -> bool {
    let (namespace, context) = limitador_call(client);
    let result = limiter.check_rate_limited_and_update(&namespace, &context, 1);
    !result.await.expect("limitador check").limited
}

fn memory(c: &mut Criterion) {
    let keys = client_keys();
    let runtime = runtime();
    let mut group = c.benchmark_group("memory");
    for scenario in Scenario::ALL {
        let tollgate = runtime
            .block_on(tollgate_compare::tollgate(scenario, None))
            .expect("tollgate limiter");
        let mut n = 0;
        group.bench_function(BenchmarkId::new("tollgate", scenario.name()), |b| {
            b.iter(|| {
                n = (n + 1) % CLIENTS;
                black_box(tollgate_check_now(&tollgate, &keys[n]))
            })
        });
        let limitador = tollgate_compare::limitador_memory(scenario).expect("limitador limiter");
        let mut n = 0;
        group.bench_function(BenchmarkId::new("limitador", scenario.name()), |b| {
            b.iter(|| {
                n = (n + 1) % CLIENTS;
                let (namespace, context) = limitador_call(&keys[n]);
                let result = limitador.check_rate_limited_and_update(&namespace, &context, 1);
                black_box(!result.expect("limitador check").limited)
            })
        });
    }
    group.finish();
}

fn redis(c: &mut Criterion) {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("REDIS_URL is not set: the redis/* benches are skipped");
        return;
    };
    let keys = client_keys();
    let runtime = runtime();
    let mut group = c.benchmark_group("redis");
    for scenario in Scenario::ALL {
        let tollgate = runtime
            .block_on(tollgate_compare::tollgate(scenario, Some(&url)))
            .expect("tollgate limiter");
        let limitador = runtime
            .block_on(tollgate_compare::limitador_redis(scenario, &url))
            .expect("limitador limiter");
        let tollgate = &tollgate;
        let limitador = &limitador;
        let keys = &keys;
        let name = |library: &str, how: &str| format!("{library}/{}/{how}", scenario.name());

        let mut n = 0;
        group.bench_function(name("tollgate", "sequential"), |b| {
            b.to_async(&runtime).iter(|| {
                n = (n + 1) % CLIENTS;
                tollgate_check(tollgate, &keys[n])
            })
        });
        let mut n = 0;
        group.bench_function(name("limitador", "sequential"), |b| {
            b.to_async(&runtime).iter(|| {
                n = (n + 1) % CLIENTS;
                limitador_check(limitador, &keys[n])
            })
        });
        let mut n = 0;
        group.bench_function(name("tollgate", "concurrent64"), |b| {
            b.to_async(&runtime).iter(|| {
                n = (n + CONCURRENT) % CLIENTS;
                join_all((n..n + CONCURRENT).map(|i| tollgate_check(tollgate, &keys[i % CLIENTS])))
            })
        });
        let mut n = 0;
        group.bench_function(name("limitador", "concurrent64"), |b| {
            b.to_async(&runtime).iter(|| {
                n = (n + CONCURRENT) % CLIENTS;
                join_all(
                    (n..n + CONCURRENT).map(|i| limitador_check(limitador, &keys[i % CLIENTS])),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, memory, redis);
criterion_main!(benches);
