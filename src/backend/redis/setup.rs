//! Reaching Redis at startup: the connection made (or, for a cluster no node of which
//! answers yet, made in the background), the batcher spawned and the decision script
//! loaded. Kept apart from the types it assembles, which never import it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManagerConfig;
use tokio::sync::mpsc;

use super::batcher::{Job, batch};
use super::cluster::{Servers, refresh_slots};
use super::config::{RedisConfig, redact};
use super::connection::Connection;
use super::error::MAX_QUEUED;
use super::script::load;

/// How decisions reach Redis.
pub(super) enum Route {
    /// A single Redis: decisions through the batcher's queue; other commands over the
    /// connection; live events over their own, so that a large message never waits in front
    /// of a decision.
    Batched {
        queue: mpsc::Sender<Job>,
        connection: Connection,
        events: Connection,
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
    let events =
        Connection::single(client.clone(), manager_config.clone()).map_err(|e| e.to_string())?;
    let mut connection = Connection::single(client, manager_config).map_err(|e| e.to_string())?;
    let (queue, queued) = mpsc::channel(MAX_QUEUED);
    tokio::spawn(batch(queued, connection.clone(), Arc::clone(script)));
    let ready = load(script, &mut connection, config.connect_timeout).await;
    let route = Route::Batched {
        queue,
        connection: connection.clone(),
        events,
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
