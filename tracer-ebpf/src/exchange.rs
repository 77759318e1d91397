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
//! listeners userspace writes from its snapshots.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns};
use tracer_common::{
    SockInfo,
    exchange::{
        DIR_SERVED, DIR_UPSTREAM, EXCH_BUCKETS, ExchAgg, ExchKey, LAST_RECEIVED, LAST_SENT,
        ListenPortKey, SockExch, bucket_of,
    },
};

use crate::{
    kread::fill_sock_info,
    maps::{EXCH_ZERO, EXCHANGES, LISTEN_PORTS},
};

/// A send (`received == false`) or receive of `ret` bytes on TCP socket
/// `sk` by its owner, whose exchange state is `st`.
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
    st.last = now_dir;
    st.since_ns = now;
    if last == 0 {
        // The owner's first send or receive seen: which aggregate, from now.
        st.key = key_of(sk);
        if let Some(agg) = agg_of(&st.key) {
            // SAFETY: this CPU's slot of a live element (see `add`).
            unsafe { (*agg).sockets = (*agg).sockets.wrapping_add(1) };
        }
        return;
    }
    // A client's connection: request sent -> first reply byte; a
    // listener's: request read -> first response byte. The other turn is
    // idle time, not measured.
    let ends = match st.key.dir {
        DIR_UPSTREAM => received,
        DIR_SERVED => !received,
        _ => false,
    };
    if ends {
        add(&st.key, now.saturating_sub(since));
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

/// A socket whose exchange state is `st` leaves its aggregate (destroyed,
/// or another process owns it now).
#[inline(always)]
pub fn leave(st: &SockExch) {
    if st.key.dir == 0 {
        return;
    }
    if let Some(agg) = agg_of(&st.key) {
        // SAFETY: this CPU's slot of a live element (see `add`).
        unsafe { (*agg).sockets = (*agg).sockets.wrapping_sub(1) };
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

/// One exchange of `ns` for `key`, in this CPU's slot.
#[inline(always)]
fn add(key: &ExchKey, ns: u64) {
    let Some(agg) = agg_of(key) else { return };
    let i = bucket_of(ns / 1000) & (EXCH_BUCKETS - 1);
    // SAFETY: `agg` points at this CPU's value of a live per-CPU map
    // element; BPF programs do not preempt each other on a CPU.
    unsafe {
        (*agg).count += 1;
        (*agg).busy_ns += ns;
        (*agg).buckets[i] += 1;
    }
}

const _: () = assert!(EXCH_BUCKETS.is_power_of_two());
