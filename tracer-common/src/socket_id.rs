//! A socket's identity, defined once: network namespace, family, normalised
//! addresses, ports, inode. The snapshot (sock_diag), the kernel records,
//! attribution, metrics and diagnose all key sockets through this module, so
//! one socket has one key wherever it was seen.
//!
//! Addresses are normalised: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
//! what a dual-stack `[::]` socket reports for an IPv4 peer, in sock_diag as
//! in the kernel's `sock_common`) is the IPv4 address, so one client has one
//! spelling and one key.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::SockInfo;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// The one spelling of an address.
pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// [`normalise`] for an address and port.
pub fn normalise_sockaddr(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(normalise(a.ip()), a.port())
}

/// The normalised address of a kernel record (4 bytes for AF_INET, 16 for
/// AF_INET6, network order); `None` for an unknown family.
pub fn addr(family: u16, raw: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        AF_INET6 => Some(normalise(IpAddr::V6(Ipv6Addr::from(*raw)))),
        _ => None,
    }
}

/// The event schema's name of a family.
pub fn family_name(family: u16) -> Option<&'static str> {
    match family {
        AF_INET => Some("inet"),
        AF_INET6 => Some("inet6"),
        _ => None,
    }
}

/// A connection's 4-tuple in its namespace, from this host's point of view,
/// with normalised addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub netns: u32,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
}

impl ConnKey {
    /// The key of a kernel record's socket; `None` for an unknown family.
    pub fn of(sock: &SockInfo) -> Option<ConnKey> {
        Some(ConnKey {
            netns: sock.netns,
            local: (addr(sock.family, &sock.laddr)?, sock.lport),
            remote: (addr(sock.family, &sock.raddr)?, sock.rport),
        })
    }

    /// The key of a socket sock_diag or /proc described.
    pub fn from_addrs(netns: u32, local: SocketAddr, remote: SocketAddr) -> ConnKey {
        ConnKey {
            netns,
            local: (normalise(local.ip()), local.port()),
            remote: (normalise(remote.ip()), remote.port()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(v4: [u8; 4]) -> [u8; 16] {
        let mut raw = [0u8; 16];
        raw[10] = 0xff;
        raw[11] = 0xff;
        raw[12..].copy_from_slice(&v4);
        raw
    }

    #[test]
    fn v4_mapped_is_v4() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(addr(AF_INET6, &mapped([127, 0, 0, 1])), Some(lo));
        assert_eq!(
            addr(AF_INET6, &[0; 16]),
            Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        );
        assert_eq!(addr(7, &[0; 16]), None);
        let m: SocketAddr = "[::ffff:127.0.0.1]:80".parse().expect("test data");
        assert_eq!(normalise_sockaddr(m), SocketAddr::new(lo, 80));
        let v6: SocketAddr = "[::1]:80".parse().expect("test data");
        assert_eq!(normalise_sockaddr(v6), v6);
    }

    /// The same dual-stack connection seen by sock_diag (mapped addresses)
    /// and by a kernel record has one key.
    #[test]
    fn snapshot_and_record_keys_agree() {
        let mut s = SockInfo {
            family: AF_INET6,
            lport: 8080,
            rport: 5000,
            netns: 9,
            ..Default::default()
        };
        s.laddr = mapped([127, 0, 0, 1]);
        s.raddr = mapped([127, 0, 0, 2]);
        let from_record = ConnKey::of(&s).expect("inet6");
        let from_diag = ConnKey::from_addrs(
            9,
            "[::ffff:127.0.0.1]:8080".parse().expect("test data"),
            "[::ffff:127.0.0.2]:5000".parse().expect("test data"),
        );
        assert_eq!(from_record, from_diag);
        let v4 = ConnKey::from_addrs(
            9,
            "127.0.0.1:8080".parse().expect("test data"),
            "127.0.0.2:5000".parse().expect("test data"),
        );
        assert_eq!(v4, from_diag);
    }
}
