//! Resets reach every instance that shares the Redis.
//!
//! A reset deletes the client's keys in Redis, then publishes the reset on the channel
//! `<prefix>:resets`. Every instance listens there and forgets what it remembers of that
//! client under those rules: remembered refusals, leases, and its local fallback's buckets.
//! Without this, an instance would keep refusing a client from a remembered refusal after
//! the client's key was gone. The message is JSON: `{"client": "id:alice", "rules":
//! ["/api/data", "default"]}`.
//!
//! An instance that is cut off from Redis while a reset is published misses it; what it
//! remembers of the client then ends on its own (a refusal when its wait is over, a lease
//! at its end).

use std::sync::Weak;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// One reset, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Reset {
    /// The client key, as `ClientKey` displays it.
    pub(super) client: String,
    /// The identities of the rules reset.
    pub(super) rules: Vec<String>,
}

/// The channel resets are published on.
pub(super) fn channel(prefix: &str) -> String {
    format!("{prefix}:resets")
}

/// Listens for resets on `channel` at the first of `urls` that answers (any node of a
/// cluster hears what is published on any other), and hands each to `on_reset` with the
/// backend, for as long as the backend lives. Reconnects after a lost connection.
/// `subscribed` is told when the first subscription is in place.
pub(super) fn spawn_listener<B: Send + Sync + 'static>(
    backend: Weak<B>,
    urls: Vec<String>,
    channel: String,
    subscribed: oneshot::Sender<()>,
    on_reset: impl Fn(&B, Reset) + Send + 'static,
) {
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut subscribed = Some(subscribed);
        for url in urls.iter().cycle() {
            if backend.strong_count() == 0 {
                return;
            }
            let Ok(client) = redis::Client::open(url.as_str()) else {
                continue;
            };
            let pubsub = tokio::time::timeout(Duration::from_secs(1), async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            });
            let Ok(Ok(pubsub)) = pubsub.await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if let Some(subscribed) = subscribed.take() {
                let _ = subscribed.send(());
            }
            let mut messages = pubsub.into_on_message();
            loop {
                // Wakes up now and then to let go of a backend that is gone.
                let next = tokio::time::timeout(Duration::from_secs(1), messages.next()).await;
                let Some(backend) = backend.upgrade() else {
                    return;
                };
                let message = match next {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(_) => continue,
                };
                match serde_json::from_slice::<Reset>(message.get_payload_bytes()) {
                    Ok(reset) => on_reset(&backend, reset),
                    Err(error) => tracing::debug!(%error, "not a tollgate reset; ignored"),
                }
            }
            tracing::debug!("lost the Redis connection resets arrive on; reconnecting");
        }
    });
}
