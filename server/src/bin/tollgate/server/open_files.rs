//! The open files limit (`RLIMIT_NOFILE`): raised from its soft value to the hard limit at
//! start, as nginx's `worker_rlimit_nofile` and most servers do, and the connection cap it
//! leaves room for.

use std::fmt;

/// The open files limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenFiles {
    /// The soft limit the process started with.
    pub(crate) started: u64,
    /// The soft limit now: the most files this process may hold open.
    pub(crate) soft: u64,
    /// The hard limit, the most the soft limit may be raised to.
    pub(crate) hard: u64,
}

/// Raises the soft limit to the hard one. Where that fails, the limit stays as it was, and
/// why is returned to be logged.
pub(crate) fn raise() -> Result<OpenFiles, String> {
    let (started, hard) = rlimit::Resource::NOFILE
        .get()
        .map_err(|error| format!("cannot read the open files limit: {error}"))?;
    let soft = rlimit::increase_nofile_limit(u64::MAX).map_err(|error| {
        format!("cannot raise the open files limit from {started} to {hard}: {error}")
    })?;
    Ok(OpenFiles {
        started,
        soft,
        hard,
    })
}

impl OpenFiles {
    /// The default connection cap: the limit less a quarter (at least 32 files), kept for
    /// Redis connections, the rules and state files, the listeners and the runtime.
    pub(crate) fn default_cap(&self) -> u64 {
        self.soft.saturating_sub((self.soft / 4).max(32))
    }
}

/// The connection cap, and where it comes from (to log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cap {
    pub(crate) connections: usize,
    pub(crate) source: &'static str,
}

/// The cap: `max_connections` (MAX_CONNECTIONS), which must be below the open files limit,
/// or else the default that limit leaves room for.
pub(crate) fn connection_cap(
    max_connections: Option<u64>,
    open_files: Option<OpenFiles>,
) -> Result<Cap, String> {
    let (cap, source) = match (max_connections, open_files) {
        (Some(cap), Some(files)) if cap >= files.soft => {
            return Err(format!(
                "MAX_CONNECTIONS={cap} is not below the open files limit ({}): lower it, or \
                 raise the limit (ulimit -n, LimitNOFILE=, docker --ulimit nofile=)",
                files.soft
            ));
        }
        (Some(cap), _) => (cap, "MAX_CONNECTIONS"),
        (None, Some(files)) => (
            files.default_cap(),
            "the open files limit less a quarter, for Redis, files and the runtime",
        ),
        (None, None) => (768, "a guess, the open files limit being unknown"),
    };
    if cap == 0 {
        return Err(format!(
            "the open files limit ({}) leaves no room for connections: raise it (ulimit -n)",
            open_files.map_or(0, |files| files.soft)
        ));
    }
    Ok(Cap {
        connections: usize::try_from(cap).unwrap_or(usize::MAX),
        source,
    })
}

impl fmt::Display for OpenFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.soft > self.started {
            write!(
                f,
                "raised from {} to {} (the hard limit)",
                self.started, self.soft
            )
        } else if self.soft >= self.hard {
            write!(f, "{} (already the hard limit)", self.soft)
        } else {
            write!(f, "{} (hard limit {})", self.soft, self.hard)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_a_quarter_and_at_least_32() {
        let limit = |soft| OpenFiles {
            started: soft,
            soft,
            hard: soft,
        };
        assert_eq!(limit(1024).default_cap(), 768);
        assert_eq!(limit(100).default_cap(), 68);
        assert_eq!(limit(20).default_cap(), 0);
        let raised = OpenFiles {
            started: 1024,
            soft: 20_000,
            hard: 20_000,
        };
        assert_eq!(
            raised.to_string(),
            "raised from 1024 to 20000 (the hard limit)"
        );
    }
}
