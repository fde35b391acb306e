//! Runtime rule entries in Redis, shared by every instance that uses the same prefix.
//!
//! One hash, `<prefix>:runtime`: a field per entry, named by its target (`client:id:k`,
//! `rule:/api/data@GET`), holding the entry's rule as JSON. A change is written there, then
//! announced on the channel `<prefix>:runtime` (the message is the field changed); every
//! instance re-reads the hash when it hears one, when its subscription is made again (it may
//! have missed some meanwhile), and every few seconds. One key per command, so it works the
//! same on a Redis Cluster.

use std::sync::Arc;

use tokio::sync::Notify;

use super::RedisBackend;

/// The hash's key, which is also the name of the channel changes are announced on.
pub(super) fn name(prefix: &str) -> String {
    format!("{prefix}:runtime")
}

impl RedisBackend {
    /// Every entry stored: field and value.
    pub(crate) async fn runtime_entries(&self) -> Result<Vec<(String, String)>, String> {
        let mut connection = self.connection().ok_or("not connected to Redis yet")?;
        let mut read = redis::cmd("HGETALL");
        read.arg(name(&self.prefix));
        within_deadline(self, read.query_async(&mut connection)).await
    }

    /// Stores `rule` under `field`, or deletes the field for `None`. Returns whether the
    /// field was there before.
    pub(crate) async fn store_runtime_entry(
        &self,
        field: &str,
        rule: Option<&str>,
    ) -> Result<bool, String> {
        let mut connection = self.connection().ok_or("not connected to Redis yet")?;
        let key = name(&self.prefix);
        match rule {
            Some(rule) => {
                let mut write = redis::cmd("HSET");
                write.arg(&key).arg(field).arg(rule);
                // HSET counts the fields it added: 0 when it replaced one.
                let added: u64 = within_deadline(self, write.query_async(&mut connection)).await?;
                Ok(added == 0)
            }
            None => {
                let mut delete = redis::cmd("HDEL");
                delete.arg(&key).arg(field);
                let deleted: u64 =
                    within_deadline(self, delete.query_async(&mut connection)).await?;
                Ok(deleted > 0)
            }
        }
    }

    /// Tells every instance that the entry under `field` changed.
    pub(crate) async fn announce_runtime_change(&self, field: &str) -> Result<(), String> {
        let mut connection = self.connection().ok_or("not connected to Redis yet")?;
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(name(&self.prefix)).arg(field);
        within_deadline(self, publish.exec_async(&mut connection)).await
    }

    /// Notified when the stored entries may have changed: a change was announced, or the
    /// subscription was made (again).
    pub(crate) fn runtime_changes(&self) -> Arc<Notify> {
        Arc::clone(&self.runtime_changes)
    }
}

/// `command`'s answer, or why there is none within the deadline of commands other than
/// decisions.
async fn within_deadline<T>(
    backend: &RedisBackend,
    command: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    let deadline = backend.command_timeout();
    match tokio::time::timeout(deadline, command).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("Redis did not answer within {deadline:?}")),
    }
}
