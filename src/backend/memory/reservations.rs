//! The in-process store's open reservations: which rule and client each took from, its
//! estimate, until when it is open, and whether it was settled (kept until then, so that a
//! second settlement is told from one of a reservation never made). Bounded: past the most
//! kept, a settled one is forgotten first, else the open one closest to its end is let go at
//! its estimate.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::key::{ClientKey, KeyRef};

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

#[derive(Debug)]
pub(super) struct Reservations {
    open: Mutex<HashMap<Box<str>, Open>>,
    max: usize,
}

impl Reservations {
    pub(super) fn new(max: usize) -> Self {
        Self {
            open: Mutex::default(),
            max: max.max(1),
        }
    }

    /// Holds `nonce` open until `until_us`.
    pub(super) fn hold(
        &self,
        nonce: &str,
        (state, client): (u32, KeyRef<'_>),
        estimate: u32,
        (now_us, until_us): (i64, i64),
    ) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= self.max {
            open.retain(|_, held| held.until_us > now_us);
        }
        // Settled ones go first: they are kept only to tell a second settlement apart.
        if open.len() >= self.max
            && let Some(soonest) = open
                .iter()
                .min_by_key(|(_, held)| (!held.settled, held.until_us))
                .map(|(nonce, _)| nonce.clone())
        {
            open.remove(&soonest);
        }
        open.insert(
            nonce.into(),
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
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(held) = open.get_mut(nonce) else {
            return Found::Unknown;
        };
        if held.until_us <= now_us {
            open.remove(nonce);
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
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.remove(nonce);
    }

    /// Forgets what has ended by `now_us`.
    pub(super) fn sweep(&self, now_us: i64) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, held| held.until_us > now_us);
    }

    /// Reservations kept (open or settled, until their end).
    pub(super) fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
