//! Globals written by userspace before the programs are loaded
//! (`EbpfLoader::override_global`). Everything that varies by kernel lives
//! here: struct member offsets read from the running kernel's BTF, and field
//! offsets of classic tracepoints read from their tracefs `format` files.

/// Offset value meaning "this kernel has no such member".
pub const OFFSET_NONE: u32 = u32::MAX;

/// Byte offsets of the kernel struct members the programs read, from BTF.
/// Nested members are flattened (e.g. `sk_lock_owned` is
/// `offsetof(struct sock, sk_lock) + offsetof(socket_lock_t, owned)`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    // struct sock_common (at offset 0 of struct sock)
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_num: u32,
    pub skc_dport: u32,
    pub skc_rcv_saddr: u32,
    pub skc_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub skc_v6_daddr: u32,
    /// `skc_net.net` (a `struct net *`).
    pub skc_net: u32,
    /// `struct net`: `ns.inum`.
    pub net_ns_inum: u32,
    /// `struct net`: `net_cookie`, unique per namespace for the kernel's
    /// lifetime (an `atomic64_t` set on first use before 5.12). Keys the
    /// kernel side's per-CPU cache of `ns.inum`, whose cache line the
    /// namespace's reference count shares (`ns_common.__ns_ref`/`count`):
    /// every socket created or freed writes it.
    pub net_cookie: u32,
    // struct sock
    pub sk_lock_owned: u32,
    pub sk_socket: u32,
    pub sk_ack_backlog: u32,
    pub sk_max_ack_backlog: u32,
    /// `sk_protocol` (a u16 since 5.6; `OFFSET_NONE` where it is a bitfield).
    pub sk_protocol: u32,
    /// `struct inet_sock` `inet_sport` (network order): the local port of a
    /// full socket, still set after tcp_set_state(TCP_CLOSE) released the
    /// bound port (`skc_num` is 0 by then, e.g. in SO_LINGER 0 aborts).
    pub inet_sport: u32,
    // struct socket / file / inode
    pub socket_sk: u32,
    pub socket_file: u32,
    pub file_private_data: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    // struct sk_buff
    pub skb_head: u32,
    pub skb_data: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    /// `sk_buff.dev` and `net_device.nd_net.net`: the namespace of a packet
    /// that has no socket.
    pub skb_dev: u32,
    pub netdev_nd_net: u32,
    // struct task_struct -> files -> fdt -> fd[], rlimits
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub task_signal: u32,
    /// `offsetof(struct signal_struct, rlim) + RLIMIT_NOFILE * sizeof(struct rlimit)`.
    pub signal_rlim_nofile_cur: u32,
    /// `struct io_kiocb` `opcode` (u8) and `file` (the file the request
    /// works on: for IORING_OP_ACCEPT, the listening socket).
    pub io_kiocb_opcode: u32,
    pub io_kiocb_file: u32,
    /// The value of `IORING_OP_ACCEPT` in `enum io_uring_op` (a value, not
    /// an offset; `OFFSET_NONE` without io_uring).
    pub io_op_accept: u32,
    /// `task_struct.group_leader` and `task_struct.comm`: the process's
    /// name is its thread-group leader's comm.
    pub task_group_leader: u32,
    pub task_comm: u32,
    /// `task_struct.tgid` and `inode.i_mode`: what the task-file iterator
    /// (`task_files.rs`) reports of each open file.
    pub task_tgid: u32,
    pub inode_mode: u32,
    /// 1 where the kernel has the helper `bpf_get_current_task_btf` (a
    /// member of its `enum bpf_func_id`, 5.11+), else 0 (a value, not an
    /// offset): the programs then read the task's names directly.
    pub current_task_btf: u32,
    /// Non-zero once userspace filled the struct.
    pub valid: u32,
}

impl KernelOffsets {
    pub const EMPTY: KernelOffsets = KernelOffsets {
        skc_family: OFFSET_NONE,
        skc_state: OFFSET_NONE,
        skc_num: OFFSET_NONE,
        skc_dport: OFFSET_NONE,
        skc_rcv_saddr: OFFSET_NONE,
        skc_daddr: OFFSET_NONE,
        skc_v6_rcv_saddr: OFFSET_NONE,
        skc_v6_daddr: OFFSET_NONE,
        skc_net: OFFSET_NONE,
        net_ns_inum: OFFSET_NONE,
        net_cookie: OFFSET_NONE,
        sk_lock_owned: OFFSET_NONE,
        sk_socket: OFFSET_NONE,
        sk_ack_backlog: OFFSET_NONE,
        sk_max_ack_backlog: OFFSET_NONE,
        sk_protocol: OFFSET_NONE,
        inet_sport: OFFSET_NONE,
        socket_sk: OFFSET_NONE,
        socket_file: OFFSET_NONE,
        file_private_data: OFFSET_NONE,
        file_inode: OFFSET_NONE,
        inode_ino: OFFSET_NONE,
        skb_head: OFFSET_NONE,
        skb_data: OFFSET_NONE,
        skb_network_header: OFFSET_NONE,
        skb_transport_header: OFFSET_NONE,
        skb_dev: OFFSET_NONE,
        netdev_nd_net: OFFSET_NONE,
        task_files: OFFSET_NONE,
        files_fdt: OFFSET_NONE,
        fdtable_max_fds: OFFSET_NONE,
        fdtable_fd: OFFSET_NONE,
        task_signal: OFFSET_NONE,
        signal_rlim_nofile_cur: OFFSET_NONE,
        io_kiocb_opcode: OFFSET_NONE,
        io_kiocb_file: OFFSET_NONE,
        io_op_accept: OFFSET_NONE,
        task_group_leader: OFFSET_NONE,
        task_comm: OFFSET_NONE,
        task_tgid: OFFSET_NONE,
        inode_mode: OFFSET_NONE,
        current_task_btf: 0,
        valid: 0,
    };
}

/// Field offsets inside the classic tracepoint `tcp:tcp_send_reset` record
/// (from its format file), used when the BTF/raw tracepoint is refused.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendResetLayout {
    pub skaddr: u32,
    pub state: u32,
    /// `OFFSET_NONE` before 6.10 (no reason field).
    pub reason: u32,
    /// `__u8 saddr[28]` / `daddr[28]`: a `struct sockaddr_in6` (or `_in`),
    /// 6.10+; `OFFSET_NONE` on the older `tcp_event_sk_skb` layout, whose
    /// socket is always a full one (read from `skaddr` instead).
    pub saddr: u32,
    pub daddr: u32,
    /// `skbaddr` (both layouts): the packet answered, for resets with no socket.
    pub skbaddr: u32,
}

/// Field offsets of `tcp:tcp_receive_reset` and `sock:inet_sock_set_state`
/// (both carry skaddr, ports, family and v4/v6 addresses as separate fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockEventLayout {
    pub skaddr: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
    /// inet_sock_set_state only (`OFFSET_NONE` otherwise).
    pub oldstate: u32,
    pub newstate: u32,
    pub protocol: u32,
    pub _pad: u32,
}

/// Field offsets of the classic tracepoints the programs may read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointLayouts {
    pub send_reset: SendResetLayout,
    pub receive_reset: SockEventLayout,
    pub set_state: SockEventLayout,
    /// `syscalls:sys_enter_accept4` / `sys_enter_accept`: the `fd` field.
    pub sys_enter_accept_fd: u32,
    /// `syscalls:sys_exit_accept4` / `sys_exit_accept`: the `ret` field.
    pub sys_exit_accept_ret: u32,
    /// `io_uring:io_uring_complete`: `req` (struct io_kiocb *) and `res`.
    pub io_complete_req: u32,
    pub io_complete_res: u32,
}

impl TracepointLayouts {
    pub const EMPTY: TracepointLayouts = TracepointLayouts {
        send_reset: SendResetLayout {
            skaddr: OFFSET_NONE,
            state: OFFSET_NONE,
            reason: OFFSET_NONE,
            saddr: OFFSET_NONE,
            daddr: OFFSET_NONE,
            skbaddr: OFFSET_NONE,
        },
        receive_reset: SockEventLayout::EMPTY,
        set_state: SockEventLayout::EMPTY,
        sys_enter_accept_fd: OFFSET_NONE,
        sys_exit_accept_ret: OFFSET_NONE,
        io_complete_req: OFFSET_NONE,
        io_complete_res: OFFSET_NONE,
    };
}

impl SockEventLayout {
    pub const EMPTY: SockEventLayout = SockEventLayout {
        skaddr: OFFSET_NONE,
        sport: OFFSET_NONE,
        dport: OFFSET_NONE,
        family: OFFSET_NONE,
        saddr: OFFSET_NONE,
        daddr: OFFSET_NONE,
        saddr_v6: OFFSET_NONE,
        daddr_v6: OFFSET_NONE,
        oldstate: OFFSET_NONE,
        newstate: OFFSET_NONE,
        protocol: OFFSET_NONE,
        _pad: 0,
    };
}

/// Maximum number of `--port` / `--pid` values filtered in the kernel.
pub const MAX_FILTER: usize = 8;

/// Filters and switches, set before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Ports (host order) of which either end must match; count in `n_ports`.
    pub ports: [u16; MAX_FILTER],
    pub n_ports: u32,
    /// Owner pids (tgid); count in `n_pids`. Applied where the owner is
    /// known in the kernel; events with no kernel-side owner pass to
    /// userspace, which resolves and filters them.
    pub n_pids: u32,
    pub pids: [u32; MAX_FILTER],
    /// Emit every state change (1) or only the ones userspace needs for
    /// attribution and CLOSE_WAIT accounting (0).
    pub all_states: u32,
    /// Non-zero: only owners whose `comm` equals `comm` (NUL padded) pass.
    pub has_comm: u32,
    pub comm: [u8; 16],
    /// RST storms (`storm.rs`): resets of one key each CPU lets through as
    /// records per second before it counts them instead; 0 = never count
    /// (one record per RST).
    pub storm_per_cpu: u32,
    pub _pad: u32,
}

impl Filter {
    pub const EMPTY: Filter = Filter {
        ports: [0; MAX_FILTER],
        n_ports: 0,
        n_pids: 0,
        pids: [0; MAX_FILTER],
        all_states: 0,
        has_comm: 0,
        comm: [0; 16],
        storm_per_cpu: 0,
        _pad: 0,
    };
}

const _: () = {
    assert!(core::mem::size_of::<KernelOffsets>() == 43 * 4);
    assert!(core::mem::size_of::<SendResetLayout>() == 24);
    assert!(core::mem::size_of::<SockEventLayout>() == 48);
    assert!(core::mem::size_of::<Filter>() == 16 + 8 + 32 + 8 + 16 + 8);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] structs of u16/u32 fields and arrays with no implicit
    // padding (sizes asserted above); any bit pattern is valid.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TracepointLayouts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Filter {}
}
