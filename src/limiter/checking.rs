//! [`Checking`]: a decision on its way.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::error::CheckError;
use super::verdict::Verdict;
use super::{Applied, Core, Counting};
use crate::backend::PendingOutcome;
use crate::key::ClientKey;

/// The future of [`Limiter::check`](crate::Limiter::check) and
/// [`Limiter::peek`](crate::Limiter::peek). In memory, and from Redis's shortcuts (leases,
/// remembered refusals, an open circuit), the answer is there at once and nothing is
/// allocated; otherwise it waits for Redis.
///
/// # Example
///
/// ```
/// use tollgate::{Checking, ClientKey, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = Limiter::builder()
///     .rules(Rules::from_json(r#"{"default": {"limit": "3/minute"}}"#)?)
///     .build()
///     .await?;
/// let dave = ClientKey::id("dave");
/// let checking: Checking = limiter.check(Query::new(&dave));
/// assert_eq!(checking.await?.decision().unwrap().remaining, 2);
/// # Ok(())
/// # }
/// ```
#[must_use = "a check decides nothing until it is awaited"]
pub struct Checking {
    state: State,
}

enum State {
    Ready(Option<Result<Verdict, CheckError>>),
    // Inline: the outcome on its way is boxed already, and the HTTP front boxes what waits
    // with a request.
    Waiting(Waiting),
}

/// What a decision waiting for Redis needs to become a verdict.
pub(super) struct Waiting {
    pub(super) pending: PendingOutcome,
    pub(super) core: Arc<Core>,
    pub(super) rule: Arc<str>,
    pub(super) applied: Applied,
    pub(super) counted: bool,
    pub(super) shadow: bool,
    /// The client, kept to log a shadow rule's would-be refusal or to count usage.
    pub(super) client: Option<ClientKey>,
}

impl Checking {
    #[inline]
    pub(super) fn ready(result: Result<Verdict, CheckError>) -> Self {
        Self {
            state: State::Ready(Some(result)),
        }
    }

    pub(super) fn waiting(waiting: Waiting) -> Self {
        Self {
            state: State::Waiting(waiting),
        }
    }

    /// The answer, if it is there already: the HTTP front answers at once then.
    #[inline]
    pub(crate) fn now(&mut self) -> Option<Result<Verdict, CheckError>> {
        match &mut self.state {
            State::Ready(result) => result.take(),
            State::Waiting(_) => None,
        }
    }
}

impl fmt::Debug for Checking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Ready(_) => "ready",
            State::Waiting(_) => "waiting for Redis",
        };
        f.debug_struct("Checking").field("state", &state).finish()
    }
}

impl Future for Checking {
    type Output = Result<Verdict, CheckError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            State::Ready(result) => {
                Poll::Ready(result.take().expect("Checking polled after it was ready"))
            }
            State::Waiting(waiting) => {
                let outcome = std::task::ready!(waiting.pending.as_mut().poll(cx));
                let counting = Counting {
                    counted: waiting.counted,
                    shadow: waiting.shadow,
                    client: waiting.client.as_ref().map(ClientKey::as_ref),
                };
                Poll::Ready(Ok(waiting.core.verdict(
                    outcome,
                    Arc::clone(&waiting.rule),
                    waiting.applied.clone(),
                    counting,
                )))
            }
        }
    }
}
