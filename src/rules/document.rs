//! The rules file's top level as written ([`RawRules`]): the keys the format gives a meaning
//! to, and named rules under any other key whose value is an object, as files written for a
//! plain token-bucket limiter name their rules (`{"default": …, "special_path": {…}}`).
//!
//! The same reader serves JSON and YAML: it is written against serde's map access, so each
//! syntax's deserializer reports a problem inside a named rule at its own line and column.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::num::NonZeroU32;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::descriptor::RawDescriptor;
use super::raw::RawRule;
use crate::header_style::HeaderStyle;
use crate::policy::OnRedisError;

/// The top-level keys the rules file gives a meaning to.
pub(super) const KNOWN_KEYS: &[&str] = &[
    "default",
    "routes",
    "rules",
    "tiers",
    "default_tier",
    "clients",
    "descriptors",
    "shadow",
    "on_redis_error",
    "local_fallback_instances",
    "headers",
    "problem_details",
];

/// Top-level keys kept for sections the format will add: a rule of one of these names would
/// change meaning when they come, so none may be one.
const KEPT_KEYS: &[&str] = &[
    "upstreams",
    "outbound",
    "quotas",
    "timezone",
    "parents",
    "version",
];

/// A rule set of `tiers` as written: `default` and `routes`, or, as a tier of its own,
/// `limit` requests per `window` seconds (a token bucket), with or without `routes`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRuleSet {
    pub(super) default: Option<RawRule>,
    #[serde(default)]
    pub(super) routes: Vec<RawRule>,
    pub(super) limit: Option<Value>,
    pub(super) window: Option<Value>,
}

/// A named rule, with where the file writes it (`rules.special_path`, `special_path`).
pub(super) struct RawNamed {
    pub(super) name: String,
    pub(super) json_path: String,
    pub(super) rule: RawRule,
}

/// The rules document as written.
#[derive(Default)]
pub(super) struct RawRules {
    pub(super) default: Option<RawRule>,
    pub(super) routes: Vec<RawRule>,
    /// The `rules` section, in name order.
    pub(super) rules: BTreeMap<String, RawRule>,
    /// Named rules written at the top level, in file order.
    pub(super) top_level: Vec<(String, RawRule)>,
    pub(super) tiers: BTreeMap<String, RawRuleSet>,
    pub(super) default_tier: Option<String>,
    pub(super) clients: BTreeMap<String, RawRule>,
    pub(super) descriptors: BTreeMap<String, Vec<RawDescriptor>>,
    pub(super) shadow: bool,
    pub(super) on_redis_error: Option<OnRedisError>,
    pub(super) local_fallback_instances: Option<NonZeroU32>,
    pub(super) headers: Option<HeaderStyle>,
    pub(super) problem_details: Option<bool>,
}

impl RawRules {
    /// Every named rule: the `rules` section's, then the top level's.
    pub(super) fn take_named(&mut self) -> Vec<RawNamed> {
        let section = std::mem::take(&mut self.rules)
            .into_iter()
            .map(|(name, rule)| {
                let mut json_path = "rules".to_owned();
                super::json::push_key(&mut json_path, &name);
                RawNamed {
                    name,
                    json_path,
                    rule,
                }
            });
        let top_level = std::mem::take(&mut self.top_level)
            .into_iter()
            .map(|(name, rule)| {
                let mut json_path = String::new();
                super::json::push_key(&mut json_path, &name);
                RawNamed {
                    name,
                    json_path,
                    rule,
                }
            });
        section.chain(top_level).collect()
    }
}

/// `problem`, found at `json_path`, with a word on the section the first name of the path
/// looks like a misspelling of, when it is a named rule's that does: the rule may have been
/// meant as that section.
pub(super) fn with_section_hint(json_path: &str, problem: &mut super::InvalidRule) {
    let first = json_path
        .split(['.', '['])
        .next()
        .filter(|name| !name.is_empty() && !KNOWN_KEYS.contains(name));
    if let (Some(name), super::InvalidRule::Json(message)) = (first, problem)
        && let Some(near) = near_known_key(name)
    {
        message.push_str(&format!(
            " (`{name}` is read as a named rule; did you mean `{near}`?)"
        ));
    }
}

/// The known key `name` is closest to, when it looks like a misspelling of one (at most two
/// edits, and not the whole name).
pub(super) fn near_known_key(name: &str) -> Option<&'static str> {
    KNOWN_KEYS
        .iter()
        .map(|known| (strsim::damerau_levenshtein(name, known), *known))
        .filter(|(edits, known)| *edits <= 2 && *edits < known.len().min(name.len()))
        .min_by_key(|(edits, _)| *edits)
        .map(|(_, known)| known)
}

impl<'de> Deserialize<'de> for RawRules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TopLevel)
    }
}

struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = RawRules;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a rules document (an object with `default` and the other sections)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRules, A::Error> {
        let mut raw = RawRules::default();
        // A set: a file may hold many thousands of named rules.
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(match KNOWN_KEYS.iter().find(|known| **known == key) {
                    Some(known) => de::Error::duplicate_field(known),
                    None => de::Error::custom(format_args!("duplicate rule `{key}`")),
                });
            }
            match key.as_str() {
                "default" => raw.default = Some(map.next_value()?),
                "routes" => raw.routes = map.next_value()?,
                "rules" => raw.rules = map.next_value()?,
                "tiers" => raw.tiers = map.next_value()?,
                "default_tier" => raw.default_tier = map.next_value()?,
                "clients" => raw.clients = map.next_value()?,
                "descriptors" => raw.descriptors = map.next_value()?,
                "shadow" => raw.shadow = map.next_value()?,
                "on_redis_error" => raw.on_redis_error = map.next_value()?,
                "local_fallback_instances" => raw.local_fallback_instances = map.next_value()?,
                "headers" => raw.headers = map.next_value()?,
                "problem_details" => raw.problem_details = map.next_value()?,
                _ => {
                    let rule = map.next_value_seed(NamedRule { name: &key })?;
                    raw.top_level.push((key.clone(), rule));
                }
            }
            seen.insert(key);
        }
        Ok(raw)
    }
}

/// The value of a top-level key the format does not know, `name`: a named rule when it is
/// an object; otherwise that key is an unknown field. The error is raised inside the value,
/// so that its location names the key.
struct NamedRule<'a> {
    name: &'a str,
}

impl NamedRule<'_> {
    fn unknown<E: de::Error>(&self) -> E {
        if KEPT_KEYS.contains(&self.name) {
            return E::custom(format_args!(
                "`{}` is kept for a section a later version of the rules file adds; name the \
                 rule otherwise",
                self.name
            ));
        }
        E::unknown_field(self.name, KNOWN_KEYS)
    }
}

impl<'de> DeserializeSeed<'de> for NamedRule<'_> {
    type Value = RawRule;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawRule, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NamedRule<'_> {
    type Value = RawRule;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a named rule (an object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRule, A::Error> {
        if KEPT_KEYS.contains(&self.name) {
            return Err(self.unknown());
        }
        RawRule::deserialize(de::value::MapAccessDeserializer::new(map))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<RawRule, A::Error> {
        Err(self.unknown())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawRule, E> {
        Err(self.unknown())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawRule, E> {
        Err(self.unknown())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawRule, E> {
        Err(self.unknown())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawRule, E> {
        Err(self.unknown())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawRule, E> {
        Err(self.unknown())
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawRule, E> {
        Err(self.unknown())
    }

    fn visit_none<E: de::Error>(self) -> Result<RawRule, E> {
        Err(self.unknown())
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::{InvalidRule, Rules, RulesError};

    fn problem_of(json: &str) -> (String, InvalidRule) {
        match Rules::from_json(json) {
            Err(RulesError::Invalid {
                location, problem, ..
            }) => (location.to_string(), problem),
            other => panic!("expected an invalid document, got {other:?}"),
        }
    }

    #[test]
    fn misspelt_sections_are_named() {
        assert_eq!(near_known_key("client"), Some("clients"));
        assert_eq!(near_known_key("defualt"), Some("default"));
        assert_eq!(near_known_key("rotues"), Some("routes"));
        assert_eq!(near_known_key("tier"), Some("tiers"));
        assert_eq!(near_known_key("special_path"), None);
        assert_eq!(near_known_key("api"), None);
    }

    #[test]
    fn a_seed_style_file_names_its_rules_at_the_top_level() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/seed003/rate_limits.json"
        );
        let rules = Rules::from_file(path).unwrap_or_else(|e| panic!("{e}"));
        let default = rules.default_rule().limit().unwrap();
        assert_eq!(default.bands()[0].capacity(), 20);
        assert_eq!(default.bands()[0].refill_per_sec(), 5.0);
        let special = rules.find("special_path").unwrap();
        assert!(special.is_named() && special.tier().is_none());
        assert_eq!(special.limit().unwrap().bands()[0].capacity(), 50);
        assert_eq!(special.limit().unwrap().bands()[0].refill_per_sec(), 10.0);
        // Nothing names it: a warning, not an error.
        let unused: Vec<&str> = rules.unused_rules().map(|u| u.rule().id()).collect();
        assert_eq!(unused, ["special_path"]);
        assert_eq!(rules.lookup(&Method::GET, "/special_path").id(), "default");
    }

    /// Many named rules load, with a route naming each (the duplicate check is a set, so
    /// this takes no quadratic step).
    #[test]
    fn many_named_rules_load() {
        let count = 20_000;
        let mut json = String::from(r#"{"default": {"limit": "1/second"}"#);
        for n in 0..count {
            json.push_str(&format!(r#", "rule{n}": {{"limit": "{}/minute"}}"#, n + 1));
        }
        json.push_str(r#", "routes": ["#);
        for n in 0..count {
            if n > 0 {
                json.push(',');
            }
            json.push_str(&format!(r#"{{"path": "/r/{n}", "rule": "rule{n}"}}"#));
        }
        json.push_str("]}");
        let rules = Rules::from_json(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rules.iter().len(), count + 1);
        assert_eq!(rules.lookup(&Method::GET, "/r/19999").id(), "rule19999");
        assert_eq!(rules.unused_rules().count(), 0);
    }

    #[test]
    fn routes_that_name_a_rule_share_it() {
        let rules = Rules::from_json(
            r#"{
                "default": {"limit": "100/minute"},
                "rules": {"writes": {"limits": ["5/second", "100/hour"], "cost": 2}},
                "routes": [
                    {"path": "/a", "methods": ["POST"], "rule": "writes"},
                    {"path": "/b/{id}", "rule": "writes"},
                    {"path": "/c", "limit": "1/second"}
                ],
                "tiers": {"pro": {"default": {"limit": "1000/minute"},
                                  "routes": [{"path": "/a", "rule": "writes"}]}}
            }"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let writes = rules.find("writes").unwrap();
        assert_eq!(rules.lookup(&Method::POST, "/a"), writes);
        assert_eq!(rules.lookup(&Method::GET, "/b/7"), writes);
        assert_eq!(rules.lookup(&Method::GET, "/a").id(), "default");
        let pro = rules.route(Some("pro"), "GET", "/a").unwrap();
        assert_eq!(pro, writes);
        assert_eq!(writes.limit().unwrap().cost(), 2);
        assert_eq!(rules.unused_rules().count(), 0);
        // One rule for the three routes: the named rule, the default, the other route and
        // the tier's default.
        assert_eq!(rules.iter().len(), 4);
    }

    #[test]
    fn a_route_naming_a_rule_gives_no_limit_of_its_own() {
        let (at, problem) = problem_of(
            r#"{"default": {"limit": "1/second"}, "rules": {"w": {"limit": "2/second"}},
                "routes": [{"path": "/a", "rule": "w", "limit": "3/second"}]}"#,
        );
        assert_eq!(at, "routes[0].limit");
        assert!(
            problem.to_string().contains("takes its limit from it"),
            "{problem}"
        );
        let (at, problem) = problem_of(
            r#"{"default": {"limit": "1/second"}, "rules": {"w": {"limit": "2/second"}},
                "routes": [{"path": "/a", "rule": "r"}]}"#,
        );
        assert_eq!(at, "routes[0].rule");
        assert_eq!(
            problem,
            InvalidRule::UnknownRuleName {
                name: "r".into(),
                known: vec!["w".into()]
            }
        );
        let (at, _) = problem_of(r#"{"default": {"limit": "1/second", "rule": "w"}}"#);
        assert_eq!(at, "default.rule");
        let (at, _) = problem_of(
            r#"{"default": {"limit": "1/second"}, "rules": {"w": {"path": "/a", "limit": "2/second"}}}"#,
        );
        assert_eq!(at, "rules.w.path");
    }

    #[test]
    fn names_are_checked() {
        let (at, problem) = problem_of(
            r#"{"default": {"limit": "1/second"}, "rules": {"w": {"limit": "2/second"}}, "w": {"limit": "3/second"}}"#,
        );
        assert_eq!(at, "w");
        assert!(
            problem.to_string().contains("given twice: at rules.w"),
            "{problem}"
        );
        let (at, problem) = problem_of(
            r#"{"default": {"limit": "1/second"}, "rules": {"default": {"limit": "2/second"}}}"#,
        );
        assert_eq!(at, "rules.default");
        assert!(matches!(problem, InvalidRule::RuleName { .. }), "{problem}");
        let (at, _) = problem_of(
            r#"{"default": {"limit": "1/second"}, "rules": {"a b": {"limit": "2/second"}}}"#,
        );
        assert_eq!(at, "rules[\"a b\"]");
        let (_, problem) =
            problem_of(r#"{"default": {"limit": "1/second"}, "default": {"limit": "2/second"}}"#);
        assert!(
            problem.to_string().contains("duplicate field `default`"),
            "{problem}"
        );
    }

    #[test]
    fn what_is_not_a_rule_is_not_taken_for_one() {
        // Not an object: an unknown field, as before named rules.
        let (at, problem) = problem_of(r#"{"default": {"limit": "1/second"}, "rotues": []}"#);
        assert!(at.starts_with("rotues (line 1, column "), "{at}");
        assert!(
            problem
                .to_string()
                .starts_with("unknown field `rotues`, expected one of `default`")
        );
        // Names kept for sections to come.
        let (at, problem) = problem_of(r#"{"default": {"limit": "1/second"}, "upstreams": {}}"#);
        assert!(at.starts_with("upstreams"), "{at}");
        assert!(
            problem.to_string().contains("kept for a section"),
            "{problem}"
        );
        // A misspelt `default` leaves the rules without one.
        let (at, problem) = problem_of(r#"{"defualt": {"limit": "1/second"}}"#);
        assert_eq!(at, ".");
        assert!(
            problem.to_string().starts_with(
                "missing field `default` (`defualt` is read as a named rule; did you mean `default`?)"
            ),
            "{problem}"
        );
        // A misspelt section that is not a rule says which section it looks like.
        let (at, problem) = problem_of(
            r#"{"default": {"limit": "1/second"},
                "client": {"id:alice": {"limit": "5/second"}}}"#,
        );
        assert!(at.starts_with("client.id:alice (line 2"), "{at}");
        assert!(
            problem
                .to_string()
                .ends_with("(`client` is read as a named rule; did you mean `clients`?)"),
            "{problem}"
        );
    }

    #[test]
    fn a_tier_of_its_own_is_a_token_bucket_over_its_window() {
        let rules = Rules::from_json(
            r#"{"tiers": {"free": {"limit": 100, "window": 60},
                         "pro": {"limit": 1000, "window": 60, "routes": [{"path": "/bulk", "limit": "10/second"}]}},
                "default_tier": "free"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let free = rules.default_rule();
        assert_eq!(free.id(), "free:default");
        let band = free.limit().unwrap().bands()[0];
        assert_eq!(
            (band.capacity(), band.refill_per_sec()),
            (100, 100.0 / 60.0)
        );
        assert_eq!(rules.lookup(&Method::GET, "/bulk"), free);
        assert_eq!(
            rules.route(Some("pro"), "GET", "/bulk").unwrap().id(),
            "pro:/bulk"
        );
        for (tier, found) in [
            (r#"{"limit": 100}"#, "`window` is missing"),
            (r#"{"window": 60}"#, "`limit` is missing"),
            (r#"{"limit": 0, "window": 60}"#, "`limit` is 0"),
            (r#"{"limit": 10, "window": -1}"#, "`window` is -1"),
            (
                r#"{"limit": "100/minute", "window": 60}"#,
                "`limit` is \"100/minute\" (a rule's \"N/unit\" goes in the tier's `default`)",
            ),
            (
                r#"{"default": {"limit": "1/second"}, "limit": 5, "window": 1}"#,
                "it has `default` and `limit`/`window` too",
            ),
        ] {
            let (_, problem) = problem_of(&format!(
                r#"{{"default": {{"limit": "1/second"}}, "tiers": {{"t": {tier}}}}}"#
            ));
            assert_eq!(
                problem,
                InvalidRule::TierForm {
                    found: found.into()
                },
                "{tier}"
            );
        }
        // Without `default_tier`, a top-level `default` is still needed.
        let (at, problem) = problem_of(r#"{"tiers": {"free": {"limit": 100, "window": 60}}}"#);
        assert_eq!(at, ".");
        assert!(
            problem.to_string().starts_with("missing field `default`"),
            "{problem}"
        );
    }

    #[cfg(feature = "yaml")]
    mod yaml {
        use super::*;

        #[test]
        fn a_seed_style_yaml_file_loads_unchanged() {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/seed004/config.yaml"
            );
            let rules = Rules::from_file(path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rules.default_tier(), Some("free"));
            assert_eq!(
                rules.tier_names().collect::<Vec<_>>(),
                ["enterprise", "free", "pro"]
            );
            for (tier, limit) in [("free", 100), ("pro", 1000), ("enterprise", 10_000)] {
                let rule = rules.route(Some(tier), "POST", "/check").unwrap();
                let band = rule.limit().unwrap().bands()[0];
                assert_eq!(band.capacity(), limit, "{tier}");
                assert_eq!(band.refill_per_sec(), f64::from(limit) / 60.0, "{tier}");
            }
        }

        #[test]
        fn one_grammar_two_syntaxes() {
            let json = r#"{
                "default": {"capacity": 20, "refill_rate": 5},
                "special_path": {"limits": ["50/minute", {"capacity": 5, "refill_rate": 1}]},
                "routes": [{"path": "/a/{id}", "methods": ["GET", "put"], "rule": "special_path"},
                           {"path": "/b", "limit": "3/second", "algorithm": "sliding_window", "shadow": true}],
                "tiers": {"free": {"limit": 100, "window": 60}},
                "clients": {"id:partner": {"unlimited": true}},
                "on_redis_error": "deny",
                "headers": "ietf"
            }"#;
            let yaml = "
default: {capacity: 20, refill_rate: 5}
special_path:
  limits: [50/minute, {capacity: 5, refill_rate: 1}]
routes:
  - {path: '/a/{id}', methods: [GET, put], rule: special_path}
  - path: /b
    limit: 3/second
    algorithm: sliding_window
    shadow: true
tiers:
  free: {limit: 100, window: 60}
clients:
  id:partner: {unlimited: true}
on_redis_error: deny
headers: ietf
";
            let from_json = Rules::from_json(json).unwrap_or_else(|e| panic!("{e}"));
            let from_yaml = Rules::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                from_json.iter().collect::<Vec<_>>(),
                from_yaml.iter().collect::<Vec<_>>()
            );
            assert_eq!(from_yaml.on_redis_error(), from_json.on_redis_error());
            assert_eq!(from_yaml.header_style(), from_json.header_style());
            assert_eq!(from_yaml.clients().count(), 1);
        }

        #[test]
        fn yaml_problems_have_a_line_and_column() {
            for (yaml, at, message) in [
                (
                    "default:\n  capacity: 20\n  refil_rate: 5\n",
                    "default.refil_rate (line 3, column 3)",
                    "unknown field `refil_rate`",
                ),
                (
                    "default: {limit: 5/second}\nrotues: []\n",
                    "rotues (line 2",
                    "unknown field `rotues`",
                ),
                (
                    "default: {limit: 1/second\n",
                    "default (line 1, column 10)",
                    "not valid YAML: unclosed bracket",
                ),
                (
                    "default: {limit: 1/second}\nspecial:\n  capcity: 3\n",
                    "special.capcity (line 3",
                    "unknown field `capcity`",
                ),
            ] {
                let err = Rules::from_yaml(yaml).unwrap_err();
                let RulesError::Invalid {
                    location, problem, ..
                } = &err
                else {
                    panic!("{err}")
                };
                assert!(location.to_string().starts_with(at), "{yaml:?}: {err}");
                assert!(problem.to_string().starts_with(message), "{yaml:?}: {err}");
            }
            // What JSON would not take is refused too: runtime entries are merged into the
            // document's JSON form.
            for (yaml, at) in [
                ("default: {limit: 1/second}\nroutes:\n", "routes"),
                (
                    "default: {limit: 1/second}\nrules: {w: {limit: 1/second}}\nroutes:\n  - {path: /a, rule: 12}\n",
                    "routes[0].rule",
                ),
            ] {
                let err = Rules::from_yaml(yaml).unwrap_err();
                let RulesError::Invalid { location, .. } = &err else {
                    panic!("{err}")
                };
                assert_eq!(location.to_string(), at, "{yaml:?}: {err}");
            }
            // Found after reading, as JSON's: at the path.
            let err = Rules::from_yaml("default: {limit: 10/week}").unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("<inline>: at default.limit: limit must look like"),
                "{err}"
            );
        }
    }
}
