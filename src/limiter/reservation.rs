//! Reservations: a check that takes an estimate now and is settled with what was used
//! later (an LLM call's tokens, known only when its response ends).
//!
//! A reservation's id names the rule and the client it took from, so that any instance
//! sharing the store can settle it, and carries 128 random bits, so that it cannot be
//! guessed: `<32 hex digits>.<rule>.<client>`, the rule's identity and the client's key in
//! unpadded URL-safe base64 (the client as `i` and the `X-Client-ID`, `a` and an address,
//! `n` and a network with its prefix, or `u`).

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::CheckError;
use super::{Checking, Limiter, Verdict};
use crate::Decision;
use crate::backend::StoreError;
use crate::key::ClientKey;

/// The most a settlement charges past its estimate, in capacities of the rule's largest
/// band: a debt is paid back within this many of its periods at most.
pub const MAX_OWED_CAPACITIES: u64 = 1_000;

/// How long a reservation stays open by default before it settles at its estimate.
pub const DEFAULT_RESERVATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// A reservation's id, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) nonce: String,
    pub(crate) rule: String,
    pub(crate) client: ClientKey,
}

/// A reservation's random part: 128 bits, as 32 lowercase hexadecimal digits.
pub(crate) fn nonce() -> Result<String, CheckError> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|error| CheckError::Reservation {
        reason: format!("no random number for its id: {error}"),
    })?;
    Ok(random.iter().map(|b| format!("{b:02x}")).collect())
}

impl Ticket {
    /// The ticket `id` names, if it is one.
    pub(crate) fn parse(id: &str) -> Option<Self> {
        let mut parts = id.splitn(3, '.');
        let (nonce, rule, client) = (parts.next()?, parts.next()?, parts.next()?);
        if nonce.len() != 32
            || !nonce
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return None;
        }
        let text = |part: &str| {
            let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
            String::from_utf8(bytes).ok()
        };
        let rule = text(rule)?;
        let (kind, key) = client.split_at_checked(1)?;
        let client = match kind {
            "i" => ClientKey::Id(text(key)?.into()),
            "a" => ClientKey::Ip(text(key)?.parse::<IpAddr>().ok()?),
            "n" => {
                let network = text(key)?;
                let (address, bits) = network.split_once('/')?;
                ClientKey::Ipv6Network {
                    network: address.parse::<Ipv6Addr>().ok()?,
                    prefix_len: bits.parse().ok()?,
                }
            }
            "u" if key.is_empty() => ClientKey::Unknown,
            _ => return None,
        };
        Some(Self {
            nonce: nonce.to_owned(),
            rule,
            client,
        })
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let encode = |text: &str| URL_SAFE_NO_PAD.encode(text);
        write!(f, "{}.{}.", self.nonce, encode(&self.rule))?;
        match &self.client {
            ClientKey::Id(id) => write!(f, "i{}", encode(id)),
            ClientKey::Ip(ip) => write!(f, "a{}", encode(&ip.to_string())),
            ClientKey::Ipv6Network {
                network,
                prefix_len,
            } => write!(f, "n{}", encode(&format!("{network}/{prefix_len}"))),
            ClientKey::Unknown => f.write_str("u"),
        }
    }
}

/// A reservation's answer: the verdict of its check, and the reservation when it was
/// admitted and the store holds it ([`Limiter::reserve`]).
///
/// ```
/// use tollgate::{ClientKey, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // 1,000 tokens, one back every 1,000 s.
/// let rules = Rules::from_json(r#"{"default": {"capacity": 1000, "refill_rate": 0.001}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let ann = ClientKey::id("ann");
/// let reserved = limiter.reserve(Query::new(&ann).cost(500)).await?;
/// assert!(reserved.verdict().allowed());
/// let reservation = reserved.into_reservation().expect("admitted, and held");
/// let settled = reservation.settle(320).await?;
/// assert_eq!((settled.estimate(), settled.used()), (500, 320));
/// assert_eq!(settled.decision().remaining, 680, "180 given back");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Reserved {
    verdict: Verdict,
    reservation: Option<Reservation>,
}

impl Reserved {
    /// The verdict, with the reservation it holds taken out.
    #[inline]
    fn of(mut verdict: Verdict) -> Self {
        let reservation = verdict.held.take().map(|held| held.into_reservation());
        Self {
            verdict,
            reservation,
        }
    }

    /// The check's verdict, at the estimate.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// The reservation, when the check admitted and the store holds it.
    pub fn reservation(&self) -> Option<&Reservation> {
        self.reservation.as_ref()
    }

    /// The reservation, to settle.
    pub fn into_reservation(self) -> Option<Reservation> {
        self.reservation
    }

    /// The verdict and the reservation.
    pub fn into_parts(self) -> (Verdict, Option<Reservation>) {
        (self.verdict, self.reservation)
    }
}

/// An open reservation: settle it with what was used ([`settle`](Self::settle)). Dropped
/// unsettled, it stays at its estimate; [`detach`](Self::detach) keeps it open for
/// [`Limiter::settle`] by id, from this instance or any other sharing the store.
///
/// ```
/// use tollgate::{ClientKey, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"capacity": 100, "refill_rate": 0.01}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let bo = ClientKey::id("bo");
/// let reservation = limiter.reserve(Query::new(&bo).cost(10)).await?.into_reservation().unwrap();
/// let id = reservation.detach();
/// // Later, anywhere: 250 were used; 240 more are owed.
/// let settled = limiter.settle(&id, 250).await?;
/// assert_eq!(settled.decision().remaining, 0);
/// assert!(!limiter.check(Query::new(&bo)).await?.allowed(), "150 owed");
/// assert!(limiter.settle(&id, 250).await.is_err(), "settled once");
/// # Ok(())
/// # }
/// ```
pub struct Reservation {
    limiter: Limiter,
    ticket: Ticket,
    id: String,
    estimate: u32,
    /// Settled or detached: nothing to do when dropped.
    done: bool,
}

impl Reservation {
    /// Its id, for [`Limiter::settle`].
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The units reserved.
    pub fn estimate(&self) -> u32 {
        self.estimate
    }

    /// Settles it with `used` units: what was used beyond the estimate is taken from every
    /// band whether or not it fits (owed, and paid back before the client is admitted
    /// again), what was not is given back. At most [`MAX_OWED_CAPACITIES`] times the largest
    /// band's capacity is charged past the estimate.
    pub async fn settle(mut self, used: u64) -> Result<Settled, SettleError> {
        self.done = true;
        self.limiter.settle_ticket(&self.ticket, used).await
    }

    /// Keeps it open for [`Limiter::settle`] with its id (returned), here or on another
    /// instance: it is no longer let go when dropped, and settles at its estimate when it
    /// expires.
    pub fn detach(mut self) -> String {
        self.done = true;
        std::mem::take(&mut self.id)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.limiter.release_ticket(&self.ticket);
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the client: an X-Client-ID may be an API key.
        f.debug_struct("Reservation")
            .field("rule", &self.ticket.rule)
            .field("estimate", &self.estimate)
            .finish_non_exhaustive()
    }
}

/// A settled reservation: what was reserved, what was used, and what the bands have left.
///
/// See [`Reserved`] for an example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settled {
    estimate: u32,
    used: u64,
    decision: Decision,
}

impl Settled {
    pub(crate) fn new(estimate: u32, used: u64, decision: Decision) -> Self {
        Self {
            estimate,
            used,
            decision,
        }
    }

    /// The units reserved.
    pub fn estimate(&self) -> u32 {
        self.estimate
    }

    /// The units used.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The bands after the settlement: what is left (0 while a debt is owed), and when
    /// they are full again.
    pub fn decision(&self) -> Decision {
        self.decision
    }
}

/// A settlement that could not be made.
///
/// ```
/// use tollgate::{Limiter, Rules, SettleError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = Limiter::builder().rules(Rules::from_json(r#"{"default": {"limit": "5/second"}}"#)?).build().await?;
/// assert!(matches!(limiter.settle("not-an-id", 1).await, Err(SettleError::Unknown)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// No such reservation is open: the id is not one, its rule is gone, or it expired
    /// (and settled at its estimate).
    #[error("no open reservation has this id: it is not one, or it expired")]
    Unknown,
    /// It was settled already: a reservation is settled once.
    #[error("this reservation was settled already")]
    AlreadySettled,
    /// The store could not settle it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A reservation the store holds for an admitted request, carried in its verdict until a
/// front takes it as a [`Reservation`].
#[derive(Clone)]
pub(crate) struct Held {
    pub(crate) limiter: Limiter,
    pub(crate) ticket: Ticket,
    pub(crate) estimate: u32,
}

impl Held {
    fn into_reservation(self) -> Reservation {
        Reservation {
            limiter: self.limiter,
            id: self.ticket.to_string(),
            ticket: self.ticket,
            estimate: self.estimate,
            done: false,
        }
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (&self.ticket, self.estimate) == (&other.ticket, other.estimate)
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the client: an X-Client-ID may be an API key.
        f.debug_struct("Held")
            .field("rule", &self.ticket.rule)
            .field("estimate", &self.estimate)
            .finish_non_exhaustive()
    }
}

/// The future of [`Limiter::reserve`] and [`Limiter::check_or_reserve`].
#[must_use = "a reservation is made only when awaited"]
pub struct Reserving {
    checking: Checking,
}

impl Reserving {
    pub(super) fn new(checking: Checking) -> Self {
        Self { checking }
    }

    /// The answer, if it is there already: the HTTP front answers at once then.
    #[inline]
    pub(crate) fn now(&mut self) -> Option<Result<Reserved, CheckError>> {
        Some(self.checking.now()?.map(Reserved::of))
    }
}

impl fmt::Debug for Reserving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reserving")
            .field("checking", &self.checking)
            .finish()
    }
}

impl Future for Reserving {
    type Output = Result<Reserved, CheckError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.checking).poll(cx).map_ok(Reserved::of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_the_rule_and_client_and_come_back_whole() {
        for client in [
            ClientKey::id("user:1/é.x"),
            ClientKey::Ip("203.0.113.7".parse().unwrap()),
            ClientKey::Ipv6Network {
                network: "2001:db8::".parse().unwrap(),
                prefix_len: 64,
            },
            ClientKey::Unknown,
        ] {
            let ticket = Ticket {
                nonce: nonce().unwrap(),
                rule: "/v1/chat@POST".into(),
                client,
            };
            let id = ticket.to_string();
            assert_eq!(Ticket::parse(&id), Some(ticket), "{id}");
        }
        assert_ne!(nonce().unwrap(), nonce().unwrap());
        for junk in [
            "",
            "x",
            "00.ZGVmYXVsdA.u",
            &format!("{}.!!.u", "0".repeat(32)),
        ] {
            assert_eq!(Ticket::parse(junk), None, "{junk}");
        }
    }
}
