//! The in-process store's open reservations: which rule and client each took from, its
//! estimate, when it was made and until when it is open, and whether it was settled (kept
//! until then, so that a second settlement is told from one of a reservation never made).
//!
//! Bounded: past the most kept, a settled one near the end of its time is forgotten first,
//! else the one closest to its end is let go at its estimate. Each reservation lasts as long
//! as the others, so the order they were made in is the order they end in: a queue in that
//! order finds what to forget without looking through them all.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use crate::key::{ClientKey, KeyRef};

/// How many of the oldest reservations are looked through for a settled one to forget,
/// when the most are kept.
const LOOK_FOR_SETTLED: usize = 64;

/// One reservation.
#[derive(Debug)]
struct Open {
    state: u32,
    client: ClientKey,
    estimate: u32,
    /// When it was made.
    at_us: i64,
    until_us: i64,
    settled: bool,
}

/// What a reservation asked to settle was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// Open, with this estimate, made at `at_us`: now marked settled.
    Open {
        estimate: u32,
        at_us: i64,
    },
    Unknown,
    Settled,
}

#[derive(Debug, Default)]
struct Kept {
    open: HashMap<Arc<str>, Open>,
    /// The reservations in the order they were made; one let go or forgotten early stays
    /// here until it reaches the front, or the queue is tidied.
    order: VecDeque<Arc<str>>,
}

impl Kept {
    /// Forgets the reservations at the front that ended by `now_us`, and the queue's
    /// entries of those no longer kept.
    fn forget_ended(&mut self, now_us: i64) {
        while let Some(nonce) = self.order.front() {
            match self.open.get(nonce) {
                Some(held) if held.until_us > now_us => break,
                Some(_) => {
                    self.open.remove(nonce);
                }
                None => {}
            }
            self.order.pop_front();
        }
    }

    /// Forgets one reservation: a settled one among the oldest, else the oldest.
    fn forget_one(&mut self) {
        let settled = self
            .order
            .iter()
            .take(LOOK_FOR_SETTLED)
            .find(|nonce| self.open.get(*nonce).is_some_and(|held| held.settled))
            .cloned();
        if let Some(nonce) = settled {
            self.open.remove(&nonce);
            return;
        }
        while let Some(nonce) = self.order.pop_front() {
            if self.open.remove(&nonce).is_some() {
                return;
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct Reservations {
    kept: Mutex<Kept>,
    max: usize,
}

impl Reservations {
    pub(super) fn new(max: usize) -> Self {
        Self {
            kept: Mutex::default(),
            max: max.max(1),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds `nonce` open until `until_us`.
    pub(super) fn hold(
        &self,
        nonce: &str,
        (state, client): (u32, KeyRef<'_>),
        estimate: u32,
        (now_us, until_us): (i64, i64),
    ) {
        let mut kept = self.kept();
        kept.forget_ended(now_us);
        if kept.open.len() >= self.max {
            kept.forget_one();
        }
        // Entries of reservations let go early: tidied once they are as many as the kept.
        if kept.order.len() >= 2 * self.max {
            let Kept { open, order } = &mut *kept;
            order.retain(|nonce| open.contains_key(nonce));
        }
        let nonce: Arc<str> = nonce.into();
        kept.order.push_back(Arc::clone(&nonce));
        kept.open.insert(
            nonce,
            Open {
                state,
                client: client.to_owned(),
                estimate,
                at_us: now_us,
                until_us,
                settled: false,
            },
        );
    }

    /// Marks `nonce` of `client` under rule `state` settled, if it is open at `now_us`.
    pub(super) fn settle(
        &self,
        nonce: &str,
        (state, client): (u32, KeyRef<'_>),
        now_us: i64,
    ) -> Found {
        let mut kept = self.kept();
        let Some(held) = kept.open.get_mut(nonce) else {
            return Found::Unknown;
        };
        if held.until_us <= now_us {
            kept.open.remove(nonce);
            return Found::Unknown;
        }
        if held.state != state || held.client.as_ref() != client {
            return Found::Unknown;
        }
        if held.settled {
            return Found::Settled;
        }
        held.settled = true;
        Found::Open {
            estimate: held.estimate,
            at_us: held.at_us,
        }
    }

    /// Lets `nonce` go at its estimate.
    pub(super) fn release(&self, nonce: &str) {
        self.kept().open.remove(nonce);
    }

    /// Forgets what has ended by `now_us`.
    pub(super) fn sweep(&self, now_us: i64) {
        let mut kept = self.kept();
        let Kept { open, order } = &mut *kept;
        open.retain(|_, held| held.until_us > now_us);
        order.retain(|nonce| open.contains_key(nonce));
    }

    /// Reservations kept (open or settled, until their end).
    pub(super) fn len(&self) -> usize {
        self.kept().open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANN: KeyRef<'static> = KeyRef::Unknown;

    #[test]
    fn the_most_kept_forgets_a_settled_one_first_then_the_oldest() {
        let kept = Reservations::new(3);
        let until = |n: i64| (n, 1_000 + n);
        for (n, nonce) in ["a", "b", "c"].into_iter().enumerate() {
            kept.hold(nonce, (0, ANN), 10, until(n as i64));
        }
        assert!(matches!(
            kept.settle("b", (0, ANN), 5),
            Found::Open {
                estimate: 10,
                at_us: 1
            }
        ));
        kept.hold("d", (0, ANN), 10, until(3));
        assert_eq!(
            kept.settle("b", (0, ANN), 5),
            Found::Unknown,
            "settled, forgotten first"
        );
        assert!(
            matches!(kept.settle("a", (0, ANN), 5), Found::Open { .. }),
            "open, kept"
        );
        kept.hold("e", (0, ANN), 10, until(4));
        assert_eq!(
            kept.settle("a", (0, ANN), 5),
            Found::Unknown,
            "settled now, forgotten"
        );
        kept.hold("f", (0, ANN), 10, until(5));
        assert_eq!(
            kept.settle("c", (0, ANN), 5),
            Found::Unknown,
            "none settled: the oldest"
        );
        assert_eq!(kept.len(), 3);
        // Past their end, all go; a reservation let go early leaves nothing behind.
        kept.release("d");
        kept.hold("g", (0, ANN), 10, (2_000, 3_000));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept.kept().order.len(), 1);
    }

    #[test]
    fn reservations_let_go_early_do_not_pile_up() {
        let kept = Reservations::new(10);
        for n in 0..1_000i64 {
            let nonce = n.to_string();
            kept.hold(&nonce, (0, ANN), 1, (n, 1_000_000 + n));
            kept.release(&nonce);
        }
        assert_eq!(kept.len(), 0);
        assert!(kept.kept().order.len() <= 20);
    }
}
