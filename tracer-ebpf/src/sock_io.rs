//! Owners learned from sends and receives: sockets that existed before
//! `tracer` attached become known the first time their owner uses them;
//! the byte counts time request/response exchanges (`exchange.rs`).
//!
//! Kernel dependencies, in order of preference:
//! - `sock:sock_send_length` / `sock:sock_recv_length`
//!   (include/trace/events/sock.h, since 6.3), fired from sock_sendmsg() and
//!   sock_recvmsg() in the calling process's context; raw args
//!   `(struct sock *sk, int ret, int flags)`.
//! - Before 6.3: `tcp_sendmsg(struct sock *sk, struct msghdr *, size_t)` and
//!   `tcp_recvmsg(struct sock *sk, ...)` (net/ipv4/tcp.c) through fexit,
//!   called by the sending/receiving process on the socket it owns (first
//!   argument on every kernel since 4.x); the return value (bytes moved)
//!   sits in the context after the parameters: 3 for tcp_sendmsg,
//!   `(sk, msg, len, flags, addr_len)` = 5 for tcp_recvmsg since 5.19,
//!   6 before (`int nonblock` too). Else kprobe at entry: owners only.

use aya_ebpf::{
    macros::{btf_tracepoint, fexit, kprobe, raw_tracepoint},
    programs::{BtfTracePointContext, FExitContext, ProbeContext, RawTracePointContext},
};

use crate::{
    exchange,
    kread::{AF_INET, AF_INET6, read_at},
    maps::offsets,
    owner,
};

const IPPROTO_TCP: u16 = 6;

/// A BTF tracepoint program is bound to one tracepoint at load: one each.
#[btf_tracepoint]
pub fn sock_send_btf(ctx: BtfTracePointContext) -> i32 {
    on_io(ctx.arg(0), Some(ret(ctx.arg(1))), false);
    0
}

#[btf_tracepoint]
pub fn sock_recv_btf(ctx: BtfTracePointContext) -> i32 {
    on_io(ctx.arg(0), Some(ret(ctx.arg(1))), true);
    0
}

/// One raw program per tracepoint: which one fired tells send from receive.
#[raw_tracepoint]
pub fn sock_send_raw(ctx: RawTracePointContext) -> i32 {
    on_io(ctx.arg(0), Some(ret(ctx.arg(1))), false);
    0
}

#[raw_tracepoint]
pub fn sock_recv_raw(ctx: RawTracePointContext) -> i32 {
    on_io(ctx.arg(0), Some(ret(ctx.arg(1))), true);
    0
}

/// The tracepoint's `int ret` from its 64-bit argument slot.
#[inline(always)]
fn ret(arg: u64) -> i64 {
    i64::from(arg as u32 as i32)
}

/// `int tcp_sendmsg(struct sock *sk, struct msghdr *msg, size_t size)`.
#[fexit]
pub fn tcp_sendmsg_fexit(ctx: FExitContext) -> i32 {
    on_io(ctx.arg(0), Some(ret(ctx.arg(3))), false);
    0
}

/// `int tcp_recvmsg(sk, msg, len, flags, addr_len)` (5.19+).
#[fexit]
pub fn tcp_recvmsg_fexit5(ctx: FExitContext) -> i32 {
    on_io(ctx.arg(0), Some(ret(ctx.arg(5))), true);
    0
}

/// `int tcp_recvmsg(sk, msg, len, nonblock, flags, addr_len)` (before 5.19).
#[fexit]
pub fn tcp_recvmsg_fexit6(ctx: FExitContext) -> i32 {
    on_io(ctx.arg(0), Some(ret(ctx.arg(6))), true);
    0
}

/// One kprobe program, attached to tcp_sendmsg or tcp_recvmsg (or both):
/// at entry the byte count is not known, owners only.
#[kprobe]
pub fn tcp_msg_kprobe(ctx: ProbeContext) -> i32 {
    on_io(ctx.arg(0).unwrap_or(0), None, false);
    0
}

/// A send or receive on `sk` by the current task: `ret` bytes (when the
/// hook knows them). Only TCP sockets enter the owner map, so a socket
/// found there with this owner needs no further checks.
#[inline(always)]
fn on_io(sk: u64, ret: Option<i64>, received: bool) {
    if sk == 0 {
        return;
    }
    if let Some(st) = owner::exch_if_current_owns(sk) {
        if let Some(ret) = ret {
            exchange::on_io(sk, st, ret, received);
        }
        return;
    }
    if !is_tcp(sk) {
        return;
    }
    owner::learn_current(sk);
    if let (Some(ret), Some(st)) = (ret, owner::exch_if_current_owns(sk)) {
        exchange::on_io(sk, st, ret, received);
    }
}

/// An AF_INET/AF_INET6 TCP socket. Without a readable protocol, UDP sockets
/// would take owner-map slots.
#[inline(always)]
fn is_tcp(sk: u64) -> bool {
    let o = offsets();
    let family: u16 = read_at(sk, o.skc_family).unwrap_or(0);
    if family != AF_INET && family != AF_INET6 {
        return false;
    }
    read_at::<u16>(sk, o.sk_protocol) == Some(IPPROTO_TCP)
}
