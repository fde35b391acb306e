//! The one subscription every instance holds, to hear what other instances publish: resets
//! (`<channels>:resets`, see `resets`), runtime rule changes (`<channels>:runtime`, see
//! `runtime`) and, while this instance listens, live events (`<channels>:events`, see
//! `events`), where `<channels>` is the prefix, with the database number in databases
//! other than 0 (see [`RedisBackend::channels`]).

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::RedisBackend;
use super::resets::{self, Reset};
use super::runtime::news_of;
use crate::backend::News;

/// How often the connection messages arrive on is asked whether it is still there: a
/// connection that died without closing would otherwise never be noticed.
const PING_EVERY: Duration = Duration::from_secs(5);

/// Subscribes to the channels of `channels` at the first of `urls` that answers (any node of
/// a cluster hears what is published on any other), and hands each message to the backend
/// for as long as it lives. Reconnects after a lost connection, or one that stops answering
/// pings; each time the subscription is made, the backend is told that runtime entries may
/// have changed meanwhile, and each change announced is handed over as it is. The events'
/// channel is subscribed to while `listening` says so. `subscribed` is told when the first
/// subscription is in place.
pub(super) fn spawn_listener(
    backend: Weak<RedisBackend>,
    mut listening: watch::Receiver<bool>,
    urls: Vec<String>,
    channels: &str,
    connect_timeout: Duration,
    subscribed: oneshot::Sender<()>,
) {
    let (resets, runtime) = (resets::channel(channels), super::runtime::channel(channels));
    let events = super::events::channel(channels);
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
            let mut heard_events = *listening.borrow_and_update();
            let pubsub = tokio::time::timeout(connect_timeout, async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&[&resets, &runtime]).await?;
                if heard_events {
                    pubsub.subscribe(&events).await?;
                }
                Ok::<_, redis::RedisError>(pubsub)
            });
            let Ok(Ok(pubsub)) = pubsub.await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if let Some(subscribed) = subscribed.take() {
                let _ = subscribed.send(());
            }
            match backend.upgrade() {
                Some(backend) => backend.runtime_news.tell(News::Reread),
                None => return,
            }
            let (mut sink, mut messages) = pubsub.split();
            let mut pings = tokio::time::interval(PING_EVERY);
            pings.tick().await;
            loop {
                tokio::select! {
                    message = messages.next() => {
                        let Some(message) = message else { break };
                        let Some(backend) = backend.upgrade() else { return };
                        let channel = message.get_channel_name();
                        if channel == runtime {
                            backend.runtime_news.tell(news_of(message.get_payload_bytes()));
                            continue;
                        }
                        if channel == events {
                            backend.hear_events(message.get_payload_bytes());
                            continue;
                        }
                        match serde_json::from_slice::<Reset>(message.get_payload_bytes()) {
                            Ok(reset) => backend.on_reset(&reset),
                            Err(error) => tracing::debug!(%error, "not a tollgate reset; ignored"),
                        }
                    }
                    changed = listening.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let wanted = *listening.borrow_and_update();
                        if wanted == heard_events {
                            continue;
                        }
                        let made = async {
                            if wanted {
                                sink.subscribe(&events).await
                            } else {
                                sink.unsubscribe(&events).await
                            }
                        };
                        if !matches!(tokio::time::timeout(connect_timeout, made).await, Ok(Ok(()))) {
                            break;
                        }
                        heard_events = wanted;
                    }
                    _ = pings.tick() => {
                        if backend.strong_count() == 0 {
                            return;
                        }
                        // Subscribed, Redis answers a PING with an array (`pong` and an
                        // empty message), not a status: any answer will do.
                        let ping = tokio::time::timeout(connect_timeout, sink.ping::<redis::Value>());
                        if !matches!(ping.await, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            tracing::debug!(
                "lost the Redis connection resets and rule changes arrive on; reconnecting"
            );
        }
    });
}
