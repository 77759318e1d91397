//! sock_diag (`NETLINK_SOCK_DIAG`, `inet_diag`) dumps of TCP sockets.
//!
//! Requests are built with `netlink-packet-sock-diag`; responses are walked
//! by hand on top of its header parser so that one odd attribute (an older
//! kernel's shorter skmeminfo, say) costs that field, not the whole dump.

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{
    ErrorBuffer, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NlasIterator, Parseable,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY, SockDiagMessage,
    constants::{INET_DIAG_INFO, INET_DIAG_SKMEMINFO},
    inet::{ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags},
};
use netlink_sys::Socket;

use super::{SnapshotError, SocketEntry};

/// Every TCP state bit, including NEW_SYN_RECV (12) and BOUND_INACTIVE (13)
/// that the crate's `StateFlags::all()` does not know.
pub const ALL_STATES: u32 = u32::MAX;

/// `sizeof(struct inet_diag_msg)`.
const INET_DIAG_MSG_LEN: usize = 72;
/// Index of `SK_MEMINFO_DROPS` in the skmeminfo `u32` array.
const SK_MEMINFO_DROPS: usize = 8;
/// Dump chunks are at most 32 KiB (`netlink_recvmsg` caps
/// `max_recvmsg_len`); twice that never truncates.
const RECV_BUF: usize = 64 * 1024;

/// Dumps IPv4 and IPv6 TCP sockets in `states` with skmeminfo over a
/// sock_diag socket opened in namespace `netns`.
pub(crate) fn dump(
    socket: &Socket,
    netns: u32,
    states: u32,
) -> Result<Vec<SocketEntry>, SnapshotError> {
    dump_with_room(socket, netns, states, 0)
}

/// [`dump`] into a vector with room for `room` entries to start with.
pub(crate) fn dump_with_room(
    socket: &Socket,
    netns: u32,
    states: u32,
    room: usize,
) -> Result<Vec<SocketEntry>, SnapshotError> {
    let mut out = Vec::with_capacity(room.min(4 << 20));
    dump_family(socket, AF_INET, states, next_seq(), netns, &mut out)?;
    match dump_family(socket, AF_INET6, states, next_seq(), netns, &mut out) {
        // A kernel without IPv6 has no inet6 diag handler.
        Err(SnapshotError::Kernel(e))
            if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EAFNOSUPPORT)) => {}
        other => other?,
    }
    Ok(out)
}

/// A sequence number no earlier dump on any kept socket used, so replies
/// of an abandoned dump are never taken for this one's.
fn next_seq() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The bytes of one `SOCK_DIAG_BY_FAMILY` dump request.
pub(crate) fn build_request(family: u8, states: u32, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let socket_id = if family == AF_INET6 {
        SocketId::new_v6()
    } else {
        SocketId::new_v4()
    };
    let mut message = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::SKMEMINFO | ExtensionFlags::INFO,
            states: StateFlags::from_bits_retain(states),
            socket_id,
        })
        .into(),
    );
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    buf
}

fn dump_family(
    socket: &Socket,
    family: u8,
    states: u32,
    seq: u32,
    netns: u32,
    out: &mut Vec<SocketEntry>,
) -> Result<(), SnapshotError> {
    let request = build_request(family, states, seq);
    socket.send(&request, 0).map_err(SnapshotError::Netlink)?;
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let n = match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SnapshotError::Netlink(e)),
        };
        if n == 0 {
            return Err(SnapshotError::Decode(
                "sock_diag socket closed mid-dump".into(),
            ));
        }
        if n > buf.len() {
            return Err(SnapshotError::Decode(format!("{n}-byte message truncated")));
        }
        if parse_dump_chunk(&buf[..n], seq, netns, out)? == Chunk::Done {
            return Ok(());
        }
    }
}

/// Whether a dump continues after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    More,
    Done,
}

/// Walks the netlink messages of one `recv()` of a dump with sequence number
/// `seq`, appending one entry per `inet_diag_msg`. Messages of other
/// sequence numbers are skipped.
pub fn parse_dump_chunk(
    buf: &[u8],
    seq: u32,
    netns: u32,
    out: &mut Vec<SocketEntry>,
) -> Result<Chunk, SnapshotError> {
    let mut offset = 0;
    while offset < buf.len() {
        let msg = NetlinkBuffer::new_checked(&buf[offset..])
            .map_err(|e| SnapshotError::Decode(e.to_string()))?;
        let len = msg.length() as usize;
        // new_checked guarantees 16 <= len <= remaining bytes.
        offset += (len + 3) & !3;
        if msg.sequence_number() != seq {
            continue;
        }
        let payload = msg.payload();
        match msg.message_type() {
            NLMSG_DONE => {
                // NLMSG_DONE carries the dump's final status as an int.
                let status = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if status < 0 {
                    return Err(SnapshotError::Kernel(io::Error::from_raw_os_error(-status)));
                }
                return Ok(Chunk::Done);
            }
            NLMSG_ERROR => {
                let err = ErrorBuffer::new_checked(payload)
                    .map_err(|e| SnapshotError::Decode(e.to_string()))?;
                if let Some(code) = err.code() {
                    return Err(SnapshotError::Kernel(io::Error::from_raw_os_error(
                        -code.get(),
                    )));
                }
            }
            SOCK_DIAG_BY_FAMILY => out.push(parse_inet_diag_msg(payload, netns)?),
            _ => {}
        }
    }
    Ok(Chunk::More)
}

/// One `struct inet_diag_msg` and its attributes.
pub fn parse_inet_diag_msg(payload: &[u8], netns: u32) -> Result<SocketEntry, SnapshotError> {
    let header = InetResponseHeader::parse(payload)
        .map_err(|e| SnapshotError::Decode(format!("inet_diag_msg: {e}")))?;
    let id = &header.socket_id;
    let (local, remote) = (
        socket_addr(id.source_address, id.source_port),
        socket_addr(id.destination_address, id.destination_port),
    );
    // idiag_cookie is `__u32[2]`, low word first, each in host order.
    let lo = u32::from_ne_bytes([id.cookie[0], id.cookie[1], id.cookie[2], id.cookie[3]]);
    let hi = u32::from_ne_bytes([id.cookie[4], id.cookie[5], id.cookie[6], id.cookie[7]]);

    let mut drops = None;
    let mut tcp = None;
    if let Some(attrs) = payload.get(INET_DIAG_MSG_LEN..) {
        for nla in NlasIterator::new(attrs) {
            // A malformed attribute ends the walk, not the entry.
            let Ok(nla) = nla else { break };
            if nla.kind() == INET_DIAG_SKMEMINFO {
                drops = skmeminfo_word(nla.value(), SK_MEMINFO_DROPS);
            } else if nla.kind() == INET_DIAG_INFO {
                tcp = super::tcpinfo::parse_tcp_info(nla.value());
            }
        }
    }
    Ok(SocketEntry {
        netns,
        family: u16::from(header.family),
        state: header.state,
        local,
        remote,
        inode: u64::from(header.inode),
        uid: header.uid,
        rqueue: header.recv_queue,
        wqueue: header.send_queue,
        drops,
        tcp,
        cookie: u64::from(lo) | (u64::from(hi) << 32),
    })
}

fn skmeminfo_word(value: &[u8], index: usize) -> Option<u32> {
    let b = value.get(index * 4..index * 4 + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Addresses in the one spelling of `tracer_common::socket_id`: a
/// dual-stack socket's IPv4-mapped peer is its IPv4 address.
fn socket_addr(ip: IpAddr, port: u16) -> SocketAddr {
    tracer_common::socket_id::normalise_sockaddr(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NLM_F_MULTIPART;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A `SOCK_DIAG_BY_FAMILY` message as the kernel lays it out.
    fn diag_msg(seq: u32, family: u8, state: u8, skmeminfo: Option<&[u32]>) -> Vec<u8> {
        let mut body = vec![family, state, 0, 0];
        body.extend_from_slice(&8080u16.to_be_bytes()); // sport
        body.extend_from_slice(&0u16.to_be_bytes()); // dport
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        if family == AF_INET {
            src[..4].copy_from_slice(&[127, 0, 0, 1]);
            dst[..4].copy_from_slice(&[10, 1, 2, 3]);
        } else {
            src = Ipv6Addr::LOCALHOST.octets();
        }
        body.extend_from_slice(&src);
        body.extend_from_slice(&dst);
        body.extend_from_slice(&0u32.to_ne_bytes()); // if
        body.extend_from_slice(&0x1122_3344u32.to_ne_bytes()); // cookie lo
        body.extend_from_slice(&0x55u32.to_ne_bytes()); // cookie hi
        for v in [0u32, 3, 4, 1000, 4242] {
            // expires, rqueue, wqueue, uid, inode
            body.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(body.len(), INET_DIAG_MSG_LEN);
        if let Some(words) = skmeminfo {
            let len = 4 + 4 * words.len();
            body.extend_from_slice(&(len as u16).to_ne_bytes());
            body.extend_from_slice(&INET_DIAG_SKMEMINFO.to_ne_bytes());
            for w in words {
                body.extend_from_slice(&w.to_ne_bytes());
            }
        }
        // INET_DIAG_SHUTDOWN (u8, padded)
        body.extend_from_slice(&5u16.to_ne_bytes());
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&[0, 0, 0, 0]);
        nlmsg(SOCK_DIAG_BY_FAMILY, seq, &body)
    }

    fn nlmsg(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&NLM_F_MULTIPART.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn snapshot_request_bytes() {
        let req = build_request(AF_INET, 1 << 10, 7);
        // nlmsghdr (16) + inet_diag_req_v2 (56)
        assert_eq!(req.len(), 72);
        assert_eq!(
            u32::from_ne_bytes(req[0..4].try_into().expect("test data")),
            72
        );
        assert_eq!(
            u16::from_ne_bytes(req[4..6].try_into().expect("test data")),
            SOCK_DIAG_BY_FAMILY
        );
        assert_eq!(
            u16::from_ne_bytes(req[6..8].try_into().expect("test data")),
            0x301
        );
        assert_eq!(
            u32::from_ne_bytes(req[8..12].try_into().expect("test data")),
            7
        );
        // Extensions: skmeminfo (drops) and tcp_info (byte counters).
        assert_eq!(
            &req[16..20],
            &[AF_INET, IPPROTO_TCP, (1 << 6) | (1 << 1), 0]
        );
        assert_eq!(
            u32::from_ne_bytes(req[20..24].try_into().expect("test data")),
            1 << 10
        );
        let all = build_request(AF_INET6, ALL_STATES, 1);
        assert_eq!(all[16], AF_INET6);
        assert_eq!(
            u32::from_ne_bytes(all[20..24].try_into().expect("test data")),
            u32::MAX
        );
    }

    #[test]
    fn snapshot_parses_built_v4_listener() {
        let words = [0u32, 212_992, 0, 16384, 0, 0, 0, 0, 17];
        let msg = diag_msg(1, AF_INET, 10, Some(&words));
        let entry = parse_inet_diag_msg(&msg[16..], 99).expect("parse");
        assert_eq!(entry.netns, 99);
        assert_eq!(entry.family, 2);
        assert_eq!(entry.state, 10);
        assert_eq!(entry.local, "127.0.0.1:8080".parse().expect("test data"));
        assert_eq!(entry.remote, "10.1.2.3:0".parse().expect("test data"));
        assert_eq!((entry.rqueue, entry.wqueue), (3, 4));
        assert_eq!((entry.uid, entry.inode), (1000, 4242));
        assert_eq!(entry.drops, Some(17));
        assert_eq!(entry.cookie, 0x55_1122_3344);
    }

    /// A dual-stack listener's connection from an IPv4 client: sock_diag
    /// says `::ffff:127.0.0.1`; the entry says 127.0.0.1, as events do.
    #[test]
    fn snapshot_v4_mapped_addresses_are_v4() {
        let mut msg = diag_msg(1, AF_INET6, 8, None);
        let mut mapped = [0u8; 16];
        mapped[10..12].copy_from_slice(&[0xff, 0xff]);
        mapped[12..].copy_from_slice(&[127, 0, 0, 1]);
        msg[16 + 8..16 + 24].copy_from_slice(&mapped);
        msg[16 + 24..16 + 40].copy_from_slice(&mapped);
        let entry = parse_inet_diag_msg(&msg[16..], 1).expect("parse");
        assert_eq!(entry.family, 10);
        assert_eq!(entry.local, "127.0.0.1:8080".parse().expect("test data"));
        assert_eq!(entry.remote, "127.0.0.1:0".parse().expect("test data"));
    }

    #[test]
    fn snapshot_short_skmeminfo_means_no_drops() {
        // Kernels before SK_MEMINFO_DROPS sent 8 words.
        let msg = diag_msg(1, AF_INET6, 8, Some(&[1, 2, 3, 4, 5, 6, 7, 8]));
        let entry = parse_inet_diag_msg(&msg[16..], 1).expect("parse");
        assert_eq!(entry.family, 10);
        assert_eq!(entry.state, 8);
        assert_eq!(entry.local.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(entry.drops, None);
        let none = diag_msg(1, AF_INET, 6, None);
        assert_eq!(
            parse_inet_diag_msg(&none[16..], 1).expect("parse").drops,
            None
        );
    }

    #[test]
    fn snapshot_chunk_walk_done_error_and_foreign_seq() {
        let mut chunk = diag_msg(5, AF_INET, 10, Some(&[0; 9]));
        chunk.extend(diag_msg(4, AF_INET, 1, None)); // stale dump: skipped
        chunk.extend(diag_msg(5, AF_INET, 1, None));
        let mut out = Vec::new();
        assert_eq!(
            parse_dump_chunk(&chunk, 5, 3, &mut out).expect("test data"),
            Chunk::More
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].state, 1);
        assert_eq!(out[0].local.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));

        let done = nlmsg(NLMSG_DONE, 5, &0i32.to_ne_bytes());
        assert_eq!(
            parse_dump_chunk(&done, 5, 3, &mut out).expect("test data"),
            Chunk::Done
        );

        let failed = nlmsg(NLMSG_DONE, 5, &(-libc::EINTR).to_ne_bytes());
        let err = parse_dump_chunk(&failed, 5, 3, &mut out).unwrap_err();
        assert!(matches!(err, SnapshotError::Kernel(e) if e.raw_os_error() == Some(libc::EINTR)));

        let mut body = (-libc::EPERM).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0; 16]); // the request's header
        let refused = nlmsg(NLMSG_ERROR, 5, &body);
        let err = parse_dump_chunk(&refused, 5, 3, &mut out).unwrap_err();
        assert!(err.is_permission());

        assert!(parse_dump_chunk(&[1, 2, 3], 5, 3, &mut out).is_err());
    }

    /// A chunk recorded from this kernel (6.18): `ip netns add`, `lo` up,
    /// a listener on 127.0.0.1 with backlog 4, three connects never
    /// accepted, then one `SOCK_DIAG_BY_FAMILY` dump of LISTEN sockets with
    /// INET_DIAG_SKMEMINFO (see fixtures/snapshot/README.md).
    #[test]
    fn snapshot_parses_recorded_kernel_chunk() {
        let text = include_str!("../../tests/fixtures/snapshot/inet_diag_listen.hex");
        let bytes = hex(text);
        let mut out = Vec::new();
        let status = parse_dump_chunk(&bytes, 1, 42, &mut out).expect("parse recorded");
        assert_eq!(status, Chunk::More);
        assert_eq!(out.len(), 1);
        let l = &out[0];
        assert_eq!(l.state, 10);
        assert_eq!(l.family, 2);
        assert_eq!(l.local.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!((l.rqueue, l.wqueue), (3, 4));
        assert!(l.inode != 0 && l.cookie != 0);
        assert_eq!(l.drops, Some(0));
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.bytes())
            .filter(u8::is_ascii_hexdigit)
            .collect();
        digits
            .chunks(2)
            .map(|p| {
                u8::from_str_radix(std::str::from_utf8(p).expect("test data"), 16)
                    .expect("test data")
            })
            .collect()
    }
}
