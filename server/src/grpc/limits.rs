//! How much one `ShouldRateLimit` call may carry.
//!
//! Descriptor values come from the requests Envoy sees, so a client chooses them: without a
//! bound, values of a megabyte each are held as client keys, and a call of 100,000
//! descriptors holds a connection (and its thread) for most of a second. A call over any
//! bound is refused whole, before anything is decided or counted.

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;

/// The largest `ShouldRateLimit` call [`EnvoyRateLimit`](super::EnvoyRateLimit) answers. A
/// call over a bound fails with `INVALID_ARGUMENT` and a message naming the bound
/// ([`TooLarge`]); one at the bound is answered.
///
/// The defaults are far above what Envoy's rate limit actions build (a few descriptors of a
/// few short entries), and well under what makes a call costly.
///
/// ```
/// use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{rate_limit_descriptor::Entry, RateLimitDescriptor};
/// use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
/// use tollgate_server::grpc::{RequestLimits, TooLarge};
///
/// let limits = RequestLimits { max_entry_bytes: 32, ..RequestLimits::default() };
/// let call = |value: &str| RateLimitRequest {
///     domain: "edge".into(),
///     descriptors: vec![RateLimitDescriptor {
///         entries: vec![Entry { key: "user".into(), value: value.into() }],
///         ..Default::default()
///     }],
///     ..Default::default()
/// };
/// assert_eq!(limits.check(&call(&"a".repeat(28))), Ok(())); // 4 + 28 bytes
/// let refused = limits.check(&call(&"a".repeat(29))).unwrap_err();
/// assert!(matches!(refused, TooLarge::EntryBytes { bytes: 33, limit: 32, .. }));
/// assert!(refused.to_string().contains("over the limit of 32 bytes per entry"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Descriptors in one call.
    pub max_descriptors: usize,
    /// Entries in one descriptor.
    pub max_entries: usize,
    /// Bytes of one entry's key and value together.
    pub max_entry_bytes: usize,
    /// Bytes of one encoded request: tonic refuses a larger message (`OUT_OF_RANGE`) before
    /// decoding it, so a huge call costs no memory.
    pub max_message_bytes: usize,
}

impl RequestLimits {
    /// Default [`max_descriptors`](Self::max_descriptors).
    pub const DEFAULT_MAX_DESCRIPTORS: usize = 64;
    /// Default [`max_entries`](Self::max_entries).
    pub const DEFAULT_MAX_ENTRIES: usize = 16;
    /// Default [`max_entry_bytes`](Self::max_entry_bytes): room for a long URL path.
    pub const DEFAULT_MAX_ENTRY_BYTES: usize = 2048;
    /// Default [`max_message_bytes`](Self::max_message_bytes) (tonic's own is 4 MiB).
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

    /// Whether `request` is within every bound but the message size (which tonic checks).
    pub fn check(&self, request: &RateLimitRequest) -> Result<(), TooLarge> {
        let descriptors = request.descriptors.len();
        if descriptors > self.max_descriptors {
            return Err(TooLarge::Descriptors {
                count: descriptors,
                limit: self.max_descriptors,
            });
        }
        for (d, descriptor) in request.descriptors.iter().enumerate() {
            let entries = descriptor.entries.len();
            if entries > self.max_entries {
                return Err(TooLarge::Entries {
                    descriptor: d,
                    count: entries,
                    limit: self.max_entries,
                });
            }
            for (e, entry) in descriptor.entries.iter().enumerate() {
                let bytes = entry.key.len() + entry.value.len();
                if bytes > self.max_entry_bytes {
                    return Err(TooLarge::EntryBytes {
                        descriptor: d,
                        entry: e,
                        key: shortened(&entry.key),
                        bytes,
                        limit: self.max_entry_bytes,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_descriptors: Self::DEFAULT_MAX_DESCRIPTORS,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_entry_bytes: Self::DEFAULT_MAX_ENTRY_BYTES,
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// A `ShouldRateLimit` call over one of the [`RequestLimits`]; its message is the
/// `INVALID_ARGUMENT` status's. Descriptors and entries are numbered from 0, in the
/// call's order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TooLarge {
    /// Too many descriptors.
    #[error("the call has {count} descriptors, over the limit of {limit} descriptors per call")]
    Descriptors {
        /// Descriptors in the call.
        count: usize,
        /// [`RequestLimits::max_descriptors`].
        limit: usize,
    },
    /// A descriptor with too many entries.
    #[error(
        "descriptor {descriptor} has {count} entries, over the limit of {limit} entries per descriptor"
    )]
    Entries {
        /// Which descriptor.
        descriptor: usize,
        /// Entries in it.
        count: usize,
        /// [`RequestLimits::max_entries`].
        limit: usize,
    },
    /// An entry whose key and value are too long.
    #[error(
        "entry {entry} ({key:?}) of descriptor {descriptor} has {bytes} bytes of key and value, \
         over the limit of {limit} bytes per entry"
    )]
    EntryBytes {
        /// Which descriptor.
        descriptor: usize,
        /// Which of its entries.
        entry: usize,
        /// The entry's key, cut to its first 64 bytes.
        key: String,
        /// Bytes of its key and value.
        bytes: usize,
        /// [`RequestLimits::max_entry_bytes`].
        limit: usize,
    },
}

/// `key` cut to at most 64 bytes (on a character boundary), to quote it in a message.
fn shortened(key: &str) -> String {
    let mut end = key.len().min(64);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;

    use super::*;

    fn call(descriptors: usize, entries: usize) -> RateLimitRequest {
        let descriptor = RateLimitDescriptor {
            entries: vec![
                Entry {
                    key: "k".into(),
                    value: "v".into(),
                };
                entries
            ],
            ..RateLimitDescriptor::default()
        };
        RateLimitRequest {
            domain: "edge".into(),
            descriptors: vec![descriptor; descriptors],
            hits_addend: 0,
        }
    }

    #[test]
    fn each_bound_holds_at_its_value_and_refuses_one_past_it() {
        let limits = RequestLimits {
            max_descriptors: 3,
            max_entries: 2,
            ..RequestLimits::default()
        };
        assert_eq!(limits.check(&call(3, 2)), Ok(()));
        assert_eq!(
            limits.check(&call(4, 1)),
            Err(TooLarge::Descriptors { count: 4, limit: 3 })
        );
        assert_eq!(
            limits.check(&call(1, 3)),
            Err(TooLarge::Entries {
                descriptor: 0,
                count: 3,
                limit: 2
            })
        );
    }

    #[test]
    fn a_long_key_is_quoted_cut() {
        let mut request = call(2, 1);
        request.descriptors[1].entries[0].key = "é".repeat(1100);
        assert_eq!(
            RequestLimits::default().check(&request),
            Err(TooLarge::EntryBytes {
                descriptor: 1,
                entry: 0,
                key: "é".repeat(32),
                bytes: 2201,
                limit: 2048
            })
        );
    }
}
