//! Who a request counts against: the client key (`id:<id>`, `ip:<address>`, an IPv6
//! network, or `unknown`). How the HTTP layer finds it in a request is in
//! `http::identity`.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr};

/// Longest accepted `X-Client-ID` (and client ID in a key), in bytes, all of them visible
/// ASCII.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// The identity a request is counted against. Keys are namespaced by where they came from,
/// so `X-Client-ID: 10.0.0.1` and the address 10.0.0.1 are different clients.
///
/// # Example
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// use tollgate::ClientKey;
///
/// let by_id = ClientKey::Id("10.0.0.1".into());
/// let by_ip = ClientKey::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
/// assert_ne!(by_id, by_ip);
/// assert_eq!(by_id.to_string(), "id:10.0.0.1");
/// assert_eq!(by_ip.to_string(), "ip:10.0.0.1");
/// assert_eq!(ClientKey::Unknown.to_string(), "unknown");
/// let subnet = ClientKey::Ipv6Network { network: "2001:db8:1:2::".parse().unwrap(), prefix_len: 64 };
/// assert_eq!(subnet.to_string(), "ip:2001:db8:1:2::/64");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKey {
    /// From `X-Client-ID`, as sent.
    Id(Box<str>),
    /// An IPv4 address (IPv4-mapped IPv6 addresses included), or an IPv6 address when
    /// IPv6 clients are keyed by whole address.
    Ip(IpAddr),
    /// The network an IPv6 address belongs to (see
    /// [`ipv6_prefix_len`](crate::LimiterBuilder::ipv6_prefix_len)).
    Ipv6Network {
        /// The address with the bits past `prefix_len` cleared.
        network: Ipv6Addr,
        /// How many leading bits count.
        prefix_len: u8,
    },
    /// Nothing identified the client; all such requests share one bucket.
    Unknown,
}

impl ClientKey {
    /// The key of a client that names itself (`X-Client-ID`, or a key your code gives):
    /// `id:<id>`.
    ///
    /// ```
    /// use tollgate::ClientKey;
    ///
    /// assert_eq!(ClientKey::id("user:123").to_string(), "id:user:123");
    /// ```
    pub fn id(id: impl Into<Box<str>>) -> Self {
        ClientKey::Id(id.into())
    }

    /// The key of `id` as an `X-Client-ID` would name it (`id:<id>`), checked as the layer
    /// checks the header: 1 to [`MAX_CLIENT_ID_LEN`] visible ASCII characters. For a front
    /// that takes client IDs from its callers, so that they count as the layer counts them.
    ///
    /// ```
    /// use tollgate::{ClientKey, InvalidClientId};
    ///
    /// assert_eq!(ClientKey::try_id("user:123"), Ok(ClientKey::id("user:123")));
    /// assert_eq!(ClientKey::try_id(""), Err(InvalidClientId::Empty));
    /// assert!(matches!(ClientKey::try_id("a b"), Err(InvalidClientId::NotVisibleAscii { position: 1 })));
    /// ```
    pub fn try_id(id: &str) -> Result<Self, InvalidClientId> {
        check_client_id(id.as_bytes())?;
        Ok(ClientKey::id(id))
    }

    /// The form [`Display`](fmt::Display) writes, as in the rules file's `clients`:
    /// `id:<X-Client-ID>`, `ip:<address>`, `ip:<IPv6 network>/<prefix>` or `unknown`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        if text == "unknown" {
            return Some(ClientKey::Unknown);
        }
        if let Some(id) = text.strip_prefix("id:") {
            return check_client_id(id.as_bytes())
                .is_ok()
                .then(|| ClientKey::Id(id.into()));
        }
        let ip = text.strip_prefix("ip:")?;
        if let Some((network, bits)) = ip.split_once('/') {
            let prefix_len: u8 = bits.parse().ok().filter(|b| (1..128).contains(b))?;
            return Some(ClientKey::Ipv6Network {
                network: network_of(network.parse().ok()?, prefix_len),
                prefix_len,
            });
        }
        ip.parse::<IpAddr>()
            .ok()
            .map(|ip| ClientKey::Ip(ip.to_canonical()))
    }

    /// Whether a request can have this key when IPv6 clients are keyed by their network of
    /// `ipv6_prefix_len` bits: a key for another IPv6 prefix (or, below 128, for a single
    /// IPv6 address) never occurs.
    pub(crate) fn can_occur_with(&self, ipv6_prefix_len: u8) -> bool {
        match self {
            ClientKey::Ip(IpAddr::V6(_)) => ipv6_prefix_len == 128,
            ClientKey::Ipv6Network { prefix_len, .. } => *prefix_len == ipv6_prefix_len,
            _ => true,
        }
    }

    /// This key, borrowed.
    pub(crate) fn as_ref(&self) -> KeyRef<'_> {
        match self {
            ClientKey::Id(id) => KeyRef::Id(id),
            ClientKey::Ip(ip) => KeyRef::Ip(*ip),
            ClientKey::Ipv6Network {
                network,
                prefix_len,
            } => KeyRef::Ipv6Network {
                network: *network,
                prefix_len: *prefix_len,
            },
            ClientKey::Unknown => KeyRef::Unknown,
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

/// Hashes as its borrowed form does, so maps of keys can be searched with a borrowed `KeyRef`.
impl Hash for ClientKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl hashbrown::Equivalent<ClientKey> for KeyRef<'_> {
    fn equivalent(&self, key: &ClientKey) -> bool {
        key.as_ref() == *self
    }
}

/// A [`ClientKey`] that borrows the request's `X-Client-ID`: what the request path works
/// with, so that a known client costs no allocation. It is made owned only to be kept (a new
/// bucket, a Redis call in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum KeyRef<'a> {
    Id(&'a str),
    Ip(IpAddr),
    Ipv6Network { network: Ipv6Addr, prefix_len: u8 },
    Unknown,
}

impl<'a> KeyRef<'a> {
    /// The key, when it is no secret and owning it allocates nothing: an address or a
    /// network (an ID may be an API key; `unknown` names nobody).
    pub(crate) fn public_key(self) -> Option<ClientKey> {
        match self {
            KeyRef::Ip(_) | KeyRef::Ipv6Network { .. } => Some(self.to_owned()),
            KeyRef::Id(_) | KeyRef::Unknown => None,
        }
    }

    /// The key as every front keys it, IPv6 clients by their network of `ipv6_prefix_len`
    /// bits (below 128): an IPv4-mapped IPv6 address is its IPv4 address, an IPv6 address
    /// its network, and a network has the bits past its prefix cleared. IDs and `unknown`
    /// are as they are.
    pub(crate) fn normalized(self, ipv6_prefix_len: u8) -> KeyRef<'a> {
        match self {
            KeyRef::Ip(ip) => match ip.to_canonical() {
                IpAddr::V6(v6) if (1..128).contains(&ipv6_prefix_len) => KeyRef::Ipv6Network {
                    network: network_of(v6, ipv6_prefix_len),
                    prefix_len: ipv6_prefix_len,
                },
                ip => KeyRef::Ip(ip),
            },
            KeyRef::Ipv6Network {
                network,
                prefix_len,
            } if (1..128).contains(&prefix_len) => KeyRef::Ipv6Network {
                network: network_of(network, prefix_len),
                prefix_len,
            },
            other => other,
        }
    }

    pub(crate) fn to_owned(self) -> ClientKey {
        match self {
            KeyRef::Id(id) => ClientKey::Id(id.into()),
            KeyRef::Ip(ip) => ClientKey::Ip(ip),
            KeyRef::Ipv6Network {
                network,
                prefix_len,
            } => ClientKey::Ipv6Network {
                network,
                prefix_len,
            },
            KeyRef::Unknown => ClientKey::Unknown,
        }
    }
}

impl fmt::Display for KeyRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::Id(id) => write!(f, "id:{id}"),
            KeyRef::Ip(ip) => write!(f, "ip:{ip}"),
            KeyRef::Ipv6Network {
                network,
                prefix_len,
            } => write!(f, "ip:{network}/{prefix_len}"),
            KeyRef::Unknown => f.write_str("unknown"),
        }
    }
}

impl std::str::FromStr for ClientKey {
    type Err = InvalidClientKey;

    /// Parses the form [`Display`](fmt::Display) writes: `id:<X-Client-ID>`, `ip:<address>`,
    /// `ip:<IPv6 network>/<prefix>` or `unknown` (as in the rules file's `clients`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ClientKey::parse(text).ok_or_else(|| InvalidClientKey::of(text))
    }
}

/// Text that is not a client key (see [`ClientKey`]'s `FromStr`).
///
/// # Example
///
/// ```
/// use tollgate::ClientKey;
///
/// assert_eq!("id:alice".parse::<ClientKey>(), Ok(ClientKey::Id("alice".into())));
/// assert_eq!("ip:2001:db8::1/64".parse::<ClientKey>().unwrap().to_string(), "ip:2001:db8::/64");
/// assert!("alice".parse::<ClientKey>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a client key: use \"id:<X-Client-ID>\", \"ip:<address>\", \"ip:<IPv6 network>/<prefix>\" or \"unknown\""
)]
pub struct InvalidClientKey(Box<str>);

impl InvalidClientKey {
    pub(crate) fn of(text: &str) -> Self {
        InvalidClientKey(text.into())
    }
}

/// Why an `X-Client-ID` header was refused (the request gets a 400).
///
/// # Example
///
/// ```
/// use axum::{body::Body, http::{Request, StatusCode}, routing::get, Router};
/// use tower::ServiceExt;
/// use tollgate::{Limiter, RateLimitLayer, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let rules = Rules::from_json(r#"{"default": {"capacity": 5, "refill_rate": 1}}"#).unwrap();
/// let limiter = Limiter::builder().rules(rules).build().await.unwrap();
/// let app = Router::new().route("/", get(|| async { "hi" })).layer(RateLimitLayer::new(limiter));
///
/// let request = Request::get("/").header("x-client-id", "has space").body(Body::empty()).unwrap();
/// let response = app.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::BAD_REQUEST);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidClientId {
    /// The header is present but empty.
    #[error("X-Client-ID is empty; it must be 1 to {MAX_CLIENT_ID_LEN} visible ASCII characters")]
    Empty,
    /// Longer than [`MAX_CLIENT_ID_LEN`].
    #[error(
        "X-Client-ID is {len} bytes long; it must be 1 to {MAX_CLIENT_ID_LEN} visible ASCII characters"
    )]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A space, control character or non-ASCII byte.
    #[error(
        "X-Client-ID has a byte that is not visible ASCII (space, control or non-ASCII) at position {position}; it must be 1 to {MAX_CLIENT_ID_LEN} visible ASCII characters"
    )]
    NotVisibleAscii {
        /// 0-based byte offset of the first bad byte.
        position: usize,
    },
    /// The header appears more than once, so which one counts would be ambiguous.
    #[error("X-Client-ID was sent more than once; send it once")]
    Repeated,
}

/// An `X-Client-ID` must be 1 to [`MAX_CLIENT_ID_LEN`] visible ASCII characters.
pub(crate) fn check_client_id(bytes: &[u8]) -> Result<(), InvalidClientId> {
    if bytes.is_empty() {
        return Err(InvalidClientId::Empty);
    }
    if bytes.len() > MAX_CLIENT_ID_LEN {
        return Err(InvalidClientId::TooLong { len: bytes.len() });
    }
    match bytes.iter().position(|b| !b.is_ascii_graphic()) {
        Some(position) => Err(InvalidClientId::NotVisibleAscii { position }),
        None => Ok(()),
    }
}

/// The network of `address` with `prefix_len` (below 128) leading bits.
pub(crate) fn network_of(address: Ipv6Addr, prefix_len: u8) -> Ipv6Addr {
    let mask = u128::MAX << (128 - u32::from(prefix_len));
    Ipv6Addr::from(u128::from(address) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_only_for_keys_requests_can_have() {
        let parse = |text: &str| text.parse::<ClientKey>().unwrap();
        for (key, with_64, with_128) in [
            ("ip:2001:db8::/64", true, false),
            ("ip:2001:db8::/48", false, false),
            ("ip:2001:db8::1", false, true),
            ("ip:10.0.0.1", true, true),
            ("ip:::ffff:10.0.0.1", true, true),
            ("id:alice", true, true),
            ("unknown", true, true),
        ] {
            assert_eq!(parse(key).can_occur_with(64), with_64, "{key} /64");
            assert_eq!(parse(key).can_occur_with(128), with_128, "{key} /128");
        }
    }

    #[test]
    fn keys_are_normalized_as_every_front_keys_them() {
        let normalized = |key: &str, bits: u8| {
            let key: ClientKey = key.parse().unwrap();
            key.as_ref().normalized(bits).to_string()
        };
        assert_eq!(normalized("ip:2001:db8:1:2::9", 64), "ip:2001:db8:1:2::/64");
        assert_eq!(normalized("ip:2001:db8:1:2::9", 128), "ip:2001:db8:1:2::9");
        assert_eq!(normalized("ip:10.0.0.1", 64), "ip:10.0.0.1");
        assert_eq!(normalized("id:a", 64), "id:a");
        let mapped = ClientKey::Ip("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(mapped.as_ref().normalized(64).to_string(), "ip:10.0.0.1");
        let unmasked = ClientKey::Ipv6Network {
            network: "2001:db8::1".parse().unwrap(),
            prefix_len: 48,
        };
        assert_eq!(
            unmasked.as_ref().normalized(64).to_string(),
            "ip:2001:db8::/48"
        );
        let nothing = ClientKey::Ipv6Network {
            network: "2001:db8::1".parse().unwrap(),
            prefix_len: 0,
        };
        assert_eq!(
            nothing.as_ref().normalized(64),
            nothing.as_ref(),
            "left alone"
        );
    }

    #[test]
    fn borrowed_keys_round_trip_and_print_alike() {
        let keys = [
            ClientKey::Id("alice".into()),
            ClientKey::Ip("10.0.0.1".parse().unwrap()),
            ClientKey::Ipv6Network {
                network: "2001:db8::".parse().unwrap(),
                prefix_len: 64,
            },
            ClientKey::Unknown,
        ];
        for key in keys {
            assert_eq!(key.as_ref().to_owned(), key);
            assert_eq!(key.as_ref().to_string(), key.to_string());
        }
    }
}
