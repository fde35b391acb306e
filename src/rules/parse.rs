//! Reading and validating the rules file (JSON, or YAML: one grammar, two syntaxes) into
//! [`Rules`]: every problem is reported with its location and what was expected.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use serde_json::Value;

use super::descriptor;
use super::document::{RawNamed, RawRuleSet, RawRules, near_known_key, with_section_hint};
use super::json::{json_path_of, json_problem};
use super::raw::{Problem, RawRule, limit_of, problem};
use super::router::{ConflictKind, Route, RuleSet};
use super::{
    Band, InvalidRule, Limit, Location, MAX_REFILL_PER_SEC, MIN_REFILL_PER_SEC, Rule, Rules,
    RulesError, period_secs,
};
use crate::algorithm::Algorithm;
use crate::key::{ClientKey, InvalidClientKey};

pub(super) fn parse(text: &str, source_name: &str) -> Result<Rules, RulesError> {
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
        .map_err(|(location, problem)| invalid(source_name, location, problem))?;
    built(raw, text.into(), source_name)
}

/// Validates a YAML rules document: the same grammar as JSON's, read with serde-saphyr. Its
/// JSON form is kept as the rules' source, which runtime entries are merged into.
#[cfg(feature = "yaml")]
pub(super) fn parse_yaml(text: &str, source_name: &str) -> Result<Rules, RulesError> {
    const ONE_DOCUMENT: &str = "a rules file holds one document";
    let not_read = |not_read: super::yaml::NotRead| {
        let (location, problem) = not_read.into_rules_problem();
        invalid(source_name, location, problem)
    };
    let raw: RawRules =
        super::yaml::deserialize(text, json_path_of, ONE_DOCUMENT).map_err(not_read)?;
    // The document was read as rules, so it reads as a value too.
    let json: Value =
        super::yaml::deserialize(text, json_path_of, ONE_DOCUMENT).map_err(not_read)?;
    let json = json.to_string();
    let rules = built(raw, json.as_str().into(), source_name)?;
    // Runtime entries are merged into this JSON form and read back as JSON, so it must be
    // one JSON accepts: YAML's looser forms (an empty `routes:`, a bare number where a name
    // goes) are refused here, at their path, rather than when an entry arrives.
    parse(&json, source_name).map_err(RulesError::without_line_column)?;
    Ok(rules)
}

/// The rules `raw` describes, read from `json` (the document's JSON form) named
/// `source_name`.
fn built(raw: RawRules, json: Arc<str>, source_name: &str) -> Result<Rules, RulesError> {
    let source = super::Source {
        json,
        name: source_name.into(),
    };
    build(raw, source).map_err(|p| {
        let location = Location {
            json_path: p.json_path,
            line_column: None,
        };
        invalid(source_name, location, p.problem)
    })
}

/// The error of `problem` at `location` of the document named `source_name`.
fn invalid(source_name: &str, location: Location, mut problem: InvalidRule) -> RulesError {
    with_section_hint(&location.json_path, &mut problem);
    RulesError::Invalid {
        source_name: source_name.to_owned(),
        location,
        problem,
    }
}

fn build(mut raw: RawRules, source: super::Source) -> Result<Rules, Problem> {
    let shadow = raw.shadow;
    let mut rules = Vec::new();
    // The base default first, then the named rules, which routes anywhere may name.
    let base_default = match raw.default.take() {
        Some(default) => Some(default_rule(&mut rules, None, "", &default, shadow)?),
        None => None,
    };
    let mut named = Named::build(&mut rules, raw.take_named(), shadow)?;
    let base_routes = std::mem::take(&mut raw.routes);
    let (base, base_routes) = match base_default {
        Some(default) => {
            let set = rule_set(
                &mut rules,
                None,
                "",
                default,
                base_routes,
                shadow,
                &mut named,
            )?;
            (Some(set), Vec::new())
        }
        None => (None, base_routes),
    };
    let mut tiers = Vec::with_capacity(raw.tiers.len());
    for (name, set) in std::mem::take(&mut raw.tiers) {
        let at = format!("tiers.{name}");
        if !valid_name(&name) {
            return Err(problem(at, InvalidRule::TierName { name }));
        }
        let default = tier_default(&mut rules, &name, &at, &set, shadow)?;
        let set = rule_set(
            &mut rules,
            Some(&name),
            &format!("{at}."),
            default,
            set.routes,
            shadow,
            &mut named,
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
    // Without a top-level `default`, the default tier's default is the base rules' default
    // too, for the routes written at the top level.
    let base = match (base, default_tier) {
        (Some(base), _) => base,
        (None, Some(tier)) => rule_set(
            &mut rules,
            None,
            "",
            tiers[tier].1.default(),
            base_routes,
            shadow,
            &mut named,
        )?,
        (None, None) => return Err(named.missing_default()),
    };
    let mut clients = super::Clients::default();
    for (key, raw_rule) in raw.clients {
        let at = format!("clients.{key}");
        raw_rule.only_in_routes(&at)?;
        let client = ClientKey::parse(&key)
            .ok_or_else(|| problem(&at, InvalidClientKey::of(&key).into()))?;
        clients.insert(client, limit_of(&raw_rule, &at, shadow)?);
    }
    let descriptors = descriptor::build(raw.descriptors, &mut rules, shadow)?;
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
        unused: named.unused().into(),
        on_redis_error: raw.on_redis_error,
        local_fallback_instances: raw.local_fallback_instances,
        header_style: raw.headers,
        problem_details: raw.problem_details,
        source,
    })
}

/// Pushes a default rule (the base rules' or a tier's) into `rules`; its index. `at`
/// prefixes JSON paths (`""` or `"tiers.pro."`).
fn default_rule(
    rules: &mut Vec<Rule>,
    tier: Option<&str>,
    at: &str,
    default: &RawRule,
    shadow_all: bool,
) -> Result<usize, Problem> {
    let json_path = format!("{at}default");
    default.only_in_routes(&json_path)?;
    let limit = limit_of(default, &json_path, shadow_all)?;
    Ok(push_default(rules, tier, limit))
}

fn push_default(rules: &mut Vec<Rule>, tier: Option<&str>, limit: Option<Limit>) -> usize {
    let index = rules.len();
    let id_prefix = tier.map(|t| format!("{t}:")).unwrap_or_default();
    rules.push(Rule {
        id: format!("{id_prefix}default").into(),
        index,
        tier: tier.map(Into::into),
        pattern: None,
        methods: None,
        head_as_get: false,
        named: false,
        limit,
        descriptor: None,
    });
    index
}

/// Pushes the default rule of the tier `name` (written at `at`, `tiers.<name>`) into
/// `rules`: its `default`, or `limit` requests per `window` seconds; its index.
fn tier_default(
    rules: &mut Vec<Rule>,
    name: &str,
    at: &str,
    set: &RawRuleSet,
    shadow_all: bool,
) -> Result<usize, Problem> {
    let form = |found: &str| {
        problem(
            at,
            InvalidRule::TierForm {
                found: found.to_owned(),
            },
        )
    };
    match (&set.default, &set.limit, &set.window) {
        (Some(default), None, None) => {
            default_rule(rules, Some(name), &format!("{at}."), default, shadow_all)
        }
        (None, Some(limit), Some(window)) => {
            let limit = per_window(limit, window, at, shadow_all)?;
            Ok(push_default(rules, Some(name), Some(limit)))
        }
        (None, None, None) => Err(problem(
            at,
            InvalidRule::Json(
                "missing field `default` (a tier has `default` and `routes`, or `limit` and \
                 `window`)"
                    .into(),
            ),
        )),
        (Some(_), _, _) => Err(form("it has `default` and `limit`/`window` too")),
        (None, Some(_), None) => Err(form("`window` is missing")),
        (None, None, Some(_)) => Err(form("`limit` is missing")),
    }
}

/// A tier written `{limit: N, window: S}`: a token bucket of capacity N that refills N/S
/// tokens a second.
fn per_window(limit: &Value, window: &Value, at: &str, shadow_all: bool) -> Result<Limit, Problem> {
    let form = |field: &str, found: String| {
        problem(format!("{at}.{field}"), InvalidRule::TierForm { found })
    };
    let count = limit
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            let hint = if limit.is_string() {
                " (a rule's \"N/unit\" goes in the tier's `default`)"
            } else {
                ""
            };
            form("limit", format!("`limit` is {limit}{hint}"))
        })?;
    let seconds = window
        .as_f64()
        .filter(|s| s.is_finite() && *s > 0.0)
        .ok_or_else(|| form("window", format!("`window` is {window}")))?;
    let refill = f64::from(count) / seconds;
    if !(MIN_REFILL_PER_SEC..=MAX_REFILL_PER_SEC).contains(&refill) {
        return Err(problem(
            format!("{at}.window"),
            InvalidRule::RefillRate {
                got: refill.to_string(),
            },
        ));
    }
    let band = Band::new(count, refill).ok_or_else(|| {
        problem(
            format!("{at}.window"),
            InvalidRule::Period {
                secs: period_secs(count, refill),
            },
        )
    })?;
    Ok(Limit {
        algorithm: Algorithm::default(),
        bands: vec![band].into(),
        cost: 1,
        shadow: shadow_all,
        metering: None,
    })
}

/// The named rules: by name, and whether routes name them.
struct Named {
    by_name: HashMap<String, usize>,
    rules: Vec<NamedRule>,
}

struct NamedRule {
    /// Its index in the rules.
    index: usize,
    name: String,
    /// Where the file writes it.
    json_path: String,
    /// Whether a route names it.
    used: bool,
    /// For a rule written at the top level, the section its name looks like a misspelling
    /// of.
    near: Option<&'static str>,
}

impl Named {
    /// Pushes each named rule into `rules`.
    fn build(rules: &mut Vec<Rule>, raw: Vec<RawNamed>, shadow_all: bool) -> Result<Self, Problem> {
        let mut named = Named {
            by_name: HashMap::with_capacity(raw.len()),
            rules: Vec::with_capacity(raw.len()),
        };
        for RawNamed {
            name,
            json_path,
            rule,
        } in raw
        {
            let near = if json_path.starts_with("rules") {
                None
            } else {
                near_known_key(&name)
            };
            let reason = if !valid_name(&name) {
                Some("must be 1 to 64 letters, digits, '_' or '-'".to_owned())
            } else if name == "default" {
                Some("is the default rule's identity".to_owned())
            } else {
                named
                    .by_name
                    .get(&name)
                    .map(|&at| format!("is given twice: at {} too", named.rules[at].json_path))
            };
            if let Some(reason) = reason {
                return Err(problem(&json_path, InvalidRule::RuleName { name, reason }));
            }
            let limit = rule
                .only_in_routes(&json_path)
                .and_then(|()| limit_of(&rule, &json_path, shadow_all))?;
            let index = rules.len();
            rules.push(Rule {
                id: name.as_str().into(),
                index,
                tier: None,
                pattern: None,
                methods: None,
                head_as_get: false,
                named: true,
                limit,
                descriptor: None,
            });
            named.by_name.insert(name.clone(), named.rules.len());
            named.rules.push(NamedRule {
                index,
                name,
                json_path,
                used: false,
                near,
            });
        }
        Ok(named)
    }

    /// The index of the rule `name`, which the route at `json_path` names.
    fn named_by(&mut self, name: &str, json_path: &str) -> Result<usize, Problem> {
        match self.by_name.get(name) {
            Some(&at) => {
                self.rules[at].used = true;
                Ok(self.rules[at].index)
            }
            None => Err(problem(
                format!("{json_path}.rule"),
                InvalidRule::UnknownRuleName {
                    name: name.to_owned(),
                    known: self.rules.iter().map(|r| r.name.clone()).collect(),
                },
            )),
        }
    }

    /// The named rules no route names, each with the section its name looks like a
    /// misspelling of.
    fn unused(&self) -> Vec<(usize, Option<&'static str>)> {
        self.rules
            .iter()
            .filter(|r| !r.used)
            .map(|r| (r.index, r.near))
            .collect()
    }

    /// The error of a document with neither `default` nor `default_tier`.
    fn missing_default(&self) -> Problem {
        let hint = self
            .rules
            .iter()
            .find(|r| r.near == Some("default"))
            .map_or_else(String::new, |r| {
                format!(
                    " (`{}` is read as a named rule; did you mean `default`?)",
                    r.name
                )
            });
        problem(
            ".",
            InvalidRule::Json(format!(
                "missing field `default`{hint}: requests no route covers need a default rule, \
                 unless `default_tier` names the tier whose rules they get"
            )),
        )
    }
}

/// A tier's or a named rule's name: 1 to 64 letters, digits, `_` or `-`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Builds one rule set's routes into `rules` and returns its routers. `at` prefixes JSON
/// paths (`""` or `"tiers.pro."`); `default_index` is the set's default rule's.
fn rule_set(
    rules: &mut Vec<Rule>,
    tier: Option<&str>,
    at: &str,
    default_index: usize,
    raw_routes: Vec<RawRule>,
    shadow_all: bool,
    named: &mut Named,
) -> Result<RuleSet, Problem> {
    let id_prefix = tier.map(|t| format!("{t}:")).unwrap_or_default();

    let mut routes: Vec<Route> = Vec::with_capacity(raw_routes.len());
    // Where each route is in the file, for errors.
    let mut json_paths: Vec<String> = Vec::with_capacity(raw_routes.len());
    // Earlier routes by pattern and by identity, so that each duplicate check is one lookup.
    let mut by_pattern: HashMap<String, Vec<usize>> = HashMap::with_capacity(raw_routes.len());
    let mut by_id: HashMap<Arc<str>, usize> = HashMap::with_capacity(raw_routes.len());
    for (i, raw_route) in raw_routes.iter().enumerate() {
        let json_path = format!("{at}routes[{i}]");
        // A route that names a rule takes its limit, and its budget, from it.
        let target = match &raw_route.rule {
            Some(name) => {
                if let Some(field) = raw_route.limit_fields().next() {
                    return Err(problem(
                        format!("{json_path}.{field}"),
                        InvalidRule::Json(format!(
                            "a route that names a rule takes its limit from it: `{field}` \
                             belongs in the rule {name:?}"
                        )),
                    ));
                }
                Target::Named(named.named_by(name, &json_path)?)
            }
            None => Target::Own(limit_of(raw_route, &json_path, shadow_all)?),
        };
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
        let index = match target {
            Target::Named(index) => index,
            Target::Own(limit) => {
                let index = rules.len();
                rules.push(Rule {
                    id: id.clone(),
                    index,
                    tier: tier.map(Into::into),
                    pattern: Some(pattern.as_str().into()),
                    methods: methods.as_deref().map(Into::into),
                    head_as_get: false,
                    named: false,
                    limit,
                    descriptor: None,
                });
                index
            }
        };
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

/// What a route's requests count against.
enum Target {
    /// A limit of the route's own.
    Own(Option<Limit>),
    /// The named rule at this index.
    Named(usize),
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
