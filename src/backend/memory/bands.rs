//! One client's bands under one rule, decided in this process: the algorithms of
//! [`crate::algorithm`] over every band at once, admitted by all of them or by none.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::algorithm::{BandState, Combined, Reported, decide_band, settle_band};
use crate::backend::Mode;
use crate::backend::table::Expiring;
use crate::decision::{BandStatus, Decision};
use crate::rules::{Limit, MAX_BANDS};

/// The state of one client's bands under one rule, as a store that decides in this process
/// keeps it (the in-process store keeps one per client and rule in its table). A new one
/// is full; [`decide`](Self::decide) admits and takes, or refuses and takes nothing, over
/// every band at once, with the same arithmetic as every other store.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tollgate::Rules;
/// use tollgate::backend::{BandStates, Mode};
///
/// let rules = Rules::from_json(r#"{"default": {"limits": ["2/second", "3/minute"]}}"#).unwrap();
/// let limit = rules.default_rule().limit().unwrap();
/// let mut bands = BandStates::default();
/// let now = SystemTime::now();
/// assert!(bands.decide(limit, 1, Mode::Take, now).allowed);
/// assert!(bands.decide(limit, 1, Mode::Take, now).allowed);
/// assert!(!bands.decide(limit, 1, Mode::Take, now).allowed, "2 per second");
/// let later = now + Duration::from_secs(1);
/// assert_eq!(bands.decide(limit, 1, Mode::Peek, later).remaining, 1, "the minute's last");
/// assert!(!bands.is_full(later));
/// assert!(bands.is_full(now + Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BandStates {
    /// Each band's state; empty before the first admission.
    pub(crate) states: Box<[BandState]>,
    /// Unix time in µs when every band is full again.
    pub(crate) full_at_us: i64,
}

impl BandStates {
    /// Decides a request of `cost` at `now` over every band of `limit`: takes `cost` from
    /// each and admits it, or refuses it and takes nothing; a peek takes nothing and reports
    /// the bands as they are.
    pub fn decide(&mut self, limit: &Limit, cost: u32, mode: Mode, now: SystemTime) -> Decision {
        let mut next = Next::default();
        let decision = decide_bands(limit, 1, &self.states, unix_us(now), cost, mode, &mut next);
        if next.taken() {
            self.take(&next);
        }
        decision
    }

    /// Takes `delta` more units from every band of `limit` at `now` whether or not they fit,
    /// or, for a negative `delta`, gives `-delta` back: what settling a reservation made at
    /// `reserved` does with the difference between what was used and what was reserved.
    /// Returns the bands' decision after it (always allowed: it reports what is left).
    ///
    /// What is taken past empty is owed, not forgiven: a token bucket goes below zero, and
    /// its refill pays the debt back before it admits again; a window counts past its
    /// capacity, and carries the excess into the windows after it, each paying back a
    /// capacity. A refund gives back no more than a band holds: a bucket fills to its
    /// capacity, a window's count drops to zero; and a window gives back only to the window
    /// the estimate was counted in (a fixed window while it lasts, a sliding window while it
    /// is the current or the previous one).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tollgate::Rules;
    /// use tollgate::backend::{BandStates, Mode};
    ///
    /// let rules = Rules::from_json(r#"{"default": {"capacity": 10, "refill_rate": 1}}"#).unwrap();
    /// let limit = rules.default_rule().limit().unwrap();
    /// let mut bands = BandStates::default();
    /// let now = SystemTime::now();
    /// assert!(bands.decide(limit, 1, Mode::Take, now).allowed, "reserved 1");
    /// assert_eq!(bands.settle(limit, 20, now, now).remaining, 0, "used 21: 11 owed");
    /// assert!(!bands.decide(limit, 1, Mode::Take, now + Duration::from_secs(11)).allowed);
    /// assert!(bands.decide(limit, 1, Mode::Take, now + Duration::from_secs(12)).allowed);
    /// ```
    pub fn settle(
        &mut self,
        limit: &Limit,
        delta: i64,
        reserved: SystemTime,
        now: SystemTime,
    ) -> Decision {
        let now_us = unix_us(now);
        let settling = (delta as f64, unix_us(reserved));
        let algorithm = limit.algorithm();
        let mut combined = Combined::new();
        let mut full_after = 0.0f64;
        let states: Box<[BandState]> = limit
            .bands()
            .iter()
            .enumerate()
            .map(|(i, band)| {
                let spec = band.spec();
                let state = self.states.get(i).copied().unwrap_or(BandState::Fresh);
                let out = settle_band(algorithm, &spec, state, now_us, settling);
                combined.add(Reported::of(spec.capacity, &out, &out));
                full_after = full_after.max(out.reset_after_us);
                out.next
            })
            .collect();
        self.states = states;
        self.full_at_us = now_us.saturating_add(full_after.ceil() as i64);
        combined.decision(now_us)
    }

    /// Every band of `limit` as it is at `now`, in the limit's order: what a peek reports of
    /// each (see [`Outcome::Peeked`](crate::backend::Outcome::Peeked)).
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use tollgate::Rules;
    /// use tollgate::backend::{BandStates, Mode};
    ///
    /// let rules = Rules::from_json(r#"{"default": {"limits": ["2/second", "3/minute"]}}"#).unwrap();
    /// let limit = rules.default_rule().limit().unwrap();
    /// let mut bands = BandStates::default();
    /// let now = SystemTime::now();
    /// bands.decide(limit, 1, Mode::Take, now);
    /// let left: Vec<u32> = bands.bands(limit, now).iter().map(|b| b.remaining).collect();
    /// assert_eq!(left, [1, 2]);
    /// ```
    pub fn bands(&self, limit: &Limit, now: SystemTime) -> Box<[BandStatus]> {
        band_statuses(limit, 1, &self.states, unix_us(now))
    }

    /// Whether every band is full at `now`: the state says no more than a new one would.
    pub fn is_full(&self, now: SystemTime) -> bool {
        unix_us(now) >= self.full_at_us
    }

    /// Stores what an admission took.
    #[inline]
    pub(crate) fn take(&mut self, next: &Next) {
        let states = &next.states[..next.bands];
        // In place: no allocation per request once a client is known.
        if self.states.len() == states.len() {
            self.states.copy_from_slice(states);
        } else {
            self.states = states.into();
        }
        self.full_at_us = next.full_at_us;
    }

    /// The states after an admission, for a client not known before.
    pub(crate) fn taken(next: &Next) -> Self {
        Self {
            states: next.states[..next.bands].into(),
            full_at_us: next.full_at_us,
        }
    }
}

impl Expiring for BandStates {
    fn expires_at_us(&self) -> i64 {
        self.full_at_us
    }
}

/// What an admission takes, on the caller's stack: every band's next state, and when all
/// are full again.
pub(crate) struct Next {
    states: [BandState; MAX_BANDS],
    /// How many bands took; 0 when nothing is to be stored.
    bands: usize,
    full_at_us: i64,
}

impl Default for Next {
    fn default() -> Self {
        Self {
            states: [BandState::Fresh; MAX_BANDS],
            bands: 0,
            full_at_us: 0,
        }
    }
}

impl Next {
    /// Whether the decision admitted and took: the states are to be stored.
    #[inline]
    pub(crate) fn taken(&self) -> bool {
        self.bands > 0
    }
}

/// Decides a request of `cost` at `now_us` (Unix µs) over every band of `limit`, each divided
/// by `share`, from the bands' states `before` (missing ones are full). Returns the decision;
/// when it admitted and takes, `next` holds what to store.
#[inline]
pub(crate) fn decide_bands(
    limit: &Limit,
    share: u32,
    before: &[BandState],
    now_us: i64,
    cost: u32,
    mode: Mode,
    next: &mut Next,
) -> Decision {
    let algorithm = limit.algorithm();
    let cost = f64::from(cost);
    let bands = limit.bands();
    // One pass: every band's answer and next state (rules have at most MAX_BANDS).
    let mut combined = Combined::new();
    let mut full_after = 0.0f64;
    for (i, band) in bands.iter().enumerate() {
        let mut spec = band.divided_by(share).spec();
        if share > 1 {
            // A share too small for one request would refuse every request.
            spec.capacity = spec.capacity.max(cost);
        }
        let state = before.get(i).copied().unwrap_or(BandState::Fresh);
        let out = decide_band(algorithm, &spec, state, now_us, cost);
        // A peek reports the band as it is now, before any cost.
        let shown = match mode {
            Mode::Take => out,
            Mode::Peek => decide_band(algorithm, &spec, state, now_us, 0.0),
        };
        combined.add(Reported::of(spec.capacity, &out, &shown));
        full_after = full_after.max(out.reset_after_us);
        next.states[i] = out.next;
    }
    if combined.admitted() && mode == Mode::Take {
        // Admitted by every band: the cost is taken from all of them.
        next.bands = bands.len();
        next.full_at_us = now_us.saturating_add(full_after.ceil() as i64);
    }
    combined.decision(now_us)
}

/// Every band of `limit`, each divided by `share`, as it is at `now_us` (Unix µs), from the
/// bands' states `before` (missing ones are full).
pub(crate) fn band_statuses(
    limit: &Limit,
    share: u32,
    before: &[BandState],
    now_us: i64,
) -> Box<[BandStatus]> {
    let now = UNIX_EPOCH + Duration::from_micros(u64::try_from(now_us).unwrap_or(0));
    limit
        .bands()
        .iter()
        .enumerate()
        .map(|(i, band)| {
            let band = band.divided_by(share);
            let state = before.get(i).copied().unwrap_or(BandState::Fresh);
            let now_state = decide_band(limit.algorithm(), &band.spec(), state, now_us, 0.0);
            let reset_after =
                Duration::from_micros(now_state.reset_after_us.max(0.0).ceil() as u64);
            BandStatus::new(
                band.capacity(),
                band.period(),
                now_state.remaining.max(0.0) as u32,
                now + reset_after,
            )
        })
        .collect()
}

/// `time` in Unix µs; windows align to Unix time, as they do in Redis.
pub(crate) fn unix_us(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rules;

    #[test]
    fn a_settlement_moves_every_band() {
        let rules =
            Rules::from_json(r#"{"default": {"limits": ["10/minute", "100/hour"]}}"#).unwrap();
        let limit = rules.default_rule().limit().unwrap();
        let mut bands = BandStates::default();
        let now = SystemTime::now();
        bands.decide(limit, 5, Mode::Take, now);
        let refunded = bands.settle(limit, -3, now, now);
        assert!(refunded.allowed);
        let left: Vec<u32> = bands
            .bands(limit, now)
            .iter()
            .map(|b| b.remaining)
            .collect();
        assert_eq!(left, [8, 98], "5 reserved, 2 used, in both bands");
        bands.settle(limit, 50, now, now);
        let left: Vec<u32> = bands
            .bands(limit, now)
            .iter()
            .map(|b| b.remaining)
            .collect();
        assert_eq!(left, [0, 48], "the minute owes 42; the hour had room");
        assert!(!bands.decide(limit, 1, Mode::Take, now).allowed);
        // The minute band (a token each 6 s) has paid 42 back and has one at 258 s; the
        // hour band (one each 36 s), 52 taken, is full at 1,872 s.
        assert!(
            !bands
                .decide(limit, 1, Mode::Peek, now + Duration::from_secs(255))
                .allowed
        );
        assert!(
            bands
                .decide(limit, 1, Mode::Peek, now + Duration::from_secs(259))
                .allowed
        );
        assert!(!bands.is_full(now + Duration::from_secs(1870)));
        assert!(bands.is_full(now + Duration::from_secs(1873)));
    }
}
