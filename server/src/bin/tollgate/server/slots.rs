//! The cap on open connections, shared by every listener of the process.
//!
//! A connection holds a [`Slot`] for as long as its socket is open (through a WebSocket
//! upgrade too). At the cap, as nginx does when its connections run out, the connections
//! idle the longest (between requests, or yet to send one) are asked to close, so that a
//! new client gets in even when idle sockets fill the table; the new connection waits for
//! the slot one of them frees. Connections with a request in flight are never closed for
//! room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::activity::Activity;

/// Idle connections asked to close at once when the cap is met (nginx frees up to 32).
const RECLAIM_BATCH: usize = 16;

/// How often a connection waiting for a slot asks again, as connections turn idle.
const RECLAIM_EVERY: Duration = Duration::from_millis(500);

/// The connection cap, shared by the listeners that count against it (clones share it).
#[derive(Clone)]
pub(crate) struct Slots(Arc<Shared>);

struct Shared {
    free: Arc<Semaphore>,
    cap: usize,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    /// When the cap was last reported, to report it once per episode rather than per
    /// connection.
    reported: Mutex<Option<tokio::time::Instant>>,
}

impl Slots {
    /// At most `cap` connections open at once.
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.clamp(1, Semaphore::MAX_PERMITS);
        Self(Arc::new(Shared {
            free: Arc::new(Semaphore::new(cap)),
            cap,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            reported: Mutex::new(None),
        }))
    }

    /// A slot for a connection just accepted (`heads`: it may speak HTTP/1): at once if one
    /// is free, else once idle connections asked to close free one.
    pub(crate) async fn take(&self, heads: bool) -> Slot {
        let permit = match Arc::clone(&self.0.free).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => loop {
                self.reclaim();
                let free = Arc::clone(&self.0.free);
                if let Ok(Ok(permit)) =
                    tokio::time::timeout(RECLAIM_EVERY, free.acquire_owned()).await
                {
                    break permit;
                }
            },
        };
        let id = self.0.next_id.fetch_add(1, Relaxed);
        let activity = Arc::new(Activity::new(heads));
        self.open().insert(id, Arc::clone(&activity));
        Slot {
            activity,
            id,
            slots: Arc::clone(&self.0),
            _permit: permit,
        }
    }

    /// Asks the connections idle the longest to close.
    fn reclaim(&self) {
        let mut idle: Vec<(u64, Arc<Activity>)> = self
            .open()
            .values()
            .filter_map(|activity| Some((activity.idle_since()?, Arc::clone(activity))))
            .collect();
        let asked = idle.len().min(RECLAIM_BATCH);
        if asked > 0 && asked < idle.len() {
            idle.select_nth_unstable_by_key(asked - 1, |(since, _)| *since);
        }
        for (_, activity) in &idle[..asked] {
            activity.reclaim();
        }
        self.report(asked);
    }

    fn report(&self, asked: usize) {
        let mut reported = self
            .0
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = tokio::time::Instant::now();
        if reported.is_none_or(|at| now.duration_since(at) > Duration::from_secs(10)) {
            *reported = Some(now);
            tracing::warn!(
                cap = self.0.cap,
                closing_idle = asked,
                "at the connection cap (MAX_CONNECTIONS): idle connections are closed to make \
                 room, new ones wait for a slot"
            );
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.0.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open connection's place under the cap, freed when dropped with its socket.
pub(crate) struct Slot {
    activity: Arc<Activity>,
    id: u64,
    slots: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let slots = Slots::new(2);
        let first = slots.take(true).await;
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = slots.take(true).await;
        let busy = second.activity().started(false);
        // The third waits; the first, idle, is asked to close; the second, busy, is not.
        let third = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take(true).await }
        });
        tokio::task::yield_now().await;
        assert!(first.activity().take_reclaim());
        assert!(!second.activity().take_reclaim());
        assert!(!third.is_finished());
        drop(first);
        let third = third.await.unwrap();
        assert_eq!(slots.open().len(), 2);
        drop((busy, second, third));
        assert!(slots.open().is_empty());
    }
}
