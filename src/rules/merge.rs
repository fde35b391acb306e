//! Runtime entries, merged into a rules document.
//!
//! An entry is a fragment of a rules file: a client override (a value of `clients`) or a
//! route (an element of the top-level `routes`). It is validated alone, by the parser, as
//! the only entry of a small document, so its errors are the file's, at a JSON path that
//! names it (`clients.id:k.limit`, `routes[0].limit`). Merged, it takes the place of the
//! file's entry with the same identity (the same client key; the same rule identity), or
//! is added after the file's; the merged document is parsed again as a whole, which is what
//! catches an entry that conflicts with the others (two patterns that overlap).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use super::document::KNOWN_KEYS;
use super::parse::{parse, route_id};
use super::{Limit, Rules, RulesError};
use crate::key::ClientKey;

/// The source name of an entry validated alone, in its errors.
const ENTRY_SOURCE: &str = "runtime entry";

/// What a rule applies to: a rule of the rules (by its identity), or one client (an
/// override, from `clients`). Written `rule:<identity>` or `client:<client key>`: the form
/// runtime entries are stored under.
///
/// # Example
///
/// ```
/// use tollgate::{ClientKey, RuleTarget};
///
/// let route: RuleTarget = "rule:/api/users/<id>@GET".parse().unwrap();
/// assert_eq!(route, RuleTarget::Rule("/api/users/<id>@GET".into()));
/// let client = RuleTarget::Client(ClientKey::id("k"));
/// assert_eq!(client.to_string(), "client:id:k");
/// assert_eq!("client:id:k".parse::<RuleTarget>().unwrap(), client);
/// assert!("route:/x".parse::<RuleTarget>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleTarget {
    /// A rule, by its identity: `default`, a route's (`/api/data@GET`), or a tier's
    /// (`pro:default`).
    Rule(String),
    /// A client's override.
    Client(ClientKey),
}

impl fmt::Display for RuleTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleTarget::Rule(id) => write!(f, "rule:{id}"),
            RuleTarget::Client(client) => write!(f, "client:{client}"),
        }
    }
}

impl FromStr for RuleTarget {
    type Err = InvalidRuleTarget;

    /// Parses `rule:<identity>` or `client:<client key>`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(id) = text.strip_prefix("rule:").filter(|id| !id.is_empty()) {
            return Ok(RuleTarget::Rule(id.to_owned()));
        }
        text.strip_prefix("client:")
            .and_then(ClientKey::parse)
            .map(RuleTarget::Client)
            .ok_or_else(|| InvalidRuleTarget(text.into()))
    }
}

impl serde::Serialize for RuleTarget {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Text that is not a [`RuleTarget`].
///
/// # Example
///
/// ```
/// use tollgate::RuleTarget;
///
/// let err = "client:alice".parse::<RuleTarget>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "\"client:alice\" names no rule or client: use \"rule:<rule identity>\" or \"client:<client key>\""
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} names no rule or client: use \"rule:<rule identity>\" or \"client:<client key>\"")]
pub struct InvalidRuleTarget(Box<str>);

/// A runtime entry, valid alone: its target and its rule as the rules file writes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) target: RuleTarget,
    pub(crate) rule: Value,
    /// A client override's limit as validated (`None`: unlimited), so that it goes in force
    /// without the rules being parsed again; `None` for a route.
    client_limit: Option<Option<Limit>>,
}

impl Entry {
    /// `rule` as `client`'s override, validated as the file's `clients` entry would be.
    pub(crate) fn client(client: &ClientKey, rule: Value) -> Result<Self, RulesError> {
        let key = client.to_string();
        let mut clients = Map::new();
        clients.insert(key.clone(), rule.clone());
        let rules = alone(Value::Object(Map::from_iter([
            ("default".to_owned(), unlimited()),
            ("clients".to_owned(), Value::Object(clients)),
        ])))?;
        // The parser took the key, so it parses; its canonical form names the entry (an
        // IPv6 network with its host bits cleared).
        let client = ClientKey::parse(&key).unwrap_or_else(|| client.clone());
        let limit = rules.clients().next().and_then(|(_, limit)| limit.cloned());
        Ok(Entry {
            target: RuleTarget::Client(client),
            rule,
            client_limit: Some(limit),
        })
    }

    /// `route`, validated as an entry of the file's top-level `routes` would be; its
    /// target is its rule identity.
    pub(crate) fn route(route: Value) -> Result<Self, RulesError> {
        let rules = alone(Value::Object(Map::from_iter([
            ("default".to_owned(), unlimited()),
            ("routes".to_owned(), Value::Array(vec![route.clone()])),
        ])))?;
        // The default first, then the one route.
        let id = rules.iter().nth(1).map_or_else(
            || route_id(&route, None).unwrap_or_default(),
            |rule| rule.id().to_owned(),
        );
        Ok(Entry {
            target: RuleTarget::Rule(id),
            rule: route,
            client_limit: None,
        })
    }

    /// A client override's limit (`Some(None)`: unlimited) in rules whose top-level
    /// `shadow` is `shadow_all`, as the rules file's `clients` would give it; `None` for a
    /// route.
    pub(crate) fn client_limit(&self, shadow_all: bool) -> Option<Option<Limit>> {
        let limit = self.client_limit.clone()?;
        Some(limit.map(|limit| if shadow_all { limit.shadowed() } else { limit }))
    }

    /// An entry as stored under `target` (`client:<key>` or `rule:<route identity>`):
    /// valid alone, and stored under its own target. Otherwise, why it cannot be used.
    pub(crate) fn stored(target: &str, rule: Value) -> Result<Self, String> {
        let parsed: RuleTarget = target
            .parse()
            .map_err(|e: InvalidRuleTarget| e.to_string())?;
        let entry = match &parsed {
            RuleTarget::Client(client) => Entry::client(client, rule),
            RuleTarget::Rule(id) if id.starts_with('/') => Entry::route(rule),
            RuleTarget::Rule(_) => {
                return Err(format!(
                    "{target:?} is not a route: runtime entries are client overrides and top-level routes"
                ));
            }
        }
        .map_err(|e| e.to_string())?;
        if entry.target.to_string() != target {
            return Err(format!(
                "the entry stored under {target:?} is {}'s",
                entry.target
            ));
        }
        Ok(entry)
    }
}

/// `{"unlimited": true}`: the default of the documents entries are validated in.
fn unlimited() -> Value {
    Value::Object(Map::from_iter([(
        "unlimited".to_owned(),
        Value::Bool(true),
    )]))
}

/// Parses a document made to validate one entry. Its text is made here, so a line and
/// column in it would tell the user nothing: the JSON path says where.
fn alone(document: Value) -> Result<Rules, RulesError> {
    parse(&document.to_string(), ENTRY_SOURCE).map_err(RulesError::without_line_column)
}

/// A rules document with entries merged into it.
#[derive(Debug, Clone)]
pub(crate) struct Merged {
    document: Value,
    /// Where each top-level route is in `routes`, by identity.
    routes: HashMap<String, usize>,
    /// The keys of `clients` not written in their canonical form, by that form: an entry
    /// for the same client replaces them.
    aliases: HashMap<String, String>,
}

impl Merged {
    /// `base`, a document the parser accepted, ready to take entries.
    pub(crate) fn new(base: Value) -> Self {
        let routes = base
            .get("routes")
            .and_then(Value::as_array)
            .map(|routes| {
                routes
                    .iter()
                    .enumerate()
                    .filter_map(|(at, route)| Some((route_id(route, None)?, at)))
                    .collect()
            })
            .unwrap_or_default();
        let aliases = base
            .get("clients")
            .and_then(Value::as_object)
            .map(|clients| {
                clients
                    .keys()
                    .filter_map(|key| {
                        let canonical = ClientKey::parse(key)?.to_string();
                        (canonical != *key).then(|| (canonical, key.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            document: base,
            routes,
            aliases,
        }
    }

    /// Puts `entry` in place of the document's entry with the same target, or adds it.
    pub(crate) fn add(&mut self, entry: &Entry) {
        let Some(document) = self.document.as_object_mut() else {
            return;
        };
        match &entry.target {
            RuleTarget::Client(client) => {
                let empty = || Value::Object(Map::new());
                if let Value::Object(clients) = field(document, "clients", empty, Value::is_object)
                {
                    let key = client.to_string();
                    if let Some(alias) = self.aliases.remove(&key) {
                        clients.remove(&alias);
                    }
                    clients.insert(key, entry.rule.clone());
                }
            }
            RuleTarget::Rule(id) => {
                let empty = || Value::Array(Vec::new());
                if let Value::Array(routes) = field(document, "routes", empty, Value::is_array) {
                    match self.routes.get(id).and_then(|&at| routes.get_mut(at)) {
                        Some(route) => *route = entry.rule.clone(),
                        None => {
                            self.routes.insert(id.clone(), routes.len());
                            routes.push(entry.rule.clone());
                        }
                    }
                }
            }
        }
    }

    /// The merged document.
    pub(crate) fn document(&self) -> &Value {
        &self.document
    }

    /// Validates the merged document, as the rules named `name`.
    pub(crate) fn parse(&self, name: &str) -> Result<Rules, RulesError> {
        parse(&self.document.to_string(), name)
    }
}

/// The value at `key` of `document`, made `empty()` if it is missing or not of the kind
/// `fits` accepts (which a document the parser accepted never has).
fn field<'a>(
    document: &'a mut Map<String, Value>,
    key: &str,
    empty: fn() -> Value,
    fits: fn(&Value) -> bool,
) -> &'a mut Value {
    let value = document.entry(key).or_insert_with(empty);
    if !fits(value) {
        *value = empty();
    }
    value
}

/// Every rule of a rules document (one the parser accepted), with its target: the
/// default, the named rules, the routes, each tier's default and routes (tiers in name
/// order), then the client overrides (in key order). A tier written `{limit, window}` is its
/// default rule as written.
pub(crate) fn rules_of(document: &Value) -> Vec<(RuleTarget, Value)> {
    let mut found = Vec::new();
    let mut rule_set = |set: &Value, tier: Option<&str>| {
        let prefix = tier.map(|t| format!("{t}:")).unwrap_or_default();
        let per_window = || {
            let limit = set.get("limit")?;
            let window = set.get("window")?;
            Some(Value::Object(Map::from_iter([
                ("limit".to_owned(), limit.clone()),
                ("window".to_owned(), window.clone()),
            ])))
        };
        if let Some(default) = set.get("default").cloned().or_else(per_window) {
            found.push((RuleTarget::Rule(format!("{prefix}default")), default));
        }
        if tier.is_none() {
            let section = document.get("rules").and_then(Value::as_object);
            let top_level = document
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(key, value)| !KNOWN_KEYS.contains(&key.as_str()) && value.is_object());
            for (name, rule) in section.into_iter().flatten().chain(top_level) {
                found.push((RuleTarget::Rule(name.clone()), rule.clone()));
            }
        }
        for route in set
            .get("routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(id) = route_id(route, tier) {
                found.push((RuleTarget::Rule(id), route.clone()));
            }
        }
    };
    rule_set(document, None);
    if let Some(tiers) = document.get("tiers").and_then(Value::as_object) {
        let mut names: Vec<&String> = tiers.keys().collect();
        names.sort();
        for name in names {
            rule_set(&tiers[name.as_str()], Some(name));
        }
    }
    if let Some(clients) = document.get("clients").and_then(Value::as_object) {
        let mut clients: Vec<(ClientKey, &Value)> = clients
            .iter()
            .filter_map(|(key, rule)| Some((ClientKey::parse(key)?, rule)))
            .collect();
        clients.sort_by_cached_key(|(key, _)| key.to_string());
        found.extend(
            clients
                .into_iter()
                .map(|(key, rule)| (RuleTarget::Client(key), rule.clone())),
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merged(base: Value, entries: &[Entry]) -> Value {
        let mut merged = Merged::new(base);
        for entry in entries {
            merged.add(entry);
        }
        merged.document
    }

    #[test]
    fn a_route_takes_the_place_of_the_files_route_with_its_identity() {
        let base = json!({"default": {"limit": "5/second"}, "routes": [
            {"path": "/a", "limit": "1/second"},
            {"path": "/b", "methods": ["post", "GET"], "limit": "2/second"},
        ]});
        let same =
            Entry::route(json!({"path": "/b", "methods": ["GET", "POST"], "limit": "9/second"}))
                .unwrap();
        assert_eq!(same.target, RuleTarget::Rule("/b@GET,POST".into()));
        let new = Entry::route(json!({"path": "/c/{id}", "limit": "3/second"})).unwrap();
        assert_eq!(new.target, RuleTarget::Rule("/c/<id>".into()));
        let document = merged(base, &[same, new]);
        assert_eq!(
            document["routes"],
            json!([
                {"path": "/a", "limit": "1/second"},
                {"path": "/b", "methods": ["GET", "POST"], "limit": "9/second"},
                {"path": "/c/{id}", "limit": "3/second"},
            ])
        );
    }

    #[test]
    fn a_client_replaces_the_files_override_however_it_was_written() {
        let base = json!({"default": {"limit": "5/second"},
            "clients": {"ip:2001:db8::1/64": {"limit": "1/second"}, "id:a": {"limit": "2/second"}}});
        let network: ClientKey = "ip:2001:db8::/64".parse().unwrap();
        let entry = Entry::client(&network, json!({"limit": "7/second"})).unwrap();
        let document = merged(base, &[entry]);
        assert_eq!(
            document["clients"],
            json!({"ip:2001:db8::/64": {"limit": "7/second"}, "id:a": {"limit": "2/second"}})
        );
        // Into a document without clients or routes.
        let entry = Entry::client(&ClientKey::id("k"), json!({"unlimited": true})).unwrap();
        let document = merged(json!({"default": {"limit": "1/second"}}), &[entry]);
        assert_eq!(document["clients"], json!({"id:k": {"unlimited": true}}));
    }

    #[test]
    fn entries_are_validated_alone_with_the_files_messages() {
        let err = Entry::client(&ClientKey::id("k"), json!({"limit": "0/second"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "runtime entry: at clients.id:k.limit: limit must look like \"N/unit\" with unit one of second, \
             minute, hour, day and N an integer from 1 to 1000000000 for N/second or 4294967295 for \
             N/minute, N/hour, N/day; got \"0/second\""
        );
        // A serde error: the JSON path, and no line or column of a document the user never saw.
        let err = Entry::route(json!({"path": "/a", "limt": "1/second"})).unwrap_err();
        let RulesError::Invalid { location, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(location.json_path, "routes[0].limt");
        assert_eq!(location.line_column, None);
        let err = Entry::client(&ClientKey::id("has space"), json!({"limit": "1/second"}));
        assert!(err.unwrap_err().to_string().contains("is not a client key"));
        // The file's check on paths, for runtime routes and for those read back from Redis
        // or the state file.
        let route = json!({"path": "/a\u{0}b", "unlimited": true});
        let message = "runtime entry: at routes[0].path: path \"/a\\0b\" is not a valid pattern: \
                       it contains the control character U+0000 at byte 2";
        let err = Entry::route(route.clone()).unwrap_err().to_string();
        assert!(err.starts_with(message), "{err}");
        let err = Entry::stored("rule:/a\u{0}b", route).unwrap_err();
        assert!(err.starts_with(message), "{err}");
    }

    #[test]
    fn stored_entries_must_be_stored_under_their_own_target() {
        let route = json!({"path": "/a", "limit": "1/second"});
        assert!(Entry::stored("rule:/a", route.clone()).is_ok());
        assert_eq!(
            Entry::stored("rule:/b", route.clone()).unwrap_err(),
            "the entry stored under \"rule:/b\" is rule:/a's"
        );
        assert!(Entry::stored("rule:default", json!({"limit": "1/second"})).is_err());
        assert!(Entry::stored("nonsense", route).is_err());
        let entry = Entry::stored("client:id:k", json!({"limit": "1/second"})).unwrap();
        assert_eq!(entry.target, RuleTarget::Client(ClientKey::id("k")));
    }

    #[test]
    fn every_rule_of_a_document_with_its_target() {
        let document = json!({
            "default": {"limit": "1/second"},
            "routes": [{"path": "/a/{x}", "methods": ["get"], "limit": "1/second"}],
            "tiers": {"z": {"default": {"limit": "3/second"}}, "a": {"default": {"limit": "2/second"}}},
            "clients": {"id:b": {"unlimited": true}, "id:a": {"unlimited": true}}
        });
        let targets: Vec<String> = rules_of(&document)
            .into_iter()
            .map(|(target, _)| target.to_string())
            .collect();
        assert_eq!(
            targets,
            [
                "rule:default",
                "rule:/a/<x>@GET",
                "rule:a:default",
                "rule:z:default",
                "client:id:a",
                "client:id:b"
            ]
        );
    }
}
