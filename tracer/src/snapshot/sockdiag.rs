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

use tracer_common::socket_id::ConnKey;

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
    let socket_id = if family == AF_INET6 {
        SocketId::new_v6()
    } else {
        SocketId::new_v4()
    };
    request_bytes(NLM_F_REQUEST | NLM_F_DUMP, family, states, socket_id, seq)
}

/// The bytes of one exact `SOCK_DIAG_BY_FAMILY` request: the socket of
/// `key`'s 4-tuple (no dump; the kernel looks it up as an incoming packet
/// of that connection would, `inet_diag_find_one_icsk`).
pub(crate) fn build_lookup(key: &ConnKey, seq: u32) -> Vec<u8> {
    let family = if key.local.0.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    };
    let socket_id = SocketId {
        source_port: key.local.1,
        destination_port: key.remote.1,
        source_address: key.local.0,
        destination_address: key.remote.0,
        interface_id: 0,
        // INET_DIAG_NOCOOKIE: match by the 4-tuple alone.
        cookie: [0xff; 8],
    };
    request_bytes(NLM_F_REQUEST, family, ALL_STATES, socket_id, seq)
}

/// A TCP `inet_diag_req_v2` with the extensions diagnose reads of a socket
/// (skmeminfo for drops, tcp_info for byte counters), serialised.
fn request_bytes(flags: u16, family: u8, states: u32, socket_id: SocketId, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
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

/// The socket of `key`'s 4-tuple as the kernel has it now, over a
/// sock_diag socket of its namespace `netns`; `None` when there is none
/// (`ENOENT`). Unlike a dump, a lookup cannot skip a socket because the
/// connection table changed meanwhile.
pub(crate) fn lookup(
    socket: &Socket,
    netns: u32,
    key: &ConnKey,
) -> Result<Option<SocketEntry>, SnapshotError> {
    let seq = next_seq();
    socket
        .send(&build_lookup(key, seq), 0)
        .map_err(SnapshotError::Netlink)?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = recv_chunk(socket, &mut buf, "lookup")?;
        let mut out = Vec::new();
        match parse_dump_chunk(&buf[..n], seq, netns, &mut out) {
            Err(SnapshotError::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
            // The one reply of this sequence number (others are skipped).
            Ok(_) if !out.is_empty() => return Ok(out.pop()),
            Ok(_) => {}
        }
    }
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
        let n = recv_chunk(socket, &mut buf, "dump")?;
        if parse_dump_chunk(&buf[..n], seq, netns, out)? == Chunk::Done {
            return Ok(());
        }
    }
}

/// One `recv()` of a reply into `buf` (retried when interrupted): its
/// length, never more than `buf` holds. `what`: "dump" or "lookup".
fn recv_chunk(socket: &Socket, buf: &mut [u8], what: &str) -> Result<usize, SnapshotError> {
    let n = loop {
        match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SnapshotError::Netlink(e)),
        }
    };
    if n == 0 {
        return Err(SnapshotError::Decode(format!(
            "sock_diag socket closed mid-{what}"
        )));
    }
    if n > buf.len() {
        return Err(SnapshotError::Decode(format!("{n}-byte message truncated")));
    }
    Ok(n)
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
#[path = "sockdiag_tests.rs"]
mod tests;
