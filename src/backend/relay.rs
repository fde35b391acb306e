//! Live events between the instances sharing a store: each instance publishes what it
//! decides while another listens, and hears what the others publish while it listens itself.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::{StoreError, StoreFuture};

/// Where a store carries live events between the instances that share it: returned by
/// [`Store::events`](super::Store::events).
///
/// Every quarter of a second each instance answers a roll call ([`roll_call`](Self::roll_call)):
/// whether it listens (someone subscribed to its events), which the store remembers for
/// the time given, and how many other instances listen. While any other does, the instance
/// [publishes](Self::publish) its events in messages; while it listens itself, the store
/// hands it every message published, its own included, in its [`Heard`]. With no listener
/// anywhere, nothing is published. The messages are the limiter's (JSON text, see "The
/// fleet, live" in `docs/stores.md`): the store only carries them.
///
/// # Example
///
/// The relay of one process (as a shared store would, without the sharing):
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use tollgate::backend::{EventRelay, Heard, StoreError, StoreFuture};
///
/// #[derive(Default)]
/// struct OneProcess {
///     listening: Mutex<bool>,
///     heard: Arc<Heard>,
/// }
///
/// impl EventRelay for OneProcess {
///     fn name(&self) -> &'static str {
///         "one process"
///     }
///
///     fn roll_call<'a>(&'a self, _listener: &'a str, listening: bool, _lasting: Duration) -> StoreFuture<'a, Result<u64, StoreError>> {
///         *self.listening.lock().unwrap() = listening;
///         Box::pin(async { Ok(0) })
///     }
///
///     fn publish(&self, message: String) -> StoreFuture<'_, Result<(), StoreError>> {
///         if *self.listening.lock().unwrap() {
///             self.heard.tell(message);
///         }
///         Box::pin(async { Ok(()) })
///     }
///
///     fn heard(&self) -> Arc<Heard> {
///         Arc::clone(&self.heard)
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let relay = OneProcess::default();
/// assert_eq!(relay.roll_call("me", true, Duration::from_secs(3)).await, Ok(0));
/// relay.publish("{}".into()).await.unwrap();
/// assert_eq!(relay.heard().take(), ["{}"]);
/// # });
/// ```
pub trait EventRelay: Send + Sync + 'static {
    /// The store, as messages name it (`Redis`).
    fn name(&self) -> &'static str;

    /// Records whether the instance `listener` (an identifier unique to it) listens, for
    /// `lasting` from now unless it answers again, and, while it does, hands it every
    /// message published; answers how many other instances listen.
    fn roll_call<'a>(
        &'a self,
        listener: &'a str,
        listening: bool,
        lasting: Duration,
    ) -> StoreFuture<'a, Result<u64, StoreError>>;

    /// Sends `message` to every instance that listens.
    fn publish(&self, message: String) -> StoreFuture<'_, Result<(), StoreError>>;

    /// Where the messages heard arrive: one [`Heard`] per limiter (a relay shared by two
    /// limiters would split their messages).
    fn heard(&self) -> std::sync::Arc<Heard>;
}

/// The messages a store heard for its instance and the limiter has not taken yet, oldest
/// first. Bounded: past [`MAX_HEARD`] the oldest are dropped and counted
/// ([`missed`](Self::missed)), so a limiter that falls behind never makes memory grow.
///
/// # Example
///
/// ```
/// use tollgate::backend::Heard;
///
/// let heard = Heard::default();
/// heard.tell("one".into());
/// assert_eq!(heard.take(), ["one"]);
/// assert!(heard.take().is_empty());
/// assert_eq!(heard.missed(), 0);
/// ```
#[derive(Debug, Default)]
pub struct Heard {
    queue: Mutex<VecDeque<String>>,
    missed: AtomicU64,
    arrived: Notify,
}

/// The most messages a [`Heard`] holds (each at most [`MAX_MESSAGE_BYTES`]).
pub const MAX_HEARD: usize = 256;

/// The longest message a [`Heard`] takes: a longer one is dropped and counted
/// [missed](Heard::missed). A store may drop it sooner, before reading it whole. The
/// limiter's own are far shorter: at most 256 events each.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

impl Heard {
    /// Hands `message` to the limiter, unless it is longer than [`MAX_MESSAGE_BYTES`].
    pub fn tell(&self, message: String) {
        if message.len() > MAX_MESSAGE_BYTES {
            self.lost();
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= MAX_HEARD {
            queue.pop_front();
            self.missed.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(message);
        drop(queue);
        self.arrived.notify_one();
    }

    /// Counts a message the store dropped before handing it over (too long to read whole).
    pub fn lost(&self) {
        self.missed.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until a message arrives (at once if one arrived since this was last woken; the
    /// queue may then be empty).
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// The messages heard so far, oldest first.
    pub fn take(&self) -> Vec<String> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.drain(..).collect()
    }

    /// The messages dropped unread since the last call: each held one or more events.
    pub fn missed(&self) -> u64 {
        self.missed.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limiter_that_falls_behind_loses_the_oldest_messages() {
        let heard = Heard::default();
        for n in 0..MAX_HEARD + 3 {
            heard.tell(n.to_string());
        }
        let messages = heard.take();
        assert_eq!(messages.len(), MAX_HEARD);
        assert_eq!(messages[0], "3");
        assert_eq!(heard.missed(), 3);
        assert_eq!(heard.missed(), 0, "told once");
        heard.tell("x".repeat(MAX_MESSAGE_BYTES + 1));
        assert!(heard.take().is_empty());
        assert_eq!(heard.missed(), 1, "too long: dropped");
    }
}
