//! The `tollgate` command: `tollgate check-rules`, to validate a rules file before deploying
//! it, and `tollgate serve`, the rate limit service.
//!
//! ```text
//! $ cargo install --path server
//! $ tollgate check-rules rate_limits.json
//! $ tollgate check-rules rate_limits.json --explain POST /api/submit --client alice --tier pro
//! $ tollgate serve
//! $ tollgate healthcheck
//! ```
//!
//! `check-rules`: without `--explain` it prints every rule the file defines (base rules, each tier, client
//! overrides, the Redis failure policy) and a closing `OK:` line. With `--explain METHOD PATH`
//! it prints the rule and limit one request would get instead. `--client` takes a client key
//! as in the file's `clients` (`id:alice`, `ip:10.0.0.1`, `ip:2001:db8::/64`, `unknown`) or a
//! bare X-Client-ID (`alice`, meaning `id:alice`); `--tier` is the tier your authentication
//! would attach.
//!
//! The file is read as the limiter reads it: a regular file (or a symlink to one) of at most
//! `--max-file-bytes` (16 MiB by default); a FIFO or a device is refused without reading it.
//! A client override that can never apply (an IPv6 address or network that does not match how
//! the limiter keys IPv6 clients, see `--ipv6-prefix-len`) is a `warning:` line on stderr; the
//! file is still valid.
//!
//! `healthcheck`: exit 0 when `GET /health` on `127.0.0.1:$PORT` answers 200 within 2 s (the
//! service's, or an app's that serves one), 1 otherwise with the reason on stderr. It is the
//! container image's health check, which has no curl.
//!
//! `check-rules` exit status: 0 when the file is valid, 1 when it is not or cannot be read (the reason, with
//! the file and the JSON location, goes to stderr), 2 for a usage error.

mod check_rules;
mod environment;
mod grpc_shards;
mod healthcheck;
mod limits;
mod logs;
mod serve;
mod server;
mod settings;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Operator tools for tollgate rate limits"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a rules file and print the rules it sets.
    CheckRules(check_rules::CheckRules),
    /// Run the rate limit service.
    Serve(Box<serve::Serve>),
    /// Exit 0 when `GET /health` on this host's service answers 200.
    Healthcheck(healthcheck::Healthcheck),
}

fn main() -> ExitCode {
    // The service and its health check read `.env` (or `--env-file`) first, as the services
    // before them did: its variables are settings like the environment's.
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let reads_env_file = args
        .first()
        .is_some_and(|command| command == "serve" || command == "healthcheck");
    let env_file = if reads_env_file {
        match settings::EnvFile::load(&args) {
            Ok(env_file) => env_file,
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        settings::EnvFile::default()
    };
    let Cli { command } =
        Cli::try_parse().unwrap_or_else(|error| environment::naming_the_variable(error).exit());
    match command {
        Command::CheckRules(args) => check_rules::check_rules(&args),
        Command::Serve(args) => serve::serve(*args, &env_file),
        Command::Healthcheck(args) => healthcheck::healthcheck(&args),
    }
}
