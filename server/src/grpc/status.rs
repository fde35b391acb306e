//! One descriptor's decision, in Envoy's words: a `DescriptorStatus`.

use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;

use http::HeaderMap;

use tollgate::{Band, DecidedBy, HeaderStyle, Limit, Verdict, render};

/// What the limiter said about one descriptor.
// One per descriptor of a request, for a moment: boxing the verdict would allocate for each.
#[allow(clippy::large_enum_variant)]
pub(super) enum Decided {
    /// No rule applies (or a matched rule replaces it).
    NoLimit,
    /// The limiter's verdict, under the rule's `name` if it has one.
    Checked {
        verdict: Verdict,
        name: Option<String>,
    },
}

impl Decided {
    /// The status Envoy reads, with times counted from `now`.
    pub(super) fn status(self, now: SystemTime) -> DescriptorStatus {
        match self {
            Decided::NoLimit => DescriptorStatus {
                code: Code::Ok.into(),
                ..DescriptorStatus::default()
            },
            Decided::Checked { verdict, name } => {
                let Some(limit) = verdict.limit() else {
                    // The rule is unlimited.
                    return DescriptorStatus {
                        code: Code::Ok.into(),
                        limit_remaining: u32::MAX,
                        ..DescriptorStatus::default()
                    };
                };
                // The name Envoy sees for the limit: the rule's `name`, else its identity.
                let name = name.as_deref().unwrap_or(verdict.rule());
                if verdict.decided_by() == DecidedBy::OverCapacity {
                    // More hits than the smallest band holds: it can never fit.
                    return DescriptorStatus {
                        code: Code::OverLimit.into(),
                        current_limit: Some(rate_limit(name, reported(limit, None))),
                        ..DescriptorStatus::default()
                    };
                }
                let code = if verdict.allowed() {
                    Code::Ok
                } else {
                    Code::OverLimit
                };
                // Without a decision the failure policy let it through: no limit to report.
                let Some(decision) = verdict.decision() else {
                    return DescriptorStatus {
                        code: code.into(),
                        ..DescriptorStatus::default()
                    };
                };
                DescriptorStatus {
                    code: code.into(),
                    current_limit: Some(rate_limit(name, reported(limit, Some(decision.limit)))),
                    limit_remaining: decision.remaining,
                    duration_until_reset: Some(proto_duration(
                        decision.reset.duration_since(now).unwrap_or_default(),
                    )),
                    ..DescriptorStatus::default()
                }
            }
        }
    }
}

/// The header fields of a whole call: each descriptor's IETF fields joined into one list
/// per field, and the longest wait of the refused ones as `Retry-After`.
#[derive(Default)]
pub(super) struct Fields {
    /// `RateLimit-Policy` and `RateLimit`, in the order first seen.
    lists: Vec<(String, String)>,
    retry_after_secs: Option<u64>,
}

impl Fields {
    pub(super) fn add(&mut self, decided: &Decided) {
        let Decided::Checked { verdict, name } = decided else {
            return;
        };
        let Some(decision) = verdict.decision() else {
            return;
        };
        let name = name.as_deref().unwrap_or(verdict.rule());
        let mut own = HeaderMap::new();
        render::write_rate_limit_headers(
            &mut own,
            HeaderStyle::Ietf,
            name,
            verdict.limit(),
            &decision,
        );
        for (field, value) in &own {
            let Ok(value) = value.to_str() else { continue };
            match self.lists.iter_mut().find(|(f, _)| f == field.as_str()) {
                Some((_, list)) => {
                    list.push_str(", ");
                    list.push_str(value);
                }
                None => self
                    .lists
                    .push((field.as_str().to_owned(), value.to_owned())),
            }
        }
        if !verdict.allowed() {
            let secs = decision.retry_after_secs();
            self.retry_after_secs = Some(self.retry_after_secs.map_or(secs, |s| s.max(secs)));
        }
    }
}

impl IntoIterator for Fields {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(mut self) -> Self::IntoIter {
        if let Some(secs) = self.retry_after_secs {
            self.lists
                .push(("retry-after".to_owned(), secs.to_string()));
        }
        self.lists.into_iter()
    }
}

/// The band a decision reports: the one of capacity `capacity` (the first, if several have
/// it), else the narrowest.
fn reported(limit: &Limit, capacity: Option<u32>) -> Band {
    let bands = limit.bands();
    capacity
        .and_then(|capacity| bands.iter().find(|b| b.capacity() == capacity))
        .or_else(|| bands.iter().min_by_key(|b| b.capacity()))
        .copied()
        .unwrap_or_else(|| bands[0])
}

/// Envoy's seconds per unit, as envoy ratelimit counts them (a month of 30 days, a year of
/// 365).
const UNITS: [(Unit, f64); 7] = [
    (Unit::Second, 1.0),
    (Unit::Minute, 60.0),
    (Unit::Hour, 3600.0),
    (Unit::Day, 86_400.0),
    (Unit::Week, 604_800.0),
    (Unit::Month, 2_592_000.0),
    (Unit::Year, 31_536_000.0),
];

/// A band as Envoy's `RateLimit`: its capacity per unit when its period is one unit; else
/// the rate as a whole number per the smallest unit that gives one; else the capacity with
/// the unit `UNKNOWN` (a rate Envoy's units cannot say, such as 1 per 11 s).
pub(super) fn rate_limit(name: &str, band: Band) -> RateLimit {
    let period_secs = band.period().as_secs_f64();
    let exact = UNITS
        .iter()
        .find(|(_, secs)| (period_secs - secs).abs() <= secs * 1e-9)
        .map(|(unit, _)| (band.capacity(), *unit));
    let per_unit = || {
        UNITS.iter().find_map(|(unit, secs)| {
            let per = band.refill_per_sec() * secs;
            let whole = per.round();
            ((per - whole).abs() <= 1e-9 * per.max(1.0)
                && whole >= 1.0
                && whole <= f64::from(u32::MAX))
            .then_some((whole as u32, *unit))
        })
    };
    let (requests_per_unit, unit) = exact
        .or_else(per_unit)
        .unwrap_or((band.capacity(), Unit::Unknown));
    RateLimit {
        name: name.to_owned(),
        requests_per_unit,
        unit: unit.into(),
    }
}

fn proto_duration(duration: Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_in_envoy_units() {
        let unit = |capacity: u32, period_secs: f64| {
            let band = Band::new(capacity, f64::from(capacity) / period_secs).unwrap();
            let limit = rate_limit("n", band);
            (limit.requests_per_unit, Unit::try_from(limit.unit).unwrap())
        };
        assert_eq!(unit(100, 60.0), (100, Unit::Minute));
        assert_eq!(unit(5, 86_400.0), (5, Unit::Day));
        assert_eq!(unit(3, 2_592_000.0), (3, Unit::Month));
        // 10 per 10 s is 1 per second; 30 per half hour is 1 per minute.
        assert_eq!(unit(10, 10.0), (1, Unit::Second));
        assert_eq!(unit(30, 1800.0), (1, Unit::Minute));
        assert_eq!(unit(7, 10.0), (42, Unit::Minute));
        // 1 per 11 s is no whole number per any unit.
        assert_eq!(unit(1, 11.0), (1, Unit::Unknown));
    }
}
