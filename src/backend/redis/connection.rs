//! The connection decisions go over: one Redis or a cluster, and how it is made.
//!
//! A single Redis is reached through a [`ConnectionManager`], which reconnects by itself when
//! the connection drops. It does not when a connection attempt fails for another reason: if
//! something that is not Redis answers on Redis's port (an HTTP server, a port reused by
//! another program), the attempt fails to parse the reply, the manager keeps that failed
//! attempt, and every later call returns the same error without ever connecting again, even
//! once Redis is back. So any error that is neither Redis's own reply nor a dropped
//! connection (which the manager handles) replaces the manager with a fresh one.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Script, Value};
use tokio::sync::mpsc;

use super::batcher::{Job, MAX_QUEUED, batch};
use super::cluster::{Servers, refresh_slots};
use super::config::{RedisConfig, redact};
use super::script::load;

/// How decisions reach Redis.
pub(super) enum Route {
    /// A single Redis: decisions through the batcher's queue; other commands over the
    /// connection.
    Batched {
        queue: mpsc::Sender<Job>,
        connection: Connection,
    },
    /// A cluster: each decision its own call, once connected (at startup, or later by the
    /// background connector).
    Cluster(Arc<OnceLock<Connection>>),
}

/// A reconnecting connection to one Redis, and its batcher. The outer error is an
/// unusable URL; the inner one says Redis did not answer yet.
pub(super) async fn connect_single(
    config: &RedisConfig,
    script: &Arc<Script>,
) -> Result<(Route, Result<(), String>), String> {
    let client =
        redis::Client::open(config.url.as_str()).map_err(|e| unusable_url(&config.url, &e))?;
    // Short, capped reconnect backoff: a restarted Redis is found again quickly.
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.connect_timeout))
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(250))
        .set_number_of_retries(6);
    let mut connection = Connection::single(client, manager_config).map_err(|e| e.to_string())?;
    let (queue, queued) = mpsc::channel(MAX_QUEUED);
    tokio::spawn(batch(queued, connection.clone(), Arc::clone(script)));
    let ready = load(script, &mut connection, config.connect_timeout).await;
    let route = Route::Batched {
        queue,
        connection: connection.clone(),
    };
    Ok((route, ready))
}

/// Why `url` cannot be used: what a Redis URL looks like when it is not one at all (an
/// `http://` URL, a bare host), rather than the client's "did not parse".
fn unusable_url(url: &str, error: &redis::RedisError) -> String {
    match redis::parse_redis_url(url) {
        None => {
            "it must start with redis:// (or redis+unix:// or unix:// for a Unix socket)".into()
        }
        Some(parsed) if matches!(parsed.scheme(), "rediss" | "valkeys") => {
            "rediss:// needs TLS, which this build does not include: use redis://".into()
        }
        Some(_) => error.to_string(),
    }
}

/// A cluster connection, made now or, if no node answers in time, by a background task;
/// and a task that keeps the slot map of the per-master breakers current.
pub(super) async fn connect_cluster(
    nodes: &[String],
    config: &RedisConfig,
    script: &Arc<Script>,
    servers: &Arc<Servers>,
) -> Result<(Route, Result<(), String>), String> {
    for node in nodes {
        redis::IntoConnectionInfo::into_connection_info(node.as_str()).map_err(|e| {
            let why = unusable_url(node, &e);
            format!("seed node {} is not a Redis URL: {why}", redact(node))
        })?;
    }
    let client = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.connect_timeout)
        .retries(2)
        .min_retry_wait(10)
        .max_retry_wait(250)
        .build()
        .map_err(|e| e.to_string())?;
    let connect_timeout = config.connect_timeout;
    let connected = Arc::new(OnceLock::new());
    let first = tokio::time::timeout(connect_timeout, client.get_async_connection()).await;
    let ready = match first {
        Ok(Ok(cluster)) => {
            let mut connection = Connection::Cluster(cluster);
            let _ = connected.set(connection.clone());
            refresh_slots(servers, &mut connection).await;
            load(script, &mut connection, connect_timeout).await
        }
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {connect_timeout:?}")),
    };
    let (cell, script, servers) = (
        Arc::downgrade(&connected),
        Arc::downgrade(script),
        Arc::downgrade(servers),
    );
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(250));
        let mut since_refresh = Duration::ZERO;
        loop {
            ticks.tick().await;
            let (Some(cell), Some(script), Some(servers)) =
                (cell.upgrade(), script.upgrade(), servers.upgrade())
            else {
                break;
            };
            match cell.get() {
                None => {
                    let attempt = client.get_async_connection();
                    if let Ok(Ok(cluster)) = tokio::time::timeout(connect_timeout, attempt).await {
                        let mut connection = Connection::Cluster(cluster);
                        let _ = cell.set(connection.clone());
                        refresh_slots(&servers, &mut connection).await;
                        let _ = load(&script, &mut connection, connect_timeout).await;
                        tracing::info!("connected to the Redis Cluster");
                    }
                }
                Some(connection) => {
                    since_refresh += Duration::from_millis(250);
                    if since_refresh >= Duration::from_secs(2) {
                        since_refresh = Duration::ZERO;
                        refresh_slots(&servers, &mut connection.clone()).await;
                    }
                }
            }
        }
    });
    Ok((Route::Cluster(connected), ready))
}

/// A single Redis or a cluster. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(Arc<Single>),
    Cluster(ClusterConnection),
}

impl Connection {
    /// A connection to one Redis, made on first use.
    pub(crate) fn single(
        client: redis::Client,
        config: ConnectionManagerConfig,
    ) -> redis::RedisResult<Self> {
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Connection::Single(Arc::new(Single {
            client,
            config,
            manager: ArcSwap::from_pointee(manager),
        })))
    }
}

/// One Redis, through a connection manager that is replaced when it cannot recover alone.
pub(crate) struct Single {
    client: redis::Client,
    config: ConnectionManagerConfig,
    manager: ArcSwap<ConnectionManager>,
}

impl Single {
    /// Runs `call` on the current manager; after an error the manager cannot recover from,
    /// the next call goes over a new one.
    async fn with<T>(
        &self,
        call: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let used = self.manager.load_full();
        let result = call(&mut ConnectionManager::clone(&used)).await;
        if let Err(error) = &result
            && !recovers_alone(error)
        {
            self.replace(&used, error);
        }
        result
    }

    /// Puts a fresh manager in place of `used`, unless a concurrent call already did.
    fn replace(&self, used: &Arc<ConnectionManager>, error: &RedisError) {
        if !Arc::ptr_eq(&self.manager.load(), used) {
            return;
        }
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(fresh) => {
                let before = self.manager.compare_and_swap(used, Arc::new(fresh));
                if Arc::ptr_eq(&before, used) {
                    tracing::debug!(%error, "Redis connection replaced after an unreadable reply");
                }
            }
            // The same client and config made the first one; this cannot fail differently.
            Err(error) => tracing::warn!(%error, "cannot make a new Redis connection"),
        }
    }
}

/// Whether the connection manager gets past `error` by itself: Redis's own error replies
/// (`NOSCRIPT`, `BUSY`, `OOM`, ...) come over a working connection, and I/O errors make the
/// manager reconnect. Anything else (a reply that is not Redis's protocol, a failed
/// handshake) would be returned again and again.
fn recovers_alone(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(_)) || error.is_io_error()
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(single) => {
                Box::pin(single.with(async move |c| c.req_packed_command(cmd).await))
            }
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(single) => Box::pin(
                single.with(async move |c| c.req_packed_commands(pipeline, offset, count).await),
            ),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(single) => single.manager.load().get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}
