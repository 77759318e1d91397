//! What existed before the tracer attached: every TCP socket in every network
//! namespace (from sock_diag), which process holds each one (from
//! `/proc/*/fd`), and what those processes look like (comm, cgroup, open fds,
//! RLIMIT_NOFILE).
//!
//! Everything here is blocking and may take a while on a busy host (one
//! short-lived thread per network namespace, one `readlink` per open fd); call
//! it from `tokio::task::spawn_blocking` or a plain thread. Namespaces are only
//! ever entered from threads this module spawns and joins, never from the
//! caller's thread.
//!
//! Listener queue statistics are the per-listener signal for accept-queue
//! overflow: `rqueue` is the accept queue length, `wqueue` the backlog limit
//! and `drops` the socket's drop counter, which the kernel bumps for every SYN
//! or final ACK refused because that queue was full. Refresh them with
//! [`listeners_in`].

// Parts of this API are for the attribution and diagnose code that is being
// written alongside; until all of it is wired up some items are unused.
#![allow(dead_code, unused_imports)]

mod error;
mod fd_source;
pub mod handles;
mod netns;
mod owners;
mod proc;
pub mod recheck;
mod sockdiag;
mod tcpinfo;

use owners::{attribute, peak_rss, rss_now};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use tracer_common::socket_id::ConnKey;

pub use error::{SNAPSHOT_COST, SnapshotError};
pub use fd_source::{FdSource, TaskFiles, set_fd_source};
pub use netns::{NetnsRef, find_netns, list_netns, netns_of, self_netns};
pub use proc::{
    parse_cgroup_v2, parse_nofile_soft, parse_socket_link, process_info, socket_inodes_of,
};
pub use recheck::take_snapshot_expecting;
pub use sockdiag::{ALL_STATES, Chunk, parse_dump_chunk, parse_inet_diag_msg};
pub use tcpinfo::{TcpInfo, parse_tcp_info};

/// Kernel TCP state numbers (`include/net/tcp_states.h`).
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_TIME_WAIT: u8 = 6;
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const TCP_LISTEN: u8 = 10;
pub const TCP_NEW_SYN_RECV: u8 = 12;

/// The kernel's name of a TCP state without the `TCP_` prefix, as the event
/// schema spells it.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        13 => "BOUND_INACTIVE",
        _ => "UNKNOWN",
    }
}

/// One TCP socket as sock_diag reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEntry {
    /// Inode of the network namespace the socket lives in.
    pub netns: u32,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// Kernel TCP state number ([`TCP_LISTEN`], [`TCP_CLOSE_WAIT`], ...).
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Socket inode (0 for TIME_WAIT and NEW_SYN_RECV mini-sockets).
    pub inode: u64,
    pub uid: u32,
    /// Listeners: accept queue length. Others: bytes in the receive queue.
    pub rqueue: u32,
    /// Listeners: backlog limit. Others: bytes in the send queue.
    pub wqueue: u32,
    /// `SK_MEMINFO_DROPS` from `INET_DIAG_SKMEMINFO`; `None` when the kernel
    /// sent no (or a too short) skmeminfo, e.g. for TIME_WAIT sockets.
    pub drops: Option<u32>,
    /// Byte counters from `INET_DIAG_INFO` (connections; `None` for
    /// mini-sockets and kernels before 4.19).
    pub tcp: Option<TcpInfo>,
    /// The socket cookie (the value `bpf_get_socket_cookie` returns).
    pub cookie: u64,
}

impl SocketEntry {
    pub fn is_listener(&self) -> bool {
        self.state == TCP_LISTEN
    }

    /// The key of [`Snapshot::owners`].
    pub fn key(&self) -> (u32, u64) {
        (self.netns, self.inode)
    }

    /// The connection's key, as events and attribution spell it.
    pub fn conn_key(&self) -> ConnKey {
        ConnKey::from_addrs(self.netns, self.local, self.remote)
    }
}

/// A process as `/proc` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// `/proc/PID/comm` without the trailing newline; raw bytes.
    pub comm: Vec<u8>,
    /// The cgroup v2 path (`0::/path` line), `None` on a v1-only host.
    pub cgroup: Option<String>,
    /// Open file descriptors (0 when `/proc/PID/fd` cannot be read).
    pub fd_count: u32,
    /// RLIMIT_NOFILE soft limit; `None` when unreadable or unlimited.
    pub fd_limit: Option<u64>,
}

/// Bounds and sources for [`take_snapshot`].
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Directories holding bind-mounted namespace files besides the
    /// per-process ones (`ip netns` uses `/run/netns`).
    pub netns_dirs: Vec<PathBuf>,
    /// Bitmask of TCP states to dump (`1 << state`); [`ALL_STATES`] by default.
    pub states: u32,
    /// At most this many network namespaces are dumped.
    pub max_netns: usize,
    /// At most this many processes are examined per pass over `/proc`.
    pub max_pids: usize,
    /// At most this many fds are resolved per process.
    pub max_fds_per_pid: usize,
    /// Collect [`ProcessInfo`] for every process that holds a socket.
    pub process_info: bool,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            netns_dirs: vec![
                PathBuf::from("/run/netns"),
                PathBuf::from("/var/run/docker/netns"),
            ],
            states: ALL_STATES,
            max_netns: 4096,
            max_pids: 262_144,
            max_fds_per_pid: 262_144,
            process_info: true,
        }
    }
}

/// Everything found by [`take_snapshot`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every dumped TCP socket, namespace by namespace.
    pub sockets: Vec<SocketEntry>,
    /// (netns inode, socket inode) to the lowest pid holding that socket.
    /// For sockets sock_diag reported, the netns is the socket's own; for
    /// other sockets (UDP, unix, sockets that appeared after the dump) it is
    /// the holding process's netns.
    pub owners: HashMap<(u32, u64), u32>,
    /// Every pid holding the socket, for sockets held by more than one
    /// process (pre-fork servers share their listener). Sorted ascending.
    pub shared_owners: HashMap<(u32, u64), Vec<u32>>,
    /// Processes that hold at least one socket.
    pub processes: HashMap<u32, ProcessInfo>,
    /// pid to the inode of its network namespace, for every pid examined.
    pub netns_of_pid: HashMap<u32, u32>,
    /// The namespaces found, with a handle to enter each again.
    pub namespaces: Vec<NetnsRef>,
    /// Inode of the network namespace this process runs in.
    pub self_netns: u32,
    /// Non-fatal problems (a namespace that could not be entered, a process
    /// that could not be read for another reason than having exited).
    pub warnings: usize,
    /// The first few warnings, as text.
    pub warning_samples: Vec<String>,
    /// A cap of [`SnapshotOptions`] was hit; the view is incomplete.
    pub truncated: bool,
    /// CLOCK_BOOTTIME ns when the snapshot started: state it shows is at
    /// least this recent, events after it may be newer than it.
    pub taken_ns: u64,
}

const MAX_WARNING_SAMPLES: usize = 16;

/// CLOCK_BOOTTIME in ns (the clock of the kernel's records). Kept here, not
/// taken from `crate::clock`, so this module also builds inside tests.
fn boot_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_BOOTTIME
    // always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Snapshot {
    /// The process holding `entry`, if it was found.
    pub fn owner_of(&self, entry: &SocketEntry) -> Option<u32> {
        if entry.inode == 0 {
            return None;
        }
        self.owners.get(&entry.key()).copied()
    }

    /// Every listening socket.
    pub fn listeners(&self) -> impl Iterator<Item = &SocketEntry> {
        self.sockets.iter().filter(|s| s.is_listener())
    }

    /// Sockets of one namespace.
    pub fn sockets_in(&self, netns: u32) -> impl Iterator<Item = &SocketEntry> {
        self.sockets.iter().filter(move |s| s.netns == netns)
    }

    /// The handle of a namespace found by this snapshot.
    pub fn netns(&self, inode: u32) -> Option<&NetnsRef> {
        self.namespaces.iter().find(|n| n.inode == inode)
    }

    fn warn(&mut self, message: String) {
        log::debug!("snapshot: {message}");
        self.warnings += 1;
        if self.warning_samples.len() < MAX_WARNING_SAMPLES {
            self.warning_samples.push(message);
        }
    }
}

/// Dumps the sockets of one namespace (all states in `states`, see
/// [`ALL_STATES`]) over its kept sock_diag socket ([`handles`]).
///
/// The kernel walks its one host-wide connection table for every dump,
/// whichever namespace asks, skipping other namespaces' sockets: on a host
/// with 100k connections and 100 containers, dumping every namespace in
/// full is 100 walks of 100k sockets. So when more than listeners is asked
/// for, the listeners (their own, small table) come first, and the
/// connection table is walked only when the namespace's sockstat says it
/// holds sockets beyond them. (Request sockets, SYN_RECV, are in neither
/// count: a namespace with only listeners is reported without them.)
pub fn dump_netns(ns: &NetnsRef, states: u32) -> Result<Vec<SocketEntry>, SnapshotError> {
    let handle = handles::get(ns)?;
    let h = handles::lock(&handle);
    let result = dump_with(&h, states);
    drop(h);
    if result.is_err() {
        handles::close(ns.inode);
    }
    result
}

fn dump_with(h: &handles::NetnsHandle, states: u32) -> Result<Vec<SocketEntry>, SnapshotError> {
    const LISTEN: u32 = 1 << TCP_LISTEN;
    if states & !LISTEN == 0 {
        return sockdiag::dump(&h.diag, h.inode, states);
    }
    let before = h.tcp_counts();
    let listeners = sockdiag::dump(&h.diag, h.inode, LISTEN)?;
    let after = h.tcp_counts();
    if let (Some(b), Some(a)) = (before, after)
        && b == a
        && a.tw == 0
        && a.inuse == listeners.len() as u64
    {
        return Ok(if states & LISTEN != 0 {
            listeners
        } else {
            Vec::new()
        });
    }
    // Room for what sockstat counted (plus some request sockets): no
    // doubling of a 20 MB vector on a host with 100k connections.
    let room = after.map_or(0, |a| a.inuse + a.tw + 256);
    sockdiag::dump_with_room(&h.diag, h.inode, states, room as usize)
}

/// The listening TCP sockets of one namespace with their queue statistics.
/// Cheap enough to call periodically.
pub fn listeners_in(ns: &NetnsRef) -> Result<Vec<SocketEntry>, SnapshotError> {
    dump_netns(ns, 1 << TCP_LISTEN)
}

/// The namespace's `TcpExt: ListenDrops` counter (over its kept handle):
/// while it stands still, no listener there dropped anything.
pub fn listen_drops(ns: &NetnsRef) -> Result<Option<u64>, SnapshotError> {
    let handle = handles::get(ns)?;
    let drops = handles::lock(&handle).listen_drops();
    Ok(drops)
}

/// Sockets, owners and processes across all network namespaces.
///
/// Per-namespace and per-process failures are counted in
/// [`Snapshot::warnings`]; an error is returned only when no namespace at all
/// could be dumped (typically: not permitted) or `/proc` cannot be listed.
pub fn take_snapshot(opts: &SnapshotOptions) -> Result<Snapshot, SnapshotError> {
    let mut snap = Snapshot {
        taken_ns: boot_now_ns(),
        ..Snapshot::default()
    };
    let t0 = std::time::Instant::now();
    log::debug!(
        "snapshot: peak RSS {} before it, RSS {}",
        peak_rss(),
        rss_now()
    );

    // 1. Namespaces, and each process's namespace on the way.
    let listing = netns::scan(opts)?;
    snap.self_netns = listing.self_netns;
    snap.netns_of_pid = listing.netns_of_pid;
    snap.truncated |= listing.truncated;
    for w in listing.warnings {
        snap.warn(w);
    }
    let mut namespaces = listing.namespaces;
    if namespaces.len() > opts.max_netns {
        namespaces.truncate(opts.max_netns);
        snap.truncated = true;
    }

    // 2. Sockets. With the task-file iterator, its one read runs beside
    //    the dumps; the /proc scan, much slower, comes after them so that
    //    sockets seen here and still open are found there.
    let (dumps, records) = std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("task-files".into())
            .spawn_scoped(scope, fd_source::read_checked)
            .ok();
        let dumps: Vec<_> = namespaces
            .iter()
            .map(|ns| (ns, dump_netns(ns, opts.states)))
            .collect();
        (dumps, reader.and_then(|h| h.join().ok().flatten()))
    });
    let mut failed = 0usize;
    let mut first_error = None;
    let mut self_error = None;
    // The biggest namespace's vector becomes the snapshot's, the others
    // are appended to it: never two copies of 100k entries at once.
    let mut dumps = dumps;
    dumps.sort_by_key(|(_, d)| std::cmp::Reverse(d.as_ref().map_or(0, Vec::len)));
    for (ns, dumped) in dumps {
        match dumped {
            Ok(entries) if snap.sockets.is_empty() => snap.sockets = entries,
            Ok(mut entries) => snap.sockets.append(&mut entries),
            Err(e) => {
                failed += 1;
                snap.warn(format!("netns {}: {e}", ns.inode));
                if ns.inode == snap.self_netns && e.is_permission() {
                    self_error = Some(e);
                } else if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    if let Some(e) = self_error {
        return Err(e);
    }
    if failed == namespaces.len() {
        return Err(match first_error {
            Some(first) => SnapshotError::NothingInspected {
                failed,
                first: Box::new(first),
            },
            None => SnapshotError::Thread("no network namespace found".into()),
        });
    }
    handles::retain(&namespaces);
    snap.namespaces = namespaces;
    let dumped = t0.elapsed();
    let mut rss = (peak_rss(), String::new());

    // 3. Who holds which socket.
    let mut held = match records {
        Some(files) => fd_source::scan(files, &mut snap.netns_of_pid),
        None => proc::scan_fds(opts, &mut snap.netns_of_pid),
    };
    snap.truncated |= held.truncated;
    for w in std::mem::take(&mut held.warnings) {
        snap.warn(w);
    }
    let held_sockets = held.sockets.len();
    attribute(&mut snap, std::mem::take(&mut held.sockets));
    let scanned = t0.elapsed();
    rss.1 = peak_rss();

    // 4. What those processes look like.
    if opts.process_info {
        let mut pids: Vec<u32> = snap.owners.values().copied().collect();
        pids.extend(snap.shared_owners.values().flatten().copied());
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            let fd_count = held.fd_counts.get(&pid).copied();
            if let Some(info) = proc::process_info_with(pid, fd_count) {
                snap.processes.insert(pid, info);
            }
        }
    }
    log::debug!(
        "snapshot: peak RSS {} after the dumps, {} after the fd scan, {} now",
        rss.0,
        rss.1,
        peak_rss()
    );
    log::debug!(
        "snapshot: {} sockets in {} namespaces dumped at {dumped:?}, {} held sockets of {} processes at {scanned:?}, done at {:?}",
        snap.sockets.len(),
        snap.namespaces.len(),
        held_sockets,
        snap.processes.len(),
        t0.elapsed()
    );
    Ok(snap)
}

#[cfg(test)]
mod tests;
