//! Envoy's rate limit service over gRPC: `envoy.service.ratelimit.v3.RateLimitService`,
//! deciding with the [`Limiter`] under the rules file's `descriptors`.
//!
//! A thin front: the descriptors of a `ShouldRateLimit` call go to
//! [`Limiter::check_descriptors`](tollgate::Limiter::check_descriptors), which finds each one's
//! rule and decides it (so the same client under the same rule counts the same whether it
//! comes through Envoy, the HTTP API or the tower layer), and each verdict is translated into
//! Envoy's `DescriptorStatus`.

mod limits;
mod status;

use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::HeaderValue as EnvoyHeader;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use futures_util::future::join_all;
use tonic::{Request, Response, Status};

use crate::service::auth::Secret;
pub use limits::{RequestLimits, TooLarge};
use status::Decided;
use tollgate::{DecidedBy, DescriptorCheck, Limiter};

/// `envoy.service.ratelimit.v3.RateLimitService`, answered by a [`Limiter`]: Envoy's HTTP
/// rate limit filter (and Istio, Contour, Gloo, Emissary on top of it) asks it with
/// `ShouldRateLimit`, as it would ask envoy ratelimit.
///
/// - Each descriptor gets one status, in order; `overall_code` is `OVER_LIMIT` when any is.
/// - A descriptor no rule of the domain covers, or whose rule another matched rule
///   `replaces`, is `OK` with no `current_limit`. An unlimited rule is `OK` with
///   `limit_remaining` at its maximum.
/// - `hits_addend` of the descriptor, else of the request (0 there means 1), is the cost;
///   a descriptor's `hits_addend` of 0 checks without taking. A cost larger than the
///   rule's smallest capacity can never fit: `OVER_LIMIT`. Refunds (`is_negative_hits`) are
///   not supported: such a descriptor is only looked at. Envoy's per-descriptor `limit`
///   override is not supported either: the rule decides.
/// - Shadow rules answer `OK` and are counted.
/// - `response_headers_to_add` carries the IETF `RateLimit-Policy` and `RateLimit` fields
///   of every descriptor decided (one list item per band and per descriptor), and
///   `Retry-After` when over the limit, for Envoy to add to its response.
/// - When Redis cannot decide, the limiter's failure policy answers: `allow` gives `OK`,
///   `local` decides in this process, and `deny` fails the call with `UNAVAILABLE`, which
///   Envoy's own `failure_mode_deny` then turns into a refusal (true) or lets through
///   (false).
/// - A call larger than its [`RequestLimits`] fails with `INVALID_ARGUMENT` naming the
///   bound, and nothing of it is counted. Envoy's `failure_mode_deny` decides that call's
///   fate too: with `false` (Envoy's default) it goes through unlimited, so a deployment
///   whose descriptors carry client-chosen values (a path, a header) sets it to `true`.
///
/// # Example
///
/// ```
/// use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{rate_limit_descriptor::Entry, RateLimitDescriptor};
/// use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
/// use tollgate_server::grpc::EnvoyRateLimit;
/// use tollgate::{Limiter, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"unlimited": true},
///     "descriptors": {"edge": [{"key": "remote_address", "limit": "1/hour"}]}}"#)?;
/// let service = EnvoyRateLimit::new(Limiter::builder().rules(rules).build().await?);
/// let request = RateLimitRequest {
///     domain: "edge".into(),
///     descriptors: vec![RateLimitDescriptor {
///         entries: vec![Entry { key: "remote_address".into(), value: "10.0.0.7".into() }],
///         ..Default::default()
///     }],
///     ..Default::default()
/// };
/// assert_eq!(service.should_rate_limit(request.clone()).await?.overall_code, 1); // OK
/// assert_eq!(service.should_rate_limit(request).await?.overall_code, 2); // OVER_LIMIT
///
/// // Served with tonic, next to the HTTP API:
/// let server = tonic::transport::Server::builder().add_service(service.into_server());
/// # drop(server);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EnvoyRateLimit {
    limiter: Limiter,
    limits: RequestLimits,
    check_token: Option<Secret>,
}

impl EnvoyRateLimit {
    /// The service, deciding with `limiter`, under the default [`RequestLimits`].
    pub fn new(limiter: Limiter) -> Self {
        Self {
            limiter,
            limits: RequestLimits::default(),
            check_token: None,
        }
    }

    /// Calls larger than `limits` are refused.
    pub fn request_limits(mut self, limits: RequestLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Calls need `authorization: Bearer <token>` metadata (Envoy's `grpc_service`
    /// `initial_metadata`); others fail with `UNAUTHENTICATED`. For deployments where clients
    /// can reach the gRPC port, so that nobody spends another's quota.
    pub fn check_token(mut self, token: impl Into<String>) -> Self {
        self.check_token = Some(Secret::new(token.into()));
        self
    }

    /// The tonic service to add to a `tonic::transport::Server`, decoding requests of at
    /// most [`RequestLimits::max_message_bytes`].
    pub fn into_server(self) -> RateLimitServiceServer<Self> {
        let max_message_bytes = self.limits.max_message_bytes;
        RateLimitServiceServer::new(self).max_decoding_message_size(max_message_bytes)
    }

    /// Answers one `ShouldRateLimit` call. Fails with `INVALID_ARGUMENT` for a request
    /// without a domain or descriptors, or over its [`RequestLimits`], and with
    /// `UNAVAILABLE` when Redis cannot decide and the failure policy is `deny`.
    pub async fn should_rate_limit(
        &self,
        request: RateLimitRequest,
    ) -> Result<RateLimitResponse, Status> {
        if request.domain.is_empty() {
            return Err(Status::invalid_argument(
                "the rate limit domain must not be empty",
            ));
        }
        if request.descriptors.is_empty() {
            return Err(Status::invalid_argument(
                "the rate limit request must carry at least one descriptor",
            ));
        }
        if let Err(too_large) = self.limits.check(&request) {
            return Err(Status::invalid_argument(too_large.to_string()));
        }
        let descriptors = request.descriptors.iter().map(|descriptor| {
            // Refunds (negative hits) are not supported: such a descriptor is only looked at.
            let hits = if descriptor.is_negative_hits {
                0
            } else {
                descriptor
                    .hits_addend
                    .as_ref()
                    .map_or(u64::from(request.hits_addend.max(1)), |h| h.value)
            };
            let entries = descriptor
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str()));
            (entries, hits)
        });
        let checks = self.limiter.check_descriptors(&request.domain, descriptors);
        let decided = join_all(checks.into_iter().map(decide)).await;
        let now = SystemTime::now();
        let mut response = RateLimitResponse {
            overall_code: Code::Ok.into(),
            ..RateLimitResponse::default()
        };
        let mut fields = status::Fields::default();
        for decided in decided {
            let decided = decided?;
            fields.add(&decided);
            let status = decided.status(now);
            if status.code == i32::from(Code::OverLimit) {
                response.overall_code = Code::OverLimit.into();
            }
            response.statuses.push(status);
        }
        response.response_headers_to_add = fields
            .into_iter()
            .map(|(key, value)| EnvoyHeader {
                key,
                value,
                ..EnvoyHeader::default()
            })
            .collect();
        Ok(response)
    }
}

/// One descriptor's answer: `None` when no rule applies. When Redis cannot decide and the
/// failure policy refuses, the whole call fails with `UNAVAILABLE`.
async fn decide(check: Option<DescriptorCheck>) -> Result<Decided, Status> {
    let Some(check) = check else {
        return Ok(Decided::NoLimit);
    };
    let name = check.name().map(str::to_owned);
    match check.await {
        Ok(verdict) if verdict.decided_by() == DecidedBy::FailClosed => {
            let wait = verdict.retry_after().unwrap_or_default();
            Err(Status::unavailable(format!(
                "Redis cannot decide and the failure policy refuses; retry in {} s",
                wait.as_secs_f64().ceil()
            )))
        }
        Ok(verdict) => Ok(Decided::Checked { verdict, name }),
        Err(error) => Err(Status::internal(error.to_string())),
    }
}

#[tonic::async_trait]
impl RateLimitService for EnvoyRateLimit {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        if let Some(token) = &self.check_token {
            let given = request.metadata().get("authorization");
            if !token.is_bearer(given.map(|value| value.as_bytes())) {
                return Err(Status::unauthenticated(
                    "this needs `authorization: Bearer <token>` metadata with the service's \
                     check token (TOLLGATE_CHECK_TOKEN)",
                ));
            }
        }
        EnvoyRateLimit::should_rate_limit(self, request.into_inner())
            .await
            .map(Response::new)
    }
}
