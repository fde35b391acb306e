//! The health probe: once a second, a `PING` to each Redis node decisions go to (the one
//! Redis, or each master of a cluster), with a deadline.
//!
//! Its answer moves that node's circuit breaker, so that the breaker, and `/health` which
//! reports it, follow Redis without waiting for traffic: a `PING` that fails or misses its
//! deadline opens a closed breaker (Redis went away; unless a decision got through
//! meanwhile, which says more), and one answered closes an open one (Redis came back:
//! decisions go to it again without a request having to probe first).
//! Probes run in turn in one task, each finished or abandoned at its deadline before the
//! next, so they never pile up; they are not decisions and count nowhere.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use tokio::task::JoinSet;

use super::RedisBackend;
use super::cluster::{Server, Servers};
use super::connection::Connection;
use super::setup::Route;

/// How often each node is probed.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The shortest deadline of a probe: a decision's deadline (50 ms by default) is too short
/// for a `PING` on a busy machine to be a verdict on Redis; a longer decision deadline is
/// used as is.
const MIN_DEADLINE: Duration = Duration::from_millis(500);

/// Probes `backend`'s nodes every [`PROBE_EVERY`] for as long as it lives.
pub(super) fn spawn(backend: Weak<RedisBackend>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(PROBE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(backend) = backend.upgrade() else {
                break;
            };
            backend.probe().await;
        }
    });
}

impl RedisBackend {
    /// One round: each node pinged (a cluster's masters at once), its breaker told.
    async fn probe(&self) {
        let deadline = self.timeout.max(MIN_DEADLINE);
        match (&self.route, &*self.servers) {
            (Route::Batched { connection, .. }, Servers::Single(server)) => {
                let sent = Instant::now();
                let answer = ping(connection.clone(), None, deadline).await;
                server.breaker.probed(sent, answer);
            }
            (Route::Cluster(connected), Servers::Cluster(slots)) => {
                // Before the cluster is first reached, its connector keeps trying alone.
                let Some(connection) = connected.get() else {
                    return;
                };
                let sent = Instant::now();
                let mut pings = JoinSet::new();
                for (address, server) in slots.masters_in_use() {
                    let connection = connection.clone();
                    pings.spawn(async move {
                        let answer = ping(connection, Some(&address), deadline).await;
                        (server, answer)
                    });
                }
                while let Some(done) = pings.join_next().await {
                    if let Ok((server, answer)) = done {
                        let server: Arc<Server> = server;
                        server.breaker.probed(sent, answer);
                    }
                }
            }
            // A single Redis is always batched, a cluster never.
            _ => {}
        }
    }
}

/// How long a `PING` sent again over a connection being made again may wait: a Redis back
/// from a restart answers at once; one still away keeps the connection's own retries
/// waiting longer, which this cuts short.
const RECONNECT_WAIT: Duration = Duration::from_millis(250);

/// `PING` over `connection` (to the cluster node at `address`, `host:port`), within
/// `deadline`. A connection that was lost is made again by the first `PING`, which then
/// fails: one more is sent over the new connection (within [`RECONNECT_WAIT`]), so that a
/// Redis back from a restart is seen at this round, not the next.
async fn ping(
    mut connection: Connection,
    address: Option<&str>,
    deadline: Duration,
) -> Result<(), String> {
    for wait in [deadline, RECONNECT_WAIT] {
        match tokio::time::timeout(wait, ping_once(&mut connection, address)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error))
                if wait == deadline && (error.is_io_error() || error.is_connection_dropped()) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err(format!("no answer to PING within {wait:?}")),
        }
    }
    Err("the connection could not be made again".into())
}

async fn ping_once(connection: &mut Connection, address: Option<&str>) -> redis::RedisResult<()> {
    let command = redis::cmd("PING");
    match (connection, address) {
        (Connection::Cluster(cluster), Some(address)) => {
            let (host, port) = address
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse().ok()?)))
                .ok_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "not a host:port address",
                        address.to_owned(),
                    ))
                })?;
            let node = SingleNodeRoutingInfo::ByAddress {
                host: host.to_owned(),
                port,
            };
            cluster
                .route_command(command, RoutingInfo::SingleNode(node))
                .await
                .map(drop)
        }
        (connection, _) => command.query_async::<()>(connection).await,
    }
}
