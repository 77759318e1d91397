//! accept(): failures (EMFILE, ENFILE, ...) and the owner of accepted sockets.
//!
//! Kernel dependencies:
//! - `syscalls:sys_enter_accept4` / `sys_enter_accept` and the matching
//!   `sys_exit_*` tracepoints (kernel/trace/trace_syscalls.c). In accept4()
//!   the kernel reserves the new fd (get_unused_fd_flags) before it touches
//!   the accept queue, so EMFILE/ENFILE never reach inet_csk_accept: the
//!   syscall exit is where they show.
//! - `inet_csk_accept` (net/ipv4/inet_connection_sock.c) through fexit or
//!   kretprobe, where the kernel allows them: the accepted socket and its
//!   listener, in the accepting process's context.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::{fexit, kretprobe, tracepoint},
    programs::{FExitContext, RetProbeContext, TracePointContext},
};
use tracer_common::{
    AcceptFailKey, AcceptFailedRecord, OFFSET_NONE, RECORD_VERSION, RecordHeader, SockInfo, errno,
    kind,
};

use crate::{
    kread::{
        current_fd_file, current_nofile_limit, file_sock, fill_current, fill_sock_info, is_tcp,
        read_at,
    },
    maps::{ACCEPT_ARGS, ACCEPT_FAILS, ACCEPT_SCRATCH, count_drop, layouts, offsets},
    owner,
};

#[tracepoint]
pub fn sys_enter_accept_tp(ctx: TracePointContext) -> i32 {
    let off = layouts().sys_enter_accept_fd;
    if off == OFFSET_NONE {
        return 0;
    }
    // SAFETY: bpf_probe_read of the tracepoint record at its format offset.
    let fd: u64 = unsafe { ctx.read_at(off as usize) }.unwrap_or(u64::MAX);
    let _ = ACCEPT_ARGS.insert(bpf_get_current_pid_tgid(), fd as i32, 0);
    0
}

#[tracepoint]
pub fn sys_exit_accept_tp(ctx: TracePointContext) -> i32 {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: value copied out before removal.
    let listen_fd = unsafe { ACCEPT_ARGS.get(key) }.copied().unwrap_or(-1);
    let _ = ACCEPT_ARGS.remove(key);
    let off = layouts().sys_exit_accept_ret;
    if off == OFFSET_NONE {
        return 0;
    }
    // SAFETY: bpf_probe_read of the tracepoint record at its format offset.
    let ret: i64 = unsafe { ctx.read_at(off as usize) }.unwrap_or(0);
    if ret >= 0 {
        // A connection handed to this process: it owns the new socket, and
        // it is the one draining the listener's queue.
        let sk = file_sock(current_fd_file(ret as i32));
        if is_tcp(sk) {
            owner::learn_current(sk);
            owner::learn_listener(file_sock(current_fd_file(listen_fd)));
        }
        return 0;
    }
    let errno = (-ret) as i32;
    // EAGAIN (an empty queue), a signal's interruption: not failures.
    if !errno::accept_failed(errno) {
        return 0;
    }
    let key = AcceptFailKey {
        tgid: (key >> 32) as u32,
        fd: listen_fd,
        errno,
        _pad: 0,
        file: 0,
    };
    count_accept_failed(&key, || file_sock(current_fd_file(listen_fd)));
    0
}

/// Counts an accept failure of the current task in ACCEPT_FAILS. A repeat
/// costs one lookup; the first failure of a key on this CPU resolves the
/// listener (`listener`) and keeps the details. Failures the filters refuse
/// are kept as an entry of kind 0, which userspace ignores, so they too cost
/// one lookup after the first.
#[inline(always)]
fn count_accept_failed(key: &AcceptFailKey, listener: impl FnOnce() -> u64) {
    if let Some(existing) = ACCEPT_FAILS.get_ptr_mut(key) {
        // SAFETY: this CPU's value of the entry (per-CPU map; BPF programs
        // do not preempt each other on a CPU). An entry created on another
        // CPU starts zeroed here and is filled below. The time helper takes
        // no arguments.
        unsafe {
            if (*existing).count != 0 {
                (*existing).count += 1;
                (*existing).last_ns = bpf_ktime_get_boot_ns();
                return;
            }
        }
    }
    let Some(scratch) = ACCEPT_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array.
    let agg = unsafe { &mut *scratch };
    let rec = &mut agg.first;
    fill_current(&mut rec.task);
    let listener_sk = listener();
    // An AF_UNIX (or other non-TCP) listener has no TCP address or port.
    if listener_sk != 0 && is_tcp(listener_sk) {
        fill_sock_info(listener_sk, &mut rec.listener);
    } else {
        rec.listener = SockInfo::default();
    }
    let wanted = owner::passes(rec.listener.lport, 0, &rec.task);
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    rec.header = RecordHeader {
        kind: if wanted { kind::ACCEPT_FAILED } else { 0 },
        version: RECORD_VERSION,
        len: core::mem::size_of::<AcceptFailedRecord>() as u32,
        ts_boot_ns: now,
    };
    rec.listen_fd = key.fd;
    rec.errno = key.errno;
    rec.fd_limit = current_nofile_limit();
    agg.count = 1;
    agg.last_ns = now;
    if ACCEPT_FAILS.insert(key, &*agg, 0).is_err() {
        count_drop();
    }
}

/// `struct sock *inet_csk_accept(struct sock *sk, ...)`: the returned child
/// belongs to the accepting process. An fexit program finds the return value
/// in its context right after the parameters, read directly rather than with
/// bpf_get_func_ret (5.17+): 2 parameters since 6.10
/// (`struct proto_accept_arg *`), 4 before (`int flags, int *err, bool kern`).
#[fexit]
pub fn inet_csk_accept_fexit(ctx: FExitContext) -> i32 {
    let child: u64 = ctx.arg(2);
    owner::learn_current(child);
    0
}

#[fexit]
pub fn inet_csk_accept_fexit4(ctx: FExitContext) -> i32 {
    let child: u64 = ctx.arg(4);
    owner::learn_current(child);
    0
}

#[kretprobe]
pub fn inet_csk_accept_kretprobe(ctx: RetProbeContext) -> i32 {
    let child: u64 = ctx.ret();
    owner::learn_current(child);
    0
}

/// `io_uring:io_uring_complete` (io_uring/io_uring.h, io_req_complete_post
/// and friends): an IORING_OP_ACCEPT request that completed with an error.
/// The request's `file` is the listening socket; completions run in the
/// submitting process (its task work or its io-wq threads).
#[tracepoint]
pub fn io_uring_complete_tp(ctx: TracePointContext) -> i32 {
    let l = layouts();
    let o = offsets();
    if l.io_complete_req == OFFSET_NONE
        || l.io_complete_res == OFFSET_NONE
        || o.io_op_accept == OFFSET_NONE
    {
        return 0;
    }
    // SAFETY: bpf_probe_read of the tracepoint record at its format offset.
    let res: i32 = unsafe { ctx.read_at(l.io_complete_res as usize) }.unwrap_or(0);
    if res >= 0 || !errno::accept_failed(-res) {
        return 0;
    }
    // SAFETY: as above.
    let req: u64 = unsafe { ctx.read_at(l.io_complete_req as usize) }.unwrap_or(0);
    let opcode: u8 = read_at(req, o.io_kiocb_opcode).unwrap_or(u8::MAX);
    if opcode as u32 != o.io_op_accept {
        return 0;
    }
    let file: u64 = read_at(req, o.io_kiocb_file).unwrap_or(0);
    let key = AcceptFailKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        fd: -1,
        errno: -res,
        _pad: 0,
        file,
    };
    count_accept_failed(&key, || file_sock(file));
    0
}
