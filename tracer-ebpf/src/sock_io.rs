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
    kread::{AF_INET, AF_INET6, read_at},
    maps::offsets,
    owner,
};

const IPPROTO_TCP: u16 = 6;

/// A BTF tracepoint program is bound to one tracepoint at load: one each.
#[btf_tracepoint]
pub fn sock_send_btf(ctx: BtfTracePointContext) -> i32 {
    on_io(ctx.arg(0));
    0
}

#[btf_tracepoint]
pub fn sock_recv_btf(ctx: BtfTracePointContext) -> i32 {
    on_io(ctx.arg(0));
    0
}

#[raw_tracepoint]
pub fn sock_io_raw(ctx: RawTracePointContext) -> i32 {
    on_io(ctx.arg(0));
    0
}

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

#[inline(always)]
fn on_io(sk: u64) {
    let o = offsets();
    let family: u16 = read_at(sk, o.skc_family).unwrap_or(0);
    if family != AF_INET && family != AF_INET6 {
        return;
    }
    // Without a readable protocol, UDP sockets would take owner-map slots.
    let Some(proto) = read_at::<u16>(sk, o.sk_protocol) else {
        return;
    };
    if proto != IPPROTO_TCP {
        return;
    }
    owner::learn_current(sk);
}
