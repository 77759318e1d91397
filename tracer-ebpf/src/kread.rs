//! Reads of kernel memory at offsets taken from the running kernel's BTF
//! (`maps::offsets()`), and the task and socket descriptions every record
//! carries. No offset here is a constant copied from one kernel.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
};
use tracer_common::{OFFSET_NONE, SockInfo, TaskInfo, sock_flags};

use crate::maps::offsets;

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

/// Reads a `T` at `base + off`; `None` when the offset is unknown on this
/// kernel, the base is NULL, or the read faults.
#[inline(always)]
pub fn read_at<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == OFFSET_NONE {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies from any kernel address and returns
    // an error instead of faulting; `T` is a plain integer or byte array.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Writes the current task into `t` (in place: records live in the ring
/// buffer, the BPF stack is 512 bytes): `comm` is the process's name (the
/// thread-group leader's, `current->group_leader->comm`), `thread` the
/// acting thread's. Where BTF gave no offsets, both are the thread's.
#[inline(always)]
pub fn fill_current(t: &mut TaskInfo) {
    let o = offsets();
    let pid_tgid = bpf_get_current_pid_tgid();
    t.tgid = (pid_tgid >> 32) as u32;
    t.pid = pid_tgid as u32;
    // SAFETY: helper without arguments, allowed in tracing programs.
    t.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
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
    read_at::<i32>(sk, offsets().sk_lock_owned).unwrap_or(0) != 0
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
    let o = offsets();
    let socket: u64 = read_at(sk, o.sk_socket).unwrap_or(0);
    let file: u64 = read_at(socket, o.socket_file).unwrap_or(0);
    let inode: u64 = read_at(file, o.file_inode).unwrap_or(0);
    read_at(inode, o.inode_ino).unwrap_or(0)
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
    if info.skaddr != 0 && info.flags & sock_flags::HAS_SK != 0 && is_fullsock(info.state) {
        info.ino = sock_ino(info.skaddr);
    }
}

/// Everything [`fill_sock_info`] describes but the inode.
#[inline(always)]
pub fn fill_sock_addrs(sk: u64, info: &mut SockInfo) {
    let o = offsets();
    // One read of the head of `struct sock_common` (addresses, ports,
    // family, state, netns pointer and, on x86_64, the IPv6 addresses all
    // live there) instead of a read per field; members beyond it, or a
    // failed read, fall back to reading them one by one.
    let head = SkcHead::read(sk);
    *info = SockInfo::default();
    info.skaddr = sk;
    info.flags = sock_flags::HAS_SK;
    info.family = head.get(sk, o.skc_family).unwrap_or(0);
    info.state = head.get(sk, o.skc_state).unwrap_or(0);
    info.lport = head.get(sk, o.skc_num).unwrap_or(0);
    info.rport = u16::from_be(head.get(sk, o.skc_dport).unwrap_or(0));
    if info.family == AF_INET6 {
        info.laddr = head.get(sk, o.skc_v6_rcv_saddr).unwrap_or([0; 16]);
        info.raddr = head.get(sk, o.skc_v6_daddr).unwrap_or([0; 16]);
    } else {
        let l: [u8; 4] = head.get(sk, o.skc_rcv_saddr).unwrap_or([0; 4]);
        let r: [u8; 4] = head.get(sk, o.skc_daddr).unwrap_or([0; 4]);
        info.laddr[..4].copy_from_slice(&l);
        info.raddr[..4].copy_from_slice(&r);
    }
    let net: u64 = head.get(sk, o.skc_net).unwrap_or(0);
    info.netns = read_at(net, o.net_ns_inum).unwrap_or(0);
    // skc_num is cleared when a closing socket releases its port; the
    // source port stays in inet_sport (equal to skc_num while it is set,
    // so only a released port costs the read).
    if info.lport == 0 && is_fullsock(info.state) {
        if let Some(sport) = read_at::<u16>(sk, o.inet_sport) {
            let sport = u16::from_be(sport);
            if sport != 0 {
                info.lport = sport;
            }
        }
    }
}

/// Bytes of the socket read at once by `fill_sock_info` (a power of two: the
/// offset is masked with it for the verifier).
const SKC_HEAD: usize = 128;

/// The first `SKC_HEAD` bytes of a socket, read with one probe read.
struct SkcHead {
    buf: [u8; SKC_HEAD],
    ok: bool,
}

impl SkcHead {
    #[inline(always)]
    fn read(sk: u64) -> SkcHead {
        let mut head = SkcHead {
            buf: [0; SKC_HEAD],
            ok: false,
        };
        if sk != 0 {
            // SAFETY: bpf_probe_read_kernel_buf copies from any kernel
            // address into our buffer, returning an error instead of faulting.
            head.ok = unsafe { bpf_probe_read_kernel_buf(sk as *const u8, &mut head.buf) }.is_ok();
        }
        head
    }

    /// The `T` at `off` of the socket: from the buffer when it holds it,
    /// else read from the kernel.
    #[inline(always)]
    fn get<T: Copy>(&self, sk: u64, off: u32) -> Option<T> {
        let size = core::mem::size_of::<T>();
        if self.ok && off != OFFSET_NONE && (off as usize) <= SKC_HEAD - size {
            let at = (off as usize) & (SKC_HEAD - 1);
            if at + size <= SKC_HEAD {
                // SAFETY: `at + size` is within the initialised buffer;
                // read_unaligned copes with any alignment, and `T` is a
                // plain integer or byte array.
                return Some(unsafe {
                    core::ptr::read_unaligned(self.buf.as_ptr().add(at) as *const T)
                });
            }
        }
        read_at(sk, off)
    }
}

/// The TCP header of a received packet (`skb->head + transport_header`,
/// where tcp_v4_send_reset/tcp_v6_send_reset find it; `skb->data` when the
/// kernel has no transport header offset), 0 when unreadable.
#[inline(always)]
pub fn skb_tcp_header(skb: u64) -> u64 {
    skb_tcp_header_from(skb, read_at(skb, offsets().skb_head).unwrap_or(0))
}

/// [`skb_tcp_header`] with `skb->head` already read.
#[inline(always)]
fn skb_tcp_header_from(skb: u64, head: u64) -> u64 {
    let o = offsets();
    if head != 0 {
        if let Some(th) = read_at::<u16>(skb, o.skb_transport_header) {
            // `(u16)~0U` means "not set".
            if th != u16::MAX {
                return head + th as u64;
            }
        }
    }
    read_at(skb, o.skb_data).unwrap_or(0)
}

/// Describes the connection of a packet that has no socket, from this host's
/// point of view: the packet's destination is local, its source remote.
/// Reads the IP header at `head + network_header` and the TCP header at
/// [`skb_tcp_header`].
#[inline(always)]
pub fn fill_skb_info(skb: u64, info: &mut SockInfo) {
    let o = offsets();
    *info = SockInfo::default();
    info.flags = sock_flags::FROM_SKB;
    let head: u64 = read_at(skb, o.skb_head).unwrap_or(0);
    let nh: u16 = read_at(skb, o.skb_network_header).unwrap_or(0);
    let th = skb_tcp_header_from(skb, head);
    if head == 0 || th == 0 {
        return;
    }
    // IPv4's source and destination in one read, the TCP ports in one: a
    // closed-port storm runs this for every SYN. (Small reads: 5.10's
    // verifier bounds the reset programs' combined stack at 512 bytes, and
    // a 40-byte header copy took it over.)
    let iph = head + nh as u64;
    let ver: u8 = read_at(iph, 0).unwrap_or(0) >> 4;
    if ver == 4 {
        info.family = AF_INET;
        let addrs: [u8; 8] = read_at(iph, 12).unwrap_or([0; 8]);
        info.raddr[..4].copy_from_slice(&addrs[..4]);
        info.laddr[..4].copy_from_slice(&addrs[4..]);
    } else if ver == 6 {
        info.family = AF_INET6;
        info.raddr = read_at(iph, 8).unwrap_or([0; 16]);
        info.laddr = read_at(iph, 24).unwrap_or([0; 16]);
    }
    let ports: [u8; 4] = read_at(th, 0).unwrap_or([0; 4]);
    info.rport = u16::from_be_bytes([ports[0], ports[1]]);
    info.lport = u16::from_be_bytes([ports[2], ports[3]]);
    let dev: u64 = read_at(skb, o.skb_dev).unwrap_or(0);
    let net: u64 = read_at(dev, o.netdev_nd_net).unwrap_or(0);
    info.netns = read_at(net, o.net_ns_inum).unwrap_or(0);
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
