//! envoy ratelimit's YAML document and its conversion into the rules file's `descriptors`
//! nodes (see [`EnvoyDomain`](super::EnvoyDomain)).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};
use serde_saphyr::Spanned;

use super::InvalidEnvoyConfig;
use crate::algorithm::Algorithm;
use crate::rules::yaml::located;
use crate::rules::{Band, Location, MAX_BANDS};

/// One configuration file: a domain and its descriptors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) domain: Spanned<String>,
    #[serde(default)]
    descriptors: Option<Vec<RawDescriptor>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptor {
    key: Spanned<String>,
    value: Option<Spanned<String>>,
    rate_limit: Option<Spanned<RawRateLimit>>,
    descriptors: Option<Vec<RawDescriptor>>,
    shadow_mode: Option<bool>,
    // Shape only envoy ratelimit's own statsd names: accepted and ignored.
    #[allow(dead_code)]
    detailed_metric: Option<bool>,
    #[allow(dead_code)]
    value_to_metric: Option<bool>,
    share_threshold: Option<Spanned<bool>>,
    quota_mode: Option<Spanned<bool>>,
    metadata: Option<Spanned<IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    unit: Option<Spanned<String>>,
    requests_per_unit: Option<Spanned<u32>>,
    unlimited: Option<bool>,
    name: Option<String>,
    replaces: Option<Vec<Spanned<RawReplaces>>>,
    // tollgate's own extensions.
    algorithm: Option<Spanned<Algorithm>>,
    burst: Option<Spanned<u32>>,
    bands: Option<Spanned<Vec<Spanned<RawBand>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplaces {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBand {
    unit: Spanned<String>,
    requests_per_unit: Spanned<u32>,
}

/// A problem at a path of the YAML document.
pub(super) type Problem = (Location, InvalidEnvoyConfig);

fn at<T>(spanned: &Spanned<T>, path: String, problem: InvalidEnvoyConfig) -> Problem {
    (located(path, &spanned.referenced), problem)
}

/// The seconds of each of envoy ratelimit's units, as it counts them (a month is 30 days, a
/// year 365).
const UNITS: [(&str, u32); 7] = [
    ("second", 1),
    ("minute", 60),
    ("hour", 3_600),
    ("day", 86_400),
    ("week", 604_800),
    ("month", 2_592_000),
    ("year", 31_536_000),
];

impl RawConfig {
    /// The descriptors as the rules file's nodes, after every check that can name a place in
    /// the YAML.
    pub(super) fn nodes(&self) -> Result<Value, Problem> {
        if self.domain.value.is_empty() {
            return Err(at(
                &self.domain,
                "domain".into(),
                InvalidEnvoyConfig::EmptyDomain,
            ));
        }
        let descriptors = self.descriptors.as_deref().unwrap_or_default();
        let mut names = BTreeMap::new();
        collect_names(descriptors, "descriptors", &mut names)?;
        let converter = Converter {
            names: names.into_keys().collect(),
        };
        converter.list(descriptors, "descriptors")
    }
}

/// Every `rate_limit.name` under `descriptors` into `names`, with the path of its
/// `rate_limit`; a name given twice is refused, as the rules file refuses it.
fn collect_names<'a>(
    descriptors: &'a [RawDescriptor],
    path: &str,
    names: &mut BTreeMap<&'a str, String>,
) -> Result<(), Problem> {
    for (i, descriptor) in descriptors.iter().enumerate() {
        let here = format!("{path}[{i}]");
        if let Some(rate_limit) = &descriptor.rate_limit
            && let Some(name) = rate_limit.value.name.as_deref().filter(|n| !n.is_empty())
        {
            let at_name = format!("{here}.rate_limit.name");
            if let Some(earlier) = names.insert(name, at_name.clone()) {
                return Err(at(
                    rate_limit,
                    at_name,
                    InvalidEnvoyConfig::DuplicateName {
                        name: name.to_owned(),
                        earlier,
                    },
                ));
            }
        }
        let nested = descriptor.descriptors.as_deref().unwrap_or_default();
        collect_names(nested, &format!("{here}.descriptors"), names)?;
    }
    Ok(())
}

struct Converter<'a> {
    /// Every `rate_limit.name` of the domain, for checking `replaces`.
    names: BTreeSet<&'a str>,
}

impl Converter<'_> {
    fn list(&self, descriptors: &[RawDescriptor], path: &str) -> Result<Value, Problem> {
        let mut seen: HashMap<(&str, Option<&str>), String> = HashMap::new();
        let mut nodes = Vec::with_capacity(descriptors.len());
        for (i, descriptor) in descriptors.iter().enumerate() {
            let here = format!("{path}[{i}]");
            let key = descriptor.key.value.as_str();
            // envoy ratelimit reads an empty value as none.
            let value = descriptor
                .value
                .as_ref()
                .map(|v| v.value.as_str())
                .filter(|v| !v.is_empty());
            if let Some(other) = seen.insert((key, value), here.clone()) {
                let descriptor_name = match value {
                    Some(value) => format!("key {key:?} with value {value:?}"),
                    None => format!("key {key:?} without a value"),
                };
                return Err(at(
                    &descriptor.key,
                    here,
                    InvalidEnvoyConfig::DuplicateDescriptor {
                        descriptor: descriptor_name,
                        other,
                    },
                ));
            }
            nodes.push(self.node(descriptor, &here)?);
        }
        Ok(Value::Array(nodes))
    }

    fn node(&self, descriptor: &RawDescriptor, path: &str) -> Result<Value, Problem> {
        let field = |name: &str| format!("{path}.{name}");
        let mut node = Map::new();
        if descriptor.key.value.is_empty() {
            return Err(at(
                &descriptor.key,
                field("key"),
                InvalidEnvoyConfig::EmptyKey,
            ));
        }
        node.insert("key".into(), descriptor.key.value.clone().into());
        if let Some(value) = descriptor.value.as_ref().filter(|v| !v.value.is_empty()) {
            if value
                .value
                .find('*')
                .is_some_and(|at| at + 1 < value.value.len())
            {
                return Err(at(
                    value,
                    field("value"),
                    InvalidEnvoyConfig::Wildcard {
                        value: value.value.clone(),
                    },
                ));
            }
            node.insert("value".into(), value.value.clone().into());
        }
        if let Some(shared) = descriptor.share_threshold.as_ref().filter(|s| s.value) {
            return Err(at(
                shared,
                field("share_threshold"),
                InvalidEnvoyConfig::Unsupported {
                    field: "share_threshold: true",
                    why: "each value matching a wildcard counts separately in tollgate",
                },
            ));
        }
        if let Some(quota) = descriptor.quota_mode.as_ref().filter(|q| q.value) {
            return Err(at(
                quota,
                field("quota_mode"),
                InvalidEnvoyConfig::Unsupported {
                    field: "quota_mode: true",
                    why: "tollgate has no quota mode",
                },
            ));
        }
        if let Some(metadata) = &descriptor.metadata {
            return Err(at(
                metadata,
                field("metadata"),
                InvalidEnvoyConfig::Unsupported {
                    field: "metadata",
                    why: "tollgate does not return descriptor metadata",
                },
            ));
        }
        if let Some(rate_limit) = &descriptor.rate_limit {
            let shadow = descriptor.shadow_mode == Some(true);
            self.rate_limit(rate_limit, shadow, &field("rate_limit"), &mut node)?;
        }
        if let Some(nested) = &descriptor.descriptors {
            node.insert(
                "descriptors".into(),
                self.list(nested, &field("descriptors"))?,
            );
        }
        Ok(Value::Object(node))
    }

    /// The limit fields of `rate_limit`, added to `node`.
    fn rate_limit(
        &self,
        spanned: &Spanned<RawRateLimit>,
        shadow: bool,
        path: &str,
        node: &mut Map<String, Value>,
    ) -> Result<(), Problem> {
        let raw = &spanned.value;
        let field = |name: &str| format!("{path}.{name}");
        let name = raw.name.as_deref().filter(|name| !name.is_empty());
        if let Some(name) = name {
            node.insert("name".into(), name.into());
        }
        if let Some(replaces) = &raw.replaces {
            let mut replaced = Vec::with_capacity(replaces.len());
            for (i, entry) in replaces.iter().enumerate() {
                let here = format!("{path}.replaces[{i}]");
                let problem = match entry.value.name.as_deref() {
                    None | Some("") => Some(InvalidEnvoyConfig::ReplacesWithoutName),
                    Some(other) if Some(other) == name => {
                        Some(InvalidEnvoyConfig::ReplacesItself {
                            name: other.to_owned(),
                        })
                    }
                    Some(other) if !self.names.contains(other) => {
                        Some(InvalidEnvoyConfig::UnknownReplaced {
                            name: other.to_owned(),
                            known: self.names.iter().map(|n| (*n).to_owned()).collect(),
                        })
                    }
                    Some(other) => {
                        replaced.push(Value::from(other));
                        None
                    }
                };
                if let Some(problem) = problem {
                    return Err(at(entry, here, problem));
                }
            }
            node.insert("replaces".into(), replaced.into());
        }
        if raw.unlimited == Some(true) {
            let given = [
                ("unit", raw.unit.as_ref().map(|s| &s.referenced)),
                (
                    "requests_per_unit",
                    raw.requests_per_unit.as_ref().map(|s| &s.referenced),
                ),
                ("algorithm", raw.algorithm.as_ref().map(|s| &s.referenced)),
                ("burst", raw.burst.as_ref().map(|s| &s.referenced)),
                ("bands", raw.bands.as_ref().map(|s| &s.referenced)),
            ];
            if let Some((name, Some(location))) = given.into_iter().find(|(_, l)| l.is_some()) {
                return Err((
                    located(field(name), location),
                    InvalidEnvoyConfig::NotWithUnlimited { field: name },
                ));
            }
            // Shadow mode has nothing to observe on a rule that never refuses.
            node.insert("unlimited".into(), true.into());
            return Ok(());
        }
        let (Some(unit), Some(requests)) = (&raw.unit, &raw.requests_per_unit) else {
            let missing = if raw.unit.is_none() {
                "unit"
            } else {
                "requests_per_unit"
            };
            return Err(at(
                spanned,
                path.to_owned(),
                InvalidEnvoyConfig::Missing { missing },
            ));
        };
        let algorithm = match (&raw.algorithm, &raw.burst) {
            (Some(algorithm), Some(_)) if algorithm.value != Algorithm::TokenBucket => {
                return Err(at(
                    algorithm,
                    field("algorithm"),
                    InvalidEnvoyConfig::BurstAlgorithm {
                        algorithm: algorithm.value.as_str(),
                    },
                ));
            }
            (Some(algorithm), _) => algorithm.value,
            (None, Some(_)) => Algorithm::TokenBucket,
            // envoy ratelimit counts fixed windows.
            (None, None) => Algorithm::FixedWindow,
        };
        let burst = match &raw.burst {
            Some(burst) if burst.value == 0 => {
                return Err(at(burst, field("burst"), InvalidEnvoyConfig::ZeroBurst));
            }
            burst => burst.as_ref().map(|b| b.value),
        };
        let first =
            band(unit, requests, burst, path).map_err(|problem| match (&raw.burst, problem) {
                // With a burst, the capacity is the burst's.
                (Some(burst), (_, rate @ InvalidEnvoyConfig::Rate { .. })) => {
                    at(burst, field("burst"), rate)
                }
                (_, problem) => problem,
            })?;
        let extra = raw
            .bands
            .as_ref()
            .map(|b| b.value.as_slice())
            .unwrap_or_default();
        if let Some(bands) = raw.bands.as_ref().filter(|_| 1 + extra.len() > MAX_BANDS) {
            return Err(at(
                bands,
                field("bands"),
                InvalidEnvoyConfig::Bands {
                    count: 1 + extra.len(),
                },
            ));
        }
        if extra.is_empty() {
            match first {
                Value::Object(fields) => node.extend(fields),
                shorthand => {
                    node.insert("limit".into(), shorthand);
                }
            }
        } else {
            let mut limits = vec![first];
            for (i, more) in extra.iter().enumerate() {
                let here = format!("{path}.bands[{i}]");
                limits.push(band(
                    &more.value.unit,
                    &more.value.requests_per_unit,
                    None,
                    &here,
                )?);
            }
            node.insert("limits".into(), limits.into());
        }
        node.insert("algorithm".into(), algorithm.as_str().into());
        if shadow {
            node.insert("shadow".into(), true.into());
        }
        Ok(())
    }
}

/// One band as the rules file writes it: `"N/unit"` when it has that form, otherwise
/// `{"capacity": C, "refill_rate": R}`.
fn band(
    unit: &Spanned<String>,
    requests: &Spanned<u32>,
    burst: Option<u32>,
    path: &str,
) -> Result<Value, Problem> {
    let lowercase = unit.value.to_ascii_lowercase();
    let Some(&(unit_name, unit_secs)) = UNITS.iter().find(|(name, _)| *name == lowercase) else {
        return Err(at(
            unit,
            format!("{path}.unit"),
            InvalidEnvoyConfig::Unit {
                got: unit.value.clone(),
            },
        ));
    };
    let n = requests.value;
    if n == 0 {
        return Err(at(
            requests,
            format!("{path}.requests_per_unit"),
            InvalidEnvoyConfig::ZeroRequests,
        ));
    }
    let refill_rate = f64::from(n) / f64::from(unit_secs);
    let capacity = burst.unwrap_or(n);
    if Band::new(capacity, refill_rate).is_none() {
        let rate = match burst {
            Some(burst) => format!("{n} per {unit_name} with burst {burst}"),
            None => format!("{n} per {unit_name}"),
        };
        return Err(at(
            requests,
            format!("{path}.requests_per_unit"),
            InvalidEnvoyConfig::Rate { rate },
        ));
    }
    Ok(match burst {
        None if unit_secs <= 86_400 => Value::from(format!("{n}/{unit_name}")),
        _ => json!({ "capacity": capacity, "refill_rate": refill_rate }),
    })
}
