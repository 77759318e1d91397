//! RSTs sent in reply to a packet that found no full socket, on kernels
//! whose `tcp:tcp_send_reset` tracepoint does not report them (before 6.10).
//!
//! Kernel dependencies:
//! - `tcp_v4_send_reset(const struct sock *sk, struct sk_buff *skb)`
//!   (net/ipv4/tcp_ipv4.c) and `tcp_v6_send_reset` (net/ipv6/tcp_ipv6.c),
//!   through fentry or kprobe at entry. Before 6.10 they fire the
//!   tracepoint only `if (sk && sk_fullsock(sk))`: a reset for a closed port
//!   (`sk` NULL), a TIME_WAIT or a request sock goes out unseen. These
//!   programs report exactly those (full sockets stay the tracepoint's, so
//!   every reset is counted once). 6.10 added a third argument (the reason)
//!   and reports every case itself; the hook is not attached there.
//! - The functions return early, sending nothing, for a packet that is
//!   itself a reset (checked here from the TCP header), for a packet with no
//!   socket that is not addressed to this host (IPv4 `rt_type != RTN_LOCAL`,
//!   IPv6 not unicast; TCP never delivers such packets to them) and for a
//!   failed TCP-MD5 check (not checked here: rare, and only with MD5 keys).
//! - The kernel gives no reason before 6.10: the record carries
//!   `REASON_NONE` and the facts (no socket, or the socket's state) from
//!   which userspace infers one.

use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use tracer_common::{REASON_NONE, kind, sock_flags};

use crate::{
    kread::{Btf, KMem, Probe, fill_skb_info_in, is_fullsock, read_at, skb_tcp_header_in},
    maps::offsets,
    tcp_reset::emit,
};

/// `tcphdr` byte 13 holds the flags; RST is bit 2.
const TCP_FLAGS_BYTE: u32 = 13;
const TCP_FLAG_RST: u8 = 0x04;

/// An fentry program is bound to one function at load: one each.
#[fentry]
pub fn tcp_v4_send_reset_fentry(ctx: FEntryContext) -> i32 {
    on_reply_reset::<Btf>(ctx.arg(0), ctx.arg(1));
    0
}

#[fentry]
pub fn tcp_v6_send_reset_fentry(ctx: FEntryContext) -> i32 {
    on_reply_reset::<Btf>(ctx.arg(0), ctx.arg(1));
    0
}

/// One kprobe program, attached to both functions.
#[kprobe]
pub fn tcp_send_reset_kprobe(ctx: ProbeContext) -> i32 {
    let sk: u64 = ctx.arg(0).unwrap_or(0);
    let skb: u64 = ctx.arg(1).unwrap_or(0);
    on_reply_reset::<Probe>(sk, skb);
    0
}

/// `sk` and `skb` read with `M` ([`Btf`]: fentry's arguments).
#[inline(always)]
fn on_reply_reset<M: KMem>(sk: u64, skb: u64) {
    let state: u8 = if sk != 0 {
        M::read(sk, offsets().skc_state).unwrap_or(0)
    } else {
        0
    };
    // A full socket's reset is reported by tcp:tcp_send_reset.
    if sk != 0 && is_fullsock(state) {
        return;
    }
    let th = skb_tcp_header_in::<M>(skb);
    if th == 0 {
        return;
    }
    // Never a reset in reply to a reset.
    let flags: u8 = read_at(th, TCP_FLAGS_BYTE).unwrap_or(TCP_FLAG_RST);
    if flags & TCP_FLAG_RST != 0 {
        return;
    }
    emit::<M>(kind::RST_SENT, REASON_NONE, sk, |info| {
        info.netns = fill_skb_info_in::<M>(skb, info);
        if sk != 0 {
            // A TIME_WAIT or request sock: its `sock_common` is valid.
            info.skaddr = sk;
            info.state = state;
            info.flags |= sock_flags::HAS_SK;
        }
    });
}
