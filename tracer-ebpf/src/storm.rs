//! RST storms counted in the kernel, for the reset programs
//! (`tcp_reset.rs`: tcp:tcp_send_reset, tcp:tcp_receive_reset;
//! `tcp_reply_reset.rs`: tcp_v4_send_reset / tcp_v6_send_reset).
//!
//! Per key (network namespace, the service's port, reason, kernel-side
//! owner, direction) and CPU, the first `Filter::storm_per_cpu` resets of every
//! second go out as ring-buffer records; the rest of that second are only
//! counted in `RST_STORMS` (a value per CPU: no atomics across CPUs; the
//! lookup takes no lock), with the latest endpoints and the first counted reset's
//! details. The service's port is the local one for this host's services
//! and for packets that found no socket, the remote one for connections
//! this host made (a refused connect's RST arrives at a new local port each
//! time): `keyed_by_remote`, decided once per reset by `mark_side`, which
//! puts it in the reset's `PEER_IS_SERVICE` flag for its record too (also
//! with counting off). The rate itself is kept in `RST_RATES`, a per-CPU
//! table indexed by a hash of the key. A counted reset costs the socket (or
//! packet) description, the owner lookup, one time helper, one array and
//! one hash lookup (and, for an established socket, one lookup of its local
//! port among the listeners, `LISTEN_PORTS`, which a recorded reset pays
//! too): no ring reservation, no task reads, no inode walk. Depends on no kernel function of its own.

use aya_ebpf::helpers::{bpf_ktime_get_boot_ns, generated};
use tracer_common::{
    SockInfo,
    exchange::ListenPortKey,
    sock_flags,
    storm::{RstStormAgg, RstStormKey, STORM_SAMPLES},
};

use crate::{
    kread::{Probe, TCP_LISTEN, TCP_NEW_SYN_RECV, TCP_SYN_SENT, described_sock_ino},
    maps::{
        LISTEN_PORTS, RST_RATE_SLOTS, RST_RATES, RST_STORMS, STORM_SCRATCH, count_drop, filter,
    },
    tcp_reset::describe,
};

const NS_PER_SEC: u64 = 1_000_000_000;

/// Whether this reset is counted in `RST_STORMS` instead of recorded:
/// `false` for the first ones of its key in this second on this CPU (and
/// always when counting is off, `--per-rst`). `key` is room for the storm
/// key off the stack (tcp_reset::emit). The key's side is the one
/// [`mark_side`] put in `sock.flags` (`PEER_IS_SERVICE`).
#[inline(always)]
pub fn counted(
    kind: u16,
    reason: u32,
    sock: &SockInfo,
    owner_tgid: u32,
    key: &mut RstStormKey,
    clock: &mut TickClock,
) -> bool {
    let threshold = filter().storm_per_cpu;
    if threshold == 0 {
        return false;
    }
    let by_remote = sock.flags & sock_flags::PEER_IS_SERVICE != 0;
    *key = RstStormKey {
        netns: sock.netns,
        reason,
        owner_tgid,
        port: if by_remote { sock.rport } else { sock.lport },
        kind: kind as u8,
        by_remote: by_remote as u8,
    };
    let now = clock.now();
    if !over_threshold(key, now / NS_PER_SEC, threshold) {
        return false;
    }
    match RST_STORMS.get_ptr_mut(&*key) {
        // SAFETY: this CPU's value of the entry (per-CPU map). An entry
        // created on another CPU starts zeroed here: nothing counted.
        Some(agg) => add(unsafe { &mut *agg }, kind, reason, sock, now, by_remote),
        None => start(key, kind, reason, sock, now, by_remote),
    }
    true
}

/// The counted path's clock: boot time read once per clock tick and CPU.
/// Each reset reads `jiffies` (`bpf_jiffies64`, a load); only when it
/// moved is the boot clock read again (`bpf_ktime_get_boot_ns` reads the
/// clock source: some 50 ns a reset on a VM, measured). So a counted
/// reset's time is the boot time at the start of its tick, at most one tick
/// (1-10 ms) early: it times the storm line (`RstStormAgg::last_ns`) and
/// picks its second. Records, and a storm's first counted reset, read the
/// boot clock themselves. A program that interrupts this one may update it
/// between the two writes: the time stays within a tick.
#[repr(C)]
pub struct TickClock {
    jiffies: u64,
    boot_ns: u64,
}

impl TickClock {
    #[inline(always)]
    fn now(&mut self) -> u64 {
        // SAFETY: helpers without arguments (bpf_jiffies64: 5.5+).
        let jiffies = unsafe { generated::bpf_jiffies64() };
        if jiffies != self.jiffies || self.boot_ns == 0 {
            // SAFETY: as above.
            self.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
            self.jiffies = jiffies;
        }
        self.boot_ns
    }
}

/// Sets `PEER_IS_SERVICE` in `sock.flags` when [`keyed_by_remote`]: once
/// per reset, before the storm check and whether or not storms are
/// counted, so every reset record and storm key carries the same decision
/// (and `LISTEN_PORTS` is looked up once).
#[inline(always)]
pub fn mark_side(sock: &mut SockInfo) {
    if keyed_by_remote(sock) {
        sock.flags |= sock_flags::PEER_IS_SERVICE;
    }
}

/// Whether the storm key names the remote port: for a socket this host
/// connected (in SYN_SENT, or established on a local port that no listener
/// of its namespace has, `LISTEN_PORTS`), whose local port is new each
/// time. Packets without a socket, listeners, request sockets and the
/// connections of a listening port keep the local port.
#[inline(always)]
fn keyed_by_remote(sock: &SockInfo) -> bool {
    if sock.flags & sock_flags::HAS_SK == 0 {
        return false;
    }
    match sock.state {
        TCP_SYN_SENT => true,
        TCP_LISTEN | TCP_NEW_SYN_RECV => false,
        _ => {
            let lp = ListenPortKey {
                netns: sock.netns,
                port: sock.lport,
                _pad: 0,
            };
            // SAFETY: a read-only lookup; the value is not kept.
            unsafe { LISTEN_PORTS.get(&lp) }.is_none()
        }
    }
}

/// The socket inode of a storm's first counted reset (userspace may
/// resolve the line's owner by it), read once per key and second.
#[inline(always)]
fn sock_ino_of(sock: &SockInfo) -> u64 {
    described_sock_ino::<Probe>(sock, sock.skaddr)
}

/// Counts one more reset of `key` this second on this CPU in its rate slot;
/// whether that is past the threshold. Two slots per hash (2-way): a key
/// not in either takes the one of an older second or, in the same second,
/// the one that let fewer through, so a storm's slot survives a flood of
/// one-off keys (each reset from another port) hashing beside it.
#[inline(always)]
fn over_threshold(key: &RstStormKey, sec: u64, threshold: u32) -> bool {
    let even = slot(key) & !1;
    let (Some(a), Some(b)) = (RST_RATES.get_ptr_mut(even), RST_RATES.get_ptr_mut(even | 1)) else {
        return false;
    };
    // SAFETY: two slots of this CPU's part of a per-CPU array; a reset
    // program that interrupts this one may take one over, which at worst
    // lets one more reset through as a record.
    let (a, b) = unsafe { (&mut *a, &mut *b) };
    let rate = if a.key == *key {
        a
    } else if b.key == *key {
        b
    } else {
        let victim = if (a.window_sec, a.passed) <= (b.window_sec, b.passed) {
            a
        } else {
            b
        };
        victim.key = *key;
        victim.window_sec = 0;
        victim
    };
    if rate.window_sec != sec {
        rate.window_sec = sec;
        rate.passed = 1;
        return false;
    }
    if rate.passed < threshold {
        rate.passed += 1;
        return false;
    }
    true
}

/// The key's slot in RST_RATES: a multiplicative hash of its fields.
#[inline(always)]
fn slot(key: &RstStormKey) -> u32 {
    let mixed = (u64::from(key.netns) << 32 | u64::from(key.reason))
        ^ (u64::from(key.owner_tgid) << 32
            | u64::from(key.port) << 16
            | u64::from(key.kind) << 8
            | u64::from(key.by_remote))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed.wrapping_mul(0xff51_afd7_ed55_8ccd) >> 54) as u32 & (RST_RATE_SLOTS - 1)
}

/// One more counted reset in this CPU's value of an existing entry.
#[inline(always)]
fn add(agg: &mut RstStormAgg, kind: u16, reason: u32, sock: &SockInfo, now: u64, by_remote: bool) {
    let n = agg.count;
    remember(agg, n, sock, by_remote);
    if n == 0 {
        // SAFETY: helper without arguments (a record's exact time).
        describe(&mut agg.first, kind, reason, sock, unsafe {
            bpf_ktime_get_boot_ns()
        });
        agg.first.sock.ino = sock_ino_of(sock);
    }
    agg.last_ns = now;
    // SAFETY: a valid, aligned u64 in this CPU's value. Atomic (a plain
    // BPF_XADD: the result is unused, so no BPF_FETCH, which 5.10 lacks)
    // because a softirq running another reset program on this CPU may
    // interrupt this one between a load and a store.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            &mut agg.count,
            1,
        )
    };
}

/// Counted reset number `n` writes sample slot `n % STORM_SAMPLES`: its
/// remote end, or its local end when the key names the remote port.
#[inline(always)]
fn remember(agg: &mut RstStormAgg, n: u64, sock: &SockInfo, by_remote: bool) {
    let sample = &mut agg.samples[(n as usize) & (STORM_SAMPLES - 1)];
    if by_remote {
        sample.addr = sock.laddr;
        sample.port = sock.lport;
    } else {
        sample.addr = sock.raddr;
        sample.port = sock.rport;
    }
    sample.family = sock.family;
}

/// The first reset of `key` past the threshold on any CPU: a new entry
/// holding it (the other CPUs' values start zeroed). A refused insert (the
/// map cannot take it) is reported as a lost record.
#[inline(always)]
fn start(key: &RstStormKey, kind: u16, reason: u32, sock: &SockInfo, now: u64, by_remote: bool) {
    let Some(scratch) = STORM_SCRATCH.get_ptr_mut(0) else {
        count_drop();
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array, filled before use.
    let agg = unsafe { &mut *scratch };
    remember(agg, 0, sock, by_remote);
    // SAFETY: helper without arguments (a record's exact time).
    describe(&mut agg.first, kind, reason, sock, unsafe {
        bpf_ktime_get_boot_ns()
    });
    agg.first.sock.ino = sock_ino_of(sock);
    agg.last_ns = now;
    agg.count = 1;
    // An update of an entry another CPU created meanwhile writes only this
    // CPU's value.
    if RST_STORMS.insert(key, &*agg, 0).is_err() {
        count_drop();
    }
}
