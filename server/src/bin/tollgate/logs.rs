//! `tollgate serve`'s logs on stdout: text for a person, or JSON lines for a collector.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`TOLLGATE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// One line of text per event, in colour on a terminal.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`.
    Json,
}

/// Installs the process's subscriber: `RUST_LOG` filters; when it is unset, `LOG_LEVEL`
/// (`DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`, as the services before tollgate read
/// it, or `trace`/`warn`/`off`); with neither, `info`. A `LOG_LEVEL` that names no level
/// is an error that names it.
pub(crate) fn init(format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty())
    {
        Some(_) => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::new(level_of(std::env::var("LOG_LEVEL").ok().as_deref())?),
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => logs.with_ansi(colours()).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
    Ok(())
}

/// The filter `LOG_LEVEL` names.
fn level_of(log_level: Option<&str>) -> Result<&'static str, String> {
    let Some(given) = log_level.map(str::trim).filter(|level| !level.is_empty()) else {
        return Ok("info");
    };
    Ok(match given.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" | "fatal" => "error",
        "off" => "off",
        _ => {
            return Err(format!(
                "LOG_LEVEL={given:?} names no log level: use DEBUG, INFO, WARNING, ERROR or \
                 CRITICAL (or RUST_LOG for a filter)"
            ));
        }
    })
}

/// Colours only for a person reading a terminal: escape codes would litter a piped or
/// collected log. `NO_COLOR` (set and not empty) turns them off there too.
fn colours() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    std::io::stdout().is_terminal() && !no_color
}

#[cfg(test)]
mod tests {
    use super::level_of;

    #[test]
    fn log_level_is_read_as_the_services_before_wrote_it() {
        assert_eq!(level_of(None), Ok("info"));
        assert_eq!(level_of(Some("INFO")), Ok("info"));
        assert_eq!(level_of(Some("WARNING")), Ok("warn"));
        assert_eq!(level_of(Some("critical")), Ok("error"));
        assert!(
            level_of(Some("loud"))
                .unwrap_err()
                .starts_with("LOG_LEVEL=\"loud\"")
        );
    }
}
