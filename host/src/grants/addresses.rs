//! Which addresses are on the public internet: IANA's special-purpose
//! registries as tables, and the IPv4 address inside an IPv6 one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is that IPv4
/// address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// IPv4 ranges that are not the public internet: every entry of IANA's
/// IPv4 Special-Purpose Address Registry that is not globally reachable,
/// with the address blocks around them that share their purpose (all of
/// 192.0.0.0/24), plus multicast and the reserved 240.0.0.0/4 (broadcast
/// included).
pub const SPECIAL_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "this network"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "shared address space"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    // With 255.255.255.255, broadcast.
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

/// IPv6 ranges inside the global unicast space (2000::/3) that are not the
/// public internet, from IANA's IPv6 Special-Purpose Address Registry.
/// Everything outside 2000::/3 is not public either: loopback, the
/// unspecified address, IPv4-mapped, -compatible and -translated forms,
/// the NAT64 prefixes, discard-only (100::/64), unique-local, link-local,
/// site-local (fec0::/10), multicast, SRv6 (5f00::/16), and the unassigned
/// rest.
pub const SPECIAL_V6: &[(Ipv6Addr, u8, &str)] = &[
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments (Teredo, benchmarking, ORCHID, ...)",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation",
    ),
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, "6to4"),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation",
    ),
];

/// What an address is, if it is not on the public internet.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let n = u32::from(v4);
            SPECIAL_V4
                .iter()
                .find(|(net, bits, _)| {
                    n >> (32 - u32::from(*bits)) == u32::from(*net) >> (32 - u32::from(*bits))
                })
                .map(|(_, _, what)| *what)
        }
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            if n >> 125 != 0b001 {
                return Some(if v6.is_loopback() {
                    "loopback"
                } else if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                    "link-local"
                } else {
                    "not global unicast"
                });
            }
            SPECIAL_V6
                .iter()
                .find(|(net, bits, _)| {
                    n >> (128 - u32::from(*bits)) == u128::from(*net) >> (128 - u32::from(*bits))
                })
                .map(|(_, _, what)| *what)
        }
    }
}

/// Whether an address is on the public internet (see [`special`]).
pub fn is_public(ip: IpAddr) -> bool {
    special(ip).is_none()
}

/// Whether an address is link-local (169.254.0.0/16, fe80::/10): where
/// clouds answer with their metadata and credentials.
pub fn is_link_local(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first address of a range, its last, and the address just past
    /// it.
    fn ends_v4(net: Ipv4Addr, bits: u8) -> [Ipv4Addr; 3] {
        let size = if bits == 0 {
            u32::MAX
        } else {
            (1u32 << (32 - bits)) - 1
        };
        let first = u32::from(net);
        let last = first.saturating_add(size);
        [first.into(), last.into(), last.saturating_add(1).into()]
    }

    #[test]
    fn every_special_purpose_range_is_refused_end_to_end() {
        for (net, bits, what) in SPECIAL_V4 {
            let [first, last, next] = ends_v4(*net, *bits);
            for ip in [first, last] {
                assert_eq!(special(ip.into()), Some(*what), "{ip} ({net}/{bits})");
                // Written as IPv4-mapped IPv6, the same.
                assert!(!is_public(ip.to_ipv6_mapped().into()), "{ip} mapped");
            }
            if last != Ipv4Addr::BROADCAST && special(next.into()).is_none() {
                assert!(is_public(next.into()), "{next}");
            }
        }
        for (net, bits, what) in SPECIAL_V6 {
            let size = (1u128 << (128 - bits)) - 1;
            let first = u128::from(*net);
            let last = first + size;
            for ip in [first, last] {
                let ip = Ipv6Addr::from(ip);
                assert_eq!(special(ip.into()), Some(*what), "{ip} ({net}/{bits})");
            }
        }
        // Outside the global unicast space, and the ranges the first
        // attacks slipped through.
        for ip in [
            "::",
            "::1",
            "::ffff:0:7f00:1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "100::1",
            "100::ffff:ffff:ffff:ffff",
            "fec0::1",
            "feff::1",
            "fc00::1",
            "fdff::1",
            "fe80::1",
            "ff02::1",
            "5f00::1",
            "4000::1",
            "2001:10::1",
            "2001:1f::1",
            "2001:20::1",
            "2001:2f::1",
            "2001:db8::1",
            "2002:7f00:1::",
            "3fff::1",
            "192.88.99.1",
            "192.0.0.9",
            "100.127.255.255",
            "198.19.255.255",
            "0.1.2.3",
            "240.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_public(ip), "{ip} taken for public");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "192.0.1.1",
            "192.31.196.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::6810:85e5",
            "2001:200::1",
            "2620:4f:8000::1",
            "2a00:1450::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_public(ip), "{ip} refused");
        }
    }
}
