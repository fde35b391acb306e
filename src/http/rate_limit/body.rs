//! [`ResponseBody`]: the inner service's body, or the layer's own; settling a reservation
//! from a trailer.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::settle::{ReservedCost, Settling, log_failure, settle_from};

pin_project! {
    /// The body of [`RateLimit`](crate::RateLimit)'s responses: the inner service's, passed
    /// through (less the trailer a rule settles from, see
    /// [`Limit::settle_header`](crate::Limit::settle_header)), or the layer's own answer.
    ///
    /// # Example
    ///
    /// ```
    /// use axum::body::Body;
    /// use http_body_util::BodyExt;
    /// use tower::{service_fn, ServiceBuilder, ServiceExt};
    /// use tollgate::{Limiter, RateLimitLayer, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"}}"#)?;
    /// let service = ServiceBuilder::new()
    ///     .layer(RateLimitLayer::new(Limiter::builder().rules(rules).build().await?))
    ///     .service(service_fn(|_| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(Body::from("hello")))
    ///     }));
    /// let request = || http::Request::get("/").header("x-client-id", "cy").body(Body::empty());
    /// let passed = service.clone().oneshot(request()?).await?.into_body();
    /// assert_eq!(passed.collect().await?.to_bytes(), "hello");
    /// let refused = service.oneshot(request()?).await?.into_body();
    /// assert!(refused.collect().await?.to_bytes().starts_with(b"{"), "the layer's JSON");
    /// # Ok(())
    /// # }
    /// ```
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // The layer's own answer, whole.
        Full { bytes: Option<Bytes> },
        // The inner service's body, watched for the settle trailer when the rule has one.
        Inner { #[pin] body: B, trailer: Option<Box<Trailer>> },
    }
}

/// The settle field a rule names, looked for in the trailers.
struct Trailer {
    name: HeaderName,
    cost: Option<ReservedCost>,
    /// A settlement on its way, and the trailers that go out when it is made.
    settling: Option<(Settling, HeaderMap)>,
}

impl<B> ResponseBody<B> {
    /// The layer's own answer.
    pub(super) fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full { bytes: Some(bytes) },
        }
    }

    /// `body`, passed through; with `name`, less that trailer, which settles `cost`.
    pub(super) fn inner(body: B, name: Option<HeaderName>, cost: Option<ReservedCost>) -> Self {
        let trailer = name.map(|name| {
            Box::new(Trailer {
                name,
                cost,
                settling: None,
            })
        });
        Self {
            kind: Kind::Inner { body, trailer },
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let (mut body, trailer) = match self.project().kind.project() {
            KindProj::Full { bytes } => return Poll::Ready(bytes.take().map(Frame::data).map(Ok)),
            KindProj::Inner { body, trailer } => (body, trailer),
        };
        let Some(trailer) = trailer else {
            return body.poll_frame(cx);
        };
        loop {
            // The trailers go out once the settlement is made: a client that reads them
            // knows the cost is counted.
            if let Some((settling, _)) = &mut trailer.settling {
                log_failure(&ready!(settling.as_mut().poll(cx)));
                let trailers = trailer.settling.take().map(|(_, trailers)| trailers);
                return Poll::Ready(trailers.map(|trailers| Ok(Frame::trailers(trailers))));
            }
            let frame = match ready!(body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                other => return Poll::Ready(other),
            };
            let mut trailers = match frame.into_trailers() {
                Ok(trailers) => trailers,
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            };
            match settle_from(&mut trailers, &trailer.name, trailer.cost.as_ref()) {
                Some(settling) => trailer.settling = Some((settling, trailers)),
                None => return Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { bytes } => bytes.is_none(),
            Kind::Inner { body, trailer } => {
                body.is_end_stream() && trailer.as_ref().is_none_or(|t| t.settling.is_none())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Kind::Inner { body, .. } => body.size_hint(),
        }
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full { .. } => "the layer's",
            Kind::Inner { .. } => "the inner service's",
        };
        f.debug_struct("ResponseBody").field("body", &kind).finish()
    }
}
