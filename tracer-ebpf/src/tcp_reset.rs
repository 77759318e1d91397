//! RSTs sent and received.
//!
//! Kernel dependencies:
//! - `tcp:tcp_send_reset` (include/trace/events/tcp.h), fired from
//!   tcp_v4_send_reset / tcp_v6_send_reset (replies to a packet, `sk` may be
//!   NULL) and tcp_send_active_reset (aborts of our own sockets). Raw args:
//!   `(const struct sock *sk, const struct sk_buff *skb[, enum sk_rst_reason reason])`,
//!   the reason since 6.10.
//! - `tcp:tcp_receive_reset` (tcp_reset() in net/ipv4/tcp_input.c), raw args
//!   `(struct sock *sk)`.
//!
//! Storms: past a per-second threshold per key, a reset is counted in a
//! map instead of recorded (`storm.rs`).
//!
//! Mechanisms: BTF tracepoint, raw tracepoint (same arguments), classic
//! tracepoint (fields at offsets read from the format file).

use aya_ebpf::{
    helpers::bpf_ktime_get_boot_ns,
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use tracer_common::storm::RstStormKey;
use tracer_common::{
    OFFSET_NONE, REASON_NONE, RECORD_VERSION, RecordHeader, RstRecord, SockInfo, kind, sock_flags,
};

use crate::{
    kread::{
        AF_INET, AF_INET6, Btf, KMem, Probe, described_sock_ino, fill_current, fill_skb_info_in,
        fill_sock_addrs_in,
    },
    maps::{EVENTS, RST_NESTING, RST_SCRATCH, count_drop, layouts, submit_flags},
    owner,
    storm::{self, TickClock},
};

#[btf_tracepoint]
pub fn tcp_send_reset_btf(ctx: BtfTracePointContext) -> i32 {
    let reason: u64 = ctx.arg(2);
    on_send_reset::<Btf>(ctx.arg(0), ctx.arg(1), reason as u32);
    0
}

/// Before 6.10: no reason argument (reading it would be refused at attach).
#[btf_tracepoint]
pub fn tcp_send_reset_btf_noreason(ctx: BtfTracePointContext) -> i32 {
    on_send_reset::<Btf>(ctx.arg(0), ctx.arg(1), REASON_NONE);
    0
}

#[raw_tracepoint]
pub fn tcp_send_reset_raw(ctx: RawTracePointContext) -> i32 {
    let reason: u64 = ctx.arg(2);
    on_send_reset::<Probe>(ctx.arg(0), ctx.arg(1), reason as u32);
    0
}

#[raw_tracepoint]
pub fn tcp_send_reset_raw_noreason(ctx: RawTracePointContext) -> i32 {
    on_send_reset::<Probe>(ctx.arg(0), ctx.arg(1), REASON_NONE);
    0
}

#[btf_tracepoint]
pub fn tcp_receive_reset_btf(ctx: BtfTracePointContext) -> i32 {
    on_receive_reset::<Btf>(ctx.arg(0));
    0
}

#[raw_tracepoint]
pub fn tcp_receive_reset_raw(ctx: RawTracePointContext) -> i32 {
    on_receive_reset::<Probe>(ctx.arg(0));
    0
}

#[tracepoint]
pub fn tcp_send_reset_tp(ctx: TracePointContext) -> i32 {
    let l = &layouts().send_reset;
    let sk: u64 = tp_read(&ctx, l.skaddr).unwrap_or(0);
    let skb: u64 = tp_read(&ctx, l.skbaddr).unwrap_or(0);
    let reason = if l.reason == OFFSET_NONE {
        REASON_NONE
    } else {
        tp_read::<u32>(&ctx, l.reason).unwrap_or(REASON_NONE)
    };
    emit::<Probe>(kind::RST_SENT, reason, sk, |info| {
        // The old layout (before 6.10) fires only for full sockets; the new
        // one also without a socket, when the packet tells the namespace.
        if sk != 0 {
            info.netns = fill_sock_addrs_in::<Probe>(sk, info);
        } else if skb != 0 {
            info.netns = fill_skb_info_in::<Probe>(skb, info);
        } else {
            *info = SockInfo::default();
            info.flags = sock_flags::FROM_SKB;
        }
        // The 6.10 format's addresses are `struct sockaddr_in`/`_in6` already
        // turned to this host's point of view (saddr local).
        let family: u16 = tp_read(&ctx, l.saddr).unwrap_or(0);
        if family == AF_INET || family == AF_INET6 {
            info.family = family;
            info.lport = u16::from_be(tp_read(&ctx, l.saddr + 2).unwrap_or(0));
            info.rport = u16::from_be(tp_read(&ctx, l.daddr + 2).unwrap_or(0));
            if family == AF_INET {
                let la: [u8; 4] = tp_read(&ctx, l.saddr + 4).unwrap_or([0; 4]);
                let ra: [u8; 4] = tp_read(&ctx, l.daddr + 4).unwrap_or([0; 4]);
                info.laddr = [0; 16];
                info.raddr = [0; 16];
                info.laddr[..4].copy_from_slice(&la);
                info.raddr[..4].copy_from_slice(&ra);
            } else {
                info.laddr = tp_read(&ctx, l.saddr + 8).unwrap_or([0; 16]);
                info.raddr = tp_read(&ctx, l.daddr + 8).unwrap_or([0; 16]);
            }
        }
        if let Some(state) = tp_read::<i32>(&ctx, l.state) {
            info.state = state as u8;
        }
    });
    0
}

#[tracepoint]
pub fn tcp_receive_reset_tp(ctx: TracePointContext) -> i32 {
    let l = &layouts().receive_reset;
    let sk: u64 = tp_read(&ctx, l.skaddr).unwrap_or(0);
    on_receive_reset::<Probe>(sk);
    0
}

/// Reads a classic tracepoint field at an offset from its format file.
#[inline(always)]
fn tp_read<T>(ctx: &TracePointContext, off: u32) -> Option<T> {
    if off == OFFSET_NONE {
        return None;
    }
    // SAFETY: read_at uses bpf_probe_read on the tracepoint record; a bad
    // offset yields an error, not a fault.
    unsafe { ctx.read_at::<T>(off as usize).ok() }
}

/// The socket and packet read with `M`: [`Btf`] where they are the
/// arguments of a BTF tracepoint.
#[inline(always)]
fn on_send_reset<M: KMem>(sk: u64, skb: u64, reason: u32) {
    emit::<M>(kind::RST_SENT, reason, sk, |info| {
        if sk != 0 {
            info.netns = fill_sock_addrs_in::<M>(sk, info);
        } else {
            info.netns = fill_skb_info_in::<M>(skb, info);
        }
    });
}

#[inline(always)]
fn on_receive_reset<M: KMem>(sk: u64) {
    if sk == 0 {
        return;
    }
    emit::<M>(kind::RST_RECEIVED, REASON_NONE, sk, |info| {
        info.netns = fill_sock_addrs_in::<M>(sk, info);
    });
}

/// Describes the reset (`fill_sock`: the socket or packet, without its
/// inode; then which side is the service's, `storm::mark_side`; `sk`, read
/// with `M`, is the socket whose lock tells whether its owner is running,
/// 0 none) in this
/// CPU's scratch slot, then either counts it (`storm.rs`)
/// or writes it as a record, filled in place in the ring buffer (the BPF
/// stack is 512 bytes).
#[inline(always)]
pub(crate) fn emit<M: KMem>(
    record_kind: u16,
    reason: u32,
    sk: u64,
    fill_sock: impl FnOnce(&mut SockInfo),
) {
    let Some(scratch) = RST_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array. A reset program that
    // interrupts this one takes the next slot and restores `depth` before
    // this one resumes.
    let scratch = unsafe { &mut *scratch };
    let depth = scratch.depth as usize;
    if depth >= RST_NESTING {
        count_drop();
        return;
    }
    scratch.depth = depth as u32 + 1;
    let clock = &mut scratch.clock;
    let (Some(sock), Some(key)) = (scratch.socks.get_mut(depth), scratch.keys.get_mut(depth))
    else {
        return;
    };
    emit_from::<M>(record_kind, reason, sk, sock, key, clock, fill_sock);
    scratch.depth = depth as u32;
}

#[inline(always)]
fn emit_from<M: KMem>(
    record_kind: u16,
    reason: u32,
    sk: u64,
    sock: &mut SockInfo,
    key: &mut RstStormKey,
    clock: &mut TickClock,
    fill_sock: impl FnOnce(&mut SockInfo),
) {
    fill_sock(sock);
    let owner_tgid = owner::owner_tgid::<M>(sk, sock.skaddr, sock.state);
    if !owner::passes_ports_pid(sock.lport, sock.rport, owner_tgid) {
        return;
    }
    storm::mark_side(sock);
    if storm::counted(record_kind, reason, sock, owner_tgid, key, clock) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<RstRecord>(0) else {
        count_drop();
        return;
    };
    let r = entry.as_mut_ptr();
    // SAFETY: `r` points at reserved ring-buffer memory sized for a
    // RstRecord, exclusively ours until submit/discard; `describe` writes
    // every field before submit.
    let rec = unsafe { &mut *r };
    sock.ino = described_sock_ino::<M>(sock, sk);
    // SAFETY: helper without arguments.
    describe(rec, record_kind, reason, sock, unsafe {
        bpf_ktime_get_boot_ns()
    });
    if owner::passes(rec.sock.lport, rec.sock.rport, &rec.owner) {
        entry.submit(submit_flags());
    } else {
        entry.discard(0);
    }
}

/// Fills every field of `rec` for a reset of `sock` (its inode included,
/// `described_sock_ino`) at `ts_boot_ns`: the current task, the owner. A BPF subprogram, not
/// inlined: its temporaries (task copies) stay off the program's own frame,
/// which 5.10's verifier adds to the largest frame it calls (512 in all).
#[inline(never)]
pub(crate) fn describe(
    rec: &mut RstRecord,
    record_kind: u16,
    reason: u32,
    sock: &SockInfo,
    ts_boot_ns: u64,
) {
    rec.header = RecordHeader {
        kind: record_kind,
        version: RECORD_VERSION,
        len: core::mem::size_of::<RstRecord>() as u32,
        ts_boot_ns,
    };
    rec.sock = *sock;
    fill_current(&mut rec.current);
    rec.owner_source = owner::resolve(
        rec.sock.skaddr,
        rec.sock.state,
        &rec.current,
        &mut rec.owner,
    );
    rec.reason = reason;
    rec._pad = [0; 3];
}
