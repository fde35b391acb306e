//! The rules file: which limit applies to which request.
//!
//! ```json
//! {
//!   "default": { "capacity": 20, "refill_rate": 5 },
//!   "routes": [
//!     { "path": "/api/data", "limits": [{ "capacity": 10, "refill_rate": 1 }, "1000/hour"] },
//!     { "path": "/api/submit", "methods": ["POST"], "limit": "30/minute", "cost": 2 },
//!     { "path": "/api/search", "limit": "100/minute", "algorithm": "sliding_window" },
//!     { "path": "/static/{*rest}", "unlimited": true }
//!   ],
//!   "tiers": { "pro": { "default": { "capacity": 200, "refill_rate": 50 } } },
//!   "clients": { "id:partner-42": { "limit": "1000/minute" } }
//! }
//! ```
//!
//! Everything is validated once, at load; a request does one router lookup in its rule set
//! (and one map lookup when the file has client overrides).

mod clients;
mod descriptor;
mod document;
#[cfg(feature = "envoy")]
pub(crate) mod envoy;
mod error;
mod file;
mod json;
mod merge;
mod metering;
mod parse;
pub(crate) mod path;
mod raw;
mod router;
#[cfg(test)]
mod tests;
#[cfg(feature = "yaml")]
pub(crate) mod yaml;

/// The default rule's limit of these rules, for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn default_limit(json: &str) -> Limit {
    let rules = Rules::from_json(json).expect("valid test rules");
    let limit = rules
        .default_rule()
        .limit()
        .expect("a limited default rule");
    limit.clone()
}

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Method;

use crate::algorithm::{Algorithm, BandSpec};
use crate::header_style::{HeaderStyle, Rendering};
use crate::key::{ClientKey, KeyRef};
use crate::policy::OnRedisError;
use metering::Metering;
use router::RuleSet;

pub(crate) use clients::Clients;
pub use error::{InvalidRule, Location, RulesError, UnknownTier};
pub use file::DEFAULT_MAX_RULES_FILE_BYTES;
pub(crate) use file::{Unread, read as read_file, read_bounded};
pub(crate) use merge::{Entry, Merged, rules_of};
pub use merge::{InvalidRuleTarget, RuleTarget};
pub(crate) use parse::pattern_id;

/// Slowest refill accepted: one token every 11.6 days.
pub const MIN_REFILL_PER_SEC: f64 = 1e-6;
/// Fastest refill accepted: one token per nanosecond.
pub const MAX_REFILL_PER_SEC: f64 = 1e9;
/// The largest `N` of `"N/second"`: a faster refill than [`MAX_REFILL_PER_SEC`] is refused.
/// Every longer unit takes any capacity up to `u32::MAX`.
const MAX_PER_SECOND: u64 = MAX_REFILL_PER_SEC as u64;
/// Most bands one rule may have.
pub const MAX_BANDS: usize = 8;
/// Longest period accepted (`capacity / refill_rate`, the time a whole bucket takes to
/// refill, or a window's length), in seconds: about 31.7 years. It keeps every time the
/// algorithms compute exact in microseconds, in Rust and in Redis's Lua.
pub const MAX_PERIOD_SECS: u64 = 1_000_000_000;

/// One band of a limit: `capacity` per period, where `period = capacity / refill_per_sec`.
/// For a token bucket: a bucket of `capacity` tokens gaining `refill_per_sec` tokens per
/// second; for the window algorithms: `capacity` requests per window of one period.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tollgate::Band;
///
/// let band = Band::new(30, 0.5).unwrap();
/// assert_eq!(band.capacity(), 30);
/// assert_eq!(band.refill_period(), Duration::from_secs(2));
/// assert_eq!(band.period(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    capacity: NonZeroU32,
    refill_per_sec: f64,
    /// The period in whole microseconds (at least 1), computed once: the window of the
    /// window algorithms.
    window_us: i64,
}

impl Band {
    /// A band of `capacity` refilled at `refill_per_sec`, or `None` when capacity is zero,
    /// the rate is outside [`MIN_REFILL_PER_SEC`]..=[`MAX_REFILL_PER_SEC`], or the period
    /// is longer than [`MAX_PERIOD_SECS`].
    pub fn new(capacity: u32, refill_per_sec: f64) -> Option<Self> {
        let capacity = NonZeroU32::new(capacity)?;
        ((MIN_REFILL_PER_SEC..=MAX_REFILL_PER_SEC).contains(&refill_per_sec)
            && period_secs(capacity.get(), refill_per_sec) <= MAX_PERIOD_SECS as f64)
            .then(|| Self::made(capacity, refill_per_sec))
    }

    fn made(capacity: NonZeroU32, refill_per_sec: f64) -> Self {
        Self {
            capacity,
            refill_per_sec,
            window_us: (period_secs(capacity.get(), refill_per_sec) * 1e6)
                .round()
                .max(1.0) as i64,
        }
    }

    /// The most tokens (or requests per window).
    pub fn capacity(&self) -> u32 {
        self.capacity.get()
    }

    /// Tokens added per second.
    pub fn refill_per_sec(&self) -> f64 {
        self.refill_per_sec
    }

    /// The time one token takes to refill.
    pub fn refill_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.refill_per_sec)
    }

    /// The time the whole capacity takes to refill: the window of the window algorithms.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(period_secs(self.capacity.get(), self.refill_per_sec))
    }

    /// This band split `share` ways: capacity and rate divided by `share` (capacity at
    /// least 1, rate at least [`MIN_REFILL_PER_SEC`]), so that `share` instances deciding
    /// alone admit about what this band admits.
    pub(crate) fn divided_by(&self, share: u32) -> Self {
        let share = share.max(1);
        if share == 1 {
            return *self;
        }
        Self::made(
            NonZeroU32::new(self.capacity.get() / share).unwrap_or(NonZeroU32::MIN),
            (self.refill_per_sec / f64::from(share)).max(MIN_REFILL_PER_SEC),
        )
    }

    pub(crate) fn spec(&self) -> BandSpec {
        BandSpec {
            capacity: f64::from(self.capacity.get()),
            refill_per_sec: self.refill_per_sec,
            window_us: self.window_us,
        }
    }
}

/// `capacity / refill_per_sec`, in seconds.
fn period_secs(capacity: u32, refill_per_sec: f64) -> f64 {
    f64::from(capacity) / refill_per_sec
}

impl Band {
    /// The band as the rules file's `"N/unit"` shorthand, when its period is exactly one
    /// second, minute, hour or day.
    ///
    /// ```
    /// use tollgate::Band;
    ///
    /// assert_eq!(Band::new(100, 100.0 / 60.0).unwrap().shorthand().as_deref(), Some("100/minute"));
    /// assert_eq!(Band::new(10, 1.0).unwrap().shorthand(), None); // 10 per 10 s
    /// ```
    pub fn shorthand(&self) -> Option<String> {
        let period = period_secs(self.capacity.get(), self.refill_per_sec);
        let unit = [
            (1.0, "second"),
            (60.0, "minute"),
            (3600.0, "hour"),
            (86400.0, "day"),
        ]
        .into_iter()
        .find(|(secs, _)| (period - secs).abs() <= secs * 1e-9)?
        .1;
        Some(format!("{}/{unit}", self.capacity))
    }
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per {:?}", self.capacity, self.period())
    }
}

/// How much a rule allows: one or more bands, the algorithm they use, what a request costs,
/// and whether the rule only observes (shadow).
///
/// # Example
///
/// ```
/// use http::Method;
/// use tollgate::{Algorithm, Rules};
///
/// let rules = Rules::from_json(r#"{
///     "default": {"limits": [{"capacity": 10, "refill_rate": 1}, "1000/hour"], "cost": 2}
/// }"#).unwrap();
/// let limit = rules.lookup(&Method::GET, "/").limit().unwrap();
/// assert_eq!(limit.algorithm(), Algorithm::TokenBucket);
/// assert_eq!(limit.bands().len(), 2);
/// assert_eq!(limit.bands()[1].capacity(), 1000);
/// assert_eq!(limit.cost(), 2);
/// assert!(!limit.shadow());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    algorithm: Algorithm,
    bands: Arc<[Band]>,
    cost: u32,
    shadow: bool,
    /// Its unit and settle header, when the rules name them. One pointer, so that a limit
    /// stays cheap to clone with each verdict.
    metering: Option<Arc<Metering>>,
}

impl Limit {
    /// The algorithm every band uses.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The bands; a request must fit in all of them.
    pub fn bands(&self) -> &[Band] {
        &self.bands
    }

    /// Tokens (or requests) one request takes from every band.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// The bands in the rules file's words: `"10/second"`, or several joined with `" + "`
    /// (`"10/second + 1000/hour"`), each band without a shorthand as `"N per <period>"`.
    ///
    /// ```
    /// use tollgate::Rules;
    ///
    /// let rules = Rules::from_json(r#"{"default": {"limits": ["10/second", {"capacity": 5, "refill_rate": 1}]}}"#).unwrap();
    /// assert_eq!(rules.default_rule().limit().unwrap().rate(), "10/second + 5 per 5s");
    /// ```
    pub fn rate(&self) -> String {
        let bands: Vec<String> = self
            .bands
            .iter()
            .map(|band| band.shorthand().unwrap_or_else(|| band.to_string()))
            .collect();
        bands.join(" + ")
    }

    /// The smallest capacity of the bands: the most one request may take.
    pub fn smallest_capacity(&self) -> u32 {
        self.bands.iter().map(Band::capacity).min().unwrap_or(1)
    }

    /// Whether the rule decides and reports but never refuses.
    pub fn shadow(&self) -> bool {
        self.shadow
    }

    /// What one unit of the limit is (`"unit"`: `tokens`, `bytes`, …), when the rules say;
    /// requests otherwise. Fronts show it in their headers and statistics.
    ///
    /// ```
    /// use tollgate::Rules;
    ///
    /// let rules = Rules::from_json(r#"{"default": {"limit": "30000/minute", "unit": "tokens"}}"#).unwrap();
    /// assert_eq!(rules.default_rule().limit().unwrap().unit(), Some("tokens"));
    /// ```
    pub fn unit(&self) -> Option<&str> {
        self.metering.as_ref()?.unit.as_deref()
    }

    /// The response header (or trailer) the app tells a request's use in, lowercase
    /// (`"settle_header"`): a request under this limit reserves its cost (the rule's, or the
    /// [`Cost`](crate::Cost) the app set) when admitted, and the layer settles it with the
    /// number the response carries there, then removes the field.
    ///
    /// ```
    /// use tollgate::Rules;
    ///
    /// let rules = Rules::from_json(r#"{"default": {"limit": "30000/minute", "settle_header": "X-Tokens-Used"}}"#).unwrap();
    /// assert_eq!(rules.default_rule().limit().unwrap().settle_header(), Some("x-tokens-used"));
    /// ```
    pub fn settle_header(&self) -> Option<&str> {
        self.metering.as_ref()?.settle_header.as_deref()
    }

    /// Whether `rule`'s limit names a unit or a settle header this one does not: a client's
    /// override, which counts as its rule does.
    #[inline]
    pub(crate) fn lacks_metering_of(&self, rule: &Limit) -> bool {
        rule.metering.is_some() && self.metering.is_none()
    }

    /// This limit with `rule`'s unit and settle header.
    #[cold]
    pub(crate) fn with_metering_of(&self, rule: &Limit) -> Limit {
        Limit {
            metering: rule.metering.clone(),
            ..self.clone()
        }
    }

    /// This limit in shadow mode, as the rules file's top-level `shadow: true` makes every
    /// limit.
    pub(crate) fn shadowed(mut self) -> Self {
        self.shadow = true;
        self
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bands: Vec<String> = self.bands.iter().map(Band::to_string).collect();
        write!(f, "{} {}", self.algorithm.as_str(), bands.join(" + "))?;
        if self.cost != 1 {
            write!(f, ", cost {}", self.cost)?;
        }
        if self.shadow {
            f.write_str(", shadow")?;
        }
        if let Some(unit) = self.unit() {
            write!(f, ", in {unit}")?;
        }
        if let Some(header) = self.settle_header() {
            write!(f, ", settled from {header}")?;
        }
        Ok(())
    }
}

/// One rule: a tier's (or the base set's) default, or one of its routes.
///
/// # Example
///
/// ```
/// use http::Method;
/// use tollgate::Rules;
///
/// let rules = Rules::from_json(r#"{
///     "default": { "capacity": 20, "refill_rate": 5 },
///     "routes": [{ "path": "/api/submit", "methods": ["POST"], "limit": "30/minute" }]
/// }"#).unwrap();
/// let rule = rules.lookup(&Method::POST, "/api/submit");
/// assert_eq!(rule.id(), "/api/submit@POST");
/// assert_eq!(rule.pattern(), Some("/api/submit"));
/// assert_eq!(rule.limit().unwrap().bands()[0].capacity(), 30);
/// assert_eq!(rules.lookup(&Method::GET, "/api/submit").id(), "default");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    id: Arc<str>,
    index: usize,
    tier: Option<Box<str>>,
    pattern: Option<Box<str>>,
    methods: Option<Box<[Method]>>,
    /// Whether HEAD requests fall under this rule as GET ones do (see [`Rule::applies_to`]).
    head_as_get: bool,
    /// Whether it is a named rule (see [`Rule::is_named`]).
    named: bool,
    limit: Option<Limit>,
    /// For a rule of `descriptors`: its domain and names.
    descriptor: Option<Box<descriptor::DescriptorInfo>>,
}

impl Rule {
    /// The rule's stable identity, used in Redis keys: `default`, or the path with `{}` turned
    /// into `<>` (so it never forms a Redis Cluster hash tag), followed by `@METHODS` when the
    /// rule names methods, e.g. `/api/users/<id>@GET,PUT`. Rules of a tier start with
    /// `<tier>:`, e.g. `pro:default`. A named rule's identity is its name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this is a named rule: one of the file's `rules` section, or an object at the
    /// top level under a name the format does not use. Routes that name it (`"rule":
    /// "<name>"`) all count against it: one budget per client for all of them, which is
    /// what naming a limit means. A request can also ask for it by name
    /// ([`Query::rule`](crate::Query::rule), `POST /check`'s `rule`), with or without a tier.
    ///
    /// ```
    /// use http::Method;
    /// use tollgate::Rules;
    ///
    /// let rules = Rules::from_json(r#"{
    ///     "default": {"capacity": 20, "refill_rate": 5},
    ///     "special_path": {"capacity": 50, "refill_rate": 10},
    ///     "rules": {"uploads": {"limit": "10/minute"}},
    ///     "routes": [
    ///         {"path": "/upload", "rule": "uploads"},
    ///         {"path": "/import", "methods": ["POST"], "rule": "uploads"}
    ///     ]
    /// }"#).unwrap();
    /// let upload = rules.lookup(&Method::PUT, "/upload");
    /// assert!(upload.is_named() && upload.id() == "uploads");
    /// assert_eq!(rules.lookup(&Method::POST, "/import").id(), "uploads");
    /// assert_eq!(rules.find("special_path").unwrap().limit().unwrap().rate(), "50 per 5s");
    /// ```
    pub fn is_named(&self) -> bool {
        self.named
    }

    /// The tier the rule belongs to; `None` for the base rules.
    pub fn tier(&self) -> Option<&str> {
        self.tier.as_deref()
    }

    /// The path pattern; `None` for a default rule.
    pub fn pattern(&self) -> Option<&str> {
        self.pattern.as_deref()
    }

    /// The methods the rule names; `None` for all. A rule that names `GET` covers `HEAD`
    /// too, unless another rule names it: see [`applies_to`](Self::applies_to).
    pub fn methods(&self) -> Option<&[Method]> {
        self.methods.as_deref()
    }

    /// Whether requests of `method` can fall under this rule (a more specific pattern may
    /// still win): every method when the rule names none, otherwise the methods it names,
    /// and `HEAD` when it names `GET` and no rule for the same path names `HEAD`. Servers
    /// answer `HEAD` with the `GET` handler (axum does), so it costs what `GET` costs, and
    /// shares its state: the rule's identity stays `…@GET`.
    ///
    /// ```
    /// use http::Method;
    /// use tollgate::Rules;
    ///
    /// let rules = Rules::from_json(r#"{
    ///     "default": {"limit": "100/minute"},
    ///     "routes": [
    ///         {"path": "/api/data", "methods": ["GET"], "limit": "2/minute"},
    ///         {"path": "/api/feed", "methods": ["GET"], "limit": "5/minute"},
    ///         {"path": "/api/feed", "methods": ["HEAD"], "limit": "50/minute"}
    ///     ]
    /// }"#).unwrap();
    /// let data = rules.lookup(&Method::HEAD, "/api/data");
    /// assert_eq!(data.id(), "/api/data@GET");
    /// assert!(data.applies_to(&Method::HEAD) && !data.applies_to(&Method::POST));
    /// // A rule of its own for HEAD wins on its path.
    /// assert_eq!(rules.lookup(&Method::HEAD, "/api/feed").id(), "/api/feed@HEAD");
    /// assert!(!rules.lookup(&Method::GET, "/api/feed").applies_to(&Method::HEAD));
    /// ```
    pub fn applies_to(&self, method: &Method) -> bool {
        match &self.methods {
            None => true,
            Some(methods) => {
                methods.contains(method) || (self.head_as_get && *method == Method::HEAD)
            }
        }
    }

    /// The limit, or `None` for an unlimited rule.
    pub fn limit(&self) -> Option<&Limit> {
        self.limit.as_ref()
    }

    /// The Envoy domain of a rule of the file's `descriptors`; `None` for the others.
    pub fn domain(&self) -> Option<&str> {
        self.descriptor.as_ref().map(|d| &*d.domain)
    }

    /// The `name` of a descriptor rule, which other rules' [`replaces`](Self::replaces)
    /// refer to.
    pub fn name(&self) -> Option<&str> {
        self.descriptor.as_ref().and_then(|d| d.name.as_deref())
    }

    /// The names of the descriptor rules this one replaces: when one request's descriptors
    /// fall under both, only this one counts.
    pub fn replaces(&self) -> impl ExactSizeIterator<Item = &str> {
        self.descriptor
            .as_ref()
            .map_or(&[][..], |d| &d.replaces[..])
            .iter()
            .map(|name| &**name)
    }

    /// The identity, shared rather than copied.
    pub(crate) fn shared_id(&self) -> Arc<str> {
        Arc::clone(&self.id)
    }

    /// Position in [`Rules::iter`]; backends keep per-rule state in this order.
    pub(crate) fn index(&self) -> usize {
        self.index
    }
}

/// The rule a request falls under, and the limit that applies to its client.
///
/// # Example
///
/// ```
/// use http::Method;
/// use tollgate::{ClientKey, Rules};
///
/// let rules = Rules::from_json(r#"{
///     "default": {"limit": "10/minute"},
///     "tiers": {"pro": {"default": {"limit": "100/minute"}}},
///     "clients": {"id:partner": {"limit": "1000/minute"}}
/// }"#).unwrap();
/// let alice = ClientKey::Id("alice".into());
/// let pro = rules.resolve(&Method::GET, "/", Some("pro"), &alice).unwrap();
/// assert_eq!((pro.rule.id(), pro.limit.unwrap().bands()[0].capacity()), ("pro:default", 100));
/// let partner = rules.resolve(&Method::GET, "/", None, &ClientKey::Id("partner".into())).unwrap();
/// assert_eq!(partner.limit.unwrap().bands()[0].capacity(), 1000);
/// assert!(partner.client_override);
/// assert!(rules.resolve(&Method::GET, "/", Some("gold"), &alice).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Resolved<'a> {
    /// The matched rule: its identity keys the client's state.
    pub rule: &'a Rule,
    /// The limit for this client: the rule's, or the client's override; `None` when
    /// unlimited.
    pub limit: Option<&'a Limit>,
    /// Whether `limit` comes from the rules file's `clients`.
    pub client_override: bool,
}

/// Validated rules, ready to answer "which limit applies to this request?".
///
/// Load them with [`Rules::from_file`] or [`Rules::from_json`]. Path patterns use
/// `{param}` for one segment and `{*rest}` for everything after; the most specific pattern
/// wins (static segments over parameters over catch-alls), and a rule that names `methods`
/// only applies to those methods. Requests no route covers use `default`. Named `tiers` are
/// whole rule sets of their own; `clients` override the limit for single clients.
///
/// # Example
///
/// ```
/// use http::Method;
/// use tollgate::Rules;
///
/// let rules = Rules::from_json(r#"{
///     "default": { "capacity": 20, "refill_rate": 5 },
///     "routes": [
///         { "path": "/api/users/{id}", "capacity": 5, "refill_rate": 0.5 },
///         { "path": "/api/users/me", "capacity": 50, "refill_rate": 10 },
///         { "path": "/static/{*rest}", "unlimited": true }
///     ]
/// }"#).unwrap();
/// assert_eq!(rules.lookup(&Method::GET, "/api/users/42").id(), "/api/users/<id>");
/// assert_eq!(rules.lookup(&Method::GET, "/api/users/me").id(), "/api/users/me");
/// assert!(rules.lookup(&Method::GET, "/static/app.js").limit().is_none());
/// assert_eq!(rules.lookup(&Method::GET, "/elsewhere").id(), "default");
/// ```
///
/// Cloning is cheap: a clone shares the rules and their routers with the original.
#[derive(Clone)]
pub struct Rules {
    /// Every rule: the base default first, the base routes in file order, then each tier's
    /// default and routes.
    rules: Arc<[Rule]>,
    /// Each rule's position in `rules`, by identity.
    by_id: Arc<HashMap<Arc<str>, usize>>,
    base: Arc<RuleSet>,
    tiers: Arc<[(Box<str>, RuleSet)]>,
    default_tier: Option<usize>,
    /// Searched with the request's borrowed key (see [`KeyRef`]); a runtime entry changes
    /// one in a copy of the rules (see [`Rules::with_client`]).
    clients: Clients,
    /// The rules of `descriptors`, by domain and entries.
    descriptors: Arc<descriptor::Descriptors>,
    /// The named rules no route names (by index), each with the section its name looks like
    /// a misspelling of.
    unused: Arc<[(usize, Option<&'static str>)]>,
    on_redis_error: Option<OnRedisError>,
    local_fallback_instances: Option<NonZeroU32>,
    /// The file's `headers` and `problem_details`, if it has them.
    header_style: Option<HeaderStyle>,
    problem_details: Option<bool>,
    /// The JSON the rules were read from, and where it came from: runtime entries are merged
    /// into it (see `merge`), so every set of rules in force can be rebuilt from JSON.
    source: Source,
}

/// The rule an Envoy rate limit descriptor falls under, and the client it counts against:
/// found by [`Rules::descriptor`].
///
/// # Example
///
/// ```
/// use tollgate::Rules;
///
/// let rules = Rules::from_json(r#"{"default": {"unlimited": true},
///     "descriptors": {"mongo_cps": [{"key": "database", "value": "users", "limit": "500/second"}]}}"#).unwrap();
/// let found = rules.descriptor("mongo_cps", [("database", "users")]).unwrap();
/// assert_eq!(found.rule.limit().unwrap().bands()[0].capacity(), 500);
/// assert_eq!(found.client.to_string(), "id:users");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DescriptorMatch<'a> {
    /// The rule: its identity keys the state, like a route's.
    pub rule: &'a Rule,
    /// The descriptor's values, as one client key.
    pub client: ClientKey,
}

/// The JSON text of a set of rules, and its name in errors (a path or `<inline>`).
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) json: Arc<str>,
    pub(crate) name: Arc<str>,
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rules")
            .field("rules", &self.rules)
            .field("tiers", &self.tier_names().collect::<Vec<_>>())
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
}

impl Rules {
    /// Reads and validates a rules file: a regular file (or a symlink to one) of at most
    /// [`DEFAULT_MAX_RULES_FILE_BYTES`](crate::DEFAULT_MAX_RULES_FILE_BYTES).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, RulesError> {
        Self::from_file_with_max_bytes(path, crate::DEFAULT_MAX_RULES_FILE_BYTES)
    }

    /// Reads and validates a rules file of at most `max_bytes`. A FIFO, a device, a
    /// directory or a socket is refused without being read ([`RulesError::NotAFile`]), and
    /// so is a larger file ([`RulesError::TooLarge`]).
    ///
    /// ```
    /// use tollgate::{Rules, RulesError};
    ///
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/rate_limits.json");
    /// assert!(Rules::from_file_with_max_bytes(path, 1 << 20).is_ok());
    /// let err = Rules::from_file_with_max_bytes(path, 100).unwrap_err();
    /// assert!(matches!(err, RulesError::TooLarge { max_bytes: 100, .. }));
    /// ```
    pub fn from_file_with_max_bytes(
        path: impl AsRef<Path>,
        max_bytes: u64,
    ) -> Result<Self, RulesError> {
        let path = path.as_ref();
        Self::parse_file(&file::read(path, max_bytes)?, path)
    }

    /// Validates rules given as JSON text (errors name the source `<inline>`).
    pub fn from_json(json: &str) -> Result<Self, RulesError> {
        parse::parse(json, "<inline>")
    }

    /// Validates rules given as YAML text (errors name the source `<inline>`): the grammar
    /// of the JSON form, in YAML's syntax. A rules file whose name ends in `.yaml` or `.yml`
    /// is read this way.
    ///
    /// ```
    /// use tollgate::Rules;
    ///
    /// // A rules file of the tiered check service: each tier `limit` requests per `window`
    /// // seconds, a token bucket.
    /// let rules = Rules::from_yaml("
    /// tiers:
    ///   free: {limit: 100, window: 60}
    ///   pro:
    ///     limit: 1000
    ///     window: 60
    /// default_tier: free
    /// ").unwrap();
    /// assert_eq!(rules.default_rule().id(), "free:default");
    /// assert_eq!(rules.find("pro:default").unwrap().limit().unwrap().rate(), "1000/minute");
    /// let err = Rules::from_yaml("default: {capacity: 0, refill_rate: 1}").unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "<inline>: at default.capacity: capacity must be an integer from 1 to 4294967295, got 0"
    /// );
    /// ```
    #[cfg(feature = "yaml")]
    pub fn from_yaml(yaml: &str) -> Result<Self, RulesError> {
        parse::parse_yaml(yaml, "<inline>")
    }

    /// Validates `bytes`, read from the file at `path`: YAML when its name ends in `.yaml`
    /// or `.yml`, JSON otherwise.
    pub(crate) fn parse_file(bytes: &[u8], path: &Path) -> Result<Self, RulesError> {
        let source_name = path.display().to_string();
        let yaml = is_yaml(path);
        match std::str::from_utf8(bytes) {
            Ok(text) if yaml => parse_yaml_file(text, &source_name),
            Ok(text) => parse::parse(text, &source_name),
            Err(error) => {
                let (valid, rest) = bytes.split_at(error.valid_up_to());
                let (line, column) = json::line_column_at(valid);
                let problem = format!("the byte 0x{:02X}", rest[0]);
                let context = "(a rules file is UTF-8 text)".to_owned();
                Err(RulesError::Invalid {
                    source_name,
                    location: Location {
                        json_path: ".".into(),
                        line_column: Some((line, column)),
                    },
                    problem: if yaml {
                        InvalidRule::NotYaml(format!("found {problem} {context}"))
                    } else {
                        InvalidRule::NotJson {
                            found: problem,
                            context,
                        }
                    },
                })
            }
        }
    }

    /// The named rules no route names: a request gets one only by asking for it by name.
    /// `tollgate check-rules` prints each as a warning, and when its name looks like a
    /// misspelt section of the file (`client` for `clients`), says which.
    ///
    /// ```
    /// use tollgate::Rules;
    ///
    /// let rules = Rules::from_json(r#"{
    ///     "default": {"capacity": 20, "refill_rate": 5},
    ///     "special_path": {"capacity": 50, "refill_rate": 10},
    ///     "client": {"limit": "5/second"}
    /// }"#).unwrap();
    /// let unused: Vec<String> = rules.unused_rules().map(|u| u.to_string()).collect();
    /// assert_eq!(unused, [
    ///     "rule \"special_path\" is named by no route: it applies only to requests that ask for it by name",
    ///     "rule \"client\" is named by no route: it applies only to requests that ask for it by name \
    ///      (a top-level object the format does not know is a named rule: did you mean `clients`?)",
    /// ]);
    /// ```
    pub fn unused_rules(&self) -> impl ExactSizeIterator<Item = UnusedRule<'_>> {
        self.unused.iter().map(|&(index, near)| UnusedRule {
            rule: &self.rules[index],
            near,
        })
    }

    /// The client overrides no request can match when IPv6 clients are keyed by their
    /// network of `ipv6_prefix_len` bits (see
    /// [`ipv6_prefix_len`](crate::LimiterBuilder::ipv6_prefix_len)): an override for
    /// a single IPv6 address below 128 bits, or for a network of another length. The limiter
    /// logs each when it loads the rules; `tollgate check-rules` prints them.
    ///
    /// ```
    /// use tollgate::Rules;
    ///
    /// let rules = Rules::from_json(r#"{
    ///     "default": {"limit": "10/second"},
    ///     "clients": {
    ///         "ip:2001:db8::7": {"unlimited": true},
    ///         "ip:2001:db8:1:2::/64": {"unlimited": true}
    ///     }
    /// }"#).unwrap();
    /// let never: Vec<String> = rules.unreachable_overrides(64).map(|o| o.client().to_string()).collect();
    /// assert_eq!(never, ["ip:2001:db8::7"]);
    /// assert_eq!(rules.unreachable_overrides(128).count(), 1); // now the /64 one
    /// ```
    pub fn unreachable_overrides(
        &self,
        ipv6_prefix_len: u8,
    ) -> impl Iterator<Item = UnreachableOverride<'_>> {
        let mut never: Vec<UnreachableOverride<'_>> = self
            .clients
            .iter()
            .filter_map(|(client, _)| UnreachableOverride::of(client, ipv6_prefix_len))
            .collect();
        // `clients` is a hash map; an order that does not change keeps logs comparable.
        never.sort_by_cached_key(|o| o.client.to_string());
        never.into_iter()
    }

    /// The rule for a request without a tier (so in `default_tier`, if the file names one)
    /// and without a client override.
    pub fn lookup(&self, method: &Method, path: &str) -> &Rule {
        let set = self.default_tier.map_or(&*self.base, |t| &self.tiers[t].1);
        &self.rules[set.lookup(method.as_str(), path)]
    }

    /// The rule and limit for a request: in `tier` (or `default_tier`, or the base rules),
    /// with the client's override from `clients` if it has one and the rule is limited.
    pub fn resolve(
        &self,
        method: &Method,
        path: &str,
        tier: Option<&str>,
        client: &ClientKey,
    ) -> Result<Resolved<'_>, UnknownTier> {
        let rule = self.route(tier, method.as_str(), path)?;
        Ok(self.for_client(rule, client.as_ref()))
    }

    /// The default rule of `tier` (without one, of `default_tier`, else the base rules) and
    /// the limit for `client` under it, as [`resolve`](Self::resolve) gives a route's.
    ///
    /// ```
    /// use tollgate::{ClientKey, Rules};
    ///
    /// let rules = Rules::from_json(r#"{
    ///     "default": {"limit": "10/minute"},
    ///     "clients": {"id:partner": {"limit": "1000/minute"}}
    /// }"#).unwrap();
    /// let partner = rules.resolve_default(None, &ClientKey::id("partner")).unwrap();
    /// assert_eq!((partner.rule.id(), partner.limit.unwrap().rate()), ("default", "1000/minute".into()));
    /// assert!(rules.resolve_default(Some("gold"), &ClientKey::id("partner")).is_err());
    /// ```
    pub fn resolve_default(
        &self,
        tier: Option<&str>,
        client: &ClientKey,
    ) -> Result<Resolved<'_>, UnknownTier> {
        let rule = self.tier_default(tier)?;
        Ok(self.for_client(rule, client.as_ref()))
    }

    /// The rule set of `tier`: that tier's, or without one, `default_tier`'s or the base
    /// rules.
    fn rule_set(&self, tier: Option<&str>) -> Result<&RuleSet, UnknownTier> {
        match tier {
            Some(name) => self
                .tiers
                .iter()
                .find(|(t, _)| &**t == name)
                .map(|(_, set)| set)
                .ok_or_else(|| UnknownTier::new(name)),
            None => Ok(self.default_tier.map_or(&*self.base, |t| &self.tiers[t].1)),
        }
    }

    /// The rule for `method` (its name, as sent) and `path` in `tier`'s rule set.
    #[inline]
    pub(crate) fn route(
        &self,
        tier: Option<&str>,
        method: &str,
        path: &str,
    ) -> Result<&Rule, UnknownTier> {
        let set = self.rule_set(tier)?;
        Ok(&self.rules[set.lookup(method, path)])
    }

    /// The default rule of `tier`'s rule set.
    pub(crate) fn tier_default(&self, tier: Option<&str>) -> Result<&Rule, UnknownTier> {
        let set = self.rule_set(tier)?;
        Ok(&self.rules[set.default()])
    }

    /// `rule`, with the limit for `client`: its override from `clients` if it has one and
    /// the rule is limited.
    pub(crate) fn for_client<'r>(&'r self, rule: &'r Rule, client: KeyRef<'_>) -> Resolved<'r> {
        let Some(limit) = rule.limit.as_ref() else {
            return Resolved {
                rule,
                limit: None,
                client_override: false,
            };
        };
        // No overrides: returns at once, without hashing the key.
        match self.clients.get(client) {
            Some(own) => Resolved {
                rule,
                limit: own.as_ref(),
                client_override: true,
            },
            _ => Resolved {
                rule,
                limit: Some(limit),
                client_override: false,
            },
        }
    }

    /// The rule for an Envoy rate limit descriptor: the one the file's `descriptors` give
    /// `entries` (key and value pairs, in order) in `domain`, and the client the descriptor
    /// counts against, made of the entries' values (each distinct value counts on its own).
    /// `None` when no rule applies: Envoy's answer is then OK, with no limit.
    ///
    /// ```
    /// use tollgate::Rules;
    ///
    /// let rules = Rules::from_json(r#"{
    ///     "default": {"limit": "10/second"},
    ///     "descriptors": {"edge": [
    ///         {"key": "remote_address", "limit": "100/minute", "algorithm": "fixed_window"},
    ///         {"key": "path", "value": "/login", "limit": "5/minute"},
    ///         {"key": "path", "value": "/api/*", "descriptors": [{"key": "user", "limit": "1000/hour"}]}
    ///     ]}
    /// }"#).unwrap();
    /// let found = rules.descriptor("edge", [("remote_address", "10.0.0.7")]).unwrap();
    /// assert_eq!(found.rule.id(), "@edge/remote_address");
    /// assert_eq!(found.client.to_string(), "id:10.0.0.7");
    /// let nested = rules.descriptor("edge", [("path", "/api/orders"), ("user", "alice")]).unwrap();
    /// assert_eq!(nested.rule.id(), "@edge/path=%2Fapi%2F*/user");
    /// assert_eq!(nested.client.to_string(), "id:%2Fapi%2Forders/alice");
    /// // A node without a limit, an unknown key or domain: no rule.
    /// assert!(rules.descriptor("edge", [("path", "/api/orders")]).is_none());
    /// assert!(rules.descriptor("edge", [("user", "alice")]).is_none());
    /// assert!(rules.descriptor("other", [("path", "/login")]).is_none());
    /// ```
    pub fn descriptor<'e, I>(&self, domain: &str, entries: I) -> Option<DescriptorMatch<'_>>
    where
        I: IntoIterator<Item = (&'e str, &'e str)>,
        I::IntoIter: Clone,
    {
        let entries = entries.into_iter();
        let index = self.descriptors.lookup(domain, entries.clone())?;
        Some(DescriptorMatch {
            rule: &self.rules[index],
            client: descriptor::client_of(entries),
        })
    }

    /// Whether the file has `descriptors`.
    pub fn has_descriptors(&self) -> bool {
        !self.descriptors.is_empty()
    }

    /// The base rules' default: for requests no route covers.
    pub fn default_rule(&self) -> &Rule {
        &self.rules[self.base.default()]
    }

    /// Every rule: the base default first, then the named rules, the base routes in file
    /// order, then each tier's default and routes.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Rule> {
        self.rules.iter()
    }

    /// The rule with this identity.
    pub fn find(&self, id: &str) -> Option<&Rule> {
        self.by_id.get(id).map(|&index| &self.rules[index])
    }

    /// The names of the tiers, in name order.
    pub fn tier_names(&self) -> impl Iterator<Item = &str> {
        self.tiers.iter().map(|(name, _)| &**name)
    }

    /// The tier used when a request carries none.
    pub fn default_tier(&self) -> Option<&str> {
        self.default_tier.map(|t| &*self.tiers[t].0)
    }

    /// The per-client overrides; `None` for a client that is not limited at all.
    pub fn clients(&self) -> impl Iterator<Item = (&ClientKey, Option<&Limit>)> {
        self.clients
            .iter()
            .map(|(key, limit)| (key, limit.as_ref()))
    }

    /// These rules with `client`'s override set to `limit` (`Some(None)`: unlimited) or,
    /// for `None`, taken away: a copy that shares everything else with these.
    pub(crate) fn with_client(&self, client: ClientKey, limit: Option<Option<Limit>>) -> Rules {
        let mut rules = self.clone();
        match limit {
            Some(limit) => rules.clients.insert(client, limit),
            None => rules.clients.remove(client.as_ref()),
        }
        rules
    }

    /// These rules with `clients` as their client overrides.
    pub(crate) fn with_clients(mut self, clients: Clients) -> Rules {
        self.clients = clients;
        self
    }

    /// The client overrides.
    pub(crate) fn client_overrides(&self) -> &Clients {
        &self.clients
    }

    /// The file's `on_redis_error`, if it has one.
    pub fn on_redis_error(&self) -> Option<OnRedisError> {
        self.on_redis_error
    }

    /// The file's `local_fallback_instances`, if it has one.
    pub fn local_fallback_instances(&self) -> Option<u32> {
        self.local_fallback_instances.map(NonZeroU32::get)
    }

    /// The file's `headers`: which rate limit header fields responses carry, if it says.
    pub fn header_style(&self) -> Option<HeaderStyle> {
        self.header_style
    }

    /// The file's `problem_details`: whether a refusal is an RFC 9457
    /// `application/problem+json` body, if it says.
    pub fn problem_details(&self) -> Option<bool> {
        self.problem_details
    }

    /// How the fronts write verdicts under these rules: the file's choices over `fallback`
    /// (the builder's).
    #[inline]
    pub(crate) fn rendering(&self, fallback: Rendering) -> Rendering {
        Rendering {
            headers: self.header_style.unwrap_or(fallback.headers),
            problem_details: self.problem_details.unwrap_or(fallback.problem_details),
        }
    }

    /// The JSON these rules were read from, and its name.
    pub(crate) fn source(&self) -> &Source {
        &self.source
    }
}

/// Whether the rules file at `path` is YAML: its name ends in `.yaml` or `.yml`.
pub(crate) fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| {
            extension.eq_ignore_ascii_case("yaml") || extension.eq_ignore_ascii_case("yml")
        })
}

#[cfg(feature = "yaml")]
fn parse_yaml_file(text: &str, source_name: &str) -> Result<Rules, RulesError> {
    parse::parse_yaml(text, source_name)
}

/// Without the `yaml` feature, a YAML rules file is refused with the reason.
#[cfg(not(feature = "yaml"))]
fn parse_yaml_file(_: &str, source_name: &str) -> Result<Rules, RulesError> {
    Err(RulesError::Invalid {
        source_name: source_name.to_owned(),
        location: Location {
            json_path: ".".into(),
            line_column: None,
        },
        problem: InvalidRule::NotYaml(
            "YAML rules files are read with tollgate's `yaml` feature, which this build does \
             not have"
                .into(),
        ),
    })
}

/// A named rule no route names: found by [`Rules::unused_rules`]. It prints as a warning
/// that names the rule, and the section of the file its name looks like a misspelling of.
///
/// # Example
///
/// ```
/// use tollgate::Rules;
///
/// let rules = Rules::from_json(r#"{"default": {"limit": "10/second"},
///     "rules": {"search": {"limit": "5/second"}}}"#).unwrap();
/// let unused = rules.unused_rules().next().unwrap();
/// assert_eq!(unused.rule().id(), "search");
/// assert_eq!(unused.near_section(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnusedRule<'a> {
    rule: &'a Rule,
    near: Option<&'static str>,
}

impl<'a> UnusedRule<'a> {
    /// The rule.
    pub fn rule(&self) -> &'a Rule {
        self.rule
    }

    /// For a rule written at the top level, the section of the file its name looks like a
    /// misspelling of (`clients` for `client`).
    pub fn near_section(&self) -> Option<&'static str> {
        self.near
    }
}

impl fmt::Display for UnusedRule<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule {:?} is named by no route: it applies only to requests that ask for it by name",
            self.rule.id()
        )?;
        match self.near {
            Some(section) => write!(
                f,
                " (a top-level object the format does not know is a named rule: did you mean \
                 `{section}`?)"
            ),
            None => Ok(()),
        }
    }
}

/// Validates the rules of `source` (again).
pub(crate) fn parse_source(source: &Source) -> Result<Rules, RulesError> {
    parse::parse(&source.json, &source.name)
}

/// A client override that no request can match, because IPv6 clients are keyed by their
/// network of a fixed length: found by [`Rules::unreachable_overrides`]. It prints as a
/// warning that names the override and why.
///
/// # Example
///
/// ```
/// use tollgate::Rules;
///
/// let rules = Rules::from_json(r#"{"default": {"limit": "10/second"},
///     "clients": {"ip:2001:db8::7": {"unlimited": true}}}"#).unwrap();
/// let never = rules.unreachable_overrides(64).next().unwrap();
/// assert_eq!(never.client().to_string(), "ip:2001:db8::7");
/// assert_eq!(
///     never.to_string(),
///     "client override \"ip:2001:db8::7\" never applies: IPv6 clients are keyed by their /64 \
///      network (ipv6_prefix_len), so an override must name one, like \"ip:2001:db8::/64\""
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnreachableOverride<'a> {
    client: &'a ClientKey,
    ipv6_prefix_len: u8,
}

impl<'a> UnreachableOverride<'a> {
    /// `client`'s override, if no request can match it when IPv6 clients are keyed by
    /// `ipv6_prefix_len` bits.
    pub(crate) fn of(client: &'a ClientKey, ipv6_prefix_len: u8) -> Option<Self> {
        (!client.can_occur_with(ipv6_prefix_len)).then_some(Self {
            client,
            ipv6_prefix_len,
        })
    }

    /// The override's key, as in the file's `clients`.
    pub fn client(&self) -> &ClientKey {
        self.client
    }
}

impl fmt::Display for UnreachableOverride<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.ipv6_prefix_len;
        write!(f, "client override \"{}\" never applies: ", self.client)?;
        let address = match self.client {
            ClientKey::Ip(address) => Some(*address),
            ClientKey::Ipv6Network { network, .. } => Some(std::net::IpAddr::V6(*network)),
            _ => None,
        };
        if bits == 128 {
            return write!(
                f,
                "IPv6 clients are keyed by their whole address (ipv6_prefix_len 128), so an \
                 override must name an address{}",
                address.map_or(String::new(), |a| format!(", like \"ip:{a}\""))
            );
        }
        write!(
            f,
            "IPv6 clients are keyed by their /{bits} network (ipv6_prefix_len), so an override \
             must name one"
        )?;
        // The same parse the file's keys go through turns the address into its network.
        match address.and_then(|a| ClientKey::parse(&format!("ip:{a}/{bits}"))) {
            Some(network) => write!(f, ", like \"{network}\""),
            None => Ok(()),
        }
    }
}
