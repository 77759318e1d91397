//! TCP state transitions and socket destruction.
//!
//! Kernel dependencies:
//! - `sock:inet_sock_set_state` (include/trace/events/sock.h), fired from
//!   inet_sk_set_state()/tcp_set_state(); raw args
//!   `(const struct sock *sk, const int oldstate, const int newstate)`.
//!   Process context for connect (CLOSE->SYN_SENT), listen (->LISTEN) and
//!   close (->FIN_WAIT1, CLOSE_WAIT->LAST_ACK); softirq for the peer's FIN
//!   (ESTABLISHED->CLOSE_WAIT) and handshakes.
//! - `tcp:tcp_destroy_sock` (tcp_v4_destroy_sock), raw args `(struct sock *sk)`:
//!   the owner entry leaves the map.
//!
//! A socket entering LISTEN joins the listening-port set (`exchange.rs`).

use aya_ebpf::{
    helpers::bpf_ktime_get_boot_ns,
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use tracer_common::{OFFSET_NONE, RECORD_VERSION, RecordHeader, StateRecord, kind, owner_source};

use crate::{
    exchange,
    kread::{
        Btf, KMem, Probe, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_LISTEN, TCP_SYN_SENT, described_sock_ino,
        fill_current, fill_sock_addrs_in,
    },
    maps::{EVENTS, count_drop, filter, layouts, offsets, submit_flags},
    owner,
};

/// IPPROTO_TCP in the tracepoint's `protocol` field.
const IPPROTO_TCP: u16 = 6;

#[btf_tracepoint]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> i32 {
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    on_set_state::<Btf>(ctx.arg(0), old as u8, new as u8);
    0
}

#[raw_tracepoint]
pub fn inet_sock_set_state_raw(ctx: RawTracePointContext) -> i32 {
    let old: u64 = ctx.arg(1);
    let new: u64 = ctx.arg(2);
    on_set_state::<Probe>(ctx.arg(0), old as u8, new as u8);
    0
}

#[tracepoint]
pub fn inet_sock_set_state_tp(ctx: TracePointContext) -> i32 {
    let l = &layouts().set_state;
    if l.skaddr == OFFSET_NONE || l.oldstate == OFFSET_NONE || l.newstate == OFFSET_NONE {
        return 0;
    }
    // SAFETY: bpf_probe_read of the tracepoint record at format offsets.
    let sk: u64 = unsafe { ctx.read_at(l.skaddr as usize) }.unwrap_or(0);
    // SAFETY: as above.
    let old: i32 = unsafe { ctx.read_at(l.oldstate as usize) }.unwrap_or(0);
    // SAFETY: as above.
    let new: i32 = unsafe { ctx.read_at(l.newstate as usize) }.unwrap_or(0);
    if l.protocol != OFFSET_NONE {
        // SAFETY: as above.
        let proto: u16 = unsafe { ctx.read_at(l.protocol as usize) }.unwrap_or(0);
        if proto != IPPROTO_TCP {
            return 0;
        }
    }
    on_set_state::<Probe>(sk, old as u8, new as u8);
    0
}

#[btf_tracepoint]
pub fn tcp_destroy_sock_btf(ctx: BtfTracePointContext) -> i32 {
    owner::forget(ctx.arg(0));
    0
}

#[raw_tracepoint]
pub fn tcp_destroy_sock_raw(ctx: RawTracePointContext) -> i32 {
    owner::forget(ctx.arg(0));
    0
}

#[tracepoint]
pub fn tcp_destroy_sock_tp(ctx: TracePointContext) -> i32 {
    // tcp_destroy_sock's first field is `skaddr` at the same offset as in
    // tcp_receive_reset (both use the tcp_event_sk class).
    let off = layouts().receive_reset.skaddr;
    if off != OFFSET_NONE {
        // SAFETY: bpf_probe_read of the tracepoint record.
        let sk: u64 = unsafe { ctx.read_at(off as usize) }.unwrap_or(0);
        owner::forget(sk);
    }
    0
}

/// Transitions userspace needs even without `--states`: listeners appear
/// (and close: LISTEN -> CLOSE; LISTEN -> SYN_RECV is a child being cloned),
/// connections enter and leave CLOSE_WAIT, connections end (tombstones for
/// RSTs that arrive after the socket is gone).
/// A connection that never got past SYN_SENT leaves no tombstone worth
/// keeping: the RST that ended it was already attributed, and a storm of
/// refused connects would otherwise double the records.
#[inline(always)]
fn wanted(old: u8, new: u8) -> bool {
    filter().all_states != 0
        || new == TCP_LISTEN
        || (new == TCP_CLOSE && old != TCP_SYN_SENT)
        || new == TCP_CLOSE_WAIT
        || old == TCP_CLOSE_WAIT
}

/// `sk` read with `M` where the transition is filtered ([`Btf`]: the BTF
/// tracepoint's argument).
#[inline(always)]
fn on_set_state<M: KMem>(sk: u64, old: u8, new: u8) {
    let learns = new == TCP_SYN_SENT || new == TCP_LISTEN;
    // Most transitions (a handshake's, a refused connect's SYN_SENT ->
    // CLOSE) need nothing: no kernel read for them.
    if sk == 0 || !(learns || wanted(old, new)) {
        return;
    }
    // The tracepoint also fires for SCTP and MPTCP sockets.
    if let Some(proto) = M::read::<u16>(sk, offsets().sk_protocol)
        && proto != IPPROTO_TCP
    {
        return;
    }
    // connect() and listen() run in the owner's context with the socket
    // locked: learn the owner even when the transition is not emitted.
    if new == TCP_SYN_SENT {
        owner::learn_connecting(sk);
    } else if learns {
        owner::learn_current(sk);
    }
    // Every LISTEN is wanted: the listener is noted from its record below.
    if !wanted(old, new) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<StateRecord>(0) else {
        if new == TCP_LISTEN {
            exchange::note_listener_sk(sk);
        }
        count_drop();
        return;
    };
    let r = entry.as_mut_ptr();
    // SAFETY: reserved ring-buffer memory sized for a StateRecord, ours until
    // submit/discard; every field is written before submit.
    let rec = unsafe { &mut *r };
    rec.header = RecordHeader {
        kind: kind::STATE_CHANGE,
        version: RECORD_VERSION,
        len: core::mem::size_of::<StateRecord>() as u32,
        // SAFETY: helper without arguments.
        ts_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
    };
    rec.sock.netns = fill_sock_addrs_in::<M>(sk, &mut rec.sock);
    rec.sock.ino = described_sock_ino::<M>(&rec.sock, sk);
    if new == TCP_LISTEN {
        exchange::note_listener(&rec.sock);
    }
    rec.sock.state = new;
    fill_current(&mut rec.current);
    rec.owner_source = if new == TCP_LISTEN {
        rec.owner = rec.current;
        owner_source::LOCKED_CURRENT
    } else {
        owner::resolve(sk, old, &rec.current, &mut rec.owner)
    };
    rec.old_state = old;
    rec.new_state = new;
    rec._pad = [0; 5];
    if owner::passes(rec.sock.lport, rec.sock.rport, &rec.owner) {
        entry.submit(submit_flags());
    } else {
        entry.discard(0);
    }
}
