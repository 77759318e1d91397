//! Exchange timing: per socket, the first send after a receive opens a
//! request, the first receive after it closes it (and the other way round
//! on a listener's connection). Durations are added to one per-CPU
//! aggregate per (process, endpoint) in `EXCHANGES`; no record per
//! exchange. The per-socket state lives beside the socket's owner in
//! `OWNERS` (`SockOwner::exch`), so a send or receive by the known owner
//! costs one map lookup; requests still open are read from there.
//!
//! Kernel dependencies (called from `sock_io.rs`), each giving the bytes
//! moved: `sock:sock_send_length` / `sock:sock_recv_length` (since 6.3,
//! their `ret`), else fexit on `tcp_sendmsg` / `tcp_recvmsg` (their return
//! value). The kprobe rung sees no byte count: no timing there.
//! Which sockets were accepted: `LISTEN_PORTS`, the (netns, port) set of
//! listeners userspace writes from its snapshots, to which `tcp_state.rs`
//! adds each listener as it starts (`sock:inet_sock_set_state` -> LISTEN).
//! The storm keys of `storm.rs` use it too.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns};
use tracer_common::{
    SockInfo,
    exchange::{
        DIR_SERVED, DIR_UPSTREAM, EXCH_BUCKETS, ExchAgg, ExchKey, LAST_RECEIVED, LAST_SENT,
        ListenPortKey, SockExch, bucket_of, outstanding,
    },
};

use crate::{
    kread::{fill_sock_info, read_at},
    maps::{EXCH_ZERO, EXCHANGES, LISTEN_PORTS, offsets},
};

/// A send (`received == false`) or receive of `ret` bytes on TCP socket
/// `sk` by its owner, whose exchange state is `st`. A request that ends is
/// one exchange; every start and end moves the open-request totals.
#[inline(always)]
pub fn on_io(sk: u64, st: &mut SockExch, ret: i64, received: bool) {
    if ret <= 0 {
        return;
    }
    let now_dir = if received { LAST_RECEIVED } else { LAST_SENT };
    if st.last == now_dir {
        return;
    }
    // SAFETY: bpf_ktime_get_boot_ns has no arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let (last, since) = (st.last, st.since_ns);
    let first = last == 0;
    if first {
        // The owner's first send or receive seen: which aggregate, from now.
        st.key = key_of(sk);
    }
    st.last = now_dir;
    st.since_ns = now;
    let Some(agg) = agg_of(&st.key) else { return };
    // SAFETY: this CPU's value of a live per-CPU map element; BPF programs
    // do not preempt each other on a CPU. The wrapping differences are
    // summed over CPUs by userspace.
    let a = unsafe { &mut *agg };
    if first {
        a.sockets = a.sockets.wrapping_add(1);
    } else if outstanding(st.key.dir, last) {
        // A client's connection: request sent -> first reply byte; a
        // listener's: request read -> first response byte. The other turn
        // is idle time, not measured.
        let ns = now.saturating_sub(since);
        a.count += 1;
        a.busy_ns += ns;
        a.buckets[bucket_of(ns / 1000) & (EXCH_BUCKETS - 1)] += 1;
        a.open = a.open.wrapping_sub(1);
        a.open_since = a.open_since.wrapping_sub(since);
    }
    if outstanding(st.key.dir, now_dir) {
        a.open = a.open.wrapping_add(1);
        a.open_since = a.open_since.wrapping_add(now);
    }
}

/// The aggregate a socket's exchanges go to: accepted (its local port is a
/// listener's) -> the local port; else the remote endpoint.
#[inline(always)]
fn key_of(sk: u64) -> ExchKey {
    let mut info = SockInfo::default();
    fill_sock_info(sk, &mut info);
    let lp = ListenPortKey {
        netns: info.netns,
        port: info.lport,
        _pad: 0,
    };
    // SAFETY: a read-only lookup; the value is not kept.
    let accepted = unsafe { LISTEN_PORTS.get(&lp) }.is_some();
    let mut key = ExchKey {
        // The upper half of pid_tgid is the thread-group id.
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        netns: info.netns,
        family: info.family,
        ..ExchKey::default()
    };
    if accepted {
        key.dir = DIR_SERVED;
        key.port = info.lport;
    } else {
        key.dir = DIR_UPSTREAM;
        key.port = info.rport;
        key.addr = info.raddr;
    }
    key
}

/// Adds a listener (entering LISTEN, its port bound), as its LISTEN
/// record's `info` describes it (`fill_sock_info`), to `LISTEN_PORTS` at
/// once, so its connections count as accepted before the next snapshot
/// says so. Userspace's snapshots remove the ports of closed listeners
/// (several listeners may share a port: one closing does not end it).
#[inline(always)]
pub fn note_listener(info: &SockInfo) {
    note_port(info.netns, info.lport);
}

/// [`note_listener`] for listener `sk` when there is no record to take its
/// port and namespace from (the ring buffer was full): reads them.
#[inline(always)]
pub fn note_listener_sk(sk: u64) {
    let o = offsets();
    let port: u16 = read_at(sk, o.skc_num).unwrap_or(0);
    let net: u64 = read_at(sk, o.skc_net).unwrap_or(0);
    note_port(read_at(net, o.net_ns_inum).unwrap_or(0), port);
}

/// Puts (netns, port) in `LISTEN_PORTS`; nothing for an unknown one.
#[inline(always)]
fn note_port(netns: u32, port: u16) {
    if port == 0 || netns == 0 {
        return;
    }
    let lp = ListenPortKey {
        netns,
        port,
        _pad: 0,
    };
    let _ = LISTEN_PORTS.insert(&lp, &1, 0);
}

/// A socket whose exchange state is `st` leaves its aggregate (destroyed,
/// or another process owns it now): a request still open there is
/// abandoned (no exchange).
#[inline(always)]
pub fn leave(st: &SockExch) {
    if st.key.dir == 0 {
        return;
    }
    let Some(agg) = agg_of(&st.key) else { return };
    // SAFETY: as in `on_io`.
    let a = unsafe { &mut *agg };
    a.sockets = a.sockets.wrapping_sub(1);
    if outstanding(st.key.dir, st.last) {
        a.open = a.open.wrapping_sub(1);
        a.open_since = a.open_since.wrapping_sub(st.since_ns);
    }
}

/// This CPU's value of `key`'s aggregate, created zeroed when missing.
#[inline(always)]
fn agg_of(key: &ExchKey) -> Option<*mut ExchAgg> {
    if let Some(a) = EXCHANGES.get_ptr_mut(key) {
        return Some(a);
    }
    let zero = EXCH_ZERO.get(0)?;
    let _ = EXCHANGES.insert(key, zero, 1 /* BPF_NOEXIST */);
    EXCHANGES.get_ptr_mut(key)
}

const _: () = assert!(EXCH_BUCKETS.is_power_of_two());
