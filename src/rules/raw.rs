//! A rule as the rules file writes it ([`RawRule`], the shape `default`, `routes`,
//! `clients` and `descriptors` share) and the [`Limit`] its fields describe, with every
//! problem found at its JSON path.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Number, Value};

use super::{
    Band, InvalidRule, Limit, MAX_BANDS, MAX_REFILL_PER_SEC, MIN_REFILL_PER_SEC, Metering,
    period_secs,
};
use crate::algorithm::Algorithm;

/// One rule as written. `default`, `routes[i]`, named rules and `clients.<key>` share the
/// shape; `path`, `methods` and `rule` are only allowed in routes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) path: Option<String>,
    pub(super) methods: Option<Vec<String>>,
    /// A route's named rule, whose limit (and budget) it takes.
    pub(super) rule: Option<String>,
    pub(super) capacity: Option<Number>,
    pub(super) refill_rate: Option<Number>,
    pub(super) limit: Option<String>,
    pub(super) limits: Option<Vec<Value>>,
    pub(super) unlimited: Option<bool>,
    pub(super) algorithm: Option<Algorithm>,
    pub(super) cost: Option<Number>,
    pub(super) shadow: Option<bool>,
    /// What a unit of the limit is: `tokens`, `bytes`, …
    pub(super) unit: Option<String>,
    /// The response header (or trailer) that tells what a request used.
    pub(super) settle_header: Option<String>,
}

impl RawRule {
    /// The fields that say how much the rule allows, present on this one.
    pub(super) fn limit_fields(&self) -> impl Iterator<Item = &'static str> {
        [
            ("capacity", self.capacity.is_some()),
            ("refill_rate", self.refill_rate.is_some()),
            ("limit", self.limit.is_some()),
            ("limits", self.limits.is_some()),
            ("unlimited", self.unlimited.is_some()),
            ("algorithm", self.algorithm.is_some()),
            ("cost", self.cost.is_some()),
            ("shadow", self.shadow.is_some()),
            ("unit", self.unit.is_some()),
            ("settle_header", self.settle_header.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
    }

    /// An error at `json_path` for the first of `fields` this rule has: they are only
    /// allowed in routes.
    pub(super) fn only_in_routes(&self, json_path: &str) -> Result<(), Problem> {
        for (field, present) in [
            ("path", self.path.is_some()),
            ("methods", self.methods.is_some()),
            ("rule", self.rule.is_some()),
        ] {
            if present {
                return Err(problem(
                    format!("{json_path}.{field}"),
                    InvalidRule::Json(format!("`{field}` is only allowed in routes")),
                ));
            }
        }
        Ok(())
    }
}

/// A problem found after deserializing, with its JSON path.
pub(super) struct Problem {
    pub(super) json_path: String,
    pub(super) problem: InvalidRule,
}

pub(super) fn problem(json_path: impl Into<String>, problem: InvalidRule) -> Problem {
    Problem {
        json_path: json_path.into(),
        problem,
    }
}

/// The limit a rule describes, or `None` for `unlimited: true`.
pub(super) fn limit_of(
    raw: &RawRule,
    json_path: &str,
    shadow_all: bool,
) -> Result<Option<Limit>, Problem> {
    let at = |field: &str| format!("{json_path}.{field}");
    let unlimited = raw.unlimited == Some(true);
    let explicit = raw.capacity.is_some() || raw.refill_rate.is_some();
    let forms = [
        explicit,
        raw.limit.is_some(),
        raw.limits.is_some(),
        unlimited,
    ];
    if forms.iter().filter(|f| **f).count() != 1 {
        let given: Vec<&str> = [
            ("capacity", raw.capacity.is_some()),
            ("refill_rate", raw.refill_rate.is_some()),
            ("limit", raw.limit.is_some()),
            ("limits", raw.limits.is_some()),
            ("unlimited", raw.unlimited.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        let found = if given.is_empty() {
            "it has none".to_owned()
        } else if raw.unlimited == Some(false) && given.len() == 1 {
            "it has `unlimited: false` alone".to_owned()
        } else {
            format!("it has {}", given.join(", "))
        };
        return Err(problem(json_path, InvalidRule::LimitForm { found }));
    }
    if unlimited {
        for (field, present) in [
            ("algorithm", raw.algorithm.is_some()),
            ("cost", raw.cost.is_some()),
            ("shadow", raw.shadow.is_some()),
            ("unit", raw.unit.is_some()),
            ("settle_header", raw.settle_header.is_some()),
        ] {
            if present {
                return Err(problem(at(field), InvalidRule::NotWithUnlimited { field }));
            }
        }
        return Ok(None);
    }
    let bands: Vec<Band> = if explicit {
        vec![explicit_band(
            raw.capacity.as_ref(),
            raw.refill_rate.as_ref(),
            json_path,
        )?]
    } else if let Some(limit) = &raw.limit {
        vec![parse_shorthand(limit).ok_or_else(|| {
            problem(
                at("limit"),
                InvalidRule::LimitShorthand { got: limit.clone() },
            )
        })?]
    } else {
        let raw_bands = raw.limits.as_deref().unwrap_or_default();
        if raw_bands.is_empty() || raw_bands.len() > MAX_BANDS {
            return Err(problem(
                at("limits"),
                InvalidRule::Bands {
                    count: raw_bands.len(),
                },
            ));
        }
        raw_bands
            .iter()
            .enumerate()
            .map(|(i, value)| band_of(value, &format!("{json_path}.limits[{i}]")))
            .collect::<Result<_, _>>()?
    };
    let smallest = bands.iter().map(Band::capacity).min().unwrap_or(1);
    let cost = match &raw.cost {
        None => 1,
        Some(number) => number
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .filter(|c| (1..=smallest).contains(c))
            .ok_or_else(|| {
                problem(
                    at("cost"),
                    InvalidRule::Cost {
                        got: number.to_string(),
                        max: smallest,
                    },
                )
            })?,
    };
    Ok(Some(Limit {
        algorithm: raw.algorithm.unwrap_or_default(),
        bands: bands.into(),
        cost,
        shadow: shadow_all || raw.shadow == Some(true),
        metering: metering_of(raw, json_path)?,
    }))
}

/// What the rule's units are and where a response tells how many it used, if it says.
fn metering_of(raw: &RawRule, json_path: &str) -> Result<Option<Arc<Metering>>, Problem> {
    let unit = match &raw.unit {
        None => None,
        Some(unit) => Some(Metering::unit(unit).ok_or_else(|| {
            problem(
                format!("{json_path}.unit"),
                InvalidRule::Unit { got: unit.clone() },
            )
        })?),
    };
    let settle_header = match &raw.settle_header {
        None => None,
        Some(name) => Some(Metering::settle_header(name).map_err(|reason| {
            problem(
                format!("{json_path}.settle_header"),
                InvalidRule::SettleHeader {
                    got: name.clone(),
                    reason,
                },
            )
        })?),
    };
    Ok((unit.is_some() || settle_header.is_some()).then(|| {
        Arc::new(Metering {
            unit,
            settle_header,
        })
    }))
}

/// One entry of `limits`: `{"capacity": N, "refill_rate": R}` or `"N/unit"`.
fn band_of(value: &Value, json_path: &str) -> Result<Band, Problem> {
    match value {
        Value::String(text) => parse_shorthand(text)
            .ok_or_else(|| problem(json_path, InvalidRule::LimitShorthand { got: text.clone() })),
        Value::Object(fields) => {
            if let Some(unknown) = fields
                .keys()
                .find(|k| !matches!(k.as_str(), "capacity" | "refill_rate"))
            {
                return Err(problem(
                    format!("{json_path}.{unknown}"),
                    InvalidRule::Json(format!(
                        "unknown field `{unknown}`, expected `capacity` or `refill_rate`"
                    )),
                ));
            }
            let number = |name: &str| match fields.get(name) {
                Some(Value::Number(n)) => Ok(Some(n.clone())),
                None => Ok(None),
                Some(other) => Err(problem(
                    format!("{json_path}.{name}"),
                    InvalidRule::Json(format!("invalid type: {other}, expected a number")),
                )),
            };
            explicit_band(
                number("capacity")?.as_ref(),
                number("refill_rate")?.as_ref(),
                json_path,
            )
        }
        other => Err(problem(
            json_path,
            InvalidRule::Json(format!(
                "invalid band {other}: expected {{\"capacity\": N, \"refill_rate\": R}} or \"N/unit\""
            )),
        )),
    }
}

fn explicit_band(
    capacity: Option<&Number>,
    rate: Option<&Number>,
    json_path: &str,
) -> Result<Band, Problem> {
    let (Some(capacity), Some(rate)) = (capacity, rate) else {
        let missing = if capacity.is_none() {
            "capacity"
        } else {
            "refill_rate"
        };
        return Err(problem(
            json_path,
            InvalidRule::LimitForm {
                found: format!("`{missing}` is missing"),
            },
        ));
    };
    let capacity_value = capacity
        .as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .filter(|c| *c >= 1)
        .ok_or_else(|| {
            problem(
                format!("{json_path}.capacity"),
                InvalidRule::Capacity {
                    got: capacity.to_string(),
                },
            )
        })?;
    let refill = rate
        .as_f64()
        .filter(|r| (MIN_REFILL_PER_SEC..=MAX_REFILL_PER_SEC).contains(r))
        .ok_or_else(|| {
            problem(
                format!("{json_path}.refill_rate"),
                InvalidRule::RefillRate {
                    got: rate.to_string(),
                },
            )
        })?;
    Band::new(capacity_value, refill).ok_or_else(|| {
        problem(
            json_path.to_string(),
            InvalidRule::Period {
                secs: period_secs(capacity_value, refill),
            },
        )
    })
}

/// `"N/unit"`: capacity N, refilled over one unit.
fn parse_shorthand(text: &str) -> Option<Band> {
    let (count, unit) = text.split_once('/')?;
    let count: u32 = count.trim().parse().ok()?;
    let unit_secs = match unit.trim() {
        "second" => 1.0,
        "minute" => 60.0,
        "hour" => 3600.0,
        "day" => 86400.0,
        _ => return None,
    };
    Band::new(count, f64::from(count) / unit_secs)
}
