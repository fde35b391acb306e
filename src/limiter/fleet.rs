//! The fleet, live: on a store that carries events between the instances sharing it
//! ([`EventRelay`]), a limiter's subscribers see every instance's decisions and summaries.
//!
//! One task per limiter answers the store's roll call every [`ROLL_CALL_EVERY`] (at once
//! when its first subscriber comes): whether it listens, and how many other instances do.
//! While another listens, the publisher hands it this instance's decisions (at most
//! [`MAX_RELAYED_EVENTS_PER_SECOND`](super::events::MAX_RELAYED_EVENTS_PER_SECOND)) and
//! summaries, one message per batch, through a bounded outbox this task empties: a slow
//! store loses messages (counted, and told to the listeners as `lagged`), never slows a
//! decision. While this instance listens, what the others publish is handed to its
//! subscribers; its own messages, which the store hands back too, are dropped.
//!
//! A message is JSON:
//!
//! ```json
//! {"sender": "5f0c2a9e41d7b3c8", "missed": 0, "events": [{"type": "decision", "instance": "app-1:8000", ...}]}
//! ```
//!
//! `sender` tells one limiter from another (instance names may repeat), `missed` counts the
//! events this sender lost since its last message, `events` holds `decision` and `summary`
//! events as subscribers see them; other types are ignored.

use std::hash::BuildHasher;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::sync::mpsc;

use super::events::{DecisionEvent, Event, EventSummary, Hub, PublishedEvent};
use crate::backend::EventRelay;

/// How often each instance answers the roll call: how late it may start sending events to
/// a new listener.
const ROLL_CALL_EVERY: Duration = Duration::from_millis(500);

/// How long an answer that this instance listens holds: a listener that stops answering
/// (gone without a word) stops being sent events after it.
const LISTENING_LASTS: Duration = Duration::from_secs(3);

/// The longest a roll call may take before it counts as failed (nobody listens).
const ROLL_CALL_DEADLINE: Duration = Duration::from_secs(2);

/// Messages the outbox holds for the store.
const OUTBOX: usize = 16;

/// Starts relaying `hub`'s events through `relay` for as long as the hub lives.
pub(crate) fn spawn(hub: &Arc<Hub>, relay: Arc<dyn EventRelay>) {
    let (sender, outbox) = mpsc::channel(OUTBOX);
    let Some(subscribed) = hub.relay_through(sender).map(|o| Arc::clone(&o.subscribed)) else {
        return;
    };
    let fleet = Fleet {
        hub: Arc::downgrade(hub),
        relay,
        sender: sender_id(),
    };
    tokio::spawn(fleet.run(outbox, subscribed));
}

struct Fleet {
    hub: Weak<Hub>,
    relay: Arc<dyn EventRelay>,
    /// This limiter's identifier in messages and in the roll call.
    sender: String,
}

impl Fleet {
    async fn run(
        self,
        mut outbox: mpsc::Receiver<Vec<Arc<PublishedEvent>>>,
        subscribed: Arc<tokio::sync::Notify>,
    ) {
        let heard = self.relay.heard();
        let mut ticks = tokio::time::interval(ROLL_CALL_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = subscribed.notified() => {}
                () = heard.arrived() => {
                    let Some(hub) = self.hub.upgrade() else { return };
                    for message in heard.take() {
                        self.hear(&hub, &message);
                    }
                    let missed = heard.missed();
                    if missed > 0 {
                        hub.heard(std::iter::empty(), missed);
                    }
                    continue;
                }
                batch = outbox.recv() => {
                    let Some(batch) = batch else { return };
                    self.publish(batch).await;
                    continue;
                }
            }
            let Some(hub) = self.hub.upgrade() else {
                return;
            };
            let listening = hub.subscribers() > 0;
            drop(hub);
            let call = self
                .relay
                .roll_call(&self.sender, listening, LISTENING_LASTS);
            let others = match tokio::time::timeout(ROLL_CALL_DEADLINE, call).await {
                Ok(Ok(others)) => others,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "no roll call of the instances listening to events");
                    0
                }
                Err(_) => 0,
            };
            let Some(hub) = self.hub.upgrade() else {
                return;
            };
            hub.fleet_listens(others > 0);
        }
    }

    /// Sends `batch` to the other instances, with the count of events lost since the last.
    async fn publish(&self, batch: Vec<Arc<PublishedEvent>>) {
        let missed = match self.hub.upgrade() {
            Some(hub) => hub.take_unrelayed(),
            None => return,
        };
        let mut message = format!(
            r#"{{"sender":"{}","missed":{missed},"events":["#,
            self.sender
        );
        for (n, published) in batch.iter().enumerate() {
            if n > 0 {
                message.push(',');
            }
            message.push_str(published.json());
        }
        message.push_str("]}");
        if let Err(error) = self.relay.publish(message).await {
            tracing::debug!(%error, "events not sent to the instances listening");
            if let Some(hub) = self.hub.upgrade() {
                hub.count_unrelayed(missed + batch.len() as u64);
            }
        }
    }

    /// Hands the events of another instance's `message` to the subscribers here.
    fn hear(&self, hub: &Hub, message: &str) {
        #[derive(Deserialize)]
        struct Message {
            sender: String,
            #[serde(default)]
            missed: u64,
            events: Vec<serde_json::Value>,
        }
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Relayed {
            Decision(DecisionEvent),
            Summary(EventSummary),
        }
        let message = match serde_json::from_str::<Message>(message) {
            Ok(message) if message.sender != self.sender => message,
            Ok(_) => return,
            Err(error) => {
                tracing::debug!(%error, "not a message of tollgate's events; ignored");
                return;
            }
        };
        let events = message.events.into_iter().filter_map(|event| {
            Some(match serde_json::from_value::<Relayed>(event).ok()? {
                Relayed::Decision(decision) => Event::Decision(decision),
                Relayed::Summary(summary) => Event::Summary(summary),
            })
        });
        hub.heard(events, message.missed);
    }
}

/// An identifier no other limiter has, in practice: 64 bits from the process, the time and
/// the standard library's random hashing keys.
fn sender_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let random = std::collections::hash_map::RandomState::new();
    format!("{:016x}", random.hash_one((std::process::id(), nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_differ() {
        assert_ne!(sender_id(), sender_id());
        assert_eq!(sender_id().len(), 16);
    }
}
