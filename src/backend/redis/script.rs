//! The decision script (`decide.lua`) and how its arguments and replies are laid out.

use std::time::{Duration, UNIX_EPOCH};

use redis::Script;
use tokio::time::Instant;

use super::connection::Connection;
use super::error::CallError;
use super::leases::lease_units;
use crate::algorithm::{Algorithm, Combined, Reported};
use crate::backend::Mode;
use crate::rules::Limit;
use crate::{BandStatus, Decision};

/// The decision script; `EVALSHA`, loaded at startup and again on `NOSCRIPT`.
pub(crate) const DECIDE_LUA: &str = include_str!("decide.lua");

/// Loads the script (on every master of a cluster), within `deadline`.
pub(super) async fn load(
    script: &Script,
    connection: &mut Connection,
    deadline: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(deadline, script.load_async(connection)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {deadline:?}")),
    }
}

/// The flag of a peek, in a decision's flags byte: decide, take nothing, write nothing, and
/// report the bands as they are now.
const PEEK: u8 = 1;

/// The flag of a settlement: take the units used less the reservation's estimate, whether or
/// not they fit.
const SETTLE: u8 = 2;

/// The flag of a reservation: decide, and when admitted keep the cost under the
/// reservation's key.
const RESERVE: u8 = 4;

/// What a call does with a reservation, whose key follows the bucket's in `KEYS` (a call
/// of one decision).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Held {
    /// Nothing: a decision.
    No,
    /// Holds the cost as a reservation for this long, when admitted.
    Reserve(Duration),
    /// Settles the reservation with this many units used.
    Settle(u64),
}

/// What one decision asks of the script besides its limit.
pub(super) struct Call {
    /// What the request takes from every band.
    pub(super) cost: u32,
    /// How long a lease asked for lives; zero: no lease asked for.
    pub(super) lease: Duration,
    pub(super) mode: Mode,
    /// When the request gives up on Redis.
    pub(super) deadline: Instant,
    /// That deadline in µs of Redis `TIME` (0: none, before Redis's clock is known).
    pub(super) redis_deadline_us: i64,
    /// What it does with a reservation.
    pub(super) held: Held,
}

/// One decision's script argument, packed as `decide.lua` reads it (little-endian): the
/// algorithm (a byte: 1 token bucket, 2 fixed window, 3 sliding window), the flags (a byte:
/// 1 for a peek, 2 a settlement, 4 a reservation), the cost, the lease asked for in units
/// and its lifetime in µs, the call's deadline in µs of Redis `TIME` (0: none), the index in
/// `KEYS` of the reservation's key (0: none; 2, after the one bucket, otherwise) and the
/// reservation's lifetime in µs (f64 each), the number of bands (a byte), then each band's
/// capacity and second parameter (f64 each: refill rate per second, or window length in
/// µs).
pub(super) fn packed(limit: &Limit, call: &Call) -> Vec<u8> {
    let algorithm = limit.algorithm();
    let bands = limit.bands();
    let (units, lease_us) = match call.lease.as_micros() {
        0 => (0, 0.0),
        us => (lease_units(limit, call.cost), us as f64),
    };
    let mut spec = Vec::with_capacity(51 + 16 * bands.len());
    spec.push(match algorithm {
        Algorithm::TokenBucket => 1,
        Algorithm::FixedWindow => 2,
        Algorithm::SlidingWindow => 3,
    });
    spec.push(match (call.mode, call.held) {
        (Mode::Peek, _) => PEEK,
        (Mode::Take, Held::No) => 0,
        (Mode::Take, Held::Reserve(_)) => RESERVE,
        (Mode::Take, Held::Settle(_)) => SETTLE,
    });
    // A settlement's cost is the units used (exact below 2^53).
    let cost = match call.held {
        Held::Settle(used) => used as f64,
        _ => f64::from(call.cost),
    };
    spec.extend(cost.to_le_bytes());
    spec.extend(f64::from(units).to_le_bytes());
    spec.extend(lease_us.to_le_bytes());
    // Exact: µs of Unix time stay below 2^53 until the year 2255.
    spec.extend((call.redis_deadline_us as f64).to_le_bytes());
    let (record, lasting_us) = match call.held {
        Held::No => (0.0, 0.0),
        Held::Reserve(lasting) => (2.0, lasting.as_micros() as f64),
        Held::Settle(_) => (2.0, 0.0),
    };
    spec.extend(f64::to_le_bytes(record));
    spec.extend(f64::to_le_bytes(lasting_us));
    // Rules hold 1 to MAX_BANDS bands.
    spec.push(bands.len() as u8);
    for band in bands {
        let second = match algorithm {
            Algorithm::TokenBucket => band.refill_per_sec(),
            _ => band.spec().window_us as f64,
        };
        spec.extend(f64::from(band.capacity()).to_le_bytes());
        spec.extend(second.to_le_bytes());
    }
    spec
}

/// A script reply: little-endian doubles, each an integer (see [`decode`]).
pub(super) struct Reply(Vec<u8>);

impl Reply {
    /// Value `index` of the reply, if it has that many.
    fn get(&self, index: usize) -> Option<i64> {
        let at = index.checked_mul(8)?;
        let bytes = self.0.get(at..at.checked_add(8)?)?;
        let value = f64::from_le_bytes(bytes.try_into().ok()?);
        // Integers all, within ±2^53, written by the script; anything else is not its reply.
        (value.fract() == 0.0 && value.abs() <= 9_007_199_254_740_992.0).then_some(value as i64)
    }

    /// Value `index`, if it has that many (see [`decode`]).
    pub(super) fn value(&self, index: usize) -> Option<i64> {
        self.get(index)
    }

    /// How many values it holds.
    pub(super) fn len(&self) -> usize {
        self.0.len() / 8
    }

    /// Redis's time when it ran the script, in Unix ms.
    pub(super) fn now_ms(&self) -> Option<i64> {
        self.get(0)
    }
}

/// Runs the script over some decisions (key and packed limit each): `EVALSHA` with every
/// key, then `also` (the keys of reservations the decisions name), then every packed
/// limit; [`Script`] loads it again after `NOSCRIPT`.
pub(super) async fn run<'a>(
    script: &Script,
    connection: &mut Connection,
    decisions: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
    also: &[&str],
) -> Result<Reply, redis::RedisError> {
    // Built once, straight from the borrowed keys and limits (a `ScriptInvocation` would copy
    // each into a vector of its own first, then again into the command).
    let (count, size) = decisions.clone().fold((0, 0), |(n, size), (key, spec)| {
        (n + 1, size + key.len() + spec.len())
    });
    let keys = count + also.len();
    let mut evalsha = redis::Cmd::with_capacity(2 + keys + count, 48 + size);
    evalsha.arg("EVALSHA").arg(script.get_hash()).arg(keys);
    for (key, _) in decisions.clone() {
        evalsha.arg(key);
    }
    for key in also {
        evalsha.arg(*key);
    }
    for (_, spec) in decisions {
        evalsha.arg(spec);
    }
    let bytes: Vec<u8> = match evalsha.query_async(connection).await {
        Err(error)
            if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
        {
            script.load_async(connection).await?;
            evalsha.query_async(connection).await?
        }
        other => other?,
    };
    Ok(Reply(bytes))
}

/// What Redis answered for one decision: the decision, and the lease it granted with it
/// (units, and how long it lives in ms), if any.
pub(super) type Answered = (Decision, Option<(u32, i64)>);

/// The values of one band in a script reply: admitted, remaining, retry_after_ms,
/// reset_after_ms, next_unit_ms.
pub(super) const BAND_VALUES: usize = 5;

/// One decision's answer in a script reply `now_ms, then per decision: lease_units,
/// lease_ms, then per band: admitted, remaining, retry_after_ms, reset_after_ms`; this
/// decision's starts at value `at`. `lease_units` is -1 for a decision Redis reached after
/// its deadline: it decided and took nothing.
pub(super) fn decode(reply: &Reply, at: usize, limit: &Limit) -> Result<Answered, CallError> {
    let bands = limit.bands();
    let field = |i: usize| reply.get(at + i).ok_or(CallError::Reply(reply.len()));
    let now_ms = reply.now_ms().ok_or(CallError::Reply(reply.len()))?;
    let (units, lease_ms) = (field(0)?, field(1)?);
    if units < 0 {
        return Err(CallError::Late);
    }
    let mut combined = Combined::new();
    for (k, band) in bands.iter().enumerate() {
        let at = 2 + BAND_VALUES * k;
        let ms = |v: i64| v as f64 * 1000.0;
        combined.add(Reported {
            capacity: f64::from(band.capacity()),
            admitted: field(at)? == 1,
            remaining: field(at + 1)? as f64,
            retry_after_us: ms(field(at + 2)?),
            reset_after_us: ms(field(at + 3)?),
            next_unit_after_us: ms(field(at + 4)?),
        });
    }
    let lease = match (u32::try_from(units), lease_ms) {
        (Ok(units), ms) if units > 0 && ms > 0 => Some((units, ms)),
        _ => None,
    };
    Ok((combined.decision(now_ms.saturating_mul(1000)), lease))
}

/// Every band of one decision's answer in a script reply (see [`decode`]) as it is now: for
/// a peek, whose bands' remaining and reset are read before any cost.
pub(super) fn band_statuses(
    reply: &Reply,
    at: usize,
    limit: &Limit,
) -> Result<Box<[BandStatus]>, CallError> {
    let field = |i: usize| reply.get(at + i).ok_or(CallError::Reply(reply.len()));
    let now_ms = reply.now_ms().ok_or(CallError::Reply(reply.len()))?;
    let now = UNIX_EPOCH + Duration::from_millis(u64::try_from(now_ms).unwrap_or(0));
    limit
        .bands()
        .iter()
        .enumerate()
        .map(|(k, band)| {
            let at = 2 + BAND_VALUES * k;
            let remaining = u32::try_from(field(at + 1)?.max(0)).unwrap_or(u32::MAX);
            let reset_after = Duration::from_millis(u64::try_from(field(at + 3)?).unwrap_or(0));
            Ok(BandStatus::new(
                band.capacity(),
                band.period(),
                remaining,
                now + reset_after,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::default_limit;

    fn reply(values: &[f64]) -> Reply {
        Reply(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    #[test]
    fn a_reply_is_read_as_integers_and_anything_else_is_refused() {
        let limit = default_limit(r#"{"default": {"capacity": 10, "refill_rate": 1}}"#);
        // now_ms, no lease, one band: admitted, 9 left, no wait, full again in 1 s.
        let good = reply(&[1_700_000_000_000.0, 0.0, 0.0, 1.0, 9.0, 0.0, 1000.0, 100.0]);
        assert_eq!(good.now_ms(), Some(1_700_000_000_000));
        let (decision, lease) = decode(&good, 1, &limit).unwrap();
        assert!(decision.allowed);
        assert_eq!((decision.limit, decision.remaining, lease), (10, 9, None));
        // Short, not whole doubles, not integers, not finite: not the script's reply.
        assert!(matches!(
            decode(&reply(&[1.0, 0.0, 0.0, 1.0]), 1, &limit),
            Err(CallError::Reply(4))
        ));
        let mut ragged = good.0.clone();
        ragged.pop();
        assert!(decode(&Reply(ragged), 1, &limit).is_err());
        for bad in [0.5, f64::INFINITY, f64::NAN, 1e300] {
            let odd = reply(&[1_700_000_000_000.0, 0.0, 0.0, 1.0, bad, 0.0, 1000.0, 100.0]);
            assert!(decode(&odd, 1, &limit).is_err(), "{bad}");
        }
        // A decision Redis reached after its deadline.
        let late = reply(&[1_700_000_000_000.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(matches!(decode(&late, 1, &limit), Err(CallError::Late)));
    }

    #[test]
    fn leases_and_deadlines_are_packed_after_the_cost() {
        let limit = default_limit(r#"{"default": {"capacity": 1000, "refill_rate": 1}}"#);
        let call = |cost, lease, mode, redis_deadline_us| Call {
            held: Held::No,
            cost,
            lease,
            mode,
            deadline: Instant::now(),
            redis_deadline_us,
        };
        // Off: nothing asked for, whatever the capacity.
        let spec = packed(&limit, &call(1, Duration::ZERO, Mode::Take, 0));
        assert_eq!(spec[..2], [1, 0]);
        assert_eq!(spec[2..10], 1f64.to_le_bytes());
        assert_eq!(spec[10..26], [0; 16]);
        let spec = packed(
            &limit,
            &call(
                1,
                Duration::from_millis(100),
                Mode::Take,
                1_764_000_000_123_456,
            ),
        );
        assert_eq!(spec[10..18], 62f64.to_le_bytes());
        assert_eq!(spec[18..26], 100_000f64.to_le_bytes());
        assert_eq!(spec[26..34], 1_764_000_000_123_456f64.to_le_bytes());
        // A peek, at a cost other than the rule's: the lease asked for is in whole costs.
        let spec = packed(&limit, &call(5, Duration::from_millis(100), Mode::Peek, 0));
        assert_eq!(spec[..2], [1, PEEK]);
        assert_eq!(spec[2..10], 5f64.to_le_bytes());
        assert_eq!(spec[10..18], 60f64.to_le_bytes());
    }
}
