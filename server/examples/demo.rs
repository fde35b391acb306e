//! The tollgate demo: a small axum API with the rate limit layer on every route, and the
//! rate limit service's routes beside them.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! Environment:
//! - `RATE_LIMIT_RULES_PATH`: rules file (default `rate_limits.json`)
//! - `REDIS_URL`: share buckets through this Redis (unset: in-memory buckets)
//! - `REDIS_CLUSTER_NODES`: comma-separated seed nodes of a Redis Cluster, instead of
//!   `REDIS_URL`
//! - `REDIS_PREFIX`: prefix of every Redis key (default `tollgate`)
//! - `REDIS_TIMEOUT_MS`: deadline of each Redis decision in milliseconds (default 50)
//! - `REDIS_LEASE_MS`: lifetime of Redis leases in milliseconds (default 0: no leases)
//! - `LOCAL_FALLBACK_INSTANCES`: how many instances share the Redis limits (default 1); the
//!   `local` failure policy gives each 1/N of every limit (a rules file's
//!   `local_fallback_instances` wins)
//! - `TOLLGATE_STATE_FILE`: without Redis, where runtime rule changes (the mounted
//!   service's `/configure` and admin writes) are kept (default `tollgate-runtime.json`)
//! - `TRUSTED_PROXY_HOPS`: proxies in front that append to `X-Forwarded-For` (default 1;
//!   0 ignores the header)
//! - `TRUSTED_PROXIES`: which peers may name the client with `X-Client-ID` and
//!   `X-Forwarded-For`. Unset: loopback and the private ranges, reading `X-Forwarded-For`
//!   by hop count. Comma-separated CIDRs of your proxies: only they, reading
//!   `X-Forwarded-For` from the right over their addresses. `*`: every peer (any client
//!   that can connect chooses its own key; only when nothing but your proxies can connect)
//! - `WATCH_RULES`: reload the rules file when it changes (default `true`); SIGHUP always
//!   reloads it
//! - `HOST` (default `127.0.0.1`), `PORT` (default `8000`; 0 picks a free port)
//! - `RUST_LOG`: log filter (default `info`)
//! - `TOLLGATE_ADMIN_TOKEN`: the bearer token of the mounted admin API (unset: writes from
//!   loopback peers only)
//!
//! The demo also serves the rate limit service's routes (`/check`, `/configure`, `/stats`,
//! `/admin/...`, `/openapi.json`) on the limiter its layer uses, as an app embedding
//! tollgate-server would.
//!
//! The container image probes it with `tollgate healthcheck` (`GET /health` on
//! `127.0.0.1:$PORT`).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tollgate::{Limiter, RateLimitLayer};
use tollgate_server::service::Service;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    // Colours for a terminal only: not in a piped or collected log, nor with NO_COLOR.
    let colours = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(colours)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        // Said once, on stderr, not also as a log line.
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let rules_path = env_or("RATE_LIMIT_RULES_PATH", "rate_limits.json");
    let host = env_or("HOST", "127.0.0.1");
    let port: u16 = parse_env("PORT", 8000)?;
    let hops: usize = parse_env("TRUSTED_PROXY_HOPS", 1)?;
    let watch: bool = parse_env("WATCH_RULES", true)?;
    let redis_url = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    let proxies = list_env("TRUSTED_PROXIES");

    let mut builder = Limiter::builder()
        .rules_file(&rules_path)
        .watch_rules_file(watch)
        .reload_on_sighup(true);
    if let Some(cluster_nodes) = cluster_nodes_env()? {
        builder = builder.redis_cluster(cluster_nodes);
    } else if let Some(url) = &redis_url {
        builder = builder.redis_url(url);
    } else {
        builder =
            builder.runtime_state_file(env_or("TOLLGATE_STATE_FILE", "tollgate-runtime.json"));
    }
    if let Ok(prefix) = std::env::var("REDIS_PREFIX") {
        builder = builder.redis_prefix(prefix);
    }
    let timeout_ms: u64 = parse_env("REDIS_TIMEOUT_MS", 50)?;
    builder = builder.redis_timeout(Duration::from_millis(timeout_ms));
    let instances: u32 = parse_env("LOCAL_FALLBACK_INSTANCES", 1)?;
    builder = builder.local_fallback_instances(instances);
    let lease_ms: u64 = parse_env("REDIS_LEASE_MS", 0)?;
    builder = builder.redis_lease(Duration::from_millis(lease_ms));
    // The mounted service's statistics count the layer's requests too.
    builder = builder.record_usage(true);
    // A port the system chooses (0) is bound now, for the instance's name to carry it; a
    // port given once the app can answer.
    let early = match port {
        0 => Some(listen(&host, 0).await?),
        _ => None,
    };
    let bound = match &early {
        Some(listener) => listener.local_addr().map_err(|e| e.to_string())?.port(),
        None => port,
    };
    let instance = std::env::var("TOLLGATE_INSTANCE")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| format!("{}:{bound}", tollgate::host_name()));
    builder = builder.instance(instance);
    let limiter = builder.build().await.map_err(|e| e.to_string())?;
    let mut layer = RateLimitLayer::builder(limiter.clone()).trusted_proxy_hops(hops);
    let trusted_peers = match proxies.as_slice() {
        [] => "loopback and private networks".to_owned(),
        [any] if any == "*" => {
            layer = layer.trust_any_peer();
            "any".to_owned()
        }
        listed => {
            layer = layer.trusted_proxies(listed.to_vec());
            listed.join(",")
        }
    };
    let layer = layer.build().map_err(|e| e.to_string())?;
    let stats = limiter.stats();
    tracing::info!(
        backend = stats.backend,
        instance = limiter.instance(),
        rules = %rules_path,
        trusted_peers,
        trusted_proxy_hops = hops,
        on_redis_error = limiter.rules().on_redis_error().unwrap_or_default().as_str(),
        redis_circuit = ?stats.store.breaker,
        "rate limits loaded"
    );
    for rule in limiter.rules().iter() {
        match rule.limit() {
            Some(limit) => tracing::info!(rule = rule.id(), "{limit}"),
            None => tracing::info!(rule = rule.id(), "unlimited"),
        }
    }

    let app = Router::new()
        .route("/", get(root))
        .route("/api/data", get(data))
        .route("/api/submit", post(submit))
        .route("/api/users/{id}", get(user))
        .layer(layer.clone());
    let app = mount_service(app, limiter, &layer);

    let listener = match early {
        Some(listener) => listener,
        None => listen(&host, port).await?,
    };
    let address = listener.local_addr().map_err(|e| e.to_string())?;

    tracing::info!("listening on http://{address}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

async fn root() -> Json<Value> {
    Json(
        json!({"service": "tollgate demo", "try": ["/api/data", "/api/users/1", "POST /api/submit", "/health"]}),
    )
}

async fn data() -> Json<Value> {
    Json(json!({"data": [1, 2, 3]}))
}

async fn submit(Json(body): Json<Value>) -> Json<Value> {
    Json(json!({"received": body}))
}

async fn user(Path(id): Path<String>) -> Json<Value> {
    Json(json!({"id": id}))
}

/// The rate limit service's routes (`/check`, `/configure`, `/stats`, `/admin`, `/health`,
/// `/openapi.json`) sit beside the app's, on the limiter its layer uses: a limit configured
/// through them is the one the layer enforces. They are merged after the layer, so they are
/// not themselves limited by it. `GET /auth` finds clients as the layer does.
fn mount_service(app: Router, limiter: Limiter, layer: &RateLimitLayer) -> Router {
    let mut service = Service::new(limiter).client_identity(layer);
    match std::env::var("TOLLGATE_ADMIN_TOKEN") {
        Ok(token) if !token.is_empty() => {
            tracing::info!("admin API: bearer token required");
            service = service.admin_token(token);
        }
        _ => tracing::info!("admin API: loopback peers only (TOLLGATE_ADMIN_TOKEN is not set)"),
    }
    app.merge(service.router())
}

/// A listener on `host:port`, or why there is none.
async fn listen(host: &str, port: u16) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))
}

/// A comma-separated list; empty when unset.
/// `REDIS_CLUSTER_NODES`: `None` when unset or blank; a list with an empty entry (`","`,
/// `"a,,b"`) is an error rather than a silent fall back to in-memory buckets.
fn cluster_nodes_env() -> Result<Option<Vec<String>>, String> {
    let value = std::env::var("REDIS_CLUSTER_NODES").unwrap_or_default();
    if value.trim().is_empty() {
        return Ok(None);
    }
    let nodes: Vec<String> = value.split(',').map(|n| n.trim().to_owned()).collect();
    if let Some(empty) = nodes.iter().position(String::is_empty) {
        return Err(format!(
            "REDIS_CLUSTER_NODES={value:?} has an empty entry (number {}): give comma-separated \
             redis:// URLs of the cluster's nodes, or unset it",
            empty + 1
        ));
    }
    Ok(Some(nodes))
}

fn list_env(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn parse_env<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => text
            .parse()
            .map_err(|_| format!("{name}={text:?} is not valid here")),
    }
}

/// Ctrl-C or SIGTERM: stop accepting, finish requests in flight, exit.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
