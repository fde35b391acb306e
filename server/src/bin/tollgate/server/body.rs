//! The bodies around a served request: the request's, which must arrive by a deadline, and
//! the answer's, which keeps the request counted in flight until it is sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::activity::Busy;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that did not arrive by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within HTTP_BODY_TIMEOUT_MS")]
pub(crate) struct BodyTimeout;

pin_project! {
    /// A request body that fails with [`BodyTimeout`] once its deadline passes, and flags
    /// that it did, so the answer can be a 408.
    pub(crate) struct Timed<B> {
        #[pin]
        body: B,
        deadline: Option<(Instant, Arc<AtomicBool>)>,
        // Whether the body has been waited for once.
        waited: bool,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<B: Body> Timed<B> {
    /// `body`, due by `deadline`; returns the flag set if it is late. A body that is already
    /// whole (a GET's) gets no deadline.
    pub(crate) fn new(body: B, deadline: Instant) -> (Self, Option<Arc<AtomicBool>>) {
        let late = (!body.is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
        let timed = Self {
            body,
            deadline: late.clone().map(|late| (deadline, late)),
            waited: false,
            sleep: None,
        };
        (timed, late)
    }
}

impl<B> Body for Timed<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let Some((deadline, late)) = this.deadline else {
            return Poll::Pending;
        };
        // A body that has just not been handed over yet (hyper's HTTP/1 reads it after
        // calling the service) is looked at again first: setting a timer costs a trip to the
        // timer wheel per request, only worth it for a body that is really late.
        if !*this.waited {
            *this.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(*deadline)));
        ready!(sleep.as_mut().poll(cx));
        late.store(true, Relaxed);
        Poll::Ready(Some(Err(BodyTimeout.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project! {
    /// An answer's body: the service's, or the 408's; either way the request counts as in
    /// flight until it is dropped.
    #[project = AnswerProjection]
    pub(crate) enum Answer<B> {
        Served { #[pin] body: B, busy: Busy },
        Late { detail: Option<Bytes>, busy: Busy },
    }
}

impl<B> Body for Answer<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            AnswerProjection::Served { body, .. } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(Into::into))),
            AnswerProjection::Late { detail, .. } => {
                Poll::Ready(detail.take().map(|detail| Ok(Frame::data(detail))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Answer::Served { body, .. } => body.is_end_stream(),
            Answer::Late { detail, .. } => detail.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Answer::Served { body, .. } => body.size_hint(),
            Answer::Late { detail, .. } => {
                SizeHint::with_exact(detail.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
