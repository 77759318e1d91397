//! Records written into the ring buffer, one per kernel event.

/// Bumped whenever a record layout changes.
pub const RECORD_VERSION: u16 = 2;

/// `RecordHeader::kind` values.
pub mod kind {
    pub const RST_SENT: u16 = 1;
    pub const RST_RECEIVED: u16 = 2;
    pub const STATE_CHANGE: u16 = 3;
    pub const ACCEPT_FAILED: u16 = 4;
}

/// `RstRecord::reason` when the kernel gives no reason (tracepoint before 6.10).
pub const REASON_NONE: u32 = u32::MAX;

/// How the kernel side found the owner (`owner_source` fields).
pub mod owner_source {
    /// No owner known to the kernel side; userspace may still resolve one.
    pub const NONE: u8 = 0;
    /// Learned earlier, in the owner's own context (connect, listen, accept,
    /// send, receive, close) and kept in the owner map.
    pub const SOCKET_MAP: u8 = 1;
    /// The socket is locked by the current task (`sk_lock.owned`): the event
    /// runs in the context of the process holding the socket.
    pub const LOCKED_CURRENT: u8 = 2;
}

/// `SockInfo::flags` bits.
pub mod sock_flags {
    /// A `struct sock` pointer was present at the hook.
    pub const HAS_SK: u8 = 1;
    /// The addresses came from the packet (no full socket).
    pub const FROM_SKB: u8 = 2;
    /// Reset records only (`rst_sent`, `rst_received`, a storm's first
    /// reset): the remote port is the service's, the socket is one of a
    /// connection this host made (in SYN_SENT, or on a local port no
    /// listener of its namespace has: an ephemeral one). Decided once per
    /// reset in the kernel (tracer-ebpf/src/storm.rs `keyed_by_remote`);
    /// the same decision keys the reset's storm by the remote port. Clear
    /// for packets without a socket, listeners, request sockets and the
    /// connections of a listening port, and on every other record kind.
    pub const PEER_IS_SERVICE: u8 = 4;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: u16,
    pub version: u16,
    /// Total length of the record in bytes, header included.
    pub len: u32,
    /// `bpf_ktime_get_boot_ns()` at the event.
    pub ts_boot_ns: u64,
}

/// A task as seen by the kernel side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskInfo {
    /// Thread-group id (the process id); 0 = none.
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    /// cgroup v2 id (inode of the cgroup directory).
    pub cgroup_id: u64,
    /// The process's name: the thread-group leader's `comm`, NUL padded,
    /// any bytes.
    pub comm: [u8; 16],
    /// The acting thread's own `comm` (equal to `comm` in a single-threaded
    /// process; worker threads often name themselves).
    pub thread: [u8; 16],
}

/// A TCP socket's identity and addresses, from this host's point of view.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockInfo {
    /// Kernel address of the `struct sock` (0 when none).
    pub skaddr: u64,
    /// Inode number of the socket (`socket:[N]` in /proc/PID/fd), 0 when the
    /// socket has no file (orphaned, request or timewait sock).
    pub ino: u64,
    /// Inode number of the socket's network namespace (0 unknown).
    pub netns: u32,
    /// AF_INET (2) or AF_INET6 (10); 0 unknown.
    pub family: u16,
    /// Local port, host byte order.
    pub lport: u16,
    /// Remote port, host byte order.
    pub rport: u16,
    /// Raw kernel TCP state (`TCP_ESTABLISHED` = 1 ...), 0 unknown.
    pub state: u8,
    /// `sock_flags` bits.
    pub flags: u8,
    pub _pad: u32,
    /// Local address: 4 bytes for AF_INET, 16 for AF_INET6, network order.
    pub laddr: [u8; 16],
    /// Remote address, as `laddr`.
    pub raddr: [u8; 16],
}

/// `rst_sent` and `rst_received`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RstRecord {
    pub header: RecordHeader,
    pub sock: SockInfo,
    /// The task running when the hook fired (often not the owner).
    pub current: TaskInfo,
    /// The owner found by the kernel side (`owner_source`).
    pub owner: TaskInfo,
    /// Raw `enum sk_rst_reason` value, or `REASON_NONE`.
    pub reason: u32,
    pub owner_source: u8,
    pub _pad: [u8; 3],
}

/// `state_change`: a TCP state transition (`inet_sock_set_state`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateRecord {
    pub header: RecordHeader,
    pub sock: SockInfo,
    pub current: TaskInfo,
    pub owner: TaskInfo,
    pub old_state: u8,
    pub new_state: u8,
    pub owner_source: u8,
    pub _pad: [u8; 5],
}

/// `accept_failed`: accept()/accept4() returned an error.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptFailedRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// The listening socket, resolved from the fd accept() was called on
    /// (`skaddr` 0 when it could not be).
    pub listener: SockInfo,
    /// The fd accept() was called on (-1 unknown).
    pub listen_fd: i32,
    /// Positive errno.
    pub errno: i32,
    /// RLIMIT_NOFILE soft limit read from the task (0 unknown).
    pub fd_limit: u64,
}

/// Key of the in-kernel aggregation of accept failures: one entry per
/// process, listening fd (or io_uring request file) and errno. Keyed by what
/// the hook has at hand, so a repeated failure costs one map lookup; the
/// listener behind it is resolved once, for the first failure.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AcceptFailKey {
    pub tgid: u32,
    /// The fd accept() was called on; -1 for io_uring.
    pub fd: i32,
    pub errno: i32,
    pub _pad: u32,
    /// io_uring: the request's `struct file *`; 0 for the syscalls.
    pub file: u64,
}

/// Per-CPU value of that aggregation: how many failures, when the last one
/// happened, and the first one's details (process, listener, fd limit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptFailAgg {
    pub count: u64,
    /// `bpf_ktime_get_boot_ns()` of the latest failure counted.
    pub last_ns: u64,
    pub first: AcceptFailedRecord,
}

/// An owner as the kernel learned it (value of the listener-owner map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnerEntry {
    pub task: TaskInfo,
    /// `bpf_ktime_get_boot_ns()` when learned.
    pub learned_ns: u64,
}

/// Value of the kernel owner map (socket address -> owner), with the
/// socket's exchange state beside it: a send or receive costs one lookup.
/// A new owner starts a fresh exchange state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOwner {
    pub owner: OwnerEntry,
    pub exch: crate::exchange::SockExch,
}

const _: () = {
    assert!(core::mem::size_of::<RecordHeader>() == 16);
    assert!(core::mem::size_of::<TaskInfo>() == 48);
    assert!(core::mem::size_of::<SockInfo>() == 64);
    assert!(core::mem::size_of::<RstRecord>() == 184);
    assert!(core::mem::size_of::<StateRecord>() == 184);
    assert!(core::mem::size_of::<AcceptFailedRecord>() == 144);
    assert!(core::mem::size_of::<OwnerEntry>() == 56);
    assert!(core::mem::size_of::<SockOwner>() == 104);
    assert!(core::mem::size_of::<AcceptFailKey>() == 24);
    assert!(core::mem::size_of::<AcceptFailAgg>() == 160);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is #[repr(C)], made only of integers and byte
    // arrays, with no implicit padding (sizes asserted above); any bit pattern
    // is a valid value.
    unsafe impl aya::Pod for super::OwnerEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AcceptFailKey {}
    // SAFETY: as above (an AcceptFailedRecord has no implicit padding).
    unsafe impl aya::Pod for super::AcceptFailAgg {}
    // SAFETY: as above (an OwnerEntry and a SockExch side by side, both
    // 8-byte multiples).
    unsafe impl aya::Pod for super::SockOwner {}
}
