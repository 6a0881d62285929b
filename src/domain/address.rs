//! Which IP addresses are public: the ones a webhook may be delivered to without
//! `RDEV_WEBHOOK_ALLOW_PRIVATE`.
//!
//! Decided by the IANA special-purpose address registries (IPv4:
//! <https://www.iana.org/assignments/iana-ipv4-special-registry>, IPv6:
//! <https://www.iana.org/assignments/iana-ipv6-special-registry>), as of 2025: an address in any
//! block there is refused, even the few the registry calls globally reachable (anycast relays
//! and AS112 servers, which nobody runs a webhook receiver on). Multicast and, for IPv6,
//! everything outside global unicast `2000::/3` are refused too. Addresses that carry an IPv4
//! address inside an IPv6 one (IPv4-mapped, NAT64, 6to4) are judged by the IPv4 address they
//! lead to, so `64:ff9b::a9fe:a9fe` is the metadata endpoint `169.254.169.254` it is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// IPv4 special-purpose blocks (address, prefix length, what it is).
const V4_SPECIAL: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "this network (RFC 791)"),
    ([10, 0, 0, 0], 8, "private use (RFC 1918)"),
    ([100, 64, 0, 0], 10, "shared address space (RFC 6598)"),
    ([127, 0, 0, 0], 8, "loopback (RFC 1122)"),
    ([169, 254, 0, 0], 16, "link local (RFC 3927)"),
    ([172, 16, 0, 0], 12, "private use (RFC 1918)"),
    ([192, 0, 0, 0], 24, "IETF protocol assignments, DS-Lite, NAT64 discovery (RFC 6890, 6333, 7335, 8880)"),
    ([192, 0, 2, 0], 24, "documentation TEST-NET-1 (RFC 5737)"),
    ([192, 31, 196, 0], 24, "AS112-v4 (RFC 7535)"),
    ([192, 52, 193, 0], 24, "AMT (RFC 7450)"),
    ([192, 88, 99, 0], 24, "deprecated 6to4 relay anycast (RFC 7526)"),
    ([192, 168, 0, 0], 16, "private use (RFC 1918)"),
    ([192, 175, 48, 0], 24, "direct delegation AS112 service (RFC 7534)"),
    ([198, 18, 0, 0], 15, "benchmarking (RFC 2544)"),
    ([198, 51, 100, 0], 24, "documentation TEST-NET-2 (RFC 5737)"),
    ([203, 0, 113, 0], 24, "documentation TEST-NET-3 (RFC 5737)"),
    ([224, 0, 0, 0], 4, "multicast (RFC 5771)"),
    ([240, 0, 0, 0], 4, "reserved, and limited broadcast 255.255.255.255 (RFC 1112, 919)"),
];

/// IPv6 special-purpose blocks inside global unicast `2000::/3` (everything outside it is
/// refused already), as segments and a prefix length.
const V6_SPECIAL: &[([u16; 8], u8, &str)] = &[
    ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, "IETF protocol assignments, Teredo, ORCHID, benchmarking (RFC 2928, 4380)"),
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation (RFC 3849)"),
    ([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48, "direct delegation AS112 service (RFC 7534)"),
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation (RFC 9637)"),
];

/// Every block holding a non-public address, as routes would name them: the IPv4 special
/// blocks, and for IPv6 everything outside global unicast `2000::/3`, 6to4 `2002::/16` (whose
/// IPv4 address is judged by the IPv4 routes) and the special blocks inside it.
pub fn non_public_blocks() -> Vec<ipnet::IpNet> {
    let v4 = V4_SPECIAL.iter().filter_map(|(octets, len, _)| Ipv4Net::new((*octets).into(), *len).ok()).map(Into::into);
    let outside_global: [([u16; 8], u8); 4] = [
        ([0, 0, 0, 0, 0, 0, 0, 0], 3),
        ([0x4000, 0, 0, 0, 0, 0, 0, 0], 2),
        ([0x8000, 0, 0, 0, 0, 0, 0, 0], 1),
        ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
    ];
    let v6 = outside_global
        .into_iter()
        .chain(V6_SPECIAL.iter().map(|(segments, len, _)| (*segments, *len)))
        .filter_map(|(segments, len)| Ipv6Net::new(segments.into(), len).ok())
        .map(Into::into);
    v4.chain(v6).collect()
}

/// Whether deliveries may go to `ip` without `RDEV_WEBHOOK_ALLOW_PRIVATE`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !V4_SPECIAL.iter().any(|(octets, len, _)| Ipv4Net::new((*octets).into(), *len).is_ok_and(|net| net.contains(&ip)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let global_unicast = ip.segments()[0] & 0xe000 == 0x2000;
    global_unicast
        && !V6_SPECIAL
            .iter()
            .any(|(segments, len, _)| Ipv6Net::new((*segments).into(), *len).is_ok_and(|net| net.contains(&ip)))
}

/// The IPv4 address an IPv6 address leads to: IPv4-mapped `::ffff:0:0/96` (RFC 4291), NAT64's
/// well-known `64:ff9b::/96` (RFC 6052) and 6to4 `2002::/16` (RFC 3056).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let last_32 = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(last_32())
    } else if s[0] == 0x2002 {
        Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_non_public_blocks_hold_exactly_the_non_public_addresses() {
        let blocks = non_public_blocks();
        let blocked = |ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            blocks.iter().any(|net| net.contains(&ip))
        };
        for ip in [
            "10.1.2.3",
            "127.0.0.1",
            "169.254.169.254",
            "192.0.2.1",
            "::1",
            "fe80::1",
            "fd00::2",
            "2001:db8::1",
            "2002:a00:1::",
        ] {
            assert!(blocked(ip) && !is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "198.20.0.2", "2a00:1450::1"] {
            assert!(!blocked(ip) && is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    fn public(raw: &str) -> bool {
        is_public(raw.parse().unwrap())
    }

    #[test]
    fn special_purpose_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::a9fe:a9fe",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::1",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::",
            "2001::1",
            "2001:db8::1",
            "100::1",
            "3fff::1",
            "5f00::1",
        ] {
            assert!(!public(ip), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass_also_through_translation() {
        for ip in ["93.184.216.34", "1.1.1.1", "8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1"] {
            assert!(public(ip), "{ip}");
        }
    }
}
