//! The in-process store: every client's bands under every rule in a bounded
//! [`BucketTable`] of [`BandStates`], decided in [`bands`]. A decision reads and writes the
//! entry under one lock, so a request is admitted by all of its bands or by none.

mod bands;
mod reservations;

use std::time::{Duration, SystemTime};

use super::table::BucketTable;
use super::{
    Answer, Client, Mode, Outcome, ReservationKey, RuleSlot, Settlement, Store, StoreError,
    StoreFuture, StoreStats,
};
use crate::Decision;
use crate::decision::{BandStatus, DecidedBy};
use crate::key::KeyRef;
use crate::rules::Limit;
pub use bands::BandStates;
use bands::{Next, band_statuses, decide_bands, unix_us};
use reservations::{Found, Reservations};

/// Default bound on the entries kept in memory, across all rules.
pub(crate) const DEFAULT_MAX_KEYS: usize = 100_000;

/// Where the memory backend reads the time: Unix microseconds.
pub(crate) trait Clock: Send + Sync + 'static {
    fn now_us(&self) -> i64;
}

/// The system clock. Windows align to Unix time, as they do in Redis.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> i64 {
        unix_us(SystemTime::now())
    }
}

pub(crate) struct MemoryBackend<C: Clock = SystemClock> {
    table: BucketTable<BandStates>,
    clock: C,
    /// Every band is divided by this (1 for the real limits; N for a fallback that N
    /// instances run side by side).
    share: u32,
    /// Reservations open (and settled, until they would have ended).
    reservations: Reservations,
}

impl MemoryBackend<SystemClock> {
    pub(crate) fn new(max_keys: usize, share: u32) -> Self {
        Self::with_clock(max_keys, share, SystemClock)
    }
}

impl<C: Clock> MemoryBackend<C> {
    pub(crate) fn with_clock(max_keys: usize, share: u32, clock: C) -> Self {
        Self {
            table: BucketTable::new(max_keys),
            clock,
            share: share.max(1),
            reservations: Reservations::new(max_keys),
        }
    }

    /// Settles reservation `nonce` of `client` under the rule whose state id is `state`
    /// with `used` units: the difference with its estimate taken or given back.
    fn settle_reservation(
        &self,
        limit: &Limit,
        (state, client): (u32, KeyRef<'_>),
        nonce: &str,
        used: u64,
    ) -> Settlement {
        let now = self.clock.now_us();
        let (estimate, reserved) = match self.reservations.settle(nonce, (state, client), now) {
            Found::Open { estimate, at_us } => (estimate, at_us),
            Found::Unknown => return Settlement::Unknown,
            Found::Settled => return Settlement::AlreadySettled,
        };
        let delta = i64::try_from(used).unwrap_or(i64::MAX) - i64::from(estimate);
        let time = |us: i64| {
            SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(us).unwrap_or(0))
        };
        let (reserved, at) = (time(reserved), time(now));
        let decision = self.table.update(state, client, now, |entry| match entry {
            Some(existing) => (existing.settle(limit, delta, reserved, at), None),
            None => {
                let mut fresh = BandStates::default();
                (fresh.settle(limit, delta, reserved, at), Some(fresh))
            }
        });
        Settlement::Settled { estimate, decision }
    }

    /// Decides one request of `client` with `limit` at `cost`, under the rule whose state id
    /// is `state`. A peek takes nothing, and reports the bands as they are now.
    #[inline]
    pub(crate) fn decide(
        &self,
        state: u32,
        limit: &Limit,
        cost: u32,
        client: KeyRef<'_>,
        mode: Mode,
    ) -> Decision {
        self.decide_at(state, limit, cost, client, (mode, self.clock.now_us()))
    }

    /// [`decide`](Self::decide) at `now` (µs of the store's clock).
    fn decide_at(
        &self,
        state: u32,
        limit: &Limit,
        cost: u32,
        client: KeyRef<'_>,
        (mode, now): (Mode, i64),
    ) -> Decision {
        self.table.update(state, client, now, |entry| {
            let before = entry.as_ref().map_or(&[][..], |e| &e.states[..]);
            let mut next = Next::default();
            let decision = decide_bands(limit, self.share, before, now, cost, mode, &mut next);
            match entry {
                _ if !next.taken() => (decision, None),
                Some(existing) => {
                    existing.take(&next);
                    (decision, None)
                }
                None => (decision, Some(BandStates::taken(&next))),
            }
        })
    }

    /// What a request of `client` at `cost` would get, taking nothing, with every band as
    /// it is now.
    pub(crate) fn peek(
        &self,
        state: u32,
        limit: &Limit,
        cost: u32,
        client: KeyRef<'_>,
    ) -> (Decision, Box<[BandStatus]>) {
        let now = self.clock.now_us();
        self.table.update(state, client, now, |entry| {
            let before = entry.as_ref().map_or(&[][..], |e| &e.states[..]);
            let mut next = Next::default();
            let decision =
                decide_bands(limit, self.share, before, now, cost, Mode::Peek, &mut next);
            (
                (decision, band_statuses(limit, self.share, before, now)),
                None,
            )
        })
    }

    /// Forgets `client`'s state under the rule whose state id is `state`: its next request
    /// finds full bands.
    pub(crate) fn forget(&self, state: u32, client: KeyRef<'_>) {
        self.table.remove(state, client);
    }

    /// Forgets entries that are full again; returns how many remain.
    pub(crate) fn drop_full(&self) -> usize {
        self.table.drop_full(self.clock.now_us())
    }

    /// Forgets the state of rules no longer in force.
    pub(crate) fn keep_only(&self, rules: &[RuleSlot]) {
        let live: std::collections::HashSet<u32> = rules.iter().map(|r| r.state).collect();
        self.table.retain_rules(|id| live.contains(&id));
    }

    /// Entries held now.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Live entries forgotten to stay within the bound.
    pub(crate) fn evicted(&self) -> u64 {
        self.table.evicted()
    }
}

impl<C: Clock> Store for MemoryBackend<C> {
    fn name(&self) -> &'static str {
        "memory"
    }

    #[inline]
    fn decide(
        &self,
        rule: &RuleSlot,
        limit: &Limit,
        cost: u32,
        client: Client<'_>,
        mode: Mode,
    ) -> Answer {
        if mode == Mode::Peek {
            let (decision, bands) = self.peek(rule.state, limit, cost, client.0);
            return Answer::Now(Outcome::Peeked {
                decision,
                decided_by: DecidedBy::Memory,
                bands,
            });
        }
        let decision = MemoryBackend::decide(self, rule.state, limit, cost, client.0, mode);
        Answer::Now(Outcome::Decided(decision, DecidedBy::Memory))
    }

    fn reset<'a>(
        &'a self,
        rules: &'a [RuleSlot],
        client: Client<'a>,
    ) -> StoreFuture<'a, Result<(), StoreError>> {
        for rule in rules {
            self.forget(rule.state, client.0);
        }
        Box::pin(async { Ok(()) })
    }

    fn rules_changed(&self, rules: &[RuleSlot]) {
        self.keep_only(rules);
    }

    fn sweep(&self) {
        let kept = self.drop_full();
        self.reservations.sweep(self.clock.now_us());
        tracing::trace!(
            kept,
            reservations = self.reservations.len(),
            "in-memory rate limit cleanup"
        );
    }

    fn reserve(
        &self,
        limit: &Limit,
        cost: u32,
        reservation: ReservationKey<'_>,
        lasting: Duration,
    ) -> Option<Answer> {
        let (state, client) = (reservation.rule.state, reservation.client.0);
        // One moment for the decision and the reservation: a refund goes to the window the
        // estimate was counted in.
        let now = self.clock.now_us();
        let decision = self.decide_at(state, limit, cost, client, (Mode::Take, now));
        if !decision.allowed {
            return Some(Answer::Now(Outcome::Decided(decision, DecidedBy::Memory)));
        }
        let until = now.saturating_add(i64::try_from(lasting.as_micros()).unwrap_or(i64::MAX));
        self.reservations
            .hold(reservation.nonce, (state, client), cost, (now, until));
        Some(Answer::Now(Outcome::Reserved(decision, DecidedBy::Memory)))
    }

    fn settle<'a>(
        &'a self,
        limit: &'a Limit,
        reservation: ReservationKey<'a>,
        used: u64,
    ) -> StoreFuture<'a, Result<Settlement, StoreError>> {
        let key = (reservation.rule.state, reservation.client.0);
        let settled = self.settle_reservation(limit, key, reservation.nonce, used);
        Box::pin(async move { Ok(settled) })
    }

    fn release(&self, reservation: ReservationKey<'_>) {
        self.reservations.release(reservation.nonce);
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            tracked_buckets: self.len(),
            evicted_buckets: self.evicted(),
            ..StoreStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rules;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::{Duration, UNIX_EPOCH};

    const SEC: i64 = 1_000_000;

    #[derive(Clone, Default)]
    struct ManualClock(Arc<AtomicI64>);

    impl ManualClock {
        fn advance(&self, us: i64) {
            self.0.fetch_add(us, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now_us(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    struct Setup {
        rules: Rules,
        backend: MemoryBackend<ManualClock>,
        clock: ManualClock,
    }

    fn setup(json: &str, share: u32) -> Setup {
        let clock = ManualClock::default();
        // Start at a window boundary, far from the epoch.
        clock.advance(1_000_000 * 3600 * SEC);
        Setup {
            rules: Rules::from_json(json).unwrap(),
            backend: MemoryBackend::with_clock(DEFAULT_MAX_KEYS, share, clock.clone()),
            clock,
        }
    }

    impl Setup {
        fn decide(&self, client: &str) -> Decision {
            let rule = self.rules.default_rule();
            let limit = rule.limit().unwrap();
            self.backend.decide(
                rule.index() as u32,
                limit,
                limit.cost(),
                KeyRef::Id(client),
                Mode::Take,
            )
        }

        fn admitted(&self, client: &str, n: usize) -> Vec<bool> {
            (0..n).map(|_| self.decide(client).allowed).collect()
        }
    }

    #[test]
    fn a_share_holds_at_least_one_request() {
        // 10 split 4 ways is 2, less than the cost of 4.
        let s = setup(
            r#"{"default": {"capacity": 10, "refill_rate": 1, "cost": 4}}"#,
            4,
        );
        let first = s.decide("a");
        assert!(first.allowed);
        assert_eq!((first.limit, first.remaining), (4, 0));
        assert!(!s.decide("a").allowed);
    }

    #[test]
    fn burst_then_refill_at_the_configured_rate() {
        let s = setup(r#"{"default": {"capacity": 3, "refill_rate": 0.5}}"#, 1);
        let remaining: Vec<u32> = (0..3).map(|_| s.decide("a").remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let denied = s.decide("a");
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_secs(2));
        assert_eq!(denied.limit, 3);
        s.clock.advance(2 * SEC - 1);
        assert!(!s.decide("a").allowed);
        s.clock.advance(1);
        assert_eq!(s.admitted("a", 2), [true, false]);
        // Refill never goes beyond capacity.
        s.clock.advance(3600 * SEC);
        assert_eq!(s.admitted("a", 4), [true, true, true, false]);
    }

    #[test]
    fn clients_are_isolated() {
        let s = setup(r#"{"default": {"capacity": 1, "refill_rate": 0.001}}"#, 1);
        assert_eq!(s.admitted("a", 2), [true, false]);
        assert_eq!(s.admitted("b", 1), [true]);
    }

    #[test]
    fn reset_is_when_the_bucket_is_full_again() {
        let s = setup(r#"{"default": {"capacity": 4, "refill_rate": 1}}"#, 1);
        s.decide("a");
        let d = s.decide("a");
        let now = UNIX_EPOCH + Duration::from_micros(s.clock.now_us() as u64);
        assert_eq!(d.reset.duration_since(now).unwrap(), Duration::from_secs(2));
    }

    #[test]
    fn all_bands_or_none() {
        // 3 per second and 5 per minute: the minute band stops the sixth request.
        let s = setup(r#"{"default": {"limits": ["3/second", "5/minute"]}}"#, 1);
        assert_eq!(s.admitted("a", 4), [true, true, true, false]);
        s.clock.advance(SEC);
        // Second band has 2 left; the refused request above took nothing from it.
        let d = s.decide("a");
        assert!(d.allowed);
        assert_eq!(
            (d.limit, d.remaining),
            (5, 1),
            "the minute band is closest to running out"
        );
        assert_eq!(s.admitted("a", 2), [true, false]);
        let refused = s.decide("a");
        assert_eq!(refused.limit, 5);
        assert!(refused.retry_after > Duration::from_secs(10), "{refused:?}");
    }

    #[test]
    fn cost_takes_several_tokens() {
        let s = setup(
            r#"{"default": {"capacity": 10, "refill_rate": 0.001, "cost": 4}}"#,
            1,
        );
        assert_eq!(s.admitted("a", 3), [true, true, false]);
        assert_eq!(s.decide("a").remaining, 2, "refused: the 2 left stay");
    }

    #[test]
    fn a_share_divides_capacity_and_rate() {
        let s = setup(r#"{"default": {"capacity": 10, "refill_rate": 2}}"#, 4);
        assert_eq!(s.admitted("a", 3), [true, true, false]);
        assert_eq!(s.decide("a").limit, 2);
        // 2/4 = 0.5 tokens per second.
        s.clock.advance(2 * SEC - 1);
        assert!(!s.decide("a").allowed);
        s.clock.advance(1);
        assert!(s.decide("a").allowed);
    }

    #[test]
    fn full_entries_are_forgotten() {
        let s = setup(r#"{"default": {"capacity": 2, "refill_rate": 1}}"#, 1);
        for key in ["a", "b", "c"] {
            s.decide(key);
        }
        assert_eq!(s.backend.drop_full(), 3);
        s.clock.advance(SEC);
        assert_eq!(s.backend.drop_full(), 0);
    }
}
