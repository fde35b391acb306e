//! `tollgate serve`: the rate limit service.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tollgate::{BuildError, InvalidTrustedProxy, Limiter, OnRedisError, RateLimitLayer, Rules};
use tollgate_server::grpc::EnvoyRateLimit;
use tollgate_server::service::Service;

use crate::grpc_shards;
use crate::limits::{ConnectionArgs, GrpcCallArgs};
use crate::logs::{self, LogFormat};
use crate::server::open_files;
use crate::server::{self, Acceptor, Limits, Protocol, Slots};
use crate::settings::{self, EnvFile};

#[derive(Args)]
pub(crate) struct Serve {
    /// The rules file: JSON, or YAML when its name ends in `.yaml` or `.yml`. Unset:
    /// `rate_limits.json` in the working directory, else `config.yaml` there, else a single
    /// default rule from --default-rate-limit.
    #[arg(long, env = "RATE_LIMIT_RULES_PATH", value_name = "FILE")]
    rules: Option<PathBuf>,

    /// Read settings from this file of `NAME=value` lines instead of `.env` in the working
    /// directory (read when it exists). Variables already in the environment win.
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,

    /// envoy ratelimit's own YAML configuration, unchanged: a file, or a directory of
    /// `*.yaml`/`*.yml` files, one domain each. Its domains are served over gRPC next to
    /// the rules file's descriptors, and reloaded when they change.
    #[arg(long, env = "ENVOY_RATELIMIT_CONFIG", value_name = "FILE|DIR")]
    envoy_config: Option<PathBuf>,

    /// The limit of the default rule when there is no rules file: `N/unit` (second, minute,
    /// hour, day), or a bare number of requests per second.
    #[arg(
        long,
        env = "DEFAULT_RATE_LIMIT",
        default_value = "10",
        value_name = "LIMIT"
    )]
    default_rate_limit: String,

    /// Keep the limits in this Redis, shared by every instance using it. Each instance
    /// pings it once a second (500 ms deadline, or REDIS_TIMEOUT_MS if longer): `GET /health`
    /// follows it within 2 s, with or without traffic, and decisions go back to it as soon
    /// as it answers. Unset, REDIS_HOST with REDIS_PORT, REDIS_DB, REDIS_USERNAME and
    /// REDIS_PASSWORD build it.
    #[arg(long, env = "REDIS_URL", value_name = "URL")]
    redis_url: Option<String>,

    /// Keep the limits in a Redis Cluster: its seed nodes, comma-separated (instead of
    /// --redis-url).
    #[arg(long, env = "REDIS_CLUSTER_NODES", value_name = "URLS")]
    redis_cluster_nodes: Option<String>,

    /// Prefix of every Redis key and channel.
    #[arg(long, env = "REDIS_PREFIX", default_value = "tollgate")]
    redis_prefix: String,

    /// Deadline of each Redis decision, in milliseconds.
    #[arg(
        long,
        env = "REDIS_TIMEOUT_MS",
        default_value_t = 50,
        value_name = "MS"
    )]
    redis_timeout_ms: u64,

    /// What decides when Redis cannot: `closed` refuses (503), `open` allows, `local`
    /// decides in this process with the same rules. The rules file's `on_redis_error` wins.
    #[arg(long, env = "FAIL_MODE", value_enum, default_value_t = FailMode::Local)]
    fail_mode: FailMode,

    /// How many instances share the Redis limits: under the `local` policy each decides
    /// alone with 1/N of every limit while Redis is out (the rules file's
    /// `local_fallback_instances` wins).
    #[arg(
        long,
        env = "LOCAL_FALLBACK_INSTANCES",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..),
        value_name = "N"
    )]
    local_fallback_instances: u32,

    /// Without Redis, runtime changes (`POST /configure`, the admin API's writes) are kept
    /// in this file, replaced atomically on every change and read at startup. With Redis
    /// they are kept in Redis and the file is not used.
    #[arg(
        long,
        env = "TOLLGATE_STATE_FILE",
        default_value = "tollgate-runtime.json",
        value_name = "FILE"
    )]
    state_file: PathBuf,

    /// The most bytes the state file may hold: a larger one stops the start (with an error
    /// that says so, having read no more than this), and a change that would make it larger
    /// is refused with a 422.
    #[arg(
        long,
        env = "TOLLGATE_STATE_FILE_MAX_BYTES",
        default_value_t = tollgate::DEFAULT_MAX_STATE_FILE_BYTES,
        value_name = "BYTES"
    )]
    state_file_max_bytes: u64,

    /// The most runtime entries kept (client overrides and routes set by `POST /configure`
    /// and the admin API; with Redis, counted in Redis for every instance): a new one past
    /// it is refused with a 422 naming this limit; replacing or removing one always works.
    #[arg(
        long,
        env = "TOLLGATE_MAX_RUNTIME_ENTRIES",
        default_value_t = tollgate::DEFAULT_MAX_RUNTIME_ENTRIES,
        value_parser = at_least_one,
        value_name = "N"
    )]
    max_runtime_entries: usize,

    /// Usage statistics: the most distinct clients held in this process between two
    /// flushes (a second; longer while Redis is away), and without Redis in the kept
    /// history. Past it a new client's calls count in the totals only.
    #[arg(
        long,
        env = "TOLLGATE_USAGE_MAX_CLIENTS",
        default_value_t = tollgate::DEFAULT_USAGE_MAX_CLIENTS,
        value_parser = at_least_one,
        value_name = "N"
    )]
    usage_max_clients: usize,

    /// Usage statistics: the most bytes held in this process (estimated from each client's
    /// key and what is counted for it), between two flushes and in the history, each: keys
    /// are the clients' own choice, so the count of clients alone does not bound memory.
    #[arg(
        long,
        env = "TOLLGATE_USAGE_MAX_BYTES",
        default_value_t = tollgate::DEFAULT_USAGE_MAX_BYTES,
        value_name = "BYTES"
    )]
    usage_max_bytes: usize,

    /// Usage statistics in Redis: the most keys counted per key in one UTC hour, across
    /// instances. Calls of keys past it are in the totals only, and `GET /stats/{key}`
    /// lists that hour in `untracked_hours`.
    #[arg(
        long,
        env = "TOLLGATE_USAGE_CLIENTS_PER_HOUR",
        default_value_t = tollgate::DEFAULT_USAGE_CLIENTS_PER_HOUR,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "N"
    )]
    usage_clients_per_hour: u64,

    /// The address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    host: String,

    /// The port to listen on (0: any free port).
    #[arg(long, env = "PORT", default_value_t = 8000)]
    port: u16,

    /// How long a reservation (`POST /check` with `"settle": true`) stays open before it
    /// settles at its estimate, in seconds: the longest a response whose usage is settled
    /// may take.
    #[arg(
        long,
        env = "TOLLGATE_RESERVATION_TIMEOUT_SECS",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "SECONDS"
    )]
    reservation_timeout_secs: u64,

    /// This instance's name in live events (`instance` in each): what tells apart, in
    /// `/events` and on the dashboard, the instances sharing a Redis. Default:
    /// `<host name>:<port>`.
    #[arg(long, env = "TOLLGATE_INSTANCE", value_name = "NAME")]
    instance: Option<String>,

    /// The port of Envoy's rate limit service (gRPC `ShouldRateLimit`), on the same address
    /// (0: any free port).
    #[arg(long, env = "GRPC_PORT", default_value_t = 8081)]
    grpc_port: u16,

    /// Which peers may name the client of a request `GET /auth` decides (with `X-Client-ID`
    /// and `X-Forwarded-For`): your gateways, as comma-separated CIDRs or addresses
    /// (`X-Forwarded-For` is then read from the right over them), or `*` for every peer.
    /// Unset: loopback and the private networks, reading TRUSTED_PROXY_HOPS entries of
    /// `X-Forwarded-For`. The same setting as the layer's.
    #[arg(long, env = "TRUSTED_PROXIES", value_name = "CIDRS")]
    trusted_proxies: Option<String>,

    /// How many proxies append to `X-Forwarded-For` in front of `GET /auth`, counting the
    /// gateway (0 ignores the header). Not used with TRUSTED_PROXIES.
    #[arg(
        long,
        env = "TRUSTED_PROXY_HOPS",
        default_value_t = 1,
        value_name = "N"
    )]
    trusted_proxy_hops: usize,

    /// Writes and admin reads need `Authorization: Bearer <this>`. Without it they are
    /// accepted from this host (loopback) only.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    admin_token: Option<String>,

    /// The decision routes (`/check`, `/check/{key}`, `/settle`, `/status/{key}`, `/stats/{key}`, `/auth`) and gRPC's
    /// `ShouldRateLimit` need `Authorization: Bearer <this>` (gRPC: `authorization`
    /// metadata). For deployments where clients can reach those ports. Unset: anyone who
    /// reaches them may ask.
    #[arg(
        long,
        env = "TOLLGATE_CHECK_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    check_token: Option<String>,

    /// Serve the admin API (`/configure`, `/admin/...`, the event streams, the dashboard,
    /// `/metrics`) on this address (`host:port`) instead of PORT, which then serves only the
    /// decisions (`/check`, `/stats/{key}`, `/auth`), `/health` and `/openapi.json`: the
    /// decision port can face a gateway while admin stays internal.
    #[arg(long, env = "ADMIN_ADDR", value_name = "HOST:PORT")]
    admin_addr: Option<String>,

    /// Origins (`scheme://host[:port]`, comma-separated) whose pages may call the admin,
    /// write and event routes, besides the service's own: a page of yours that opens
    /// `/ws/{client}` or an `EventSource`. Any other page's request is refused.
    #[arg(long, env = "TOLLGATE_ALLOWED_ORIGINS", value_name = "ORIGINS")]
    allowed_origins: Option<String>,

    /// Without TOLLGATE_ADMIN_TOKEN, admin requests must name this host in `Host`: a
    /// loopback name or address, or one of these (`host` or `host:port`, comma-separated).
    #[arg(long, env = "TOLLGATE_ALLOWED_HOSTS", value_name = "HOSTS")]
    allowed_hosts: Option<String>,

    /// How logs are written on stdout: `text` (in colour on a terminal, unless NO_COLOR is
    /// set), or `json`, one object a line for a log collector.
    #[arg(
        long,
        env = "TOLLGATE_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        value_name = "FORMAT"
    )]
    log_format: LogFormat,

    #[command(flatten)]
    connections: ConnectionArgs,

    #[command(flatten)]
    grpc_calls: GrpcCallArgs,
}

/// The failure policy, as the tiered check service named it (plus `local`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FailMode {
    /// Refuse what Redis cannot decide.
    Closed,
    /// Allow what Redis cannot decide.
    Open,
    /// Decide it in this process.
    Local,
}

impl From<FailMode> for OnRedisError {
    fn from(mode: FailMode) -> Self {
        match mode {
            FailMode::Closed => OnRedisError::Deny,
            FailMode::Open => OnRedisError::Allow,
            FailMode::Local => OnRedisError::Local,
        }
    }
}

pub(crate) fn serve(args: Serve, env_file: &EnvFile) -> ExitCode {
    if let Err(message) = logs::init(args.log_format) {
        return fail(&message);
    }
    env_file.log();
    let runtime = worker_threads().and_then(|threads| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .map_err(|error| format!("cannot start the runtime: {error}"))
    });
    match runtime.and_then(|runtime| runtime.block_on(run(args, env_file))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

/// A listener on `host:port`, or why there is none.
async fn listen(host: &str, port: u16) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))
}

/// The one report of what stopped the service: on stderr, not also as a log line, so that
/// it is read once.
fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// The runtime's worker threads: `TOKIO_WORKER_THREADS`, tokio's own variable, read here so
/// that a value that is not a count stops the start with an error naming it (tokio would
/// panic); unset or empty, one per core, as tokio counts them.
fn worker_threads() -> Result<usize, String> {
    const VARIABLE: &str = "TOKIO_WORKER_THREADS";
    let value = std::env::var_os(VARIABLE).unwrap_or_default();
    if value.is_empty() {
        return Ok(std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    }
    match value.to_str().map(|text| text.trim().parse::<usize>()) {
        Some(Ok(threads)) if threads >= 1 => Ok(threads),
        _ => Err(format!(
            "{VARIABLE}={value:?}: the runtime's worker threads must be a whole number from 1 up \
             (unset: one per core)"
        )),
    }
}

/// A count of at least one.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?} is not a whole number from 1 up")),
    }
}

/// The layer's refusal of a `TRUSTED_PROXIES` entry, in the service's own terms: the way to
/// trust every peer here is `TRUSTED_PROXIES=*`, not the Rust call the library names.
fn trusted_proxies_error(error: InvalidTrustedProxy) -> String {
    match error {
        InvalidTrustedProxy::EveryAddress { value } => format!(
            "TRUSTED_PROXIES: {value:?} covers every address, so X-Forwarded-For would be read \
             up to what the client wrote in it; list only your proxies' addresses, or set \
             TRUSTED_PROXIES=* (alone) to trust every peer and read X-Forwarded-For by hop \
             count (TRUSTED_PROXY_HOPS)"
        ),
        other => format!("TRUSTED_PROXIES: {other}"),
    }
}

/// An environment value that is empty counts as unset, as the services before did.
fn set(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.trim().is_empty())
}

/// The entries of a comma-separated list, trimmed, without empty ones.
fn listed(list: &str) -> impl Iterator<Item = &str> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
}

/// A path given in the environment as an empty value counts as unset too.
fn set_path(path: Option<PathBuf>) -> Option<PathBuf> {
    path.filter(|path| !path.as_os_str().is_empty())
}

/// The one rule of a service run without a rules file.
fn default_rules(limit: &str) -> Result<Rules, String> {
    let limit = limit.trim();
    let limit = if !limit.is_empty() && limit.bytes().all(|b| b.is_ascii_digit()) {
        format!("{limit}/second")
    } else {
        limit.to_owned()
    };
    let json = serde_json::json!({"default": {"limit": limit}}).to_string();
    Rules::from_json(&json).map_err(|error| match error {
        tollgate::RulesError::Invalid { problem, .. } => {
            format!("DEFAULT_RATE_LIMIT={limit:?}: {problem}")
        }
        other => format!("DEFAULT_RATE_LIMIT={limit:?}: {other}"),
    })
}

async fn run(args: Serve, env_file: &EnvFile) -> Result<(), String> {
    let open_files = open_files::raise()
        .inspect_err(|why| tracing::warn!("{why}"))
        .ok();
    let cap = open_files::connection_cap(args.connections.max_connections, open_files)?;
    tracing::info!(
        max_connections_from = cap.source,
        "open files limit {}; at most {} connections, both ports together",
        open_files.map_or_else(|| "unknown".to_owned(), |files| files.to_string()),
        cap.connections,
    );
    let mut builder = Limiter::builder().on_redis_error(args.fail_mode.into());
    let named = set_path(args.rules.clone());
    let found = match &named {
        Some(_) => None,
        None => std::env::current_dir()
            .ok()
            .and_then(|dir| settings::rules_file_found_in(&dir)),
    };
    let rules_source = match (&named, &found) {
        (Some(path), _) | (None, Some(path)) => {
            // Reloaded when it changes, and on SIGHUP.
            builder = builder.rules_file(path).reload_on_sighup(true);
            match (&named, env_file.origin("RATE_LIMIT_RULES_PATH")) {
                (None, _) => format!(
                    "{} (found in the working directory: RATE_LIMIT_RULES_PATH is not set)",
                    path.display()
                ),
                (Some(_), Some(origin)) => {
                    format!("{} (RATE_LIMIT_RULES_PATH, from {origin})", path.display())
                }
                (Some(_), None) => path.display().to_string(),
            }
        }
        (None, None) => {
            builder = builder.rules(default_rules(&args.default_rate_limit)?);
            format!(
                "one default rule from DEFAULT_RATE_LIMIT ({})",
                args.default_rate_limit
            )
        }
    };
    let rules_source = match set_path(args.envoy_config.clone()) {
        Some(envoy) => {
            builder = builder.envoy_config(&envoy);
            format!(
                "{rules_source}, with envoy ratelimit's configuration {}",
                envoy.display()
            )
        }
        None => rules_source,
    };
    // Without REDIS_URL, the variables the services before used build it.
    let redis_parts = if set(args.redis_cluster_nodes.clone()).is_none()
        && set(args.redis_url.clone()).is_none()
    {
        settings::redis_url_from_parts(|name| std::env::var(name).ok())?
    } else {
        None
    };
    let uses_redis = set(args.redis_cluster_nodes.clone()).is_some()
        || set(args.redis_url.clone()).is_some()
        || redis_parts.is_some();
    let runtime_store = if uses_redis {
        "Redis".to_owned()
    } else {
        builder = builder
            .runtime_state_file(&args.state_file)
            .max_state_file_bytes(args.state_file_max_bytes);
        args.state_file.display().to_string()
    };
    builder = builder.max_runtime_entries(args.max_runtime_entries);
    // Which variable an unusable Redis URL came from, for the error to name it.
    let mut redis_setting = None;
    if let Some(nodes) = set(args.redis_cluster_nodes) {
        let nodes: Vec<String> = nodes.split(',').map(|n| n.trim().to_owned()).collect();
        if let Some(empty) = nodes.iter().position(String::is_empty) {
            return Err(format!(
                "REDIS_CLUSTER_NODES has an empty entry (number {}): give comma-separated redis:// URLs",
                empty + 1
            ));
        }
        builder = builder.redis_cluster(nodes);
        redis_setting = Some("REDIS_CLUSTER_NODES".to_owned());
    } else if let Some(url) = set(args.redis_url) {
        builder = builder.redis_url(url);
        redis_setting = Some("REDIS_URL".to_owned());
    } else if let Some(parts) = redis_parts {
        builder = builder.redis_url(parts.url);
        redis_setting = Some(parts.from);
    }
    // Where the Redis setting came from, for the startup log.
    let redis_from = redis_setting.as_deref().map(|setting| {
        let origins: Vec<String> = setting
            .split(", ")
            .map(|name| match env_file.origin(name) {
                Some(origin) => format!("{name} from {origin}"),
                None => format!("{name} from the command line"),
            })
            .collect();
        origins.join(", ")
    });
    // A port the system chooses (0) is bound now, for the instance's name to carry it; a
    // port given is bound once the service can answer, so that it takes no connection
    // before.
    let early = match args.port {
        0 => Some(listen(&args.host, 0).await?),
        _ => None,
    };
    let port = match &early {
        Some(listener) => listener.local_addr().map_err(|e| e.to_string())?.port(),
        None => args.port,
    };
    let instance = match set(args.instance) {
        Some(name) => name,
        None => format!("{}:{port}", tollgate::host_name()),
    };
    builder = builder
        .instance(instance)
        .reservation_timeout(Duration::from_secs(args.reservation_timeout_secs))
        .record_usage(true)
        .usage_max_clients(args.usage_max_clients)
        .usage_max_bytes(args.usage_max_bytes)
        .usage_clients_per_hour(args.usage_clients_per_hour)
        .redis_prefix(args.redis_prefix)
        .redis_timeout(Duration::from_millis(args.redis_timeout_ms))
        .local_fallback_instances(args.local_fallback_instances);
    let limiter = builder
        .build()
        .await
        .map_err(|error| match (&error, &redis_setting) {
            (BuildError::Store(_), Some(setting)) => format!("{setting}: {error}"),
            _ => error.to_string(),
        })?;

    let mut trust =
        RateLimitLayer::builder(limiter.clone()).trusted_proxy_hops(args.trusted_proxy_hops);
    let trusted = match set(args.trusted_proxies) {
        Some(all) if all.trim() == "*" => {
            trust = trust.trust_any_peer();
            "every peer (TRUSTED_PROXIES=*)".to_owned()
        }
        Some(list) => {
            trust = trust.trusted_proxies(list.split(',').map(str::trim).map(str::to_owned));
            list
        }
        None => format!(
            "loopback and private networks, {} X-Forwarded-For hop(s)",
            args.trusted_proxy_hops
        ),
    };
    let identity = trust.build().map_err(trusted_proxies_error)?;
    let mut service = Service::new(limiter.clone()).client_identity(&identity);
    let admin = match set(args.admin_token) {
        Some(token) => {
            service = service.admin_token(token);
            "token required (TOLLGATE_ADMIN_TOKEN)"
        }
        None => "no TOLLGATE_ADMIN_TOKEN: writes and admin reads accepted from this host only",
    };
    let mut grpc_service =
        EnvoyRateLimit::new(limiter.clone()).request_limits((&args.grpc_calls).into());
    let checks = match set(args.check_token) {
        Some(token) => {
            grpc_service = grpc_service.check_token(token.clone());
            service = service.check_token(token);
            "token required (TOLLGATE_CHECK_TOKEN)"
        }
        None => "open to whoever reaches the port",
    };
    if let Some(origins) = set(args.allowed_origins) {
        service = service
            .allowed_origins(listed(&origins))
            .map_err(|error| format!("TOLLGATE_ALLOWED_ORIGINS: {error}"))?;
    }
    if let Some(hosts) = set(args.allowed_hosts) {
        service = service
            .allowed_hosts(listed(&hosts))
            .map_err(|error| format!("TOLLGATE_ALLOWED_HOSTS: {error}"))?;
    }
    tracing::info!(
        backend = limiter.backend_name(),
        instance = limiter.instance(),
        redis = redis_from.as_deref(),
        rules = %rules_source,
        runtime_changes_kept_in = %runtime_store,
        on_redis_error = limiter.on_redis_error().map(OnRedisError::as_str),
        admin,
        checks,
        auth_trusts = %trusted,
        "tollgate serve"
    );
    let listener = match early {
        Some(listener) => listener,
        None => listen(&args.host, args.port).await?,
    };
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let grpc_listener = tokio::net::TcpListener::bind((args.host.as_str(), args.grpc_port))
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}:{} for gRPC (GRPC_PORT): {e}",
                args.host, args.grpc_port
            )
        })?;
    let grpc_address = grpc_listener.local_addr().map_err(|e| e.to_string())?;
    let admin_listener = match set(args.admin_addr) {
        Some(admin) => Some(
            tokio::net::TcpListener::bind(admin.as_str())
                .await
                .map_err(|e| {
                    format!("cannot listen on {admin} for the admin API (ADMIN_ADDR): {e}")
                })?,
        ),
        None => None,
    };
    // Stops both servers at once, on Ctrl-C or SIGTERM.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // As many gRPC threads as the runtime has workers (TOKIO_WORKER_THREADS, or one per core).
    let shards = tokio::runtime::Handle::current().metrics().num_workers();
    let limits = Limits::from(&args.connections);
    // One cap for every listener, so that idle connections on one port cannot take the
    // other down.
    let slots = Slots::new(cap.connections);
    let grpc_protocol = Protocol::http2_only(&limits);
    let grpc = grpc_shards::start(
        Acceptor::new(grpc_listener, slots.clone(), &grpc_protocol),
        grpc_protocol,
        &grpc_service,
        shards,
        stopped.clone(),
    )?;
    tracing::info!("Envoy rate limit service (gRPC) on {grpc_address}");
    let (router, admin) = match admin_listener {
        Some(admin_listener) => {
            let routers = service.routers();
            let admin_address = admin_listener.local_addr().map_err(|e| e.to_string())?;
            tracing::info!("admin API on http://{admin_address} (ADMIN_ADDR)");
            let admin = server::serve_router(
                admin_listener,
                routers.admin,
                &limits,
                &slots,
                stopped.clone(),
            );
            (routers.decisions, Some(admin))
        }
        None => (service.router(), None),
    };
    tracing::info!("listening on http://{address}");
    let http = server::serve_router(listener, router, &limits, &slots, stopped);
    let admin = async move {
        if let Some(admin) = admin {
            admin.await;
        }
    };
    let signal = async move {
        shutdown().await;
        let _ = stop.send(true);
    };
    let ((), (), grpc, ()) = tokio::join!(http, admin, grpc, signal);
    grpc.map_err(|e| format!("gRPC server: {e}"))?;
    // The last second's statistics, which the background flush has not written yet.
    if let Err(error) = limiter.flush_usage().await {
        tracing::warn!("the last statistics could not be written: {error}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
