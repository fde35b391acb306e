//! An envoy ratelimit configuration that cannot be used: where, and why.

use std::path::PathBuf;

use super::{Location, RulesError};

/// envoy ratelimit's YAML configuration (or the rules file it joins) that cannot be used.
///
/// Like [`RulesError`], the message names the file, the place in the document (a path such
/// as `descriptors[0].rate_limit.unit`, with line and column) and what was expected there.
///
/// # Example
///
/// ```
/// use tollgate::{EnvoyConfigError, EnvoyDomain};
///
/// let yaml = "domain: web\ndescriptors:\n  - key: ip\n    rate_limit:\n      unit: fortnight\n      requests_per_unit: 5\n";
/// let err = EnvoyDomain::from_yaml(yaml, "web.yaml").unwrap_err();
/// assert!(matches!(err, EnvoyConfigError::Invalid { .. }));
/// assert_eq!(
///     err.to_string(),
///     "web.yaml: at descriptors[0].rate_limit.unit (line 5, column 13): unit must be one of second, minute, hour, day, week, month, year; got \"fortnight\""
/// );
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvoyConfigError {
    /// A configuration file could not be read: the same checks as for the rules file (a
    /// regular file, at most [`DEFAULT_MAX_RULES_FILE_BYTES`](crate::DEFAULT_MAX_RULES_FILE_BYTES)).
    #[error("envoy ratelimit config: {0}")]
    File(#[source] RulesError),
    /// The configuration directory could not be listed.
    #[error("cannot list envoy ratelimit config directory {}: {source}", path.display())]
    Directory {
        /// The directory that was asked for.
        path: PathBuf,
        /// Why listing failed.
        #[source]
        source: std::io::Error,
    },
    /// The configuration directory holds no `*.yaml` or `*.yml` file.
    #[error("envoy ratelimit config directory {} has no *.yaml or *.yml file", path.display())]
    NoConfigFiles {
        /// The directory that was asked for.
        path: PathBuf,
    },
    /// A file was read but is not a configuration tollgate can use.
    #[error("{source_name}: at {location}: {problem}")]
    Invalid {
        /// The file path, or the name given with the text.
        source_name: String,
        /// Where in the document: a path such as `descriptors[1].rate_limit`, with line and
        /// column when known.
        location: Location,
        /// What is wrong and what was expected.
        problem: InvalidEnvoyConfig,
    },
    /// Two files (or a file and the rules file) configure the same domain.
    #[error(
        "domain {domain:?} is configured in both {first} and {second}: each domain may be configured in one place only"
    )]
    DuplicateDomain {
        /// The domain.
        domain: String,
        /// Where it was configured first.
        first: String,
        /// Where it was configured again.
        second: String,
    },
}

/// What is wrong with one part of an envoy ratelimit configuration.
///
/// # Example
///
/// ```
/// use tollgate::{EnvoyConfigError, EnvoyDomain, InvalidEnvoyConfig};
///
/// let yaml = "domain: edge\ndescriptors:\n  - key: path\n    value: /api/*/action\n";
/// let EnvoyConfigError::Invalid { location, problem, .. } = EnvoyDomain::from_yaml(yaml, "edge.yaml").unwrap_err() else {
///     panic!("expected Invalid")
/// };
/// assert_eq!(location.json_path, "descriptors[0].value");
/// assert_eq!(location.line_column, Some((4, 12)));
/// assert_eq!(problem, InvalidEnvoyConfig::Wildcard { value: "/api/*/action".into() });
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidEnvoyConfig {
    /// Not YAML, or YAML of the wrong shape: a syntax error, an unknown or missing field, a
    /// value of the wrong type.
    #[error("{0}")]
    Yaml(String),
    /// The file is not UTF-8 text.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// `domain` is empty.
    #[error("domain must not be empty")]
    EmptyDomain,
    /// A descriptor's `key` is empty.
    #[error("key must not be empty")]
    EmptyKey,
    /// Two descriptors of one list have the same key and value.
    #[error("{descriptor} duplicates {other}: each key and value may appear once in a list")]
    DuplicateDescriptor {
        /// The key and value, like `key "database" with value "users"`.
        descriptor: String,
        /// The path of the earlier descriptor, like `descriptors[0]`.
        other: String,
    },
    /// A value with a `*` elsewhere than at its end.
    #[error(
        "value {value:?} has a `*` before its end: only a trailing `*` (a prefix match, like \"files/*\") is supported"
    )]
    Wildcard {
        /// The value as written.
        value: String,
    },
    /// A field envoy ratelimit knows that tollgate does not support.
    #[error("{field} is not supported: {why}")]
    Unsupported {
        /// The field, as written in the YAML.
        field: &'static str,
        /// Why, and what to do instead.
        why: &'static str,
    },
    /// A unit that is not one of envoy ratelimit's.
    #[error("unit must be one of second, minute, hour, day, week, month, year; got {got:?}")]
    Unit {
        /// The unit as written.
        got: String,
    },
    /// `requests_per_unit: 0`, which envoy ratelimit uses to refuse everything.
    #[error(
        "requests_per_unit must be at least 1 (refusing every request, as envoy ratelimit does for 0, is not supported: leave the descriptor out or give it a small limit)"
    )]
    ZeroRequests,
    /// A `rate_limit` without `unit` and `requests_per_unit`, or with half of them.
    #[error(
        "rate_limit needs `unit` and `requests_per_unit`, or `unlimited: true`; it has no `{missing}`"
    )]
    Missing {
        /// The field that is missing.
        missing: &'static str,
    },
    /// A field that only makes sense with a limit, on an unlimited `rate_limit`.
    #[error("`{field}` has no meaning with `unlimited: true`")]
    NotWithUnlimited {
        /// The field.
        field: &'static str,
    },
    /// `burst: 0`.
    #[error("burst must be an integer from 1 to {max}, got 0", max = u32::MAX)]
    ZeroBurst,
    /// `burst` with an algorithm that is not a token bucket.
    #[error(
        "burst is the capacity of a token bucket: it needs algorithm token_bucket, not {algorithm}"
    )]
    BurstAlgorithm {
        /// The algorithm given.
        algorithm: &'static str,
    },
    /// A band tollgate cannot count: refilled more slowly than
    /// [`MIN_REFILL_PER_SEC`](crate::MIN_REFILL_PER_SEC), or taking longer than
    /// [`MAX_PERIOD_SECS`](crate::MAX_PERIOD_SECS) to refill whole.
    #[error(
        "{rate} is outside what tollgate counts: at least {min} requests per second and at most {max} s to refill the whole capacity",
        min = crate::rules::MIN_REFILL_PER_SEC,
        max = crate::rules::MAX_PERIOD_SECS
    )]
    Rate {
        /// The rate as written, like `1 per year` or `1 per year with burst 5`.
        rate: String,
    },
    /// More bands than a rule may have.
    #[error("a rate_limit may have at most {max} bands (its own and `bands`), got {count}", max = crate::rules::MAX_BANDS)]
    Bands {
        /// How many there are.
        count: usize,
    },
    /// Two `rate_limit`s of one domain with the same name.
    #[error(
        "the name {name:?} is already given at {earlier}: `replaces` needs names to be unique in a domain"
    )]
    DuplicateName {
        /// The name.
        name: String,
        /// The path of the earlier one, like `descriptors[0].rate_limit.name`.
        earlier: String,
    },
    /// A `replaces` entry without a name.
    #[error("a replaces entry needs a non-empty `name`")]
    ReplacesWithoutName,
    /// A `replaces` entry naming its own `rate_limit`.
    #[error("rate_limit {name:?} cannot replace itself")]
    ReplacesItself {
        /// The name.
        name: String,
    },
    /// A `replaces` entry naming no `rate_limit` of the domain.
    #[error("replaces {name:?}, but no rate_limit of this domain has that name (names: {known:?})")]
    UnknownReplaced {
        /// The name as written.
        name: String,
        /// The names the domain has.
        known: Vec<String>,
    },
}
