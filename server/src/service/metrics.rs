//! `GET /metrics`: tollgate's [metrics](tollgate::metrics) in the Prometheus text format.
//!
//! Rendered by a `metrics-exporter-prometheus` recorder: the app's, given to
//! [`Service::metrics_handle`](super::Service::metrics_handle), or else one the service
//! installs as the process's global recorder, once, when a router is first built. If the app
//! installed another global recorder first, that one gets tollgate's metrics and
//! `/metrics` answers 503 saying so.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::json::detail;
use tollgate::metrics::{EVENT_SUBSCRIBERS, REDIS_CALL_BUCKETS, REDIS_CALL_DURATION, describe};

/// Where `/metrics` renders from: a recorder's handle, or why there is none.
pub(crate) type Exporter = Result<PrometheusHandle, String>;

/// The recorder this process installed for the service, or why it could not.
static INSTALLED: OnceLock<Exporter> = OnceLock::new();

/// A Prometheus recorder builder set up for tollgate's metrics: the Redis call durations as
/// a histogram with buckets from 100 µs to 1 s (rather than a summary). Once its recorder
/// is installed, [`describe`](tollgate::metrics::describe) gives each metric its `# HELP`.
///
/// ```
/// let handle = tollgate_server::service::prometheus_builder()
///     .build_recorder()
///     .handle();
/// assert!(handle.render().is_empty());
/// ```
pub fn prometheus_builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(REDIS_CALL_DURATION.to_owned()),
            REDIS_CALL_BUCKETS,
        )
        .expect("the buckets are not empty")
}

/// The process's recorder for the service, installed on the first call.
pub(crate) fn installed() -> Exporter {
    INSTALLED
        .get_or_init(|| {
            let handle = prometheus_builder().install_recorder().map_err(|error| {
                format!(
                    "another metrics recorder is installed in this process ({error}): \
                     give its Prometheus handle to Service::metrics_handle, or scrape it"
                )
            })?;
            describe();
            // Shown at 0 until the event streams count their subscribers.
            ::metrics::gauge!(EVENT_SUBSCRIBERS).set(0.0);
            Ok(handle)
        })
        .clone()
}

/// Every metric, after reading what is read at scrape time (buckets, reloads, breakers).
/// Open like `/health`: scrapers do not carry the admin token, and no metric names a client.
#[utoipa::path(
    get,
    path = "/metrics",
    responses(
        (status = 200, description = "The metrics, in the Prometheus text format", content_type = "text/plain; version=0.0.4", body = String),
        (status = 503, description = "Another metrics recorder was installed in this process: `{\"detail\": ...}` says which to use"),
    ),
    tag = "health"
)]
pub(crate) async fn render(State(state): State<Arc<super::State>>) -> Response {
    let handle = match &state.metrics {
        Ok(handle) => handle,
        Err(why) => return detail(StatusCode::SERVICE_UNAVAILABLE, why.as_str()),
    };
    state.limiter.record_metrics();
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
