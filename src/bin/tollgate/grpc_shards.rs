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
use std::thread;
use std::time::Duration;

use futures_util::stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tollgate::Limiter;
use tollgate::grpc::EnvoyRateLimit;

use crate::serve::until_stopped;

/// Starts `shards` threads (at least one) to serve `ShouldRateLimit` for `limiter`, and
/// returns the loop that hands them the connections accepted on `listener` until
/// `stopped` turns true, then lets the calls in progress finish.
pub(crate) fn start(
    listener: TcpListener,
    limiter: &Limiter,
    shards: usize,
    stopped: watch::Receiver<bool>,
) -> Result<impl Future<Output = Result<(), String>>, String> {
    let shards = shards.max(1);
    let mut queues = Vec::with_capacity(shards);
    let mut finished = Vec::with_capacity(shards);
    for index in 0..shards {
        let (queue, connections) = mpsc::unbounded_channel();
        let (done, result) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start gRPC runtime {index}: {e}"))?;
        let service = EnvoyRateLimit::new(limiter.clone()).into_server();
        let stop = stopped.clone();
        thread::Builder::new()
            .name(format!("tollgate-grpc-{index}"))
            .spawn(move || {
                let served = runtime.block_on(
                    tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming_shutdown(incoming(connections), until_stopped(stop)),
                );
                let _ = done.send(served.map_err(|e| e.to_string()));
            })
            .map_err(|e| format!("cannot start gRPC thread {index}: {e}"))?;
        queues.push(queue);
        finished.push(result);
    }
    Ok(hand_out(listener, queues, finished, stopped))
}

/// Accepts connections and gives them to the shards in turn.
async fn hand_out(
    listener: TcpListener,
    queues: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    finished: Vec<oneshot::Receiver<Result<(), String>>>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), String> {
    let shards = queues.len();
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let connection = match accepted {
            Ok((connection, _)) => connection,
            // Out of file descriptors, say: the listener stays, and a short pause keeps a
            // full table from spinning.
            Err(error) => {
                tracing::warn!("gRPC: cannot accept a connection: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A peer that is already gone is dropped.
        let Ok(mut connection) = handoff(connection) else {
            continue;
        };
        // A shard whose server has ended has dropped its queue: the next one takes the
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

/// The connections a shard is given, each registered with the shard's own reactor.
fn incoming(
    mut connections: mpsc::UnboundedReceiver<std::net::TcpStream>,
) -> impl futures_util::Stream<Item = io::Result<TcpStream>> {
    stream::poll_fn(move |context| {
        connections
            .poll_recv(context)
            .map(|connection| connection.map(TcpStream::from_std))
    })
}
