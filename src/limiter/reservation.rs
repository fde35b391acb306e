//! Reservations: a check that takes an estimate now and is settled with what was used
//! later (an LLM call's tokens, known only when its response ends). Their ids are
//! [`ticket`](super::ticket)'s.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::error::CheckError;
use super::ticket::{Held, Ticket};
use super::{Checking, Limiter, Verdict};
use crate::Decision;
use crate::backend::StoreError;

/// The most a settlement charges past its estimate, in capacities of the rule's largest
/// band: a debt is paid back within this many of its periods at most.
pub const MAX_OWED_CAPACITIES: u64 = 1_000;

/// How long a reservation stays open by default before it settles at its estimate.
pub const DEFAULT_RESERVATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

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
        let reservation = verdict.take_reservation();
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
    /// Made when first asked for: the layer's reservations are mostly settled without it.
    id: std::sync::OnceLock<String>,
    estimate: u32,
    /// Settled or detached: nothing to do when dropped.
    done: bool,
}

impl Reservation {
    /// The reservation `held` stands for.
    pub(super) fn of(held: Held) -> Self {
        Self {
            limiter: held.limiter,
            id: std::sync::OnceLock::new(),
            ticket: held.ticket,
            estimate: held.estimate,
            done: false,
        }
    }

    /// Its id, for [`Limiter::settle`].
    pub fn id(&self) -> &str {
        self.id.get_or_init(|| self.ticket.to_string())
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
        match self.id.take() {
            Some(id) => id,
            None => self.ticket.to_string(),
        }
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

/// The future of [`Limiter::reserve`] and [`Limiter::check_or_reserve`].
#[must_use = "a reservation is made only when awaited"]
pub struct Reserving {
    checking: Checking,
}

impl Reserving {
    pub(super) fn new(checking: Checking) -> Self {
        Self { checking }
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
