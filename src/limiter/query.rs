//! [`Query`]: what to decide.

use crate::key::{ClientKey, KeyRef};

/// What to decide: whose request, under which rule, in which tier, at what cost.
///
/// The rule is the one named with [`rule`](Self::rule) (by its identity, as
/// [`Rule::id`](crate::Rule::id) gives it), or the one the rules file gives a method and
/// path ([`route`](Self::route)): whichever of the two was called last. With neither, it is
/// the default rule of the tier (the one given with [`tier`](Self::tier), else the file's
/// `default_tier`, else the top-level rules). The client's override from the file's
/// `clients`, if any, applies to any of them. An IPv6 client counts by its network, as the
/// limiter's [`ipv6_prefix_len`](crate::LimiterBuilder::ipv6_prefix_len) says, whichever
/// front asks.
///
/// # Example
///
/// ```
/// use tollgate::{ClientKey, Limiter, Query, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{
///     "default": {"limit": "100/minute"},
///     "routes": [{"path": "/v1/completions", "limit": "10000/minute"}],
///     "tiers": {"pro": {"default": {"limit": "1000/minute"}}}
/// }"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let alice = ClientKey::id("alice");
///
/// // An LLM call weighed by its tokens, under the rule for its route.
/// let tokens = Query::new(&alice).route("POST", "/v1/completions").cost(1200);
/// assert_eq!(limiter.check(tokens).await?.decision().unwrap().remaining, 8800);
/// // The pro tier's default rule, by tier and by name.
/// assert_eq!(limiter.check(Query::new(&alice).tier("pro")).await?.rule(), "pro:default");
/// assert_eq!(limiter.check(Query::new(&alice).rule("pro:default")).await?.rule(), "pro:default");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub(crate) client: KeyRef<'a>,
    pub(crate) rule: Choice<'a>,
    pub(crate) tier: Option<&'a str>,
    pub(crate) cost: Option<u32>,
}

/// How the rule is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice<'a> {
    /// The tier's default rule.
    Default,
    /// The rule for a method (its name, as sent) and path.
    Route { method: &'a str, path: &'a str },
    /// The rule with this identity.
    Named(&'a str),
}

impl<'a> Query<'a> {
    /// A request of `client`, under the default rule, at the rule's cost.
    pub fn new(client: &'a ClientKey) -> Self {
        Self::of(client.as_ref())
    }

    /// The same, for a borrowed key (the HTTP front's).
    pub(crate) fn of(client: KeyRef<'a>) -> Self {
        Self {
            client,
            rule: Choice::Default,
            tier: None,
            cost: None,
        }
    }

    /// Under the rule for this method (`"GET"`, `"POST"`, ...; as sent, upper case) and
    /// path, as the HTTP layer chooses it.
    pub fn route(mut self, method: &'a str, path: &'a str) -> Self {
        self.rule = Choice::Route { method, path };
        self
    }

    /// Under the rule with this identity, e.g. `"/api/data"`, `"/api/submit@POST"`,
    /// `"pro:default"` (see [`Rule::id`](crate::Rule::id)), or a named rule's name
    /// (`"special_path"`, see [`Rule::is_named`](crate::Rule::is_named)).
    pub fn rule(mut self, identity: &'a str) -> Self {
        self.rule = Choice::Named(identity);
        self
    }

    /// In this tier of the rules file. With [`rule`](Self::rule), the rule must be of this
    /// tier, or a named rule.
    pub fn tier(mut self, tier: &'a str) -> Self {
        self.tier = Some(tier);
        self
    }

    /// Takes `cost` from every band instead of the rule's cost: a request weighed by what it
    /// uses (LLM tokens, bytes). From 1 to the smallest capacity of the limit that applies.
    pub fn cost(mut self, cost: u32) -> Self {
        self.cost = Some(cost);
        self
    }
}
