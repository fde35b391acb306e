//! Reading and validating the rules file's JSON into [`Rules`]: every problem is reported
//! with its JSON location and what was expected.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;

use http::Method;
use serde::Deserialize;
use serde_json::Value;

use super::descriptor::{self, RawDescriptor};
use super::json::{json_path_of, json_problem};
use super::raw::{Problem, RawRule, limit_of, problem};
use super::router::{ConflictKind, Route, RuleSet};
use super::{InvalidRule, Location, Rule, Rules, RulesError};
use crate::header_style::HeaderStyle;
use crate::key::{ClientKey, InvalidClientKey};
use crate::policy::OnRedisError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleSet {
    default: RawRule,
    #[serde(default)]
    routes: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    default: RawRule,
    #[serde(default)]
    routes: Vec<RawRule>,
    #[serde(default)]
    tiers: BTreeMap<String, RawRuleSet>,
    default_tier: Option<String>,
    #[serde(default)]
    clients: BTreeMap<String, RawRule>,
    #[serde(default)]
    descriptors: BTreeMap<String, Vec<RawDescriptor>>,
    #[serde(default)]
    shadow: bool,
    on_redis_error: Option<OnRedisError>,
    local_fallback_instances: Option<NonZeroU32>,
    headers: Option<HeaderStyle>,
    problem_details: Option<bool>,
}

pub(super) fn parse(text: &str, source_name: &str) -> Result<Rules, RulesError> {
    let invalid = |location: Location, problem: InvalidRule| RulesError::Invalid {
        source_name: source_name.to_owned(),
        location,
        problem,
    };
    let de = &mut serde_json::Deserializer::from_str(text);
    let raw: RawRules = serde_path_to_error::deserialize(&mut *de)
        .map_err(|err| {
            let json_path = json_path_of(err.path());
            json_problem(text, json_path, &err.into_inner())
        })
        // Only whitespace may follow the document.
        .and_then(|raw| {
            de.end()
                .map(|()| raw)
                .map_err(|err| json_problem(text, ".".into(), &err))
        })
        .map_err(|(location, problem)| invalid(location, problem))?;
    let source = super::Source {
        json: text.into(),
        name: source_name.into(),
    };
    build(raw, source).map_err(|p| {
        invalid(
            Location {
                json_path: p.json_path,
                line_column: None,
            },
            p.problem,
        )
    })
}

fn build(raw: RawRules, source: super::Source) -> Result<Rules, Problem> {
    let mut rules = Vec::new();
    let base = rule_set(&mut rules, None, "", raw.default, raw.routes, raw.shadow)?;
    let mut tiers = Vec::with_capacity(raw.tiers.len());
    for (name, set) in raw.tiers {
        let at = format!("tiers.{name}");
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_name {
            return Err(problem(at, InvalidRule::TierName { name }));
        }
        let set = rule_set(
            &mut rules,
            Some(&name),
            &format!("{at}."),
            set.default,
            set.routes,
            raw.shadow,
        )?;
        tiers.push((name.into_boxed_str(), set));
    }
    let default_tier = match raw.default_tier {
        None => None,
        Some(name) => Some(
            tiers
                .iter()
                .position(|(t, _)| **t == *name)
                .ok_or_else(|| {
                    problem(
                        "default_tier",
                        InvalidRule::UnknownTier {
                            name,
                            known: tiers.iter().map(|(t, _)| t.to_string()).collect(),
                        },
                    )
                })?,
        ),
    };
    let mut clients = super::Clients::default();
    for (key, raw_rule) in raw.clients {
        let at = format!("clients.{key}");
        for (field, present) in [
            ("path", raw_rule.path.is_some()),
            ("methods", raw_rule.methods.is_some()),
        ] {
            if present {
                return Err(problem(
                    format!("{at}.{field}"),
                    InvalidRule::Json(format!("`{field}` is only allowed in routes")),
                ));
            }
        }
        let client = ClientKey::parse(&key)
            .ok_or_else(|| problem(&at, InvalidClientKey::of(&key).into()))?;
        clients.insert(client, limit_of(&raw_rule, &at, raw.shadow)?);
    }
    let descriptors = descriptor::build(raw.descriptors, &mut rules, raw.shadow)?;
    let by_id = rules
        .iter()
        .enumerate()
        .map(|(index, rule)| (Arc::clone(&rule.id), index))
        .collect();
    Ok(Rules {
        rules: rules.into(),
        by_id: Arc::new(by_id),
        base: Arc::new(base),
        tiers: tiers.into(),
        default_tier,
        clients,
        descriptors: Arc::new(descriptors),
        on_redis_error: raw.on_redis_error,
        local_fallback_instances: raw.local_fallback_instances,
        header_style: raw.headers,
        problem_details: raw.problem_details,
        source,
    })
}

/// Builds one rule set's rules into `rules` and returns its routers. `at` prefixes JSON
/// paths (`""` or `"tiers.pro."`).
fn rule_set(
    rules: &mut Vec<Rule>,
    tier: Option<&str>,
    at: &str,
    default: RawRule,
    raw_routes: Vec<RawRule>,
    shadow_all: bool,
) -> Result<RuleSet, Problem> {
    let id_prefix = tier.map(|t| format!("{t}:")).unwrap_or_default();
    for (field, present) in [
        ("path", default.path.is_some()),
        ("methods", default.methods.is_some()),
    ] {
        if present {
            return Err(problem(
                format!("{at}default.{field}"),
                InvalidRule::Json(format!("`{field}` is only allowed in routes")),
            ));
        }
    }
    let default_index = rules.len();
    rules.push(Rule {
        id: format!("{id_prefix}default").into(),
        index: default_index,
        tier: tier.map(Into::into),
        pattern: None,
        methods: None,
        head_as_get: false,
        limit: limit_of(&default, &format!("{at}default"), shadow_all)?,
        descriptor: None,
    });

    let mut routes: Vec<Route> = Vec::with_capacity(raw_routes.len());
    // Where each route is in the file, for errors.
    let mut json_paths: Vec<String> = Vec::with_capacity(raw_routes.len());
    // Earlier routes by pattern and by identity, so that each duplicate check is one lookup.
    let mut by_pattern: HashMap<String, Vec<usize>> = HashMap::with_capacity(raw_routes.len());
    let mut by_id: HashMap<Arc<str>, usize> = HashMap::with_capacity(raw_routes.len());
    for (i, raw_route) in raw_routes.iter().enumerate() {
        let json_path = format!("{at}routes[{i}]");
        let limit = limit_of(raw_route, &json_path, shadow_all)?;
        let pattern = raw_route
            .path
            .clone()
            .ok_or_else(|| problem(&json_path, InvalidRule::Json("missing field `path`".into())))?;
        if let Some(reason) = malformed(&pattern) {
            return Err(problem(
                format!("{json_path}.path"),
                InvalidRule::Pattern {
                    path: pattern,
                    reason,
                },
            ));
        }
        let methods = raw_route
            .methods
            .as_deref()
            .map(|m| methods_of(m, &json_path))
            .transpose()?;
        // Rules for one pattern name disjoint methods, so there are only a few of them.
        let same_pattern = by_pattern.get(&pattern).map_or(&[][..], Vec::as_slice);
        if let Some(&earlier) = same_pattern
            .iter()
            .find(|&&r| methods_overlap(&routes[r].methods, &methods))
        {
            return Err(problem(
                format!("{json_path}.path"),
                InvalidRule::DuplicateRoute {
                    path: pattern,
                    other: json_paths[earlier].clone(),
                },
            ));
        }
        let id: Arc<str> = format!("{id_prefix}{}", rule_id(&pattern, methods.as_deref())).into();
        if let Some(&same) = by_id.get(&id) {
            return Err(problem(
                format!("{json_path}.path"),
                InvalidRule::DuplicateRoute {
                    path: pattern,
                    other: format!("{} (same rule identity {id:?})", json_paths[same]),
                },
            ));
        }
        let index = rules.len();
        rules.push(Rule {
            id: id.clone(),
            index,
            tier: tier.map(Into::into),
            pattern: Some(pattern.as_str().into()),
            methods: methods.as_deref().map(Into::into),
            head_as_get: false,
            limit,
            descriptor: None,
        });
        by_id.insert(id, routes.len());
        by_pattern
            .entry(pattern.clone())
            .or_default()
            .push(routes.len());
        routes.push(Route {
            pattern,
            methods,
            index,
        });
        json_paths.push(json_path);
    }

    let set = RuleSet::build(default_index, &routes, rules).map_err(|conflict| {
        let route = &routes[conflict.route];
        let json_path = &json_paths[conflict.route];
        let reason = match conflict.kind {
            ConflictKind::With { pattern, route } => match route {
                Some(other) => format!("it conflicts with {} ({pattern:?})", json_paths[other]),
                None => format!("it conflicts with {pattern}"),
            },
            ConflictKind::Other(reason) => reason,
        };
        problem(
            format!("{json_path}.path"),
            InvalidRule::Pattern {
                path: route.pattern.clone(),
                reason,
            },
        )
    })?;
    Ok(set)
}

/// The identity of `route`, a route as the rules file writes it, in `tier` (`None`: the
/// top-level routes): as the parser gives it, from `path` and `methods`. `None` when it has
/// no path, or `methods` is not a list of method names.
pub(super) fn route_id(route: &Value, tier: Option<&str>) -> Option<String> {
    let path = route.get("path")?.as_str()?;
    let methods = match route.get("methods") {
        None | Some(Value::Null) => None,
        Some(list) => {
            let names = list
                .as_array()?
                .iter()
                .map(|name| name.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()?;
            Some(methods_of(&names, "").ok()?)
        }
    };
    let tier = tier.map(|t| format!("{t}:")).unwrap_or_default();
    Some(format!("{tier}{}", rule_id(path, methods.as_deref())))
}

fn methods_overlap(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}

fn rule_id(pattern: &str, methods: Option<&[Method]>) -> String {
    let mut id = pattern_id(pattern);
    if let Some(methods) = methods {
        id.push('@');
        let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        id.push_str(&names.join(","));
    }
    id
}

/// Why `pattern` cannot be a route's path before the router sees it, or `None`. No request
/// path holds a control character (NUL, a line break, DEL...) unencoded, so a route with one
/// would match nothing, while carrying it into rule identities, Redis keys, metric labels and
/// logs.
fn malformed(pattern: &str) -> Option<String> {
    if !pattern.starts_with('/') {
        return Some("it does not start with '/'".into());
    }
    let (at, control) = pattern.char_indices().find(|(_, c)| c.is_control())?;
    Some(format!(
        "it contains the control character U+{:04X} at byte {at}",
        u32::from(control)
    ))
}

/// `pattern` as rule identities write it: `{}` turned into `<>`, so that an identity never
/// forms a Redis Cluster hash tag.
pub(crate) fn pattern_id(pattern: &str) -> String {
    pattern
        .chars()
        .map(|c| match c {
            '{' => '<',
            '}' => '>',
            c => c,
        })
        .collect()
}

/// Upper-cased, sorted, de-duplicated methods.
fn methods_of(raw: &[String], json_path: &str) -> Result<Vec<Method>, Problem> {
    if raw.is_empty() {
        return Err(problem(
            format!("{json_path}.methods"),
            InvalidRule::Methods {
                found: "the list is empty".into(),
            },
        ));
    }
    let mut methods = Vec::with_capacity(raw.len());
    for (i, name) in raw.iter().enumerate() {
        let upper = name.to_ascii_uppercase();
        let method = Method::from_bytes(upper.as_bytes())
            .ok()
            .filter(|_| !upper.is_empty())
            .ok_or_else(|| {
                problem(
                    format!("{json_path}.methods[{i}]"),
                    InvalidRule::Methods {
                        found: format!("{name:?} is not a method name"),
                    },
                )
            })?;
        methods.push(method);
    }
    methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    methods.dedup();
    Ok(methods)
}
