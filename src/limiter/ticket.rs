//! A reservation's id ([`Ticket`]) and what a verdict holds of a reservation ([`Held`]).
//!
//! A reservation's id names the rule and the client it took from, so that any instance
//! sharing the store can settle it, and carries 128 random bits, so that it cannot be
//! guessed: `<32 hex digits>.<rule>.<client>`, the rule's identity and the client's key in
//! unpadded URL-safe base64 (the client as `i` and the `X-Client-ID`, `a` and an address,
//! `n` and a network with its prefix, or `u`).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::CheckError;
use super::{Core, Limiter};
use crate::key::{ClientKey, KeyRef};

/// A reservation's id, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) nonce: String,
    pub(crate) rule: String,
    pub(crate) client: ClientKey,
}

/// A reservation's random part: 128 bits, as 32 lowercase hexadecimal digits.
pub(crate) fn nonce() -> Result<String, CheckError> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|error| CheckError::Reservation {
        reason: format!("no random number for its id: {error}"),
    })?;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut nonce = String::with_capacity(32);
    for byte in random {
        nonce.push(char::from(HEX[usize::from(byte >> 4)]));
        nonce.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    Ok(nonce)
}

impl Ticket {
    /// A new reservation's ticket under the rule `rule` for `client`, as keyed. Out of line:
    /// the checks that reserve nothing do not carry its code.
    #[cold]
    #[inline(never)]
    pub(crate) fn new(rule: &str, client: KeyRef<'_>) -> Result<Box<Self>, CheckError> {
        Ok(Box::new(Self {
            nonce: nonce()?,
            rule: rule.to_owned(),
            client: client.to_owned(),
        }))
    }

    /// The ticket `id` names, if it is one.
    pub(crate) fn parse(id: &str) -> Option<Self> {
        let mut parts = id.splitn(3, '.');
        let (nonce, rule, client) = (parts.next()?, parts.next()?, parts.next()?);
        if nonce.len() != 32
            || !nonce
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return None;
        }
        let text = |part: &str| {
            let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
            String::from_utf8(bytes).ok()
        };
        let rule = text(rule)?;
        let (kind, key) = client.split_at_checked(1)?;
        let client = match kind {
            "i" => ClientKey::Id(text(key)?.into()),
            "a" => ClientKey::Ip(text(key)?.parse::<IpAddr>().ok()?),
            "n" => {
                let network = text(key)?;
                let (address, bits) = network.split_once('/')?;
                ClientKey::Ipv6Network {
                    network: address.parse::<Ipv6Addr>().ok()?,
                    prefix_len: bits.parse().ok()?,
                }
            }
            "u" if key.is_empty() => ClientKey::Unknown,
            _ => return None,
        };
        Some(Self {
            nonce: nonce.to_owned(),
            rule,
            client,
        })
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let encode = |text: &str| URL_SAFE_NO_PAD.encode(text);
        write!(f, "{}.{}.", self.nonce, encode(&self.rule))?;
        match &self.client {
            ClientKey::Id(id) => write!(f, "i{}", encode(id)),
            ClientKey::Ip(ip) => write!(f, "a{}", encode(&ip.to_string())),
            ClientKey::Ipv6Network {
                network,
                prefix_len,
            } => write!(f, "n{}", encode(&format!("{network}/{prefix_len}"))),
            ClientKey::Unknown => f.write_str("u"),
        }
    }
}

/// A reservation the store holds for an admitted request, carried in its verdict until a
/// front takes it as a [`Reservation`](super::Reservation).
#[derive(Clone)]
pub(crate) struct Held {
    pub(crate) limiter: Limiter,
    pub(crate) ticket: Ticket,
    pub(crate) estimate: u32,
}

impl Held {
    /// What a verdict holds of the reservation `ticket` of `estimate` units. Out of line, as
    /// [`Ticket::new`].
    #[cold]
    #[inline(never)]
    pub(crate) fn new(core: &Arc<Core>, ticket: Ticket, estimate: u32) -> Box<Self> {
        Box::new(Self {
            limiter: Limiter {
                core: Arc::clone(core),
            },
            ticket,
            estimate,
        })
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (&self.ticket, self.estimate) == (&other.ticket, other.estimate)
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the client: an X-Client-ID may be an API key.
        f.debug_struct("Held")
            .field("rule", &self.ticket.rule)
            .field("estimate", &self.estimate)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_the_rule_and_client_and_come_back_whole() {
        for client in [
            ClientKey::id("user:1/é.x"),
            ClientKey::Ip("203.0.113.7".parse().unwrap()),
            ClientKey::Ipv6Network {
                network: "2001:db8::".parse().unwrap(),
                prefix_len: 64,
            },
            ClientKey::Unknown,
        ] {
            let ticket = Ticket {
                nonce: nonce().unwrap(),
                rule: "/v1/chat@POST".into(),
                client,
            };
            let id = ticket.to_string();
            assert_eq!(Ticket::parse(&id), Some(ticket), "{id}");
        }
        assert_ne!(nonce().unwrap(), nonce().unwrap());
        for junk in [
            "",
            "x",
            "00.ZGVmYXVsdA.u",
            &format!("{}.!!.u", "0".repeat(32)),
        ] {
            assert_eq!(Ticket::parse(junk), None, "{junk}");
        }
    }
}
