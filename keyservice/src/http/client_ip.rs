//! The client's address: the TCP peer, or, when the peer is a trusted proxy, the address
//! the proxy reports in `Forwarded` (RFC 7239) or `X-Forwarded-For`.
//!
//! The chain is read right to left, skipping trusted proxies; the first untrusted hop is
//! the client. A client can prepend anything it likes to these headers, but it cannot
//! forge the hops that trusted proxies append after it. A chain that does not parse is
//! ignored, and the peer itself counts as the client.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// The address the allowlists and rate limits see.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(chain) = forwarded_chain(headers) else {
        return peer;
    };
    // Right to left: the nearest hop first. If every hop is trusted, the farthest one
    // is the best we know.
    chain.iter().rev().find(|ip| !is_trusted(ip)).or(chain.first()).copied().unwrap_or(peer)
}

/// The hops, client first, from `Forwarded` if present, else `X-Forwarded-For`.
fn forwarded_chain(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let forwarded: Vec<&str> =
        headers.get_all(http::header::FORWARDED).iter().filter_map(|v| v.to_str().ok()).collect();
    if !forwarded.is_empty() {
        let mut chain = Vec::new();
        for element in forwarded.iter().flat_map(|v| v.split(',')) {
            let value = element
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                .map(|(_, value)| value.trim().trim_matches('"'))?;
            chain.push(parse_node(value)?);
        }
        return (!chain.is_empty()).then_some(chain);
    }
    let xff: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    if xff.is_empty() {
        return None;
    }
    let chain: Option<Vec<IpAddr>> = xff.iter().flat_map(|v| v.split(',')).map(|hop| parse_node(hop.trim())).collect();
    chain.filter(|c| !c.is_empty())
}

/// `192.0.2.1`, `192.0.2.1:443`, `[2001:db8::1]`, `[2001:db8::1]:443` or `2001:db8::1`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
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

    #[test]
    fn headers_count_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(client_ip(ip("198.51.100.1"), &xff, &trusted), ip("198.51.100.1"));
        assert_eq!(client_ip(ip("10.1.2.3"), &xff, &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("10.1.2.3"), &headers(&[]), &trusted), ip("10.1.2.3"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client forged a first hop; the trusted proxies appended the real ones.
        let xff = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.0.0.5")]);
        assert_eq!(client_ip(ip("10.1.2.3"), &xff, &trusted), ip("203.0.113.9"));
        let forwarded = headers(&[("forwarded", "for=1.2.3.4, for=\"[2001:db8::7]:443\";proto=https, for=10.0.0.5")]);
        assert_eq!(client_ip(ip("10.1.2.3"), &forwarded, &trusted), ip("2001:db8::7"));
        let all_trusted = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.5")]);
        assert_eq!(client_ip(ip("10.1.2.3"), &all_trusted, &trusted), ip("10.9.9.9"));
    }

    #[test]
    fn garbage_is_ignored() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        for bad in ["not an ip", "", "1.2.3.4, nonsense", "for=unknown"] {
            let xff = headers(&[("x-forwarded-for", bad)]);
            assert_eq!(client_ip(ip("127.0.0.1"), &xff, &trusted), ip("127.0.0.1"), "{bad}");
        }
        let forwarded = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &forwarded, &trusted), ip("127.0.0.1"));
    }
}
