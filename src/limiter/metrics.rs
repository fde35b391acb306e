//! [`Limiter::record_metrics`]: what a limiter has counted, as the metrics of
//! [`crate::metrics`] that are read rather than recorded as they happen.

use ::metrics::{counter, gauge};

use super::Limiter;
use crate::metrics::{
    BUCKETS, BUCKETS_EVICTED, EVENT_SUBSCRIBERS, REDIS_BREAKER_OPEN, RULE_RELOADS,
    RULE_RELOADS_FAILED, RUNTIME_READ_ERRORS, USAGE_DROPPED, USAGE_FLUSH_ERRORS,
};

impl Limiter {
    /// Records what is read rather than counted as it happens: buckets held and evicted,
    /// rule reloads, usage drops and flush errors, failed reads of the runtime entries,
    /// event subscribers (from
    /// [`stats`](Self::stats)), and each Redis node's circuit breaker. The service's `GET /metrics` calls it on every scrape;
    /// an app rendering its own exporter calls it before rendering.
    ///
    /// ```
    /// use tollgate::{Limiter, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "2/minute"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// limiter.record_metrics(); // through whichever recorder the app installed
    /// # Ok(())
    /// # }
    /// ```
    pub fn record_metrics(&self) {
        let stats = self.stats();
        gauge!(BUCKETS).set(stats.store.tracked_buckets as f64);
        counter!(BUCKETS_EVICTED).absolute(stats.store.evicted_buckets);
        counter!(RULE_RELOADS).absolute(stats.reloads);
        counter!(RULE_RELOADS_FAILED).absolute(stats.failed_reloads);
        counter!(USAGE_DROPPED).absolute(stats.usage_dropped);
        counter!(USAGE_FLUSH_ERRORS).absolute(stats.usage_flush_errors);
        counter!(RUNTIME_READ_ERRORS).absolute(stats.runtime_read_errors);
        gauge!(EVENT_SUBSCRIBERS).set(stats.event_subscribers as f64);
        for (node, state) in self.breakers() {
            let open = state != crate::BreakerState::Closed;
            gauge!(REDIS_BREAKER_OPEN, "node" => node).set(if open { 1.0 } else { 0.0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;
    use crate::metrics::DECISIONS;
    use crate::{ClientKey, Query, Rules};

    async fn limiter(json: &str) -> Limiter {
        let rules = Rules::from_json(json).expect("valid rules");
        let limiter = Limiter::builder().rules(rules).build().await;
        limiter.expect("a limiter")
    }

    /// Each outcome lands under its rule and name; peeks are not counted.
    #[tokio::test]
    async fn decisions_are_counted_by_rule_and_outcome() {
        let limiter = limiter(
            r#"{"default": {"limit": "1/hour"},
                "routes": [{"path": "/free", "unlimited": true},
                           {"path": "/trial", "limit": "1/hour", "shadow": true}]}"#,
        )
        .await;
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let ann = ClientKey::id("ann");
        ::metrics::with_local_recorder(&recorder, || {
            let check = |query| futures::executor::block_on(limiter.check(query)).unwrap();
            check(Query::new(&ann));
            check(Query::new(&ann));
            futures::executor::block_on(limiter.peek(Query::new(&ann))).unwrap();
            check(Query::new(&ann).route("GET", "/free"));
            check(Query::new(&ann).route("GET", "/trial"));
            check(Query::new(&ann).route("GET", "/trial"));
        });
        let mut counted = BTreeMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            if key.name() != DECISIONS {
                continue;
            }
            let label = |name| {
                key.labels()
                    .find(|l| l.key() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap()
            };
            let DebugValue::Counter(n) = value else {
                panic!("{DECISIONS} is a counter")
            };
            counted.insert((label("rule"), label("outcome")), n);
        }
        let expected: BTreeMap<_, _> = [
            (("default", "allowed"), 1),
            (("default", "denied"), 1),
            (("/free", "unlimited"), 1),
            (("/trial", "allowed"), 1),
            (("/trial", "shadow_denied"), 1),
        ]
        .into_iter()
        .map(|((rule, outcome), n)| ((rule.to_owned(), outcome.to_owned()), n))
        .collect();
        assert_eq!(counted, expected);
    }

    /// Each settlement lands under its rule and outcome; what it used, under the rule's unit.
    #[tokio::test]
    async fn settlements_are_counted_with_their_units() {
        use crate::metrics::{SETTLED_UNITS, SETTLEMENTS};
        let limiter =
            limiter(r#"{"default": {"capacity": 1000, "refill_rate": 0.001, "unit": "tokens"}}"#)
                .await;
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let ann = ClientKey::id("ann");
        ::metrics::with_local_recorder(&recorder, || {
            use futures::executor::block_on as block;
            let reserve = || {
                let reserved = block(limiter.reserve(Query::new(&ann).cost(100))).unwrap();
                reserved.into_reservation().expect("held").detach()
            };
            let (one, two) = (reserve(), reserve());
            block(limiter.settle(&one, 30)).unwrap();
            block(limiter.settle(&two, 250)).unwrap();
            assert!(block(limiter.settle(&two, 1)).is_err());
        });
        let mut counted = BTreeMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let labels: Vec<String> = key.labels().map(|l| l.value().to_owned()).collect();
            let DebugValue::Counter(n) = value else {
                panic!("{} is a counter", key.name())
            };
            counted.insert((key.name().to_owned(), labels.join(" ")), n);
        }
        let expected: BTreeMap<_, _> = [
            ((SETTLEMENTS, "default settled"), 2),
            ((SETTLEMENTS, "default already_settled"), 1),
            ((SETTLED_UNITS, "default tokens"), 280),
        ]
        .into_iter()
        .map(|((name, labels), n)| ((name.to_owned(), labels.to_owned()), n))
        .collect();
        counted.retain(|(name, _), _| name == SETTLEMENTS || name == SETTLED_UNITS);
        assert_eq!(counted, expected);
    }
}
