//! [`RateLimit`]: the service the layer wraps around yours.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use crate::backend::{Outcome, Verdict};
use crate::future::ResponseFuture;
use crate::key::{ClientKey, KeyRef};
use crate::layer::Shared;
use crate::stats::Counters;
use crate::tier::Tier;
use crate::{Decision, headers};

/// Rate limits requests to `S`. Made by [`RateLimitLayer`](crate::RateLimitLayer).
///
/// Works with any `http` service whose response body can be built from
/// [`Bytes`](https://docs.rs/bytes/latest/bytes/struct.Bytes.html) (axum's
/// `Body`, `http_body_util::Full<Bytes>`, …). Its own failures become responses, never
/// errors: the error type is the inner service's.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use axum::{body::Body, http::{Request, Response, StatusCode}};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tollgate::{RateLimitLayer, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"capacity": 2, "refill_rate": 1}}"#)?;
/// let service = ServiceBuilder::new()
///     .layer(RateLimitLayer::builder().rules(rules).build().await?)
///     .service(service_fn(|_: Request<Body>| async {
///         Ok::<_, Infallible>(Response::new(Body::from("done")))
///     }));
///
/// let response = service.oneshot(Request::get("/").body(Body::empty())?).await?;
/// assert_eq!(response.status(), StatusCode::OK);
/// assert_eq!(response.headers()["x-ratelimit-limit"], "2");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("backend", &self.shared.backend.name())
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let key = match shared.keys.client_key(&request) {
            Ok(key) => key,
            Err(problem) => {
                Counters::bump(&shared.counters.invalid_client_ids);
                return ResponseFuture::respond(headers::bad_client_id(&problem));
            }
        };
        let installed = shared.installed.load();
        let tier = request.extensions().get::<Tier>().map(Tier::as_str);
        let resolved = match installed.rules.resolve_key(
            request.method(),
            request.uri().path(),
            tier,
            key,
        ) {
            Ok(resolved) => resolved,
            Err(unknown) => {
                Counters::bump(&shared.counters.unknown_tiers);
                tracing::error!(error = %unknown, "request refused: its tier is not in the rate limit rules");
                return ResponseFuture::respond(headers::unknown_tier(&unknown));
            }
        };
        let Some(limit) = resolved.limit else {
            return ResponseFuture::forward(self.inner.call(request), None);
        };
        let state = installed.state_ids[resolved.rule.index()];
        let shadow = limit.shadow().then_some((resolved.rule.id(), key));
        let verdict =
            shared
                .backend
                .decide(state, resolved.rule.id(), limit, key, installed.generation);
        match verdict {
            Verdict::Now(outcome) => match step(outcome, &shared.counters, shadow) {
                Step::Respond(response) => ResponseFuture::respond(response),
                Step::Forward(decision) => {
                    ResponseFuture::forward(self.inner.call(request), decision)
                }
            },
            Verdict::Later(pending) => {
                // The instance that was polled ready goes into the future; a fresh clone
                // stays here for the next call.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                // Owned only here, where the decision outlives the request's borrow.
                let shadow = shadow.map(|(rule, client)| Shadow {
                    rule: rule.into(),
                    client: client.to_owned(),
                });
                ResponseFuture::wait(pending, inner, request, Arc::clone(&self.shared), shadow)
            }
        }
    }
}

/// What a shadow rule's would-be refusals are logged with, kept while Redis decides.
pub(crate) struct Shadow {
    rule: Box<str>,
    client: ClientKey,
}

impl Shadow {
    pub(crate) fn borrowed(&self) -> (&str, KeyRef<'_>) {
        (&self.rule, self.client.as_ref())
    }
}

/// What the layer does with an outcome: answer itself, or forward (with headers to add).
pub(crate) enum Step<B> {
    Respond(Response<B>),
    Forward(Option<Decision>),
}

/// Turns an outcome into the layer's next step, counting it. Under a shadow rule nothing
/// is refused: what would have been is counted and logged, and passes.
pub(crate) fn step<B: From<Bytes>>(
    outcome: Outcome,
    counters: &Counters,
    shadow: Option<(&str, KeyRef<'_>)>,
) -> Step<B> {
    let refused = match outcome {
        Outcome::Decided(decision) => !decision.allowed,
        Outcome::PassThrough => false,
        Outcome::Unavailable { .. } => true,
    };
    if let (true, Some((rule, client))) = (refused, shadow) {
        Counters::bump(&counters.allowed);
        Counters::bump(&counters.shadowed);
        tracing::info!(rule, %client, "shadow rule would have refused this request");
        return Step::Forward(match outcome {
            Outcome::Decided(decision) => Some(decision),
            _ => None,
        });
    }
    match outcome {
        Outcome::Decided(decision) if decision.allowed => {
            Counters::bump(&counters.allowed);
            Step::Forward(Some(decision))
        }
        Outcome::Decided(decision) => {
            Counters::bump(&counters.denied);
            Step::Respond(headers::too_many_requests(&decision))
        }
        Outcome::PassThrough => {
            Counters::bump(&counters.allowed);
            Step::Forward(None)
        }
        Outcome::Unavailable { retry_after } => {
            Counters::bump(&counters.denied);
            Step::Respond(headers::unavailable(retry_after))
        }
    }
}
