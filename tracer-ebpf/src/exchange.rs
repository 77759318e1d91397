//! Exchange timing: per socket, the first send after a receive opens a
//! request, the first receive after it closes it (and the other way round
//! on a listener's connection). Durations are added to one aggregate per
//! (process, endpoint) in `EXCHANGES`; no record per exchange. Requests
//! still open are in `EXCH_SOCKS` (`last` = sent, `since_ns`).
//!
//! Kernel dependencies: `sock:sock_send_length` / `sock:sock_recv_length`
//! (since 6.3; called from `sock_io.rs`), whose `ret` says how many bytes
//! moved. Before 6.3 the hooks sit at tcp_sendmsg/tcp_recvmsg entry, where
//! the byte count of a receive is not known yet: no timing there.
//! Which sockets were accepted: `LISTEN_PORTS`, the (netns, port) set of
//! listeners userspace writes from its snapshots.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns};
use tracer_common::{
    SockInfo,
    exchange::{
        DIR_SERVED, DIR_UPSTREAM, EXCH_BUCKETS, ExchKey, LAST_RECEIVED, LAST_SENT, ListenPortKey,
        SockExch, bucket_of,
    },
};

use crate::{
    kread::fill_sock_info,
    maps::{EXCH_SOCKS, EXCH_ZERO, EXCHANGES, LISTEN_PORTS},
};

/// A send (`received == false`) or receive of `ret` bytes on TCP socket `sk`.
#[inline(always)]
pub fn on_io(sk: u64, ret: i64, received: bool) {
    if ret <= 0 {
        return;
    }
    let now_dir = if received { LAST_RECEIVED } else { LAST_SENT };
    // SAFETY: bpf_ktime_get_boot_ns has no arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let Some(st) = EXCH_SOCKS.get_ptr_mut(&sk) else {
        let fresh = SockExch {
            since_ns: now,
            last: now_dir,
            _pad: 0,
            key: key_of(sk),
        };
        let _ = EXCH_SOCKS.insert(&sk, &fresh, 0);
        return;
    };
    // SAFETY: a valid pointer into this socket's map value; a concurrent
    // update of the same socket (two threads sending at once) can at worst
    // skew one exchange.
    let (last, since, key) = unsafe { ((*st).last, (*st).since_ns, (*st).key) };
    if last == now_dir {
        return;
    }
    // SAFETY: as above.
    unsafe {
        (*st).last = now_dir;
        (*st).since_ns = now;
    }
    // A client's connection: request sent -> first reply byte; a
    // listener's: request read -> first response byte. The other turn is
    // idle time, not measured.
    let ends = match key.dir {
        DIR_UPSTREAM => received,
        DIR_SERVED => !received,
        _ => false,
    };
    if ends {
        add(&key, now.saturating_sub(since));
    }
}

/// Forgets a destroyed socket.
#[inline(always)]
pub fn forget(sk: u64) {
    let _ = EXCH_SOCKS.remove(&sk);
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

/// One exchange of `ns` for `key`.
#[inline(always)]
fn add(key: &ExchKey, ns: u64) {
    let agg = match EXCHANGES.get_ptr_mut(key) {
        Some(a) => a,
        None => {
            let Some(zero) = EXCH_ZERO.get(0) else {
                return;
            };
            let _ = EXCHANGES.insert(key, zero, 1 /* BPF_NOEXIST */);
            match EXCHANGES.get_ptr_mut(key) {
                Some(a) => a,
                None => return,
            }
        }
    };
    let i = bucket_of(ns / 1000) & (EXCH_BUCKETS - 1);
    // SAFETY: `agg` points at a live map value; the adds are atomic because
    // other CPUs update the same endpoint at once.
    unsafe {
        atomic_add(&mut (*agg).count, 1);
        atomic_add(&mut (*agg).busy_ns, ns);
        atomic_add32(&mut (*agg).buckets[i], 1);
    }
}

#[inline(always)]
unsafe fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: the caller passes a valid, aligned pointer into a map value.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            p, v,
        )
    };
}

#[inline(always)]
unsafe fn atomic_add32(p: *mut u32, v: u32) {
    // SAFETY: as `atomic_add`.
    unsafe {
        core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(
            p, v,
        )
    };
}

const _: () = assert!(EXCH_BUCKETS.is_power_of_two());
