//! Live events over Server-Sent Events (`GET /events`, `GET /events/{client_id}`) and
//! WebSocket (`GET /ws/global`, `GET /ws/{client_id}`): the limiter's
//! [`Event`](tollgate::Event)s as JSON, one per message.
//!
//! A client's stream carries that client's decisions, the rule changes and the `lagged`
//! notices, but not the summaries (they count every client). A subscriber never slows
//! requests: the limiter drops what a slow one has not taken ([`Event::Lagged`] tells it how
//! much), and a subscriber that takes longer than [`SEND_TIMEOUT`] to accept a message, over
//! a WebSocket or Server-Sent Events, is unsubscribed and its stream ended.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};

use super::check::client_named;
use super::json::Unprocessable;
use tollgate::{Event, Events, PublishedEvent};

/// How long a subscriber may take to accept one message before it is dropped.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stream gathers events after the first before sending them together: under a
/// flood, each subscriber costs one wake and one write per batch rather than per event.
const BATCH_EVERY: Duration = Duration::from_millis(100);

/// Batches held ready for hyper to write to an SSE client.
const SSE_QUEUE: usize = 4;

/// Which events a stream carries.
#[derive(Clone)]
enum Watch {
    Global,
    /// One client's decisions (by its key, `id:<X-Client-ID>`), and no summaries.
    Client(String),
}

impl Watch {
    fn of(client_id: &str) -> Result<Self, Unprocessable> {
        client_named(["path", "client_id"], client_id)
            .map(|client| Self::Client(client.to_string()))
    }

    fn shows(&self, event: &Event) -> bool {
        match (self, event) {
            (Watch::Global, _) => true,
            (Watch::Client(client), Event::Decision(decision)) => decision.client == *client,
            (Watch::Client(_), Event::Summary(_)) => false,
            (Watch::Client(_), _) => true,
        }
    }

    /// The next event this stream shows (its JSON made once for every stream); `None` once
    /// the limiter is gone.
    async fn next(&self, events: &mut Events) -> Option<Arc<PublishedEvent>> {
        loop {
            let published = events.next_published().await?;
            if self.shows(published.event()) {
                return Some(published);
            }
        }
    }

    /// `first`, and what else this stream shows that comes within [`BATCH_EVERY`].
    async fn gather(
        &self,
        first: Arc<PublishedEvent>,
        events: &mut Events,
    ) -> Vec<Arc<PublishedEvent>> {
        tokio::time::sleep(BATCH_EVERY).await;
        let mut batch = vec![first];
        while let Some(published) = events.try_next_published() {
            if self.shows(published.event()) {
                batch.push(published);
            }
        }
        batch
    }
}

/// Every event, as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/events",
    responses(
        (status = 200, description = "Events, one JSON object per `data:` line: `decision`, `rule_change`, `summary` (each second) and `lagged`", content_type = "text/event-stream", body = String),
        (status = 401, description = "No admin token, or the wrong one"),
    ),
    security(("admin_token" = [])),
    tag = "events"
)]
pub(crate) async fn global_sse(State(state): State<Arc<super::State>>) -> Response {
    sse_of(state.limiter.subscribe(), Watch::Global)
}

/// One client's decisions, the rule changes and `lagged` notices, as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/events/{client_id}",
    params(("client_id" = String, Path, description = "The client's `X-Client-ID` (or the key checked with `/check/{key}`)")),
    responses(
        (status = 200, description = "Events, one JSON object per `data:` line: this client's `decision`s, `rule_change` and `lagged`", content_type = "text/event-stream", body = String),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 422, description = "Not an `X-Client-ID` (1 to 128 visible ASCII characters)"),
    ),
    security(("admin_token" = [])),
    tag = "events"
)]
pub(crate) async fn client_sse(
    State(state): State<Arc<super::State>>,
    Path(client_id): Path<String>,
) -> Response {
    match Watch::of(&client_id) {
        Ok(watch) => sse_of(state.limiter.subscribe(), watch),
        Err(invalid) => invalid.into_response(),
    }
}

/// The stream hyper polls only as fast as the client reads: a task takes the events for it
/// and gives up on a client that has taken none for [`SEND_TIMEOUT`], which ends the stream.
fn sse_of(events: Events, watch: Watch) -> Response {
    let (sender, receiver) = tokio::sync::mpsc::channel(SSE_QUEUE);
    tokio::spawn(feed(events, watch, sender));
    let batches = futures_util::stream::unfold(receiver, |mut receiver| async {
        let batch: Vec<Arc<PublishedEvent>> = receiver.recv().await?;
        Some((futures_util::stream::iter(batch), receiver))
    });
    let stream = batches
        .flatten()
        .map(|published| Ok(sse::Event::default().data(published.json())));
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<sse::Event, Infallible>> + Send>> =
        Box::pin(stream);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Feeds an SSE stream until its client leaves, or stops taking events for [`SEND_TIMEOUT`].
async fn feed(
    mut events: Events,
    watch: Watch,
    sender: tokio::sync::mpsc::Sender<Vec<Arc<PublishedEvent>>>,
) {
    loop {
        let first = tokio::select! {
            published = watch.next(&mut events) => match published {
                Some(published) => published,
                None => return,
            },
            () = sender.closed() => return,
        };
        let batch = watch.gather(first, &mut events).await;
        match tokio::time::timeout(SEND_TIMEOUT, sender.send(batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!("an SSE event subscriber stopped reading; closed");
                return;
            }
        }
    }
}

/// Every event, over a WebSocket.
#[utoipa::path(
    get,
    path = "/ws/global",
    responses(
        (status = 101, description = "A WebSocket of events, one JSON object per text message, as `/events`"),
        (status = 401, description = "No admin token, or the wrong one"),
    ),
    security(("admin_token" = [])),
    tag = "events"
)]
pub(crate) async fn global_ws(
    State(state): State<Arc<super::State>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    ws_of(upgrade, state.limiter.subscribe(), Watch::Global)
}

/// One client's events over a WebSocket, as `/events/{client_id}`.
#[utoipa::path(
    get,
    path = "/ws/{client_id}",
    params(("client_id" = String, Path, description = "The client's `X-Client-ID` (or the key checked with `/check/{key}`)")),
    responses(
        (status = 101, description = "A WebSocket of this client's events, one JSON object per text message, as `/events/{client_id}`"),
        (status = 401, description = "No admin token, or the wrong one"),
        (status = 422, description = "Not an `X-Client-ID` (1 to 128 visible ASCII characters)"),
    ),
    security(("admin_token" = [])),
    tag = "events"
)]
pub(crate) async fn client_ws(
    State(state): State<Arc<super::State>>,
    Path(client_id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    match Watch::of(&client_id) {
        Ok(watch) => ws_of(upgrade, state.limiter.subscribe(), watch),
        Err(invalid) => invalid.into_response(),
    }
}

fn ws_of(upgrade: WebSocketUpgrade, events: Events, watch: Watch) -> Response {
    upgrade.on_upgrade(move |socket| forward(socket, events, watch))
}

/// Sends events until the client leaves, or stops taking them for [`SEND_TIMEOUT`].
async fn forward(mut socket: WebSocket, mut events: Events, watch: Watch) {
    loop {
        let first = tokio::select! {
            published = watch.next(&mut events) => match published {
                Some(published) => published,
                None => return,
            },
            received = socket.recv() => match received {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                // Pings are answered by axum; anything else the client says is ignored.
                Some(Ok(_)) => continue,
            },
        };
        let batch = watch.gather(first, &mut events).await;
        let send = async {
            for published in batch {
                socket.send(Message::Text(published.json().into())).await?;
            }
            Ok::<_, axum::Error>(())
        };
        match tokio::time::timeout(SEND_TIMEOUT, send).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!("a WebSocket event subscriber stopped reading; closed");
                return;
            }
        }
    }
}
