//! [`RateLimit`]: the service the layer wraps around yours.

use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::body::ResponseBody;
use super::future::ResponseFuture;
use crate::http::RequestQueries;
use crate::render;

/// Rate limits requests to `S`. Made by [`RateLimitLayer`](crate::RateLimitLayer).
///
/// Works with any `http` service; its responses carry a [`ResponseBody`] around the inner
/// service's body, which axum's `Router::layer` takes as it is. Its own failures become
/// responses, never errors: the error type is the inner service's.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use axum::{body::Body, http::{Request, Response, StatusCode}};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tollgate::{Limiter, RateLimitLayer, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"capacity": 2, "refill_rate": 1}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let service = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(limiter))
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
    queries: RequestQueries,
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, queries: RequestQueries) -> Self {
        Self { inner, queries }
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("backend", &self.queries.limiter().backend_name())
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let query = match self.queries.query(&request) {
            Ok(query) => query,
            Err(problem) => return ResponseFuture::respond(render::invalid_client_id(&problem)),
        };
        let mut checking = self.queries.limiter().check_settling(query);
        match checking.now() {
            Some(Ok(verdict)) => ResponseFuture::decided(verdict, &mut self.inner, request),
            Some(Err(error)) => ResponseFuture::respond(render::check_error(&error)),
            None => {
                // The instance that was polled ready goes into the future; a fresh clone
                // stays here for the next call.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::wait(checking, inner, request)
            }
        }
    }
}
