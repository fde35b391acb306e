//! Token buckets shared by every app instance, in Redis.
//!
//! One Lua script ([`token_bucket.lua`](token_bucket.lua)) makes each decision atomically
//! on one hash key, using Redis `TIME` as the clock so instances with skewed clocks agree.
//! Keys are `<prefix>:{<rule id>:<client key>}`; the braces are a Redis Cluster hash tag.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{BackendError, PendingDecision};
use crate::Decision;
use crate::key::ClientKey;
use crate::rules::{Bucket, Rule};

/// The decision script; `EVALSHA`, reloaded on `NOSCRIPT` by [`Script`].
pub(crate) const TOKEN_BUCKET_LUA: &str = include_str!("token_bucket.lua");

/// How the layer reaches Redis.
#[derive(Debug, Clone)]
pub(crate) struct RedisConfig {
    pub(crate) url: String,
    pub(crate) prefix: String,
    /// Deadline for each decision.
    pub(crate) timeout: Duration,
    /// Deadline for connecting at startup and for each reconnect attempt.
    pub(crate) connect_timeout: Duration,
}

impl RedisConfig {
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            prefix: "tollgate".to_owned(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

pub(crate) struct RedisBackend {
    connection: ConnectionManager,
    script: Arc<Script>,
    prefix: Box<str>,
    timeout: Duration,
}

impl RedisBackend {
    /// Connects and loads the script, within `connect_timeout`.
    pub(crate) async fn connect(config: &RedisConfig) -> Result<Self, String> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| e.to_string())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.connect_timeout));
        let script = Arc::new(Script::new(TOKEN_BUCKET_LUA));
        let connect = async {
            let mut connection = ConnectionManager::new_with_config(client, manager_config).await?;
            script.prepare_invoke().load_async(&mut connection).await?;
            Ok::<_, redis::RedisError>(connection)
        };
        let connection = tokio::time::timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| format!("no answer within {:?}", config.connect_timeout))?
            .map_err(|e| e.to_string())?;
        Ok(Self {
            connection,
            script,
            prefix: config.prefix.as_str().into(),
            timeout: config.timeout,
        })
    }

    pub(crate) fn key(&self, rule: &Rule, client: &ClientKey) -> String {
        format!("{}:{{{}:{}}}", self.prefix, rule.id(), client)
    }

    pub(crate) fn decide(
        &self,
        rule: &Rule,
        bucket: &Bucket,
        client: &ClientKey,
    ) -> PendingDecision {
        let key = self.key(rule, client);
        let mut connection = self.connection.clone();
        let script = Arc::clone(&self.script);
        let timeout = self.timeout;
        let capacity = bucket.capacity();
        let refill_per_sec = bucket.refill_per_sec();
        Box::pin(async move {
            let mut invocation = script.key(key);
            invocation.arg(capacity).arg(refill_per_sec).arg(1u32);
            let call = invocation.invoke_async::<(u8, u32, u64, u64, u64)>(&mut connection);
            let (allowed, remaining, retry_after_ms, reset_after_ms, now_ms) =
                tokio::time::timeout(timeout, call)
                    .await
                    .map_err(|_| BackendError::Timeout(timeout))??;
            let reset = SystemTime::UNIX_EPOCH
                + Duration::from_millis(now_ms.saturating_add(reset_after_ms));
            Ok(if allowed == 1 {
                Decision::allowed(capacity, remaining, reset)
            } else {
                Decision::denied(capacity, reset, Duration::from_millis(retry_after_ms))
            })
        })
    }
}

/// The URL with any password replaced by `***`, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis://:s3cret@host:6379"),
            "redis://:***@host:6379"
        );
        assert_eq!(redact("rediss://user:p@ss@host"), "rediss://user:***@host");
        assert_eq!(redact("redis://user@host"), "redis://user@host");
    }
}
