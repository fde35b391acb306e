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

/// Installs the process's subscriber: `RUST_LOG` filters (`info` when unset or invalid).
pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => logs.with_ansi(colours()).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
}

/// Colours only for a person reading a terminal: escape codes would litter a piped or
/// collected log. `NO_COLOR` (set and not empty) turns them off there too.
fn colours() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    std::io::stdout().is_terminal() && !no_color
}
