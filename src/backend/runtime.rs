//! Runtime rule entries in a store: client overrides and routes set while limiters run,
//! kept where every instance sharing the store reads them, with a version every change
//! adds one to, and news of changes as they happen.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use tokio::sync::Notify;

use super::{StoreError, StoreFuture};

/// The runtime entries a store holds, by target (`client:id:k`, `rule:/api/data@GET`),
/// each the rule as the rules file writes it; and their version: a number every change adds
/// one to (0 before the first).
///
/// # Example
///
/// ```
/// use tollgate::backend::StoredEntries;
///
/// let stored = StoredEntries::default();
/// assert_eq!((stored.entries.len(), stored.version), (0, 0));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct StoredEntries {
    /// Every entry, by target.
    pub entries: BTreeMap<String, Value>,
    /// Their version.
    pub version: u64,
}

impl StoredEntries {
    /// `entries` at `version`.
    pub fn new(entries: BTreeMap<String, Value>, version: u64) -> Self {
        Self { entries, version }
    }
}

/// One change to the runtime entries, as the limiter sends it to its store.
///
/// # Example
///
/// ```
/// use serde_json::json;
/// use tollgate::backend::EntryChange;
///
/// let rule = json!({"limit": "100/minute"});
/// let change = EntryChange { target: "client:id:k", rule: Some(&rule), known_version: 3, holding: true, max_entries: 10 };
/// assert!(change.rule.is_some(), "a removal has none");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct EntryChange<'a> {
    /// The entry's target.
    pub target: &'a str,
    /// The entry's rule; `None` removes the entry.
    pub rule: Option<&'a Value>,
    /// The version of the entries this instance holds. A store whose version is older (or
    /// that holds no entry at this version while `holding`) lost entries: it answers
    /// [`Kept::Behind`] and changes nothing, and the limiter writes its own entries back
    /// ([`RuntimeStore::restore`]) before trying again.
    pub known_version: u64,
    /// Whether this instance holds any entry.
    pub holding: bool,
    /// The most entries kept: a new entry past it is not added ([`Kept::Full`]).
    pub max_entries: usize,
}

/// What became of a change sent to a store.
///
/// # Example
///
/// ```
/// use tollgate::backend::Kept;
///
/// let kept = Kept::Made { existed: false, version: 1 };
/// assert_ne!(kept, Kept::Behind);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Made, bringing the entries to `version`; `existed`: an entry was stored under its
    /// target before.
    Made {
        /// Whether an entry was stored under the target before.
        existed: bool,
        /// The entries' version with the change.
        version: u64,
    },
    /// A removal of an entry not stored: nothing to do.
    Unchanged,
    /// The store lost entries this instance holds: nothing was written.
    Behind,
    /// A new entry over the most kept: nothing was written.
    Full,
}

/// What an instance heard about the runtime entries.
///
/// # Example
///
/// ```
/// use tollgate::backend::News;
///
/// let news = News::Changed { version: 2, target: "client:id:k".into(), rule: None };
/// assert_ne!(news, News::Reread);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum News {
    /// One entry changed, bringing the entries to `version`; `rule` (its JSON text) is
    /// `None` for a removal.
    Changed {
        /// The entries' version with the change.
        version: u64,
        /// The entry's target.
        target: String,
        /// The entry's rule, as JSON text; `None` for a removal.
        rule: Option<String>,
    },
    /// Anything may have changed (a subscription made again, messages lost, entries
    /// written back): every entry is read again.
    Reread,
}

/// The news a store heard about its runtime entries and the limiter has not applied yet,
/// in order. A store that hears of other instances' changes tells them here; the limiter
/// applies a change that follows its own version as it is, and reads every entry again for
/// anything else (and every
/// [`runtime_resync_interval`](crate::LimiterBuilder::runtime_resync_interval) in any
/// case).
///
/// # Example
///
/// ```
/// use tollgate::backend::{EntryNews, News};
///
/// let news = EntryNews::default();
/// news.tell(News::Reread);
/// assert_eq!(news.take(), [News::Reread]);
/// assert!(news.take().is_empty());
/// ```
#[derive(Debug, Default)]
pub struct EntryNews {
    queue: Mutex<VecDeque<News>>,
    arrived: Notify,
}

/// The most news held: a listener that falls further behind reads everything again.
const MAX_NEWS: usize = 4096;

impl EntryNews {
    /// Hands `news` to the limiter.
    pub fn tell(&self, news: News) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= MAX_NEWS {
            queue.clear();
            queue.push_back(News::Reread);
        }
        queue.push_back(news);
        drop(queue);
        self.arrived.notify_one();
    }

    /// Waits until news arrives (at once if some arrived since the last [`take`](Self::take)).
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// The news heard so far, oldest first.
    pub fn take(&self) -> Vec<News> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.drain(..).collect()
    }
}

/// Where a store keeps the runtime rule entries
/// ([`Limiter::set_client_override`](crate::Limiter::set_client_override),
/// [`Limiter::set_route`](crate::Limiter::set_route), ...), shared by every instance that
/// uses it: returned by [`Store::runtime`](super::Store::runtime).
///
/// Each change is made atomically with its version and, for a store that can, announced to
/// the other instances (which hear it in their [`EntryNews`]). A store that restarted empty
/// is told apart from one whose entries were all removed by the version: removing the last
/// entry leaves the version behind.
///
/// # Example
///
/// A store of one process's entries (as a shared store would, without the sharing):
///
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::Mutex;
/// use tollgate::backend::{EntryChange, Kept, RuntimeStore, StoreError, StoreFuture, StoredEntries};
///
/// #[derive(Default)]
/// struct Entries(Mutex<StoredEntries>);
///
/// impl RuntimeStore for Entries {
///     fn name(&self) -> &'static str {
///         "the map"
///     }
///
///     fn load(&self) -> StoreFuture<'_, Result<StoredEntries, StoreError>> {
///         let stored = self.0.lock().unwrap().clone();
///         Box::pin(async move { Ok(stored) })
///     }
///
///     fn change<'a>(&'a self, change: EntryChange<'a>) -> StoreFuture<'a, Result<Kept, StoreError>> {
///         let mut stored = self.0.lock().unwrap();
///         let existed = stored.entries.contains_key(change.target);
///         let kept = match change.rule {
///             None if !existed => Kept::Unchanged,
///             Some(_) if !existed && stored.entries.len() >= change.max_entries => Kept::Full,
///             rule => {
///                 match rule {
///                     Some(rule) => stored.entries.insert(change.target.into(), rule.clone()),
///                     None => stored.entries.remove(change.target),
///                 };
///                 stored.version += 1;
///                 Kept::Made { existed, version: stored.version }
///             }
///         };
///         Box::pin(async move { Ok(kept) })
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let entries = Entries::default();
/// let rule = serde_json::json!({"unlimited": true});
/// let change = EntryChange { target: "client:id:k", rule: Some(&rule), known_version: 0, holding: false, max_entries: 10 };
/// assert_eq!(entries.change(change).await, Ok(Kept::Made { existed: false, version: 1 }));
/// assert_eq!(entries.load().await.unwrap().entries.len(), 1);
/// # });
/// ```
pub trait RuntimeStore: Send + Sync + 'static {
    /// The store, as messages name it (`Redis`).
    fn name(&self) -> &'static str;

    /// Every entry stored, and their version.
    fn load(&self) -> StoreFuture<'_, Result<StoredEntries, StoreError>>;

    /// Makes `change`, unless the store is behind this instance or a new entry would be
    /// one too many.
    fn change<'a>(&'a self, change: EntryChange<'a>) -> StoreFuture<'a, Result<Kept, StoreError>>;

    /// Writes `entries`, of version `version`, back into a store that lost them, if it is
    /// still behind `version`, and tells every instance to read them again. Returns how many
    /// were written back (0: the store was not behind any more). The default writes
    /// nothing: a store that cannot lose its entries is never behind.
    fn restore<'a>(
        &'a self,
        entries: &'a BTreeMap<String, Value>,
        version: u64,
    ) -> StoreFuture<'a, Result<u64, StoreError>> {
        let _ = (entries, version);
        Box::pin(async { Ok(0) })
    }

    /// Where the store tells what it hears of other instances' changes; `None` for a store
    /// that hears nothing (its entries are then read again every
    /// [`runtime_resync_interval`](crate::LimiterBuilder::runtime_resync_interval)).
    fn news(&self) -> Option<Arc<EntryNews>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_that_falls_behind_reads_everything_again() {
        let newsroom = EntryNews::default();
        for version in 0..MAX_NEWS as u64 + 5 {
            newsroom.tell(News::Changed {
                version,
                target: "client:id:k".into(),
                rule: None,
            });
        }
        let news = newsroom.take();
        assert_eq!(news[0], News::Reread);
        assert_eq!(news.len(), 6);
        assert!(newsroom.take().is_empty());
    }
}
