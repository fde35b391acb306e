//! One connection, served from accept to close with hyper-util's connection builder: HTTP/1
//! or HTTP/2 on the HTTP port, HTTP/2 only on the gRPC port. Its task closes it when its
//! deadline passes (see [`Limits`]), when idle connections are asked to make room, and on
//! stop, letting requests in flight finish for at most [`GRACE`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tower_service::Service;

use super::Limits;
use super::activity::Expiry;
use super::body::{BoxError, Timed};
use super::request::PerRequest;
use super::slots::Slot;
use super::socket::Socket;

/// How long a connection asked to close may go on finishing its requests (and an HTTP/2
/// peer answering its GOAWAY) before it is dropped. Short, so SIGTERM stops the service
/// in well under 2 s even with event streams open.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// How the connections of one listener are served.
#[derive(Clone)]
pub(crate) struct Protocol {
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    /// HTTP/1 is spoken (the HTTP port), not only HTTP/2 (the gRPC port).
    http1: bool,
}

impl Protocol {
    /// HTTP/1 and HTTP/2, told apart by the connection's first bytes.
    pub(crate) fn http(limits: &Limits) -> Self {
        Self::new(auto::Builder::new(TokioExecutor::new()), limits, true)
    }

    /// HTTP/2 only, as gRPC is.
    pub(crate) fn http2_only(limits: &Limits) -> Self {
        Self::new(
            auto::Builder::new(TokioExecutor::new()).http2_only(),
            limits,
            false,
        )
    }

    fn new(mut builder: auto::Builder<TokioExecutor>, limits: &Limits, http1: bool) -> Self {
        // The head and idle bounds are the connection task's: hyper's header timer would
        // also close a keep-alive connection waiting for its next request.
        builder.http1().header_read_timeout(None);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.http2_keepalive_interval)
            .keep_alive_timeout(limits.http2_keepalive_timeout);
        Self {
            builder,
            limits: limits.clone(),
            http1,
        }
    }

    pub(crate) fn speaks_http1(&self) -> bool {
        self.http1
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Serves `stream`, accepted from `peer`, until it closes; `stop` turning true closes it
    /// gracefully.
    pub(crate) async fn serve<S, B>(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        slot: Slot,
        service: S,
        mut stop: watch::Receiver<bool>,
    ) where
        S: Service<Request<Timed<Incoming>>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let limits = &self.limits;
        let activity = Arc::clone(slot.activity());
        let service = PerRequest {
            service,
            peer,
            activity: Arc::clone(&activity),
            body_timeout: limits.body,
        };
        let socket = TokioIo::new(Socket::new(stream, slot, limits.send));
        let connection = self.builder.serve_connection_with_upgrades(socket, service);
        tokio::pin!(connection);
        let wake = tokio::time::sleep(GRACE);
        tokio::pin!(wake);
        // Set once the connection is asked to close: when it is dropped if still open.
        let mut closing: Option<Instant> = None;
        // When `wake` fires. Moving a timer costs a trip to the timer wheel, so it is moved
        // only nearer: set too early, it just wakes the loop to look again.
        let mut armed: Option<Instant> = None;
        loop {
            let deadline = closing.or_else(|| activity.deadline(limits).map(|(at, _)| at));
            if let Some(at) = deadline
                && armed.is_none_or(|armed| at < armed)
            {
                wake.as_mut().reset(at);
                armed = Some(at);
            }
            tokio::select! {
                // A change alone does not poll the connection again.
                biased;
                () = std::future::poll_fn(|cx| activity.poll_changed(cx)) => {}
                () = &mut wake, if armed.is_some() => {
                    armed = None;
                    let now = Instant::now();
                    match (closing, activity.deadline(limits)) {
                        (Some(at), _) if at <= now => {
                            tracing::debug!(%peer, "connection dropped: it did not close within the grace");
                            break;
                        }
                        (None, Some((at, Expiry::Close))) if at <= now => {
                            tracing::debug!(%peer, "connection closed: no request head in time");
                            break;
                        }
                        (None, Some((at, Expiry::Idle))) if at <= now => {
                            connection.as_mut().graceful_shutdown();
                            closing = Some(now + GRACE);
                        }
                        _ => {}
                    }
                }
                _ = stop.wait_for(|stop| *stop), if closing.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + GRACE);
                }
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(%peer, "connection ended: {error}");
                    }
                    break;
                }
            }
            if closing.is_none() && activity.take_reclaim() {
                match activity.expiry_now() {
                    Some(Expiry::Close) => break,
                    Some(Expiry::Idle) => {
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Instant::now() + GRACE);
                    }
                    None => {}
                }
            }
        }
        activity.finish();
    }
}
