//! The hooks `tracer` uses, each with its mechanisms in order of preference.
//! A declarative table: choosing among the mechanisms is `select::plan`, a
//! pure function of what the kernel offers.

pub use super::kind::{Kind, Need};

/// One way of implementing a hook.
#[derive(Debug, PartialEq, Eq)]
pub struct Mechanism {
    pub kind: Kind,
    /// Program name in the eBPF object.
    pub program: &'static str,
    /// Tracepoint (`tcp_send_reset`; `tcp/tcp_send_reset` for classic ones)
    /// or kernel function; several for one program attached many times.
    pub targets: &'static [&'static str],
    /// For tp_btf/raw tracepoints: the exact BTF parameter count the program
    /// was written for (the leading `void *` context included); for
    /// fentry/fexit: the function's parameter count (an fexit program reads
    /// the return value right after them).
    pub params: Option<usize>,
    /// For classic tracepoints: a field the format must have.
    pub field: Option<&'static str>,
}

/// A place in the kernel `tracer` observes.
#[derive(Debug, PartialEq, Eq)]
pub struct Hook {
    pub name: &'static str,
    /// The kernel function or tracepoint it depends on, where it is defined.
    pub kernel: &'static str,
    /// What is lost without it.
    pub purpose: &'static str,
    pub min_kernel: &'static str,
    /// `tracer` refuses to run without a required hook.
    pub required: bool,
    pub need: Need,
    pub mechanisms: &'static [Mechanism],
}

const fn m(
    kind: Kind,
    program: &'static str,
    targets: &'static [&'static str],
    params: Option<usize>,
    field: Option<&'static str>,
) -> Mechanism {
    Mechanism {
        kind,
        program,
        targets,
        params,
        field,
    }
}

use Kind::*;

pub static HOOKS: &[Hook] = &[
    Hook {
        name: "tcp_send_reset",
        kernel: "tracepoint tcp:tcp_send_reset (include/trace/events/tcp.h; tcp_v4_send_reset, tcp_send_active_reset)",
        purpose: "rst_sent events",
        min_kernel: "4.15 (reason since 6.10)",
        required: true,
        need: Need::Always,
        mechanisms: &[
            m(
                TpBtf,
                "tcp_send_reset_btf",
                &["tcp_send_reset"],
                Some(4),
                None,
            ),
            m(
                TpBtf,
                "tcp_send_reset_btf_noreason",
                &["tcp_send_reset"],
                Some(3),
                None,
            ),
            m(
                RawTracepoint,
                "tcp_send_reset_raw",
                &["tcp_send_reset"],
                Some(4),
                None,
            ),
            m(
                RawTracepoint,
                "tcp_send_reset_raw_noreason",
                &["tcp_send_reset"],
                Some(3),
                None,
            ),
            m(
                Tracepoint,
                "tcp_send_reset_tp",
                &["tcp/tcp_send_reset"],
                None,
                Some("skaddr"),
            ),
        ],
    },
    Hook {
        name: "tcp_v4_send_reset",
        kernel: "function tcp_v4_send_reset (net/ipv4/tcp_ipv4.c), entry",
        purpose: "rst_sent for IPv4 resets with no full socket (closed port, TIME_WAIT, request sock), which tcp:tcp_send_reset misses before 6.10",
        min_kernel: "any (needed before 6.10)",
        required: false,
        need: Need::SendResetMissesNoSocket,
        mechanisms: &[
            m(
                Fentry,
                "tcp_v4_send_reset_fentry",
                &["tcp_v4_send_reset"],
                None,
                None,
            ),
            m(
                Kprobe,
                "tcp_send_reset_kprobe",
                &["tcp_v4_send_reset"],
                None,
                None,
            ),
        ],
    },
    Hook {
        name: "tcp_v6_send_reset",
        kernel: "function tcp_v6_send_reset (net/ipv6/tcp_ipv6.c), entry",
        purpose: "rst_sent for IPv6 resets with no full socket, which tcp:tcp_send_reset misses before 6.10",
        min_kernel: "any (needed before 6.10)",
        required: false,
        need: Need::SendResetMissesNoSocket,
        mechanisms: &[
            m(
                Fentry,
                "tcp_v6_send_reset_fentry",
                &["tcp_v6_send_reset"],
                None,
                None,
            ),
            m(
                Kprobe,
                "tcp_send_reset_kprobe",
                &["tcp_v6_send_reset"],
                None,
                None,
            ),
        ],
    },
    Hook {
        name: "tcp_receive_reset",
        kernel: "tracepoint tcp:tcp_receive_reset (tcp_reset() in net/ipv4/tcp_input.c)",
        purpose: "rst_received events",
        min_kernel: "4.15",
        required: true,
        need: Need::Always,
        mechanisms: &[
            m(
                TpBtf,
                "tcp_receive_reset_btf",
                &["tcp_receive_reset"],
                Some(2),
                None,
            ),
            m(
                RawTracepoint,
                "tcp_receive_reset_raw",
                &["tcp_receive_reset"],
                Some(2),
                None,
            ),
            m(
                Tracepoint,
                "tcp_receive_reset_tp",
                &["tcp/tcp_receive_reset"],
                None,
                Some("skaddr"),
            ),
        ],
    },
    Hook {
        name: "inet_sock_set_state",
        kernel: "tracepoint sock:inet_sock_set_state (inet_sk_set_state, tcp_set_state)",
        purpose: "owners learned at connect/listen/close, CLOSE_WAIT tracking, tombstones, state_change events",
        min_kernel: "4.16",
        required: true,
        need: Need::Always,
        mechanisms: &[
            m(
                TpBtf,
                "inet_sock_set_state_btf",
                &["inet_sock_set_state"],
                Some(4),
                None,
            ),
            m(
                RawTracepoint,
                "inet_sock_set_state_raw",
                &["inet_sock_set_state"],
                Some(4),
                None,
            ),
            m(
                Tracepoint,
                "inet_sock_set_state_tp",
                &["sock/inet_sock_set_state"],
                None,
                Some("newstate"),
            ),
        ],
    },
    Hook {
        name: "tcp_destroy_sock",
        kernel: "tracepoint tcp:tcp_destroy_sock (tcp_v4_destroy_sock)",
        purpose: "owner-map entries leave when their socket is destroyed (else the LRU evicts them)",
        min_kernel: "4.15",
        required: false,
        need: Need::Always,
        mechanisms: &[
            m(
                TpBtf,
                "tcp_destroy_sock_btf",
                &["tcp_destroy_sock"],
                Some(2),
                None,
            ),
            m(
                RawTracepoint,
                "tcp_destroy_sock_raw",
                &["tcp_destroy_sock"],
                Some(2),
                None,
            ),
            m(
                Tracepoint,
                "tcp_destroy_sock_tp",
                &["tcp/tcp_destroy_sock"],
                None,
                Some("skaddr"),
            ),
        ],
    },
    Hook {
        name: "sock_send_length",
        kernel: "tracepoint sock:sock_send_length (sock_sendmsg in net/socket.c); before 6.3 function tcp_sendmsg (net/ipv4/tcp.c)",
        purpose: "owners of sockets that existed before tracer attached, learned at their next send; exchange timing (every rung but kprobe: they give the byte count)",
        min_kernel: "6.3 (tracepoint) / any (tcp_sendmsg)",
        required: false,
        need: Need::Always,
        mechanisms: &[
            m(TpBtf, "sock_send_btf", &["sock_send_length"], Some(4), None),
            m(
                RawTracepoint,
                "sock_send_raw",
                &["sock_send_length"],
                Some(4),
                None,
            ),
            // The return value (bytes sent) after the 3 parameters.
            m(Fexit, "tcp_sendmsg_fexit", &["tcp_sendmsg"], Some(3), None),
            m(Kprobe, "tcp_msg_kprobe", &["tcp_sendmsg"], None, None),
        ],
    },
    Hook {
        name: "sock_recv_length",
        kernel: "tracepoint sock:sock_recv_length (sock_recvmsg in net/socket.c); before 6.3 function tcp_recvmsg (net/ipv4/tcp.c)",
        purpose: "owners of sockets that existed before tracer attached, learned at their next receive; exchange timing (every rung but kprobe)",
        min_kernel: "6.3 (tracepoint) / any (tcp_recvmsg)",
        required: false,
        need: Need::Always,
        mechanisms: &[
            m(TpBtf, "sock_recv_btf", &["sock_recv_length"], Some(4), None),
            m(
                RawTracepoint,
                "sock_recv_raw",
                &["sock_recv_length"],
                Some(4),
                None,
            ),
            // 5.19+: `(sk, msg, len, flags, addr_len)`; before: `int
            // nonblock` too. The return value follows the parameters.
            m(Fexit, "tcp_recvmsg_fexit5", &["tcp_recvmsg"], Some(5), None),
            m(Fexit, "tcp_recvmsg_fexit6", &["tcp_recvmsg"], Some(6), None),
            m(Kprobe, "tcp_msg_kprobe", &["tcp_recvmsg"], None, None),
        ],
    },
    Hook {
        name: "inet_csk_accept",
        kernel: "function inet_csk_accept (net/ipv4/inet_connection_sock.c)",
        purpose: "owners of accepted sockets at the accept itself (else learned at the accept syscall's exit)",
        min_kernel: "5.5 (fexit) / any (kretprobe)",
        required: false,
        need: Need::Always,
        mechanisms: &[
            // 6.10+: `(struct sock *sk, struct proto_accept_arg *arg)`.
            m(
                Fexit,
                "inet_csk_accept_fexit",
                &["inet_csk_accept"],
                Some(2),
                None,
            ),
            // Before 6.10: `(struct sock *sk, int flags, int *err, bool kern)`.
            m(
                Fexit,
                "inet_csk_accept_fexit4",
                &["inet_csk_accept"],
                Some(4),
                None,
            ),
            m(
                Kretprobe,
                "inet_csk_accept_kretprobe",
                &["inet_csk_accept"],
                None,
                None,
            ),
        ],
    },
    Hook {
        name: "accept_enter",
        kernel: "tracepoints syscalls:sys_enter_accept4, sys_enter_accept (kernel/trace/trace_syscalls.c)",
        purpose: "the listening fd of each accept() call",
        min_kernel: "any with CONFIG_FTRACE_SYSCALLS",
        required: false,
        need: Need::Always,
        mechanisms: &[m(
            Tracepoint,
            "sys_enter_accept_tp",
            &["syscalls/sys_enter_accept4", "syscalls/sys_enter_accept"],
            None,
            Some("fd"),
        )],
    },
    Hook {
        name: "accept_exit",
        kernel: "tracepoints syscalls:sys_exit_accept4, sys_exit_accept (kernel/trace/trace_syscalls.c)",
        purpose: "accept_failed events (EMFILE, ENFILE, ...) and owners of accepted sockets",
        min_kernel: "any with CONFIG_FTRACE_SYSCALLS",
        required: false,
        need: Need::Always,
        mechanisms: &[m(
            Tracepoint,
            "sys_exit_accept_tp",
            &["syscalls/sys_exit_accept4", "syscalls/sys_exit_accept"],
            None,
            Some("ret"),
        )],
    },
    Hook {
        name: "io_uring_accept",
        kernel: "tracepoint io_uring:io_uring_complete (io_uring/io_uring.c); struct io_kiocb opcode/file, enum io_uring_op",
        purpose: "accept_failed events for io_uring accepts (IORING_OP_ACCEPT)",
        min_kernel: "5.5",
        required: false,
        need: Need::Always,
        mechanisms: &[m(
            Tracepoint,
            "io_uring_complete_tp",
            &["io_uring/io_uring_complete"],
            None,
            Some("req"),
        )],
    },
];
