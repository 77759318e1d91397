//! Request bytes, recorded kernel replies and parsing of sock_diag dumps.

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
            u8::from_str_radix(std::str::from_utf8(p).expect("test data"), 16).expect("test data")
        })
        .collect()
}

#[test]
fn snapshot_lookup_request_bytes() {
    use std::net::{IpAddr, Ipv4Addr};
    let key = tracer_common::socket_id::ConnKey {
        netns: 1,
        local: (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 8080),
        remote: (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 40000),
    };
    let req = build_lookup(&key, 9);
    assert_eq!(req.len(), 72);
    // NLM_F_REQUEST alone: one socket, not a dump.
    assert_eq!(
        u16::from_ne_bytes(req[6..8].try_into().expect("test data")),
        0x1
    );
    assert_eq!(
        &req[16..20],
        &[AF_INET, IPPROTO_TCP, (1 << 6) | (1 << 1), 0]
    );
    // inet_diag_sockid: sport, dport (network order), src, dst, if, cookie.
    assert_eq!(&req[24..28], &[0x1f, 0x90, 0x9c, 0x40]);
    assert_eq!(&req[28..32], &[127, 0, 0, 1]);
    assert_eq!(&req[44..48], &[127, 0, 0, 2]);
    assert_eq!(&req[64..72], &[0xff; 8], "INET_DIAG_NOCOOKIE");
    let v6 = tracer_common::socket_id::ConnKey {
        netns: 1,
        local: ("::1".parse().expect("addr"), 1),
        remote: ("::1".parse().expect("addr"), 2),
    };
    assert_eq!(build_lookup(&v6, 1)[16], AF_INET6);
}
