//! The baseline of `bench/envoy.sh` (setup `bare-grpc`): Envoy's rate limit service served
//! by tonic as `tollgate serve` serves it (TCP_NODELAY on the accepted connections), with a
//! handler that decides nothing. Every descriptor is `OK` with the same `current_limit`
//! and `limit_remaining`, so that what tollgate adds to a `ShouldRateLimit` call shows
//! against the cost of tonic, h2 and the messages alone.
//!
//! ```text
//! GRPC_PORT=0 cargo run --release -p tollgate-server --example bare_rls
//! ```
//!
//! Logs `Envoy rate limit service (gRPC) on HOST:PORT`, as `tollgate serve` does.

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Answers every descriptor `OK` under one fixed limit.
struct Bare;

#[tonic::async_trait]
impl RateLimitService for Bare {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let statuses = request
            .get_ref()
            .descriptors
            .iter()
            .map(|_| DescriptorStatus {
                code: Code::Ok.into(),
                current_limit: Some(RateLimit {
                    name: "bench".into(),
                    requests_per_unit: 1_000_000,
                    unit: Unit::Second.into(),
                }),
                limit_remaining: 999_999,
                ..DescriptorStatus::default()
            })
            .collect();
        Ok(Response::new(RateLimitResponse {
            overall_code: Code::Ok.into(),
            statuses,
            ..RateLimitResponse::default()
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("GRPC_PORT") {
        Ok(port) => port.parse()?,
        Err(_) => 8081,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "Envoy rate limit service (gRPC) on {}",
        listener.local_addr()?
    );
    Server::builder()
        .add_service(RateLimitServiceServer::new(Bare))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}
