//! The rate limit service: the HTTP APIs of the systems tollgate replaces, on one
//! [`Limiter`].
//!
//! | route | from | what it does |
//! | --- | --- | --- |
//! | `GET /check/{key}` | the key service | checks a key against its limit |
//! | `POST /check` | the tiered check service | checks an identifier in a tier (`"peek": true`: takes nothing, tells every band; `"settle": true`: holds the cost as a reservation) |
//! | `POST /settle` | tollgate | settles a reservation with the units used |
//! | `GET /status/{key}` | the LLM client's status call | what checking a key would answer, with every band, taking nothing |
//! | `GET /auth` (any method) | nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth` | decides the request the gateway describes, as the layer would |
//! | `GET /health` | both | the service's and Redis's state |
//! | `GET /openapi.json` | | this API, described |
//! | `GET /docs` | the tiered check service | Swagger UI on `/openapi.json` (`src/service/docs.rs`) |
//! | `GET /dashboard` | the FastAPI limiter | a page watching it live (`src/service/dashboard/`) |
//! | `GET /metrics` | | tollgate's metrics, in the Prometheus text format |
//! | `POST /configure` | the key service | gives a key its own limit, on every instance |
//! | `GET /stats/{key}` | the key service | a key's calls by hour and day |
//! | `GET /admin/stats`, `GET /admin/stats/{client_id}` | the FastAPI limiter | every client's calls together, and one client's |
//! | `GET, POST /admin/configs`, `PUT, DELETE /admin/configs/{endpoint}` | the FastAPI limiter | per endpoint limits, as route rules |
//! | `POST /admin/reset/{key}[/{rule}]` | the library | forgets a key, on every instance |
//! | `GET /admin/rules`, `PUT, DELETE /admin/rules/clients/{client}`, `POST /admin/rules/routes`, `DELETE /admin/rules/routes/{identity}` | tollgate | the rules in force and runtime entries, in the rules file's words |
//! | `GET /events`, `GET /events/{client_id}` (Server-Sent Events), `GET /ws/global`, `GET /ws/{client_id}` (WebSocket) | the FastAPI limiter | live decisions, rule changes and a summary each second |
//!
//! [`Service::router`] is an axum `Router`: `tollgate serve` serves it, and an app can
//! mount it beside its own routes, on the limiter its layer uses.

mod admin;
pub(crate) mod auth;
mod browsers;
mod check;
mod configs;
mod dashboard;
mod docs;
mod events;
mod forward_auth;
mod health;
mod json;
mod keys;
mod metrics;
mod openapi;
mod rules;
mod stats;
mod tickets;

use std::sync::Arc;

use axum::routing::{any, get, post, put};
use axum::{Router, middleware};

use auth::{Admin, Secret};
use browsers::Browsers;
pub use browsers::InvalidListing;
pub use metrics::prometheus_builder;
use tickets::Tickets;
use tollgate::http::RequestQueries;
use tollgate::{Limiter, RateLimitLayer};

/// The service's routes on a limiter.
///
/// # Example
///
/// ```
/// use axum::{body::Body, http::{Request, StatusCode}};
/// use tower::ServiceExt;
/// use tollgate::{Limiter, Rules};
/// use tollgate_server::service::Service;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let rules = Rules::from_json(r#"{"default": {"limit": "2/hour"}}"#)?;
/// let limiter = Limiter::builder().rules(rules).build().await?;
/// let app = Service::new(limiter).router();
///
/// let check = || Request::post("/check")
///     .header("content-type", "application/json")
///     .body(Body::from(r#"{"identifier": "user:123"}"#))
///     .unwrap();
/// assert_eq!(app.clone().oneshot(check()).await?.status(), StatusCode::OK);
/// assert_eq!(app.clone().oneshot(check()).await?.status(), StatusCode::OK);
/// assert_eq!(app.oneshot(check()).await?.status(), StatusCode::TOO_MANY_REQUESTS);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Service {
    limiter: Limiter,
    admin: Admin,
    check_token: Option<Secret>,
    browsers: Browsers,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    queries: RequestQueries,
}

/// What every handler shares.
pub(crate) struct State {
    pub(crate) limiter: Limiter,
    pub(crate) admin: Admin,
    /// What the decision routes need, if anything.
    pub(crate) check_token: Option<Secret>,
    /// The pages and names admitted besides the service's own.
    pub(crate) browsers: Browsers,
    /// The event streams' one-time tickets.
    pub(crate) tickets: Tickets,
    pub(crate) metrics: metrics::Exporter,
    /// How `/auth` makes the query of the request a gateway describes.
    pub(crate) queries: RequestQueries,
}

/// The service's routes in two, to serve on two addresses: the decisions where clients or
/// a gateway reach them, the admin API where only operators do. Made by
/// [`Service::routers`].
///
/// # Example
///
/// ```
/// use axum::{body::Body, http::{Request, StatusCode}};
/// use tower::ServiceExt;
/// use tollgate::{Limiter, Rules};
/// use tollgate_server::service::Service;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = Limiter::builder()
///     .rules(Rules::from_json(r#"{"default": {"limit": "2/minute"}}"#)?)
///     .build()
///     .await?;
/// let routers = Service::new(limiter).routers();
/// let stats = || Request::get("/admin/stats").body(Body::empty()).unwrap();
/// // The admin API is not on the decisions' router.
/// assert_eq!(routers.decisions.oneshot(stats()).await?.status(), StatusCode::NOT_FOUND);
/// // On its own router, it still wants a token or this host (here: no peer address).
/// assert_eq!(routers.admin.oneshot(stats()).await?.status(), StatusCode::UNAUTHORIZED);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Routers {
    /// `/check`, `/check/{key}`, `/settle`, `/status/{key}`, `/stats/{key}`, `/auth`, `/health`,
    /// `/openapi.json`, `/docs`.
    pub decisions: Router,
    /// `/configure`, `/admin/…`, the event streams, the dashboard and `/metrics`, with
    /// `/health`, `/openapi.json` and `/docs`.
    pub admin: Router,
}

impl Service {
    /// The service on `limiter`. Writes and admin reads are accepted from loopback peers
    /// only, until [`admin_token`](Self::admin_token) sets a token.
    pub fn new(limiter: Limiter) -> Self {
        Self {
            queries: RequestQueries::new(&limiter),
            limiter,
            admin: Admin::loopback_only(),
            check_token: None,
            browsers: Browsers::default(),
            metrics: None,
        }
    }

    /// `/auth` finds the client of the request a gateway describes as `layer` finds the
    /// client of a request: `X-Client-ID`, else `X-Forwarded-For`, from the peers `layer`
    /// trusts, read as deep as it reads them; else the peer's address. The gateway is the
    /// peer, so it must be one of them. A [`ClientIdentity`](tollgate::ClientIdentity) an app's
    /// middleware set on the request wins, as with the layer. Without this, the layer's
    /// default: loopback and the private networks, one `X-Forwarded-For` hop.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::{body::Body, extract::ConnectInfo, http::{Request, StatusCode}};
    /// use tower::ServiceExt;
    /// use tollgate::{Limiter, RateLimitLayer, Rules};
    /// use tollgate_server::service::Service;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = Limiter::builder()
    ///     .rules(Rules::from_json(r#"{"default": {"limit": "5/second"}}"#)?)
    ///     .build()
    ///     .await?;
    /// // Our gateways are in 10.1.0.0/16.
    /// let layer = RateLimitLayer::builder(limiter.clone())
    ///     .trusted_proxies(["10.1.0.0/16"])
    ///     .build()?;
    /// let app = Service::new(limiter).client_identity(&layer).router();
    ///
    /// // nginx at 10.1.0.5 asks about alice's GET /api/data.
    /// let request = Request::get("/auth")
    ///     .header("x-original-method", "GET")
    ///     .header("x-original-uri", "/api/data")
    ///     .header("x-client-id", "alice")
    ///     .extension(ConnectInfo("10.1.0.5:41000".parse::<SocketAddr>()?))
    ///     .body(Body::empty())?;
    /// let response = app.oneshot(request).await?;
    /// assert_eq!(response.status(), StatusCode::OK);
    /// assert_eq!(response.headers()["x-ratelimit-remaining"], "4");
    /// # Ok(())
    /// # }
    /// ```
    pub fn client_identity(mut self, layer: &RateLimitLayer) -> Self {
        self.queries = layer.queries().clone();
        self
    }

    /// `GET /metrics` renders from the app's own Prometheus recorder (build it with
    /// [`prometheus_builder`] for tollgate's histogram buckets). Without one, the router
    /// installs a recorder as the process's global one, once.
    pub fn metrics_handle(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// Writes and admin reads need `Authorization: Bearer <token>`, from any peer (the event
    /// streams take a one-time ticket from `POST /admin/tickets` instead, for browsers).
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin = Admin::token(token.into());
        self
    }

    /// The decision routes (`/check`, `/check/{key}`, `/settle`, `/status/{key}`, `/stats/{key}`, `/auth`) need
    /// `Authorization: Bearer <token>`: for deployments where clients can reach them, so that
    /// nobody spends another's quota. A gateway adds it to its `/auth` requests.
    ///
    /// ```
    /// use axum::{body::Body, http::{Request, StatusCode}};
    /// use tower::ServiceExt;
    /// use tollgate::{Limiter, Rules};
    /// use tollgate_server::service::Service;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = Limiter::builder()
    ///     .rules(Rules::from_json(r#"{"default": {"limit": "2/minute"}}"#)?)
    ///     .build()
    ///     .await?;
    /// let app = Service::new(limiter).check_token("s3cret").router();
    /// let check = |authorization: &str| Request::get("/check/alice")
    ///     .header("authorization", authorization)
    ///     .body(Body::empty())
    ///     .unwrap();
    /// assert_eq!(app.clone().oneshot(check("Bearer guess")).await?.status(), StatusCode::UNAUTHORIZED);
    /// assert_eq!(app.oneshot(check("Bearer s3cret")).await?.status(), StatusCode::OK);
    /// # Ok(())
    /// # }
    /// ```
    pub fn check_token(mut self, token: impl Into<String>) -> Self {
        self.check_token = Some(Secret::new(token.into()));
        self
    }

    /// Pages of these origins (`https://admin.example.com`: scheme, host, optional port) may
    /// call the admin, write and event routes, besides the service's own pages. Any other
    /// page's request is refused, as is any `Sec-Fetch-Site: cross-site` request.
    ///
    /// ```
    /// use tollgate::{Limiter, Rules};
    /// use tollgate_server::service::Service;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "10/second"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// let service = Service::new(limiter.clone()).allowed_origins(["https://admin.example.com"])?;
    /// assert!(Service::new(limiter).allowed_origins(["admin.example.com"]).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Result<Self, InvalidListing>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for origin in origins {
            self.browsers.allow_origin(origin.as_ref())?;
        }
        Ok(self)
    }

    /// Without an admin token, admin requests must name this host in `Host`: a loopback
    /// name or address, or one of these (`host` or `host:port`). Other names are refused,
    /// against DNS rebinding.
    ///
    /// ```
    /// use tollgate::{Limiter, Rules};
    /// use tollgate_server::service::Service;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let rules = Rules::from_json(r#"{"default": {"limit": "10/second"}}"#)?;
    /// let limiter = Limiter::builder().rules(rules).build().await?;
    /// let service = Service::new(limiter.clone()).allowed_hosts(["limits.internal:8000"])?;
    /// assert!(Service::new(limiter).allowed_hosts(["limits.internal/admin"]).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn allowed_hosts<I, S>(mut self, hosts: I) -> Result<Self, InvalidListing>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for host in hosts {
            self.browsers.allow_host(host.as_ref())?;
        }
        Ok(self)
    }

    /// The limiter the service decides with.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The routes, to serve or to merge into an app's router. Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()`: without the peer's address,
    /// writes without a token are refused.
    pub fn router(self) -> Router {
        let (state, parts) = self.parts();
        parts
            .decisions
            .merge(parts.admin)
            .merge(parts.both)
            .with_state(state)
    }

    /// The routes in two, to serve the admin API on an address of its own (`ADMIN_ADDR`).
    pub fn routers(self) -> Routers {
        let (state, parts) = self.parts();
        Routers {
            decisions: parts
                .decisions
                .merge(parts.both.clone())
                .with_state(Arc::clone(&state)),
            admin: parts.admin.merge(parts.both).with_state(state),
        }
    }

    /// The handlers' state, and the routes by where they are served.
    fn parts(self) -> (Arc<State>, Parts) {
        let state = Arc::new(State {
            limiter: self.limiter,
            admin: self.admin,
            check_token: self.check_token,
            browsers: self.browsers,
            tickets: Tickets::default(),
            metrics: self.metrics.map_or_else(metrics::installed, Ok),
            queries: self.queries,
        });
        let decisions = Router::new()
            .route("/check/{key}", get(check::by_key))
            .route("/check", post(check::by_identifier))
            .route("/settle", post(check::settle))
            .route("/status/{key}", get(check::status))
            .route("/stats/{key}", get(stats::key))
            .route("/auth", any(forward_auth::check))
            .route_layer(middleware::from_fn_with_state(
                Arc::clone(&state),
                auth::require_check_token,
            ));
        let streams = Router::new()
            .route("/events", get(events::global_sse))
            .route("/events/{client_id}", get(events::client_sse))
            .route("/ws/global", get(events::global_ws))
            .route("/ws/{client_id}", get(events::client_ws))
            .route_layer(middleware::from_fn_with_state(
                Arc::clone(&state),
                auth::require_admin_or_ticket,
            ));
        let admin = Router::new()
            .route("/configure", post(keys::configure))
            .route("/admin/configs", get(configs::list).post(configs::create))
            // `/admin/configs/` is the endpoint `/`.
            .route(
                "/admin/configs/{*endpoint}",
                put(configs::update).delete(configs::remove),
            )
            .route(
                "/admin/configs/",
                put(configs::update).delete(configs::remove),
            )
            .route("/admin/stats", get(stats::global))
            .route("/admin/stats/{client_id}", get(stats::client))
            .route("/admin/rules", get(rules::list))
            .route(
                "/admin/rules/clients/{*client}",
                put(rules::set_client).delete(rules::remove_client),
            )
            .route("/admin/rules/routes", post(rules::set_route))
            .route(
                "/admin/rules/routes/{*identity}",
                axum::routing::delete(rules::remove_route),
            )
            .route(
                "/admin/rules/routes/",
                axum::routing::delete(rules::remove_route),
            )
            .route("/admin/reset/{key}", post(admin::reset))
            .route("/admin/reset/{key}/{rule}", post(admin::reset_rule))
            .route("/admin/tickets", post(tickets::mint))
            .route_layer(middleware::from_fn_with_state(
                Arc::clone(&state),
                auth::require_admin,
            ))
            .merge(streams);
        let admin = admin
            .route("/dashboard", get(dashboard::page))
            .route("/dashboard/dashboard.js", get(dashboard::script))
            .route("/dashboard/dashboard.css", get(dashboard::style))
            .route("/metrics", get(metrics::render));
        let both = Router::new()
            .route("/health", get(health::health))
            .route("/openapi.json", get(openapi::document))
            .merge(docs::routes());
        (
            state,
            Parts {
                decisions,
                admin,
                both,
            },
        )
    }
}

/// The service's routes, before their state: where each part is served.
struct Parts {
    decisions: Router<Arc<State>>,
    admin: Router<Arc<State>>,
    /// Served on both addresses.
    both: Router<Arc<State>>,
}
