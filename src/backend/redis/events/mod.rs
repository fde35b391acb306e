//! Live events between the instances sharing a Redis.
//!
//! | key or channel | type | holds |
//! | --- | --- | --- |
//! | `<prefix>:events:listeners` | sorted set | the identifier of each instance that listens, scored with when it stops (milliseconds of Redis' clock); expires with the last |
//! | channel `<prefix>:events` | pub/sub | the messages of the instances, while one listens (see "The fleet, live" in `docs/stores.md`) |
//!
//! Every instance answers the roll call every quarter of a second: one that listens, or just
//! stopped, with `roll_call.lua`, any other by reading the set's size (`ZCARD`, which a
//! listener gone without a word keeps counting until the set expires, at most the time its
//! answer lasts: another listener's script drops it sooner). One that listens subscribes to
//! the channel, on the subscription every instance holds (see `pubsub`), and leaves it when
//! it stops. On a single Redis, messages and roll calls go over a connection of their own:
//! a large message never waits in front of a decision. The channel carries the database
//! number as the others do (see [`RedisBackend::channels`]).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;

use super::{REDIS, RedisBackend};
use crate::backend::{EventRelay, Heard, MAX_MESSAGE_BYTES, StoreError, StoreFuture};

static ROLL_CALL: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("roll_call.lua")));

/// The channel events are published on, of the channels' prefix.
pub(super) fn channel(channels: &str) -> String {
    format!("{channels}:events")
}

/// The sorted set of listeners.
fn listeners(prefix: &str) -> String {
    format!("{prefix}:events:listeners")
}

impl RedisBackend {
    async fn answer_roll_call(
        &self,
        listener: &str,
        listening: bool,
        lasting: Duration,
    ) -> Result<u64, String> {
        // Subscribed or not as it says, on the subscription every instance holds.
        let was_listening = *self.listening.borrow();
        // Told only of a change: the listener's loop wakes for nothing else.
        self.listening
            .send_if_modified(|was| std::mem::replace(was, listening) != listening);
        let mut connection = self
            .events_connection()
            .ok_or("not connected to Redis yet")?;
        if !listening && !was_listening {
            let mut size = redis::cmd("ZCARD");
            size.arg(listeners(&self.prefix));
            let size = size.query_async::<u64>(&mut connection);
            return within(self.command_timeout(), size).await;
        }
        let mut call = ROLL_CALL.key(listeners(&self.prefix));
        call.arg(listener)
            .arg(if listening { "1" } else { "0" })
            .arg(
                u64::try_from(lasting.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
        let answer = call.invoke_async::<u64>(&mut connection);
        within(self.command_timeout(), answer).await
    }

    /// Hands a message of the channel to the limiter: not copied when it is too long.
    pub(super) fn hear_events(&self, payload: &[u8]) {
        if payload.len() > MAX_MESSAGE_BYTES {
            tracing::debug!(
                bytes = payload.len(),
                "a message of live events too long; dropped"
            );
            self.events_heard.lost();
            return;
        }
        if let Ok(text) = std::str::from_utf8(payload) {
            self.events_heard.tell(text.to_owned());
        }
    }

    async fn publish_events(&self, message: String) -> Result<(), String> {
        let mut connection = self
            .events_connection()
            .ok_or("not connected to Redis yet")?;
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(channel(&self.channels)).arg(message);
        let published = publish.query_async::<u64>(&mut connection);
        within(self.command_timeout(), published).await.map(|_| ())
    }
}

/// `command`'s answer, or why there is none within `deadline`.
async fn within<T>(
    deadline: Duration,
    command: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(deadline, command).await {
        Ok(answer) => answer.map_err(|error| error.to_string()),
        Err(_) => Err(format!("Redis did not answer within {deadline:?}")),
    }
}

impl EventRelay for RedisBackend {
    fn name(&self) -> &'static str {
        REDIS
    }

    fn roll_call<'a>(
        &'a self,
        listener: &'a str,
        listening: bool,
        lasting: Duration,
    ) -> StoreFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            self.answer_roll_call(listener, listening, lasting)
                .await
                .map_err(|reason| StoreError::new(REDIS, reason))
        })
    }

    fn publish(&self, message: String) -> StoreFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.publish_events(message)
                .await
                .map_err(|reason| StoreError::new(REDIS, reason))
        })
    }

    fn heard(&self) -> Arc<Heard> {
        Arc::clone(&self.events_heard)
    }
}
