//! envoy ratelimit's own YAML configuration, read unchanged as the rules file's
//! `descriptors` section: [`EnvoyDomain`].

#[cfg(test)]
mod tests;
mod yaml;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use super::error::{EnvoyConfigError, InvalidEnvoyConfig};
use yaml::RawConfig;

use super::json::{line_column_at, push_key};
use super::{DEFAULT_MAX_RULES_FILE_BYTES, Location};

/// One domain of envoy ratelimit's configuration, as the rules file's `descriptors` nodes.
///
/// Each YAML document is one domain:
///
/// ```yaml
/// domain: messaging
/// descriptors:
///   - key: message_type
///     value: marketing
///     descriptors:
///       - key: to_number
///         rate_limit: { unit: day, requests_per_unit: 5 }
/// ```
///
/// becomes `"descriptors": {"messaging": [{"key": "message_type", "value": "marketing",
/// "descriptors": [{"key": "to_number", "limit": "5/day", "algorithm": "fixed_window"}]}]}`
/// in the rules document, which the rules parser then validates with everything else.
///
/// How the fields map:
///
/// - `rate_limit: {unit, requests_per_unit: N}`: one band of N per unit, counted in fixed
///   windows as envoy ratelimit counts them (`"algorithm": "fixed_window"`). second, minute,
///   hour and day become `"N/unit"`; week, month and year become `capacity: N` refilled
///   over envoy ratelimit's own length of the unit (7, 30 and 365 days). Units are read
///   without regard to case, as envoy ratelimit reads them.
/// - `unlimited: true` → `"unlimited": true`; `shadow_mode: true` → `"shadow": true` (ignored
///   on an unlimited or limitless descriptor, where it has nothing to observe);
///   `rate_limit.name` → `"name"`; `rate_limit.replaces: [{name: X}]` → `"replaces": ["X"]`
///   (X must be the name of a `rate_limit` of the same domain); `value: "foo*"` → a prefix
///   match; nested `descriptors` → nested nodes.
/// - `detailed_metric` and `value_to_metric` are accepted and ignored: they only shape envoy
///   ratelimit's own statsd names. `share_threshold: false` and `quota_mode: false` are
///   accepted too.
///
/// tollgate's extensions, as extra keys of `rate_limit`:
///
/// - `algorithm`: `token_bucket`, `fixed_window` or `sliding_window`.
/// - `burst: B`: a token bucket of capacity B refilled at `requests_per_unit` per `unit`;
///   implies `algorithm: token_bucket`, and allows no other algorithm.
/// - `bands: [{unit, requests_per_unit}, ...]`: more bands every request must also fit in.
///
/// Not supported, each refused with an error naming the file, the place and why:
/// `requests_per_unit: 0` (refuse everything), a `*` anywhere but at the end of a value,
/// `share_threshold: true` (one counter for every value matching a wildcard),
/// `quota_mode: true`, `metadata`, a domain configured in two files (envoy ratelimit's
/// `MERGE_DOMAIN_CONFIG`), and unknown keys (envoy ratelimit accepts each of its keys at
/// any level of the document; tollgate only where it means something).
///
/// A directory is read as envoy ratelimit reads its runtime directory: every `*.yaml` and
/// `*.yml` file directly in it (not in subdirectories, and not those whose name starts with
/// `.`), in the order of their names, each one domain.
///
/// # Example
///
/// ```
/// use tollgate::EnvoyDomain;
///
/// let yaml = "domain: mongo_cps\ndescriptors:\n  - key: database\n    value: users\n    rate_limit:\n      unit: second\n      requests_per_unit: 500\n";
/// let domain = EnvoyDomain::from_yaml(yaml, "mongo.yaml").unwrap();
/// assert_eq!(domain.domain(), "mongo_cps");
/// assert_eq!(
///     domain.nodes(),
///     &serde_json::json!([
///         {"key": "database", "value": "users", "limit": "500/second", "algorithm": "fixed_window"}
///     ])
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EnvoyDomain {
    domain: String,
    source_name: String,
    nodes: Value,
}

impl EnvoyDomain {
    /// The domain of one YAML document; `source_name` (a file path, say) names it in errors.
    pub fn from_yaml(text: &str, source_name: &str) -> Result<Self, EnvoyConfigError> {
        let invalid = |(location, problem)| EnvoyConfigError::Invalid {
            source_name: source_name.to_owned(),
            location,
            problem,
        };
        let raw = parse(text).map_err(invalid)?;
        let nodes = raw.nodes().map_err(invalid)?;
        Ok(Self {
            domain: raw.domain.value,
            source_name: source_name.to_owned(),
            nodes,
        })
    }

    /// The domains configured at `path`: one file, or every `*.yaml` and `*.yml` file
    /// directly in a directory (see above). A domain configured in two
    /// files is an error naming both.
    pub fn read(path: &Path) -> Result<Vec<Self>, EnvoyConfigError> {
        let files = if path.is_dir() {
            config_files(path)?
        } else {
            vec![path.to_owned()]
        };
        let mut domains: Vec<Self> = Vec::with_capacity(files.len());
        for file in files {
            let bytes = super::read_file(&file, DEFAULT_MAX_RULES_FILE_BYTES)
                .map_err(EnvoyConfigError::File)?;
            let source_name = file.display().to_string();
            let text = std::str::from_utf8(&bytes).map_err(|err| EnvoyConfigError::Invalid {
                source_name: source_name.clone(),
                location: Location {
                    json_path: ".".into(),
                    line_column: Some(line_column_at(&bytes[..err.valid_up_to()])),
                },
                problem: InvalidEnvoyConfig::NotUtf8,
            })?;
            let domain = Self::from_yaml(text, &source_name)?;
            if let Some(first) = domains.iter().find(|d| d.domain == domain.domain) {
                return Err(EnvoyConfigError::DuplicateDomain {
                    domain: domain.domain,
                    first: first.source_name.clone(),
                    second: source_name,
                });
            }
            domains.push(domain);
        }
        Ok(domains)
    }

    /// The domain, as requests name it.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Where the domain was read from.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// The list of descriptor nodes, in the JSON form of the rules file's `descriptors`.
    pub fn nodes(&self) -> &Value {
        &self.nodes
    }

    /// The rules document `rules_json` (read from `rules_source`) with `domains` added to
    /// its top-level `descriptors` map, as JSON text for the rules parser, which validates
    /// it all together. A domain both files configure is an error naming both.
    ///
    /// Text that is not a JSON object (or whose `descriptors` is not an object) comes back
    /// unchanged, for the rules parser to report where it is wrong. What the rules parser
    /// finds wrong in the merged text it reports at the JSON path (like
    /// `descriptors.web[0]`); the checks of [`from_yaml`](Self::from_yaml) leave little
    /// for it to find.
    ///
    /// ```
    /// use tollgate::{EnvoyDomain, Rules};
    ///
    /// let yaml = "domain: internal\ndescriptors:\n  - key: ldap\n    rate_limit:\n      unlimited: true\n";
    /// let domains = [EnvoyDomain::from_yaml(yaml, "internal.yaml").unwrap()];
    /// let json = EnvoyDomain::merge_into(r#"{"default": {"limit": "10/second"}}"#, "rules.json", &domains).unwrap();
    /// let rules: serde_json::Value = serde_json::from_str(&json).unwrap();
    /// assert_eq!(rules["descriptors"]["internal"][0]["unlimited"], true);
    /// ```
    pub fn merge_into(
        rules_json: &str,
        rules_source: &str,
        domains: &[Self],
    ) -> Result<String, EnvoyConfigError> {
        let Ok(Value::Object(mut document)) = serde_json::from_str::<Value>(rules_json) else {
            return Ok(rules_json.to_owned());
        };
        let descriptors = document
            .entry("descriptors")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(descriptors) = descriptors else {
            return Ok(rules_json.to_owned());
        };
        add_domains(descriptors, rules_source, domains)?;
        Ok(Value::Object(document).to_string())
    }

    /// A rules document of `default_rule` (the JSON of a rule, like
    /// `{"limit": "100/second"}`) and `domains`, as JSON text for the rules parser: for
    /// envoy ratelimit's configuration without a rules file.
    ///
    /// ```
    /// use tollgate::EnvoyDomain;
    ///
    /// let yaml = "domain: internal\ndescriptors:\n  - key: ldap\n    rate_limit:\n      unlimited: true\n";
    /// let domains = [EnvoyDomain::from_yaml(yaml, "internal.yaml").unwrap()];
    /// let json = EnvoyDomain::rules_document(&serde_json::json!({"unlimited": true}), &domains).unwrap();
    /// assert_eq!(
    ///     json,
    ///     r#"{"default":{"unlimited":true},"descriptors":{"internal":[{"key":"ldap","unlimited":true}]}}"#
    /// );
    /// ```
    pub fn rules_document(
        default_rule: &Value,
        domains: &[Self],
    ) -> Result<String, EnvoyConfigError> {
        let mut descriptors = Map::new();
        add_domains(&mut descriptors, "", domains)?;
        let mut document = Map::new();
        document.insert("default".into(), default_rule.clone());
        document.insert("descriptors".into(), Value::Object(descriptors));
        Ok(Value::Object(document).to_string())
    }
}

/// Adds each domain to `descriptors`, refusing one that is there already (from
/// `existing_source`) or given twice.
fn add_domains(
    descriptors: &mut Map<String, Value>,
    existing_source: &str,
    domains: &[EnvoyDomain],
) -> Result<(), EnvoyConfigError> {
    for (i, domain) in domains.iter().enumerate() {
        if descriptors.contains_key(&domain.domain) {
            let first = domains[..i]
                .iter()
                .find(|d| d.domain == domain.domain)
                .map_or(existing_source, |d| d.source_name.as_str());
            return Err(EnvoyConfigError::DuplicateDomain {
                domain: domain.domain.clone(),
                first: first.to_owned(),
                second: domain.source_name.clone(),
            });
        }
        descriptors.insert(domain.domain.clone(), domain.nodes.clone());
    }
    Ok(())
}

/// The `*.yaml` and `*.yml` files directly in `dir`, but for hidden ones, sorted.
fn config_files(dir: &Path) -> Result<Vec<PathBuf>, EnvoyConfigError> {
    let listing_error = |source| EnvoyConfigError::Directory {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(listing_error)? {
        let path = entry.map_err(listing_error)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if yaml && !name.starts_with('.') && !path.is_dir() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(EnvoyConfigError::NoConfigFiles {
            path: dir.to_owned(),
        });
    }
    files.sort();
    Ok(files)
}

/// The document, or where and why it is not one envoy ratelimit's configuration can be.
fn parse(text: &str) -> Result<RawConfig, (Location, InvalidEnvoyConfig)> {
    crate::rules::yaml::deserialize(
        text,
        yaml_path_of,
        "each file holds one domain, in one document",
    )
    .map_err(|not_read| {
        (
            not_read.location,
            InvalidEnvoyConfig::Yaml(not_read.message),
        )
    })
}

/// Fields that are read with their place in the document: deserializing them adds a `value`
/// level to serde's path, which the YAML does not have.
const LOCATED_FIELDS: [&str; 12] = [
    "domain",
    "key",
    "value",
    "rate_limit",
    "unit",
    "requests_per_unit",
    "algorithm",
    "burst",
    "bands",
    "share_threshold",
    "quota_mode",
    "metadata",
];

/// The path as the YAML has it, like `descriptors[0].rate_limit.unit`, `.` for the document
/// itself.
fn yaml_path_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    // Whether the segment before was a located field (or an entry of a located list,
    // `replaces` and `bands`): then a `value` after it is the location's wrapper.
    let mut wrapped = false;
    let mut list = "";
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                wrapped = matches!(list, "replaces" | "bands");
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if wrapped && key == "value" {
                    wrapped = false;
                    continue;
                }
                push_key(&mut out, key);
                wrapped = LOCATED_FIELDS.contains(&key.as_str());
                list = key;
            }
            Segment::Unknown => {}
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}
