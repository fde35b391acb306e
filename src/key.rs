//! Who a request counts against: the client key.
//!
//! In order: `X-Client-ID`; else the address the trusted proxies saw (from
//! `X-Forwarded-For`); else the connection's peer address; else one shared `unknown` key.
//! IPv6 addresses count by their network (/64 by default).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::{HeaderMap, HeaderName, Request};
use ipnet::IpNet;

use crate::error::BuildError;

/// Longest accepted `X-Client-ID`, in bytes (all of them visible ASCII).
pub const MAX_CLIENT_ID_LEN: usize = 128;

static X_CLIENT_ID: HeaderName = HeaderName::from_static("x-client-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

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
    /// [`ipv6_prefix_len`](crate::RateLimitLayerBuilder::ipv6_prefix_len)).
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

/// Hashes as its borrowed form does, so maps of keys can be searched with a [`KeyRef`].
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

impl KeyRef<'_> {
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
/// use tollgate::{RateLimitLayer, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let rules = Rules::from_json(r#"{"default": {"capacity": 5, "refill_rate": 1}}"#).unwrap();
/// let layer = RateLimitLayer::builder().rules(rules).build().await.unwrap();
/// let app = Router::new().route("/", get(|| async { "hi" })).layer(layer);
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

/// How client keys are taken from requests.
#[derive(Debug, Clone)]
pub(crate) struct KeySource {
    /// How many proxies in front of the app append to `X-Forwarded-For`; 0 ignores it.
    /// Used when `trusted_proxies` is empty.
    trusted_proxy_hops: usize,
    /// The proxies' addresses; when set, they replace the hop count.
    trusted_proxies: Vec<IpNet>,
    ipv6_prefix_len: u8,
}

impl KeySource {
    pub(crate) fn new(
        trusted_proxy_hops: usize,
        trusted_proxies: &[String],
        ipv6_prefix_len: u8,
    ) -> Result<Self, BuildError> {
        if !(1..=128).contains(&ipv6_prefix_len) {
            return Err(BuildError::Ipv6PrefixLen(ipv6_prefix_len));
        }
        let trusted_proxies = trusted_proxies
            .iter()
            .map(|value| {
                let text = value.trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| BuildError::TrustedProxy {
                        value: value.clone(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            trusted_proxy_hops,
            trusted_proxies,
            ipv6_prefix_len,
        })
    }

    pub(crate) fn client_key<'r, B>(
        &self,
        request: &'r Request<B>,
    ) -> Result<KeyRef<'r>, InvalidClientId> {
        let headers = request.headers();
        if let Some(id) = client_id(headers)? {
            return Ok(KeyRef::Id(id));
        }
        let peer = peer_ip(request);
        let ip = if self.trusted_proxies.is_empty() {
            forwarded_for(headers, self.trusted_proxy_hops).or(peer)
        } else {
            self.behind_trusted_proxies(headers, peer)
        };
        Ok(ip.map_or(KeyRef::Unknown, |ip| self.key_for(ip)))
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// A peer that is not a trusted proxy is the client, whatever it wrote in
    /// `X-Forwarded-For`. Otherwise the first untrusted address from the right is; if all
    /// are trusted, the farthest one.
    fn behind_trusted_proxies(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        if let Some(peer) = peer
            && !self.is_trusted(peer)
        {
            return Some(peer);
        }
        let mut farthest = peer;
        for ip in forwarded_from_right(headers) {
            if !self.is_trusted(ip) {
                return Some(ip);
            }
            farthest = Some(ip);
        }
        farthest
    }

    /// Whether a request can ever have `key`: IPv6 clients are keyed by their network of
    /// `ipv6_prefix_len` bits, so an override for another IPv6 prefix (or, below 128, for a
    /// single IPv6 address) never applies.
    pub(crate) fn can_produce(&self, key: &ClientKey) -> bool {
        match key {
            ClientKey::Ip(IpAddr::V6(_)) => self.ipv6_prefix_len == 128,
            ClientKey::Ipv6Network { prefix_len, .. } => *prefix_len == self.ipv6_prefix_len,
            _ => true,
        }
    }

    fn key_for(&self, ip: IpAddr) -> KeyRef<'static> {
        match ip {
            IpAddr::V6(v6) if self.ipv6_prefix_len < 128 => KeyRef::Ipv6Network {
                network: network_of(v6, self.ipv6_prefix_len),
                prefix_len: self.ipv6_prefix_len,
            },
            ip => KeyRef::Ip(ip),
        }
    }
}

fn client_id(headers: &HeaderMap) -> Result<Option<&str>, InvalidClientId> {
    let mut values = headers.get_all(&X_CLIENT_ID).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(InvalidClientId::Repeated);
    }
    let bytes = value.as_bytes();
    check_client_id(bytes)?;
    // Visible ASCII is valid UTF-8, so this never fails.
    Ok(std::str::from_utf8(bytes).ok())
}

/// An `X-Client-ID` must be 1 to [`MAX_CLIENT_ID_LEN`] visible ASCII characters.
fn check_client_id(bytes: &[u8]) -> Result<(), InvalidClientId> {
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
fn network_of(address: Ipv6Addr, prefix_len: u8) -> Ipv6Addr {
    let mask = u128::MAX << (128 - u32::from(prefix_len));
    Ipv6Addr::from(u128::from(address) & mask)
}

/// The `hops`-th valid address from the right. With fewer valid entries than trusted hops,
/// the header cannot be trusted and `None` is returned.
fn forwarded_for(headers: &HeaderMap, hops: usize) -> Option<IpAddr> {
    if hops == 0 {
        return None;
    }
    forwarded_from_right(headers).nth(hops - 1)
}

/// The addresses of all `X-Forwarded-For` values taken together, rightmost (nearest) first.
/// Entries that are not addresses are skipped.
fn forwarded_from_right(headers: &HeaderMap) -> impl Iterator<Item = IpAddr> + '_ {
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|value| value.as_bytes().rsplit(|b| *b == b','))
        .filter_map(parse_ip)
}

/// An IP address as proxies write it: bare, with a port, or bracketed IPv6 with or without
/// a port.
fn parse_ip(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    if text.len() > 64 {
        return None;
    }
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })?;
    Some(ip.to_canonical())
}

fn peer_ip<B>(request: &Request<B>) -> Option<IpAddr> {
    let extensions = request.extensions();
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(addr.ip().to_canonical());
    }
    extensions
        .get::<SocketAddr>()
        .map(|addr| addr.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn key(hops: usize, headers: &[(&str, &[u8])], peer: Option<&str>) -> Result<String, String> {
        key_with(&KeySource::new(hops, &[], 128).unwrap(), headers, peer)
    }

    fn key_with(
        source: &KeySource,
        headers: &[(&str, &[u8])],
        peer: Option<&str>,
    ) -> Result<String, String> {
        let mut request = Request::new(());
        for (name, value) in headers {
            let value = HeaderValue::from_bytes(value).expect("test header value");
            request
                .headers_mut()
                .append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
        }
        if let Some(peer) = peer {
            request
                .extensions_mut()
                .insert(peer.parse::<SocketAddr>().unwrap());
        }
        source
            .client_key(&request)
            .map(|k| k.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn overrides_only_for_keys_requests_can_have() {
        let by_64 = KeySource::new(1, &[], 64).unwrap();
        let by_address = KeySource::new(1, &[], 128).unwrap();
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
            assert_eq!(by_64.can_produce(&parse(key)), with_64, "{key} /64");
            assert_eq!(by_address.can_produce(&parse(key)), with_128, "{key} /128");
        }
        // And a request from that network does get the /64 key.
        let key = key_with(&by_64, &[], Some("[2001:db8::7]:443")).unwrap();
        assert_eq!(key, "ip:2001:db8::/64");
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

    #[test]
    fn client_id_comes_first_and_is_namespaced() {
        let k = key(
            1,
            &[("x-client-id", b"alice"), ("x-forwarded-for", b"1.2.3.4")],
            None,
        );
        assert_eq!(k.as_deref(), Ok("id:alice"));
        let k = key(1, &[("x-client-id", b"10.0.0.1")], None);
        assert_eq!(k.as_deref(), Ok("id:10.0.0.1"));
        let k = key(1, &[("x-forwarded-for", b"10.0.0.1")], None);
        assert_eq!(k.as_deref(), Ok("ip:10.0.0.1"));
    }

    #[test]
    fn client_id_limits() {
        let max = "a".repeat(MAX_CLIENT_ID_LEN);
        assert_eq!(
            key(1, &[("x-client-id", max.as_bytes())], None),
            Ok(format!("id:{max}"))
        );
        let printable: String = (0x21u8..=0x7e).map(char::from).collect();
        assert_eq!(
            key(1, &[("x-client-id", printable.as_bytes())], None),
            Ok(format!("id:{printable}"))
        );

        let too_long = "a".repeat(MAX_CLIENT_ID_LEN + 1);
        let err = key(1, &[("x-client-id", too_long.as_bytes())], None).unwrap_err();
        assert!(err.contains("129 bytes long"), "{err}");
        let huge = "a".repeat(16 * 1024);
        let err = key(1, &[("x-client-id", huge.as_bytes())], None).unwrap_err();
        assert!(err.contains("16384 bytes long"), "{err}");

        let err = key(1, &[("x-client-id", b"")], None).unwrap_err();
        assert!(err.contains("is empty"), "{err}");
        let err = key(1, &[("x-client-id", b"a b")], None).unwrap_err();
        assert!(err.contains("at position 1"), "{err}");
        let err = key(1, &[("x-client-id", b"a\tb")], None).unwrap_err();
        assert!(err.contains("at position 1"), "{err}");
        let err = key(1, &[("x-client-id", "caf\u{e9}".as_bytes())], None).unwrap_err();
        assert!(err.contains("at position 3"), "{err}");
        let err = key(1, &[("x-client-id", b"a"), ("x-client-id", b"b")], None).unwrap_err();
        assert!(err.contains("more than once"), "{err}");
    }

    #[test]
    fn forwarded_for_uses_the_entry_the_trusted_proxy_saw() {
        let xff: &[u8] = b"203.0.113.7, 198.51.100.2, 10.0.0.5";
        assert_eq!(
            key(1, &[("x-forwarded-for", xff)], None).as_deref(),
            Ok("ip:10.0.0.5")
        );
        assert_eq!(
            key(2, &[("x-forwarded-for", xff)], None).as_deref(),
            Ok("ip:198.51.100.2")
        );
        assert_eq!(
            key(3, &[("x-forwarded-for", xff)], None).as_deref(),
            Ok("ip:203.0.113.7")
        );
        // More hops than entries: the header cannot be trusted; the peer is used.
        assert_eq!(
            key(4, &[("x-forwarded-for", xff)], Some("192.0.2.1:5000")).as_deref(),
            Ok("ip:192.0.2.1")
        );
        // Zero hops: the header is ignored entirely.
        assert_eq!(
            key(0, &[("x-forwarded-for", xff)], Some("192.0.2.1:5000")).as_deref(),
            Ok("ip:192.0.2.1")
        );
    }

    #[test]
    fn several_forwarded_for_headers_read_as_one_list() {
        let headers: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b"203.0.113.7"),
            ("x-forwarded-for", b"198.51.100.2, 10.0.0.5"),
        ];
        assert_eq!(key(1, headers, None).as_deref(), Ok("ip:10.0.0.5"));
        assert_eq!(key(3, headers, None).as_deref(), Ok("ip:203.0.113.7"));
    }

    #[test]
    fn spoofed_entries_on_the_left_do_not_move_the_key() {
        // The proxy appends the address it saw; whatever the client prepends stays left of it.
        for spoof in [
            &b"1.1.1.1"[..],
            b"1.1.1.1, 2.2.2.2, 3.3.3.3",
            b"unknown, garbage, ::1",
            b",,,,,,",
            b"10.0.0.5, 10.0.0.5",
        ] {
            let mut xff = spoof.to_vec();
            xff.extend_from_slice(b", 198.51.100.9");
            assert_eq!(
                key(1, &[("x-forwarded-for", &xff)], None).as_deref(),
                Ok("ip:198.51.100.9"),
                "{}",
                String::from_utf8_lossy(spoof)
            );
        }
    }

    #[test]
    fn address_forms_and_garbage() {
        for (xff, expected) in [
            (&b"198.51.100.9:4711"[..], "ip:198.51.100.9"),
            (b"[2001:db8::1]:443", "ip:2001:db8::1"),
            (b"[2001:db8::1]", "ip:2001:db8::1"),
            (b"2001:db8::1", "ip:2001:db8::1"),
            (b"::ffff:198.51.100.9", "ip:198.51.100.9"),
            (b"  198.51.100.9  ", "ip:198.51.100.9"),
            (b"198.51.100.9, not-an-ip", "ip:198.51.100.9"),
            (b"198.51.100.9, \xff\xfe", "ip:198.51.100.9"),
        ] {
            assert_eq!(
                key(1, &[("x-forwarded-for", xff)], None).as_deref(),
                Ok(expected),
                "{}",
                String::from_utf8_lossy(xff)
            );
        }
        for garbage in [
            &b""[..],
            b",",
            b"unknown",
            b"\xff",
            b"999.1.1.1",
            b"1.2.3.4.5",
        ] {
            assert_eq!(
                key(1, &[("x-forwarded-for", garbage)], None).as_deref(),
                Ok("unknown"),
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
        let commas = ",".repeat(16 * 1024);
        assert_eq!(
            key(1, &[("x-forwarded-for", commas.as_bytes())], None).as_deref(),
            Ok("unknown")
        );
    }

    #[test]
    fn peer_address_then_unknown() {
        assert_eq!(
            key(1, &[], Some("[::ffff:192.0.2.1]:80")).as_deref(),
            Ok("ip:192.0.2.1")
        );
        assert_eq!(key(1, &[], None).as_deref(), Ok("unknown"));
    }

    fn cidr_source() -> KeySource {
        let proxies = ["10.0.0.0/8".to_owned(), "2001:db8:ffff::1".to_owned()];
        KeySource::new(1, &proxies, 64).unwrap()
    }

    #[test]
    fn trusted_proxy_cidrs() {
        let source = cidr_source();
        let k = |xff: &[u8], peer| key_with(&source, &[("x-forwarded-for", xff)], Some(peer));
        // Through two of our proxies: the first untrusted address from the right.
        assert_eq!(
            k(b"203.0.113.7, 10.1.1.1", "10.2.2.2:80").as_deref(),
            Ok("ip:203.0.113.7")
        );
        assert_eq!(
            k(b"203.0.113.7, [2001:db8:ffff::1]:9", "10.2.2.2:80").as_deref(),
            Ok("ip:203.0.113.7")
        );
        // Not through our proxies: the peer is the client, whatever it wrote.
        assert_eq!(
            k(b"203.0.113.7", "198.51.100.4:80").as_deref(),
            Ok("ip:198.51.100.4")
        );
        // Only trusted addresses: the farthest one.
        assert_eq!(
            k(b"10.9.9.9, 10.1.1.1", "10.2.2.2:80").as_deref(),
            Ok("ip:10.9.9.9")
        );
        assert_eq!(k(b"", "10.2.2.2:80").as_deref(), Ok("ip:10.2.2.2"));
        // No peer known (not served with ConnectInfo): the header alone.
        assert_eq!(
            key_with(
                &source,
                &[("x-forwarded-for", b"203.0.113.7, 10.1.1.1")],
                None
            )
            .as_deref(),
            Ok("ip:203.0.113.7")
        );
    }

    #[test]
    fn bad_key_options_fail_the_build() {
        let err = KeySource::new(1, &["10.0.0.0/33".to_owned()], 64).unwrap_err();
        assert!(err.to_string().contains("\"10.0.0.0/33\""), "{err}");
        assert!(KeySource::new(1, &["proxy.local".to_owned()], 64).is_err());
        assert!(matches!(
            KeySource::new(1, &[], 0),
            Err(BuildError::Ipv6PrefixLen(0))
        ));
        assert!(matches!(
            KeySource::new(1, &[], 129),
            Err(BuildError::Ipv6PrefixLen(129))
        ));
    }

    #[test]
    fn ipv6_clients_count_by_network() {
        let k = |prefix: u8, addr: &[u8]| {
            key_with(
                &KeySource::new(1, &[], prefix).unwrap(),
                &[("x-forwarded-for", addr)],
                None,
            )
        };
        for host in [
            &b"2001:db8:1:2::1"[..],
            b"2001:db8:1:2:ffff:ffff:ffff:ffff",
            b"[2001:db8:1:2:abcd::9]:443",
        ] {
            assert_eq!(k(64, host).as_deref(), Ok("ip:2001:db8:1:2::/64"));
        }
        assert_eq!(
            k(64, b"2001:db8:1:3::1").as_deref(),
            Ok("ip:2001:db8:1:3::/64")
        );
        assert_eq!(
            k(48, b"2001:db8:1:3::1").as_deref(),
            Ok("ip:2001:db8:1::/48")
        );
        assert_eq!(
            k(128, b"2001:db8:1:3::1").as_deref(),
            Ok("ip:2001:db8:1:3::1")
        );
        // IPv4 (and IPv4-mapped IPv6) are not affected.
        assert_eq!(
            k(64, b"::ffff:198.51.100.9").as_deref(),
            Ok("ip:198.51.100.9")
        );
    }

    /// What a client may send, around its victim's address.
    const SPOOFS: [&str; 6] = [
        "{victim}",
        "{victim}, {victim}, {victim}",
        "garbage, {victim}",
        "{victim}, unknown",
        "{victim},{victim} , ,",
        "[{victim}]:1",
    ];

    /// In every mode, what the proxies append decides the key; what the client wrote does not.
    #[test]
    fn clients_cannot_pick_another_clients_bucket() {
        let victim = "198.51.100.200";
        let real = "203.0.113.50";
        let modes: Vec<(&str, KeySource, &str, Vec<&str>)> = vec![
            // One proxy appends the client's address.
            (
                "1 hop",
                KeySource::new(1, &[], 64).unwrap(),
                "10.0.0.1:80",
                vec![real],
            ),
            // Two proxies: the outer appends the client, the inner appends the outer.
            (
                "2 hops",
                KeySource::new(2, &[], 64).unwrap(),
                "10.0.0.2:80",
                vec![real, "10.0.0.1"],
            ),
            (
                "cidrs",
                cidr_source(),
                "10.0.0.2:80",
                vec![real, "10.0.0.1"],
            ),
        ];
        for (mode, source, proxy, appended) in &modes {
            for spoof in SPOOFS {
                let sent = spoof.replace("{victim}", victim);
                // As one header, and as the client's own header line plus the proxies' line.
                let joined = format!("{sent}, {}", appended.join(", "));
                let one = key_with(
                    source,
                    &[("x-forwarded-for", joined.as_bytes())],
                    Some(proxy),
                );
                let proxies_line = appended.join(", ");
                let two = key_with(
                    source,
                    &[
                        ("x-forwarded-for", sent.as_bytes()),
                        ("x-forwarded-for", proxies_line.as_bytes()),
                    ],
                    Some(proxy),
                );
                assert_eq!(
                    one.as_deref(),
                    Ok(format!("ip:{real}").as_str()),
                    "{mode}: {sent}"
                );
                assert_eq!(two, one, "{mode}: {sent}");
            }
        }
        // Reaching the app directly: with CIDRs the forged header is ignored.
        for spoof in SPOOFS {
            let sent = spoof.replace("{victim}", victim);
            let direct = key_with(
                &cidr_source(),
                &[("x-forwarded-for", sent.as_bytes())],
                Some(&format!("{real}:5")),
            );
            assert_eq!(
                direct.as_deref(),
                Ok(format!("ip:{real}").as_str()),
                "direct: {sent}"
            );
        }
    }

    #[cfg(feature = "axum")]
    #[test]
    fn peer_address_from_axum_connect_info() {
        let mut request = Request::new(());
        let addr: SocketAddr = "192.0.2.8:1234".parse().unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        let k = KeySource::new(1, &[], 64)
            .unwrap()
            .client_key(&request)
            .unwrap();
        assert_eq!(k.to_string(), "ip:192.0.2.8");
    }
}
