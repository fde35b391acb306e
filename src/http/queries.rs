//! [`RequestQueries`]: an HTTP request made into a [`Query`], once, for every HTTP front.

use std::fmt;
use std::sync::Arc;

use http::Request;

use super::extensions::{ClientIdentity, Cost, Tier};
use super::identity::{InvalidTrustedProxy, KeySource, Trust};
use crate::key::InvalidClientId;
use crate::limiter::{Limiter, Query};

/// How an HTTP front turns a request into a [`Query`] for its [`Limiter`]: the client (the
/// request's [`ClientIdentity`] if your middleware set one; else `X-Client-ID` or
/// `X-Forwarded-For` from a trusted proxy; else the peer address), the rule for its method
/// and path, and the [`Tier`] and [`Cost`] your middleware set. The layer, the service's
/// `/auth` and a front of your own make their queries alike with it, so a client counts
/// the same through each.
///
/// Cloning is cheap: clones share the limiter and the trust settings. Making a query
/// allocates nothing: it borrows the request.
///
/// # Example
///
/// ```
/// use std::net::SocketAddr;
/// use http::Request;
/// use tollgate::http::RequestQueries;
/// use tollgate::{Limiter, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "100/minute"},
///     "routes": [{"path": "/api/data", "limit": "2/minute"}]}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let queries = RequestQueries::new(&limiter);
///
/// // From a proxy on this host, naming its client.
/// let request = Request::get("/api/data?page=2")
///     .header("x-client-id", "alice")
///     .extension("127.0.0.1:41000".parse::<SocketAddr>()?)
///     .body(())?;
/// let verdict = limiter.check(queries.query(&request)?).await?;
/// assert_eq!((verdict.rule(), verdict.decision().unwrap().remaining), ("/api/data", 1));
///
/// // A header that cannot name a client is refused, and counted.
/// let bad = Request::get("/").header("x-client-id", "has space").body(())?;
/// assert!(queries.query(&bad).is_err());
/// assert_eq!(limiter.stats().invalid_client_ids, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RequestQueries {
    limiter: Limiter,
    keys: Arc<KeySource>,
}

impl RequestQueries {
    /// Queries for `limiter`, trusting identity headers from loopback and private networks,
    /// one proxy hop deep (see [`builder`](Self::builder) to change that).
    pub fn new(limiter: &Limiter) -> Self {
        Self {
            limiter: limiter.clone(),
            keys: Arc::new(KeySource::private_networks(limiter.ipv6_prefix_len())),
        }
    }

    /// Starts configuring which peers may say who the client is.
    pub fn builder(limiter: &Limiter) -> RequestQueriesBuilder {
        RequestQueriesBuilder {
            limiter: limiter.clone(),
            trusted_proxy_hops: 1,
            trust: Trust::default(),
        }
    }

    /// The limiter the queries are for.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The query of `request`: its client, the rule for its method and path, its tier and
    /// cost. An `X-Client-ID` that cannot be used (from a trusted peer) is an error, counted
    /// in [`Stats::invalid_client_ids`](crate::Stats::invalid_client_ids); answer it with
    /// [`render::invalid_client_id`](crate::render::invalid_client_id).
    #[inline]
    pub fn query<'r, B>(&self, request: &'r Request<B>) -> Result<Query<'r>, InvalidClientId> {
        self.query_for(request, request.method().as_str(), request.uri().path())
    }

    /// The query of the request `request` describes: its client, tier and cost, under the
    /// rule for `method` (as sent, upper case) and `path`. For a front that is told the
    /// original request's method and path, as `/auth` is by a gateway's headers (see
    /// [`forwarded_path`](super::forwarded_path)); the client is found in `request`, whose
    /// peer is the gateway.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use http::Request;
    /// use tollgate::http::RequestQueries;
    /// use tollgate::{Limiter, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "100/minute"},
    ///     "routes": [{"path": "/api/submit", "methods": ["POST"], "limit": "3/minute"}]}"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// let queries = RequestQueries::new(&limiter);
    /// // nginx asks about a client's POST /api/submit.
    /// let asked = Request::get("/auth")
    ///     .header("x-forwarded-for", "203.0.113.7")
    ///     .extension("127.0.0.1:41000".parse::<SocketAddr>()?)
    ///     .body(())?;
    /// let verdict = limiter.check(queries.query_for(&asked, "POST", "/api/submit")?).await?;
    /// assert_eq!(verdict.rule(), "/api/submit@POST");
    /// # Ok(())
    /// # }
    /// ```
    #[inline]
    pub fn query_for<'r, B>(
        &self,
        request: &'r Request<B>,
        method: &'r str,
        path: &'r str,
    ) -> Result<Query<'r>, InvalidClientId> {
        let extensions = request.extensions();
        let client = match extensions.get::<ClientIdentity>() {
            Some(ClientIdentity(key)) => key.as_ref(),
            None => self.keys.client_key(request).inspect_err(|_| {
                self.limiter.count_invalid_client_id();
            })?,
        };
        let mut query = Query::of(client).route(method, path);
        if let Some(tier) = extensions.get::<Tier>() {
            query = query.tier(tier.as_str());
        }
        if let Some(cost) = extensions.get::<Cost>() {
            query = query.cost(cost.get());
        }
        Ok(query)
    }
}

impl fmt::Debug for RequestQueries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestQueries")
            .field("limiter", &self.limiter)
            .field("keys", &self.keys)
            .finish()
    }
}

/// Configures [`RequestQueries`]: which TCP peers may name the client with `X-Client-ID`
/// and `X-Forwarded-For` (by default loopback and the private ranges), and how far to read
/// `X-Forwarded-For`. [`RateLimitLayer::builder`](crate::RateLimitLayer::builder) takes the
/// same settings, documented there with examples.
///
/// # Example
///
/// ```
/// use std::net::SocketAddr;
/// use http::Request;
/// use tollgate::http::RequestQueries;
/// use tollgate::{Limiter, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = Limiter::builder()
///     .rules(Rules::from_json(r#"{"default": {"limit": "5/second"}}"#)?)
///     .build()
///     .await?;
/// let queries = RequestQueries::builder(&limiter).trusted_proxies(["10.1.0.0/16"]).build()?;
/// let from = |peer: &str| {
///     Request::get("/")
///         .header("x-client-id", "alice")
///         .extension(peer.parse::<SocketAddr>().unwrap())
///         .body(())
///         .unwrap()
/// };
/// let proxied = from("10.1.2.3:41000");
/// let direct = from("203.0.113.9:41000");
/// let remaining = async |request| {
///     let verdict = limiter.check(queries.query(request).unwrap()).await.unwrap();
///     verdict.decision().unwrap().remaining
/// };
/// assert_eq!(remaining(&proxied).await, 4);
/// assert_eq!(remaining(&proxied).await, 3);
/// // Only the listed proxy may name the client: this peer counts as its own address.
/// assert_eq!(remaining(&direct).await, 4);
/// # Ok(())
/// # }
/// ```
pub struct RequestQueriesBuilder {
    limiter: Limiter,
    trusted_proxy_hops: usize,
    trust: Trust,
}

impl fmt::Debug for RequestQueriesBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestQueriesBuilder")
            .field("trusted_proxy_hops", &self.trusted_proxy_hops)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl RequestQueriesBuilder {
    /// How many proxies in front of the app append to `X-Forwarded-For` (default 1); 0
    /// ignores it. See
    /// [`RateLimitLayerBuilder::trusted_proxy_hops`](crate::RateLimitLayerBuilder::trusted_proxy_hops).
    pub fn trusted_proxy_hops(mut self, hops: usize) -> Self {
        self.trusted_proxy_hops = hops;
        self
    }

    /// Your proxies' addresses, as CIDRs or single addresses, instead of the default
    /// trusted peers. See
    /// [`RateLimitLayerBuilder::trusted_proxies`](crate::RateLimitLayerBuilder::trusted_proxies).
    pub fn trusted_proxies<I, S>(mut self, proxies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.trust = Trust::Proxies(proxies.into_iter().map(Into::into).collect());
        self
    }

    /// Trusts every peer. See
    /// [`RateLimitLayerBuilder::trust_any_peer`](crate::RateLimitLayerBuilder::trust_any_peer).
    pub fn trust_any_peer(mut self) -> Self {
        self.trust = Trust::AnyPeer;
        self
    }

    /// The queries; an entry of [`trusted_proxies`](Self::trusted_proxies) that does not
    /// parse, or covers every address, is an error.
    pub fn build(self) -> Result<RequestQueries, InvalidTrustedProxy> {
        let keys = KeySource::new(
            &self.trust,
            self.trusted_proxy_hops,
            self.limiter.ipv6_prefix_len(),
        )?;
        Ok(RequestQueries {
            limiter: self.limiter,
            keys: Arc::new(keys),
        })
    }
}
