//! `tollgate check-rules`.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, error::ErrorKind};

use crate::Cli;
use http::Method;
use http::uri::PathAndQuery;
use tollgate::{
    Band, ClientKey, DEFAULT_MAX_RULES_FILE_BYTES, InvalidClientKey, Limit, MAX_CLIENT_ID_LEN,
    Resolved, Rule, Rules,
};

#[derive(Args)]
pub(crate) struct CheckRules {
    /// The rules file (JSON).
    file: PathBuf,

    /// Show the rule and limit for one request instead of every rule, e.g. `--explain GET /api/data`.
    #[arg(long, num_args = 2, value_names = ["METHOD", "PATH"])]
    explain: Option<Vec<String>>,

    /// With --explain: the client, as a key (`id:alice`, `ip:10.0.0.1`, `ip:2001:db8::/64`,
    /// `unknown`) or a bare X-Client-ID (`alice`). Default: `unknown`.
    #[arg(long, requires = "explain", value_parser = parse_client)]
    client: Option<ClientKey>,

    /// With --explain: the tier the request carries. Default: the file's `default_tier`.
    #[arg(long, requires = "explain")]
    tier: Option<String>,

    /// The largest file read, in bytes, as the limiter's `max_rules_file_bytes` (16 MiB by
    /// default).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_RULES_FILE_BYTES)]
    max_file_bytes: u64,

    /// How the limiter keys IPv6 clients (its `ipv6_prefix_len`), to warn about client
    /// overrides that can never apply.
    #[arg(long, value_name = "BITS", default_value_t = 64,
          value_parser = clap::value_parser!(u8).range(1..=128))]
    ipv6_prefix_len: u8,
}

/// A `--client` value that is neither a client key nor an X-Client-ID.
#[derive(Debug, thiserror::Error)]
enum BadClient {
    #[error(transparent)]
    Key(#[from] InvalidClientKey),
    #[error(
        "{0:?} is not an X-Client-ID: it must be 1 to {MAX_CLIENT_ID_LEN} visible ASCII characters (or give a client key such as id:alice or ip:10.0.0.1)"
    )]
    Id(String),
}

/// An `--explain` request that no client could send.
#[derive(Debug, thiserror::Error)]
enum BadRequest {
    #[error("{0:?} is not an HTTP method (try GET, POST, ...)")]
    Method(String),
    #[error("{0:?} is not a request path: it must start with '/', like /api/data")]
    Path(String),
}

pub(crate) fn check_rules(args: &CheckRules) -> ExitCode {
    // Usage errors come first, so a typo is reported as such whatever the file holds.
    let request = match args.explain.as_deref().map(request_of).transpose() {
        Ok(request) => request,
        Err(problem) => usage_error(&format!("--explain: {problem}")),
    };
    let rules = match Rules::from_file_with_max_bytes(&args.file, args.max_file_bytes) {
        Ok(rules) => rules,
        Err(err) => return fail(&err),
    };
    for never in rules.unreachable_overrides(args.ipv6_prefix_len) {
        eprintln!("warning: {never}");
    }
    for unused in rules.unused_rules() {
        eprintln!("warning: {unused}");
    }
    let text = match request {
        None => Summary {
            file: &args.file,
            rules: &rules,
        }
        .to_string(),
        Some((method, path)) => {
            let client = args.client.clone().unwrap_or(ClientKey::Unknown);
            let tier = args.tier.as_deref();
            let resolved = match rules.resolve(&method, path.path(), tier, &client) {
                Ok(resolved) => resolved,
                Err(err) => return fail(&format!("{err} ({})", TierList(&rules))),
            };
            let explanation = Explanation {
                method: &method,
                path: path.as_str(),
                client: &client,
                tier_used: match (tier, rules.default_tier()) {
                    (Some(name), _) => name.to_owned(),
                    (None, Some(name)) => format!("{name} (the default_tier)"),
                    (None, None) => "base rules".to_owned(),
                },
                has_own_limit: rules.clients().any(|(key, _)| *key == client),
                resolved,
            };
            format!("{explanation}{}\n", Total(&rules))
        }
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&format!("cannot write to stdout: {err}")),
    }
}

/// Exits with status 2 and `check-rules`' usage, as clap does for the errors it finds itself.
fn usage_error(message: &str) -> ! {
    let mut cli = Cli::command();
    // Building sets the subcommand's full name, for its usage line.
    cli.build();
    match cli.find_subcommand_mut("check-rules") {
        Some(check_rules) => check_rules
            .error(ErrorKind::ValueValidation, message)
            .exit(),
        None => cli.error(ErrorKind::ValueValidation, message).exit(),
    }
}

fn fail(err: &dyn fmt::Display) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::FAILURE
}

/// A client key as written in `clients`, or a bare X-Client-ID. `id:`, `ip:` and `unknown`
/// always mean a key, so an X-Client-ID that looks like one must be written `id:...`.
fn parse_client(text: &str) -> Result<ClientKey, BadClient> {
    if text == "unknown" || text.starts_with("id:") || text.starts_with("ip:") {
        return Ok(text.parse()?);
    }
    format!("id:{text}")
        .parse()
        .map_err(|_| BadClient::Id(text.to_owned()))
}

/// The method (case-insensitive, as in the rules file) and path of `--explain METHOD PATH`.
fn request_of(explain: &[String]) -> Result<(Method, PathAndQuery), BadRequest> {
    let [method, path] = explain else {
        unreachable!("clap takes exactly two values for --explain");
    };
    let upper = method.to_ascii_uppercase();
    let method = Method::from_bytes(upper.as_bytes())
        .ok()
        .filter(|_| !upper.is_empty())
        .ok_or_else(|| BadRequest::Method(method.clone()))?;
    // The layer matches the URI's path; parsing the same way keeps a query string out of it.
    let path = path
        .parse::<PathAndQuery>()
        .ok()
        .filter(|p| p.path().starts_with('/'))
        .ok_or_else(|| BadRequest::Path(path.clone()))?;
    Ok((method, path))
}

/// Every rule of a valid file, grouped by tier, then the overrides and policy.
struct Summary<'a> {
    file: &'a Path,
    rules: &'a Rules,
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules = self.rules;
        writeln!(f, "Rules file: {}", self.file.display())?;
        writeln!(f)?;
        match rules.default_tier() {
            // `resolve` sends tier-less requests to the default tier, so nothing reaches these.
            Some(tier) => writeln!(f, "Base rules (unused: default_tier is {tier:?}):")?,
            None => writeln!(f, "Base rules (requests without a tier):")?,
        }
        for rule in rules
            .iter()
            .filter(|r| r.tier().is_none() && r.domain().is_none() && !r.is_named())
        {
            write_rule(f, rule)?;
        }
        if rules.iter().any(Rule::is_named) {
            writeln!(f)?;
            writeln!(
                f,
                "Named rules (one budget per client for every route that names one):"
            )?;
            for rule in rules.iter().filter(|r| r.is_named()) {
                write_rule(f, rule)?;
            }
        }
        for tier in rules.tier_names() {
            writeln!(f)?;
            if rules.default_tier() == Some(tier) {
                writeln!(f, "Tier {tier:?} (default tier: requests without a tier):")?;
            } else {
                writeln!(f, "Tier {tier:?}:")?;
            }
            for rule in rules.iter().filter(|r| r.tier() == Some(tier)) {
                write_rule(f, rule)?;
            }
        }
        if rules.has_descriptors() {
            writeln!(f)?;
            writeln!(f, "Envoy descriptors (gRPC ShouldRateLimit):")?;
            for rule in rules.iter().filter(|r| r.domain().is_some()) {
                write_rule(f, rule)?;
            }
        }
        let mut clients: Vec<(String, Option<&Limit>)> = rules
            .clients()
            .map(|(key, limit)| (key.to_string(), limit))
            .collect();
        // `clients()` comes from a hash map; sorted output can be diffed between files.
        clients.sort_by(|a, b| a.0.cmp(&b.0));
        if !clients.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "Client overrides (replace the limit of every limited rule):"
            )?;
            for (key, limit) in clients {
                writeln!(f, "  {key}")?;
                write_limit(f, limit)?;
            }
        }
        if rules.on_redis_error().is_some()
            || rules.local_fallback_instances().is_some()
            || rules.header_style().is_some()
            || rules.problem_details().is_some()
        {
            writeln!(f)?;
            if let Some(policy) = rules.on_redis_error() {
                writeln!(f, "on_redis_error: {}", policy.as_str())?;
            }
            if let Some(instances) = rules.local_fallback_instances() {
                writeln!(f, "local_fallback_instances: {instances}")?;
            }
            if let Some(style) = rules.header_style() {
                writeln!(f, "headers: {}", style.as_str())?;
            }
            if let Some(problem_details) = rules.problem_details() {
                writeln!(f, "problem_details: {problem_details}")?;
            }
        }
        writeln!(f)?;
        writeln!(f, "{}", Total(rules))
    }
}

/// The closing line: `OK: 6 rules, 2 tiers, 1 client override`.
struct Total<'a>(&'a Rules);

impl fmt::Display for Total<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        write!(
            f,
            "OK: {}, {}, {}",
            count(self.0.iter().len(), "rule", "rules"),
            count(self.0.tier_names().count(), "tier", "tiers"),
            count(
                self.0.clients().count(),
                "client override",
                "client overrides"
            ),
        )
    }
}

/// `its tiers: free, pro` or `it has no tiers`, for an unknown `--tier`.
struct TierList<'a>(&'a Rules);

impl fmt::Display for TierList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.tier_names().collect();
        if names.is_empty() {
            f.write_str("the file has no tiers")
        } else {
            write!(f, "the file's tiers: {}", names.join(", "))
        }
    }
}

/// Which rule and limit one request gets.
struct Explanation<'a> {
    method: &'a Method,
    path: &'a str,
    client: &'a ClientKey,
    tier_used: String,
    /// Whether `clients` names this client, to say why an unlimited rule ignores it.
    has_own_limit: bool,
    resolved: Resolved<'a>,
}

impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = self.resolved.rule;
        writeln!(f, "{} {}", self.method, self.path)?;
        field(f, "client", &self.client)?;
        field(f, "tier", &self.tier_used)?;
        field(f, "rule", &rule.id())?;
        write_scope(f, rule)?;
        let applied = if self.resolved.client_override {
            format!("yes, the limit of {:?} in clients", self.client.to_string())
        } else if self.has_own_limit {
            "no, the rule is unlimited, so the client's own limit does not apply".to_owned()
        } else {
            "no, the rule's own limit".to_owned()
        };
        field(f, "override", &applied)?;
        write_limit(f, self.resolved.limit)
    }
}

/// Labels line up in one column; `band` lines repeat under `limit`.
fn field(f: &mut fmt::Formatter<'_>, label: &str, value: &dyn fmt::Display) -> fmt::Result {
    writeln!(f, "    {:<10}{value}", format!("{label}:"))
}

fn write_rule(f: &mut fmt::Formatter<'_>, rule: &Rule) -> fmt::Result {
    writeln!(f, "  {}", rule.id())?;
    write_scope(f, rule)?;
    write_limit(f, rule.limit())
}

fn write_scope(f: &mut fmt::Formatter<'_>, rule: &Rule) -> fmt::Result {
    if let Some(domain) = rule.domain() {
        field(f, "domain", &domain)?;
        if let Some(name) = rule.name() {
            field(f, "name", &name)?;
        }
        let replaces: Vec<&str> = rule.replaces().collect();
        if !replaces.is_empty() {
            field(f, "replaces", &replaces.join(", "))?;
        }
        return Ok(());
    }
    if rule.is_named() {
        return field(
            f,
            "used by",
            &"the routes that name it, and requests that ask for it by name",
        );
    }
    field(
        f,
        "pattern",
        &rule.pattern().unwrap_or("(default: paths no route covers)"),
    )?;
    let methods = rule.methods().map_or_else(
        || "all methods".to_owned(),
        |methods| {
            let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
            let mut text = names.join(", ");
            if !methods.contains(&Method::HEAD) && rule.applies_to(&Method::HEAD) {
                text.push_str(" (HEAD counts as GET)");
            }
            text
        },
    );
    field(f, "methods", &methods)
}

fn write_limit(f: &mut fmt::Formatter<'_>, limit: Option<&Limit>) -> fmt::Result {
    let Some(limit) = limit else {
        return field(f, "limit", &"unlimited");
    };
    let mut summary = format!("{}, cost {}", limit.algorithm().as_str(), limit.cost());
    if limit.bands().len() > 1 {
        summary.push_str(", must fit every band");
    }
    if limit.shadow() {
        summary.push_str(", shadow (counts, never refuses)");
    }
    field(f, "limit", &summary)?;
    for band in limit.bands() {
        field(f, "band", &BandText(band))?;
    }
    Ok(())
}

/// `capacity 30, refill 0.5/s, period 1m`.
struct BandText<'a>(&'a Band);

impl fmt::Display for BandText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let band = self.0;
        write!(
            f,
            "capacity {}, refill {}/s, period {}",
            band.capacity(),
            Decimal(band.refill_per_sec()),
            Span(band.period().as_secs_f64())
        )
    }
}

/// Four significant digits without trailing zeros: `5`, `0.5`, `0.2778`, `16.67`.
struct Decimal(f64);

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let decimals = (3.0 - self.0.abs().log10().floor()).clamp(0.0, 12.0) as usize;
        let text = format!("{:.decimals$}", self.0);
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.')
        } else {
            &text
        };
        f.write_str(text)
    }
}

/// Seconds as `4s`, `1m`, `1h30m` or `1d`; periods with a fraction of a second stay in seconds.
struct Span(f64);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Rates like 1000/3600 make 1000/hour come back as 3600.0000000000005 s.
        let millis = (self.0 * 1000.0).round();
        if millis < 1000.0 || millis % 1000.0 != 0.0 {
            return write!(f, "{}s", Decimal(self.0));
        }
        let mut secs = (millis / 1000.0) as u64;
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        Ok(())
    }
}
