//! The two libraries set up alike, for the criterion bench (`benches/limitador.rs`) and the
//! servers `bench/compare.sh` loads (`src/bin/compare_server.rs`): one limit per client key,
//! over `CLIENTS` keys, either so high that no key reaches it (`Scenario::Allowed`) or 1 per
//! second (`Scenario::Denied`: under load nearly every call is refused).
//!
//! tollgate's limit is a token bucket refilled continuously; limitador's a fixed window of
//! one second. At these two limits they answer the same: everything, or about one call per
//! key and second.

use std::collections::HashMap;

use limitador::limit::{Context, Limit};
use limitador::storage::redis::AsyncRedisStorage;
use limitador::{AsyncRateLimiter, RateLimiter};
use tollgate::{Limiter, OnRedisError, Rules};

/// How many client keys the calls rotate over.
pub const CLIENTS: usize = 1000;

/// limitador's namespace, and the name of the context variable that keys its counters.
const NAMESPACE: &str = "compare";
const CLIENT_VARIABLE: &str = "client";

pub type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A limit no key reaches.
    Allowed,
    /// 1 per second per key.
    Denied,
}

impl Scenario {
    pub const ALL: [Scenario; 2] = [Scenario::Allowed, Scenario::Denied];

    /// `allowed` or `denied`, as `bench/compare.sh` names it.
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "allowed" => Ok(Self::Allowed),
            "denied" => Ok(Self::Denied),
            other => Err(format!("unknown SCENARIO {other} (allowed or denied)").into()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
        }
    }

    pub fn per_second(self) -> u64 {
        match self {
            Self::Allowed => 1_000_000,
            Self::Denied => 1,
        }
    }
}

/// The key of client `i`, as the servers receive it in `X-Client-ID`.
pub fn client_keys() -> Vec<String> {
    (1..=CLIENTS).map(|i| format!("client-{i}")).collect()
}

/// tollgate's limiter: one default rule of `N/second`, in memory or, with `redis_url`, in
/// Redis failing closed (a call Redis did not answer is refused, never decided locally).
pub async fn tollgate(scenario: Scenario, redis_url: Option<&str>) -> Result<Limiter, Error> {
    let json = format!(
        r#"{{"default": {{"limit": "{}/second"}}}}"#,
        scenario.per_second()
    );
    let mut builder = Limiter::builder().rules(Rules::from_json(&json)?);
    if let Some(url) = redis_url {
        builder = builder.redis_url(url).on_redis_error(OnRedisError::Deny);
    }
    Ok(builder.build().await?)
}

/// limitador's limit: `N` per one-second window, one counter per value of `client`.
fn limitador_limit(scenario: Scenario) -> Result<Limit, Error> {
    Ok(Limit::new(
        NAMESPACE,
        scenario.per_second(),
        1,
        [],
        [CLIENT_VARIABLE.try_into()?],
    ))
}

/// limitador's in-memory `RateLimiter`, with room for every client's counter.
pub fn limitador_memory(scenario: Scenario) -> Result<RateLimiter, Error> {
    let limiter = RateLimiter::new(10 * CLIENTS as u64);
    limiter.add_limit(limitador_limit(scenario)?);
    Ok(limiter)
}

/// limitador's `AsyncRateLimiter` on `AsyncRedisStorage`: every call asks Redis, as
/// tollgate's Redis backend does without leases for every call it does not refuse from a
/// refusal it remembers.
pub async fn limitador_redis(
    scenario: Scenario,
    redis_url: &str,
) -> Result<AsyncRateLimiter, Error> {
    let storage = AsyncRedisStorage::new(redis_url).await?;
    let limiter = AsyncRateLimiter::new_with_storage(Box::new(storage));
    limiter.add_limit(limitador_limit(scenario)?);
    Ok(limiter)
}

/// What a limitador call needs besides the limiter: its namespace, and the context that
/// names the client (built per call, as a server must from each request).
pub fn limitador_call(client: &str) -> (limitador::limit::Namespace, Context<'static>) {
    let values = HashMap::from([(CLIENT_VARIABLE.to_owned(), client.to_owned())]);
    (NAMESPACE.into(), values.into())
}
