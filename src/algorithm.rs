//! The three algorithms, as pure functions of a band's stored state and the time.
//!
//! Every limit is one or more **bands**. A band holds `capacity` and a `period`: for a
//! token bucket, the bucket holds `capacity` tokens and refills `capacity` per `period`
//! (`refill_rate = capacity / period`); for the window algorithms, `capacity` requests per
//! window of length `period`. A request of cost `c` is admitted only if **every** band of its
//! rule has room for `c`, and then takes `c` from every band; otherwise nothing changes.
//!
//! Times are microseconds of Unix time (Redis `TIME`, or the system clock in memory), so
//! windows align to the same boundaries on every instance and backend. The Redis backend's
//! Lua script (`decide.lua`) performs the same floating-point operations in the same order, so
//! both backends reach the same decisions from the same states and times.
//!
//! **token_bucket**: `tokens = min(capacity, tokens + elapsed × rate)`; admitted if
//! `tokens ≥ cost`. Reset: when `tokens` reaches `capacity`. Retry: when `tokens` reaches `cost`.
//!
//! **fixed_window**: windows `[k·period, (k+1)·period)`; a counter per window; admitted if
//! `count + cost ≤ capacity`. Up to `2 × capacity` can pass around a boundary. Reset and
//! retry: the window's end.
//!
//! **sliding_window**: the two-counter estimate. With `f` the fraction of the current window
//! elapsed, `estimate = previous × (1 − f) + current`; admitted if
//! `estimate + cost ≤ capacity`. Retry: when the previous window's share has shrunk enough
//! (or, if the current window alone is too full, the matching point of the next window).
//! Reset: when both counted windows have passed.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::Decision;

/// Which algorithm a rule's bands use.
///
/// # Example
///
/// ```
/// use http::Method;
/// use tollgate::{Algorithm, Rules};
///
/// let rules = Rules::from_json(r#"{
///     "default": {"limit": "100/minute", "algorithm": "sliding_window"}
/// }"#).unwrap();
/// let limit = rules.lookup(&Method::GET, "/").limit().unwrap();
/// assert_eq!(limit.algorithm(), Algorithm::SlidingWindow);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Bursts up to capacity, refilled continuously (the default).
    #[default]
    TokenBucket,
    /// A counter per calendar-aligned window.
    FixedWindow,
    /// The two-counter sliding window estimate.
    SlidingWindow,
}

impl Algorithm {
    /// The name used in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::SlidingWindow => "sliding_window",
        }
    }
}

/// What one band needs to decide: its capacity, refill rate and window length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BandSpec {
    pub(crate) capacity: f64,
    /// Tokens per second (token bucket).
    pub(crate) refill_per_sec: f64,
    /// Window length in whole microseconds (window algorithms), at least 1.
    pub(crate) window_us: i64,
}

/// One band's stored state. `Fresh` is a band never used, or forgotten: full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BandState {
    Fresh,
    Bucket {
        tokens: f64,
        ts_us: i64,
    },
    /// A fixed window's index and the units counted in it.
    Fixed {
        index: i64,
        count: f64,
    },
    /// A sliding window's index, the units counted in it and in the one before.
    Sliding {
        index: i64,
        count: f64,
        previous: f64,
    },
}

/// One band's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BandOutcome {
    pub(crate) admitted: bool,
    /// Whole units left, after this request if it is admitted.
    pub(crate) remaining: f64,
    /// Microseconds until `cost` would be admitted; 0 when admitted.
    pub(crate) retry_after_us: f64,
    /// Microseconds until the band is back to full capacity.
    pub(crate) reset_after_us: f64,
    /// Microseconds until the band has one whole unit more than `remaining` (0 when it is
    /// full): the IETF `RateLimit` field's `t`.
    pub(crate) next_unit_after_us: f64,
    /// The state to store if every band admits.
    pub(crate) next: BandState,
}

/// Decides one band. Pure: the caller stores `next` only if every band admitted.
pub(crate) fn decide_band(
    algorithm: Algorithm,
    spec: &BandSpec,
    state: BandState,
    now_us: i64,
    cost: f64,
) -> BandOutcome {
    band(algorithm, spec, state, now_us, cost, None)
}

/// Takes `delta` units from one band whether or not they fit, or gives `-delta` back: what
/// settling a reservation made at `reserved_us` does with the difference between what was
/// used and what was reserved. Always "admitted"; the caller stores `next`.
///
/// What is taken past empty is owed, not forgiven: a token bucket goes below zero and its
/// refill pays the debt back before it admits again; a window counts past its capacity, and
/// the excess is carried into the windows after it, a capacity's worth paid back by each. A
/// refund gives back at most what the band can hold: a bucket fills to its capacity, a
/// window's count drops to zero. A window gives back only to the window the estimate was
/// counted in: a fixed window while it lasts, a sliding window while it is the current or the
/// previous one; after that, what it counted is gone already.
pub(crate) fn settle_band(
    algorithm: Algorithm,
    spec: &BandSpec,
    state: BandState,
    now_us: i64,
    (delta, reserved_us): (f64, i64),
) -> BandOutcome {
    band(algorithm, spec, state, now_us, delta, Some(reserved_us))
}

/// One band taking `cost`: if it fits, or, when `settling` a reservation made then,
/// whatever it is (negative: a refund).
fn band(
    algorithm: Algorithm,
    spec: &BandSpec,
    state: BandState,
    now_us: i64,
    cost: f64,
    settling: Option<i64>,
) -> BandOutcome {
    match algorithm {
        Algorithm::TokenBucket => token_bucket(spec, state, now_us, cost, settling.is_some()),
        Algorithm::FixedWindow => fixed_window(spec, state, now_us, cost, settling),
        Algorithm::SlidingWindow => sliding_window(spec, state, now_us, cost, settling),
    }
}

fn token_bucket(
    spec: &BandSpec,
    state: BandState,
    now: i64,
    cost: f64,
    forced: bool,
) -> BandOutcome {
    let (capacity, rate) = (spec.capacity, spec.refill_per_sec);
    let (mut tokens, ts) = match state {
        BandState::Bucket { tokens, ts_us } => (tokens, ts_us),
        _ => (capacity, now),
    };
    // A clock that went backwards refills nothing; min() also clamps a lowered capacity.
    let elapsed = (now - ts).max(0) as f64;
    tokens = capacity.min(tokens + elapsed * rate / 1_000_000.0);
    let admitted = forced || tokens >= cost;
    let (left, retry_after_us) = if admitted {
        // Below zero is a debt the refill pays back; a refund fills up to the capacity.
        ((tokens - cost).min(capacity), 0.0)
    } else {
        (tokens, (cost - tokens) * 1_000_000.0 / rate)
    };
    // The next whole token (the last one may be a fraction of one, up to the capacity);
    // under a debt, the first whole one.
    let next_unit_after_us = if left >= capacity {
        0.0
    } else {
        ((left.max(0.0).floor() + 1.0).min(capacity) - left) * 1_000_000.0 / rate
    };
    BandOutcome {
        admitted,
        remaining: left.floor(),
        retry_after_us,
        reset_after_us: (capacity - left) * 1_000_000.0 / rate,
        next_unit_after_us,
        next: BandState::Bucket {
            tokens: left,
            ts_us: now,
        },
    }
}

/// The current window's index. A stored index one ahead means the clock went back a
/// little, and that window is kept. Any other stored index is of another window, or of
/// another window length (a reload changed the rule), and carries nothing over.
fn window_index(stored: Option<i64>, now: i64, window: i64) -> i64 {
    let index = now.div_euclid(window);
    match stored {
        Some(stored) if stored == index + 1 => stored,
        _ => index,
    }
}

/// What a window's `count` leaves owed `windows` windows later: what went past the
/// capacity, less a capacity for each window since (nothing, for a count within it).
fn carried(count: f64, capacity: f64, windows: i64) -> f64 {
    (count - capacity * windows as f64).max(0.0)
}

/// A window's count as stored: negative when it holds a debt (a settlement took past the
/// capacity), whose excess the windows after it carry. A count past the capacity for another
/// reason (the capacity was lowered) carries nothing, as before settlements.
fn stored_count(count: f64) -> (f64, bool) {
    (count.abs(), count < 0.0)
}

/// A window's count after a request of `cost` (taken if `admitted`; never below zero), and
/// whether it holds a debt: a settlement's (`debt`), past the capacity.
fn window_counted(count: f64, cost: f64, admitted: bool, debt: bool, capacity: f64) -> (f64, bool) {
    let counted = if admitted {
        (count + cost).max(0.0)
    } else {
        count
    };
    (counted, debt && counted > capacity)
}

/// A window's count to store: marked as a debt while it holds one past the capacity.
fn count_to_store(counted: f64, owing: bool, capacity: f64) -> f64 {
    if owing && counted > capacity {
        -counted
    } else {
        counted
    }
}

fn fixed_window(
    spec: &BandSpec,
    state: BandState,
    now: i64,
    cost: f64,
    settling: Option<i64>,
) -> BandOutcome {
    let forced = settling.is_some();
    let (capacity, window) = (spec.capacity, spec.window_us);
    let stored = match state {
        BandState::Fixed { index, count } => Some((index, count)),
        _ => None,
    };
    let index = window_index(stored.map(|(i, _)| i), now, window);
    let (count, owing) = match stored {
        Some((i, count)) if i == index => stored_count(count),
        // An earlier window: only a debt comes over.
        Some((i, count)) if i < index && count < 0.0 => {
            (carried(-count, capacity, index - i), true)
        }
        _ => (0.0, false),
    };
    // A refund after the estimate's window ended: that window's count is gone already.
    let cost = match settling {
        Some(reserved) if cost < 0.0 && reserved.div_euclid(window) != index => 0.0,
        _ => cost,
    };
    let admitted = forced || count + cost <= capacity;
    let (counted, owing) = window_counted(count, cost, admitted, owing || forced, capacity);
    let until_end = ((index + 1) * window - now) as f64;
    // Until the start of the first window whose carried count is at most `room` short of
    // the capacity: the next window's, unless a debt runs past it.
    let until_room = |room: f64| {
        let windows = match owing {
            true => ((counted + room - capacity) / capacity).ceil().max(1.0),
            false => 1.0,
        };
        until_end + (windows - 1.0) * window as f64
    };
    BandOutcome {
        admitted,
        remaining: (capacity - counted).max(0.0).floor(),
        retry_after_us: if admitted { 0.0 } else { until_room(cost) },
        reset_after_us: if counted > 0.0 {
            until_room(capacity)
        } else {
            0.0
        },
        // Everything counted comes back at once, at the window's end (a debt, a capacity
        // at each window's end).
        next_unit_after_us: if counted > 0.0 { until_room(1.0) } else { 0.0 },
        next: BandState::Fixed {
            index,
            count: count_to_store(counted, owing, capacity),
        },
    }
}

fn sliding_window(
    spec: &BandSpec,
    state: BandState,
    now: i64,
    cost: f64,
    settling: Option<i64>,
) -> BandOutcome {
    let forced = settling.is_some();
    let (capacity, window) = (spec.capacity, spec.window_us);
    let stored = match state {
        BandState::Sliding {
            index,
            count,
            previous,
        } => Some((index, count, previous)),
        _ => None,
    };
    let index = window_index(stored.map(|(i, _, _)| i), now, window);
    let (current, previous, owing) = match stored {
        Some((i, count, previous)) if i == index => {
            let (count, owing) = stored_count(count);
            (count, previous, owing)
        }
        // Earlier windows, after a debt: the last one counted becomes the previous, as much
        // of it as a window holds, and only the debt comes into this one.
        Some((i, count, _)) if i < index && count < 0.0 => {
            let (behind, count) = (index - i, -count);
            let previous = carried(count, capacity, behind - 1).min(capacity);
            (carried(count, capacity, behind), previous, true)
        }
        Some((i, count, _)) if i == index - 1 => (0.0, count, false),
        _ => (0.0, 0.0, false),
    };
    // A refund goes to the window the estimate was counted in: this one, or the previous
    // one (whose share of the estimate shrinks); an older one is gone already.
    let (cost, previous) = match settling {
        Some(reserved) if cost < 0.0 => match index - reserved.div_euclid(window) {
            0 => (cost, previous),
            1 => (0.0, (previous + cost).max(0.0)),
            _ => (0.0, previous),
        },
        _ => (cost, previous),
    };
    let start = index * window;
    let window_f = window as f64;
    let weight = ((start + window) - now) as f64 / window_f;
    let estimate = previous * weight + current;
    let admitted = forced || estimate + cost <= capacity;
    let (counted, owing) = window_counted(current, cost, admitted, owing || forced, capacity);
    let retry_after_us = if admitted {
        0.0
    } else if current + cost <= capacity {
        // The previous window's share must shrink to capacity - current - cost.
        let weight_needed = (capacity - current - cost) / previous;
        (start as f64 + (1.0 - weight_needed) * window_f) - now as f64
    } else {
        // Only a later window can admit it: the next, where this one becomes the previous,
        // unless a debt runs past it. In the first window where what comes over leaves room
        // for the cost, the previous window's share must shrink.
        let windows = match owing {
            true => ((current + cost - capacity) / capacity).ceil().max(1.0),
            false => 1.0,
        };
        let carried_in = carried(current, capacity, windows as i64);
        let before = carried(current, capacity, windows as i64 - 1).min(capacity);
        let weight_needed = (capacity - carried_in - cost) / before;
        (start as f64 + (windows + 1.0 - weight_needed) * window_f) - now as f64
    };
    let reset_after_us = if counted > 0.0 {
        // Every count gone: this window's becomes the previous, a debt runs on.
        let windows = match owing {
            true => (counted / capacity).ceil().max(1.0) + 1.0,
            false => 2.0,
        };
        start as f64 + windows * window_f - now as f64
    } else if previous > 0.0 {
        ((start + window) - now) as f64
    } else {
        0.0
    };
    let estimate = previous * weight + counted;
    BandOutcome {
        admitted,
        remaining: (capacity - estimate).max(0.0).floor(),
        retry_after_us,
        reset_after_us,
        next_unit_after_us: sliding_next_unit_us(
            capacity, estimate, previous, counted, weight, window_f,
        ),
        next: BandState::Sliding {
            index,
            count: count_to_store(counted, owing, capacity),
            previous,
        },
    }
}

/// Microseconds until a sliding window's estimate (`previous × weight + counted`, with
/// `weight` of the current window still ahead) drops enough for one more whole unit below
/// `capacity`: the previous window's share shrinks until the window ends, then this window's
/// count, become the previous one, shrinks in turn.
fn sliding_next_unit_us(
    capacity: f64,
    estimate: f64,
    previous: f64,
    counted: f64,
    weight: f64,
    window: f64,
) -> f64 {
    if estimate <= 0.0 {
        return 0.0;
    }
    let free = capacity - estimate;
    // How much the estimate must drop (never more than all of it).
    let drop = ((free.max(0.0).floor() + 1.0) - free).min(estimate);
    let before_end = previous * weight;
    if previous > 0.0 && before_end >= drop {
        return drop * window / previous;
    }
    let until_end = weight * window;
    if counted <= 0.0 {
        return until_end;
    }
    until_end + ((drop - before_end).max(0.0) * window / counted).min(window)
}

/// Folds the bands' answers into one [`Decision`]: admitted only if every band admitted.
/// Headers report the band closest to running out (fewest remaining; on a tie the later
/// reset); when refused, the refusing band with the longest wait, and `Retry-After` is that
/// longest wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Combined {
    admitted: bool,
    /// The band to report.
    report: Option<Reported>,
}

impl Combined {
    pub(crate) fn new() -> Self {
        Self {
            admitted: true,
            report: None,
        }
    }

    pub(crate) fn admitted(&self) -> bool {
        self.admitted
    }

    /// Adds one band's answer: its capacity and what it answered.
    pub(crate) fn add(&mut self, band: Reported) {
        let replace = match (self.report, band.admitted, self.admitted) {
            (None, _, _) => true,
            // The first refusal replaces any admitted band.
            (Some(_), false, true) => true,
            (Some(_), true, false) => false,
            (Some(held), false, false) => band.retry_after_us > held.retry_after_us,
            (Some(held), true, true) => {
                band.remaining < held.remaining
                    || (band.remaining == held.remaining
                        && band.reset_after_us > held.reset_after_us)
            }
        };
        self.admitted &= band.admitted;
        if replace {
            self.report = Some(band);
        }
    }

    pub(crate) fn decision(&self, now_us: i64) -> Decision {
        let band = self.report.unwrap_or_default();
        let micros = |us: f64| Duration::from_micros(us.max(0.0).ceil() as u64);
        let now = SystemTime::UNIX_EPOCH + Duration::from_micros(now_us.max(0) as u64);
        let mut decision = Decision::new(
            self.admitted,
            band.capacity as u32,
            band.remaining.max(0.0) as u32,
            now + micros(band.reset_after_us),
            if self.admitted {
                Duration::ZERO
            } else {
                micros(band.retry_after_us)
            },
        );
        decision.next_unit = Some(now + micros(band.next_unit_after_us));
        decision
    }
}

/// One band's answer as [`Combined`] weighs it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reported {
    pub(crate) capacity: f64,
    pub(crate) admitted: bool,
    /// Whole units left.
    pub(crate) remaining: f64,
    pub(crate) retry_after_us: f64,
    pub(crate) reset_after_us: f64,
    pub(crate) next_unit_after_us: f64,
}

impl Reported {
    /// A band of `capacity` as `out` decided it, its bands shown as `shown` has them (the
    /// same outcome, or for a peek the band before any cost).
    pub(crate) fn of(capacity: f64, out: &BandOutcome, shown: &BandOutcome) -> Self {
        Self {
            capacity,
            admitted: out.admitted,
            remaining: shown.remaining,
            retry_after_us: out.retry_after_us,
            reset_after_us: shown.reset_after_us,
            next_unit_after_us: shown.next_unit_after_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000;

    fn spec(capacity: f64, per_secs: f64) -> BandSpec {
        BandSpec {
            capacity,
            refill_per_sec: capacity / per_secs,
            window_us: (per_secs * 1e6).round() as i64,
        }
    }

    /// Runs requests at the given times (µs), storing state only when admitted.
    fn run(algorithm: Algorithm, spec: BandSpec, times: &[i64]) -> Vec<(bool, f64, f64)> {
        let mut state = BandState::Fresh;
        times
            .iter()
            .map(|&t| {
                let out = decide_band(algorithm, &spec, state, t, 1.0);
                if out.admitted {
                    state = out.next;
                }
                (out.admitted, out.remaining, out.retry_after_us)
            })
            .collect()
    }

    #[test]
    fn token_bucket_bursts_then_refills_continuously() {
        let s = spec(3.0, 3.0); // 1 token/s
        let t0 = 100 * SEC;
        let out = run(
            Algorithm::TokenBucket,
            s,
            &[t0, t0, t0, t0, t0 + SEC - 1, t0 + SEC],
        );
        let admitted: Vec<bool> = out.iter().map(|o| o.0).collect();
        assert_eq!(admitted, [true, true, true, false, false, true]);
        assert_eq!(out[3].2, SEC as f64, "retry after one refill period");
        assert_eq!(out[2].1, 0.0);
    }

    #[test]
    fn token_bucket_clamps_a_lowered_capacity() {
        let state = BandState::Bucket {
            tokens: 8.0,
            ts_us: 0,
        };
        let out = decide_band(Algorithm::TokenBucket, &spec(5.0, 5.0), state, 0, 1.0);
        assert_eq!(out.remaining, 4.0, "min(5, 8) - 1");
    }

    #[test]
    fn fixed_window_resets_at_the_boundary() {
        let s = spec(2.0, 60.0);
        let w = 60 * SEC;
        let start = 1000 * w;
        let out = run(
            Algorithm::FixedWindow,
            s,
            &[
                start + w - 2,
                start + w - 1,
                start + w - 1,
                start + w,
                start + w,
            ],
        );
        let admitted: Vec<bool> = out.iter().map(|o| o.0).collect();
        // Two at the very end of one window, two more at the start of the next.
        assert_eq!(admitted, [true, true, false, true, true]);
        assert_eq!(out[2].2, 1.0, "retry when the window ends, 1 µs later");
    }

    #[test]
    fn sliding_window_weights_the_previous_window() {
        let s = spec(10.0, 60.0);
        let w = 60 * SEC;
        let start = 1000 * w;
        // 10 requests late in one window fill it.
        let mut state = BandState::Fresh;
        for _ in 0..10 {
            let out = decide_band(Algorithm::SlidingWindow, &s, state, start + w - SEC, 1.0);
            assert!(out.admitted);
            state = out.next;
        }
        // At the boundary the previous window still counts fully: 10 + 1 > 10.
        let at_boundary = decide_band(Algorithm::SlidingWindow, &s, state, start + w, 1.0);
        assert!(!at_boundary.admitted);
        // Admission needs previous × weight ≤ 9: weight 0.9, so 10% (6 s) into the window.
        assert_eq!(at_boundary.retry_after_us, (6 * SEC) as f64);
        let early = decide_band(
            Algorithm::SlidingWindow,
            &s,
            state,
            start + w + 6 * SEC - 1,
            1.0,
        );
        assert!(!early.admitted);
        let on_time = decide_band(
            Algorithm::SlidingWindow,
            &s,
            state,
            start + w + 6 * SEC,
            1.0,
        );
        assert!(on_time.admitted);
        // Half way through the next window, half of the previous window counts.
        let half = decide_band(Algorithm::SlidingWindow, &s, state, start + w + w / 2, 1.0);
        assert!(half.admitted);
        assert_eq!(half.remaining, 4.0, "10 - (10 × 0.5 + 1)");
        // Two windows later nothing counts.
        let later = decide_band(Algorithm::SlidingWindow, &s, state, start + 3 * w, 1.0);
        assert_eq!(later.remaining, 9.0);
    }

    #[test]
    fn sliding_window_full_current_window_waits_for_the_next() {
        let s = spec(4.0, 10.0);
        let w = 10 * SEC;
        let mut state = BandState::Fresh;
        for _ in 0..4 {
            state = decide_band(Algorithm::SlidingWindow, &s, state, 5 * w, 1.0).next;
        }
        let out = decide_band(Algorithm::SlidingWindow, &s, state, 5 * w, 1.0);
        assert!(!out.admitted);
        // Next window: 4 × (1 - f) + 1 ≤ 4 at f = 0.25.
        assert_eq!(out.retry_after_us, (w + w / 4) as f64);
        assert_eq!(out.reset_after_us, (2 * w) as f64);
    }

    #[test]
    fn clocks_going_backwards_do_not_reopen_a_window() {
        let s = spec(1.0, 10.0);
        let w = 10 * SEC;
        for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindow] {
            let first = decide_band(algorithm, &s, BandState::Fresh, 7 * w, 1.0);
            let back = decide_band(algorithm, &s, first.next, 6 * w, 1.0);
            assert!(!back.admitted, "{algorithm:?}");
        }
    }

    #[test]
    fn a_longer_window_after_a_reload_starts_afresh() {
        // 1 per minute, spent; the rule becomes 100 per hour (same state, new window length).
        let minute = spec(1.0, 60.0);
        let hour = spec(100.0, 3600.0);
        let now = 1_000_000 * SEC;
        for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindow] {
            let spent = decide_band(algorithm, &minute, BandState::Fresh, now, 1.0);
            let out = decide_band(algorithm, &hour, spent.next, now + SEC, 1.0);
            assert!(out.admitted, "{algorithm:?}");
            assert_eq!(out.remaining, 99.0, "{algorithm:?}");
            // Full again within two hours, not at the end of some far-off window.
            assert!(
                out.reset_after_us <= (7200 * SEC) as f64,
                "{algorithm:?} {out:?}"
            );
        }
    }

    #[test]
    fn another_algorithm_s_state_is_a_full_band() {
        let s = spec(1.0, 10.0);
        let now = 1000 * 10 * SEC;
        let fixed = decide_band(Algorithm::FixedWindow, &s, BandState::Fresh, now, 1.0);
        let sliding = decide_band(Algorithm::SlidingWindow, &s, fixed.next, now, 1.0);
        assert!(sliding.admitted);
        let bucket = decide_band(Algorithm::TokenBucket, &s, sliding.next, now, 1.0);
        assert!(bucket.admitted);
    }

    #[test]
    fn combined_reports_the_band_closest_to_running_out() {
        let band =
            |capacity: f64, admitted: bool, remaining: f64, retry: f64, reset: f64| Reported {
                capacity,
                admitted,
                remaining,
                retry_after_us: retry,
                reset_after_us: reset,
                next_unit_after_us: reset / capacity,
            };
        let mut c = Combined::new();
        c.add(band(10.0, true, 7.0, 0.0, 3e6));
        c.add(band(1000.0, true, 2.0, 0.0, 9e6));
        c.add(band(50.0, true, 2.0, 0.0, 1e6));
        let d = c.decision(0);
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining), (1000, 2));
        assert_eq!(d.reset_unix_secs(), 9);
        assert_eq!(
            d.next_unit,
            Some(SystemTime::UNIX_EPOCH + Duration::from_micros(9_000))
        );

        let mut c = Combined::new();
        c.add(band(10.0, true, 7.0, 0.0, 3e6));
        c.add(band(1000.0, false, 0.0, 4e6, 9e6));
        c.add(band(5000.0, false, 0.0, 6e6, 7e6));
        let d = c.decision(0);
        assert!(!d.allowed);
        assert_eq!((d.limit, d.retry_after_secs()), (5000, 6));
    }

    /// `t` of the IETF fields: until one more unit, per algorithm.
    #[test]
    fn the_next_unit_comes_per_algorithm() {
        // 10 a second: a token every 100 ms. Three taken at once: the next in 100 ms.
        let s = spec(10.0, 1.0);
        let mut state = BandState::Fresh;
        for _ in 0..3 {
            state = decide_band(Algorithm::TokenBucket, &s, state, 0, 1.0).next;
        }
        let out = decide_band(Algorithm::TokenBucket, &s, state, 50_000, 0.0);
        // Half a token back after 50 ms: the 8th whole one in another 50.
        assert_eq!(out.remaining, 7.0);
        assert!((out.next_unit_after_us - 50_000.0).abs() < 1e-6, "{out:?}");
        let full = decide_band(Algorithm::TokenBucket, &s, BandState::Fresh, 0, 0.0);
        assert_eq!(full.next_unit_after_us, 0.0);

        // A minute's fixed window: everything at its end.
        let s = spec(10.0, 60.0);
        let taken = decide_band(Algorithm::FixedWindow, &s, BandState::Fresh, 15 * SEC, 3.0);
        assert_eq!(taken.next_unit_after_us, 45.0 * SEC as f64);
        let untouched = decide_band(Algorithm::FixedWindow, &s, BandState::Fresh, 15 * SEC, 0.0);
        assert_eq!(untouched.next_unit_after_us, 0.0);

        // Sliding: 10 a minute, 6 counted in the previous minute, 4 in this one, a quarter
        // in: the estimate is 6 × 0.75 + 4 = 8.5, 1.5 free; the 2nd whole unit needs a drop
        // of 0.5, at 6 per minute: 5 s.
        let s = spec(10.0, 60.0);
        let state = BandState::Sliding {
            index: 1,
            count: 4.0,
            previous: 6.0,
        };
        let out = decide_band(Algorithm::SlidingWindow, &s, state, 75 * SEC, 0.0);
        assert_eq!(out.remaining, 1.0);
        assert!(
            (out.next_unit_after_us - 5.0 * SEC as f64).abs() < 1.0,
            "{out:?}"
        );
        // Nothing in the previous window: only this one's count, after the window ends.
        let state = BandState::Sliding {
            index: 1,
            count: 10.0,
            previous: 0.0,
        };
        let out = decide_band(Algorithm::SlidingWindow, &s, state, 75 * SEC, 0.0);
        // 45 s to the end, then 1 of 10 at 10 per minute: 6 s more.
        assert!(
            (out.next_unit_after_us - 51.0 * SEC as f64).abs() < 1.0,
            "{out:?}"
        );
    }

    /// Takes `cost` at `now` if it fits, storing the state; returns whether it did.
    fn take(
        algorithm: Algorithm,
        spec: &BandSpec,
        state: &mut BandState,
        now: i64,
        cost: f64,
    ) -> BandOutcome {
        let out = decide_band(algorithm, spec, *state, now, cost);
        if out.admitted {
            *state = out.next;
        }
        out
    }

    /// Settles a reservation made at `now`.
    fn settle(algorithm: Algorithm, spec: &BandSpec, state: &mut BandState, now: i64, delta: f64) {
        let out = settle_band(algorithm, spec, *state, now, (delta, now));
        assert!(out.admitted, "a settlement always goes through");
        *state = out.next;
    }

    #[test]
    fn a_bucket_refunds_up_to_its_capacity_and_carries_an_overrun_as_debt() {
        let s = spec(10.0, 10.0); // 1 token/s
        let t0 = 1_000 * SEC;
        let mut state = BandState::Fresh;
        take(Algorithm::TokenBucket, &s, &mut state, t0, 5.0);
        settle(Algorithm::TokenBucket, &s, &mut state, t0, -3.0);
        assert_eq!(
            take(Algorithm::TokenBucket, &s, &mut state, t0, 0.0).remaining,
            8.0
        );
        settle(Algorithm::TokenBucket, &s, &mut state, t0, -100.0);
        assert_eq!(
            take(Algorithm::TokenBucket, &s, &mut state, t0, 0.0).remaining,
            10.0,
            "no more than full"
        );
        // Reserved 1, used 21: 20 more, 11 below empty.
        take(Algorithm::TokenBucket, &s, &mut state, t0, 1.0);
        settle(Algorithm::TokenBucket, &s, &mut state, t0, 20.0);
        let refused = take(Algorithm::TokenBucket, &s, &mut state, t0, 1.0);
        assert!(!refused.admitted);
        assert_eq!(refused.remaining, -11.0_f64.floor().max(-11.0));
        assert_eq!(
            refused.retry_after_us,
            12.0 * SEC as f64,
            "the debt and one token"
        );
        assert!(
            !take(
                Algorithm::TokenBucket,
                &s,
                &mut state,
                t0 + 12 * SEC - 1,
                1.0
            )
            .admitted
        );
        assert!(take(Algorithm::TokenBucket, &s, &mut state, t0 + 12 * SEC, 1.0).admitted);
    }

    #[test]
    fn a_fixed_window_carries_an_overrun_into_the_windows_after() {
        let s = spec(10.0, 10.0);
        let start = 1_000 * SEC;
        let mut state = BandState::Fresh;
        take(Algorithm::FixedWindow, &s, &mut state, start + SEC, 1.0);
        settle(Algorithm::FixedWindow, &s, &mut state, start + SEC, 25.0);
        let refused = take(Algorithm::FixedWindow, &s, &mut state, start + 2 * SEC, 1.0);
        assert!(!refused.admitted);
        assert_eq!(refused.remaining, 0.0);
        // 26 counted: 16 owed in the next window, 6 in the one after, which has room.
        assert_eq!(refused.retry_after_us, 18.0 * SEC as f64);
        assert_eq!(refused.reset_after_us, 28.0 * SEC as f64);
        assert!(
            !take(
                Algorithm::FixedWindow,
                &s,
                &mut state,
                start + 10 * SEC,
                1.0
            )
            .admitted
        );
        let admitted = take(
            Algorithm::FixedWindow,
            &s,
            &mut state,
            start + 20 * SEC,
            1.0,
        );
        assert!(admitted.admitted);
        assert_eq!(admitted.remaining, 3.0, "10 - 6 - 1");
        // A refund gives back what is counted, never below nothing.
        settle(
            Algorithm::FixedWindow,
            &s,
            &mut state,
            start + 20 * SEC,
            -50.0,
        );
        assert_eq!(
            take(
                Algorithm::FixedWindow,
                &s,
                &mut state,
                start + 20 * SEC,
                0.0
            )
            .remaining,
            10.0
        );
    }

    #[test]
    fn a_sliding_window_carries_an_overrun_and_says_when_it_admits_again() {
        let s = spec(10.0, 10.0);
        let start = 1_000 * SEC;
        let mut state = BandState::Fresh;
        take(Algorithm::SlidingWindow, &s, &mut state, start + SEC, 1.0);
        settle(Algorithm::SlidingWindow, &s, &mut state, start + SEC, 25.0);
        let refused = take(
            Algorithm::SlidingWindow,
            &s,
            &mut state,
            start + 2 * SEC,
            1.0,
        );
        assert!(!refused.admitted);
        let retry = refused.retry_after_us as i64;
        let at = start + 2 * SEC + retry;
        assert!(
            at > start + 20 * SEC,
            "not before the debt is paid: {retry}"
        );
        assert!(!take(Algorithm::SlidingWindow, &s, &mut state, at - 1_000, 1.0).admitted);
        assert!(take(Algorithm::SlidingWindow, &s, &mut state, at + 1, 1.0).admitted);
        // Every count gone by the reset, not a second before.
        let mut owing = BandState::Fresh;
        take(Algorithm::SlidingWindow, &s, &mut owing, start, 1.0);
        settle(Algorithm::SlidingWindow, &s, &mut owing, start, 25.0);
        let probe = |at: i64| decide_band(Algorithm::SlidingWindow, &s, owing, at, 0.0);
        let reset = probe(start).reset_after_us as i64;
        assert_eq!(
            reset,
            40 * SEC,
            "26 counted: the last of it leaves in the fourth window"
        );
        assert_eq!(probe(start + reset).remaining, 10.0);
        assert!(probe(start + reset - SEC).remaining < 10.0);
    }

    #[test]
    fn a_lowered_capacity_carries_nothing_into_the_next_window() {
        // 900 counted under a capacity of 1000, which a reload lowered to 10: the next
        // window starts afresh, as before settlements (only a settlement's debt carries).
        let s = spec(10.0, 10.0);
        let start = 1_000 * SEC;
        let fixed = BandState::Fixed {
            index: start / (10 * SEC),
            count: 900.0,
        };
        let out = decide_band(Algorithm::FixedWindow, &s, fixed, start + SEC, 1.0);
        assert!(!out.admitted);
        assert_eq!(out.retry_after_us, 9.0 * SEC as f64, "the window's end");
        assert!(decide_band(Algorithm::FixedWindow, &s, fixed, start + 10 * SEC, 1.0).admitted);
        let sliding = BandState::Sliding {
            index: start / (10 * SEC),
            count: 900.0,
            previous: 0.0,
        };
        assert!(
            !decide_band(Algorithm::SlidingWindow, &s, sliding, start + 19 * SEC, 1.0).admitted,
            "900 × 0.1 still counts"
        );
        assert!(decide_band(Algorithm::SlidingWindow, &s, sliding, start + 20 * SEC, 1.0).admitted);
    }

    #[test]
    fn a_window_gives_a_refund_back_only_to_the_window_it_counted_in() {
        let s = spec(10.0, 10.0);
        let start = 1_000 * SEC;
        let refund = |algorithm, state, at| {
            // Reserved 8 at `start`, used none, settled at `at`.
            let out = settle_band(algorithm, &s, state, at, (-8.0, start));
            decide_band(algorithm, &s, out.next, at, 0.0).remaining
        };
        for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindow] {
            let mut state = BandState::Fresh;
            take(algorithm, &s, &mut state, start, 8.0);
            assert_eq!(
                refund(algorithm, state, start + SEC),
                10.0,
                "{algorithm:?}, same window"
            );
            // The next window: a fixed window's 8 are gone already, and a refund there would
            // give the client 8 the window never took.
            let mut next = state;
            assert!(take(algorithm, &s, &mut next, start + 11 * SEC, 2.0).admitted);
            // Fixed: nothing given back. Sliding: the previous window's share (8 × 0.9) is
            // what shrinks, to nothing.
            assert_eq!(
                refund(algorithm, next, start + 11 * SEC),
                8.0,
                "{algorithm:?}"
            );
            let unrefunded = decide_band(algorithm, &s, next, start + 11 * SEC, 0.0).remaining;
            let expected = match algorithm {
                Algorithm::FixedWindow => 8.0,
                _ => 0.0, // 10 - 2 - 8 × 0.9, floored
            };
            assert_eq!(unrefunded, expected, "{algorithm:?}");
            // Two windows on: nothing counted is left to give back.
            let mut later = state;
            take(algorithm, &s, &mut later, start + 21 * SEC, 3.0);
            assert_eq!(
                refund(algorithm, later, start + 21 * SEC),
                7.0,
                "{algorithm:?}"
            );
        }
    }
}
