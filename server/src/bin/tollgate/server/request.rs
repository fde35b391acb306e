//! Each request of a connection, on its way to the service: the peer's address as axum's
//! `ConnectInfo`, its body due by the body timeout (a late one is answered 408), and counted
//! in flight until its answer is sent.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::Body;
use hyper::body::Incoming;
use tower_service::Service;

use super::activity::Activity;
use super::body::{Answer, BoxError, Timed};

/// A service, as one connection's requests reach it.
#[derive(Clone)]
pub(crate) struct PerRequest<S> {
    pub(crate) service: S,
    pub(crate) peer: SocketAddr,
    pub(crate) activity: Arc<Activity>,
    pub(crate) body_timeout: Duration,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for PerRequest<S>
where
    S: Service<Request<Timed<Incoming>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Answer<B>>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let version = request.version();
        let busy = self.activity.started(version == Version::HTTP_2);
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let (body, late) = Timed::new(body, deadline);
        let request = Request::from_parts(parts, body);
        let mut service = self.service.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let response = service.call(request).await.map_err(Into::into)?;
            if late.is_some_and(|late| late.load(Relaxed)) {
                return Ok(request_timeout(version, busy));
            }
            Ok(response.map(|body| Answer::Served { body, busy }))
        })
    }
}

/// 408, in the service's `{"detail": ...}` form; over HTTP/1 the connection then closes.
fn request_timeout<B>(version: Version, busy: super::activity::Busy) -> Response<Answer<B>> {
    let detail = Bytes::from_static(
        br#"{"detail":"the request body did not arrive in time (HTTP_BODY_TIMEOUT_MS)"}"#,
    );
    let mut response = Response::new(Answer::Late {
        detail: Some(detail),
        busy,
    });
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if version < Version::HTTP_2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
