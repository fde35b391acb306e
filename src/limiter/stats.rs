//! Counters a metrics endpoint can read.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::backend::StoreStats;

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
/// assert_eq!((stats.allowed, stats.denied, stats.store.tracked_buckets), (1, 1, 1));
/// assert_eq!(stats.store.breaker, None); // nothing to lose in process: no breaker
///
/// // Serialize it for a health or metrics endpoint: the store's counts are fields of their own.
/// let json = serde_json::to_value(&stats)?;
/// assert_eq!(json["backend"], "memory");
/// assert_eq!((json["denied"].as_u64(), json["tracked_buckets"].as_u64()), (Some(1), Some(1)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The store's name: `"memory"`, `"redis"`, or another store's
    /// ([`Store::name`](crate::backend::Store::name)).
    pub backend: &'static str,
    /// What the store counted: its circuit breaker, the decisions its failure policy made,
    /// failed calls, refusals remembered, leases, and the buckets held in this process.
    pub store: StoreStats,
    /// Checks admitted on a limited rule: requests the layer let through to the inner
    /// service, and `Limiter::check`s (a shadow rule's would-be refusals included). Peeks are
    /// not counted.
    pub allowed: u64,
    /// Checks refused: the layer's 429s, and its 503s under the `deny` failure policy.
    pub denied: u64,
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
    /// Usage flushes the store did not take (failed, or for Redis past the deadline); their
    /// counts were kept and written by a later flush.
    pub usage_flush_errors: u64,
    /// Reads of the runtime entries in the store that failed (the store unreachable, or, in
    /// Redis, its key holding something else than the entries): the entries in force stay,
    /// and the read is tried again; the first failure of a run of them is logged.
    pub runtime_read_errors: u64,
    /// Live event subscribers now ([`Limiter::subscribe`](crate::Limiter::subscribe): the
    /// service's `/events` and `/ws` connections among them).
    pub event_subscribers: usize,
}

/// The JSON of every field, the store's counts among them at the places they always had:
/// `backend`, `breaker`, `allowed`, `denied`, `fallback`, `errors`, `cached_refusals`,
/// `leased`, ..., `tracked_buckets`, `evicted_buckets`, ...
impl Serialize for Stats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let store = &self.store;
        let mut json = serializer.serialize_struct("Stats", 22)?;
        json.serialize_field("backend", self.backend)?;
        json.serialize_field("breaker", &store.breaker)?;
        json.serialize_field("allowed", &self.allowed)?;
        json.serialize_field("denied", &self.denied)?;
        json.serialize_field("fallback", &store.fallback)?;
        json.serialize_field("errors", &store.errors)?;
        json.serialize_field("cached_refusals", &store.cached_refusals)?;
        json.serialize_field("leased", &store.leased)?;
        json.serialize_field("invalid_client_ids", &self.invalid_client_ids)?;
        json.serialize_field("shadowed", &self.shadowed)?;
        json.serialize_field("unknown_tiers", &self.unknown_tiers)?;
        json.serialize_field("reloads", &self.reloads)?;
        json.serialize_field("failed_reloads", &self.failed_reloads)?;
        json.serialize_field("last_reload_error", &self.last_reload_error)?;
        json.serialize_field("tracked_buckets", &store.tracked_buckets)?;
        json.serialize_field("evicted_buckets", &store.evicted_buckets)?;
        json.serialize_field("usage_clients", &self.usage_clients)?;
        json.serialize_field("usage_dropped", &self.usage_dropped)?;
        json.serialize_field("usage_evicted", &self.usage_evicted)?;
        json.serialize_field("usage_flush_errors", &self.usage_flush_errors)?;
        json.serialize_field("runtime_read_errors", &self.runtime_read_errors)?;
        json.serialize_field("event_subscribers", &self.event_subscribers)?;
        json.end()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON keeps every field's name and place, the store's counts among the others.
    #[test]
    fn the_json_is_as_it_always_was() {
        let stats = Stats {
            backend: "memory",
            store: StoreStats {
                fallback: 3,
                tracked_buckets: 7,
                ..StoreStats::default()
            },
            allowed: 1,
            denied: 2,
            invalid_client_ids: 0,
            shadowed: 0,
            unknown_tiers: 0,
            reloads: 0,
            failed_reloads: 0,
            last_reload_error: None,
            usage_clients: 0,
            usage_dropped: 0,
            usage_evicted: 0,
            usage_flush_errors: 0,
            runtime_read_errors: 0,
            event_subscribers: 0,
        };
        let json = serde_json::to_string(&stats).expect("JSON");
        let keys: Vec<&str> = json
            .trim_matches(['{', '}'])
            .split(',')
            .map(|field| field.split(':').next().unwrap_or("").trim_matches('"'))
            .collect();
        assert_eq!(
            keys,
            [
                "backend",
                "breaker",
                "allowed",
                "denied",
                "fallback",
                "errors",
                "cached_refusals",
                "leased",
                "invalid_client_ids",
                "shadowed",
                "unknown_tiers",
                "reloads",
                "failed_reloads",
                "last_reload_error",
                "tracked_buckets",
                "evicted_buckets",
                "usage_clients",
                "usage_dropped",
                "usage_evicted",
                "usage_flush_errors",
                "runtime_read_errors",
                "event_subscribers"
            ]
        );
        assert!(
            json.starts_with(
                r#"{"backend":"memory","breaker":null,"allowed":1,"denied":2,"fallback":3,"#
            ),
            "{json}"
        );
        assert!(json.contains(r#""tracked_buckets":7,"#), "{json}");
    }
}
