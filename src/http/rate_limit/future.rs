//! [`ResponseFuture`]: answer now, wait for a remote decision, or forward to the inner service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::TRAILER;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::ResponseBody;
use super::settle::{ReservedCost, Settling, log_failure, settle_from};
use crate::limiter::{Checking, Verdict};
use crate::render;

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit).
    ///
    /// Resolves to the layer's own response (429, 400, 500 or 503) or to the inner service's response
    /// with `X-RateLimit-*` headers added; a response whose header settles the request's
    /// reservation waits for the settlement, and its headers tell what is left after it.
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
        Respond { response: Option<Response<Bytes>> },
        // Redis is deciding; the ready inner service and the request wait. Boxed: a request
        // is large, and the futures that never wait should not carry its room.
        Wait { waiting: Box<Waiting<S, ReqBody>> },
        // The inner service is answering; headers are added to its response.
        Forward {
            #[pin]
            future: S::Future,
            verdict: Option<Verdict>,
            // The reservation, when the request's rule settles from the response.
            cost: Option<ReservedCost>,
        },
        // The response's header is settling the reservation. Boxed, as `Wait`.
        Settle { settle: Box<Settle<S::Response>> },
    }
}

/// What waits with a request while Redis decides it.
struct Waiting<S, ReqBody> {
    checking: Checking,
    inner: Option<S>,
    request: Option<Request<ReqBody>>,
}

/// A response waiting for the settlement its header asked for.
struct Settle<R> {
    settling: Settling,
    response: Option<R>,
    verdict: Verdict,
    name: HeaderName,
    cost: Option<ReservedCost>,
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn respond(response: Response<Bytes>) -> Self {
        Self {
            state: State::Respond {
                response: Some(response),
            },
        }
    }

    /// The layer's answer, or the request forwarded to `inner`, with the reservation
    /// (if one is held) in its extensions.
    pub(crate) fn decided(verdict: Verdict, inner: &mut S, request: Request<ReqBody>) -> Self {
        Self {
            state: State::decided(verdict, inner, request),
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

impl<S, ReqBody> State<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn decided(mut verdict: Verdict, inner: &mut S, mut request: Request<ReqBody>) -> Self {
        if let Some(refusal) = render::refusal(&verdict) {
            return State::Respond {
                response: Some(refusal),
            };
        }
        // A rule that settles always hands the app its handle: with nothing held (a failure
        // policy's answer, a shadow rule's would-be refusal), settling it says so.
        let cost = match verdict.take_reservation() {
            Some(reservation) => Some(ReservedCost::new(reservation)),
            None if settle_header_of(&verdict).is_some() => Some(ReservedCost::unheld()),
            None => None,
        };
        if let Some(cost) = &cost {
            request.extensions_mut().insert(cost.clone());
        }
        State::Forward {
            future: inner.call(request),
            verdict: Some(verdict),
            cost,
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
            State::Settle { .. } => "settle",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        const DONE: &str = "ResponseFuture polled after completion";
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Respond { response } => {
                    let response = response.take().expect(DONE);
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
                StateProj::Wait { waiting } => {
                    let Waiting {
                        checking,
                        inner,
                        request,
                    } = &mut **waiting;
                    let checked = ready!(Pin::new(checking).poll(cx));
                    let (Some(mut inner), Some(request)) = (inner.take(), request.take()) else {
                        panic!("{DONE}");
                    };
                    let next = match checked {
                        Ok(verdict) => State::decided(verdict, &mut inner, request),
                        Err(error) => State::Respond {
                            response: Some(render::check_error(&error)),
                        },
                    };
                    state.set(next);
                }
                StateProj::Forward {
                    future,
                    verdict,
                    cost,
                } => {
                    let mut response = ready!(future.poll(cx))?;
                    let verdict = verdict.take().expect(DONE);
                    let cost = cost.take();
                    let Some(name) = settle_header(&verdict) else {
                        return Poll::Ready(Ok(finish(response, &verdict, None, None)));
                    };
                    match settle_from(response.headers_mut(), &name, cost.as_ref()) {
                        None => {
                            return Poll::Ready(Ok(finish(response, &verdict, Some(name), cost)));
                        }
                        Some(settling) => state.set(State::Settle {
                            settle: Box::new(Settle {
                                settling,
                                response: Some(response),
                                verdict,
                                name,
                                cost,
                            }),
                        }),
                    }
                }
                StateProj::Settle { settle } => {
                    let settled = ready!(settle.settling.as_mut().poll(cx));
                    log_failure(&settled);
                    let Settle {
                        response,
                        verdict,
                        name,
                        cost,
                        ..
                    } = &mut **settle;
                    if let Ok(settled) = settled {
                        // The headers tell what is left once the real cost is counted.
                        verdict.decision = Some(settled.decision());
                    }
                    let response = response.take().expect(DONE);
                    let name = Some(name.clone());
                    return Poll::Ready(Ok(finish(response, verdict, name, cost.take())));
                }
            }
        }
    }
}

/// The field the verdict's rule settles from, if it names one.
fn settle_header_of(verdict: &Verdict) -> Option<&str> {
    verdict.limit()?.settle_header()
}

/// [`settle_header_of`], as a header name.
fn settle_header(verdict: &Verdict) -> Option<HeaderName> {
    HeaderName::from_bytes(settle_header_of(verdict)?.as_bytes()).ok()
}

/// The inner service's response with the verdict's rate limit headers, its body watched for
/// the trailer `name` that settles `cost`.
fn finish<B>(
    mut response: Response<B>,
    verdict: &Verdict,
    name: Option<HeaderName>,
    cost: Option<ReservedCost>,
) -> Response<ResponseBody<B>> {
    render::write_headers(response.headers_mut(), verdict);
    if let Some(name) = &name {
        undeclare(response.headers_mut(), name);
    }
    response.map(|body| ResponseBody::inner(body, name, cost))
}

/// Takes `name` out of the `Trailer` field, which declares the trailers to come: the settle
/// trailer does not leave.
fn undeclare(headers: &mut HeaderMap, name: &HeaderName) {
    let declared = headers.get_all(TRAILER);
    let names = declared.iter().filter_map(|v| v.to_str().ok());
    let fields: Vec<&str> = names.flat_map(|v| v.split(',')).map(str::trim).collect();
    if !fields
        .iter()
        .any(|field| field.eq_ignore_ascii_case(name.as_str()))
    {
        return;
    }
    let others: Vec<&str> = fields
        .into_iter()
        .filter(|field| !field.is_empty() && !field.eq_ignore_ascii_case(name.as_str()))
        .collect();
    let value = match others.is_empty() {
        true => None,
        false => HeaderValue::from_str(&others.join(", ")).ok(),
    };
    headers.remove(TRAILER);
    if let Some(value) = value {
        headers.insert(TRAILER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settle_field_leaves_every_trailer_declaration() {
        let name = HeaderName::from_static("x-tokens-used");
        let mut headers = HeaderMap::new();
        headers.append(TRAILER, HeaderValue::from_static("x-a, X-Tokens-Used"));
        headers.append(TRAILER, HeaderValue::from_static("x-b"));
        undeclare(&mut headers, &name);
        let declared: Vec<_> = headers.get_all(TRAILER).iter().collect();
        assert_eq!(declared, ["x-a, x-b"]);
        // Nothing else declared: no `Trailer` left; not declared at all: untouched.
        let mut alone = HeaderMap::new();
        alone.insert(TRAILER, HeaderValue::from_static("x-tokens-used"));
        undeclare(&mut alone, &name);
        assert!(alone.get(TRAILER).is_none());
        let mut other = HeaderMap::new();
        other.append(TRAILER, HeaderValue::from_static("x-a"));
        other.append(TRAILER, HeaderValue::from_static("x-b"));
        undeclare(&mut other, &name);
        assert_eq!(other.get_all(TRAILER).iter().count(), 2);
    }
}
