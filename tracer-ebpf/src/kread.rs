//! Reads of kernel memory at offsets taken from the running kernel's BTF
//! (`maps::offsets()`), and the task and socket descriptions every record
//! carries. No offset here is a constant copied from one kernel.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_task, bpf_probe_read_kernel_buf, generated,
};
use tracer_common::{OFFSET_NONE, SockInfo, TaskInfo, sock_flags};

pub use crate::kmem::{Btf, KMem, Probe, read_at};
use crate::{
    kmem::{Fields, Span},
    maps::{NETNS_CACHE, NETNS_SLOTS, offsets},
};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Kernel TCP states used by the programs' logic (include/net/tcp_states.h;
/// stable kernel ABI, also exported to userspace in the tracepoint formats).
pub const TCP_SYN_SENT: u8 = 2;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const TCP_LISTEN: u8 = 10;
pub const TCP_NEW_SYN_RECV: u8 = 12;

/// Writes the current task into `t` (in place: records live in the ring
/// buffer, the BPF stack is 512 bytes): `comm` is the process's name (the
/// thread-group leader's, `current->group_leader->comm`), `thread` the
/// acting thread's. Where BTF gave no offsets, both are the thread's.
/// Where the kernel has `bpf_get_current_task_btf` (5.11+,
/// `KernelOffsets::current_task_btf`) the names are direct loads through
/// the task's BTF pointer; before, a helper and two probe reads. The
/// verifier drops the branch this kernel cannot take (its condition is a
/// constant of the read-only globals), so 5.10 never sees the new helper.
#[inline(always)]
pub fn fill_current(t: &mut TaskInfo) {
    let pid_tgid = bpf_get_current_pid_tgid();
    t.tgid = (pid_tgid >> 32) as u32;
    t.pid = pid_tgid as u32;
    // SAFETY: helper without arguments, allowed in tracing programs.
    t.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if offsets().current_task_btf != 0 {
        names_btf(t);
    } else {
        names_probed(t);
    }
}

/// The names of [`fill_current`] through `bpf_get_current_task_btf`.
#[inline(always)]
fn names_btf(t: &mut TaskInfo) {
    let o = offsets();
    // SAFETY: helper without arguments (5.11+; see fill_current).
    let task = unsafe { generated::bpf_get_current_task_btf() } as u64;
    t.thread = comm_btf(task).unwrap_or([0; 16]);
    t.comm = t.thread;
    if t.tgid != t.pid {
        let leader: u64 = Btf::read(task, o.task_group_leader).unwrap_or(0);
        if let Some(comm) = comm_btf(leader) {
            t.comm = comm;
        }
    }
}

/// `task->comm` of a task's BTF pointer, as two 8-byte loads.
#[inline(always)]
fn comm_btf(task: u64) -> Option<[u8; 16]> {
    let o = offsets();
    let lo: u64 = Btf::read(task, o.task_comm)?;
    let hi: u64 = Btf::read(task, o.task_comm.checked_add(8)?)?;
    let mut comm = [0u8; 16];
    comm[..8].copy_from_slice(&lo.to_ne_bytes());
    comm[8..].copy_from_slice(&hi.to_ne_bytes());
    Some(comm)
}

/// The names of [`fill_current`] with `bpf_get_current_comm` and probe
/// reads of the leader.
#[inline(always)]
fn names_probed(t: &mut TaskInfo) {
    let o = offsets();
    t.thread = bpf_get_current_comm().unwrap_or([0; 16]);
    t.comm = t.thread;
    if t.tgid != t.pid && o.task_comm != OFFSET_NONE {
        let leader: u64 = read_at(current_task_ptr(), o.task_group_leader).unwrap_or(0);
        if leader != 0 {
            // SAFETY: bpf_probe_read_kernel_buf copies from any kernel
            // address straight into the record, returning an error instead
            // of faulting (then the thread's name stands).
            let read = unsafe {
                bpf_probe_read_kernel_buf((leader + o.task_comm as u64) as *const u8, &mut t.comm)
            };
            if read.is_err() {
                t.comm = t.thread;
            }
        }
    }
}

/// `struct task_struct *` of the current task.
#[inline(always)]
pub fn current_task_ptr() -> u64 {
    // SAFETY: helper without arguments, allowed in tracing programs.
    unsafe { bpf_get_current_task() }
}

/// Whether `sk` is a full `struct sock` (not a request or timewait sock),
/// so members beyond `sock_common` may be read.
#[inline(always)]
pub fn is_fullsock(state: u8) -> bool {
    state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV
}

/// `sk->sk_lock.owned`: set while a task holds the socket lock (lock_sock),
/// i.e. the code runs in the context of a process using this socket.
#[inline(always)]
pub fn sock_owned_by_user(sk: u64) -> bool {
    sock_owned_by_user_in::<Probe>(sk)
}

/// [`sock_owned_by_user`], read with `M`.
#[inline(always)]
pub fn sock_owned_by_user_in<M: KMem>(sk: u64) -> bool {
    M::read::<i32>(sk, offsets().sk_lock_owned).unwrap_or(0) != 0
}

/// `IPPROTO_TCP` in `sk_protocol`.
pub const IPPROTO_TCP: u16 = 6;

/// Whether `sk` is a TCP socket: family AF_INET/AF_INET6 and, where this
/// kernel's `sk_protocol` is readable, protocol TCP. accept() also serves
/// AF_UNIX (and SCTP, MPTCP) sockets, which must not reach the TCP owner
/// maps or describe a listener's address and port.
#[inline(always)]
pub fn is_tcp(sk: u64) -> bool {
    let o = offsets();
    let family: u16 = read_at(sk, o.skc_family).unwrap_or(0);
    if family != AF_INET && family != AF_INET6 {
        return false;
    }
    match read_at::<u16>(sk, o.sk_protocol) {
        Some(proto) => proto == IPPROTO_TCP,
        None => o.sk_protocol == OFFSET_NONE,
    }
}

/// Inode number of the socket's file (`sk->sk_socket->file->f_inode->i_ino`).
#[inline(always)]
pub fn sock_ino(sk: u64) -> u64 {
    sock_ino_in::<Probe>(sk)
}

/// [`sock_ino`], read with `M` ([`Btf`]: four direct loads the verifier
/// checks against BTF, where `sk` is a BTF program's socket argument).
#[inline(always)]
pub fn sock_ino_in<M: KMem>(sk: u64) -> u64 {
    let o = offsets();
    let socket: u64 = M::read(sk, o.sk_socket).unwrap_or(0);
    let file: u64 = M::read(socket, o.socket_file).unwrap_or(0);
    let inode: u64 = M::read(file, o.file_inode).unwrap_or(0);
    M::read(inode, o.inode_ino).unwrap_or(0)
}

/// Describes a socket from its `sock_common` (and, for full socks, its file),
/// in place.
#[inline(always)]
pub fn fill_sock_info(sk: u64, info: &mut SockInfo) {
    fill_sock_addrs(sk, info);
    add_sock_ino(info);
}

/// The socket's file inode (`SockInfo::ino`) for a full socket described by
/// [`fill_sock_addrs`]: four dependent reads, left out where a reset is only
/// counted (`storm.rs`).
#[inline(always)]
pub fn add_sock_ino(info: &mut SockInfo) {
    info.ino = described_sock_ino::<Probe>(info, info.skaddr);
}

/// The inode of the full socket `info` describes, read with `M` from `sk`
/// (that socket as the program got it), 0 for a packet or a socket that is
/// not a full one.
#[inline(always)]
pub fn described_sock_ino<M: KMem>(info: &SockInfo, sk: u64) -> u64 {
    if sk != 0 && info.flags & sock_flags::HAS_SK != 0 && is_fullsock(info.state) {
        sock_ino_in::<M>(sk)
    } else {
        0
    }
}

/// Everything [`fill_sock_info`] describes but the inode.
#[inline(always)]
pub fn fill_sock_addrs(sk: u64, info: &mut SockInfo) {
    info.netns = fill_sock_addrs_in::<Probe>(sk, info);
}

/// [`fill_sock_addrs`], read with `M`, but for `info.netns`: returned, for
/// the caller to store. A BPF subprogram: its 128-byte buffer has a frame
/// of its own (the compiler's 512-byte stack limit counts a function's
/// inlined callees together). It returns a value every caller uses, so
/// that R0 holds it at exit: a void subprogram's R0 can be a pointer into
/// its frame, which the verifier refuses ("cannot return stack pointer").
#[inline(never)]
pub fn fill_sock_addrs_in<M: KMem>(sk: u64, info: &mut SockInfo) -> u32 {
    let o = offsets();
    // One read of the head of `struct sock_common` (addresses, ports,
    // family, state, netns pointer and, on x86_64, the IPv6 addresses all
    // live there) instead of a read per field; members beyond it, or a
    // failed read, fall back to reading them one by one.
    let mut head = M::empty::<SKC_HEAD_WORDS>();
    M::load(&mut head, sk, 0);
    *info = SockInfo::default();
    info.skaddr = sk;
    info.flags = sock_flags::HAS_SK;
    info.family = head.get(o.skc_family).unwrap_or(0);
    info.state = head.get(o.skc_state).unwrap_or(0);
    info.lport = head.get(o.skc_num).unwrap_or(0);
    info.rport = u16::from_be(head.get(o.skc_dport).unwrap_or(0));
    if info.family == AF_INET6 {
        info.laddr = head.get(o.skc_v6_rcv_saddr).unwrap_or([0; 16]);
        info.raddr = head.get(o.skc_v6_daddr).unwrap_or([0; 16]);
    } else {
        let l: [u8; 4] = head.get(o.skc_rcv_saddr).unwrap_or([0; 4]);
        let r: [u8; 4] = head.get(o.skc_daddr).unwrap_or([0; 4]);
        info.laddr[..4].copy_from_slice(&l);
        info.raddr[..4].copy_from_slice(&r);
    }
    let net: u64 = head.get(o.skc_net).unwrap_or(0);
    let netns = netns_inum::<M>(net);
    // skc_num is cleared when a closing socket releases its port; the
    // source port stays in inet_sport (equal to skc_num while it is set,
    // so only a released port costs the read). A member of `struct
    // inet_sock`, beyond the `struct sock` a BTF argument is typed as: a
    // probe read.
    if info.lport == 0 && is_fullsock(info.state) {
        if let Some(sport) = read_at::<u16>(sk, o.inet_sport) {
            let sport = u16::from_be(sport);
            if sport != 0 {
                info.lport = sport;
            }
        }
    }
    netns
}

/// 8-byte words of a socket read at once by [`fill_sock_addrs`]: 128 bytes.
const SKC_HEAD_WORDS: usize = 16;

/// 8-byte words of the packet and `sk_buff` spans [`fill_skb_info`] reads
/// at once: 64 bytes.
const SKB_SPAN_WORDS: usize = 8;

/// The TCP header of a received packet (`skb->head + transport_header`,
/// where tcp_v4_send_reset/tcp_v6_send_reset find it; `skb->data` when the
/// kernel has no transport header offset), 0 when unreadable. Read with `M`.
#[inline(always)]
pub fn skb_tcp_header_in<M: KMem>(skb: u64) -> u64 {
    let mut fields = M::empty::<SKB_SPAN_WORDS>();
    M::load(&mut fields, skb, skb_span_start());
    skb_tcp_header_from(&fields, fields.get(offsets().skb_head).unwrap_or(0))
}

/// Where the span of `struct sk_buff` read at once starts: its lowest
/// offset among `transport_header`, `network_header`, `head` and `data`,
/// which sit together at its end (members the span misses are read on
/// their own).
#[inline(always)]
fn skb_span_start() -> u32 {
    let o = offsets();
    o.skb_transport_header
        .min(o.skb_network_header)
        .min(o.skb_head)
        .min(o.skb_data)
}

/// [`skb_tcp_header_in`] with `skb->head` already read.
#[inline(always)]
fn skb_tcp_header_from(skb: &impl Fields, head: u64) -> u64 {
    let o = offsets();
    if head != 0 {
        if let Some(th) = skb.get::<u16>(o.skb_transport_header) {
            // `(u16)~0U` means "not set".
            if th != u16::MAX {
                return head + th as u64;
            }
        }
    }
    skb.get(o.skb_data).unwrap_or(0)
}

/// Describes the connection of a packet that has no socket, from this host's
/// point of view: the packet's destination is local, its source remote.
/// Reads the IP header at `head + network_header` and the TCP header at
/// [`skb_tcp_header_in`]; the `sk_buff` and its device with `M`, the packet
/// with probe reads; returns the namespace (not stored in `info`), as
/// [`fill_sock_addrs_in`], and is a BPF subprogram as that is.
#[inline(never)]
pub fn fill_skb_info_in<M: KMem>(skb: u64, info: &mut SockInfo) -> u32 {
    let o = offsets();
    *info = SockInfo::default();
    info.flags = sock_flags::FROM_SKB;
    // The header offsets and `head` in one read (or direct loads); the IP
    // header and, when the TCP header follows it without IP options, the
    // ports in another: a closed-port storm runs this for every SYN.
    let mut fields = M::empty::<SKB_SPAN_WORDS>();
    M::load(&mut fields, skb, skb_span_start());
    let head: u64 = fields.get(o.skb_head).unwrap_or(0);
    let nh: u16 = fields.get(o.skb_network_header).unwrap_or(0);
    let th = skb_tcp_header_from(&fields, head);
    if head == 0 || th == 0 {
        return 0;
    }
    let iph = head + nh as u64;
    let mut ip = Span::<SKB_SPAN_WORDS>::empty();
    ip.load(iph, 0);
    let ver: u8 = ip.get::<u8>(0).unwrap_or(0) >> 4;
    let mut ports_at = OFFSET_NONE;
    if ver == 4 {
        info.family = AF_INET;
        let addrs: [u8; 8] = ip.get(12).unwrap_or([0; 8]);
        info.raddr[..4].copy_from_slice(&addrs[..4]);
        info.laddr[..4].copy_from_slice(&addrs[4..]);
        if th == iph + 20 {
            ports_at = 20;
        }
    } else if ver == 6 {
        info.family = AF_INET6;
        info.raddr = ip.get(8).unwrap_or([0; 16]);
        info.laddr = ip.get(24).unwrap_or([0; 16]);
        if th == iph + 40 {
            ports_at = 40;
        }
    }
    let ports: [u8; 4] = if ports_at != OFFSET_NONE {
        ip.get(ports_at).unwrap_or([0; 4])
    } else {
        read_at(th, 0).unwrap_or([0; 4])
    };
    info.rport = u16::from_be_bytes([ports[0], ports[1]]);
    info.lport = u16::from_be_bytes([ports[2], ports[3]]);
    let dev: u64 = M::read(skb, o.skb_dev).unwrap_or(0);
    let net: u64 = M::read(dev, o.netdev_nd_net).unwrap_or(0);
    netns_inum::<M>(net)
}

/// `net->ns.inum`, 0 unknown. The inode number shares its cache line with
/// the namespace's reference count, which every socket created or freed in
/// the namespace writes: on two CPUs under a connect storm its read missed
/// the cache at most resets (74 % of fill_skb_info's samples in perf on
/// 6.18). So it is kept per CPU (`NETNS_CACHE`), keyed by the namespace's
/// `net_cookie` (unique, never reused, on a line of its own). No cookie
/// (offset unknown, or 0: not generated yet before 5.12): read directly.
#[inline(always)]
pub fn netns_inum<M: KMem>(net: u64) -> u32 {
    let o = offsets();
    let cookie: u64 = M::read(net, o.net_cookie).unwrap_or(0);
    if cookie == 0 {
        return M::read(net, o.net_ns_inum).unwrap_or(0);
    }
    let at = (cookie.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 61) as u32 & (NETNS_SLOTS - 1);
    let Some(slot) = NETNS_CACHE.get_ptr_mut(at) else {
        return M::read(net, o.net_ns_inum).unwrap_or(0);
    };
    // SAFETY: this CPU's slot of a per-CPU array. A program interrupting
    // this one on the CPU (a softirq's reset) may rewrite it meanwhile: the
    // cookie is cleared first and written last (volatile, in this order),
    // so a slot whose cookie matches holds that namespace's number.
    unsafe {
        let slot = &mut *slot;
        if core::ptr::read_volatile(&slot.cookie) == cookie {
            return core::ptr::read_volatile(&slot.inum);
        }
        let inum = M::read(net, o.net_ns_inum).unwrap_or(0);
        core::ptr::write_volatile(&mut slot.cookie, 0);
        core::ptr::write_volatile(&mut slot.inum, inum);
        core::ptr::write_volatile(&mut slot.cookie, cookie);
        inum
    }
}

/// `struct file *` behind fd `fd` of the current task
/// (`current->files->fdt->fd[fd]`), 0 when out of range or unreadable.
#[inline(always)]
pub fn current_fd_file(fd: i32) -> u64 {
    let o = offsets();
    if fd < 0 {
        return 0;
    }
    let files: u64 = read_at(current_task_ptr(), o.task_files).unwrap_or(0);
    let fdt: u64 = read_at(files, o.files_fdt).unwrap_or(0);
    let max: u32 = read_at(fdt, o.fdtable_max_fds).unwrap_or(0);
    if fd as u32 >= max {
        return 0;
    }
    let fds: u64 = read_at(fdt, o.fdtable_fd).unwrap_or(0);
    if fds == 0 {
        return 0;
    }
    read_at(fds + (fd as u64) * 8, 0).unwrap_or(0)
}

/// `struct sock *` of a socket file (`file->private_data->sk`), 0 when the
/// file is not a socket: a `struct socket` points back at its file
/// (`socket->file == file`), which other `private_data` owners do not.
#[inline(always)]
pub fn file_sock(file: u64) -> u64 {
    let o = offsets();
    let socket: u64 = read_at(file, o.file_private_data).unwrap_or(0);
    let back: u64 = read_at(socket, o.socket_file).unwrap_or(0);
    if back != file {
        return 0;
    }
    read_at(socket, o.socket_sk).unwrap_or(0)
}

/// RLIMIT_NOFILE soft limit of the current task, 0 unknown.
#[inline(always)]
pub fn current_nofile_limit() -> u64 {
    let o = offsets();
    let signal: u64 = read_at(current_task_ptr(), o.task_signal).unwrap_or(0);
    read_at(signal, o.signal_rlim_nofile_cur).unwrap_or(0)
}
