//! What tollgate records through the [`metrics`] facade (feature `metrics`): an
//! app that installs its own recorder (Prometheus, StatsD, ...) gets these from the layer and
//! every front, and the service renders them at `GET /metrics`.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `tollgate_decisions_total` | counter | `rule`, `outcome` |
//! | `tollgate_redis_call_duration_seconds` | histogram | |
//! | `tollgate_redis_errors_total` | counter | `kind`: `timeout` or `error` |
//! | `tollgate_redis_breaker_open` | gauge | `node` |
//! | `tollgate_buckets`, `tollgate_buckets_evicted_total` | gauge, counter | |
//! | `tollgate_rule_reloads_total`, `tollgate_rule_reloads_failed_total` | counter | |
//! | `tollgate_usage_dropped_total`, `tollgate_usage_flush_errors_total` | counter | |
//! | `tollgate_runtime_read_errors_total` | counter | |
//! | `tollgate_event_subscribers` | gauge | |
//! | `tollgate_settlements_total` | counter | `rule`, `outcome` |
//! | `tollgate_settled_units_total` | counter | `rule`, `unit` |
//!
//! No label names a client: one series per client would grow without bound.
//!
//! Decisions, settlements and Redis calls are recorded as they happen. The rest is read from
//! [`Limiter::stats`](crate::Limiter::stats) and the breakers by
//! [`Limiter::record_metrics`](crate::Limiter::record_metrics), which the service calls on
//! every scrape; an app with its own exporter calls it before rendering. What each metric
//! means reaches the exporter through [`describe`] (Prometheus's `# HELP` lines).

use std::sync::Arc;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram};

use crate::decision::DecidedBy;

/// Decisions, by rule and outcome.
pub const DECISIONS: &str = "tollgate_decisions_total";
/// How long Redis took to decide (seconds).
pub const REDIS_CALL_DURATION: &str = "tollgate_redis_call_duration_seconds";
/// Redis calls that failed, by kind.
pub const REDIS_ERRORS: &str = "tollgate_redis_errors_total";
/// 1 while a Redis node's circuit breaker is open or half-open, 0 while closed.
pub const REDIS_BREAKER_OPEN: &str = "tollgate_redis_breaker_open";
/// Buckets held in this process.
pub const BUCKETS: &str = "tollgate_buckets";
/// Live buckets forgotten to stay within `max_tracked_buckets`.
pub const BUCKETS_EVICTED: &str = "tollgate_buckets_evicted_total";
/// Rules put in force after startup.
pub const RULE_RELOADS: &str = "tollgate_rule_reloads_total";
/// Reloads rejected.
pub const RULE_RELOADS_FAILED: &str = "tollgate_rule_reloads_failed_total";
/// Calls counted in the usage totals but not per client.
pub const USAGE_DROPPED: &str = "tollgate_usage_dropped_total";
/// Usage flushes Redis did not take.
pub const USAGE_FLUSH_ERRORS: &str = "tollgate_usage_flush_errors_total";
/// Reads of the runtime entries in Redis that failed (Redis unreachable, or its key holding
/// something else than the entries).
pub const RUNTIME_READ_ERRORS: &str = "tollgate_runtime_read_errors_total";
/// Subscribers to the service's event streams.
pub const EVENT_SUBSCRIBERS: &str = "tollgate_event_subscribers";
/// Settlements of reservations, by rule and outcome (`settled`, `unknown`,
/// `already_settled`, `failed`).
pub const SETTLEMENTS: &str = "tollgate_settlements_total";
/// Units settled reservations used, by rule and the rule's `unit` (`units` when it names
/// none).
pub const SETTLED_UNITS: &str = "tollgate_settled_units_total";

/// Upper bounds of the Redis call duration histogram's buckets, in seconds: 100 µs to 1 s.
pub const REDIS_CALL_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Tells the recorder installed now what each metric means, for the exporter to show
/// (Prometheus: a `# HELP` line over each metric's series). The service calls it when it
/// installs its recorder; an app with its own recorder calls it once, after installing it.
///
/// # Example
///
/// ```
/// use metrics_util::debugging::DebuggingRecorder;
/// use tollgate::metrics::{BUCKETS, describe};
///
/// let recorder = DebuggingRecorder::new();
/// let snapshotter = recorder.snapshotter();
/// metrics::with_local_recorder(&recorder, || {
///     describe();
///     metrics::gauge!(BUCKETS).set(3.0);
/// });
/// let (key, _unit, help, _value) = snapshotter.snapshot().into_vec().remove(0);
/// assert_eq!(key.key().name(), BUCKETS);
/// assert_eq!(help.as_deref(), Some("Buckets held in this process."));
/// ```
pub fn describe() {
    describe_counter!(
        DECISIONS,
        "Decisions, by rule and outcome; peeks are not counted."
    );
    describe_histogram!(
        REDIS_CALL_DURATION,
        "How long Redis took to answer a call, in seconds."
    );
    describe_counter!(
        REDIS_ERRORS,
        "Redis calls that failed, by kind: timeout or error."
    );
    describe_gauge!(
        REDIS_BREAKER_OPEN,
        "1 while the circuit breaker of a Redis node is open or half-open, 0 while closed."
    );
    describe_gauge!(BUCKETS, "Buckets held in this process.");
    describe_counter!(
        BUCKETS_EVICTED,
        "Live buckets forgotten to stay within max_tracked_buckets."
    );
    describe_counter!(RULE_RELOADS, "Rules put in force after startup.");
    describe_counter!(
        RULE_RELOADS_FAILED,
        "Reloads of the rules rejected (the rules in force stayed)."
    );
    describe_counter!(
        USAGE_DROPPED,
        "Calls counted in the usage totals but not per client."
    );
    describe_counter!(USAGE_FLUSH_ERRORS, "Usage flushes Redis did not take.");
    describe_counter!(
        RUNTIME_READ_ERRORS,
        "Reads of the runtime entries in Redis that failed."
    );
    describe_gauge!(
        EVENT_SUBSCRIBERS,
        "Subscribers to the service's event streams."
    );
    describe_counter!(SETTLEMENTS, "Settlements of reservations, by outcome.");
    describe_counter!(
        SETTLED_UNITS,
        "Units settled reservations used, in the rule's unit."
    );
}

/// Counts a settlement under `rule`: its outcome, and what it used, in `unit`.
pub(crate) fn settlement(rule: &str, unit: Option<&str>, used: Option<u64>, outcome: &'static str) {
    let rule = rule.to_owned();
    counter!(SETTLEMENTS, "rule" => rule.clone(), "outcome" => outcome).increment(1);
    if let Some(used) = used {
        let unit = unit.unwrap_or("units").to_owned();
        counter!(SETTLED_UNITS, "rule" => rule, "unit" => unit).increment(used);
    }
}

/// Counts one decision (peeks are not counted) under `rule`.
#[inline]
pub(crate) fn decision(rule: &Arc<str>, decided_by: DecidedBy, allowed: bool, shadowed: bool) {
    let outcome = match decided_by {
        _ if shadowed => "shadow_denied",
        DecidedBy::Unlimited => "unlimited",
        DecidedBy::Lease => "lease",
        DecidedBy::RememberedRefusal => "remembered_refusal",
        DecidedBy::LocalFallback => "local_fallback",
        DecidedBy::FailOpen => "fail_open",
        DecidedBy::FailClosed => "fail_closed",
        // Never counted: such a request is refused before it is decided.
        DecidedBy::OverCapacity => "over_capacity",
        DecidedBy::Memory | DecidedBy::Redis if allowed => "allowed",
        DecidedBy::Memory | DecidedBy::Redis => "denied",
    };
    // The rule's `Arc<str>` is shared, not copied.
    counter!(DECISIONS, "rule" => Arc::clone(rule), "outcome" => outcome).increment(1);
}

/// One call to Redis that came back (or failed) after `took`.
#[cfg(feature = "redis")]
pub(crate) fn redis_call(took: std::time::Duration, failed: Option<RedisErrorKind>) {
    ::metrics::histogram!(REDIS_CALL_DURATION).record(took.as_secs_f64());
    if let Some(kind) = failed {
        let kind = match kind {
            RedisErrorKind::Timeout => "timeout",
            RedisErrorKind::Error => "error",
        };
        counter!(REDIS_ERRORS, "kind" => kind).increment(1);
    }
}

/// Why a Redis call failed, as `tollgate_redis_errors_total` labels it.
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy)]
pub(crate) enum RedisErrorKind {
    Timeout,
    Error,
}
