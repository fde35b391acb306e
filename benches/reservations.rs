//! What a reservation and its settlement cost beside a plain check, through the `Limiter`:
//! in memory, and on a real Redis (a `redis-server` started for the bench on a free loopback
//! port, as the tests start theirs). Each iteration is one decision, or one reservation and
//! its settlement, for the next of 1,000 clients; no rule ever refuses.
//!
//! ```sh
//! cargo bench --all-features --bench reservations
//! ```

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::{ClientKey, Limiter, OnRedisError, Query, Rules};

const CLIENTS: usize = 1000;
const RULES: &str = r#"{"default": {"capacity": 1000000000, "refill_rate": 1000000000}}"#;

fn pair_against_check(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let redis = testkit::TestRedis::start();
    let clients: Vec<ClientKey> = (0..CLIENTS)
        .map(|n| ClientKey::id(format!("client-{n}")))
        .collect();
    let memory = runtime
        .block_on(
            Limiter::builder()
                .rules(Rules::from_json(RULES).expect("rules"))
                .build(),
        )
        .expect("a limiter");
    let shared = runtime
        .block_on(
            Limiter::builder()
                .rules(Rules::from_json(RULES).expect("rules"))
                .redis_url(redis.url())
                .on_redis_error(OnRedisError::Deny)
                .build(),
        )
        .expect("a limiter on Redis");
    let mut group = c.benchmark_group("reservations");
    for (store, limiter) in [("memory", &memory), ("redis", &shared)] {
        let mut n = 0;
        group.bench_function(format!("{store}/check"), |b| {
            b.iter(|| {
                n = (n + 1) % CLIENTS;
                let verdict = runtime.block_on(limiter.check(Query::new(&clients[n]).cost(10)));
                assert!(black_box(verdict.expect("a verdict")).allowed());
            })
        });
        group.bench_function(format!("{store}/reserve_and_settle"), |b| {
            b.iter(|| {
                n = (n + 1) % CLIENTS;
                runtime.block_on(async {
                    let reserved = limiter.reserve(Query::new(&clients[n]).cost(10)).await;
                    let reservation = reserved.expect("a verdict").into_reservation();
                    let settled = reservation.expect("held").settle(7).await;
                    black_box(settled.expect("settled"));
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pair_against_check);
criterion_main!(benches);
