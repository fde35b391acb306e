//! The decision script (`decide.lua`) and how its arguments and replies are laid out.

use std::time::Duration;

use redis::Script;
use tokio::time::Instant;

use super::connection::Connection;
use super::error::CallError;
use super::leases::lease_units;
use crate::Decision;
use crate::algorithm::{Algorithm, Combined};
use crate::backend::Mode;
use crate::rules::Limit;

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

/// What one decision asks of the script besides its limit.
pub(super) struct Call {
    /// What the request takes from every band.
    pub(super) cost: u32,
    /// How long a lease asked for lives; zero: no lease asked for.
    pub(super) lease: Duration,
    pub(super) mode: Mode,
    /// When the request gives up on Redis.
    pub(super) deadline: Instant,
}

/// One decision's script argument, packed as `decide.lua` reads it (little-endian): the
/// algorithm (a byte: 1 token bucket, 2 fixed window, 3 sliding window), the flags (a byte:
/// 1 for a peek), the cost, the lease asked for in units and its lifetime in µs, the
/// deadline in µs of Redis `TIME` (0: none) (f64 each), the number of bands (a byte), then
/// each band's capacity and second parameter (f64 each: refill rate per second, or window
/// length in µs).
pub(super) fn packed(limit: &Limit, call: &Call, deadline_us: i64) -> Vec<u8> {
    let algorithm = limit.algorithm();
    let bands = limit.bands();
    let (units, lease_us) = match call.lease.as_micros() {
        0 => (0, 0.0),
        us => (lease_units(limit, call.cost), us as f64),
    };
    let mut spec = Vec::with_capacity(35 + 16 * bands.len());
    spec.push(match algorithm {
        Algorithm::TokenBucket => 1,
        Algorithm::FixedWindow => 2,
        Algorithm::SlidingWindow => 3,
    });
    spec.push(match call.mode {
        Mode::Take => 0,
        Mode::Peek => PEEK,
    });
    spec.extend(f64::from(call.cost).to_le_bytes());
    spec.extend(f64::from(units).to_le_bytes());
    spec.extend(lease_us.to_le_bytes());
    // Exact: µs of Unix time stay below 2^53 until the year 2255.
    spec.extend((deadline_us as f64).to_le_bytes());
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

/// Runs the script over some decisions (key and packed limit each): `EVALSHA` with every
/// key, then every packed limit; [`Script`] loads it again after `NOSCRIPT`.
pub(super) async fn run<'a>(
    script: &Script,
    connection: &mut Connection,
    decisions: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
) -> Result<Vec<i64>, redis::RedisError> {
    let mut invocation = script.prepare_invoke();
    for (key, _) in decisions.clone() {
        invocation.key(key);
    }
    for (_, spec) in decisions {
        invocation.arg(spec);
    }
    invocation.invoke_async(connection).await
}

/// What Redis answered for one decision: the decision, and the lease it granted with it
/// (units, and how long it lives in ms), if any.
pub(super) type Answered = (Decision, Option<(u32, i64)>);

/// One decision's answer in a script reply `{now_ms, then per decision: lease_units,
/// lease_ms, then per band: admitted, remaining, retry_after_ms, reset_after_ms}`; this
/// decision's starts at `at`. `lease_units` is -1 for a decision Redis reached after its
/// deadline: it decided and took nothing.
pub(super) fn decode(reply: &[i64], at: usize, limit: &Limit) -> Result<Answered, CallError> {
    let bands = limit.bands();
    let (Some(&now_ms), Some(&[units, lease_ms]), Some(fields)) = (
        reply.first(),
        reply.get(at..at + 2),
        reply.get(at + 2..at + 2 + 4 * bands.len()),
    ) else {
        return Err(CallError::Reply(reply.len()));
    };
    if units < 0 {
        return Err(CallError::Late);
    }
    let mut combined = Combined::new();
    for (band, fields) in bands.iter().zip(fields.chunks_exact(4)) {
        let ms = |v: i64| v as f64 * 1000.0;
        combined.add(
            f64::from(band.capacity()),
            fields[0] == 1,
            fields[1] as f64,
            ms(fields[2]),
            ms(fields[3]),
        );
    }
    let lease = match (u32::try_from(units), lease_ms) {
        (Ok(units), ms) if units > 0 && ms > 0 => Some((units, ms)),
        _ => None,
    };
    Ok((combined.decision(now_ms.saturating_mul(1000)), lease))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::default_limit;

    #[test]
    fn leases_and_deadlines_are_packed_after_the_cost() {
        let limit = default_limit(r#"{"default": {"capacity": 1000, "refill_rate": 1}}"#);
        let call = |cost, lease, mode| Call {
            cost,
            lease,
            mode,
            deadline: Instant::now(),
        };
        // Off: nothing asked for, whatever the capacity.
        let spec = packed(&limit, &call(1, Duration::ZERO, Mode::Take), 0);
        assert_eq!(spec[..2], [1, 0]);
        assert_eq!(spec[2..10], 1f64.to_le_bytes());
        assert_eq!(spec[10..26], [0; 16]);
        let spec = packed(
            &limit,
            &call(1, Duration::from_millis(100), Mode::Take),
            1_764_000_000_123_456,
        );
        assert_eq!(spec[10..18], 62f64.to_le_bytes());
        assert_eq!(spec[18..26], 100_000f64.to_le_bytes());
        assert_eq!(spec[26..34], 1_764_000_000_123_456f64.to_le_bytes());
        // A peek, at a cost other than the rule's: the lease asked for is in whole costs.
        let spec = packed(&limit, &call(5, Duration::from_millis(100), Mode::Peek), 0);
        assert_eq!(spec[..2], [1, PEEK]);
        assert_eq!(spec[2..10], 5f64.to_le_bytes());
        assert_eq!(spec[10..18], 60f64.to_le_bytes());
    }
}
