//! [`RateLimitLayer`] and its builder.

use std::fmt;

use tower_layer::Layer;

use super::service::RateLimit;
use crate::http::{InvalidTrustedProxy, RequestQueries, RequestQueriesBuilder};
use crate::limiter::Limiter;

/// A tower [`Layer`](https://docs.rs/tower/latest/tower/trait.Layer.html) that rate limits
/// requests by client and route, with a [`Limiter`].
///
/// For each request it makes its [`Query`](crate::Query) with [`RequestQueries`]: the client
/// (the [`ClientIdentity`](crate::ClientIdentity) your authentication set; else
/// `X-Client-ID` or `X-Forwarded-For` from a trusted proxy; else the peer address), the
/// request's method and path, and the [`Tier`](crate::Tier) and [`Cost`](crate::Cost) your
/// middleware set. It asks the limiter, and either passes the request on with rate limit headers
/// (`X-RateLimit-*` unless the limiter's [`HeaderStyle`](crate::HeaderStyle) says otherwise)
/// or answers `429 Too Many Requests` with `Retry-After`. It decides nothing itself. Cloning is
/// cheap: clones share the limiter.
///
/// # Example
///
/// ```
/// use axum::{body::Body, http::{Request, StatusCode}, routing::get, Router};
/// use tower::ServiceExt;
/// use tollgate::{Limiter, RateLimitLayer, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "1/hour"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let app = Router::new().route("/", get(|| async { "hello" })).layer(RateLimitLayer::new(limiter));
///
/// let request = || Request::get("/").header("x-client-id", "alice").body(Body::empty()).unwrap();
/// let first = app.clone().oneshot(request()).await?;
/// assert_eq!(first.status(), StatusCode::OK);
/// assert_eq!(first.headers()["x-ratelimit-remaining"], "0");
/// let second = app.oneshot(request()).await?;
/// assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
/// // The token back in an hour, less the moment since the first request.
/// let retry_after: u64 = second.headers()["retry-after"].to_str()?.parse()?;
/// assert!((3500..=3600).contains(&retry_after));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimitLayer {
    queries: RequestQueries,
}

impl RateLimitLayer {
    /// The layer in front of `limiter`, trusting identity headers from loopback and private
    /// networks, one proxy hop deep (see [`builder`](Self::builder) to change that).
    pub fn new(limiter: Limiter) -> Self {
        Self::from_queries(RequestQueries::new(&limiter))
    }

    /// The layer making its queries with `queries`, for their limiter: as a front of your
    /// own that uses the same [`RequestQueries`] makes them.
    ///
    /// ```
    /// use tollgate::http::RequestQueries;
    /// use tollgate::{Limiter, RateLimitLayer, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = Limiter::builder()
    ///     .rules(Rules::from_json(r#"{"default": {"limit": "5/second"}}"#)?)
    ///     .build()
    ///     .await?;
    /// let queries = RequestQueries::builder(&limiter).trusted_proxy_hops(2).build()?;
    /// let layer = RateLimitLayer::from_queries(queries.clone());
    /// assert_eq!(layer.limiter().backend_name(), "memory");
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_queries(queries: RequestQueries) -> Self {
        Self { queries }
    }

    /// Starts configuring a layer in front of `limiter`: which peers may say who the client
    /// is.
    pub fn builder(limiter: Limiter) -> RateLimitLayerBuilder {
        RateLimitLayerBuilder {
            queries: RequestQueries::builder(&limiter),
        }
    }

    /// The limiter that decides.
    pub fn limiter(&self) -> &Limiter {
        self.queries.limiter()
    }

    /// How it makes a request's query, for a front that must find the client alike (the
    /// service's `/auth`, a front of your own).
    pub fn queries(&self) -> &RequestQueries {
        &self.queries
    }
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", self.limiter())
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.queries.clone())
    }
}

/// Configures a [`RateLimitLayer`]: which TCP peers may name the client with `X-Client-ID`
/// and `X-Forwarded-For` (by default loopback and the private ranges), and how far to read
/// `X-Forwarded-For`. See the guide's "Identifying clients" (docs/guide/clients.md).
///
/// # Example
///
/// ```
/// use tollgate::{Limiter, RateLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = Limiter::builder()
///     .rules_file(concat!(env!("CARGO_MANIFEST_DIR"), "/rate_limits.json"))
///     .build()
///     .await?;
/// let layer = RateLimitLayer::builder(limiter)
///     .trusted_proxies(["10.0.0.0/8", "fd00::/8"])
///     .build()?;
/// assert_eq!(layer.limiter().backend_name(), "memory");
/// # Ok(())
/// # }
/// ```
pub struct RateLimitLayerBuilder {
    queries: RequestQueriesBuilder,
}

impl fmt::Debug for RateLimitLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayerBuilder")
            .field("queries", &self.queries)
            .finish()
    }
}

impl RateLimitLayerBuilder {
    /// How many proxies in front of the app append to `X-Forwarded-For` (default 1: the
    /// rightmost entry, written by the proxy the app is connected to, is the client). Every
    /// comma-separated entry counts, across all `X-Forwarded-For` lines in order; if the
    /// entry at that position is not an address (`unknown`, an obfuscated name, empty), or
    /// there are fewer entries, the header is not used and the peer address is. 0 ignores
    /// `X-Forwarded-For`.
    ///
    /// Read only when the peer is trusted: by default loopback (127.0.0.0/8, ::1) and the
    /// private ranges (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7), or every peer
    /// after [`trust_any_peer`](Self::trust_any_peer). Not used when
    /// [`trusted_proxies`](Self::trusted_proxies) is set.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::{body::Body, extract::ConnectInfo, http::Request, routing::get, Router};
    /// use tower::ServiceExt;
    /// use tollgate::{Limiter, RateLimitLayer, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // nginx on this host appends the address it saw: one hop (the default).
    /// let rules = Rules::from_json(r#"{"default": {"capacity": 5, "refill_rate": 1},
    ///                                  "clients": {"ip:203.0.113.7": {"capacity": 50, "refill_rate": 1}}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// let layer = RateLimitLayer::builder(limiter).trusted_proxy_hops(1).build()?;
    /// let app = Router::new().route("/", get(|| async { "hi" })).layer(layer);
    /// let limit_seen_from = async |peer: &str| {
    ///     let request = Request::get("/")
    ///         .header("x-forwarded-for", "198.51.100.1, 203.0.113.7")
    ///         .extension(ConnectInfo(peer.parse::<SocketAddr>().unwrap()))
    ///         .body(Body::empty())
    ///         .unwrap();
    ///     let response = app.clone().oneshot(request).await.unwrap();
    ///     response.headers()["x-ratelimit-limit"].to_str().unwrap().to_owned()
    /// };
    /// // From nginx (loopback): the entry nginx appended is the client, 203.0.113.7.
    /// assert_eq!(limit_seen_from("127.0.0.1:41000").await, "50");
    /// // From a client connecting directly: its own address; the header is not read.
    /// assert_eq!(limit_seen_from("203.0.113.99:41000").await, "5");
    /// # Ok(())
    /// # }
    /// ```
    pub fn trusted_proxy_hops(mut self, hops: usize) -> Self {
        self.queries = self.queries.trusted_proxy_hops(hops);
        self
    }

    /// Your proxies' addresses, as CIDRs (`"10.0.0.0/8"`) or single addresses, instead of
    /// the default trusted peers (loopback and the private ranges). Only requests from these
    /// peers may name their client with `X-Client-ID` or `X-Forwarded-For`; a client
    /// connecting from anywhere else is keyed by its own address, whatever it sends.
    ///
    /// `X-Forwarded-For` is then read from the right, over these addresses: the first other
    /// address is the client (if all are yours, the farthest). So list only your proxies,
    /// never a network your clients connect from. An entry that is not an address ends the
    /// walk, and the peer address is used. This replaces
    /// [`trusted_proxy_hops`](Self::trusted_proxy_hops). An empty list trusts no peer.
    ///
    /// An entry that does not parse, or that covers every address (`0.0.0.0/0`, `::/0`),
    /// fails [`build`](Self::build): to trust every peer, use
    /// [`trust_any_peer`](Self::trust_any_peer). The last of the two calls wins.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::{body::Body, extract::ConnectInfo, http::Request, routing::get, Router};
    /// use tower::ServiceExt;
    /// use tollgate::{Limiter, RateLimitLayer, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"capacity": 5, "refill_rate": 1},
    ///                                  "clients": {"id:internal-batch": {"limit": "6000/minute"}}}"#)?;
    /// // Our load balancers are in 10.1.0.0/16: they alone may say who the client is.
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// let layer = RateLimitLayer::builder(limiter).trusted_proxies(["10.1.0.0/16"]).build()?;
    /// let app = Router::new().route("/", get(|| async { "hi" })).layer(layer);
    /// let limit_seen_from = async |peer: &str| {
    ///     let request = Request::get("/")
    ///         .header("x-client-id", "internal-batch")
    ///         .extension(ConnectInfo(peer.parse::<SocketAddr>().unwrap()))
    ///         .body(Body::empty())
    ///         .unwrap();
    ///     let response = app.clone().oneshot(request).await.unwrap();
    ///     response.headers()["x-ratelimit-limit"].to_str().unwrap().to_owned()
    /// };
    /// assert_eq!(limit_seen_from("10.1.2.3:41000").await, "6000");
    /// // Anyone else, this host included, is keyed by address: the override is out of reach.
    /// assert_eq!(limit_seen_from("127.0.0.1:41000").await, "5");
    /// assert_eq!(limit_seen_from("192.168.1.20:41000").await, "5");
    /// # Ok(())
    /// # }
    /// ```
    pub fn trusted_proxies<I, S>(mut self, proxies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queries = self.queries.trusted_proxies(proxies);
        self
    }

    /// Trusts every peer: any client may name itself with `X-Client-ID`, or with
    /// `X-Forwarded-For` (read by [`trusted_proxy_hops`](Self::trusted_proxy_hops)), and
    /// so pick its own bucket, or a `clients` override meant for someone else.
    ///
    /// **Use it only when nothing but your own proxies can connect to the app** and their
    /// addresses are not known in advance; otherwise list them with
    /// [`trusted_proxies`](Self::trusted_proxies). The layer logs a warning when it is
    /// built with it. Replaces `trusted_proxies` (the last of the two calls wins).
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::{body::Body, extract::ConnectInfo, http::Request, routing::get, Router};
    /// use tower::ServiceExt;
    /// use tollgate::{Limiter, RateLimitLayer, Rules};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "2/hour"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// let layer = RateLimitLayer::builder(limiter).trust_any_peer().build()?;
    /// let app = Router::new().route("/", get(|| async { "hi" })).layer(layer);
    /// let remaining_from = async |peer: &str| {
    ///     let request = Request::get("/")
    ///         .header("x-client-id", "alice")
    ///         .extension(ConnectInfo(peer.parse::<SocketAddr>().unwrap()))
    ///         .body(Body::empty())
    ///         .unwrap();
    ///     let response = app.clone().oneshot(request).await.unwrap();
    ///     response.headers()["x-ratelimit-remaining"].to_str().unwrap().to_owned()
    /// };
    /// // Two public addresses, one client: the ID is believed from anywhere.
    /// assert_eq!(remaining_from("203.0.113.7:41000").await, "1");
    /// assert_eq!(remaining_from("198.51.100.4:41000").await, "0");
    /// # Ok(())
    /// # }
    /// ```
    pub fn trust_any_peer(mut self) -> Self {
        self.queries = self.queries.trust_any_peer();
        self
    }

    /// The layer; an entry of [`trusted_proxies`](Self::trusted_proxies) that does not parse,
    /// or covers every address, is an error.
    pub fn build(self) -> Result<RateLimitLayer, InvalidTrustedProxy> {
        self.queries.build().map(RateLimitLayer::from_queries)
    }
}
