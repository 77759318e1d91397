//! One sock_diag socket (and the namespace's `/proc/net/sockstat` files)
//! per network namespace, opened once and kept.
//!
//! A netlink socket and a `/proc/net` file stay bound to the namespace they
//! were opened in, whichever thread uses them later. So a namespace is
//! entered (a short-lived thread and `setns`) only the first time it is
//! dumped; every later dump, the listener poll each second included, is a
//! `send` and some `recv`s on the kept socket, with no thread and no setns.
//!
//! A kept socket also keeps its namespace alive, so a handle is closed as
//! soon as its namespace's file no longer names it (the process exited, the
//! bind mount went away; checked every [`RECHECK`]) and when it has not
//! been used for [`IDLE`]:
//! tracer never holds a dead container's namespace for long.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

use super::SnapshotError;
use super::netns::{NetnsRef, in_netns, is_gone};

/// Handles unused this long are closed.
pub const IDLE: Duration = Duration::from_secs(60);

/// What is kept open for one namespace.
pub struct NetnsHandle {
    pub inode: u32,
    /// `NETLINK_SOCK_DIAG`, bound and connected to the kernel.
    pub diag: Socket,
    /// `/proc/thread-self/net/sockstat` and `sockstat6` as opened inside
    /// the namespace (`None`: unreadable, or no IPv6).
    sockstat: Option<File>,
    sockstat6: Option<File>,
    /// `/proc/thread-self/net/netstat` (TcpExt counters).
    netstat: Option<File>,
}

/// TCP sockets the kernel counts in one namespace (`/proc/net/sockstat`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounts {
    /// Hashed TCP sockets, IPv4 and IPv6: listeners and every connection
    /// (not TIME_WAIT or request sockets).
    pub inuse: u64,
    /// TIME_WAIT sockets (per namespace on current kernels; a kernel that
    /// counts them host-wide only makes this larger).
    pub tw: u64,
}

impl NetnsHandle {
    /// Opens the sock_diag socket and the sockstat files in the calling
    /// thread's namespace.
    fn open_here(inode: u32) -> Result<NetnsHandle, SnapshotError> {
        let mut diag = Socket::new(NETLINK_SOCK_DIAG).map_err(SnapshotError::Netlink)?;
        diag.bind_auto().map_err(SnapshotError::Netlink)?;
        diag.connect(&NetlinkAddr::new(0, 0))
            .map_err(SnapshotError::Netlink)?;
        Ok(NetnsHandle {
            inode,
            diag,
            sockstat: File::open("/proc/thread-self/net/sockstat").ok(),
            sockstat6: File::open("/proc/thread-self/net/sockstat6").ok(),
            netstat: File::open("/proc/thread-self/net/netstat").ok(),
        })
    }

    /// The namespace's TCP counts now; `None` when sockstat is unreadable.
    pub fn tcp_counts(&self) -> Option<TcpCounts> {
        let v4 = parse_sockstat(&read_all(self.sockstat.as_ref()?)?, "TCP:")?;
        let v6 = match &self.sockstat6 {
            Some(f) => parse_sockstat(&read_all(f)?, "TCP6:")?,
            None => TcpCounts::default(),
        };
        Some(TcpCounts {
            inuse: v4.inuse + v6.inuse,
            tw: v4.tw + v6.tw,
        })
    }
}

impl NetnsHandle {
    /// `TcpExt: ListenDrops` of the namespace: every SYN or final ACK a
    /// listener dropped (`tcp_listendrop()`, which also bumps that
    /// listener's own drop counter); `None` when netstat is unreadable.
    pub fn listen_drops(&self) -> Option<u64> {
        parse_netstat(&read_all(self.netstat.as_ref()?)?, "TcpExt:", "ListenDrops")
    }
}

/// One counter of `/proc/net/netstat` text: a header line of names and a
/// value line, both starting with `group`.
pub fn parse_netstat(text: &str, group: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter_map(|l| l.strip_prefix(group));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// A seq_file read from its start (pread at 0 makes the kernel regenerate
/// it). A seq_file fills a read until the buffer is full or its text ends,
/// so a short read is the end: no second read to see 0 bytes (which would
/// make the kernel generate the whole text once more: ~60 µs for netstat).
fn read_all(file: &File) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = 0;
    loop {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(n) if len + n < buf.len() => {
                len += n;
                break;
            }
            Ok(n) => {
                len += n;
                buf.resize(buf.len() * 2, 0);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

/// `inuse` and `tw` of the line starting with `prefix` (`TCP:` in sockstat,
/// `TCP6:` in sockstat6, which has no `tw`).
pub fn parse_sockstat(text: &str, prefix: &str) -> Option<TcpCounts> {
    let line = text.lines().find_map(|l| l.strip_prefix(prefix))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(TcpCounts {
        inuse: field("inuse")?,
        tw: field("tw").unwrap_or(0),
    })
}

struct Entry {
    handle: Arc<Mutex<NetnsHandle>>,
    used: Instant,
    /// When the namespace's file was last seen to still name it.
    checked: Instant,
}

/// A kept handle is re-checked against its namespace file this often (a
/// `stat` of a /proc path, not free with 100 namespaces): a namespace whose
/// last process left is released within it.
const RECHECK: Duration = Duration::from_secs(30);

static POOL: Mutex<Option<HashMap<u32, Entry>>> = Mutex::new(None);

fn pool() -> MutexGuard<'static, Option<HashMap<u32, Entry>>> {
    // A panic while the pool was locked leaves it usable: entries are
    // inserted and removed whole.
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `ns.path` still names namespace `ns.inode`.
fn still_there(ns: &NetnsRef) -> Result<(), SnapshotError> {
    match fs::metadata(&ns.path) {
        Ok(m) if m.ino() as u32 == ns.inode => Ok(()),
        Ok(m) => Err(SnapshotError::NetnsGone {
            expected: ns.inode,
            found: Some(m.ino() as u32),
            path: ns.path.clone(),
        }),
        Err(e) if is_gone(&e) => Err(SnapshotError::NetnsGone {
            expected: ns.inode,
            found: None,
            path: ns.path.clone(),
        }),
        Err(e) => Err(SnapshotError::Io {
            path: ns.path.clone(),
            source: e,
        }),
    }
}

/// The kept handle of `ns`, opened now if it is new. Fails (and closes a
/// kept handle) when `ns.path` no longer names the namespace.
pub fn get(ns: &NetnsRef) -> Result<Arc<Mutex<NetnsHandle>>, SnapshotError> {
    let now = Instant::now();
    let recheck = {
        let mut guard = pool();
        let map = guard.get_or_insert_with(HashMap::new);
        map.retain(|_, e| now.duration_since(e.used) < IDLE);
        match map.get_mut(&ns.inode) {
            Some(e) if now.duration_since(e.checked) < RECHECK => {
                e.used = now;
                return Ok(Arc::clone(&e.handle));
            }
            Some(_) => true,
            None => false,
        }
    };
    if let Err(e) = still_there(ns) {
        close(ns.inode);
        return Err(e);
    }
    if recheck && let Some(e) = pool().as_mut().and_then(|m| m.get_mut(&ns.inode)) {
        e.used = now;
        e.checked = now;
        return Ok(Arc::clone(&e.handle));
    }
    let inode = ns.inode;
    let handle = Arc::new(Mutex::new(in_netns(ns, move || {
        NetnsHandle::open_here(inode)
    })?));
    pool().get_or_insert_with(HashMap::new).insert(
        inode,
        Entry {
            handle: Arc::clone(&handle),
            used: now,
            checked: now,
        },
    );
    Ok(handle)
}

/// The kept handle of namespace `inode`, if a dump just used it (no
/// namespace scan: the lookups after a snapshot run on its handles).
pub fn kept_handle(inode: u32) -> Option<Arc<Mutex<NetnsHandle>>> {
    pool()
        .as_ref()
        .and_then(|m| m.get(&inode))
        .map(|e| Arc::clone(&e.handle))
}

/// Closes the handle of namespace `inode` (after a failed dump: a socket
/// with a dump left half-read would refuse the next one with EBUSY).
pub fn close(inode: u32) {
    if let Some(map) = pool().as_mut() {
        map.remove(&inode);
    }
}

/// Closes the handles of namespaces not in `alive` (a fresh listing).
pub fn retain(alive: &[NetnsRef]) {
    if let Some(map) = pool().as_mut() {
        map.retain(|inode, _| alive.iter().any(|n| n.inode == *inode));
    }
}

/// Namespaces with a kept handle (for tests and the debug log).
pub fn kept() -> usize {
    pool().as_ref().map_or(0, HashMap::len)
}

/// Locks a handle; a panic in another user leaves the socket usable
/// (a dump in progress is abandoned and the next one starts afresh).
pub fn lock(h: &Mutex<NetnsHandle>) -> MutexGuard<'_, NetnsHandle> {
    h.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKSTAT: &str = "sockets: used 13\nTCP: inuse 5 orphan 1 tw 7 alloc 9 mem 2\n\
                            UDP: inuse 0 mem 0\n";
    const SOCKSTAT6: &str = "TCP6: inuse 3\nUDP6: inuse 0\n";

    #[test]
    fn netstat_counter_by_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPHPHits\n\
                    TcpExt: 0 12 14 99\nIpExt: InNoRoutes ListenDrops\nIpExt: 5 6\n";
        assert_eq!(parse_netstat(text, "TcpExt:", "ListenDrops"), Some(14));
        assert_eq!(parse_netstat(text, "TcpExt:", "ListenOverflows"), Some(12));
        assert_eq!(parse_netstat(text, "IpExt:", "ListenDrops"), Some(6));
        assert_eq!(parse_netstat(text, "TcpExt:", "Missing"), None);
        assert_eq!(
            parse_netstat("TcpExt: ListenDrops\n", "TcpExt:", "ListenDrops"),
            None
        );
    }

    #[test]
    fn sockstat_lines_parse() {
        assert_eq!(
            parse_sockstat(SOCKSTAT, "TCP:"),
            Some(TcpCounts { inuse: 5, tw: 7 })
        );
        assert_eq!(
            parse_sockstat(SOCKSTAT6, "TCP6:"),
            Some(TcpCounts { inuse: 3, tw: 0 })
        );
        assert_eq!(parse_sockstat("TCP: orphan 1\n", "TCP:"), None);
        assert_eq!(parse_sockstat(SOCKSTAT6, "TCP:"), None);
    }

    #[test]
    fn own_namespace_handle_counts_its_sockets() {
        let own = super::super::netns::self_netns().expect("own netns");
        let ns = NetnsRef {
            inode: own,
            path: "/proc/self/ns/net".into(),
            pid: None,
            name: None,
        };
        let h = get(&ns).expect("a sock_diag handle for the own namespace");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let counts = lock(&h).tcp_counts().expect("sockstat readable");
        assert!(counts.inuse >= 1, "the listener is counted: {counts:?}");
        drop(listener);
        assert!(kept() >= 1);
    }
}
