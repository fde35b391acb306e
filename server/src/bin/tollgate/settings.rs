//! Where `tollgate serve`'s settings come from: the command line, the environment, a `.env`
//! file (the services tollgate replaces keep theirs there), or the defaults; and the
//! settings those services name differently (`REDIS_HOST`/`REDIS_PORT`/`REDIS_DB`,
//! `LOG_LEVEL`), read as theirs were.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The file read when `--env-file` is not given, in the working directory.
const DEFAULT_ENV_FILE: &str = ".env";

/// The `.env` file read at start, and what it set.
#[derive(Debug, Default)]
pub(crate) struct EnvFile {
    /// The file, if one was read.
    path: Option<PathBuf>,
    /// The variables it set (those the environment did not have already).
    set: Vec<String>,
    /// The variables it has that the environment had already: the environment's win.
    overridden: Vec<String>,
}

impl EnvFile {
    /// Reads `--env-file PATH` (found in `args`, the command line without the program's
    /// name) or, without it, `.env` in the working directory if there is one, into the
    /// environment: only the variables the environment does not have. Runs before any
    /// other thread starts, as setting the environment needs.
    pub(crate) fn load(args: &[OsString]) -> Result<Self, String> {
        let (path, named) = match env_file_argument(args) {
            Some(path) => (path, true),
            None => (PathBuf::from(DEFAULT_ENV_FILE), false),
        };
        if !named && !path.is_file() {
            return Ok(Self::default());
        }
        let which = if named {
            format!("--env-file {}", path.display())
        } else {
            path.display().to_string()
        };
        let entries = dotenvy::from_path_iter(&path)
            .and_then(|entries| entries.collect::<Result<Vec<(String, String)>, _>>())
            .map_err(|error| format!("{which}: {}", reason(&error)))?;
        let (overridden, set): (Vec<String>, Vec<String>) = entries
            .into_iter()
            .map(|(name, _)| name)
            .partition(|name| std::env::var_os(name).is_some());
        // Sets only what the environment lacks: the environment wins.
        dotenvy::from_path(&path).map_err(|error| format!("{which}: {}", reason(&error)))?;
        Ok(Self {
            path: Some(path),
            set,
            overridden,
        })
    }

    /// Where the variable `name` came from, for the startup log: `.env` (the file's name),
    /// `environment`, or `None` when it is not set.
    pub(crate) fn origin(&self, name: &str) -> Option<String> {
        match &self.path {
            Some(path) if self.set.iter().any(|set| set == name) => {
                Some(path.display().to_string())
            }
            _ if std::env::var_os(name).is_some_and(|value| !value.is_empty()) => {
                Some("environment".to_owned())
            }
            _ => None,
        }
    }

    /// Logs what the file set, and what it has that the environment overrode.
    pub(crate) fn log(&self) {
        let Some(path) = &self.path else {
            return;
        };
        tracing::info!(
            file = %path.display(),
            set = %self.set.join(", "),
            kept_from_the_environment = %self.overridden.join(", "),
            "settings read from {}",
            path.display()
        );
    }
}

/// The value of `tollgate serve`'s `--env-file` on the command line (`--env-file PATH` or
/// `--env-file=PATH`).
fn env_file_argument(args: &[OsString]) -> Option<PathBuf> {
    if args.first().is_none_or(|command| command != "serve") {
        return None;
    }
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            return None;
        }
        if arg == "--env-file" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--env-file=")) {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// A `.env` problem, said for the operator, without the file's text: a line it cannot
/// read may hold a secret (or, after a quote left open, every line after it).
fn reason(error: &dotenvy::Error) -> String {
    match error {
        dotenvy::Error::LineParse(_, _) => "cannot read one of its lines (not NAME=value, or a \
                                            quote left open); the line is not shown, since it \
                                            may hold a secret"
            .to_owned(),
        dotenvy::Error::Io(error) => error.to_string(),
        other => other.to_string(),
    }
}

/// The Redis URL the variables the services before tollgate used build, when `REDIS_URL`
/// is not set: `REDIS_HOST` (required for the rest to count), `REDIS_PORT` (6379),
/// `REDIS_DB` (0), `REDIS_USERNAME` and `REDIS_PASSWORD`. `None` when none of them is set;
/// an error naming the variable when one cannot be part of a URL.
pub(crate) fn redis_url_from_parts(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<RedisParts>, String> {
    const PARTS: [&str; 5] = [
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_DB",
        "REDIS_USERNAME",
        "REDIS_PASSWORD",
    ];
    let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
    let given: Vec<&str> = PARTS
        .into_iter()
        .filter(|name| set(name).is_some())
        .collect();
    let Some(host) = set("REDIS_HOST") else {
        return match given.as_slice() {
            [] => Ok(None),
            others => Err(format!(
                "{} set without REDIS_HOST: set REDIS_HOST too (or REDIS_URL), or the limits \
                 would not be in the Redis meant",
                others.join(", ")
            )),
        };
    };
    let host = host.trim();
    if let Some((name, port)) = host.split_once(':')
        && !port.contains(':')
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "REDIS_HOST={host:?} holds a port: set REDIS_HOST={name} and REDIS_PORT={port}"
        ));
    }
    if host.contains(['/', '@', '?', '#', ' ']) {
        return Err(format!(
            "REDIS_HOST={host:?} is not a host name or address (for a URL, set REDIS_URL)"
        ));
    }
    let port = match set("REDIS_PORT") {
        None => 6379,
        Some(port) => port
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("REDIS_PORT={port:?} is not a port (1 to 65535)"))?,
    };
    let db = match set("REDIS_DB") {
        None => 0,
        Some(db) => db
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("REDIS_DB={db:?} is not a database number (0, 1, 2, ...)"))?,
    };
    let credentials = match (set("REDIS_USERNAME"), set("REDIS_PASSWORD")) {
        (None, None) => String::new(),
        (Some(user), None) => format!("{}@", encoded(&user)),
        (user, Some(password)) => format!(
            "{}:{}@",
            encoded(user.as_deref().unwrap_or_default()),
            encoded(&password)
        ),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Ok(Some(RedisParts {
        url: format!("redis://{credentials}{host}:{port}/{db}"),
        from: given.join(", "),
    }))
}

/// A Redis URL built from its parts, and the variables it was built from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RedisParts {
    pub(crate) url: String,
    pub(crate) from: String,
}

/// `text` percent-encoded for the user information of a URL: letters, digits and `-._~`
/// as they are, every other byte as `%XX`.
fn encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The rules file `tollgate serve` reads when none is named: `rate_limits.json` in the
/// working directory, else `config.yaml` there (as the tiered check service read its
/// tiers), else none.
pub(crate) fn rules_file_found_in(dir: &Path) -> Option<PathBuf> {
    ["rate_limits.json", "config.yaml"]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .map(|path| path.file_name().map_or(path.clone(), PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(vars: &[(&str, &str)]) -> Result<Option<RedisParts>, String> {
        redis_url_from_parts(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn the_parts_build_a_url() {
        assert_eq!(parts(&[]), Ok(None));
        let built = parts(&[
            ("REDIS_HOST", "redis"),
            ("REDIS_PORT", "6380"),
            ("REDIS_DB", "2"),
        ]);
        assert_eq!(
            built,
            Ok(Some(RedisParts {
                url: "redis://redis:6380/2".into(),
                from: "REDIS_HOST, REDIS_PORT, REDIS_DB".into()
            }))
        );
        let built = parts(&[("REDIS_HOST", "::1"), ("REDIS_PASSWORD", "p@ss:w/rd")]).unwrap();
        assert_eq!(built.unwrap().url, "redis://:p%40ss%3Aw%2Frd@[::1]:6379/0");
        let built = parts(&[
            ("REDIS_HOST", "h"),
            ("REDIS_USERNAME", "app"),
            ("REDIS_PASSWORD", ""),
        ]);
        assert_eq!(built.unwrap().unwrap().url, "redis://app@h:6379/0");
    }

    #[test]
    fn a_host_with_a_port_says_which_variable_takes_the_port() {
        let error = parts(&[("REDIS_HOST", "redis:6380")]).unwrap_err();
        assert_eq!(
            error,
            "REDIS_HOST=\"redis:6380\" holds a port: set REDIS_HOST=redis and REDIS_PORT=6380"
        );
        // An IPv6 address is a host.
        assert!(parts(&[("REDIS_HOST", "::1")]).is_ok());
    }

    #[test]
    fn a_part_that_cannot_be_in_a_url_is_named() {
        for (vars, named) in [
            (
                &[("REDIS_HOST", "h"), ("REDIS_PORT", "66000")][..],
                "REDIS_PORT=\"66000\"",
            ),
            (
                &[("REDIS_HOST", "h"), ("REDIS_PORT", "x")][..],
                "REDIS_PORT=\"x\"",
            ),
            (
                &[("REDIS_HOST", "h"), ("REDIS_DB", "-1")][..],
                "REDIS_DB=\"-1\"",
            ),
            (
                &[("REDIS_HOST", "redis://h")][..],
                "REDIS_HOST=\"redis://h\"",
            ),
            (
                &[("REDIS_PORT", "6379")][..],
                "REDIS_PORT set without REDIS_HOST",
            ),
        ] {
            let error = parts(vars).unwrap_err();
            assert!(error.starts_with(named), "{vars:?}: {error}");
        }
    }

    #[test]
    fn env_file_is_found_on_the_command_line() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            env_file_argument(&args(&["serve", "--env-file", "a.env"])),
            Some(PathBuf::from("a.env"))
        );
        assert_eq!(
            env_file_argument(&args(&["serve", "--env-file=b.env", "--port", "1"])),
            Some(PathBuf::from("b.env"))
        );
        assert_eq!(
            env_file_argument(&args(&["serve", "--", "--env-file=c"])),
            None
        );
        assert_eq!(
            env_file_argument(&args(&["healthcheck", "--env-file", "d"])),
            None
        );
    }
}
