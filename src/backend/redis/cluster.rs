//! Redis Cluster support: a circuit breaker per master.
//!
//! Every decision touches one key, whose hash tag `{<rule id>:<client key>}` puts it in one
//! slot; multi-band rules keep all bands in that one key. The cluster client routes each
//! `EVALSHA` to the slot's master and follows `MOVED`/`ASK`; `redis::Script` loads the
//! script again on `NOSCRIPT` (a restarted or new master).
//!
//! One breaker for the whole cluster would turn a single dead master into an outage of all
//! of them. So the backend keeps a table of which master owns which slots (from
//! `CLUSTER SLOTS`, refreshed every few seconds) and one breaker per master: when a master
//! without replicas dies, only requests whose keys live on it get the failure policy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::Value;

use super::clock::RedisClock;
use super::connection::Connection;
use crate::backend::breaker::{Breaker, BreakerState};

/// Number of hash slots in Redis Cluster.
const SLOTS: u16 = 16384;

/// The slot of a key, as Redis Cluster computes it: CRC16 (XMODEM) of the hash tag (the
/// text between the first `{` and the next `}`, if not empty) or of the whole key, mod 16384.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|b| *b == b'}')
                .filter(|close| *close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tag) % SLOTS
}

/// What the backend keeps for one Redis server: the circuit breaker in front of it, and its
/// clock.
pub(crate) struct Server {
    pub(crate) breaker: Arc<Breaker>,
    pub(crate) clock: RedisClock,
}

impl Server {
    fn new(failures: u32, cooldown: Duration) -> Self {
        Self {
            breaker: Arc::new(Breaker::new(failures, cooldown)),
            clock: RedisClock::default(),
        }
    }
}

/// The servers decisions go to: one Redis, or each master of a cluster.
pub(crate) enum Servers {
    Single(Arc<Server>),
    Cluster(SlotServers),
}

impl Servers {
    pub(crate) fn single(failures: u32, cooldown: Duration) -> Self {
        Servers::Single(Arc::new(Server::new(failures, cooldown)))
    }

    pub(crate) fn cluster(failures: u32, cooldown: Duration) -> Self {
        Servers::Cluster(SlotServers {
            failures,
            cooldown,
            table: ArcSwap::from_pointee(Vec::new()),
            by_master: Mutex::new(HashMap::new()),
            unmapped: Arc::new(Server::new(failures, cooldown)),
        })
    }

    /// The server that holds `key`.
    pub(crate) fn for_key(&self, key: &str) -> Arc<Server> {
        match self {
            Servers::Single(server) => Arc::clone(server),
            Servers::Cluster(slots) => slots.for_slot(slot(key.as_bytes())),
        }
    }

    /// Opens every breaker: Redis could not be reached at startup.
    pub(crate) fn open_all(&self, why: &str) {
        match self {
            Servers::Single(server) => server.breaker.open(why),
            Servers::Cluster(slots) => {
                slots.unmapped.breaker.open(why);
                for server in slots.masters() {
                    server.breaker.open(why);
                }
            }
        }
    }

    /// Each breaker in use, by node: `single` names the one Redis; a cluster's masters are
    /// named by address, and slots no master is known for yet by `unmapped`.
    pub(crate) fn breakers(&self, single: &str) -> Vec<(String, BreakerState)> {
        match self {
            Servers::Single(server) => vec![(single.to_owned(), server.breaker.state())],
            Servers::Cluster(slots) => slots.breakers(),
        }
    }

    /// The worst state of any breaker in use: open if any master is cut off.
    pub(crate) fn state(&self) -> BreakerState {
        match self {
            Servers::Single(server) => server.breaker.state(),
            Servers::Cluster(slots) => slots.state(),
        }
    }
}

/// Which master owns which slots, each master with its breaker and clock.
pub(crate) struct SlotServers {
    failures: u32,
    cooldown: Duration,
    /// `(first slot, last slot, master)`, sorted by first slot.
    table: ArcSwap<Vec<(u16, u16, Arc<Server>)>>,
    /// Masters by address, kept across table refreshes.
    by_master: Mutex<HashMap<String, Arc<Server>>>,
    /// For slots no master is known for yet.
    unmapped: Arc<Server>,
}

impl SlotServers {
    fn for_slot(&self, slot: u16) -> Arc<Server> {
        let table = self.table.load();
        let at = table.partition_point(|(first, _, _)| *first <= slot);
        match at.checked_sub(1).map(|i| &table[i]) {
            Some((_, last, server)) if slot <= *last => Arc::clone(server),
            _ => Arc::clone(&self.unmapped),
        }
    }

    /// The worst state among the masters of the current slot map, and of the breaker for
    /// unmapped slots while some slot has no known master. Masters that left the map, and
    /// the startup failure once every slot is mapped, no longer count.
    fn state(&self) -> BreakerState {
        let rank = |s: &BreakerState| match s {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        let table = self.table.load();
        let mapped: u32 = table
            .iter()
            .map(|(first, last, _)| u32::from(last.saturating_sub(*first)) + 1)
            .sum();
        let unmapped = (mapped < u32::from(SLOTS)).then(|| self.unmapped.breaker.state());
        table
            .iter()
            .map(|(_, _, server)| server.breaker.state())
            .chain(unmapped)
            .max_by_key(rank)
            .unwrap_or(BreakerState::Closed)
    }

    /// The breakers [`state`](Self::state) weighs, by node: each master of the current slot
    /// map by address, and `unmapped` while some slot has no known master.
    fn breakers(&self) -> Vec<(String, BreakerState)> {
        let table = self.table.load();
        let mapped: u32 = table
            .iter()
            .map(|(first, last, _)| u32::from(last.saturating_sub(*first)) + 1)
            .sum();
        let mut breakers: Vec<_> = self
            .masters_in_use()
            .into_iter()
            .map(|(address, server)| (address, server.breaker.state()))
            .collect();
        if mapped < u32::from(SLOTS) {
            breakers.push(("unmapped".to_owned(), self.unmapped.breaker.state()));
        }
        breakers.sort_by(|a, b| a.0.cmp(&b.0));
        breakers
    }

    /// The masters of the current slot map, by address (`host:port`).
    pub(crate) fn masters_in_use(&self) -> Vec<(String, Arc<Server>)> {
        let table = self.table.load();
        let by_master = self
            .by_master
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        by_master
            .iter()
            .filter(|(_, server)| table.iter().any(|(_, _, s)| Arc::ptr_eq(s, server)))
            .map(|(address, server)| (address.clone(), Arc::clone(server)))
            .collect()
    }

    fn masters(&self) -> Vec<Arc<Server>> {
        let by_master = self
            .by_master
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        by_master.values().cloned().collect()
    }

    /// Installs a new slot map: `(first slot, last slot, master address)`.
    pub(crate) fn update(&self, ranges: Vec<(u16, u16, String)>) {
        let mut by_master = self
            .by_master
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut table: Vec<(u16, u16, Arc<Server>)> = ranges
            .into_iter()
            .map(|(first, last, master)| {
                let server = by_master
                    .entry(master)
                    .or_insert_with(|| Arc::new(Server::new(self.failures, self.cooldown)));
                (first, last, Arc::clone(server))
            })
            .collect();
        table.sort_by_key(|(first, _, _)| *first);
        self.table.store(Arc::new(table));
    }
}

/// Parses a `CLUSTER SLOTS` reply into `(first slot, last slot, "host:port" of the master)`.
pub(crate) fn parse_cluster_slots(reply: &Value) -> Option<Vec<(u16, u16, String)>> {
    let Value::Array(entries) = reply else {
        return None;
    };
    let int = |v: Option<&Value>| match v {
        Some(Value::Int(n)) => u16::try_from(*n).ok(),
        _ => None,
    };
    entries
        .iter()
        .map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let (first, last) = (int(parts.first())?, int(parts.get(1))?);
            let Some(Value::Array(master)) = parts.get(2) else {
                return None;
            };
            let host = match master.first() {
                Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
                Some(Value::SimpleString(text)) => text.clone(),
                _ => return None,
            };
            Some((first, last, format!("{host}:{}", int(master.get(1))?)))
        })
        .collect()
}

/// Reads `CLUSTER SLOTS` and gives each master its breaker; keeps the old map on failure.
pub(super) async fn refresh_slots(servers: &Servers, connection: &mut Connection) {
    let Servers::Cluster(slots) = servers else {
        return;
    };
    let mut command = redis::cmd("CLUSTER");
    command.arg("SLOTS");
    let query = command.query_async::<redis::Value>(connection);
    match tokio::time::timeout(Duration::from_secs(1), query).await {
        Ok(Ok(reply)) => match parse_cluster_slots(&reply) {
            Some(ranges) => slots.update(ranges),
            None => tracing::debug!("unexpected CLUSTER SLOTS reply"),
        },
        Ok(Err(error)) => tracing::debug!(%error, "CLUSTER SLOTS failed"),
        Err(_) => tracing::debug!("CLUSTER SLOTS timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::breaker::Permit;

    #[test]
    fn slots_match_redis() {
        // Values from `redis-cli CLUSTER KEYSLOT`.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(
            slot(b"foo{}{bar}"),
            8363,
            "an empty tag hashes the whole key"
        );
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(
            slot(b"tollgate:{default:id:alice}"),
            slot(b"default:id:alice")
        );
    }

    #[test]
    fn each_master_has_its_own_breaker() {
        let servers = Servers::cluster(1, Duration::from_secs(3600));
        let Servers::Cluster(slots) = &servers else {
            unreachable!()
        };
        slots.update(vec![
            (0, 5460, "a:1".into()),
            (5461, 10922, "b:2".into()),
            (10923, 16383, "c:3".into()),
        ]);
        let on_b = slots.for_slot(6000);
        on_b.breaker
            .failed(crate::backend::breaker::Permit::Call, &"down");
        assert_eq!(slots.for_slot(5461).breaker.state(), BreakerState::Open);
        assert_eq!(slots.for_slot(10922).breaker.state(), BreakerState::Open);
        assert_eq!(slots.for_slot(5460).breaker.state(), BreakerState::Closed);
        assert_eq!(slots.for_slot(10923).breaker.state(), BreakerState::Closed);
        assert_eq!(servers.state(), BreakerState::Open);
        // A refresh that moves b's slots to a new master (a failover) uses a fresh breaker;
        // the same master keeps its breaker.
        slots.update(vec![(0, 5460, "a:1".into()), (5461, 16383, "c:3".into())]);
        assert_eq!(slots.for_slot(6000).breaker.state(), BreakerState::Closed);
        slots.update(vec![(0, 16383, "b:2".into())]);
        assert_eq!(slots.for_slot(0).breaker.state(), BreakerState::Open);
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn breakers_are_named_by_master() {
        let servers = Servers::cluster(1, Duration::from_secs(3600));
        let Servers::Cluster(slots) = &servers else {
            unreachable!()
        };
        let names = |servers: &Servers| -> Vec<(String, BreakerState)> { servers.breakers("") };
        assert_eq!(names(&servers), [("unmapped".into(), BreakerState::Closed)]);
        slots.update(vec![(0, 8191, "a:1".into()), (8192, 16383, "b:1".into())]);
        servers.for_key("{x}").breaker.failed(Permit::Call, &"down");
        let open = servers
            .breakers("")
            .into_iter()
            .filter(|(_, state)| *state == BreakerState::Open)
            .count();
        assert_eq!(names(&servers).len(), 2, "no unmapped slots");
        assert_eq!(open, 1);
        // A master that left the map is no longer shown.
        slots.update(vec![(0, 16383, "a:1".into())]);
        assert_eq!(names(&servers)[0].0, "a:1");
        assert_eq!(names(&servers).len(), 1);
    }

    #[test]
    fn parses_cluster_slots() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7000), bulk("id-a")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7003), bulk("id-r")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7001), bulk("id-b")]),
            ]),
        ]);
        assert_eq!(
            parse_cluster_slots(&reply),
            Some(vec![
                (0, 5460, "127.0.0.1:7000".to_owned()),
                (5461, 16383, "127.0.0.1:7001".to_owned())
            ])
        );
        assert_eq!(parse_cluster_slots(&Value::Nil), None);
    }

    #[test]
    fn state_counts_only_the_breakers_in_use() {
        let servers = Servers::cluster(1, Duration::from_secs(3600));
        let Servers::Cluster(slots) = &servers else {
            unreachable!()
        };
        servers.open_all("unreachable at startup");
        assert_eq!(servers.state(), BreakerState::Open);
        // Half the slots mapped: the rest still go to the open breaker for unmapped slots.
        slots.update(vec![(0, 8191, "a:1".into())]);
        assert_eq!(servers.state(), BreakerState::Open);
        slots.update(vec![(0, 8191, "a:1".into()), (8192, 16383, "b:1".into())]);
        assert_eq!(servers.state(), BreakerState::Closed);
        // A master that failed and then left the map no longer counts.
        servers.for_key("{x}").breaker.failed(Permit::Call, &"down");
        assert_eq!(servers.state(), BreakerState::Open);
        slots.update(vec![(0, 16383, "c:1".into())]);
        assert_eq!(servers.state(), BreakerState::Closed);
    }
}
