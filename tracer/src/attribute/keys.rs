//! Socket identities and addresses as userspace keys them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracer_common::SockInfo;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// A connection's 4-tuple in its namespace, from this host's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub netns: u32,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
}

impl ConnKey {
    pub fn of(sock: &SockInfo) -> Option<ConnKey> {
        Some(ConnKey {
            netns: sock.netns,
            local: (addr(sock.family, &sock.laddr)?, sock.lport),
            remote: (addr(sock.family, &sock.raddr)?, sock.rport),
        })
    }
}

/// The address of a record, `None` for an unknown family. IPv4-mapped IPv6
/// addresses (`::ffff:a.b.c.d`, dual-stack sockets) are shown as IPv4 so one
/// client has one spelling.
pub fn addr(family: u16, raw: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*raw);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

pub fn family_name(family: u16) -> Option<&'static str> {
    match family {
        AF_INET => Some("inet"),
        AF_INET6 => Some("inet6"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_is_shown_as_v4() {
        let mut raw = [0u8; 16];
        raw[10] = 0xff;
        raw[11] = 0xff;
        raw[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            addr(AF_INET6, &raw),
            Some("127.0.0.1".parse().expect("test data"))
        );
        assert_eq!(
            addr(AF_INET6, &[0; 16]),
            Some("::".parse().expect("test data"))
        );
        assert_eq!(addr(7, &raw), None);
    }

    #[test]
    fn key_from_record() {
        let mut s = SockInfo {
            family: AF_INET,
            lport: 80,
            rport: 5000,
            netns: 9,
            ..Default::default()
        };
        s.laddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        s.raddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let k = ConnKey::of(&s).expect("test data");
        assert_eq!(k.local, ("10.0.0.1".parse().expect("test data"), 80));
        assert_eq!(k.remote, ("10.0.0.2".parse().expect("test data"), 5000));
        assert_eq!(k.netns, 9);
    }
}
