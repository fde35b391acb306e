//! A rules file that cannot be used: where, and why. An envoy ratelimit configuration
//! read with it has errors of its own ([`envoy`]), each wrapping the other where one file
//! joins the other.

#[cfg(feature = "envoy")]
mod envoy;

use std::fmt;
use std::path::PathBuf;

#[cfg(feature = "envoy")]
pub use envoy::{EnvoyConfigError, InvalidEnvoyConfig};

/// A rules file (or rules text) that cannot be used.
///
/// The message names the source (file path or `<inline>`), the JSON location of the problem
/// (for example `routes[2].refill_rate`) and what was expected there. Nothing starts with a
/// bad rules file.
///
/// # Example
///
/// ```
/// use tollgate::{Rules, RulesError};
///
/// let err = Rules::from_json(r#"{"default": {"capacity": 0, "refill_rate": 1}}"#).unwrap_err();
/// assert!(matches!(err, RulesError::Invalid { .. }));
/// assert_eq!(
///     err.to_string(),
///     "<inline>: at default.capacity: capacity must be an integer from 1 to 4294967295, got 0"
/// );
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// envoy ratelimit's configuration, followed with the rules, cannot be read or used.
    #[cfg(feature = "envoy")]
    #[error(transparent)]
    Envoy(Box<EnvoyConfigError>),
    /// The file could not be read.
    #[error("cannot read rules file {}: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file (or a symlink to one): a FIFO, a device, a directory
    /// or a socket. Nothing is read from it.
    ///
    /// ```
    /// use tollgate::{Rules, RulesError};
    ///
    /// # #[cfg(unix)] {
    /// let err = Rules::from_file("/dev/zero").unwrap_err();
    /// assert!(matches!(err, RulesError::NotAFile { file_type: "a character device", .. }));
    /// # }
    /// ```
    #[error(
        "rules file {} is {file_type}, not a regular file: only regular files (or symlinks to them) are read",
        path.display()
    )]
    NotAFile {
        /// The file that was asked for.
        path: PathBuf,
        /// What it is instead, like `a FIFO (named pipe)` or `a directory`.
        file_type: &'static str,
    },
    /// The file holds more than the most that is read
    /// ([`DEFAULT_MAX_RULES_FILE_BYTES`](crate::DEFAULT_MAX_RULES_FILE_BYTES) unless
    /// configured).
    #[error(
        "rules file {} is larger than {max_bytes} bytes, the most that is read (raise the limit with the builder's max_rules_file_bytes or check-rules --max-file-bytes)",
        path.display()
    )]
    TooLarge {
        /// The file that was asked for.
        path: PathBuf,
        /// The limit it exceeds.
        max_bytes: u64,
    },
    /// The text was read but is not a valid rules document.
    #[error("{source_name}: at {location}: {problem}")]
    Invalid {
        /// The file path, or `<inline>` for rules given as a string.
        source_name: String,
        /// Where in the document: a JSON path such as `routes[1].limit`, plus line and column
        /// when the JSON itself is malformed.
        location: Location,
        /// What is wrong and what was expected.
        problem: InvalidRule,
    },
}

/// Where in a rules document a problem is.
///
/// # Example
///
/// ```
/// use tollgate::{Rules, RulesError};
///
/// let err = Rules::from_json("{\n  \"default\": {\"capacity\": 5,}\n}").unwrap_err();
/// let RulesError::Invalid { location, .. } = err else { panic!("expected Invalid") };
/// assert_eq!(location.json_path, "default");
/// assert_eq!(location.line_column, Some((2, 29)));
/// assert_eq!(location.to_string(), "default (line 2, column 29)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// JSON path, `.` for the document root, otherwise like `routes[2].capacity`.
    pub json_path: String,
    /// 1-based line and column, known for syntax errors.
    pub line_column: Option<(u32, u32)>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.json_path.as_str(), self.line_column) {
            // Outside any field, the position says it all.
            (".", Some((line, column))) => write!(f, "line {line}, column {column}"),
            (json_path, Some((line, column))) => {
                write!(f, "{json_path} (line {line}, column {column})")
            }
            (json_path, None) => f.write_str(json_path),
        }
    }
}

/// What is wrong with one part of a rules document.
///
/// # Example
///
/// ```
/// use tollgate::{InvalidRule, Rules, RulesError};
///
/// let json = r#"{"default": {"limit": "10/week"}}"#;
/// let RulesError::Invalid { problem, .. } = Rules::from_json(json).unwrap_err() else {
///     panic!("expected Invalid")
/// };
/// assert_eq!(problem, InvalidRule::LimitShorthand { got: "10/week".into() });
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRule {
    /// The text is not JSON: a syntax error, the end of the file too early, or text after
    /// the document (whitespace after it is fine).
    ///
    /// ```
    /// use tollgate::{Rules, RulesError};
    ///
    /// let err = Rules::from_json("hello").unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "<inline>: at line 1, column 1: not valid JSON: found \"hello\" where a value was expected"
    /// );
    /// let err = Rules::from_json(r#"{"default": {"unlimited": true}} xyz"#).unwrap_err();
    /// assert!(err.to_string().ends_with("at line 1, column 34: not valid JSON: found \"xyz\" after the end of the JSON document"));
    /// ```
    #[error("not valid JSON: found {found} {context}")]
    NotJson {
        /// What is at the location: a few characters, quoted and escaped, or `the end of
        /// the file`.
        found: String,
        /// What was expected there, or why it cannot be there, like `where a value was
        /// expected`.
        context: String,
    },
    /// A YAML rules file that is not YAML, or holds more than one document.
    ///
    /// ```
    /// use tollgate::{InvalidRule, Rules, RulesError};
    ///
    /// let RulesError::Invalid { location, problem, .. } = Rules::from_yaml("default: {limit: 1/second").unwrap_err() else {
    ///     panic!("expected Invalid")
    /// };
    /// assert_eq!(problem, InvalidRule::NotYaml("unclosed bracket '{'".into()));
    /// assert_eq!(location.to_string(), "default (line 1, column 10)");
    /// ```
    #[error("not valid YAML: {0}")]
    NotYaml(String),
    /// A missing or unknown field, or a value of the wrong type.
    #[error("{0}")]
    Json(String),
    /// `capacity` is not an integer in range.
    #[error("capacity must be an integer from 1 to {max}, got {got}", max = u32::MAX)]
    Capacity {
        /// The value as written.
        got: String,
    },
    /// `refill_rate` is not a positive, finite number of tokens per second in range.
    #[error(
        "refill_rate must be a number of tokens per second from {min} to {max}, got {got}",
        min = crate::rules::MIN_REFILL_PER_SEC,
        max = crate::rules::MAX_REFILL_PER_SEC
    )]
    RefillRate {
        /// The value as written.
        got: String,
    },
    /// `capacity / refill_rate` is longer than [`MAX_PERIOD_SECS`](crate::MAX_PERIOD_SECS).
    #[error(
        "capacity / refill_rate (the time the whole bucket takes to refill) must be at most {max} s, got {secs} s",
        max = crate::rules::MAX_PERIOD_SECS
    )]
    Period {
        /// The period the rule asked for, in seconds.
        secs: f64,
    },
    /// `limit` is not of the form `N/unit`, or its `N` is out of range for its unit.
    ///
    /// `N/second` stops at [`MAX_REFILL_PER_SEC`](crate::MAX_REFILL_PER_SEC); the longer
    /// units at the largest capacity, 4294967295.
    ///
    /// ```
    /// use tollgate::Rules;
    ///
    /// let err = Rules::from_json(r#"{"default": {"limit": "1000000001/second"}}"#).unwrap_err();
    /// assert!(err.to_string().contains(
    ///     "N an integer from 1 to 1000000000 for N/second or 4294967295 for N/minute, N/hour, N/day"
    /// ));
    /// assert!(Rules::from_json(r#"{"default": {"limit": "1000000000/second"}}"#).is_ok());
    /// assert!(Rules::from_json(r#"{"default": {"limit": "4294967295/minute"}}"#).is_ok());
    /// ```
    #[error(
        "limit must look like \"N/unit\" with unit one of second, minute, hour, day and N an integer from 1 to {per_second} for N/second or {max} for N/minute, N/hour, N/day; got {got:?}",
        per_second = super::MAX_PER_SECOND,
        max = u32::MAX
    )]
    LimitShorthand {
        /// The value as written.
        got: String,
    },
    /// The rule does not say how much to allow, or says it twice.
    #[error(
        "a rule needs exactly one of: `capacity` with `refill_rate`, `limit: \"N/unit\"`, or `unlimited: true`; {found}"
    )]
    LimitForm {
        /// What the rule had instead.
        found: String,
    },
    /// A `methods` list that is empty or names something that is not an HTTP method.
    #[error("methods must be a non-empty list of HTTP methods such as \"GET\"; {found}")]
    Methods {
        /// What was wrong.
        found: String,
    },
    /// A path that does not start with `/`, holds a control character (NUL, a line break,
    /// DEL...: in the rules file and in runtime routes alike), or is not a valid pattern.
    ///
    /// ```
    /// use tollgate::{InvalidRule, Rules, RulesError};
    ///
    /// let json = r#"{"default": {"unlimited": true}, "routes": [{"path": "/a\u0000b", "unlimited": true}]}"#;
    /// let RulesError::Invalid { problem, .. } = Rules::from_json(json).unwrap_err() else {
    ///     panic!("expected Invalid")
    /// };
    /// assert_eq!(
    ///     problem,
    ///     InvalidRule::Pattern {
    ///         path: "/a\0b".into(),
    ///         reason: "it contains the control character U+0000 at byte 2".into(),
    ///     }
    /// );
    /// ```
    #[error(
        "path {path:?} is not a valid pattern: {reason} (patterns start with '/' and use {{param}} for one segment and {{*rest}} for the remainder)"
    )]
    Pattern {
        /// The pattern as written.
        path: String,
        /// Why it was rejected.
        reason: String,
    },
    /// `limits` is empty or has more than [`MAX_BANDS`](crate::MAX_BANDS) bands.
    #[error("limits must list 1 to {max} bands, got {count}", max = crate::rules::MAX_BANDS)]
    Bands {
        /// How many were given.
        count: usize,
    },
    /// `cost` is not an integer from 1 to the smallest band's capacity.
    #[error(
        "cost must be an integer from 1 to {max} (the smallest capacity of the rule), got {got}"
    )]
    Cost {
        /// The value as written.
        got: String,
        /// The smallest capacity among the rule's bands.
        max: u32,
    },
    /// A field that only makes sense with a limit, on an unlimited rule.
    #[error("`{field}` has no meaning on an unlimited rule")]
    NotWithUnlimited {
        /// The field.
        field: &'static str,
    },
    /// A `unit` that is not 1 to 32 letters, digits, `_` or `-`.
    #[error("unit {got:?} must be 1 to 32 letters, digits, '_' or '-' (\"tokens\", say)")]
    Unit {
        /// The unit as written.
        got: String,
    },
    /// A `settle_header` that cannot name the response field a request's use is read from.
    #[error("settle_header {got:?} {reason}")]
    SettleHeader {
        /// The name as written.
        got: String,
        /// Why it cannot be one.
        reason: &'static str,
    },
    /// A tier name with characters other than letters, digits, `_` and `-`.
    #[error("tier name {name:?} must be 1 to 64 letters, digits, '_' or '-'")]
    TierName {
        /// The name as written.
        name: String,
    },
    /// A tier written as a rule of its own, `{limit: N, window: S}` (N requests per S
    /// seconds, a token bucket), that is not quite one.
    ///
    /// ```
    /// use tollgate::{InvalidRule, Rules, RulesError};
    ///
    /// let json = r#"{"tiers": {"free": {"limit": 100}}, "default_tier": "free"}"#;
    /// let RulesError::Invalid { problem, .. } = Rules::from_json(json).unwrap_err() else {
    ///     panic!("expected Invalid")
    /// };
    /// assert_eq!(problem, InvalidRule::TierForm { found: "`window` is missing".into() });
    /// ```
    #[error(
        "a tier has `default` (a rule) with its `routes`, or `limit` (a whole number of requests, 1 to {max}) per `window` (seconds, above 0); {found}",
        max = u32::MAX
    )]
    TierForm {
        /// What the tier had instead.
        found: String,
    },
    /// A named rule's name that cannot be one: not 1 to 64 letters, digits, `_` or `-`,
    /// `default`, or a name given twice.
    #[error("rule name {name:?} {reason}")]
    RuleName {
        /// The name as written.
        name: String,
        /// Why it cannot be one.
        reason: String,
    },
    /// A route names a rule (`"rule": "<name>"`) the file does not define.
    #[error("the rules file defines no rule {name:?} (named rules: {known:?})")]
    UnknownRuleName {
        /// The name as written.
        name: String,
        /// The named rules the file defines.
        known: Vec<String>,
    },
    /// `default_tier` names a tier that `tiers` does not define.
    #[error("tier {name:?} is not defined in `tiers` (defined: {known:?})")]
    UnknownTier {
        /// The name as written.
        name: String,
        /// The tiers that are defined.
        known: Vec<String>,
    },
    /// A key of `clients` that is not a client key.
    #[error(transparent)]
    ClientKey(#[from] crate::key::InvalidClientKey),
    /// A descriptor of `descriptors` that cannot be matched as written: an empty key or
    /// value, the same key and value twice at one depth, a name given twice, or `replaces`
    /// naming no limit.
    #[error("{reason}")]
    Descriptor {
        /// What is wrong.
        reason: String,
    },
    /// Two routes cover the same path and method.
    #[error("route {path:?} duplicates {other}: each path and method may have only one rule")]
    DuplicateRoute {
        /// The pattern as written.
        path: String,
        /// The JSON path of the earlier rule, like `routes[0]`.
        other: String,
    },
}

impl RulesError {
    /// This error without a line and column: for a document made by tollgate (a runtime
    /// entry's, a YAML file's JSON form), whose positions would tell the reader nothing;
    /// the JSON path still says where.
    pub(crate) fn without_line_column(self) -> Self {
        match self {
            RulesError::Invalid {
                source_name,
                location,
                problem,
            } => RulesError::Invalid {
                source_name,
                location: Location {
                    line_column: None,
                    ..location
                },
                problem,
            },
            other => other,
        }
    }
}

#[cfg(feature = "envoy")]
impl From<EnvoyConfigError> for RulesError {
    fn from(error: EnvoyConfigError) -> Self {
        RulesError::Envoy(Box::new(error))
    }
}

/// A tier the rules do not have. The HTTP layer answers such a request 500 and logs the
/// reason: your authentication and your rules disagree.
///
/// # Example
///
/// ```
/// use http::Method;
/// use tollgate::{ClientKey, Rules};
///
/// let rules = Rules::from_json(r#"{"default": {"limit": "1/minute"}}"#).unwrap();
/// let err = rules.resolve(&Method::GET, "/", Some("gold"), &ClientKey::Unknown).unwrap_err();
/// assert_eq!(err.to_string(), "tier \"gold\" is not in the rules file");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tier {name:?} is not in the rules file")]
pub struct UnknownTier {
    name: Box<str>,
}

impl UnknownTier {
    pub(crate) fn new(name: &str) -> Self {
        Self { name: name.into() }
    }

    /// The tier that was asked for.
    pub fn name(&self) -> &str {
        &self.name
    }
}
