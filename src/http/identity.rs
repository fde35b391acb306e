//! Who the client of an HTTP request is: its [`ClientKey`](crate::ClientKey).
//!
//! A peer that is not a trusted proxy is keyed by its own address, whatever it sends. From
//! a trusted proxy (loopback and the private ranges unless the layer is told otherwise), in
//! order: `X-Client-ID`; else the address the proxies saw (from `X-Forwarded-For`); else the
//! peer address; else one shared `unknown` key. IPv6 addresses count by their network (/64
//! by default).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, HeaderName, Request};
use ipnet::IpNet;

use crate::key::{InvalidClientId, KeyRef, check_client_id};

/// An entry of [`trusted_proxies`](crate::RateLimitLayerBuilder::trusted_proxies) that
/// cannot be used: the layer is not built.
///
/// # Example
///
/// ```
/// use tollgate::{InvalidTrustedProxy, Limiter, RateLimitLayer, Rules};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = Limiter::builder()
///     .rules(Rules::from_json(r#"{"default": {"limit": "5/second"}}"#)?)
///     .build()
///     .await?;
/// let err = RateLimitLayer::builder(limiter.clone())
///     .trusted_proxies(["10.0.0.0/33"])
///     .build()
///     .unwrap_err();
/// assert!(matches!(err, InvalidTrustedProxy::NotAnAddress { .. }));
/// let err = RateLimitLayer::builder(limiter).trusted_proxies(["0.0.0.0/0"]).build().unwrap_err();
/// assert!(err.to_string().contains("trust_any_peer()"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTrustedProxy {
    /// The entry is neither a CIDR nor an IP address.
    #[error("trusted proxy {value:?} is not a CIDR like \"10.0.0.0/8\" or an IP address")]
    NotAnAddress {
        /// The entry as given.
        value: String,
    },
    /// The entry covers every address (`0.0.0.0/0`, `::/0`, `*`): the right-to-left walk
    /// over `X-Forwarded-For` would then end at whatever the client wrote.
    #[error(
        "trusted proxy {value:?} covers every address, so X-Forwarded-For would be read up to what the client wrote in it; list only your proxies' addresses, or call `trust_any_peer()` to trust every peer and read X-Forwarded-For by hop count"
    )]
    EveryAddress {
        /// The entry as given.
        value: String,
    },
}

static X_CLIENT_ID: HeaderName = HeaderName::from_static("x-client-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Which TCP peers may say who the client is, as the builder was told.
#[derive(Debug, Clone, Default)]
pub(crate) enum Trust {
    /// Loopback and the private ranges; `X-Forwarded-For` is read by hop count.
    #[default]
    PrivateNetworks,
    /// These proxies, as CIDRs or addresses (checked when the layer is built);
    /// `X-Forwarded-For` is walked from the right over their addresses.
    Proxies(Vec<String>),
    /// Every peer; `X-Forwarded-For` is read by hop count.
    AnyPeer,
}

/// [`Trust`], checked.
#[derive(Debug)]
enum TrustedPeers {
    PrivateNetworks,
    Proxies(Vec<IpNet>),
    Any,
}

impl TrustedPeers {
    fn contains(&self, ip: IpAddr) -> bool {
        match self {
            TrustedPeers::PrivateNetworks => match ip {
                IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
                IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local(),
            },
            TrustedPeers::Proxies(nets) => nets.iter().any(|net| net.contains(&ip)),
            TrustedPeers::Any => true,
        }
    }
}

/// How client keys are taken from requests.
#[derive(Debug)]
pub(crate) struct KeySource {
    /// The peers whose `X-Client-ID` and `X-Forwarded-For` count.
    peers: TrustedPeers,
    /// How many proxies in front of the app append to `X-Forwarded-For`; 0 ignores it.
    /// Not used with [`TrustedPeers::Proxies`], whose addresses say where the proxies end.
    trusted_proxy_hops: usize,
    ipv6_prefix_len: u8,
    /// Whether a request without a peer address has been logged, so that it is logged once.
    warned_no_peer: AtomicBool,
}

impl Trust {
    /// The peers this trusts, checked: an entry of `trusted_proxies` that is not a CIDR or
    /// an address, or that covers every address, is an error.
    fn peers(&self) -> Result<TrustedPeers, InvalidTrustedProxy> {
        Ok(match self {
            Trust::PrivateNetworks => TrustedPeers::PrivateNetworks,
            Trust::Proxies(proxies) => TrustedPeers::Proxies(
                proxies
                    .iter()
                    .map(|p| parse_proxy(p))
                    .collect::<Result<_, _>>()?,
            ),
            Trust::AnyPeer => {
                tracing::warn!(
                    "rate limit layer built with trust_any_peer(): every client can choose its own \
                     rate limit key by sending X-Client-ID or X-Forwarded-For; this is safe only \
                     if nothing but your own proxies can connect to this app"
                );
                TrustedPeers::Any
            }
        })
    }
}

impl KeySource {
    /// Keys requests trusting `trust`'s peers, reading `X-Forwarded-For` `trusted_proxy_hops`
    /// deep, and IPv6 clients by their network of `ipv6_prefix_len` bits (1 to 128, as the
    /// limiter checked).
    pub(crate) fn new(
        trust: &Trust,
        trusted_proxy_hops: usize,
        ipv6_prefix_len: u8,
    ) -> Result<Self, InvalidTrustedProxy> {
        Ok(Self::trusting(
            trust.peers()?,
            trusted_proxy_hops,
            ipv6_prefix_len,
        ))
    }

    /// The default: loopback and private networks, one hop.
    pub(crate) fn private_networks(ipv6_prefix_len: u8) -> Self {
        Self::trusting(TrustedPeers::PrivateNetworks, 1, ipv6_prefix_len)
    }

    fn trusting(peers: TrustedPeers, trusted_proxy_hops: usize, ipv6_prefix_len: u8) -> Self {
        Self {
            peers,
            trusted_proxy_hops,
            ipv6_prefix_len,
            warned_no_peer: AtomicBool::new(false),
        }
    }

    pub(crate) fn client_key<'r, B>(
        &self,
        request: &'r Request<B>,
    ) -> Result<KeyRef<'r>, InvalidClientId> {
        let peer = peer_ip(request);
        match peer {
            // A client that is not one of the trusted proxies is who it connects as,
            // whatever it writes; its headers are not even read.
            Some(peer) if !self.peers.contains(peer) => return Ok(self.key_for(peer)),
            Some(_) => {}
            None => self.warn_no_peer(),
        }
        let headers = request.headers();
        if let Some(id) = client_id(headers)? {
            return Ok(KeyRef::Id(id));
        }
        let forwarded = match &self.peers {
            TrustedPeers::Proxies(_) => self.behind_trusted_proxies(headers),
            _ => forwarded_for(headers, self.trusted_proxy_hops),
        };
        Ok(forwarded
            .or(peer)
            .map_or(KeyRef::Unknown, |ip| self.key_for(ip)))
    }

    /// Without the peer's address there is nothing to check the headers against: they are
    /// honoured, as from a trusted proxy, and the first such request is logged.
    fn warn_no_peer(&self) {
        if matches!(self.peers, TrustedPeers::Any) || self.warned_no_peer.load(Ordering::Relaxed) {
            return;
        }
        if !self.warned_no_peer.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the rate limit layer cannot see the peer address of a request, so it cannot \
                 tell whether X-Client-ID and X-Forwarded-For come from a trusted proxy, and \
                 honours them from every client; serve the app with \
                 into_make_service_with_connect_info::<SocketAddr>() (or put a SocketAddr in \
                 the request's extensions)"
            );
        }
    }

    /// The first address from the right that is not a trusted proxy's; if all are, the
    /// farthest one. An entry that is not an address ends the walk with nothing: it was
    /// written by a trusted proxy, so nothing to its left can be placed.
    fn behind_trusted_proxies(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut farthest = None;
        for entry in forwarded_from_right(headers) {
            let ip = entry?;
            if !self.peers.contains(ip) {
                return Some(ip);
            }
            farthest = Some(ip);
        }
        farthest
    }

    fn key_for(&self, ip: IpAddr) -> KeyRef<'static> {
        KeyRef::Ip(ip).normalized(self.ipv6_prefix_len)
    }
}

/// One `trusted_proxies` entry: a CIDR or a single address.
fn parse_proxy(value: &str) -> Result<IpNet, InvalidTrustedProxy> {
    let text = value.trim();
    let net = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
    match net {
        // Trusting every address would make the walk end at whatever the client wrote.
        Ok(net) if net.prefix_len() == 0 => Err(InvalidTrustedProxy::EveryAddress {
            value: value.to_owned(),
        }),
        Ok(net) => Ok(net.trunc()),
        Err(_) if text == "*" => Err(InvalidTrustedProxy::EveryAddress {
            value: value.to_owned(),
        }),
        Err(_) => Err(InvalidTrustedProxy::NotAnAddress {
            value: value.to_owned(),
        }),
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

/// The `hops`-th entry from the right, when it is an address. Every entry counts: as with
/// nginx's realip module, an entry that is not an address is never skipped over. With fewer
/// entries than trusted hops, or something else at that position (`unknown`, an obfuscated
/// name, an empty entry), the header is not used.
fn forwarded_for(headers: &HeaderMap, hops: usize) -> Option<IpAddr> {
    forwarded_from_right(headers)
        .nth(hops.checked_sub(1)?)
        .flatten()
}

/// Every entry of all `X-Forwarded-For` values taken together, rightmost (nearest) first:
/// its address, or `None` for an entry that is not one. Empty entries count too (`a, , b`
/// is three entries), so that whatever a proxy wrote keeps its position.
fn forwarded_from_right(headers: &HeaderMap) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|value| value.as_bytes().rsplit(|b| *b == b','))
        .map(parse_ip)
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
    use crate::key::MAX_CLIENT_ID_LEN;
    use http::HeaderValue;

    /// A key source with the default trusted peers, reading this many hops.
    fn hops(hops: usize, ipv6_prefix_len: u8) -> KeySource {
        KeySource::new(&Trust::PrivateNetworks, hops, ipv6_prefix_len).unwrap()
    }

    fn key(hops: usize, headers: &[(&str, &[u8])], peer: Option<&str>) -> Result<String, String> {
        key_with(&self::hops(hops, 128), headers, peer)
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
        // More hops than entries: the header cannot be trusted; the peer (a trusted proxy)
        // is used.
        assert_eq!(
            key(4, &[("x-forwarded-for", xff)], Some("10.9.9.9:5000")).as_deref(),
            Ok("ip:10.9.9.9")
        );
        // Zero hops: the header is ignored entirely.
        assert_eq!(
            key(0, &[("x-forwarded-for", xff)], Some("10.9.9.9:5000")).as_deref(),
            Ok("ip:10.9.9.9")
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
            (b"[::ffff:198.51.100.9]:80", "ip:198.51.100.9"),
            (b"  198.51.100.9  ", "ip:198.51.100.9"),
            (b"not-an-ip, 198.51.100.9", "ip:198.51.100.9"),
        ] {
            assert_eq!(
                key(1, &[("x-forwarded-for", xff)], Some("10.0.0.1:80")).as_deref(),
                Ok(expected),
                "{}",
                String::from_utf8_lossy(xff)
            );
        }
        // Not an address where the proxy's entry should be: the header is not used, and the
        // peer (here a trusted proxy; without one, `unknown`) is the key.
        for garbage in [
            &b""[..],
            b",",
            b"unknown",
            b"\xff",
            b"999.1.1.1",
            b"1.2.3.4.5",
            b"198.51.100.9, not-an-ip",
            b"198.51.100.9, \xff\xfe",
            b"198.51.100.9,",
        ] {
            let text = String::from_utf8_lossy(garbage);
            let headers: &[(&str, &[u8])] = &[("x-forwarded-for", garbage)];
            assert_eq!(
                key(1, headers, Some("10.0.0.1:80")).as_deref(),
                Ok("ip:10.0.0.1"),
                "{text}"
            );
            assert_eq!(key(1, headers, None).as_deref(), Ok("unknown"), "{text}");
        }
        let commas = ",".repeat(16 * 1024);
        assert_eq!(
            key(1, &[("x-forwarded-for", commas.as_bytes())], None).as_deref(),
            Ok("unknown")
        );
    }

    /// Hops are counted by position: an entry a proxy wrote that is not an address
    /// (`unknown`, an obfuscated name, an address with a zone) is never skipped over to
    /// reach what the client wrote.
    #[test]
    fn entries_that_are_not_addresses_keep_their_position() {
        let proxy = "10.0.0.9:80";
        for written in ["unknown", "_hidden", "fe80::1%eth0", "", " "] {
            // One hop: the proxy wrote `written` where the client's address should be.
            let xff = format!("6.6.6.1, {written}");
            assert_eq!(
                key(1, &[("x-forwarded-for", xff.as_bytes())], Some(proxy)).as_deref(),
                Ok("ip:10.0.0.9"),
                "1 hop: {xff}"
            );
            // As a header line of its own after the client's.
            let lines: &[(&str, &[u8])] = &[
                ("x-forwarded-for", b"6.6.6.1"),
                ("x-forwarded-for", written.as_bytes()),
            ];
            assert_eq!(
                key(1, lines, Some(proxy)).as_deref(),
                Ok("ip:10.0.0.9"),
                "1 hop, two lines: {written:?}"
            );
            // Two hops: the outer proxy wrote it, the inner one appended the outer's address.
            let xff = format!("6.6.6.1, {written}, 10.0.0.5");
            assert_eq!(
                key(2, &[("x-forwarded-for", xff.as_bytes())], Some(proxy)).as_deref(),
                Ok("ip:10.0.0.9"),
                "2 hops: {xff}"
            );
            // Proxy CIDRs: the walk stops at it; the client's address, right of it, is still
            // found.
            for (xff, expected) in [
                (format!("6.6.6.1, {written}, 10.0.0.5"), "ip:10.0.0.9"),
                (
                    format!("6.6.6.1, {written}, 203.0.113.5, 10.0.0.5"),
                    "ip:203.0.113.5",
                ),
            ] {
                let headers: &[(&str, &[u8])] = &[("x-forwarded-for", xff.as_bytes())];
                assert_eq!(
                    key_with(&cidr_source(), headers, Some(proxy)).as_deref(),
                    Ok(expected),
                    "cidrs: {xff}"
                );
            }
        }
        // An empty entry is an entry: `a, , b` is three.
        let xff: &[u8] = b"203.0.113.7, , 10.0.0.5";
        assert_eq!(
            key(2, &[("x-forwarded-for", xff)], Some(proxy)).as_deref(),
            Ok("ip:10.0.0.9")
        );
        assert_eq!(
            key(3, &[("x-forwarded-for", xff)], Some(proxy)).as_deref(),
            Ok("ip:203.0.113.7")
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
        let proxies = vec!["10.0.0.0/8".to_owned(), "2001:db8:ffff::1".to_owned()];
        KeySource::new(&Trust::Proxies(proxies), 1, 64).unwrap()
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
        let proxies = |list: &[&str]| {
            KeySource::new(
                &Trust::Proxies(list.iter().map(|p| (*p).to_owned()).collect()),
                1,
                64,
            )
        };
        let err = proxies(&["10.0.0.0/33"]).unwrap_err();
        assert!(err.to_string().contains("\"10.0.0.0/33\""), "{err}");
        assert!(matches!(
            proxies(&["proxy.local"]),
            Err(InvalidTrustedProxy::NotAnAddress { .. })
        ));
        for everything in ["0.0.0.0/0", "::/0", " * ", "10.0.0.0/8, *"] {
            let list: Vec<&str> = everything.split(',').collect();
            let err = proxies(&list).unwrap_err();
            assert!(
                matches!(err, InvalidTrustedProxy::EveryAddress { .. }),
                "{everything}: {err}"
            );
            assert!(err.to_string().contains("trust_any_peer()"), "{err}");
        }
    }

    #[test]
    fn ipv6_clients_count_by_network() {
        let k = |prefix: u8, addr: &[u8]| {
            key_with(&hops(1, prefix), &[("x-forwarded-for", addr)], None)
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
            ("1 hop", hops(1, 64), "10.0.0.1:80", vec![real]),
            // Two proxies: the outer appends the client, the inner appends the outer.
            ("2 hops", hops(2, 64), "10.0.0.2:80", vec![real, "10.0.0.1"]),
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
        // Reaching the app directly, from an address no mode trusts: the forged headers are
        // not read.
        for (mode, source, _, _) in &modes {
            for spoof in SPOOFS {
                let sent = spoof.replace("{victim}", victim);
                let direct = key_with(
                    source,
                    &[
                        ("x-forwarded-for", sent.as_bytes()),
                        ("x-client-id", victim.as_bytes()),
                    ],
                    Some(&format!("{real}:5")),
                );
                assert_eq!(
                    direct.as_deref(),
                    Ok(format!("ip:{real}").as_str()),
                    "{mode}, direct: {sent}"
                );
            }
        }
    }

    /// Identity headers, sent by a peer at `peer`, under the default trust.
    fn default_trust_key(peer: &str) -> Result<String, String> {
        let headers: &[(&str, &[u8])] = &[
            ("x-client-id", b"internal-batch"),
            ("x-forwarded-for", b"198.51.100.200"),
        ];
        key_with(&hops(1, 128), headers, Some(peer))
    }

    #[test]
    fn by_default_only_loopback_and_private_peers_name_the_client() {
        for peer in [
            "127.0.0.1:80",
            "127.8.9.10:80",
            "10.1.2.3:80",
            "172.16.0.1:80",
            "172.31.255.254:80",
            "192.168.1.1:80",
            "[::1]:80",
            "[fc00::1]:80",
            "[fd12:3456::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:10.1.2.3]:80",
        ] {
            assert_eq!(
                default_trust_key(peer).as_deref(),
                Ok("id:internal-batch"),
                "{peer} is trusted"
            );
        }
        for (peer, key) in [
            ("203.0.113.7:80", "ip:203.0.113.7"),
            ("172.32.0.1:80", "ip:172.32.0.1"),
            ("100.64.0.1:80", "ip:100.64.0.1"),
            ("169.254.1.1:80", "ip:169.254.1.1"),
            ("[2001:db8::1]:80", "ip:2001:db8::1"),
            ("[fe80::1]:80", "ip:fe80::1"),
            ("[::ffff:203.0.113.7]:80", "ip:203.0.113.7"),
            ("[::ffff:1.2.3.4]:80", "ip:1.2.3.4"),
        ] {
            assert_eq!(default_trust_key(peer).as_deref(), Ok(key), "{peer} is not");
        }
    }

    #[test]
    fn an_untrusted_peers_client_id_is_not_read() {
        for bad in [&b""[..], b"has space", &[b'a'; 300]] {
            let headers: &[(&str, &[u8])] = &[("x-client-id", bad)];
            assert_eq!(
                key(1, headers, Some("203.0.113.7:80")).as_deref(),
                Ok("ip:203.0.113.7")
            );
            assert!(key(1, headers, Some("127.0.0.1:80")).is_err());
        }
        let twice: &[(&str, &[u8])] = &[("x-client-id", b"a"), ("x-client-id", b"b")];
        assert_eq!(
            key(1, twice, Some("203.0.113.7:80")).as_deref(),
            Ok("ip:203.0.113.7")
        );
    }

    #[test]
    fn trusted_peers_can_be_listed_emptied_or_all() {
        let headers: &[(&str, &[u8])] = &[("x-client-id", b"alice")];
        let listed =
            KeySource::new(&Trust::Proxies(vec!["198.51.100.0/24".into()]), 1, 128).unwrap();
        assert_eq!(
            key_with(&listed, headers, Some("198.51.100.9:80")).as_deref(),
            Ok("id:alice")
        );
        // Listing proxies replaces the default: loopback is no longer trusted.
        assert_eq!(
            key_with(&listed, headers, Some("127.0.0.1:80")).as_deref(),
            Ok("ip:127.0.0.1")
        );
        let nobody = KeySource::new(&Trust::Proxies(Vec::new()), 1, 128).unwrap();
        for peer in ["127.0.0.1:80", "10.0.0.1:80"] {
            let ip = peer.trim_end_matches(":80");
            assert_eq!(
                key_with(&nobody, headers, Some(peer)).as_deref(),
                Ok(format!("ip:{ip}").as_str())
            );
        }
        let anyone = KeySource::new(&Trust::AnyPeer, 1, 128).unwrap();
        assert_eq!(
            key_with(&anyone, headers, Some("203.0.113.7:80")).as_deref(),
            Ok("id:alice")
        );
        // Every peer trusted: X-Forwarded-For by hop count, as from a proxy.
        let forwarded: &[(&str, &[u8])] = &[("x-forwarded-for", b"6.6.6.1, 198.51.100.9")];
        assert_eq!(
            key_with(&anyone, forwarded, Some("203.0.113.7:80")).as_deref(),
            Ok("ip:198.51.100.9")
        );
    }

    /// What `f` logs, as text.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_request_without_a_peer_is_logged_once_per_layer() {
        let headers: &[(&str, &[u8])] = &[("x-client-id", b"alice")];
        let source = hops(1, 64);
        let log = logged(|| {
            for _ in 0..3 {
                assert_eq!(key_with(&source, headers, None).as_deref(), Ok("id:alice"));
            }
            // A request with a peer says nothing.
            key_with(&source, headers, Some("127.0.0.1:80")).unwrap();
        });
        assert_eq!(log.matches("WARN").count(), 1, "{log}");
        assert!(
            log.contains("into_make_service_with_connect_info::<SocketAddr>()"),
            "{log}"
        );
        // Another layer warns again.
        let log = logged(|| {
            key_with(&hops(1, 64), headers, None).unwrap();
        });
        assert_eq!(log.matches("WARN").count(), 1, "{log}");
        // When every peer is trusted anyway, there is nothing to warn about.
        let anyone = KeySource::new(&Trust::AnyPeer, 1, 64).unwrap();
        let log = logged(|| {
            key_with(&anyone, headers, None).unwrap();
        });
        assert_eq!(log, "");
    }

    #[test]
    fn trusting_every_peer_is_logged_when_built() {
        let log = logged(|| {
            KeySource::new(&Trust::AnyPeer, 1, 64).unwrap();
        });
        assert!(log.contains("WARN"), "{log}");
        assert!(log.contains("trust_any_peer()"), "{log}");
        let log = logged(|| {
            KeySource::new(&Trust::PrivateNetworks, 1, 64).unwrap();
        });
        assert_eq!(log, "");
    }

    #[cfg(feature = "axum")]
    #[test]
    fn peer_address_from_axum_connect_info() {
        let mut request = Request::new(());
        let addr: SocketAddr = "192.0.2.8:1234".parse().unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        let k = hops(1, 64).client_key(&request).unwrap();
        assert_eq!(k.to_string(), "ip:192.0.2.8");
    }
}
