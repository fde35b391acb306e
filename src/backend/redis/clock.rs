//! Redis's clock, as seen from this process: so that a decision can carry its deadline in
//! the clock the script reads (`TIME`).
//!
//! A call that Redis runs after its request gave up (Redis was stopped, or busy) must take
//! nothing: that request was already answered by the failure policy. The script cannot know
//! when the call was sent, so each decision carries its deadline in Redis's own time, and
//! the script writes nothing for a decision past it.
//!
//! Every reply carries Redis's `TIME` when the script ran. That time minus the local wall
//! clock when the reply arrived is the offset between the clocks, less the reply's travel
//! time, so each reading errs on the early side: a deadline computed with it falls a little
//! before the real one, never after. The largest reading of the last second is the closest,
//! and is the one used; a reading a second old gives way to the next, so a clock that is
//! stepped is followed within a second.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the largest reading is kept before any newer one replaces it.
const KEEP_US: i64 = 1_000_000;

/// The offset of one Redis server's clock from this process's wall clock.
#[derive(Debug, Default)]
pub(crate) struct RedisClock {
    /// Redis's time minus local time, in µs, from the best recent reading.
    offset_us: AtomicI64,
    /// When that reading was taken (local µs); 0: no reading yet.
    read_at_us: AtomicI64,
}

impl RedisClock {
    /// Takes a reading: Redis said its time was `redis_now_ms` in a reply that arrived now.
    pub(crate) fn observe(&self, redis_now_ms: i64) {
        let local = unix_us(SystemTime::now());
        let offset = redis_now_ms.saturating_mul(1000).saturating_sub(local);
        let read_at = self.read_at_us.load(Ordering::Acquire);
        if read_at == 0 || local.saturating_sub(read_at) > KEEP_US {
            self.offset_us.store(offset, Ordering::Release);
            self.read_at_us.store(local, Ordering::Release);
        } else if self.offset_us.fetch_max(offset, Ordering::AcqRel) < offset {
            self.read_at_us.store(local, Ordering::Release);
        }
    }

    /// The deadline `left` from now in Redis's time (µs of `TIME`), or 0 (no deadline)
    /// before any reading: with an unknown offset, a deadline could refuse every call of a
    /// server whose clock is ahead.
    pub(crate) fn deadline_us(&self, left: Duration) -> i64 {
        if self.read_at_us.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let local = unix_us(SystemTime::now() + left);
        local.saturating_add(self.offset_us.load(Ordering::Acquire))
    }
}

fn unix_us(time: SystemTime) -> i64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

/// Microseconds on a monotonic clock (from the first call in this process): when cached
/// refusals and leases end. A wall clock stepped back would stretch them.
pub(crate) fn monotonic_us() -> i64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    let elapsed = START.get_or_init(std::time::Instant::now).elapsed();
    i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_ms() -> i64 {
        unix_us(SystemTime::now()) / 1000
    }

    #[test]
    fn no_deadline_before_the_first_reading() {
        let clock = RedisClock::default();
        assert_eq!(clock.deadline_us(Duration::from_millis(50)), 0);
    }

    #[test]
    fn deadlines_follow_the_clock_of_redis() {
        let clock = RedisClock::default();
        // Redis's clock is an hour ahead.
        clock.observe(now_ms() + 3_600_000);
        let deadline = clock.deadline_us(Duration::from_millis(50));
        let expected = (now_ms() + 3_600_000 + 50) * 1000;
        assert!(
            (deadline - expected).abs() < 20_000,
            "{deadline} vs {expected}"
        );
    }

    #[test]
    fn the_closest_recent_reading_wins() {
        let clock = RedisClock::default();
        clock.observe(now_ms() + 1000);
        // A slower reply reads an earlier Redis time: it is not taken.
        clock.observe(now_ms() + 900);
        let deadline = clock.deadline_us(Duration::ZERO);
        assert!(deadline >= (now_ms() + 995) * 1000, "{deadline}");
        // A closer one is.
        clock.observe(now_ms() + 1100);
        let deadline = clock.deadline_us(Duration::ZERO);
        assert!(deadline >= (now_ms() + 1095) * 1000, "{deadline}");
    }

    #[test]
    fn an_old_reading_gives_way() {
        let clock = RedisClock::default();
        clock.observe(now_ms() + 10_000);
        // Pretend the reading is more than a second old: Redis's clock was stepped back.
        clock.read_at_us.fetch_sub(KEEP_US + 1, Ordering::AcqRel);
        clock.observe(now_ms());
        let deadline = clock.deadline_us(Duration::ZERO);
        assert!((deadline - now_ms() * 1000).abs() < 20_000, "{deadline}");
    }
}
