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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::RandomState;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde::Deserialize;
use serde_json::{Number, Value};

use crate::algorithm::{Algorithm, BandSpec};
use crate::error::{InvalidRule, Location, RulesError};
use crate::key::{ClientKey, InvalidClientKey, KeyRef};
use crate::policy::OnRedisError;
use crate::tier::UnknownTier;

/// Slowest refill accepted: one token every 11.6 days.
pub const MIN_REFILL_PER_SEC: f64 = 1e-6;
/// Fastest refill accepted: one token per nanosecond.
pub const MAX_REFILL_PER_SEC: f64 = 1e9;
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

    /// Whether the rule decides and reports but never refuses.
    pub fn shadow(&self) -> bool {
        self.shadow
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
    id: Box<str>,
    index: usize,
    tier: Option<Box<str>>,
    pattern: Option<Box<str>>,
    methods: Option<Box<[Method]>>,
    /// Whether HEAD requests fall under this rule as GET ones do (see [`Rule::applies_to`]).
    head_as_get: bool,
    limit: Option<Limit>,
}

impl Rule {
    /// The rule's stable identity, used in Redis keys: `default`, or the path with `{}` turned
    /// into `<>` (so it never forms a Redis Cluster hash tag), followed by `@METHODS` when the
    /// rule names methods, e.g. `/api/users/<id>@GET,PUT`. Rules of a tier start with
    /// `<tier>:`, e.g. `pro:default`.
    pub fn id(&self) -> &str {
        &self.id
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

/// One tier's rules (or the base rules): a default and the routes' routers.
struct RuleSet {
    default: usize,
    /// One router per method some rule names, holding the rules that apply to that method
    /// (see [`Rule::applies_to`]), method-less ones included.
    by_method: Vec<(Method, matchit::Router<usize>)>,
    /// The method-less rules, for methods no rule names.
    any_method: matchit::Router<usize>,
    /// Whether HEAD is looked up as GET: when rules name GET and none names HEAD, GET's
    /// router is HEAD's, so it is not built twice.
    head_is_get: bool,
}

impl RuleSet {
    fn lookup(&self, method: &Method, path: &str) -> usize {
        let method = if self.head_is_get && *method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let router = self
            .by_method
            .iter()
            .find(|(m, _)| m == method)
            .map_or(&self.any_method, |(_, router)| router);
        router
            .at(path)
            .map_or(self.default, |matched| *matched.value)
    }
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
pub struct Rules {
    /// Every rule: the base default first, the base routes in file order, then each tier's
    /// default and routes.
    rules: Vec<Rule>,
    base: RuleSet,
    tiers: Vec<(Box<str>, RuleSet)>,
    default_tier: Option<usize>,
    /// `None`: the client is unlimited.
    /// Searched with the request's borrowed key (see [`KeyRef`]).
    clients: hashbrown::HashMap<ClientKey, Option<Limit>, RandomState>,
    on_redis_error: Option<OnRedisError>,
    local_fallback_instances: Option<NonZeroU32>,
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
        Self::parse_file(&crate::rules_file::read(path, max_bytes)?, path)
    }

    /// Validates rules given as JSON text (errors name the source `<inline>`).
    pub fn from_json(json: &str) -> Result<Self, RulesError> {
        parse(json, "<inline>")
    }

    /// Validates `bytes`, read from the file at `path`.
    pub(crate) fn parse_file(bytes: &[u8], path: &Path) -> Result<Self, RulesError> {
        let source_name = path.display().to_string();
        match std::str::from_utf8(bytes) {
            Ok(text) => parse(text, &source_name),
            Err(error) => {
                let (valid, rest) = bytes.split_at(error.valid_up_to());
                let (line, column) = line_column_at(valid);
                Err(RulesError::Invalid {
                    source_name,
                    location: Location {
                        json_path: ".".into(),
                        line_column: Some((line, column)),
                    },
                    problem: InvalidRule::NotJson {
                        found: format!("the byte 0x{:02X}", rest[0]),
                        context: "(a rules file is UTF-8 text)".into(),
                    },
                })
            }
        }
    }

    /// The client overrides no request can match when IPv6 clients are keyed by their
    /// network of `ipv6_prefix_len` bits (see
    /// [`ipv6_prefix_len`](crate::RateLimitLayerBuilder::ipv6_prefix_len)): an override for
    /// a single IPv6 address below 128 bits, or for a network of another length. The layer
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
            .keys()
            .filter(|client| !client.can_occur_with(ipv6_prefix_len))
            .map(|client| UnreachableOverride {
                client,
                ipv6_prefix_len,
            })
            .collect();
        // `clients` is a hash map; an order that does not change keeps logs comparable.
        never.sort_by_cached_key(|o| o.client.to_string());
        never.into_iter()
    }

    /// The rule for a request without a tier (so in `default_tier`, if the file names one)
    /// and without a client override.
    pub fn lookup(&self, method: &Method, path: &str) -> &Rule {
        let set = self.default_tier.map_or(&self.base, |t| &self.tiers[t].1);
        &self.rules[set.lookup(method, path)]
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
        self.resolve_key(method, path, tier, client.as_ref())
    }

    /// [`resolve`](Self::resolve) with a borrowed key: the request path's form.
    pub(crate) fn resolve_key(
        &self,
        method: &Method,
        path: &str,
        tier: Option<&str>,
        client: KeyRef<'_>,
    ) -> Result<Resolved<'_>, UnknownTier> {
        let set = match tier {
            Some(name) => {
                &self
                    .tiers
                    .iter()
                    .find(|(t, _)| &**t == name)
                    .ok_or_else(|| UnknownTier::new(name))?
                    .1
            }
            None => self.default_tier.map_or(&self.base, |t| &self.tiers[t].1),
        };
        let rule = &self.rules[set.lookup(method, path)];
        let Some(limit) = rule.limit.as_ref() else {
            return Ok(Resolved {
                rule,
                limit: None,
                client_override: false,
            });
        };
        // An empty map returns at once, without hashing the key.
        Ok(match self.clients.get(&client) {
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
        })
    }

    /// The base rules' default: for requests no route covers.
    pub fn default_rule(&self) -> &Rule {
        &self.rules[self.base.default]
    }

    /// Every rule: the base default first, then its routes in file order, then each tier's.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Rule> {
        self.rules.iter()
    }

    /// The rule with this identity.
    pub fn find(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.id == id)
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

    /// The file's `on_redis_error`, if it has one.
    pub fn on_redis_error(&self) -> Option<OnRedisError> {
        self.on_redis_error
    }

    /// The file's `local_fallback_instances`, if it has one.
    pub fn local_fallback_instances(&self) -> Option<u32> {
        self.local_fallback_instances.map(NonZeroU32::get)
    }
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

impl UnreachableOverride<'_> {
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

/// One rule as written. `default`, `routes[i]` and `clients.<key>` share the shape; `path`
/// and `methods` are only allowed in routes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: Option<String>,
    methods: Option<Vec<String>>,
    capacity: Option<Number>,
    refill_rate: Option<Number>,
    limit: Option<String>,
    limits: Option<Vec<Value>>,
    unlimited: Option<bool>,
    algorithm: Option<Algorithm>,
    cost: Option<Number>,
    shadow: Option<bool>,
}

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
    shadow: bool,
    on_redis_error: Option<OnRedisError>,
    local_fallback_instances: Option<NonZeroU32>,
}

/// A problem found after deserializing, with its JSON path.
struct Problem {
    json_path: String,
    problem: InvalidRule,
}

fn problem(json_path: impl Into<String>, problem: InvalidRule) -> Problem {
    Problem {
        json_path: json_path.into(),
        problem,
    }
}

fn parse(text: &str, source_name: &str) -> Result<Rules, RulesError> {
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
    build(raw).map_err(|p| {
        invalid(
            Location {
                json_path: p.json_path,
                line_column: None,
            },
            p.problem,
        )
    })
}

fn build(raw: RawRules) -> Result<Rules, Problem> {
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
    let mut clients =
        hashbrown::HashMap::with_capacity_and_hasher(raw.clients.len(), RandomState::new());
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
    Ok(Rules {
        rules,
        base,
        tiers,
        default_tier,
        clients,
        on_redis_error: raw.on_redis_error,
        local_fallback_instances: raw.local_fallback_instances,
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
    });

    struct Route {
        json_path: String,
        pattern: String,
        methods: Option<Vec<Method>>,
        index: usize,
    }
    let mut routes: Vec<Route> = Vec::with_capacity(raw_routes.len());
    // Earlier routes by pattern and by identity, so that each duplicate check is one lookup.
    let mut by_pattern: HashMap<String, Vec<usize>> = HashMap::with_capacity(raw_routes.len());
    let mut by_id: HashMap<Box<str>, usize> = HashMap::with_capacity(raw_routes.len());
    for (i, raw_route) in raw_routes.iter().enumerate() {
        let json_path = format!("{at}routes[{i}]");
        let limit = limit_of(raw_route, &json_path, shadow_all)?;
        let pattern = raw_route
            .path
            .clone()
            .ok_or_else(|| problem(&json_path, InvalidRule::Json("missing field `path`".into())))?;
        if !pattern.starts_with('/') {
            return Err(problem(
                format!("{json_path}.path"),
                InvalidRule::Pattern {
                    path: pattern,
                    reason: "it does not start with '/'".into(),
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
        if let Some(earlier) = same_pattern
            .iter()
            .map(|&r| &routes[r])
            .find(|r| methods_overlap(&r.methods, &methods))
        {
            return Err(problem(
                format!("{json_path}.path"),
                InvalidRule::DuplicateRoute {
                    path: pattern,
                    other: earlier.json_path.clone(),
                },
            ));
        }
        let id: Box<str> = format!("{id_prefix}{}", rule_id(&pattern, methods.as_deref())).into();
        if let Some(&same) = by_id.get(&id) {
            return Err(problem(
                format!("{json_path}.path"),
                InvalidRule::DuplicateRoute {
                    path: pattern,
                    other: format!("{} (same rule identity {id:?})", routes[same].json_path),
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
        });
        by_id.insert(id, routes.len());
        by_pattern
            .entry(pattern.clone())
            .or_default()
            .push(routes.len());
        routes.push(Route {
            json_path,
            pattern,
            methods,
            index,
        });
    }

    let insert = |router: &mut matchit::Router<usize>, route: &Route| -> Result<(), Problem> {
        router
            .insert(route.pattern.as_str(), route.index)
            .map_err(|err| {
                let reason = match err {
                    matchit::InsertError::Conflict { with } => {
                        let other = routes
                            .iter()
                            .find(|r| r.pattern == with)
                            .map_or(with.clone(), |r| format!("{} ({with:?})", r.json_path));
                        format!("it conflicts with {other}")
                    }
                    other => other.to_string(),
                };
                problem(
                    format!("{}.path", route.json_path),
                    InvalidRule::Pattern {
                        path: route.pattern.clone(),
                        reason,
                    },
                )
            })
    };
    let insert_all = |filter: &dyn Fn(&Route) -> bool| -> Result<matchit::Router<usize>, Problem> {
        let mut router = matchit::Router::new();
        for route in routes.iter().filter(|r| filter(r)) {
            insert(&mut router, route)?;
        }
        Ok(router)
    };
    let names = |route: &Route, method: &Method| {
        route
            .methods
            .as_ref()
            .is_none_or(|methods| methods.contains(method))
    };

    let mut named_methods: Vec<Method> = routes
        .iter()
        .flat_map(|r| r.methods.iter().flatten().cloned())
        .filter(|m| *m != Method::HEAD)
        .collect();
    named_methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    named_methods.dedup();

    let any_method = insert_all(&|r| r.methods.is_none())?;
    let mut by_method = named_methods
        .iter()
        .map(|method| Ok((method.clone(), insert_all(&|r| names(r, method))?)))
        .collect::<Result<Vec<_>, Problem>>()?;

    // HEAD: the routes that name it (or no method), then those that name GET, each unless
    // a route for the same path (the same pattern, up to parameter names) is there already.
    // Without routes naming HEAD, that is GET's router.
    let get_only = |r: &Route| {
        r.methods
            .as_ref()
            .is_some_and(|m| m.contains(&Method::GET) && !m.contains(&Method::HEAD))
    };
    let names_head = |r: &Route| r.methods.is_some() && names(r, &Method::HEAD);
    let head_is_get = !routes.iter().any(names_head) && named_methods.contains(&Method::GET);
    if head_is_get {
        for route in routes.iter().filter(|r| get_only(r)) {
            rules[route.index].head_as_get = true;
        }
    } else if routes.iter().any(names_head) {
        let mut head = insert_all(&|r| names(r, &Method::HEAD))?;
        let mut heads_as_get = Vec::new();
        for route in routes.iter().filter(|r| get_only(r)) {
            // A conflict can only be with a route naming HEAD: the rest share GET's router.
            if head.insert(route.pattern.as_str(), route.index).is_ok() {
                heads_as_get.push(route.index);
            }
        }
        for index in heads_as_get {
            rules[index].head_as_get = true;
        }
        by_method.push((Method::HEAD, head));
    }
    Ok(RuleSet {
        default: default_index,
        by_method,
        any_method,
        head_is_get,
    })
}

/// The limit a rule describes, or `None` for `unlimited: true`.
fn limit_of(raw: &RawRule, json_path: &str, shadow_all: bool) -> Result<Option<Limit>, Problem> {
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

/// The location as the rest of the crate writes it: `routes[1].limit`, `clients["id:a b"]`,
/// `.` for the document itself. Positions serde could not name are left out, and keys that
/// are not plain names are quoted, so the path is never empty or ambiguous.
fn json_path_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                let plain = !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b':');
                if plain {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                } else {
                    out.push_str(&format!("[{}]", serde_json::Value::from(key.as_str())));
                }
            }
            Segment::Unknown => {}
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// Where a serde_json error is and what it says: for text that is not JSON, what was found
/// there and what was expected instead; for a document of the wrong shape, serde's message.
fn json_problem(text: &str, json_path: String, err: &serde_json::Error) -> (Location, InvalidRule) {
    use serde_json::error::Category;
    // serde_json appends " at line L column C"; the location is reported separately.
    let message = err.to_string();
    let message = message
        .rfind(" at line ")
        .map_or(message.as_str(), |at| &message[..at]);
    let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut line_column = (err.line() > 0).then(|| (narrow(err.line()), narrow(err.column())));
    if !matches!(err.classify(), Category::Syntax | Category::Eof) {
        let location = Location {
            json_path,
            line_column,
        };
        return (location, InvalidRule::Json(message.to_owned()));
    }
    let found = match (err.classify(), line_column) {
        (Category::Syntax, Some((line, _))) => {
            // The column is 1-based, in bytes, at the character that does not fit.
            let line_start = line_start(text, err.line());
            let mut at = (line_start + err.column().saturating_sub(1)).min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            // A misspelt `true`, `false` or `null` is reported inside the word; show it whole.
            if message == "expected ident" {
                while at > line_start && is_word_byte(text.as_bytes()[at - 1]) {
                    at -= 1;
                }
                line_column = Some((line, narrow(at - line_start + 1)));
            }
            snippet(&text[at..])
        }
        _ => None,
    };
    if err.classify() == Category::Eof {
        // serde_json points at the last character; the end of the file is just past it.
        line_column = line_column.map(|(line, column)| (line, column.saturating_add(1)));
    }
    let location = Location {
        json_path,
        line_column: line_column.map(|(line, column)| (line, column.max(1))),
    };
    let problem = InvalidRule::NotJson {
        found: found.unwrap_or_else(|| "the end of the file".into()),
        context: syntax_context(message),
    };
    (location, problem)
}

/// serde_json's message for a syntax error, said as what was expected where the error is.
fn syntax_context(message: &str) -> String {
    match message {
        "expected value" | "expected ident" | "EOF while parsing a value" => {
            "where a value was expected"
        }
        "expected `:`" => "where `:` was expected",
        "expected `,` or `]`" => "where `,` or `]` was expected",
        "expected `,` or `}`" => "where `,` or `}` was expected",
        "expected `\"`" | "key must be a string" => "where a key in double quotes was expected",
        "trailing comma" => "after a trailing comma",
        "trailing characters" => "after the end of the JSON document",
        "EOF while parsing a list" => "before the list was closed with `]`",
        "EOF while parsing an object" => "before the object was closed with `}`",
        "EOF while parsing a string" => "before the string was closed with `\"`",
        other => return format!("({other})"),
    }
    .to_owned()
}

/// Byte offset of the 1-based `line`.
fn line_start(text: &str, line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    text.match_indices('\n')
        .nth(line - 2)
        .map_or(text.len(), |(at, _)| at + 1)
}

/// 1-based line and column (in bytes, as serde_json counts) of the end of `before`.
fn line_column_at(before: &[u8]) -> (u32, u32) {
    let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |at| at + 1);
    (narrow(line), narrow(before.len() - line_start + 1))
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'+' | b'.')
}

/// What was found where `rest` starts, quoted and escaped: a word (up to 20 characters) or
/// one character.
fn snippet(rest: &str) -> Option<String> {
    let first = rest.chars().next()?;
    let len = if first.is_ascii() && is_word_byte(first as u8) {
        rest.bytes()
            .take(20)
            .take_while(|b| is_word_byte(*b))
            .count()
    } else {
        first.len_utf8()
    };
    Some(format!("{:?}", &rest[..len]))
}

fn methods_overlap(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}

fn rule_id(pattern: &str, methods: Option<&[Method]>) -> String {
    let mut id: String = pattern
        .chars()
        .map(|c| match c {
            '{' => '<',
            '}' => '>',
            c => c,
        })
        .collect();
    if let Some(methods) = methods {
        id.push('@');
        let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        id.push_str(&names.join(","));
    }
    id
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(json: &str) -> Rules {
        match Rules::from_json(json) {
            Ok(rules) => rules,
            Err(err) => panic!("expected valid rules, got: {err}"),
        }
    }

    /// The error message for rules that must be rejected.
    fn err(json: &str) -> String {
        match Rules::from_json(json) {
            Ok(rules) => panic!("expected an error, got {rules:?}"),
            Err(err) => err.to_string(),
        }
    }

    const DEFAULT: &str = r#""default": {"capacity": 20, "refill_rate": 5}"#;

    fn with_routes(routes: &str) -> String {
        format!(r#"{{{DEFAULT}, "routes": [{routes}]}}"#)
    }

    #[test]
    fn shipped_rules_file_is_valid() {
        let rules = Rules::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/rate_limits.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(rules.iter().len() > 1);
    }

    #[test]
    fn the_three_forms() {
        let rules = ok(&with_routes(
            r#"{"path": "/a", "capacity": 10, "refill_rate": 0.25},
               {"path": "/b", "limit": "30/minute"},
               {"path": "/c", "limit": "2/second"},
               {"path": "/d", "limit": "24 / hour"},
               {"path": "/e", "limit": "1/day"},
               {"path": "/f", "unlimited": true},
               {"path": "/g", "unlimited": false, "capacity": 1, "refill_rate": 1}"#,
        ));
        let bucket = |p: &str| {
            rules
                .lookup(&Method::GET, p)
                .limit()
                .map(|limit| limit.bands()[0])
        };
        assert_eq!(bucket("/a"), Band::new(10, 0.25));
        assert_eq!(bucket("/b"), Band::new(30, 0.5));
        assert_eq!(bucket("/c"), Band::new(2, 2.0));
        assert_eq!(bucket("/d"), Band::new(24, 24.0 / 3600.0));
        assert_eq!(bucket("/e"), Band::new(1, 1.0 / 86400.0));
        assert_eq!(bucket("/f"), None);
        assert_eq!(bucket("/g"), Band::new(1, 1.0));
        assert_eq!(bucket("/nothing"), Band::new(20, 5.0));
    }

    #[test]
    fn routes_are_optional_and_default_may_be_unlimited() {
        let rules = ok(r#"{"default": {"unlimited": true}}"#);
        assert_eq!(rules.iter().len(), 1);
        assert!(rules.lookup(&Method::GET, "/x").limit().is_none());
    }

    #[test]
    fn most_specific_pattern_wins() {
        let rules = ok(&with_routes(
            r#"{"path": "/api/{*rest}", "capacity": 1, "refill_rate": 1},
               {"path": "/api/users/{id}", "capacity": 2, "refill_rate": 1},
               {"path": "/api/users/admin", "capacity": 3, "refill_rate": 1},
               {"path": "/api/users/{id}/posts", "capacity": 4, "refill_rate": 1}"#,
        ));
        let id = |p: &str| rules.lookup(&Method::GET, p).id().to_owned();
        assert_eq!(id("/api/users/admin"), "/api/users/admin");
        assert_eq!(id("/api/users/7"), "/api/users/<id>");
        assert_eq!(id("/api/users/7/posts"), "/api/users/<id>/posts");
        assert_eq!(id("/api/other/deep/path"), "/api/<*rest>");
        assert_eq!(id("/api"), "default");
        assert_eq!(id("/"), "default");
        assert_eq!(id(""), "default");
    }

    #[test]
    fn methods_select_rules_and_fall_through_to_less_specific_patterns() {
        let rules = ok(&with_routes(
            r#"{"path": "/api/{*rest}", "capacity": 1, "refill_rate": 1},
               {"path": "/api/submit", "methods": ["post", "PUT", "POST"], "capacity": 2, "refill_rate": 1},
               {"path": "/api/submit", "methods": ["DELETE"], "capacity": 3, "refill_rate": 1}"#,
        ));
        let id = |m: Method, p: &str| rules.lookup(&m, p).id().to_owned();
        assert_eq!(id(Method::POST, "/api/submit"), "/api/submit@POST,PUT");
        assert_eq!(id(Method::PUT, "/api/submit"), "/api/submit@POST,PUT");
        assert_eq!(id(Method::DELETE, "/api/submit"), "/api/submit@DELETE");
        // GET is named by no rule for this path, so the catch-all applies.
        assert_eq!(id(Method::GET, "/api/submit"), "/api/<*rest>");
        assert_eq!(id(Method::PATCH, "/api/submit"), "/api/<*rest>");
        assert_eq!(id(Method::POST, "/other"), "default");
    }

    #[test]
    fn rule_ids_are_stable_and_free_of_hash_tag_braces() {
        let rules = ok(&with_routes(
            r#"{"path": "/u/{id}/f/{*rest}", "methods": ["GET"], "unlimited": true}"#,
        ));
        let ids: Vec<&str> = rules.iter().map(Rule::id).collect();
        assert_eq!(ids, ["default", "/u/<id>/f/<*rest>@GET"]);
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let msg = err("{\n  \"default\": {\"capacity\": 20,,}\n}");
        assert_eq!(
            msg,
            "<inline>: at default (line 2, column 30): not valid JSON: found \",\" where a key in double quotes was expected"
        );
    }

    #[test]
    fn text_that_is_not_json_says_what_was_found_and_where() {
        for (text, expected) in [
            (
                "hello",
                "at line 1, column 1: not valid JSON: found \"hello\" where a value was expected",
            ),
            // serde_json stops inside the word; the whole word is shown, from its start.
            (
                "not JSON at all",
                "at line 1, column 1: not valid JSON: found \"not\" where a value was expected",
            ),
            (
                "\n\n  <xml/>",
                "at line 3, column 3: not valid JSON: found \"<\" where a value was expected",
            ),
            (
                "{\"default\": {\"capacity\": fals}}",
                "at default.capacity (line 1, column 26): not valid JSON: found \"fals\" where a value was expected",
            ),
            (
                "{\"default\" {}}",
                "at line 1, column 12: not valid JSON: found \"{\" where `:` was expected",
            ),
            (
                "{\"routes\": [{\"path\": \"/a\"} {\"path\": \"/b\"}]}",
                "at routes (line 1, column 28): not valid JSON: found \"{\" where `,` or `]` was expected",
            ),
            (
                "{\"default\": {\"unlimited\": true,}}",
                "at default (line 1, column 32): not valid JSON: found \"}\" after a trailing comma",
            ),
            (
                "{\"default\": {\"unlimited\": true}",
                "at line 1, column 32: not valid JSON: found the end of the file before the object was closed with `}`",
            ),
            (
                "{\"routes\": [\n",
                "at routes (line 2, column 1): not valid JSON: found the end of the file before the list was closed with `]`",
            ),
            (
                "",
                "at line 1, column 1: not valid JSON: found the end of the file where a value was expected",
            ),
            (
                "{\"default\": {\"limit\": \"1/second}}",
                "at default.limit (line 1, column 34): not valid JSON: found the end of the file before the string was closed with `\"`",
            ),
            (
                "{\"default\": {\"capacity\": 1., \"refill_rate\": 1}}",
                "at default.capacity (line 1, column 28): not valid JSON: found \",\" (invalid number)",
            ),
        ] {
            assert_eq!(err(text), format!("<inline>: {expected}"), "{text:?}");
        }
    }

    #[test]
    fn text_after_the_document_is_refused_where_it_starts() {
        let one = r#"{"default": {"unlimited": true}}"#;
        for (after, found, column) in [
            (
                r#"{"default": {"limit": "1/second"}}"#.to_owned(),
                r#""{""#,
                33,
            ),
            (" xyz".to_owned(), r#""xyz""#, 34),
            ("]".to_owned(), r#""]""#, 33),
            ("\0\0\0".to_owned(), r#""\0""#, 33),
        ] {
            assert_eq!(
                err(&format!("{one}{after}")),
                format!(
                    "<inline>: at line 1, column {column}: not valid JSON: found {found} after the end of the JSON document"
                ),
                "{after:?}"
            );
        }
        let msg = err(&format!("{one}\n\n  , more"));
        assert!(
            msg.starts_with("<inline>: at line 3, column 3: not valid JSON: found \",\""),
            "{msg}"
        );
        // Whitespace after the document is fine.
        ok(&format!("{one} \n\t\r\n"));
    }

    #[test]
    fn a_file_that_is_not_utf8_says_where() {
        let err = Rules::parse_file(b"{\n  \"default\": \xff}", Path::new("rules.json"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "rules.json: at line 2, column 14: not valid JSON: found the byte 0xFF (a rules file is UTF-8 text)"
        );
    }

    #[test]
    fn a_rule_naming_get_covers_head_unless_head_has_its_own() {
        let rules = ok(&with_routes(
            r#"{"path": "/api/data", "methods": ["GET"], "limit": "2/second"},
               {"path": "/api/feed", "methods": ["GET", "PUT"], "limit": "3/second"},
               {"path": "/api/feed", "methods": ["HEAD"], "limit": "4/second"},
               {"path": "/u/{id}", "methods": ["GET"], "limit": "5/second"},
               {"path": "/u/{name}", "methods": ["HEAD"], "limit": "6/second"},
               {"path": "/both", "methods": ["GET", "HEAD"], "limit": "7/second"},
               {"path": "/any", "limit": "8/second"},
               {"path": "/a/{*rest}", "methods": ["HEAD"], "limit": "9/second"},
               {"path": "/a/b", "methods": ["GET"], "limit": "10/second"}"#,
        ));
        let id = |m: Method, p: &str| rules.lookup(&m, p).id().to_owned();
        // Same identity, so HEAD and GET share one state (and Redis keys do not change).
        assert_eq!(id(Method::HEAD, "/api/data"), "/api/data@GET");
        assert_eq!(id(Method::GET, "/api/data"), "/api/data@GET");
        assert_eq!(id(Method::POST, "/api/data"), "default");
        assert_eq!(id(Method::HEAD, "/api/feed"), "/api/feed@HEAD");
        assert_eq!(id(Method::GET, "/api/feed"), "/api/feed@GET,PUT");
        // A HEAD rule for the same path under another parameter name wins too.
        assert_eq!(id(Method::HEAD, "/u/7"), "/u/<name>@HEAD");
        assert_eq!(id(Method::GET, "/u/7"), "/u/<id>@GET");
        assert_eq!(id(Method::HEAD, "/both"), "/both@GET,HEAD");
        assert_eq!(id(Method::HEAD, "/any"), "/any");
        // A HEAD rule on a less specific path does not take HEAD from a GET rule's path.
        assert_eq!(id(Method::HEAD, "/a/b"), "/a/b@GET");
        assert_eq!(id(Method::HEAD, "/a/c"), "/a/<*rest>@HEAD");
        let applies = |rule: &str| rules.find(rule).unwrap().applies_to(&Method::HEAD);
        assert!(applies("/api/data@GET"));
        assert!(!applies("/api/feed@GET,PUT"));
        assert!(!applies("/u/<id>@GET"));
        assert!(applies("/a/b@GET"));
        assert!(
            !rules
                .find("/api/feed@HEAD")
                .unwrap()
                .applies_to(&Method::GET)
        );
    }

    #[test]
    fn head_follows_get_in_tiers_too() {
        let rules = ok(&format!(
            r#"{{{DEFAULT}, "tiers": {{"pro": {{"default": {{"limit": "1/second"}},
                "routes": [{{"path": "/api/data", "methods": ["GET"], "limit": "2/second"}}]}}}}}}"#
        ));
        let head = rules
            .resolve(&Method::HEAD, "/api/data", Some("pro"), &ClientKey::Unknown)
            .unwrap();
        assert_eq!(head.rule.id(), "pro:/api/data@GET");
        // Without any rule naming GET, HEAD goes where other methods go.
        let rules = ok(&with_routes(
            r#"{"path": "/api/data", "methods": ["POST"], "limit": "2/second"}"#,
        ));
        assert_eq!(rules.lookup(&Method::HEAD, "/api/data").id(), "default");
    }

    #[test]
    fn unreachable_overrides_say_why() {
        let rules = ok(&format!(
            r#"{{{DEFAULT}, "clients": {{
                "ip:2001:db8::7": {{"unlimited": true}},
                "ip:2001:db8:1:2::/64": {{"unlimited": true}},
                "ip:2001:db8:9::/48": {{"unlimited": true}},
                "ip:10.0.0.1": {{"unlimited": true}},
                "id:alice": {{"unlimited": true}}
            }}}}"#
        ));
        let never = |bits: u8| -> Vec<String> {
            rules
                .unreachable_overrides(bits)
                .map(|o| o.to_string())
                .collect()
        };
        assert_eq!(
            never(64),
            [
                "client override \"ip:2001:db8:9::/48\" never applies: IPv6 clients are keyed by their /64 network (ipv6_prefix_len), so an override must name one, like \"ip:2001:db8:9::/64\"",
                "client override \"ip:2001:db8::7\" never applies: IPv6 clients are keyed by their /64 network (ipv6_prefix_len), so an override must name one, like \"ip:2001:db8::/64\"",
            ]
        );
        assert_eq!(never(48).len(), 2);
        assert_eq!(
            never(128),
            [
                "client override \"ip:2001:db8:1:2::/64\" never applies: IPv6 clients are keyed by their whole address (ipv6_prefix_len 128), so an override must name an address, like \"ip:2001:db8:1:2::\"",
                "client override \"ip:2001:db8:9::/48\" never applies: IPv6 clients are keyed by their whole address (ipv6_prefix_len 128), so an override must name an address, like \"ip:2001:db8:9::\"",
            ]
        );
    }

    #[test]
    fn locations_are_never_empty() {
        for (text, location) in [
            ("{\"\"", "[\"\"]"),
            ("{", "."),
            ("[", "."),
            ("{\"default\"", "."),
            ("{\"routes\": [{\"\"", "routes[0][\"\"]"),
            ("{\"routes\": [{\"a b\": 1", "routes[0][\"a b\"]"),
        ] {
            let Err(RulesError::Invalid {
                location: found, ..
            }) = Rules::from_json(text)
            else {
                panic!("{text:?} must be refused");
            };
            assert_eq!(found.json_path, location, "{text:?}");
        }
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let msg = err(&with_routes(
            r#"{"path": "/a", "capacity": 1, "refill_rate": 1},
               {"path": "/b", "capcity": 1, "refill_rate": 1}"#,
        ));
        assert!(
            msg.starts_with("<inline>: at routes[1].capcity"),
            "got: {msg}"
        );
        assert!(msg.contains("unknown field `capcity`"), "{msg}");
        let msg = err(&format!(r#"{{{DEFAULT}, "rotues": []}}"#));
        assert!(msg.contains("unknown field `rotues`"), "{msg}");
    }

    #[test]
    fn bands_algorithms_cost_and_shadow() {
        let rules = ok(&with_routes(
            r#"{"path": "/a", "limits": [{"capacity": 10, "refill_rate": 1}, "1000/hour", "5000/day"]},
               {"path": "/b", "limit": "100/minute", "algorithm": "sliding_window", "cost": 5},
               {"path": "/c", "limit": "10/second", "algorithm": "fixed_window", "shadow": true}"#,
        ));
        let limit = |p: &str| rules.lookup(&Method::GET, p).limit().unwrap().clone();
        let a = limit("/a");
        assert_eq!(a.algorithm(), Algorithm::TokenBucket);
        let capacities: Vec<u32> = a.bands().iter().map(Band::capacity).collect();
        assert_eq!(capacities, [10, 1000, 5000]);
        assert_eq!(a.bands()[2].period(), Duration::from_secs(86400));
        assert_eq!((a.cost(), a.shadow()), (1, false));
        let b = limit("/b");
        assert_eq!((b.algorithm(), b.cost()), (Algorithm::SlidingWindow, 5));
        let c = limit("/c");
        assert_eq!((c.algorithm(), c.shadow()), (Algorithm::FixedWindow, true));
        assert_eq!(c.to_string(), "fixed_window 10 per 1s, shadow");
    }

    #[test]
    fn global_shadow_applies_to_every_limited_rule() {
        let rules = ok(&format!(
            r#"{{{DEFAULT}, "shadow": true, "routes": [{{"path": "/a", "limit": "1/second"}}, {{"path": "/b", "unlimited": true}}]}}"#
        ));
        assert!(rules.default_rule().limit().unwrap().shadow());
        assert!(rules.lookup(&Method::GET, "/a").limit().unwrap().shadow());
        assert!(rules.lookup(&Method::GET, "/b").limit().is_none());
    }

    #[test]
    fn bad_bands() {
        for (bands, location, why) in [
            ("[]", "routes[0].limits", "1 to 8 bands, got 0"),
            (
                r#"["1/second","1/second","1/second","1/second","1/second","1/second","1/second","1/second","1/second"]"#,
                "routes[0].limits",
                "got 9",
            ),
            (
                r#"["1/second", "2/week"]"#,
                "routes[0].limits[1]",
                "got \"2/week\"",
            ),
            (
                r#"[{"capacity": 0, "refill_rate": 1}]"#,
                "routes[0].limits[0].capacity",
                "capacity must be",
            ),
            (
                r#"[{"capacity": 1}]"#,
                "routes[0].limits[0]",
                "`refill_rate` is missing",
            ),
            (
                r#"[{"capacity": 1, "refill_rate": 1, "burst": 2}]"#,
                "routes[0].limits[0].burst",
                "unknown field `burst`",
            ),
            (
                r#"[{"capacity": "1", "refill_rate": 1}]"#,
                "routes[0].limits[0].capacity",
                "expected a number",
            ),
            ("[5]", "routes[0].limits[0]", "invalid band 5"),
            (r#""1/second""#, "routes[0].limits", "invalid type"),
        ] {
            let msg = err(&with_routes(&format!(
                r#"{{"path": "/a", "limits": {bands}}}"#
            )));
            assert!(
                msg.starts_with(&format!("<inline>: at {location}")),
                "{bands}: {msg}"
            );
            assert!(msg.contains(why), "{bands}: {msg}");
        }
    }

    #[test]
    fn bad_costs_algorithms_and_unlimited_extras() {
        for (rule, location, why) in [
            (
                r#""limit": "5/second", "cost": 0"#,
                "routes[0].cost",
                "from 1 to 5",
            ),
            (
                r#""limits": ["5/second", "3/day"], "cost": 4"#,
                "routes[0].cost",
                "from 1 to 3",
            ),
            (
                r#""limit": "5/second", "cost": 1.5"#,
                "routes[0].cost",
                "got 1.5",
            ),
            (
                r#""limit": "5/second", "algorithm": "leaky_bucket""#,
                "routes[0].algorithm",
                "unknown variant `leaky_bucket`",
            ),
            (
                r#""unlimited": true, "algorithm": "fixed_window""#,
                "routes[0].algorithm",
                "no meaning on an unlimited rule",
            ),
            (
                r#""unlimited": true, "cost": 2"#,
                "routes[0].cost",
                "no meaning",
            ),
            (
                r#""unlimited": true, "shadow": true"#,
                "routes[0].shadow",
                "no meaning",
            ),
            (
                r#""limit": "5/second", "limits": ["1/second"]"#,
                "routes[0]",
                "it has limit, limits",
            ),
        ] {
            let msg = err(&with_routes(&format!(r#"{{"path": "/a", {rule}}}"#)));
            assert!(
                msg.starts_with(&format!("<inline>: at {location}")),
                "{rule}: {msg}"
            );
            assert!(msg.contains(why), "{rule}: {msg}");
        }
    }

    #[test]
    fn tiers_are_rule_sets_of_their_own() {
        let rules = ok(&format!(
            r#"{{{DEFAULT},
                "routes": [{{"path": "/api/data", "limit": "2/second"}}],
                "tiers": {{
                    "pro": {{"default": {{"limit": "50/second"}}, "routes": [{{"path": "/api/{{*rest}}", "limit": "40/second"}}]}},
                    "free-trial": {{"default": {{"limit": "1/second"}}}}
                }}}}"#
        ));
        let names: Vec<&str> = rules.tier_names().collect();
        assert_eq!(names, ["free-trial", "pro"]);
        assert_eq!(rules.default_tier(), None);
        let unknown = ClientKey::Unknown;
        let id = |tier: Option<&str>, path: &str| {
            rules
                .resolve(&Method::GET, path, tier, &unknown)
                .unwrap()
                .rule
                .id()
                .to_owned()
        };
        assert_eq!(id(None, "/api/data"), "/api/data");
        assert_eq!(id(Some("pro"), "/api/data"), "pro:/api/<*rest>");
        assert_eq!(id(Some("pro"), "/"), "pro:default");
        assert_eq!(id(Some("free-trial"), "/api/data"), "free-trial:default");
        assert_eq!(rules.find("pro:default").and_then(Rule::tier), Some("pro"));
        let err = rules
            .resolve(&Method::GET, "/", Some("gold"), &unknown)
            .unwrap_err();
        assert_eq!(err.name(), "gold");
    }

    #[test]
    fn default_tier_is_used_without_a_tier() {
        let rules = ok(&format!(
            r#"{{{DEFAULT}, "tiers": {{"free": {{"default": {{"limit": "1/second"}}}}}}, "default_tier": "free"}}"#
        ));
        assert_eq!(rules.default_tier(), Some("free"));
        assert_eq!(rules.lookup(&Method::GET, "/").id(), "free:default");
    }

    #[test]
    fn bad_tiers() {
        let msg = err(&format!(
            r#"{{{DEFAULT}, "tiers": {{"p r o": {{"default": {{"limit": "1/second"}}}}}}}}"#
        ));
        assert!(
            msg.starts_with("<inline>: at tiers.p r o: tier name \"p r o\""),
            "{msg}"
        );
        let msg = err(&format!(
            r#"{{{DEFAULT}, "tiers": {{"pro": {{"default": {{"limit": "1/second"}}, "routes": [{{"path": "/a", "limit": "x"}}]}}}}}}"#
        ));
        assert!(
            msg.starts_with("<inline>: at tiers.pro.routes[0].limit: limit must look like"),
            "{msg}"
        );
        let msg = err(&format!(
            r#"{{{DEFAULT}, "tiers": {{"pro": {{"routes": []}}}}}}"#
        ));
        assert!(msg.starts_with("<inline>: at tiers.pro"), "{msg}");
        assert!(msg.contains("missing field `default`"), "{msg}");
        let msg = err(&format!(
            r#"{{{DEFAULT}, "tiers": {{"pro": {{"default": {{"limit": "1/second"}}}}}}, "default_tier": "gold"}}"#
        ));
        assert!(
            msg.starts_with("<inline>: at default_tier: tier \"gold\" is not defined"),
            "{msg}"
        );
        assert!(msg.contains("[\"pro\"]"), "{msg}");
    }

    #[test]
    fn client_overrides() {
        let rules = ok(&format!(
            r#"{{{DEFAULT}, "routes": [{{"path": "/health", "unlimited": true}}],
                "clients": {{
                    "id:partner": {{"limit": "1000/minute"}},
                    "ip:10.0.0.9": {{"unlimited": true}},
                    "ip:2001:db8:1:2:3::9/64": {{"limit": "5/second"}},
                    "unknown": {{"limit": "1/second"}}
                }}}}"#
        ));
        let resolve = |key: ClientKey, path: &str| {
            let r = rules.resolve(&Method::GET, path, None, &key).unwrap();
            (
                r.rule.id().to_owned(),
                r.limit.map(|l| l.bands()[0].capacity()),
                r.client_override,
            )
        };
        assert_eq!(
            resolve(ClientKey::Id("partner".into()), "/"),
            ("default".into(), Some(1000), true)
        );
        assert_eq!(
            resolve(ClientKey::Id("other".into()), "/"),
            ("default".into(), Some(20), false)
        );
        let ip: std::net::IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(
            resolve(ClientKey::Ip(ip), "/"),
            ("default".into(), None, true)
        );
        let net = ClientKey::Ipv6Network {
            network: "2001:db8:1:2::".parse().unwrap(),
            prefix_len: 64,
        };
        assert_eq!(resolve(net, "/").1, Some(5));
        assert_eq!(resolve(ClientKey::Unknown, "/").1, Some(1));
        // Unlimited routes are not limited by an override.
        assert_eq!(resolve(ClientKey::Id("partner".into()), "/health").1, None);
        assert_eq!(rules.clients().count(), 4);
    }

    #[test]
    fn bad_client_overrides() {
        for (key, body, location, why) in [
            (
                "alice",
                r#"{"limit": "1/second"}"#,
                "clients.alice",
                "is not a client key",
            ),
            (
                "ip:999.1.1.1",
                r#"{"limit": "1/second"}"#,
                "clients.ip:999.1.1.1",
                "is not a client key",
            ),
            (
                "id:has space",
                r#"{"limit": "1/second"}"#,
                "clients.id:has space",
                "is not a client key",
            ),
            (
                "id:a",
                r#"{"path": "/", "limit": "1/second"}"#,
                "clients.id:a.path",
                "only allowed in routes",
            ),
            (
                "id:a",
                r#"{"limit": "1/week"}"#,
                "clients.id:a.limit",
                "limit must look like",
            ),
        ] {
            let msg = err(&format!(r#"{{{DEFAULT}, "clients": {{"{key}": {body}}}}}"#));
            assert!(
                msg.starts_with(&format!("<inline>: at {location}")),
                "{key}: {msg}"
            );
            assert!(msg.contains(why), "{key}: {msg}");
        }
    }

    #[test]
    fn failure_policy_fields() {
        let rules = ok(&format!(
            r#"{{{DEFAULT}, "on_redis_error": "deny", "local_fallback_instances": 3}}"#
        ));
        assert_eq!(rules.on_redis_error(), Some(OnRedisError::Deny));
        assert_eq!(rules.local_fallback_instances(), Some(3));
        let rules = ok(&format!("{{{DEFAULT}}}"));
        assert_eq!(rules.on_redis_error(), None);
        assert_eq!(rules.local_fallback_instances(), None);

        let msg = err(&format!(r#"{{{DEFAULT}, "on_redis_error": "ignore"}}"#));
        assert!(msg.starts_with("<inline>: at on_redis_error"), "{msg}");
        assert!(
            msg.contains("expected one of `allow`, `deny`, `local`"),
            "{msg}"
        );
        let msg = err(&format!(r#"{{{DEFAULT}, "local_fallback_instances": 0}}"#));
        assert!(
            msg.starts_with("<inline>: at local_fallback_instances"),
            "{msg}"
        );
    }

    #[test]
    fn missing_default_is_an_error() {
        let msg = err(r#"{"routes": []}"#);
        assert!(msg.contains("missing field `default`"), "{msg}");
    }

    #[test]
    fn bad_capacities() {
        for (value, shown) in [
            ("0", "got 0"),
            ("-1", "got -1"),
            ("2.5", "got 2.5"),
            ("4294967296", "got 4294967296"),
        ] {
            let msg = err(&format!(
                r#"{{"default": {{"capacity": {value}, "refill_rate": 1}}}}"#
            ));
            assert_eq!(
                msg,
                format!(
                    "<inline>: at default.capacity: capacity must be an integer from 1 to 4294967295, {shown}"
                )
            );
        }
        let msg = err(r#"{"default": {"capacity": "10", "refill_rate": 1}}"#);
        assert!(msg.starts_with("<inline>: at default.capacity"), "{msg}");
    }

    #[test]
    fn bad_refill_rates() {
        for value in ["0", "-1", "-0.5", "1e-9", "1e10"] {
            let msg = err(&with_routes(&format!(
                r#"{{"path": "/a", "capacity": 1, "refill_rate": {value}}}"#
            )));
            assert!(
                msg.starts_with("<inline>: at routes[0].refill_rate: refill_rate must be"),
                "{value}: {msg}"
            );
        }
    }

    #[test]
    fn periods_longer_than_the_maximum_are_refused() {
        let msg = err(
            r#"{"default": {"capacity": 5000000, "refill_rate": 0.000001, "algorithm": "sliding_window"}}"#,
        );
        assert!(
            msg.starts_with("<inline>: at default: capacity / refill_rate (the time the whole bucket takes to refill) must be at most 1000000000 s, got 5000000000000 s"),
            "{msg}"
        );
        assert!(Band::new(5_000_000, 1e-6).is_none());
        assert!(Band::new(1000, 1e-6).is_some());
    }

    #[test]
    fn bad_limit_shorthands() {
        for value in [
            "10",
            "10/week",
            "0/second",
            "-1/second",
            "x/minute",
            "10/",
            "/minute",
            "10/minutes",
        ] {
            let msg = err(&with_routes(&format!(
                r#"{{"path": "/a", "limit": "{value}"}}"#
            )));
            assert!(
                msg.starts_with("<inline>: at routes[0].limit: limit must look like \"N/unit\""),
                "{value}: {msg}"
            );
            assert!(msg.contains(&format!("{value:?}")), "{msg}");
        }
    }

    #[test]
    fn exactly_one_limit_form() {
        for (rule, found) in [
            (r#"{"path": "/a"}"#, "it has none"),
            (
                r#"{"path": "/a", "capacity": 1}"#,
                "`refill_rate` is missing",
            ),
            (
                r#"{"path": "/a", "refill_rate": 1}"#,
                "`capacity` is missing",
            ),
            (
                r#"{"path": "/a", "limit": "1/second", "capacity": 1, "refill_rate": 1}"#,
                "it has capacity, refill_rate, limit",
            ),
            (
                r#"{"path": "/a", "unlimited": true, "limit": "1/second"}"#,
                "it has limit, unlimited",
            ),
            (
                r#"{"path": "/a", "unlimited": false}"#,
                "it has `unlimited: false` alone",
            ),
        ] {
            let msg = err(&with_routes(rule));
            assert!(
                msg.starts_with("<inline>: at routes[0]: a rule needs exactly one of"),
                "{rule}: {msg}"
            );
            assert!(msg.ends_with(found), "{rule}: {msg}");
        }
    }

    #[test]
    fn bad_methods() {
        let msg = err(&with_routes(
            r#"{"path": "/a", "methods": [], "unlimited": true}"#,
        ));
        assert!(msg.contains("at routes[0].methods: methods must be a non-empty list"));
        let msg = err(&with_routes(
            r#"{"path": "/a", "methods": ["GET", "GE T"], "unlimited": true}"#,
        ));
        assert!(msg.contains("at routes[0].methods[1]"), "{msg}");
        assert!(msg.contains("\"GE T\" is not a method name"), "{msg}");
        let msg = err(&with_routes(
            r#"{"path": "/a", "methods": [""], "unlimited": true}"#,
        ));
        assert!(msg.contains("at routes[0].methods[0]"), "{msg}");
        let msg = err(&with_routes(
            r#"{"path": "/a", "methods": "GET", "unlimited": true}"#,
        ));
        assert!(msg.contains("at routes[0].methods"), "{msg}");
    }

    #[test]
    fn path_and_methods_are_not_allowed_in_default() {
        let msg = err(r#"{"default": {"path": "/", "unlimited": true}}"#);
        assert!(
            msg.contains("at default.path: `path` is only allowed in routes"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_routes() {
        let msg = err(&with_routes(
            r#"{"path": "/a", "unlimited": true}, {"path": "/a", "limit": "1/second"}"#,
        ));
        assert!(
            msg.contains("at routes[1].path: route \"/a\" duplicates routes[0]"),
            "{msg}"
        );
        let msg = err(&with_routes(
            r#"{"path": "/a", "methods": ["GET", "POST"], "unlimited": true},
               {"path": "/a", "methods": ["post"], "unlimited": true}"#,
        ));
        assert!(msg.contains("duplicates routes[0]"), "{msg}");
        let msg = err(&with_routes(
            r#"{"path": "/a", "unlimited": true},
               {"path": "/a", "methods": ["GET"], "unlimited": true}"#,
        ));
        assert!(msg.contains("duplicates routes[0]"), "{msg}");
        // Same rule identity through the brace mapping.
        let msg = err(&with_routes(
            r#"{"path": "/u/{id}", "unlimited": true}, {"path": "/u/<id>", "unlimited": true}"#,
        ));
        assert!(msg.contains("same rule identity"), "{msg}");
    }

    #[test]
    fn bad_patterns() {
        for (path, reason) in [
            ("api", "does not start with '/'"),
            ("", "does not start with '/'"),
            ("/a/{*rest}/b", "catch-all"),
            ("/a/{", "parameter"),
            ("/a/{x}-{y}", "parameter"),
        ] {
            let msg = err(&with_routes(&format!(
                r#"{{"path": "{path}", "unlimited": true}}"#
            )));
            assert!(
                msg.starts_with(&format!(
                    "<inline>: at routes[0].path: path {path:?} is not a valid pattern"
                )),
                "{path}: {msg}"
            );
            assert!(msg.to_lowercase().contains(reason), "{path}: {msg}");
        }
        let msg = err(&with_routes(
            r#"{"path": "/u/{id}", "unlimited": true}, {"path": "/u/{name}", "unlimited": true}"#,
        ));
        assert!(msg.contains("at routes[1].path"), "{msg}");
        assert!(msg.contains("conflicts with routes[0]"), "{msg}");
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let err = Rules::from_file("/definitely/not/here.json").unwrap_err();
        assert!(matches!(err, RulesError::Read { .. }));
        assert!(err.to_string().contains("/definitely/not/here.json"));
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("tollgate-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.json");
        std::fs::write(&file, r#"{"default": {"capacity": 1, "refill_rate": -2}}"#).unwrap();
        let msg = Rules::from_file(&file).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            msg.starts_with(&format!("{}: at default.refill_rate", file.display())),
            "{msg}"
        );
    }
}
