//! The client's address: the TCP peer, or, when the peer is a trusted proxy, the address
//! a configured number of hops from the right of the one header those proxies write.
//!
//! Trust is explicit, as in the real-IP modules of mature proxies:
//! - only a peer inside `trusted_proxies` is asked at all; anyone else is the client;
//! - only the configured header (`X-Forwarded-For` or `Forwarded`) is read; the other is
//!   ignored entirely, so a client cannot slip in a header the proxy passes through;
//! - the client is the hop `trusted_hops` from the right: each trusted proxy appends
//!   the address it received the request from, so the rightmost `trusted_hops` entries
//!   were written by proxies and everything left of them by the client, who can prepend
//!   anything but cannot change what comes after;
//! - a chain that is missing, shorter than `trusted_hops`, or whose believed hops are
//!   not plain addresses (garbage, an empty hop, `unknown`, an obfuscated `_hidden`, no
//!   `for=`) resolves to no client at all, never to the trusted peer itself.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// Which header the trusted proxies write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx, HAProxy, cloud load balancers).
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    #[serde(rename = "forwarded")]
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

/// Whom the server believes about client addresses.
#[derive(Debug, Clone, Default)]
pub struct ProxyTrust {
    /// Peers whose header is read.
    pub trusted: Vec<IpNet>,
    /// The header they write; `None` only when `trusted` is empty.
    pub header: Option<ForwardedHeader>,
    /// How many trusted proxies append to the header before the request arrives.
    pub hops: usize,
}

/// A trusted proxy sent a chain that names no usable client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnusableChain;

impl ProxyTrust {
    /// The address the allowlists and rate limits see.
    ///
    /// # Errors
    ///
    /// [`UnusableChain`] when the peer is a trusted proxy and its header is missing,
    /// too short, or malformed where it is believed.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, UnusableChain> {
        let peer = peer.to_canonical();
        if !self.trusted.iter().any(|net| net.contains(&peer)) {
            return Ok(peer);
        }
        let Some(header) = self.header else {
            // Validation requires a header whenever proxies are trusted.
            return Err(UnusableChain);
        };
        let hops: Vec<&str> = headers
            .get_all(header.name())
            .iter()
            .map(|value| value.to_str().map_err(|_| UnusableChain))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flat_map(|value| value.split(','))
            .collect();
        if self.hops == 0 || hops.len() < self.hops {
            return Err(UnusableChain);
        }
        let believed = &hops[hops.len() - self.hops..];
        let mut addresses = believed.iter().map(|hop| match header {
            ForwardedHeader::XForwardedFor => parse_node(hop.trim()),
            ForwardedHeader::Forwarded => forwarded_for(hop).and_then(parse_node),
        });
        let client = addresses.next().flatten().ok_or(UnusableChain)?;
        // The hops the proxies wrote after the client must be addresses too: anything
        // else means the chain is not what the configuration says it is.
        if addresses.any(|a| a.is_none()) {
            return Err(UnusableChain);
        }
        Ok(client)
    }
}

/// The `for=` value of one `Forwarded` element, unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    element
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
        .map(|(_, value)| {
            let value = value.trim();
            value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)
        })
}

/// `192.0.2.1`, `192.0.2.1:443`, `[2001:db8::1]`, `[2001:db8::1]:443` or `2001:db8::1`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest.split_once(']')?;
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok())) {
            return None;
        }
        return host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trust(header: ForwardedHeader, hops: usize) -> ProxyTrust {
        ProxyTrust { trusted: vec!["10.0.0.0/8".parse().unwrap()], header: Some(header), hops }
    }

    #[test]
    fn headers_count_only_from_trusted_peers() {
        let trust = trust(ForwardedHeader::XForwardedFor, 1);
        let xff = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(trust.client_ip(ip("198.51.100.1"), &xff), Ok(ip("198.51.100.1")));
        assert_eq!(trust.client_ip(ip("10.1.2.3"), &xff), Ok(ip("203.0.113.9")));
    }

    #[test]
    fn the_hop_the_configured_number_from_the_right_is_the_client() {
        let one = trust(ForwardedHeader::XForwardedFor, 1);
        let two = trust(ForwardedHeader::XForwardedFor, 2);
        // The client forged two hops; one or two proxies appended after it.
        let xff = headers(&[("x-forwarded-for", "1.2.3.4, 10.0.0.9, 203.0.113.9, 10.0.0.5")]);
        assert_eq!(one.client_ip(ip("10.1.2.3"), &xff), Ok(ip("10.0.0.5")));
        assert_eq!(two.client_ip(ip("10.1.2.3"), &xff), Ok(ip("203.0.113.9")));
        // Several header lines are one list, in order.
        let split = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "203.0.113.9, 10.0.0.5")]);
        assert_eq!(two.client_ip(ip("10.1.2.3"), &split), Ok(ip("203.0.113.9")));
        let forwarded = headers(&[("forwarded", "for=1.2.3.4, for=\"[2001:db8::7]:443\";proto=https, for=10.0.0.5")]);
        assert_eq!(trust(ForwardedHeader::Forwarded, 2).client_ip(ip("10.1.2.3"), &forwarded), Ok(ip("2001:db8::7")));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let xff_trust = trust(ForwardedHeader::XForwardedFor, 1);
        let both = headers(&[("forwarded", "for=192.0.2.66"), ("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(xff_trust.client_ip(ip("10.1.2.3"), &both), Ok(ip("203.0.113.9")));
        let forwarded_trust = trust(ForwardedHeader::Forwarded, 1);
        assert_eq!(forwarded_trust.client_ip(ip("10.1.2.3"), &both), Ok(ip("192.0.2.66")));
        let only_other = headers(&[("forwarded", "for=192.0.2.66")]);
        assert_eq!(xff_trust.client_ip(ip("10.1.2.3"), &only_other), Err(UnusableChain));
    }

    #[test]
    fn an_unusable_chain_never_resolves_to_the_trusted_peer() {
        let xff = trust(ForwardedHeader::XForwardedFor, 1);
        for bad in ["not an ip", "", " ", "1.2.3.4, nonsense", "unknown", "1.2.3.4,", "_hidden", "1.2.3.4:99999"] {
            let h = headers(&[("x-forwarded-for", bad)]);
            assert_eq!(xff.client_ip(ip("10.0.0.1"), &h), Err(UnusableChain), "{bad:?}");
        }
        assert_eq!(xff.client_ip(ip("10.0.0.1"), &headers(&[])), Err(UnusableChain), "no header");
        let two = trust(ForwardedHeader::XForwardedFor, 2);
        let short = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(two.client_ip(ip("10.0.0.1"), &short), Err(UnusableChain), "shorter than configured");
        let garbage_proxy_hop = headers(&[("x-forwarded-for", "203.0.113.9, garbage")]);
        assert_eq!(two.client_ip(ip("10.0.0.1"), &garbage_proxy_hop), Err(UnusableChain));

        let forwarded = trust(ForwardedHeader::Forwarded, 1);
        for bad in ["for=unknown", "for=_hidden", "by=10.0.0.1", "for=", "proto=https", "for=\"[::1\"", ""] {
            let h = headers(&[("forwarded", bad)]);
            assert_eq!(forwarded.client_ip(ip("10.0.0.1"), &h), Err(UnusableChain), "{bad:?}");
        }
    }

    #[test]
    fn ports_and_brackets_are_accepted_and_mapped_addresses_canonical() {
        let xff = trust(ForwardedHeader::XForwardedFor, 1);
        for (given, expected) in [
            ("192.0.2.1:443", "192.0.2.1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
        ] {
            let h = headers(&[("x-forwarded-for", given)]);
            assert_eq!(xff.client_ip(ip("10.0.0.1"), &h), Ok(ip(expected)), "{given}");
        }
    }
}
