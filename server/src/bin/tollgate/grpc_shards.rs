//! The Envoy rate limit service, served by one single-threaded runtime per core.
//!
//! A gRPC server on Tokio's work-stealing runtime answers each call on a task of its own
//! (hyper spawns one per HTTP/2 stream). When that task runs on another worker than its
//! connection's, finishing it wakes the connection there, which writes that one answer:
//! a `writev` per call, where a connection whose calls all run on its own thread writes
//! every answer that is ready in one. On loopback the kernel's share of a call then
//! doubles (docs/PERFORMANCE.md, "limitador-server"). So the accepting loop hands each
//! connection, in turn, to one of a fixed set of shards, each a current-thread runtime on
//! a thread of its own that serves its connections from start to end: calls still run
//! on every core, and a connection's answers go out together.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tollgate_server::grpc::EnvoyRateLimit;

use crate::server::{Acceptor, Drain, Protocol, Slot};

/// A connection on its way from the accepting loop to a shard.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    slot: Slot,
}

/// Starts `shards` threads (at least one) to serve `ShouldRateLimit` as `service` does,
/// and returns the loop that hands them the connections `acceptor` accepts until `stopped`
/// turns true, then lets the calls in progress finish.
pub(crate) fn start(
    acceptor: Acceptor,
    protocol: Protocol,
    service: &EnvoyRateLimit,
    shards: usize,
    stopped: watch::Receiver<bool>,
) -> Result<impl Future<Output = Result<(), String>>, String> {
    let shards = shards.max(1);
    let protocol = Arc::new(protocol);
    let mut queues = Vec::with_capacity(shards);
    let mut finished = Vec::with_capacity(shards);
    for index in 0..shards {
        let (queue, connections) = mpsc::unbounded_channel();
        let (done, result) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start gRPC runtime {index}: {e}"))?;
        let service = service.clone().into_server();
        let protocol = Arc::clone(&protocol);
        thread::Builder::new()
            .name(format!("tollgate-grpc-{index}"))
            .spawn(move || {
                runtime.block_on(serve_shard(connections, service, protocol));
                let _ = done.send(Ok(()));
            })
            .map_err(|e| format!("cannot start gRPC thread {index}: {e}"))?;
        queues.push(queue);
        finished.push(result);
    }
    Ok(hand_out(acceptor, queues, finished, stopped))
}

/// One shard: serves the connections it is given until the accepting loop stops, then lets
/// them finish.
async fn serve_shard(
    mut connections: mpsc::UnboundedReceiver<Handoff>,
    service: RateLimitServiceServer<EnvoyRateLimit>,
    protocol: Arc<Protocol>,
) {
    let drain = Drain::default();
    while let Some(Handoff { stream, peer, slot }) = connections.recv().await {
        // Registered with this shard's own reactor.
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                let serving =
                    Arc::clone(&protocol).serve(stream, peer, slot, service.clone(), drain.watch());
                tokio::spawn(serving);
            }
            Err(error) => tracing::debug!(%peer, "gRPC: cannot register a connection: {error}"),
        }
    }
    drain.finish().await;
}

/// Accepts connections and gives them to the shards in turn.
async fn hand_out(
    mut acceptor: Acceptor,
    queues: Vec<mpsc::UnboundedSender<Handoff>>,
    finished: Vec<oneshot::Receiver<Result<(), String>>>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), String> {
    let shards = queues.len();
    let mut next = 0;
    while let Some((stream, peer, slot)) = acceptor.next(&mut stopped).await {
        // A peer that is already gone is dropped.
        let Ok(stream) = handoff(stream) else {
            continue;
        };
        let mut connection = Handoff { stream, peer, slot };
        // A shard whose thread has ended has dropped its queue: the next one takes the
        // connection, and with every shard ended the loop ends too.
        let mut tries = shards;
        loop {
            let queue = &queues[next % shards];
            next = next.wrapping_add(1);
            match queue.send(connection) {
                Ok(()) => break,
                Err(mpsc::error::SendError(back)) if tries > 1 => {
                    connection = back;
                    tries -= 1;
                }
                Err(_) => return collect(finished).await,
            }
        }
    }
    drop(queues);
    collect(finished).await
}

/// What every shard's server ended with: the first error, if any.
async fn collect(finished: Vec<oneshot::Receiver<Result<(), String>>>) -> Result<(), String> {
    let mut outcome = Ok(());
    for result in finished {
        let served = result
            .await
            .unwrap_or_else(|_| Err("a gRPC thread stopped without an answer".to_owned()));
        outcome = outcome.and(served);
    }
    outcome
}

/// A connection taken off this runtime's reactor, to be registered with a shard's.
fn handoff(connection: TcpStream) -> io::Result<std::net::TcpStream> {
    connection.set_nodelay(true)?;
    connection.into_std()
}
