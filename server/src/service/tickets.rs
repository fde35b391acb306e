//! One-time tickets for the event streams, for browser clients that cannot send a header.
//!
//! A WebSocket or an `EventSource` cannot carry `Authorization`, and the admin token must
//! never go in a URL (logs, history and `Referer` keep URLs). So an authenticated
//! `POST /admin/tickets` returns a random ticket, valid once, for [`TICKET_LIFETIME`], on
//! this instance, which the page then puts in the stream's URL (`?ticket=…`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::json::detail;

/// How long a ticket is valid: time for a page to open its stream.
pub(crate) const TICKET_LIFETIME: Duration = Duration::from_secs(30);

/// Most tickets outstanding at once; minting past it forgets the oldest.
const MAX_OUTSTANDING: usize = 1024;

/// The tickets given and not yet used, with when each expires.
#[derive(Debug, Default)]
pub(crate) struct Tickets {
    outstanding: Mutex<HashMap<String, Instant>>,
}

/// A ticket could not be made: the system's random source failed.
#[derive(Debug, thiserror::Error)]
#[error("no random bytes for a ticket: {0}")]
pub(crate) struct NoRandomness(getrandom::Error);

impl Tickets {
    /// A new ticket: 32 random bytes, in hex.
    pub(crate) fn mint(&self) -> Result<String, NoRandomness> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(NoRandomness)?;
        let ticket: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        let now = Instant::now();
        let mut outstanding = self.lock();
        outstanding.retain(|_, expires| *expires > now);
        if outstanding.len() >= MAX_OUTSTANDING
            && let Some(oldest) = outstanding
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(ticket, _)| ticket.clone())
        {
            outstanding.remove(&oldest);
        }
        outstanding.insert(ticket.clone(), now + TICKET_LIFETIME);
        Ok(ticket)
    }

    /// Whether `ticket` was given and has not expired; it cannot be used again.
    pub(crate) fn redeem(&self, ticket: &str) -> bool {
        self.lock()
            .remove(ticket)
            .is_some_and(|expires| expires > Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.outstanding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A ticket for one event stream.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Ticket {
    /// Put it in the stream's URL: `/ws/global?ticket=<this>`.
    ticket: String,
    /// Seconds it stays valid, if unused.
    expires_in: u64,
}

/// A one-time ticket for an event stream (`?ticket=` on `/events`, `/events/{client_id}`,
/// `/ws/global`, `/ws/{client_id}`), for a browser client that cannot send the token in a
/// header. Valid once, for 30 seconds, on this instance.
#[utoipa::path(
    post,
    path = "/admin/tickets",
    responses(
        (status = 200, description = "A ticket", body = Ticket),
        (status = 401, description = "No admin token, or the wrong one"),
    ),
    security(("admin_token" = [])),
    tag = "events"
)]
pub(crate) async fn mint(State(state): State<Arc<super::State>>) -> Response {
    match state.tickets.mint() {
        Ok(ticket) => Json(Ticket {
            ticket,
            expires_in: TICKET_LIFETIME.as_secs(),
        })
        .into_response(),
        Err(error) => detail(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_is_good_once() {
        let tickets = Tickets::default();
        let ticket = tickets.mint().unwrap();
        assert_eq!(ticket.len(), 64);
        assert_ne!(ticket, tickets.mint().unwrap());
        assert!(!tickets.redeem("not-a-ticket"));
        assert!(tickets.redeem(&ticket));
        assert!(!tickets.redeem(&ticket));
    }

    #[test]
    fn the_oldest_is_forgotten_past_the_cap() {
        let tickets = Tickets::default();
        let first = tickets.mint().unwrap();
        for _ in 0..MAX_OUTSTANDING {
            tickets.mint().unwrap();
        }
        assert_eq!(tickets.lock().len(), MAX_OUTSTANDING);
        assert!(!tickets.redeem(&first));
    }
}
