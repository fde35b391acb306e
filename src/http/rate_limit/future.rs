//! [`ResponseFuture`]: answer now, wait for a remote decision, or forward to the inner service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::limiter::{Checking, Verdict};
use crate::render;

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit).
    ///
    /// Resolves to the layer's own response (429, 400, 500 or 503) or to the inner service's response
    /// with `X-RateLimit-*` headers added.
    ///
    /// # Example
    ///
    /// ```
    /// use axum::{body::Body, http::{Request, StatusCode}, routing::get, Router};
    /// use tower::{Service, ServiceExt};
    /// use tollgate::{Limiter, RateLimitLayer, ResponseFuture, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"capacity": 5, "refill_rate": 1}}"#)?;
    /// let layer = RateLimitLayer::new(Limiter::builder().rules(rules).build().await?);
    /// let mut service = tower::Layer::layer(&layer, Router::new().route("/", get(|| async { "ok" })));
    /// let request: Request<Body> = Request::get("/").body(Body::empty())?;
    /// let ready = ServiceExt::<Request<Body>>::ready(&mut service).await?;
    /// let future: ResponseFuture<Router, Body> = ready.call(request);
    /// assert_eq!(future.await?.status(), StatusCode::OK);
    /// # Ok(())
    /// # }
    /// ```
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        // The layer answers by itself.
        Respond { response: Option<S::Response> },
        // Redis is deciding; the ready inner service and the request wait. Boxed: a request
        // is large, and the futures that never wait should not carry its room.
        Wait { waiting: Box<Waiting<S, ReqBody>> },
        // The inner service is answering; headers are added to its response.
        Forward { #[pin] future: S::Future, verdict: Option<Verdict> },
    }
}

/// What waits with a request while Redis decides it.
struct Waiting<S, ReqBody> {
    checking: Checking,
    inner: Option<S>,
    request: Option<Request<ReqBody>>,
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn respond(response: S::Response) -> Self {
        Self {
            state: State::Respond {
                response: Some(response),
            },
        }
    }

    pub(crate) fn forward(future: S::Future, verdict: Verdict) -> Self {
        Self {
            state: State::Forward {
                future,
                verdict: Some(verdict),
            },
        }
    }

    pub(crate) fn wait(checking: Checking, inner: S, request: Request<ReqBody>) -> Self {
        Self {
            state: State::Wait {
                waiting: Box::new(Waiting {
                    checking,
                    inner: Some(inner),
                    request: Some(request),
                }),
            },
        }
    }
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Respond { .. } => "respond",
            State::Wait { .. } => "wait",
            State::Forward { .. } => "forward",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Respond { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response));
                }
                StateProj::Wait { waiting } => {
                    let Waiting {
                        checking,
                        inner,
                        request,
                    } = &mut **waiting;
                    let checked = ready!(Pin::new(checking).poll(cx));
                    let (Some(mut inner), Some(request)) = (inner.take(), request.take()) else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let next = match checked {
                        Ok(verdict) => match render::refusal(&verdict) {
                            Some(refusal) => State::Respond {
                                response: Some(refusal),
                            },
                            None => State::Forward {
                                future: inner.call(request),
                                verdict: Some(verdict),
                            },
                        },
                        Err(error) => State::Respond {
                            response: Some(render::check_error(&error)),
                        },
                    };
                    state.set(next);
                }
                StateProj::Forward { future, verdict } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(verdict) = verdict.take() {
                        render::write_headers(response.headers_mut(), &verdict);
                    }
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}
