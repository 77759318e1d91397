//! Owners learned from sends and receives: sockets that existed before
//! `tracer` attached become known the first time their owner uses them.
//!
//! Kernel dependencies, in order of preference:
//! - `sock:sock_send_length` / `sock:sock_recv_length`
//!   (include/trace/events/sock.h, since 6.3), fired from sock_sendmsg() and
//!   sock_recvmsg() in the calling process's context; raw args
//!   `(struct sock *sk, int ret, int flags)`.
//! - Before 6.3: `tcp_sendmsg(struct sock *sk, ...)` and
//!   `tcp_recvmsg(struct sock *sk, ...)` (net/ipv4/tcp.c) through fentry or
//!   kprobe at entry, called by the sending/receiving process on the socket
//!   it owns (first argument on every kernel since 4.x).

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, kprobe, raw_tracepoint},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext},
};

use crate::{
    exchange,
    kread::{AF_INET, AF_INET6, read_at},
    maps::offsets,
    owner,
};

const IPPROTO_TCP: u16 = 6;

/// A BTF tracepoint program is bound to one tracepoint at load: one each.
/// The tracepoints' `ret` (bytes moved, or -errno) times exchanges
/// (`exchange.rs`).
#[btf_tracepoint]
pub fn sock_send_btf(ctx: BtfTracePointContext) -> i32 {
    if on_io(ctx.arg(0)) {
        exchange::on_io(ctx.arg(0), ret(ctx.arg(1)), false);
    }
    0
}

#[btf_tracepoint]
pub fn sock_recv_btf(ctx: BtfTracePointContext) -> i32 {
    if on_io(ctx.arg(0)) {
        exchange::on_io(ctx.arg(0), ret(ctx.arg(1)), true);
    }
    0
}

/// One raw program per tracepoint: which one fired tells send from receive.
#[raw_tracepoint]
pub fn sock_send_raw(ctx: RawTracePointContext) -> i32 {
    if on_io(ctx.arg(0)) {
        exchange::on_io(ctx.arg(0), ret(ctx.arg(1)), false);
    }
    0
}

#[raw_tracepoint]
pub fn sock_recv_raw(ctx: RawTracePointContext) -> i32 {
    if on_io(ctx.arg(0)) {
        exchange::on_io(ctx.arg(0), ret(ctx.arg(1)), true);
    }
    0
}

/// The tracepoint's `int ret` from its 64-bit argument slot.
#[inline(always)]
fn ret(arg: u64) -> i64 {
    i64::from(arg as u32 as i32)
}

/// At function entry the byte count is not known: owners only.
#[fentry]
pub fn tcp_sendmsg_fentry(ctx: FEntryContext) -> i32 {
    on_io(ctx.arg(0));
    0
}

#[fentry]
pub fn tcp_recvmsg_fentry(ctx: FEntryContext) -> i32 {
    on_io(ctx.arg(0));
    0
}

/// One kprobe program, attached to tcp_sendmsg or tcp_recvmsg (or both).
#[kprobe]
pub fn tcp_msg_kprobe(ctx: ProbeContext) -> i32 {
    on_io(ctx.arg(0).unwrap_or(0));
    0
}

/// Learns the owner of a TCP socket; false for other sockets.
#[inline(always)]
fn on_io(sk: u64) -> bool {
    let o = offsets();
    let family: u16 = read_at(sk, o.skc_family).unwrap_or(0);
    if family != AF_INET && family != AF_INET6 {
        return false;
    }
    // Without a readable protocol, UDP sockets would take owner-map slots.
    let Some(proto) = read_at::<u16>(sk, o.sk_protocol) else {
        return false;
    };
    if proto != IPPROTO_TCP {
        return false;
    }
    owner::learn_current(sk);
    true
}
