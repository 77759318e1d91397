//! RST storms counted in the kernel, for the reset programs
//! (`tcp_reset.rs`: tcp:tcp_send_reset, tcp:tcp_receive_reset;
//! `tcp_reply_reset.rs`: tcp_v4_send_reset / tcp_v6_send_reset).
//!
//! Per key (network namespace, local port, reason, kernel-side owner,
//! direction) and CPU, the first `Filter::storm_per_cpu` resets of every
//! second go out as ring-buffer records; the rest of that second are only
//! counted in `RST_STORMS` (per-CPU LRU: no atomics across CPUs, no shared
//! lock), with the latest remote endpoints and the first counted reset's
//! details. A counted reset costs the socket (or packet) description, the
//! owner lookup, one time helper and one map lookup: no ring reservation, no
//! task reads, no inode walk. Depends on no kernel function of its own.

use aya_ebpf::helpers::bpf_ktime_get_boot_ns;
use tracer_common::{
    SockInfo,
    storm::{RstStormKey, STORM_SAMPLES},
};

use crate::{
    maps::{RST_STORMS, STORM_SCRATCH, filter},
    tcp_reset::describe,
};

const NS_PER_SEC: u64 = 1_000_000_000;

/// Whether this reset is counted in `RST_STORMS` instead of recorded:
/// `false` for the first ones of its key in this second on this CPU (and
/// always when counting is off, `--per-rst`).
/// `key` is room for the storm key off the stack (tcp_reset::emit).
#[inline(always)]
pub fn counted(
    kind: u16,
    reason: u32,
    sock: &SockInfo,
    owner_tgid: u32,
    key: &mut RstStormKey,
) -> bool {
    let threshold = filter().storm_per_cpu;
    if threshold == 0 {
        return false;
    }
    *key = RstStormKey {
        netns: sock.netns,
        reason,
        owner_tgid,
        lport: sock.lport,
        kind,
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let sec = now / NS_PER_SEC;
    let Some(agg) = RST_STORMS.get_ptr_mut(&*key) else {
        start(key, sec);
        return false;
    };
    // SAFETY: this CPU's value of the entry (per-CPU map). An entry created
    // on another CPU starts zeroed here: window 0, nothing counted.
    let agg = unsafe { &mut *agg };
    if agg.window_sec != sec {
        agg.window_sec = sec;
        agg.passed = 1;
        return false;
    }
    if agg.passed < threshold {
        agg.passed += 1;
        return false;
    }
    let n = agg.count;
    let slot = &mut agg.samples[(n as usize) & (STORM_SAMPLES - 1)];
    slot.addr = sock.raddr;
    slot.port = sock.rport;
    slot.family = sock.family;
    if n == 0 {
        describe(&mut agg.first, kind, reason, sock, now);
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
    true
}

/// The first reset of `key` on any CPU: an entry whose window is this
/// second, with this reset let through.
#[inline(always)]
fn start(key: &RstStormKey, sec: u64) {
    let Some(scratch) = STORM_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array; `first` and `samples`
    // are ignored while `count` is 0.
    let agg = unsafe { &mut *scratch };
    agg.window_sec = sec;
    agg.passed = 1;
    agg.count = 0;
    agg.last_ns = 0;
    // An update of an existing entry (another CPU raced us) writes only
    // this CPU's value.
    let _ = RST_STORMS.insert(key, &*agg, 0);
}
