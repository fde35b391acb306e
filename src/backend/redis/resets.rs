//! Resets reach every instance that shares the Redis.
//!
//! A reset deletes the client's keys in Redis, then publishes the reset on the channel
//! `<prefix>:resets`. Every instance listens there and forgets what it remembers of that
//! client under those rules: remembered refusals, leases, and its local fallback's buckets.
//! Without this, an instance would keep refusing a client from a remembered refusal after
//! the client's key was gone. The message is JSON, with the client key exact (not its
//! display form, which does not round-trip every ID):
//!
//! ```json
//! {"client": {"id": "user 123"}, "rules": ["/api/data", "default"]}
//! ```
//!
//! with `client` one of `{"id": "…"}`, `{"ip": "10.0.0.1"}`,
//! `{"ipv6_network": {"network": "2001:db8::", "prefix_len": 64}}` or `"unknown"`.
//!
//! Every instance hears resets through its one subscription (see `pubsub`).
//!
//! A refusal on its way back from Redis when the reset happens must not be remembered
//! after it: every local forgetting bumps an epoch, and a refusal is remembered only if no
//! reset came since its call was sent. An instance cut off from Redis while a reset is
//! published misses it; what it remembers of the client then ends on its own (a refusal
//! when its wait is over, a lease at its end).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::RedisBackend;
use crate::backend::RuleSlot;
use crate::key::KeyRef;

/// One reset, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Reset {
    client: Client,
    /// The identities of the rules reset.
    rules: Vec<String>,
}

/// A client key, exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Client {
    Id(String),
    Ip(IpAddr),
    Ipv6Network { network: Ipv6Addr, prefix_len: u8 },
    Unknown,
}

impl From<KeyRef<'_>> for Client {
    fn from(key: KeyRef<'_>) -> Self {
        match key {
            KeyRef::Id(id) => Client::Id(id.to_owned()),
            KeyRef::Ip(ip) => Client::Ip(ip),
            KeyRef::Ipv6Network {
                network,
                prefix_len,
            } => Client::Ipv6Network {
                network,
                prefix_len,
            },
            KeyRef::Unknown => Client::Unknown,
        }
    }
}

impl Client {
    fn as_key(&self) -> KeyRef<'_> {
        match self {
            Client::Id(id) => KeyRef::Id(id),
            Client::Ip(ip) => KeyRef::Ip(*ip),
            Client::Ipv6Network {
                network,
                prefix_len,
            } => KeyRef::Ipv6Network {
                network: *network,
                prefix_len: *prefix_len,
            },
            Client::Unknown => KeyRef::Unknown,
        }
    }
}

/// The channel resets are published on, of the channels' prefix (see
/// [`RedisBackend::channels`]).
pub(super) fn channel(channels: &str) -> String {
    format!("{channels}:resets")
}

impl RedisBackend {
    /// Forgets `client`'s state under `rules` here and in Redis, and tells every instance
    /// sharing the Redis to forget it too.
    pub(crate) async fn reset(&self, rules: &[RuleSlot], client: KeyRef<'_>) -> Result<(), String> {
        self.forget(rules, client);
        let mut connection = self.connection().ok_or("not connected to Redis yet")?;
        let deadline = Instant::now() + self.command_timeout();
        let reset = Reset {
            client: client.into(),
            rules: rules.iter().map(|rule| rule.id.to_string()).collect(),
        };
        let message = serde_json::to_string(&reset).map_err(|e| e.to_string())?;
        let work = async {
            // One key per command: on a cluster, the keys live in different slots.
            for rule in rules {
                redis::cmd("DEL")
                    .arg(self.key(&rule.id, client))
                    .exec_async(&mut connection)
                    .await?;
            }
            redis::cmd("PUBLISH")
                .arg(channel(&self.channels))
                .arg(message)
                .exec_async(&mut connection)
                .await
        };
        let result = match tokio::time::timeout_at(deadline, work).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("Redis did not answer within the deadline".into()),
        };
        // Again: a refusal that Redis gave before the keys went may have come back meanwhile.
        self.forget(rules, client);
        result
    }

    /// A reset another instance (or this one) published.
    pub(super) fn on_reset(&self, reset: &Reset) {
        let named: HashSet<&str> = reset.rules.iter().map(String::as_str).collect();
        let slots = self.slots.load();
        let reset_here: Vec<RuleSlot> = slots
            .iter()
            .filter(|slot| named.contains(&*slot.id))
            .cloned()
            .collect();
        self.forget(&reset_here, reset.client.as_key());
    }

    /// Forgets what this instance remembers of `client` under `rules`.
    fn forget(&self, rules: &[RuleSlot], client: KeyRef<'_>) {
        self.resets.fetch_add(1, Ordering::AcqRel);
        for rule in rules {
            self.refusals.forget(rule.state, client);
            if let Some(leases) = &self.leases {
                leases.forget(rule.state, client);
            }
            if let Some(local) = &self.local {
                local.forget(rule.state, client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_carry_the_client_key_exactly() {
        let keys = [
            KeyRef::Id("user 123 with spaces and ünïcode"),
            KeyRef::Ip("::ffff:10.0.0.1".parse().unwrap()),
            KeyRef::Ipv6Network {
                network: "2001:db8::1".parse().unwrap(),
                prefix_len: 64,
            },
            KeyRef::Unknown,
        ];
        for key in keys {
            let reset = Reset {
                client: key.into(),
                rules: vec!["default".into()],
            };
            let json = serde_json::to_string(&reset).unwrap();
            let back: Reset = serde_json::from_str(&json).unwrap();
            assert_eq!(back.client.as_key(), key, "{json}");
        }
        let json = serde_json::to_string(&Reset {
            client: KeyRef::Id("alice").into(),
            rules: vec!["/api/data".into()],
        })
        .unwrap();
        assert_eq!(json, r#"{"client":{"id":"alice"},"rules":["/api/data"]}"#);
    }
}
