//! The fleet, live: on a store that carries events between the instances sharing it
//! ([`EventRelay`]), a limiter's subscribers see every instance's decisions and summaries.
//!
//! One task per limiter answers the store's roll call every [`ROLL_CALL_EVERY`] (at once
//! when its first subscriber comes, and a last time when the limiter is dropped): whether it listens, and how many other instances do.
//! While another listens, the publisher hands it this instance's decisions (at most
//! [`MAX_RELAYED_EVENTS_PER_SECOND`](super::events::MAX_RELAYED_EVENTS_PER_SECOND)) and
//! summaries, in messages of at most [`EVENTS_PER_MESSAGE`] events, through a bounded outbox
//! this task empties: a slow store loses messages (counted, and told to the listeners as
//! `lagged`), never slows a decision. While this instance listens, what the others publish is handed to its
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
use tokio::sync::{Notify, mpsc};

use super::Core;
use super::events::{DecisionEvent, Event, EventSummary, Hub, PublishedEvent};
use crate::backend::EventRelay;

/// How often each instance answers the roll call: how late it may start sending events to
/// a new listener.
const ROLL_CALL_EVERY: Duration = Duration::from_millis(250);

/// How long an answer that this instance listens holds: a listener that stops answering
/// (gone without a word) stops being sent events after it.
const LISTENING_LASTS: Duration = Duration::from_secs(3);

/// The longest a roll call or a message may take before it counts as failed.
const STORE_DEADLINE: Duration = Duration::from_secs(2);

/// Batches the outbox holds for the store.
const OUTBOX: usize = 16;

/// The most events in one message: a batch is sent in messages of at most this many, and a
/// listener reads no more of a message than this.
const EVENTS_PER_MESSAGE: usize = 256;

/// Starts relaying `core`'s events through `relay` for as long as the limiter lives.
pub(crate) fn spawn(core: &Arc<Core>, relay: Arc<dyn EventRelay>) {
    let (sender, outbox) = mpsc::channel(OUTBOX);
    let Some(subscribed) = core
        .events
        .relay_through(sender)
        .map(|o| Arc::clone(&o.subscribed))
    else {
        return;
    };
    let fleet = Fleet {
        core: Arc::downgrade(core),
        relay,
        sender: sender_id(),
    };
    tokio::spawn(fleet.run(outbox, subscribed));
}

struct Fleet {
    core: Weak<Core>,
    relay: Arc<dyn EventRelay>,
    /// This limiter's identifier in messages and in the roll call.
    sender: String,
}

impl Fleet {
    /// The limiter's events, while it lives.
    fn hub(&self) -> Option<Arc<Hub>> {
        self.core.upgrade().map(|core| Arc::clone(&core.events))
    }

    async fn run(
        self,
        mut outbox: mpsc::Receiver<Vec<Arc<PublishedEvent>>>,
        subscribed: Arc<Notify>,
    ) {
        let heard = self.relay.heard();
        let mut ticks = tokio::time::interval(ROLL_CALL_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listening = false;
        loop {
            tokio::select! {
                biased;
                _ = ticks.tick() => {}
                () = subscribed.notified() => {}
                () = heard.arrived() => {
                    let Some(hub) = self.hub() else { break };
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
                    let Some(batch) = batch else { break };
                    self.publish(batch).await;
                    continue;
                }
            }
            let Some(hub) = self.hub() else {
                break;
            };
            listening = hub.subscribers() > 0;
            drop(hub);
            let others = self.roll_call(listening).await;
            let Some(hub) = self.hub() else {
                break;
            };
            hub.fleet_listens(others > 0);
        }
        // Gone: no instance sends to this one any more.
        if listening {
            self.roll_call(false).await;
        }
    }

    /// Answers the roll call; returns how many other instances listen (none when the store
    /// does not answer).
    async fn roll_call(&self, listening: bool) -> u64 {
        let call = self
            .relay
            .roll_call(&self.sender, listening, LISTENING_LASTS);
        match tokio::time::timeout(STORE_DEADLINE, call).await {
            Ok(Ok(others)) => others,
            Ok(Err(error)) => {
                let store = self.relay.name();
                tracing::debug!(%error, "no roll call of the instances listening to events in {store}");
                0
            }
            Err(_) => 0,
        }
    }

    /// Sends `batch` to the other instances, in messages of at most
    /// [`EVENTS_PER_MESSAGE`], the first with the count of events lost since the last.
    async fn publish(&self, batch: Vec<Arc<PublishedEvent>>) {
        let Some(hub) = self.hub() else { return };
        let mut missed = hub.take_unrelayed();
        for events in batch.chunks(EVENTS_PER_MESSAGE) {
            let mut message = format!(
                r#"{{"sender":"{}","missed":{missed},"events":["#,
                self.sender
            );
            for (n, published) in events.iter().enumerate() {
                if n > 0 {
                    message.push(',');
                }
                message.push_str(published.json());
            }
            message.push_str("]}");
            let sent = tokio::time::timeout(STORE_DEADLINE, self.relay.publish(message)).await;
            let lost = match sent {
                Ok(Ok(())) => 0,
                Ok(Err(error)) => {
                    let store = self.relay.name();
                    tracing::debug!(%error, "events not sent to the instances listening through {store}");
                    missed + events.len() as u64
                }
                Err(_) => missed + events.len() as u64,
            };
            hub.count_unrelayed(lost);
            missed = 0;
        }
    }

    /// Hands the events of another instance's `message` to the subscribers here: at most
    /// [`EVENTS_PER_MESSAGE`] of them, decisions and summaries only.
    fn hear(&self, hub: &Hub, message: &str) {
        #[derive(Deserialize)]
        struct Message {
            sender: String,
            #[serde(default)]
            missed: u64,
            events: Vec<Relayed>,
        }
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Relayed {
            Decision(DecisionEvent),
            Summary(EventSummary),
            #[serde(other)]
            Other,
        }
        // This limiter's own, handed back by the store: known by how it starts.
        if message
            .strip_prefix(r#"{"sender":""#)
            .is_some_and(|rest| rest.starts_with(&self.sender))
        {
            return;
        }
        let message = match serde_json::from_str::<Message>(message) {
            Ok(message) if message.sender != self.sender => message,
            Ok(_) => return,
            Err(error) => {
                tracing::debug!(%error, "not a message of tollgate's events; ignored");
                return;
            }
        };
        let events = message
            .events
            .into_iter()
            .take(EVENTS_PER_MESSAGE)
            .filter_map(|event| match event {
                Relayed::Decision(decision) => Some(Event::Decision(decision)),
                Relayed::Summary(summary) => Some(Event::Summary(summary)),
                Relayed::Other => None,
            });
        hub.heard(events, message.missed.min(u64::from(u32::MAX)));
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
    use crate::backend::{Heard, StoreError, StoreFuture};

    /// A relay that carries nothing.
    #[derive(Default)]
    struct Nowhere(Arc<Heard>);

    impl EventRelay for Nowhere {
        fn name(&self) -> &'static str {
            "nowhere"
        }

        fn roll_call<'a>(
            &'a self,
            _: &'a str,
            _: bool,
            _: Duration,
        ) -> StoreFuture<'a, Result<u64, StoreError>> {
            Box::pin(async { Ok(0) })
        }

        fn publish(&self, _: String) -> StoreFuture<'_, Result<(), StoreError>> {
            Box::pin(async { Ok(()) })
        }

        fn heard(&self) -> Arc<Heard> {
            Arc::clone(&self.0)
        }
    }

    fn summary(instance: &str) -> String {
        format!(
            r#"{{"type":"summary","instance":"{instance}","rules":{{"default":{{"allowed":1,"denied":0}}}},"suppressed_denied":0,"at":1}}"#
        )
    }

    #[tokio::test]
    async fn a_listener_hears_others_within_bounds_and_never_itself() {
        let hub = Arc::new(Hub::new("here".into()));
        let mut events = hub.subscribe();
        let fleet = Fleet {
            core: Weak::new(),
            relay: Arc::new(Nowhere::default()),
            sender: "00000000000000aa".into(),
        };
        // Its own message, handed back; junk; a message of another type only.
        fleet.hear(
            &hub,
            &format!(
                r#"{{"sender":"00000000000000aa","events":[{}]}}"#,
                summary("here")
            ),
        );
        fleet.hear(&hub, "not JSON");
        fleet.hear(
            &hub,
            r#"{"sender":"b","events":[{"type":"rule_change","target":"rules"}]}"#,
        );
        assert!(events.try_next_published().is_none());
        // Another's, too long: the losses it reports, and its first 256 events.
        let many = vec![summary("there"); EVENTS_PER_MESSAGE + 10].join(",");
        fleet.hear(
            &hub,
            &format!(r#"{{"sender":"b","missed":2,"events":[{many}]}}"#),
        );
        assert_eq!(events.next().await, Some(Event::Lagged { missed: 2 }));
        for _ in 0..EVENTS_PER_MESSAGE {
            let Some(Event::Summary(summary)) = events.next().await else {
                panic!("a summary")
            };
            assert_eq!(&*summary.instance, "there");
        }
        assert!(events.try_next_published().is_none());
    }

    #[test]
    fn senders_differ() {
        assert_ne!(sender_id(), sender_id());
        assert_eq!(sender_id().len(), 16);
    }
}
