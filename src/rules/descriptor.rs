//! Rules for Envoy rate limit descriptors: the rules file's `descriptors`, a tree per
//! domain, walked one entry at a time as envoy ratelimit walks its configuration.
//!
//! A request (Envoy's `RateLimitRequest`) names a domain and descriptors, each a list of
//! `(key, value)` entries. Entry `i` selects, among the nodes at depth `i`, the one with that
//! key and that exact value, else the one whose value is a wildcard prefix of it (the
//! longest), else the one with that key and no value. The rule is the node reached by the
//! last entry, if it has a limit. The client key is made of the entries' values, so each
//! distinct value counts on its own, as envoy ratelimit counts it.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::{Number, Value};

use super::raw::{Problem, RawRule, limit_of, problem};
use super::{InvalidRule, Rule};
use crate::algorithm::Algorithm;
use crate::key::ClientKey;

/// One node of `descriptors.<domain>` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDescriptor {
    key: String,
    value: Option<String>,
    name: Option<String>,
    #[serde(default)]
    replaces: Vec<String>,
    #[serde(default)]
    descriptors: Vec<RawDescriptor>,
    capacity: Option<Number>,
    refill_rate: Option<Number>,
    limit: Option<String>,
    limits: Option<Vec<Value>>,
    unlimited: Option<bool>,
    algorithm: Option<Algorithm>,
    cost: Option<Number>,
    shadow: Option<bool>,
}

impl RawDescriptor {
    /// The limit fields, as a route writes them, when the node has any.
    fn limit_fields(&self) -> Option<RawRule> {
        let any = self.capacity.is_some()
            || self.refill_rate.is_some()
            || self.limit.is_some()
            || self.limits.is_some()
            || self.unlimited.is_some()
            || self.algorithm.is_some()
            || self.cost.is_some()
            || self.shadow.is_some();
        any.then(|| RawRule {
            path: None,
            methods: None,
            rule: None,
            capacity: self.capacity.clone(),
            refill_rate: self.refill_rate.clone(),
            limit: self.limit.clone(),
            limits: self.limits.clone(),
            unlimited: self.unlimited,
            algorithm: self.algorithm,
            cost: self.cost.clone(),
            shadow: self.shadow,
            unit: None,
            settle_header: None,
        })
    }
}

/// What a descriptor rule adds to a [`Rule`]: its domain, and the names `replaces` uses.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DescriptorInfo {
    pub(super) domain: Box<str>,
    pub(super) name: Option<Box<str>>,
    pub(super) replaces: Box<[Box<str>]>,
}

/// The nodes of one depth, by entry key.
#[derive(Debug, Default)]
struct Level {
    by_key: HashMap<Box<str>, Choices>,
}

/// The nodes of one depth with one key.
#[derive(Debug, Default)]
struct Choices {
    exact: HashMap<Box<str>, Node>,
    /// Wildcard values (`foo*`) without the `*`, longest first.
    prefixes: Vec<(Box<str>, Node)>,
    any: Option<Box<Node>>,
}

#[derive(Debug, Default)]
struct Node {
    /// The rule's position in `Rules::rules`, when the node has a limit.
    rule: Option<usize>,
    children: Level,
}

impl Level {
    fn choose(&self, key: &str, value: &str) -> Option<&Node> {
        let choices = self.by_key.get(key)?;
        choices
            .exact
            .get(value)
            .or_else(|| {
                choices
                    .prefixes
                    .iter()
                    .find(|(prefix, _)| value.starts_with(&**prefix))
                    .map(|(_, node)| node)
            })
            .or(choices.any.as_deref())
    }
}

/// Every domain's tree.
#[derive(Debug, Default)]
pub(super) struct Descriptors {
    domains: HashMap<Box<str>, Level>,
}

impl Descriptors {
    /// The position of the rule for `entries` in `domain`, if one applies.
    pub(super) fn lookup<'e>(
        &self,
        domain: &str,
        entries: impl IntoIterator<Item = (&'e str, &'e str)>,
    ) -> Option<usize> {
        let mut level = self.domains.get(domain)?;
        let mut reached = None;
        for (key, value) in entries {
            let node = level.choose(key, value)?;
            reached = Some(node);
            level = &node.children;
        }
        reached?.rule
    }

    pub(super) fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

/// The client key of a descriptor: its values joined with `/`, each with `%` and `/`
/// percent-encoded, so that different lists of values never give the same key.
pub(super) fn client_of<'e>(entries: impl IntoIterator<Item = (&'e str, &'e str)>) -> ClientKey {
    let mut key = String::new();
    for (i, (_, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            key.push('/');
        }
        encode_into(&mut key, value, &['%', '/']);
    }
    ClientKey::Id(key.into())
}

/// Appends `text` with each of `special` written `%XX`.
fn encode_into(out: &mut String, text: &str, special: &[char]) {
    for c in text.chars() {
        if special.contains(&c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
}

/// What an identity's parts may not contain as they are: the separators, `%` itself, and
/// the braces of Redis Cluster hash tags.
const IN_IDENTITY: &[char] = &['%', '/', '=', '{', '}'];

/// Builds `raw` (the file's `descriptors`) into a tree, pushing each limited node's rule
/// onto `rules`.
pub(super) fn build(
    raw: std::collections::BTreeMap<String, Vec<RawDescriptor>>,
    rules: &mut Vec<Rule>,
    shadow_all: bool,
) -> Result<Descriptors, Problem> {
    let mut domains = HashMap::with_capacity(raw.len());
    for (domain, nodes) in raw {
        let at = format!("descriptors.{domain}");
        if domain.is_empty() {
            return Err(problem(
                "descriptors",
                InvalidRule::Descriptor {
                    reason: "a domain must not be empty".into(),
                },
            ));
        }
        let mut id = String::from("@");
        encode_into(&mut id, &domain, IN_IDENTITY);
        let mut names = Names::default();
        let first_rule = rules.len();
        let mut building = Building {
            domain: &domain,
            rules,
            shadow_all,
            names: &mut names,
        };
        let level = building.level(nodes, &at, &id)?;
        // Every `replaces` must name a limit of the domain.
        for rule in &rules[first_rule..] {
            let Some(info) = &rule.descriptor else {
                continue;
            };
            if let Some(missing) = info.replaces.iter().find(|r| !names.at.contains_key(*r)) {
                let json_path = names.replacing[&rule.index].clone();
                return Err(problem(
                    json_path,
                    InvalidRule::Descriptor {
                        reason: format!(
                            "it replaces {missing:?}, but no descriptor of domain {domain:?} has that name"
                        ),
                    },
                ));
            }
        }
        domains.insert(domain.into_boxed_str(), level);
    }
    Ok(Descriptors { domains })
}

/// The names given in one domain, where, and where each `replaces` is.
#[derive(Default)]
struct Names {
    at: HashMap<Box<str>, String>,
    replacing: HashMap<usize, String>,
}

struct Building<'b> {
    domain: &'b str,
    rules: &'b mut Vec<Rule>,
    shadow_all: bool,
    names: &'b mut Names,
}

impl Building<'_> {
    /// The nodes of one depth; `at` is their list's JSON path and `id` the identity of
    /// their parent.
    fn level(&mut self, nodes: Vec<RawDescriptor>, at: &str, id: &str) -> Result<Level, Problem> {
        let mut level = Level::default();
        // Where each (key, value) was, for duplicates.
        let mut seen: HashMap<(String, Option<String>), String> = HashMap::new();
        for (i, raw) in nodes.into_iter().enumerate() {
            let json_path = format!("{at}[{i}]");
            if raw.key.is_empty() {
                return Err(problem(
                    format!("{json_path}.key"),
                    InvalidRule::Descriptor {
                        reason: "a descriptor key must not be empty".into(),
                    },
                ));
            }
            if raw.value.as_deref() == Some("") {
                return Err(problem(
                    format!("{json_path}.value"),
                    InvalidRule::Descriptor {
                        reason: "an empty value matches nothing; leave `value` out to match any \
                                 value of the key"
                            .into(),
                    },
                ));
            }
            if let Some(earlier) =
                seen.insert((raw.key.clone(), raw.value.clone()), json_path.clone())
            {
                let what = match &raw.value {
                    Some(value) => format!("key {:?} with value {value:?}", raw.key),
                    None => format!("key {:?} without a value", raw.key),
                };
                return Err(problem(
                    json_path,
                    InvalidRule::Descriptor {
                        reason: format!("{what} duplicates {earlier}"),
                    },
                ));
            }
            let mut node_id = format!("{id}/");
            encode_into(&mut node_id, &raw.key, IN_IDENTITY);
            if let Some(value) = &raw.value {
                node_id.push('=');
                encode_into(&mut node_id, value, IN_IDENTITY);
            }
            let node = self.node(&raw, &json_path, &node_id)?;
            let node = Node {
                children: self.level(
                    raw.descriptors,
                    &format!("{json_path}.descriptors"),
                    &node_id,
                )?,
                ..node
            };
            let choices = level.by_key.entry(raw.key.into_boxed_str()).or_default();
            match raw.value {
                None => choices.any = Some(Box::new(node)),
                Some(value) => match value.strip_suffix('*') {
                    Some(prefix) => {
                        choices.prefixes.push((prefix.into(), node));
                        choices
                            .prefixes
                            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
                    }
                    None => {
                        choices.exact.insert(value.into_boxed_str(), node);
                    }
                },
            }
        }
        Ok(level)
    }

    /// The node itself, without its children: its rule, if it has a limit.
    fn node(&mut self, raw: &RawDescriptor, json_path: &str, id: &str) -> Result<Node, Problem> {
        if let Some(name) = &raw.name
            && let Some(earlier) = self.names.at.get(name.as_str())
        {
            return Err(problem(
                format!("{json_path}.name"),
                InvalidRule::Descriptor {
                    reason: format!("the name {name:?} is already given at {earlier}"),
                },
            ));
        }
        let Some(fields) = raw.limit_fields() else {
            for (field, present) in [
                ("name", raw.name.is_some()),
                ("replaces", !raw.replaces.is_empty()),
            ] {
                if present {
                    return Err(problem(
                        format!("{json_path}.{field}"),
                        InvalidRule::Descriptor {
                            reason: format!(
                                "`{field}` names a limit, and this descriptor has none"
                            ),
                        },
                    ));
                }
            }
            return Ok(Node::default());
        };
        let limit = limit_of(&fields, json_path, self.shadow_all)?;
        let index = self.rules.len();
        if let Some(name) = &raw.name {
            self.names
                .at
                .insert(name.as_str().into(), json_path.to_owned());
        }
        if !raw.replaces.is_empty() {
            self.names
                .replacing
                .insert(index, format!("{json_path}.replaces"));
        }
        self.rules.push(Rule {
            id: id.into(),
            index,
            tier: None,
            pattern: None,
            methods: None,
            head_as_get: false,
            named: false,
            limit,
            descriptor: Some(Box::new(DescriptorInfo {
                domain: self.domain.into(),
                name: raw.name.as_deref().map(Into::into),
                replaces: raw.replaces.iter().map(|r| r.as_str().into()).collect(),
            })),
        });
        Ok(Node {
            rule: Some(index),
            children: Level::default(),
        })
    }
}
