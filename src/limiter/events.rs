//! Live events: every counted decision, every change of the rules in force, and a summary
//! each second, for whoever [subscribes](crate::Limiter::subscribe).
//!
//! Nothing here slows a request down when nobody listens: the decision path reads one
//! atomic count of subscribers and builds no event while it is zero. With subscribers, a
//! decision puts its event on one bounded queue and goes on: it costs the same with one
//! subscriber or five hundred. A publisher task takes the queue in batches and hands each
//! event to one bounded broadcast channel, paying there for waking the subscribers. A
//! subscriber that falls behind loses the oldest events and is told how many
//! ([`Event::Lagged`]), so memory never grows with a stuck subscriber and no request ever
//! waits for one. Past [`MAX_DENIED_EVENTS_PER_SECOND`], refusals are only counted, in the
//! next [`EventSummary`], so a flood of 429s does not become a flood of events.
//!
//! On a store that carries events between instances ([`Store::events`](crate::backend::Store::events),
//! Redis does), the subscribers see every instance's decisions and summaries, each event
//! naming the instance that made it (see `fleet`).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::decision::{DecidedBy, Decision as BandDecision};
use crate::key::KeyRef;

/// Events held for the slowest subscriber before it starts missing them.
pub const EVENT_BUFFER: usize = 1024;

/// Refusals sent one by one each second, across all subscribers; those past it are counted
/// in the next summary's `suppressed_denied`.
pub const MAX_DENIED_EVENTS_PER_SECOND: u32 = 100;

/// Decisions each instance sends to other instances' subscribers each second; those past it
/// are counted in its summaries only.
pub const MAX_RELAYED_EVENTS_PER_SECOND: u32 = 1000;

/// How often an [`EventSummary`] is sent.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// Events the decision path may queue for the publisher; past it they are dropped and
/// counted, and subscribers told so as [`Event::Lagged`].
const QUEUE: usize = 2 * EVENT_BUFFER;

/// One live event, serialized as JSON with its kind in `"type"` (see "Live events" in the
/// guide, docs/guide/service.md, for each).
///
/// ```
/// use tollgate::{ClientKey, Event, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "1/minute"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let mut events = limiter.subscribe();
/// let ann = ClientKey::id("ann");
/// limiter.check(Query::new(&ann)).await?;
/// let Some(Event::Decision(decision)) = events.next().await else { panic!("a decision") };
/// assert_eq!((decision.client.as_str(), decision.allowed, decision.remaining), ("id:ann", true, Some(0)));
/// let json = serde_json::to_value(Event::Decision(decision))?;
/// assert_eq!(json["type"], "decision");
/// assert_eq!(json["rule"], "default");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A counted decision (a check, not a peek).
    Decision(DecisionEvent),
    /// The rules in force changed.
    RuleChange(RuleChange),
    /// What was decided in the last second, by rule.
    Summary(EventSummary),
    /// This subscriber fell behind and missed `missed` events.
    Lagged {
        /// Events this subscriber will never see.
        missed: u64,
    },
}

/// A counted decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DecisionEvent {
    /// The instance that decided (see [`LimiterBuilder::instance`](crate::LimiterBuilder::instance)).
    pub instance: Arc<str>,
    /// The client key: `id:<X-Client-ID>`, `ip:<address>`, `ip:<network>/<prefix>` or
    /// `unknown`.
    pub client: String,
    /// The identity of the rule that decided.
    pub rule: String,
    /// Whether the request went on (a shadow rule's would-be refusal did).
    pub allowed: bool,
    /// What decided: `unlimited`, `memory`, `redis`, `lease`, `remembered_refusal`,
    /// `local_fallback`, `fail_open` or `fail_closed` (`other` from an instance that
    /// names an outcome this one does not know).
    // Spelt with its path so that serde does not borrow it from the input: it is one of
    // the static names, whatever the input.
    #[serde(deserialize_with = "outcome_named")]
    pub outcome: &'static std::primitive::str,
    /// Requests left in the band closest to running out; `None` when no band decided.
    pub remaining: Option<u32>,
    /// That band's capacity.
    pub limit: Option<u32>,
    /// For a refusal: how long until a request would be allowed, in milliseconds.
    pub retry_after_ms: Option<u64>,
    /// When it was decided, in milliseconds since the Unix epoch.
    pub at: u64,
}

/// The rules in force changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RuleChange {
    /// The instance whose rules changed.
    pub instance: Arc<str>,
    /// What changed: a runtime entry's target (`client:<key>`, `rule:<identity>`), or
    /// `rules` when the base rules were replaced.
    pub target: String,
    /// Where the change came from: `file` (a reload of the rules file), `set_rules`,
    /// `runtime` (an entry set or removed here) or `store` (entries changed by another
    /// instance, read from the shared store).
    pub origin: &'static str,
    /// `set`, `removed` or `replaced`.
    pub change: &'static str,
    /// When, in milliseconds since the Unix epoch.
    pub at: u64,
}

/// What was decided in the last second, by one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventSummary {
    /// The instance that decided.
    pub instance: Arc<str>,
    /// Counted decisions by rule identity (rules with none are left out).
    pub rules: BTreeMap<String, RuleCounts>,
    /// Refusals not sent one by one (past [`MAX_DENIED_EVENTS_PER_SECOND`]).
    pub suppressed_denied: u64,
    /// The end of the second, in milliseconds since the Unix epoch.
    pub at: u64,
}

/// Decisions under one rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounts {
    /// Requests let through.
    pub allowed: u64,
    /// Requests refused.
    pub denied: u64,
}

/// An event as published to every subscriber, from [`Events::next_published`]: shared, and
/// serialized at most once however many subscribers send it as JSON (the service's event
/// streams do, to hundreds of subscribers).
///
/// # Example
///
/// ```
/// use tollgate::{ClientKey, Event, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "5/minute"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let mut events = limiter.subscribe();
/// limiter.check(Query::new(&ClientKey::id("alice"))).await?;
/// let published = loop {
///     let published = events.next_published().await.expect("the limiter is alive");
///     if matches!(published.event(), Event::Decision(_)) {
///         break published;
///     }
/// };
/// assert!(published.json().contains(r#""client":"id:alice""#));
/// # Ok(())
/// # }
/// ```
pub struct PublishedEvent {
    event: Event,
    json: OnceLock<String>,
}

impl PublishedEvent {
    fn new(event: Event) -> Arc<Self> {
        Arc::new(Self {
            event,
            json: OnceLock::new(),
        })
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The event as JSON, made on the first call.
    pub fn json(&self) -> &str {
        self.json
            .get_or_init(|| serde_json::to_string(&self.event).expect("events serialize"))
    }
}

/// A subscription to a limiter's [`Event`]s, from
/// [`Limiter::subscribe`](crate::Limiter::subscribe). Dropping it unsubscribes.
pub struct Events {
    receiver: broadcast::Receiver<Arc<PublishedEvent>>,
    _counted: Subscribed,
}

impl Events {
    /// The next event, waiting for it; an [`Event::Lagged`] when this subscriber fell
    /// behind (then the events after those missed). `None` once the limiter is gone.
    pub async fn next(&mut self) -> Option<Event> {
        let published = self.next_published().await?;
        Some(published.event.clone())
    }

    /// [`next`](Self::next), shared with the other subscribers: what a front that sends
    /// events to many subscribers serializes once.
    pub async fn next_published(&mut self) -> Option<Arc<PublishedEvent>> {
        // Subscribed outside a runtime: the publisher starts on the first wait.
        self._counted.0.publish_events();
        match self.receiver.recv().await {
            Ok(published) => Some(published),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Some(PublishedEvent::new(Event::Lagged { missed }))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// An event that is already waiting, shared, without waiting for one: what a front
    /// that sends events in batches gathers after [`next_published`](Self::next_published).
    pub fn try_next_published(&mut self) -> Option<Arc<PublishedEvent>> {
        match self.receiver.try_recv() {
            Ok(published) => Some(published),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                Some(PublishedEvent::new(Event::Lagged { missed }))
            }
            Err(_) => None,
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("queued", &self.receiver.len())
            .finish()
    }
}

/// Counts a subscriber for as long as it lives.
struct Subscribed(Arc<Hub>);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The bit of [`Hub::watchers`] set while another instance listens.
const FLEET: usize = 1 << (usize::BITS - 1);

/// Where a limiter's events start: shared by its clones and its publisher task.
pub(crate) struct Hub {
    /// The name its events carry.
    instance: Arc<str>,
    sender: broadcast::Sender<Arc<PublishedEvent>>,
    /// What the decision path hands the publisher.
    queue: mpsc::Sender<Event>,
    /// The queue's other end, kept here while no publisher runs.
    parked: Mutex<Option<mpsc::Receiver<Event>>>,
    /// Events the full queue dropped, not yet told to subscribers.
    dropped: AtomicU64,
    /// The subscribers here, and [`FLEET`] while another instance listens. Read on every
    /// decision: nothing else is touched while it is zero.
    watchers: AtomicUsize,
    publishing: AtomicBool,
    denied_sent: AtomicU32,
    second: Mutex<Second>,
    /// Where events for other instances go, when the store carries them (see `fleet`).
    outbox: OnceLock<Outbox>,
}

/// The events of one batch for other instances, and the fleet task's wake-up.
pub(crate) struct Outbox {
    sender: mpsc::Sender<Vec<Arc<PublishedEvent>>>,
    /// Told when the first subscriber comes: the task says so at once.
    pub(crate) subscribed: Arc<tokio::sync::Notify>,
    /// Decisions sent to other instances this second.
    relayed: AtomicU32,
    /// Events lost on the way to other instances, not yet told to them.
    dropped: AtomicU64,
}

/// What the current second's summary will say.
#[derive(Default)]
struct Second {
    rules: HashMap<Arc<str>, RuleCounts>,
    suppressed_denied: u64,
}

impl Hub {
    /// The hub of the instance named `instance`.
    pub(crate) fn new(instance: Arc<str>) -> Self {
        let (queue, parked) = mpsc::channel(QUEUE);
        Self {
            instance,
            sender: broadcast::Sender::new(EVENT_BUFFER),
            queue,
            parked: Mutex::new(Some(parked)),
            dropped: AtomicU64::new(0),
            watchers: AtomicUsize::new(0),
            publishing: AtomicBool::new(false),
            denied_sent: AtomicU32::new(0),
            second: Mutex::new(Second::default()),
            outbox: OnceLock::new(),
        }
    }

    /// The name its events carry.
    pub(crate) fn instance(&self) -> &Arc<str> {
        &self.instance
    }

    /// Whether anyone listens, here or on another instance: the one check the decision
    /// path makes.
    #[inline]
    pub(crate) fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) != 0
    }

    /// Current subscribers here.
    pub(crate) fn subscribers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed) & !FLEET
    }

    /// Whether another instance listens.
    fn relaying(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) & FLEET != 0
    }

    /// Sends events for other instances to `outbox` from now on (once: the fleet task's).
    pub(crate) fn relay_through(
        &self,
        sender: mpsc::Sender<Vec<Arc<PublishedEvent>>>,
    ) -> Option<&Outbox> {
        let outbox = Outbox {
            sender,
            subscribed: Arc::default(),
            relayed: AtomicU32::new(0),
            dropped: AtomicU64::new(0),
        };
        self.outbox.set(outbox).ok()?;
        self.outbox.get()
    }

    /// Whether another instance listens, as the roll call found: events are made and sent
    /// to it while one does.
    pub(crate) fn fleet_listens(self: &Arc<Self>, listens: bool) {
        if listens {
            self.watchers.fetch_or(FLEET, Ordering::Relaxed);
            self.publish_events();
        } else {
            self.watchers.fetch_and(!FLEET, Ordering::Relaxed);
        }
    }

    /// A new subscription; starts the publisher if it is not running (and a Tokio runtime
    /// is there to run it).
    pub(crate) fn subscribe(self: &Arc<Self>) -> Events {
        let receiver = self.sender.subscribe();
        let before = self.watchers.fetch_add(1, Ordering::Relaxed);
        let counted = Subscribed(Arc::clone(self));
        self.publish_events();
        if before & !FLEET == 0
            && let Some(outbox) = self.outbox.get()
        {
            outbox.subscribed.notify_one();
        }
        Events {
            receiver,
            _counted: counted,
        }
    }

    /// Starts the publisher unless it runs, in the current runtime if there is one.
    fn publish_events(self: &Arc<Self>) {
        if self.publishing.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.publishing.swap(true, Ordering::AcqRel) {
            return;
        }
        let parked = self
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut queue) = parked {
            // What was queued before these subscribers came is not theirs, nor what was
            // sent then counted against this second's caps.
            while queue.try_recv().is_ok() {}
            self.dropped.store(0, Ordering::Relaxed);
            self.denied_sent.store(0, Ordering::Relaxed);
            if let Some(outbox) = self.outbox.get() {
                outbox.relayed.store(0, Ordering::Relaxed);
            }
            runtime.spawn(publish(Arc::downgrade(self), queue));
        }
    }

    /// Queues `event` for the publisher, or counts it dropped: never waits.
    fn queue(&self, event: Event) {
        if self.queue.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hands queued events to the subscribers, and those for other instances to the
    /// outbox while one listens.
    fn broadcast(&self, events: impl Iterator<Item = Event>) {
        let missed = self.dropped.swap(0, Ordering::Relaxed);
        if missed > 0 {
            let _ = self
                .sender
                .send(PublishedEvent::new(Event::Lagged { missed }));
        }
        let mut relayed = Vec::new();
        for event in events {
            let published = PublishedEvent::new(event);
            if self.relays(published.event()) {
                relayed.push(Arc::clone(&published));
            }
            let _ = self.sender.send(published);
        }
        self.relay(relayed);
    }

    /// Whether `event` goes to other instances: while one listens, each summary and, up to
    /// [`MAX_RELAYED_EVENTS_PER_SECOND`], each decision; not the rule changes (another
    /// instance hears of runtime entries from the store, and reports its own).
    fn relays(&self, event: &Event) -> bool {
        let Some(outbox) = self.outbox.get().filter(|_| self.relaying()) else {
            return false;
        };
        match event {
            Event::Decision(_) => {
                outbox.relayed.fetch_add(1, Ordering::Relaxed) < MAX_RELAYED_EVENTS_PER_SECOND
            }
            Event::Summary(_) => true,
            Event::RuleChange(_) | Event::Lagged { .. } => false,
        }
    }

    /// Hands `events` to the outbox, or counts them dropped: never waits.
    fn relay(&self, events: Vec<Arc<PublishedEvent>>) {
        let Some(outbox) = self.outbox.get().filter(|_| !events.is_empty()) else {
            return;
        };
        let count = events.len() as u64;
        if outbox.sender.try_send(events).is_err() {
            self.count_unrelayed(count);
        }
    }

    /// Counts `events` lost on the way to other instances.
    pub(crate) fn count_unrelayed(&self, events: u64) {
        if let Some(outbox) = self.outbox.get() {
            outbox.dropped.fetch_add(events, Ordering::Relaxed);
        }
    }

    /// The events lost on the way to other instances since the last call.
    pub(crate) fn take_unrelayed(&self) -> u64 {
        self.outbox
            .get()
            .map_or(0, |outbox| outbox.dropped.swap(0, Ordering::Relaxed))
    }

    /// Events other instances sent, for the subscribers here; `missed`: how many were lost
    /// on the way.
    pub(crate) fn heard(&self, events: impl Iterator<Item = Event>, missed: u64) {
        if missed > 0 {
            let _ = self
                .sender
                .send(PublishedEvent::new(Event::Lagged { missed }));
        }
        for event in events {
            let _ = self.sender.send(PublishedEvent::new(event));
        }
    }

    /// A counted decision, when someone listens (the caller checked [`watched`](Self::watched)).
    #[cold]
    pub(crate) fn decided(
        &self,
        client: Option<KeyRef<'_>>,
        rule: &Arc<str>,
        allowed: bool,
        decided_by: DecidedBy,
        decision: Option<&BandDecision>,
        unavailable_for: Option<Duration>,
    ) {
        let suppressed = !allowed
            && self.denied_sent.fetch_add(1, Ordering::Relaxed) >= MAX_DENIED_EVENTS_PER_SECOND;
        {
            let mut second = self.second.lock().unwrap_or_else(PoisonError::into_inner);
            let counts = match second.rules.get_mut(rule) {
                Some(counts) => counts,
                None => second.rules.entry(Arc::clone(rule)).or_default(),
            };
            if allowed {
                counts.allowed += 1;
            } else {
                counts.denied += 1;
            }
            if suppressed {
                second.suppressed_denied += 1;
            }
        }
        if suppressed {
            return;
        }
        let retry_after = match decision {
            Some(decision) if !allowed => Some(decision.retry_after),
            _ => unavailable_for.filter(|_| !allowed),
        };
        self.queue(Event::Decision(DecisionEvent {
            instance: Arc::clone(&self.instance),
            client: client.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
            rule: rule.to_string(),
            allowed,
            outcome: decided_by.as_str(),
            remaining: decision.map(|d| d.remaining),
            limit: decision.map(|d| d.limit),
            retry_after_ms: retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            at: now_ms(),
        }));
    }

    /// The rules in force changed.
    pub(crate) fn rules_changed(&self, target: String, origin: &'static str, change: &'static str) {
        if self.watched() {
            self.queue(Event::RuleChange(RuleChange {
                instance: Arc::clone(&self.instance),
                target,
                origin,
                change,
                at: now_ms(),
            }));
        }
    }

    /// Sends the second's summary and starts the next second.
    fn summarize_second(&self) {
        self.denied_sent.store(0, Ordering::Relaxed);
        if let Some(outbox) = self.outbox.get() {
            outbox.relayed.store(0, Ordering::Relaxed);
        }
        let second =
            std::mem::take(&mut *self.second.lock().unwrap_or_else(PoisonError::into_inner));
        let summary = Event::Summary(EventSummary {
            instance: Arc::clone(&self.instance),
            rules: second
                .rules
                .into_iter()
                .map(|(rule, counts)| (rule.to_string(), counts))
                .collect(),
            suppressed_denied: second.suppressed_denied,
            at: now_ms(),
        });
        self.broadcast(std::iter::once(summary));
    }
}

/// Publishes the queued events, and a summary each second, while anyone listens and the
/// limiter lives; then parks the queue again.
async fn publish(hub: Weak<Hub>, mut queue: mpsc::Receiver<Event>) {
    let mut ticks = tokio::time::interval(SUMMARY_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut batch = Vec::with_capacity(QUEUE);
    loop {
        tokio::select! {
            biased;
            received = queue.recv_many(&mut batch, QUEUE) => {
                let Some(hub) = hub.upgrade().filter(|_| received > 0) else { return };
                hub.broadcast(batch.drain(..));
            }
            _ = ticks.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                if hub.watched() {
                    hub.summarize_second();
                    continue;
                }
                *hub.parked.lock().unwrap_or_else(PoisonError::into_inner) = Some(queue);
                hub.publishing.store(false, Ordering::Release);
                // A subscriber that came as this task was leaving found it running: stay
                // for it, taking the queue back.
                if !hub.watched() || hub.publishing.swap(true, Ordering::AcqRel) {
                    return;
                }
                let parked = hub.parked.lock().unwrap_or_else(PoisonError::into_inner).take();
                match parked {
                    Some(parked) => queue = parked,
                    None => return,
                }
            }
        }
    }
}

/// An outcome's name as another instance sent it: one of [`DecidedBy`]'s, or `other`.
fn outcome_named<'de, D: Deserializer<'de>>(deserializer: D) -> Result<&'static str, D::Error> {
    use serde::de::{IntoDeserializer, value};
    let named = String::deserialize(deserializer)?;
    let name: value::StrDeserializer<'_, value::Error> = named.as_str().into_deserializer();
    let known = DecidedBy::deserialize(name);
    Ok(known.map_or("other", |by: DecidedBy| by.as_str()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> BandDecision {
        BandDecision::new(false, 1, 0, SystemTime::now(), Duration::from_millis(1500))
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_past_the_rate_are_counted_in_the_summary() {
        let hub = Arc::new(Hub::new("here".into()));
        let mut events = hub.subscribe();
        let rule: Arc<str> = "default".into();
        let denied = MAX_DENIED_EVENTS_PER_SECOND as usize + 5;
        for _ in 0..denied {
            let decision = refused();
            hub.decided(None, &rule, false, DecidedBy::Memory, Some(&decision), None);
        }
        for _ in 0..MAX_DENIED_EVENTS_PER_SECOND {
            let Some(Event::Decision(event)) = events.next().await else {
                panic!("a decision")
            };
            assert_eq!(event.retry_after_ms, Some(1500));
        }
        let Some(Event::Summary(summary)) = events.next().await else {
            panic!("the summary next")
        };
        assert_eq!(summary.suppressed_denied, 5);
        assert_eq!(summary.rules["default"].denied, denied as u64);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_what_it_missed() {
        let hub = Arc::new(Hub::new("here".into()));
        let mut events = hub.subscribe();
        let rule: Arc<str> = "default".into();
        for _ in 0..EVENT_BUFFER + 10 {
            hub.decided(None, &rule, true, DecidedBy::Unlimited, None, None);
        }
        assert_eq!(events.next().await, Some(Event::Lagged { missed: 10 }));
        assert!(matches!(events.next().await, Some(Event::Decision(_))));
        assert_eq!(hub.subscribers(), 1);
        drop(events);
        assert!(!hub.watched());
    }
}
