//! [`ReservedCost`]: a request's reservation, which the app settles with what the request
//! used; and the settlement the layer makes from a response's header or trailer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use http::{HeaderMap, HeaderName};

use crate::limiter::{Reservation, SettleError, Settled};

/// A settlement on its way.
pub(super) type Settling = Pin<Box<dyn Future<Output = Result<Settled, SettleError>> + Send>>;

/// The cost the layer reserved for this request, in its extensions when the request's rule
/// settles from the response ([`Limit::settle_header`](crate::Limit::settle_header)): settle
/// it with what the request used, when that is known, even after the response's last
/// chunk. The layer settles it from the response's header or trailer instead, if the app
/// sets one; left unsettled, it stays at its estimate.
///
/// Clones share the reservation: the first settlement counts, the others are
/// [`SettleError::AlreadySettled`].
///
/// # Example
///
/// ```
/// use axum::{body::Body, http::Request, routing::post, Extension, Router};
/// use tower::ServiceExt;
/// use tollgate::{ClientKey, Cost, Limiter, Query, RateLimitLayer, ReservedCost, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // 10,000 tokens, one back every 1,000 s.
/// let rules = Rules::from_json(r#"{"default": {"capacity": 10000, "refill_rate": 0.001,
///     "unit": "tokens", "settle_header": "x-tokens-used"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let app = Router::new()
///     .route("/chat", post(|Extension(cost): Extension<ReservedCost>| async move {
///         // The model answered with 1,200 tokens.
///         cost.settle(1200).await.expect("settled");
///         "…"
///     }))
///     .layer(RateLimitLayer::new(limiter.clone()));
///
/// let mut request = Request::post("/chat").header("x-client-id", "ann").body(Body::empty())?;
/// request.extensions_mut().insert(Cost::new(4000)); // the most the request may use
/// let response = app.oneshot(request).await?;
/// assert_eq!(response.headers()["x-ratelimit-remaining"], "6000", "the estimate, at first");
///
/// let now = limiter.peek(Query::new(&ClientKey::id("ann"))).await?;
/// assert_eq!(now.decision().unwrap().remaining, 8800, "1,200 taken in the end");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ReservedCost {
    shared: Arc<Shared>,
}

struct Shared {
    estimate: u32,
    /// Whether the store held a reservation at all.
    held: bool,
    reservation: Mutex<Option<Reservation>>,
}

impl ReservedCost {
    pub(super) fn new(reservation: Reservation) -> Self {
        Self {
            shared: Arc::new(Shared {
                estimate: reservation.estimate(),
                held: true,
                reservation: Mutex::new(Some(reservation)),
            }),
        }
    }

    /// The handle of a request admitted with nothing held: by a failure policy while the
    /// store could not decide, or past a shadow rule's would-be refusal.
    pub(super) fn unheld() -> Self {
        Self {
            shared: Arc::new(Shared {
                estimate: 0,
                held: false,
                reservation: Mutex::new(None),
            }),
        }
    }

    /// The units reserved: the request's [`Cost`](crate::Cost), or its rule's `cost`; 0
    /// when nothing is held.
    pub fn estimate(&self) -> u32 {
        self.shared.estimate
    }

    /// Settles the reservation with `used` units (see [`Reservation::settle`]): what the
    /// estimate left over is given back, what went past it is owed. Once:
    /// [`SettleError::AlreadySettled`] after that; [`SettleError::Unknown`] when nothing was
    /// held (the request was admitted by a failure policy, or past a shadow rule).
    pub async fn settle(&self, used: u64) -> Result<Settled, SettleError> {
        let reservation = match (self.take(), self.shared.held) {
            (Some(reservation), _) => reservation,
            (None, true) => return Err(SettleError::AlreadySettled),
            (None, false) => return Err(SettleError::Unknown),
        };
        reservation.settle(used).await
    }

    /// The reservation, unless it was settled already.
    fn take(&self) -> Option<Reservation> {
        let mut held = self
            .shared
            .reservation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        held.take()
    }
}

impl fmt::Debug for ReservedCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReservedCost")
            .field("estimate", &self.shared.estimate)
            .finish_non_exhaustive()
    }
}

/// Takes the field `name` out of `fields` (a response's headers or trailers), and settles
/// `cost` with the number it holds. A value that is not a whole number leaves the
/// reservation at its estimate; the field goes either way.
pub(super) fn settle_from(
    fields: &mut HeaderMap,
    name: &HeaderName,
    cost: Option<&ReservedCost>,
) -> Option<Settling> {
    let value = fields.remove(name)?;
    let cost = cost?;
    let Some(used) = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        tracing::warn!(
            field = %name,
            value = ?value,
            "the response's settle field is not a whole number of units: the reservation stays at its estimate"
        );
        return None;
    };
    let reservation = cost.take()?;
    Some(Box::pin(reservation.settle(used)))
}

/// Logs a settlement that could not be made.
pub(super) fn log_failure(result: &Result<Settled, SettleError>) {
    if let Err(error) = result {
        tracing::warn!(%error, "the response's settlement was not made");
    }
}
