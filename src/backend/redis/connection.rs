//! The connection commands go over: one Redis or a cluster (made in `setup`).
//!
//! A single Redis is reached through a [`ConnectionManager`], which reconnects by itself when
//! the connection drops. It does not when a connection attempt fails for another reason: if
//! something that is not Redis answers on Redis's port (an HTTP server, a port reused by
//! another program), the attempt fails to parse the reply, the manager keeps that failed
//! attempt, and every later call returns the same error without ever connecting again, even
//! once Redis is back. So any error that is neither Redis's own reply nor a dropped
//! connection (which the manager handles) replaces the manager with a fresh one.

use std::sync::Arc;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

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
