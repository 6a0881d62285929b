//! Who is on the other end: the socket peer, or, when the peer is one of our trusted proxies,
//! the right-most `X-Forwarded-For` hop that is not itself a trusted proxy.
//!
//! Hops left of that are written by the client and cannot be believed: a client may send any
//! `X-Forwarded-For` it likes, and a proxy only appends. From an untrusted peer the header is
//! ignored entirely.

use std::net::{IpAddr, SocketAddr};

use axum::{extract::ConnectInfo, http::HeaderMap};
use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted_proxies: Vec<IpNet>,
}

impl ClientIpResolver {
    pub fn new(trusted_proxies: Vec<IpNet>) -> Self {
        Self { trusted_proxies }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        // Several X-Forwarded-For headers are one list, in order.
        let hops =
            headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
        for hop in hops.rsplit(',').map(str::trim) {
            let Some(ip) = parse_hop(hop) else { break };
            client = ip.to_canonical();
            if !self.is_trusted(client) {
                break;
            }
        }
        client
    }

    /// The client IP of a request served with connect info; `None` without it.
    pub fn of(&self, extensions: &axum::http::Extensions, headers: &HeaderMap) -> Option<IpAddr> {
        extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| self.resolve(addr.ip(), headers))
    }
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_cannot_claim_another_address() {
        let resolver = ClientIpResolver::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(resolver.resolve(ip("198.51.100.7"), &headers(&["203.0.113.5"])), ip("198.51.100.7"));
        assert_eq!(ClientIpResolver::default().resolve(ip("127.0.0.1"), &headers(&["203.0.113.5"])), ip("127.0.0.1"));
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_right() {
        let resolver = ClientIpResolver::new(vec!["10.0.0.0/8".parse().unwrap()]);
        // The client prepended a fake hop; the proxy appended the real one.
        let xff = headers(&["203.0.113.5, 198.51.100.9, 10.1.1.1"]);
        assert_eq!(resolver.resolve(ip("10.0.0.2"), &xff), ip("198.51.100.9"));
        assert_eq!(resolver.resolve(ip("10.0.0.2"), &headers(&["203.0.113.5", "10.9.9.9:443"])), ip("203.0.113.5"));
        assert_eq!(resolver.resolve(ip("10.0.0.2"), &headers(&[])), ip("10.0.0.2"));
        assert_eq!(resolver.resolve(ip("10.0.0.2"), &headers(&["garbage, 10.1.1.1"])), ip("10.1.1.1"));
        assert_eq!(resolver.resolve(ip("::ffff:10.0.0.2"), &headers(&["[2001:db8::1]:80"])), ip("2001:db8::1"));
    }
}
