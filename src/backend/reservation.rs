//! Reservations in a store: a decision that takes an estimate now and is settled with what
//! was used later, from any instance sharing the store.

use super::{Client, RuleSlot};
use crate::Decision;

/// Which reservation a store is asked about: the rule and client its units were taken
/// under, and its own part, random (128 bits, as 32 hexadecimal digits) and unique to it.
///
/// # Example
///
/// ```
/// use tollgate::backend::ReservationKey;
///
/// /// Where a shared store keeps one reservation: beside the client's bands.
/// fn key(reservation: &ReservationKey<'_>) -> String {
///     format!("myapp:{}:{}:r:{}", reservation.rule.id(), reservation.client, reservation.nonce)
/// }
/// # let _ = key;
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ReservationKey<'a> {
    /// The rule it took from.
    pub rule: &'a RuleSlot,
    /// The client it took for.
    pub client: Client<'a>,
    /// Its own random part.
    pub nonce: &'a str,
}

impl<'a> ReservationKey<'a> {
    /// The reservation `nonce` of `client` under `rule`.
    pub fn new(rule: &'a RuleSlot, client: Client<'a>, nonce: &'a str) -> Self {
        Self {
            rule,
            client,
            nonce,
        }
    }
}

/// What became of a settlement.
///
/// # Example
///
/// ```
/// use tollgate::backend::Settlement;
///
/// assert_ne!(Settlement::Unknown, Settlement::AlreadySettled);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Settlement {
    /// Settled: the difference between what was used and the reservation's `estimate`
    /// taken from (or given back to) every band; `decision` says what the bands have left.
    Settled {
        /// The units reserved.
        estimate: u32,
        /// The bands after the settlement (always allowed: it reports what is left).
        decision: Decision,
    },
    /// No such reservation is open: never made here, or expired (it then settled at its
    /// estimate).
    Unknown,
    /// Settled already: a reservation is settled once.
    AlreadySettled,
}
