//! A store written outside the crate, through the public traits only: band states in a
//! `Mutex<HashMap>`, and the runtime entries beside them with their version, shared by every
//! limiter given a handle to the same map (as instances share a Redis), each told of the
//! others' changes, live events carried between them (a roll call of listeners with
//! their deadlines, messages handed to those listening), and reservations settled from any
//! of them. Usage statistics are left to the
//! limiter (kept in its process).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tollgate::backend::{
    Answer, BandStates, Client, EntryChange, EntryNews, EventRelay, Heard, Kept, Mode, News,
    Outcome, ReservationKey, RuleSlot, RuntimeStore, Settlement, Store, StoreError, StoreFuture,
    StoreStats, StoredEntries,
};
use tollgate::{DecidedBy, Limit};

/// What every handle shares.
#[derive(Default)]
pub struct Shared {
    /// Each client's bands, by rule identity and client key.
    bands: Mutex<HashMap<(Arc<str>, String), BandStates>>,
    entries: Mutex<StoredEntries>,
    /// Each handle's news, to tell of every change.
    listeners: Mutex<Vec<Weak<EntryNews>>>,
    /// The handles listening to live events, by identifier: until when, and where their
    /// messages go.
    events: Mutex<HashMap<String, (Instant, Weak<Heard>)>>,
    /// Reservations by their random part: rule, client, estimate, when made, until when,
    /// settled.
    reservations: Mutex<HashMap<String, Held>>,
}

/// One reservation.
struct Held {
    rule: Arc<str>,
    client: String,
    estimate: u32,
    made: SystemTime,
    until: Instant,
    settled: bool,
}

/// One limiter's handle on the shared map.
pub struct MapStore {
    shared: Arc<Shared>,
    entries: Arc<MapEntries>,
    events: Arc<MapEvents>,
}

impl MapStore {
    /// A handle on `shared`.
    pub fn new(shared: &Arc<Shared>) -> Self {
        let news = Arc::new(EntryNews::default());
        lock(&shared.listeners).push(Arc::downgrade(&news));
        Self {
            shared: Arc::clone(shared),
            entries: Arc::new(MapEntries {
                shared: Arc::clone(shared),
                news,
            }),
            events: Arc::new(MapEvents {
                shared: Arc::clone(shared),
                heard: Arc::default(),
            }),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store for MapStore {
    fn name(&self) -> &'static str {
        "map"
    }

    fn decide(
        &self,
        rule: &RuleSlot,
        limit: &Limit,
        cost: u32,
        client: Client<'_>,
        mode: Mode,
    ) -> Answer {
        let mut bands = lock(&self.shared.bands);
        let key = (Arc::clone(rule.id()), client.to_string());
        let now = SystemTime::now();
        match mode {
            Mode::Take => {
                let decision = bands.entry(key).or_default().decide(limit, cost, mode, now);
                Answer::Now(Outcome::Decided(decision, DecidedBy::Memory))
            }
            // A peek stores nothing, not even a fresh entry, and tells every band.
            Mode::Peek => {
                let mut held = bands.get(&key).cloned().unwrap_or_default();
                Answer::Now(Outcome::Peeked {
                    decision: held.decide(limit, cost, mode, now),
                    decided_by: DecidedBy::Memory,
                    bands: held.bands(limit, now),
                })
            }
        }
    }

    fn reset<'a>(
        &'a self,
        rules: &'a [RuleSlot],
        client: Client<'a>,
    ) -> StoreFuture<'a, Result<(), StoreError>> {
        let mut bands = lock(&self.shared.bands);
        for rule in rules {
            bands.remove(&(Arc::clone(rule.id()), client.to_string()));
        }
        Box::pin(async { Ok(()) })
    }

    fn sweep(&self) {
        let now = SystemTime::now();
        lock(&self.shared.bands).retain(|_, bands| !bands.is_full(now));
    }

    fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::default();
        stats.tracked_buckets = lock(&self.shared.bands).len();
        stats
    }

    fn runtime(&self) -> Option<Arc<dyn RuntimeStore>> {
        Some(Arc::clone(&self.entries) as Arc<dyn RuntimeStore>)
    }

    fn events(&self) -> Option<Arc<dyn EventRelay>> {
        Some(Arc::clone(&self.events) as Arc<dyn EventRelay>)
    }

    fn reserve(
        &self,
        limit: &Limit,
        cost: u32,
        reservation: ReservationKey<'_>,
        lasting: Duration,
    ) -> Option<Answer> {
        let key = (
            Arc::clone(reservation.rule.id()),
            reservation.client.to_string(),
        );
        // The bands' lock is let go before the reservations' is taken: settle takes them the
        // other way round.
        let made = SystemTime::now();
        let decision = lock(&self.shared.bands)
            .entry(key.clone())
            .or_default()
            .decide(limit, cost, Mode::Take, made);
        if !decision.allowed {
            return Some(Answer::Now(Outcome::Decided(decision, DecidedBy::Memory)));
        }
        let held = Held {
            rule: key.0,
            client: key.1,
            estimate: cost,
            made,
            until: Instant::now() + lasting,
            settled: false,
        };
        lock(&self.shared.reservations).insert(reservation.nonce.to_owned(), held);
        Some(Answer::Now(Outcome::Reserved(decision, DecidedBy::Memory)))
    }

    fn settle<'a>(
        &'a self,
        limit: &'a Limit,
        reservation: ReservationKey<'a>,
        used: u64,
    ) -> StoreFuture<'a, Result<Settlement, StoreError>> {
        let settled = (|| {
            let mut reservations = lock(&self.shared.reservations);
            let held = match reservations.get_mut(reservation.nonce) {
                Some(held) if held.until > Instant::now() => held,
                _ => return Settlement::Unknown,
            };
            let key = (
                Arc::clone(reservation.rule.id()),
                reservation.client.to_string(),
            );
            if held.rule != key.0 || held.client != key.1 {
                return Settlement::Unknown;
            }
            if held.settled {
                return Settlement::AlreadySettled;
            }
            held.settled = true;
            let delta = i64::try_from(used).unwrap_or(i64::MAX) - i64::from(held.estimate);
            let mut bands = lock(&self.shared.bands);
            let decision =
                bands
                    .entry(key)
                    .or_default()
                    .settle(limit, delta, held.made, SystemTime::now());
            Settlement::Settled {
                estimate: held.estimate,
                decision,
            }
        })();
        Box::pin(async move { Ok(settled) })
    }

    fn release(&self, reservation: ReservationKey<'_>) {
        lock(&self.shared.reservations).remove(reservation.nonce);
    }
}

/// The live events of the shared map, as one handle carries them.
struct MapEvents {
    shared: Arc<Shared>,
    heard: Arc<Heard>,
}

impl EventRelay for MapEvents {
    fn name(&self) -> &'static str {
        "the map"
    }

    fn roll_call<'a>(
        &'a self,
        listener: &'a str,
        listening: bool,
        lasting: Duration,
    ) -> StoreFuture<'a, Result<u64, StoreError>> {
        let mut listeners = lock(&self.shared.events);
        let now = Instant::now();
        listeners.retain(|_, (until, heard)| *until > now && heard.strong_count() > 0);
        if listening {
            let heard = Arc::downgrade(&self.heard);
            listeners.insert(listener.to_owned(), (now + lasting, heard));
        } else {
            listeners.remove(listener);
        }
        let others = listeners.keys().filter(|id| *id != listener).count() as u64;
        Box::pin(async move { Ok(others) })
    }

    fn publish(&self, message: String) -> StoreFuture<'_, Result<(), StoreError>> {
        for (_, heard) in lock(&self.shared.events).values() {
            if let Some(heard) = heard.upgrade() {
                heard.tell(message.clone());
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn heard(&self) -> Arc<Heard> {
        Arc::clone(&self.heard)
    }
}

/// The runtime entries of the shared map, as one handle sees them.
struct MapEntries {
    shared: Arc<Shared>,
    news: Arc<EntryNews>,
}

impl RuntimeStore for MapEntries {
    fn name(&self) -> &'static str {
        "the map"
    }

    fn load(&self) -> StoreFuture<'_, Result<StoredEntries, StoreError>> {
        let stored = lock(&self.shared.entries).clone();
        Box::pin(async move { Ok(stored) })
    }

    fn change<'a>(&'a self, change: EntryChange<'a>) -> StoreFuture<'a, Result<Kept, StoreError>> {
        let mut stored = lock(&self.shared.entries);
        let existed = stored.entries.contains_key(change.target);
        let kept = match change.rule {
            None if !existed => Kept::Unchanged,
            Some(_) if !existed && stored.entries.len() >= change.max_entries => Kept::Full,
            rule => {
                match rule {
                    Some(rule) => stored.entries.insert(change.target.into(), rule.clone()),
                    None => stored.entries.remove(change.target),
                };
                stored.version += 1;
                let news = News::Changed {
                    version: stored.version,
                    target: change.target.into(),
                    rule: rule.map(Value::to_string),
                };
                for listener in lock(&self.shared.listeners).iter() {
                    if let Some(listener) = listener.upgrade() {
                        listener.tell(news.clone());
                    }
                }
                Kept::Made {
                    existed,
                    version: stored.version,
                }
            }
        };
        Box::pin(async move { Ok(kept) })
    }

    fn restore<'a>(
        &'a self,
        entries: &'a BTreeMap<String, Value>,
        version: u64,
    ) -> StoreFuture<'a, Result<u64, StoreError>> {
        // A map in this process loses nothing: it is never behind.
        let _ = (entries, version);
        Box::pin(async { Ok(0) })
    }

    fn news(&self) -> Option<Arc<EntryNews>> {
        Some(Arc::clone(&self.news))
    }
}
