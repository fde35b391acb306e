//! What one connection is doing, as its socket, its requests and its task see it: requests
//! in flight, since when it has been idle, whether a request head is arriving. From that
//! comes its next deadline, which its task enforces.

use std::sync::atomic::Ordering::{AcqRel, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

use super::Limits;

/// The origin of every time kept here, so that connections' idle times compare.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Shared by a connection's socket, its requests' guards and its task.
pub(crate) struct Activity {
    opened_ms: u64,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// When the last request in flight finished (or the connection opened).
    idle_since_ms: AtomicU64,
    /// One more than when the first byte of a request head arrived while idle; 0: none.
    head_since_ms: AtomicU64,
    /// Whether bytes read while idle start a request head: HTTP/1 only, since HTTP/2 reads
    /// pings and settings while idle.
    heads: AtomicBool,
    /// Asked to close, to make room for a new connection.
    reclaimed: AtomicBool,
    /// Its task has ended (an upgraded socket may live on, but is no longer served).
    done: AtomicBool,
    /// Set, and the task woken, when a deadline may have come nearer or a close is asked.
    /// (Lock-free: it happens about once a request.)
    changed: AtomicBool,
    task: AtomicWaker,
}

/// What to do when a connection's deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Close it now: it never completed a request (handshake), or a head is late.
    Close,
    /// Close it gracefully: it is idle between requests.
    Idle,
}

impl Activity {
    /// A connection opened now; `heads`: its protocol may be HTTP/1.
    pub(crate) fn new(heads: bool) -> Self {
        let now = now_ms();
        Self {
            opened_ms: now,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(now),
            head_since_ms: AtomicU64::new(0),
            heads: AtomicBool::new(heads),
            reclaimed: AtomicBool::new(false),
            done: AtomicBool::new(false),
            changed: AtomicBool::new(false),
            task: AtomicWaker::new(),
        }
    }

    /// Ready once something changed since the last time it was.
    pub(crate) fn poll_changed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.changed.swap(false, AcqRel) {
            return Poll::Ready(());
        }
        self.task.register(cx.waker());
        if self.changed.swap(false, AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn notify(&self) {
        self.changed.store(true, Release);
        self.task.wake();
    }

    /// Bytes arrived. Read on every read of the socket, so only atomics.
    #[inline]
    pub(crate) fn read(&self) {
        if self.heads.load(Relaxed)
            && self.in_flight.load(Relaxed) == 0
            && self.head_since_ms.load(Relaxed) == 0
        {
            self.head_since_ms.store(now_ms() + 1, Relaxed);
            self.notify();
        }
    }

    /// A request arrived whole (its head, for HTTP/1); it is in flight until the guard is
    /// dropped with its answer.
    pub(crate) fn started(self: &Arc<Self>, http2: bool) -> Busy {
        self.in_flight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        self.head_since_ms.store(0, Relaxed);
        if http2 {
            self.heads.store(false, Relaxed);
        }
        Busy(Arc::clone(self))
    }

    /// When this connection's current deadline passes, and what then; `None` while a
    /// request is in flight.
    pub(crate) fn deadline(&self, limits: &Limits) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Relaxed) > 0 {
            return None;
        }
        let (mut at_ms, mut expiry) = if self.requests.load(Relaxed) == 0 {
            (self.opened_ms + millis(limits.handshake), Expiry::Close)
        } else {
            (
                self.idle_since_ms.load(Relaxed) + millis(limits.idle),
                Expiry::Idle,
            )
        };
        let head = self.head_since_ms.load(Relaxed);
        if head != 0 && head - 1 + millis(limits.header) < at_ms {
            at_ms = head - 1 + millis(limits.header);
            expiry = Expiry::Close;
        }
        Some((*EPOCH + Duration::from_millis(at_ms), expiry))
    }

    /// How a close asked now would go: `None` while a request is in flight.
    pub(crate) fn expiry_now(&self) -> Option<Expiry> {
        if self.in_flight.load(Relaxed) > 0 {
            None
        } else if self.requests.load(Relaxed) == 0 || self.head_since_ms.load(Relaxed) != 0 {
            Some(Expiry::Close)
        } else {
            Some(Expiry::Idle)
        }
    }

    /// Since when it has been idle and can be closed to make room; `None` if it cannot.
    pub(crate) fn idle_since(&self) -> Option<u64> {
        let idle = !self.done.load(Relaxed) && self.in_flight.load(Relaxed) == 0;
        idle.then(|| self.idle_since_ms.load(Relaxed))
    }

    /// Asks the task to close the connection if it is idle.
    pub(crate) fn reclaim(&self) {
        self.reclaimed.store(true, Relaxed);
        self.notify();
    }

    /// Whether a close was asked, clearing the ask.
    pub(crate) fn take_reclaim(&self) -> bool {
        self.reclaimed.swap(false, Relaxed)
    }

    /// The task is gone.
    pub(crate) fn finish(&self) {
        self.done.store(true, Relaxed);
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX / 4)
}

/// A request in flight on a connection; dropped with its answer's body.
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since_ms.store(now_ms(), Relaxed);
        if activity.in_flight.fetch_sub(1, Relaxed) == 1 {
            activity.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            handshake: Duration::from_secs(5),
            header: Duration::from_secs(2),
            body: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            send: Duration::from_secs(30),
            http2_keepalive_interval: None,
            http2_keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: None,
        }
    }

    #[test]
    fn the_deadline_follows_the_connection() {
        let limits = limits();
        let activity = Arc::new(Activity::new(true));
        let opened = *EPOCH + Duration::from_millis(activity.opened_ms);
        // Nothing yet: the handshake bound.
        assert_eq!(
            activity.deadline(&limits),
            Some((opened + limits.handshake, Expiry::Close))
        );
        // A head begins: the header bound, nearer.
        activity.read();
        let (at, expiry) = activity.deadline(&limits).unwrap();
        assert_eq!(expiry, Expiry::Close);
        assert!(at <= Instant::now() + limits.header);
        // In flight: no deadline, and reads are body bytes.
        let busy = activity.started(false);
        activity.read();
        assert_eq!(activity.deadline(&limits), None);
        assert_eq!(activity.idle_since(), None);
        // Answered: idle, closed gracefully after the idle bound.
        drop(busy);
        let (at, expiry) = activity.deadline(&limits).unwrap();
        assert_eq!(expiry, Expiry::Idle);
        assert!(at > Instant::now() + limits.header);
        assert_eq!(activity.expiry_now(), Some(Expiry::Idle));
    }

    #[test]
    fn http2_reads_while_idle_are_not_heads() {
        let limits = limits();
        let activity = Arc::new(Activity::new(true));
        drop(activity.started(true));
        activity.read();
        assert_eq!(activity.deadline(&limits).unwrap().1, Expiry::Idle);
    }
}
