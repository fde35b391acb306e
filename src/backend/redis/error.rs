//! Why Redis could not decide a request.

/// Decisions queued at most for the batcher on a single Redis; past that a request is
/// decided by the failure policy ([`CallError::Overloaded`]).
pub(super) const MAX_QUEUED: usize = 8192;

/// Why Redis could not decide.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum CallError {
    #[error("no answer within the deadline")]
    Timeout,
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply of {0} values from the script")]
    Reply(usize),
    #[error("Redis ran the call after its deadline; it took nothing")]
    Late,
    #[error("not connected to the cluster yet")]
    NotConnected,
    #[error("{MAX_QUEUED} decisions already wait for Redis")]
    Overloaded,
}

impl CallError {
    /// `timeout` for a missed deadline, `error` for anything else.
    #[cfg(feature = "metrics")]
    pub(super) fn metrics_kind(&self) -> crate::metrics::RedisErrorKind {
        match self {
            CallError::Timeout | CallError::Late => crate::metrics::RedisErrorKind::Timeout,
            _ => crate::metrics::RedisErrorKind::Error,
        }
    }
}
