//! How `tollgate serve` serves connections, on its HTTP and gRPC ports alike: hyper-util's
//! connection builder, with bounds on each step of a connection (axum's own `serve` has
//! none) and a cap on open connections shared by every listener.
//!
//! | file | concept |
//! | --- | --- |
//! | [`slots`] | the cap on open connections, and closing idle ones to make room |
//! | [`activity`] | what one connection is doing, and so its next deadline |
//! | [`socket`] | an accepted socket: reads reported, stalled writes timed out |
//! | [`connection`] | one connection served, and closed when its deadline passes |
//! | [`request`], [`body`] | each request: peer address, body deadline, counted in flight |
//! | [`open_files`] | the open files limit, and the cap it allows |
//!
//! [`serve_router`] serves an axum router on a listener; the gRPC threads take their
//! connections from an [`Acceptor`] and serve them with [`Protocol::http2_only`].

mod activity;
mod body;
mod connection;
pub(crate) mod open_files;
mod request;
mod slots;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub(crate) use connection::Protocol;
pub(crate) use slots::{Slot, Slots};

/// How long each step of a connection may take (the defaults are the flags', in
/// `limits.rs`).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// From accept to the first request (HTTP/1's head; HTTP/2's preface, settings and
    /// first request).
    pub(crate) handshake: Duration,
    /// From an HTTP/1 request head's first byte to its end.
    pub(crate) header: Duration,
    /// From a request's head to the end of its body.
    pub(crate) body: Duration,
    /// With no request in flight.
    pub(crate) idle: Duration,
    /// A write the peer takes nothing of.
    pub(crate) send: Duration,
    /// Between HTTP/2 PINGs (`None`: none sent).
    pub(crate) http2_keepalive_interval: Option<Duration>,
    /// For a PING's answer.
    pub(crate) http2_keepalive_timeout: Duration,
    /// Silence before TCP keepalive probes (`None`: off).
    pub(crate) tcp_keepalive: Option<Duration>,
}

/// Serves `router` on `listener` under `limits`, counting its connections against `slots`,
/// until `stopped` turns true; then stops accepting and lets the connections finish their
/// requests for at most [`connection::GRACE`].
pub(crate) async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    slots: &Slots,
    mut stopped: watch::Receiver<bool>,
) {
    let protocol = Arc::new(Protocol::http(limits));
    let mut acceptor = Acceptor::new(listener, slots.clone(), &protocol);
    let drain = Drain::default();
    while let Some((stream, peer, slot)) = acceptor.next(&mut stopped).await {
        let serving =
            Arc::clone(&protocol).serve(stream, peer, slot, router.clone(), drain.watch());
        tokio::spawn(serving);
    }
    drain.finish().await;
}

/// Accepts connections on a listener, each with its slot under the cap.
pub(crate) struct Acceptor {
    listener: TcpListener,
    slots: Slots,
    tcp_keepalive: Option<socket2::TcpKeepalive>,
    /// Its connections may speak HTTP/1.
    http1: bool,
}

impl Acceptor {
    /// Accepts on `listener` the connections `protocol` serves, under `slots`' cap.
    pub(crate) fn new(listener: TcpListener, slots: Slots, protocol: &Protocol) -> Self {
        let tcp_keepalive = protocol.limits().tcp_keepalive.map(|idle| {
            socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval(Duration::from_secs(10))
        });
        Self {
            listener,
            slots,
            tcp_keepalive,
            http1: protocol.speaks_http1(),
        }
    }

    /// The next connection, once it has a slot; `None` once `stopped` turns true.
    pub(crate) async fn next(
        &mut self,
        stopped: &mut watch::Receiver<bool>,
    ) -> Option<(TcpStream, SocketAddr, Slot)> {
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = stopped.wait_for(|stop| *stop) => return None,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, say: the listener stays, and a short pause keeps a
                // full table from spinning.
                Err(error) => {
                    tracing::warn!("cannot accept a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Some(keepalive) = &self.tcp_keepalive
                && let Err(error) = socket2::SockRef::from(&stream).set_tcp_keepalive(keepalive)
            {
                tracing::debug!(%peer, "cannot set TCP keepalive: {error}");
            }
            let slot = tokio::select! {
                slot = self.slots.take(self.http1) => slot,
                _ = stopped.wait_for(|stop| *stop) => return None,
            };
            return Some((stream, peer, slot));
        }
    }
}

/// The connections of one server, told to stop together and waited for.
pub(crate) struct Drain {
    stop: watch::Sender<bool>,
    watching: watch::Receiver<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        let (stop, watching) = watch::channel(false);
        Self { stop, watching }
    }
}

impl Drain {
    /// For a new connection: turns true when it must stop.
    pub(crate) fn watch(&self) -> watch::Receiver<bool> {
        self.watching.clone()
    }

    /// Tells every connection to stop and waits until all have ended.
    pub(crate) async fn finish(self) {
        let _ = self.stop.send(true);
        drop(self.watching);
        self.stop.closed().await;
    }
}
