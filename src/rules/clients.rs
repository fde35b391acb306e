//! The rules' client overrides: each client's own limit (`None`: unlimited), by key.
//!
//! A request looks its client up here whenever the rules have overrides, so a lookup
//! hashes the borrowed key once and searches one table. Runtime entries change one override
//! at a time, on rules shared by every request in flight: the map is split in shards, each
//! behind its own `Arc`, so that a copy with one override changed shares every other shard
//! with the original, and costs one shard's copy (a 64th of the map), not the map's.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use super::Limit;
use crate::key::{ClientKey, KeyRef};

/// How many shards the overrides are split in.
const SHARDS: usize = 64;

type Shard = HashTable<(ClientKey, Option<Limit>)>;

/// Client overrides, cheap to copy and to change one at a time.
#[derive(Clone, Default)]
pub(crate) struct Clients {
    /// Empty while there are no overrides, so that rules without any hold no shard.
    shards: Box<[Arc<Shard>]>,
    len: usize,
    hasher: RandomState,
}

impl Clients {
    /// `client`'s override: `Some(None)` when it is unlimited.
    #[inline]
    pub(crate) fn get(&self, client: KeyRef<'_>) -> Option<&Option<Limit>> {
        if self.len == 0 {
            return None;
        }
        let hash = self.hasher.hash_one(client);
        self.shards[shard_of(hash)]
            .find(hash, |(key, _)| key.as_ref() == client)
            .map(|(_, limit)| limit)
    }

    /// Gives `client` its own limit (`None`: unlimited), in place of any it had. Copies the
    /// one shard it lands in if a copy of these overrides still shares it.
    pub(crate) fn insert(&mut self, client: ClientKey, limit: Option<Limit>) {
        if self.shards.is_empty() {
            self.shards = (0..SHARDS).map(|_| Arc::default()).collect();
        }
        let hash = self.hasher.hash_one(client.as_ref());
        let hasher = &self.hasher;
        let shard = Arc::make_mut(&mut self.shards[shard_of(hash)]);
        let entry = shard.entry(
            hash,
            |(key, _)| *key == client,
            |(key, _)| hasher.hash_one(key.as_ref()),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut held) => held.get_mut().1 = limit,
            hashbrown::hash_table::Entry::Vacant(free) => {
                free.insert((client, limit));
                self.len += 1;
            }
        }
    }

    /// Takes `client`'s override away, if it has one.
    pub(crate) fn remove(&mut self, client: KeyRef<'_>) {
        if self.get(client).is_none() {
            return;
        }
        let hash = self.hasher.hash_one(client);
        let shard = Arc::make_mut(&mut self.shards[shard_of(hash)]);
        if let Ok(held) = shard.find_entry(hash, |(key, _)| key.as_ref() == client) {
            held.remove();
            self.len -= 1;
        }
    }

    /// Every override, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ClientKey, &Option<Limit>)> {
        self.shards
            .iter()
            .flat_map(|shard| shard.iter().map(|(key, limit)| (key, limit)))
    }
}

impl FromIterator<(ClientKey, Option<Limit>)> for Clients {
    fn from_iter<I: IntoIterator<Item = (ClientKey, Option<Limit>)>>(overrides: I) -> Self {
        let mut clients = Self::default();
        for (client, limit) in overrides {
            clients.insert(client, limit);
        }
        clients
    }
}

impl fmt::Debug for Clients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The shard for `hash`, chosen by bits the tables use for neither their bucket index (low
/// bits) nor their control bytes (top 7 bits).
fn shard_of(hash: u64) -> usize {
    ((hash >> 32) as usize) % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(capacity: u32) -> Option<Limit> {
        let json = format!(r#"{{"default": {{"limit": "{capacity}/second"}}}}"#);
        Some(super::super::default_limit(&json))
    }

    #[test]
    fn overrides_are_found_by_borrowed_key_and_replaced_in_place() {
        let mut clients = Clients::default();
        assert_eq!(clients.get(ClientKey::id("a").as_ref()), None);
        clients.insert(ClientKey::id("a"), limit(1));
        clients.insert(ClientKey::id("b"), None);
        clients.insert(ClientKey::id("a"), limit(2));
        assert_eq!(clients.len, 2);
        assert_eq!(clients.get(KeyRef::Id("a")), Some(&limit(2)));
        assert_eq!(clients.get(KeyRef::Id("b")), Some(&None), "unlimited");
        clients.remove(KeyRef::Id("a"));
        clients.remove(KeyRef::Id("nobody"));
        assert_eq!(clients.len, 1);
        assert_eq!(clients.get(KeyRef::Id("a")), None);
    }

    #[test]
    fn a_changed_copy_shares_every_shard_but_one_and_leaves_the_original_alone() {
        let original: Clients = (0..1000)
            .map(|n| (ClientKey::id(format!("c{n}")), limit(1)))
            .collect();
        let mut changed = original.clone();
        changed.insert(ClientKey::id("c7"), limit(9));
        changed.insert(ClientKey::id("new"), None);
        changed.remove(KeyRef::Id("c8"));
        let shared = original
            .shards
            .iter()
            .zip(changed.shards.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert!(shared >= SHARDS - 3, "only {shared} shards shared");
        assert_eq!(original.get(KeyRef::Id("c7")), Some(&limit(1)));
        assert_eq!(original.get(KeyRef::Id("c8")), Some(&limit(1)));
        assert_eq!(original.get(KeyRef::Id("new")), None);
        assert_eq!(changed.get(KeyRef::Id("c7")), Some(&limit(9)));
        assert_eq!(changed.get(KeyRef::Id("c8")), None);
        assert_eq!((original.len, changed.len), (1000, 1000));
        assert_eq!(changed.iter().count(), 1000);
    }
}
