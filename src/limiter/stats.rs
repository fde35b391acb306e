//! Counters a metrics endpoint can read.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::breaker::BreakerState;

/// A snapshot of what a limiter, and the fronts it serves, have done since it was built.
/// Read it with [`Limiter::stats`](crate::Limiter::stats).
///
/// # Example
///
/// ```
/// use axum::{body::Body, http::{Request, StatusCode}, routing::get, Router};
/// use tower::ServiceExt;
/// use tollgate::{Limiter, RateLimitLayer, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let app = Router::new()
///     .route("/", get(|| async { "hi" }))
///     .layer(RateLimitLayer::new(limiter.clone()));
/// for expected in [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
///     let response = app.clone().oneshot(Request::get("/").body(Body::empty())?).await?;
///     assert_eq!(response.status(), expected);
/// }
/// let stats = limiter.stats();
/// assert_eq!((stats.allowed, stats.denied, stats.tracked_buckets), (1, 1, 1));
/// assert_eq!(stats.breaker, None); // no Redis, no breaker
///
/// // Serialize it for a health or metrics endpoint.
/// let json = serde_json::to_value(&stats)?;
/// assert_eq!(json["backend"], "memory");
/// assert_eq!(json["denied"], 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// `"memory"` or `"redis"`.
    pub backend: &'static str,
    /// The Redis circuit breaker; `None` without Redis.
    pub breaker: Option<BreakerState>,
    /// Checks admitted on a limited rule: requests the layer let through to the inner
    /// service, and `Limiter::check`s (a shadow rule's would-be refusals included). Peeks are
    /// not counted.
    pub allowed: u64,
    /// Checks refused: the layer's 429s, and its 503s under the `deny` failure policy.
    pub denied: u64,
    /// Requests decided by the failure policy because Redis could not decide (also counted
    /// in `allowed` or `denied`).
    pub fallback: u64,
    /// Redis calls that failed or missed their deadline.
    pub errors: u64,
    /// Requests refused without asking Redis, because Redis had refused the same client
    /// under the same rule until a time not yet reached (also counted in `denied`).
    pub cached_refusals: u64,
    /// Requests admitted from a lease, without asking Redis (also counted in `allowed`);
    /// see [`redis_lease`](crate::LimiterBuilder::redis_lease).
    pub leased: u64,
    /// Requests answered 400 for an unusable `X-Client-ID`.
    pub invalid_client_ids: u64,
    /// Requests a shadow rule would have refused (let through).
    pub shadowed: u64,
    /// Checks naming a tier the rules do not have (the layer answers them 500: see
    /// [`Tier`](crate::Tier)).
    pub unknown_tiers: u64,
    /// Rules put in force after startup (file changes, SIGHUP, `reload`, `set_rules`).
    pub reloads: u64,
    /// Reloads rejected because the file could not be read or did not validate (each
    /// distinct failure counted once).
    pub failed_reloads: u64,
    /// The last rejected reload's error; cleared by the next successful reload.
    pub last_reload_error: Option<String>,
    /// Buckets held in this process (the memory backend, or the local fallback).
    pub tracked_buckets: usize,
    /// Live buckets forgotten to stay within `max_tracked_buckets`.
    pub evicted_buckets: u64,
    /// Clients whose usage this process holds: those counted since the last flush, and on
    /// the memory backend those in the kept history (each at most
    /// [`usage_max_clients`](crate::LimiterBuilder::usage_max_clients)). Zero when usage is
    /// not recorded.
    pub usage_clients: usize,
    /// Calls counted in the usage totals and per rule but not per client, because
    /// `usage_max_clients` clients were held already (or, after a long Redis outage, because
    /// their hour was no longer kept).
    pub usage_dropped: u64,
    /// Clients forgotten from the memory backend's usage history to stay within
    /// `usage_max_clients`, those seen longest ago first.
    pub usage_evicted: u64,
    /// Usage flushes Redis did not take (failed or past the deadline); their counts were
    /// kept and written by a later flush.
    pub usage_flush_errors: u64,
    /// Reads of the runtime entries in Redis that failed (Redis unreachable, or its key
    /// holding something else than the entries): the entries in force stay, and the read is
    /// tried again; the first failure of a run of them is logged.
    pub runtime_read_errors: u64,
    /// Live event subscribers now ([`Limiter::subscribe`](crate::Limiter::subscribe): the
    /// service's `/events` and `/ws` connections among them).
    pub event_subscribers: usize,
}

/// What the limiter counts on the request path.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    Allowed,
    Denied,
    InvalidClientIds,
    Shadowed,
    UnknownTiers,
}

/// Cells of [`Counters`]: threads that decide at once each add to their own, so that no
/// cache line goes back and forth between cores on every request.
const CELLS: usize = 16;

/// One cell: every count, on a cache line of its own (128 bytes: two lines on the CPUs
/// that fetch lines in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Cell([AtomicU64; 5]);

/// The limiter's own counters, bumped on the request path. A count is the sum of its cells.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    cells: [Cell; CELLS],
}

impl Counters {
    pub(crate) fn bump(&self, count: Count) {
        self.cells[cell()].0[count as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self, count: Count) -> u64 {
        self.cells
            .iter()
            .map(|cell| cell.0[count as usize].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// This thread's cell: threads take cells in turn as they first count.
fn cell() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static CELL: usize = NEXT.fetch_add(1, Ordering::Relaxed) % CELLS;
    }
    CELL.with(|cell| *cell)
}
