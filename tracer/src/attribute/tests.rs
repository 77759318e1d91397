use super::*;

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tracer_common::{RecordHeader, kind};

use crate::event::comm_string;
use crate::snapshot::{ProcessInfo, SocketEntry};
use tombstones::TOMBSTONE_TTL_NS;

const NETNS: u32 = 4_026_531_840;
const TCP_ESTABLISHED: u8 = 1;
const TCP_LAST_ACK: u8 = 9;

/// A fixed /proc: known processes, and a count of lookups.
#[derive(Default)]
struct FakeProcs {
    procs: HashMap<u32, ProcessInfo>,
    lookups: Cell<usize>,
}

impl FakeProcs {
    fn with(list: &[(u32, &[u8], Option<&str>)]) -> Self {
        let mut procs = HashMap::new();
        for &(pid, comm, cgroup) in list {
            procs.insert(pid, process(pid, comm, cgroup));
        }
        FakeProcs {
            procs,
            lookups: Cell::new(0),
        }
    }
}

impl ProcSource for FakeProcs {
    fn process(&self, pid: u32) -> Option<ProcessInfo> {
        self.lookups.set(self.lookups.get() + 1);
        self.procs.get(&pid).cloned()
    }
}

fn process(pid: u32, comm: &[u8], cgroup: Option<&str>) -> ProcessInfo {
    ProcessInfo {
        pid,
        comm: comm.to_vec(),
        cgroup: cgroup.map(str::to_string),
        fd_count: 10,
        fd_limit: Some(1024),
    }
}

fn procs() -> FakeProcs {
    FakeProcs::with(&[
        (100, b"curl", Some("/user.slice/curl")),
        (200, b"haproxy", Some("/system.slice/haproxy.service")),
        (300, b"postgres", Some("/system.slice/postgresql.service")),
        (500, b"nginx", Some("/system.slice/nginx.service")),
        (7, b"leaky", None),
    ])
}

fn task(tgid: u32, comm: &[u8], cgroup_id: u64) -> TaskInfo {
    let mut c = [0u8; 16];
    c[..comm.len()].copy_from_slice(comm);
    TaskInfo {
        tgid,
        pid: tgid + 1,
        cgroup_id,
        comm: c,
        thread: c,
    }
}

/// An AF_INET socket (local, remote) in `NETNS`.
fn sock(local: ([u8; 4], u16), remote: ([u8; 4], u16), skaddr: u64, ino: u64) -> SockInfo {
    let mut s = SockInfo {
        skaddr,
        ino,
        netns: NETNS,
        family: tracer_common::socket_id::AF_INET,
        lport: local.1,
        rport: remote.1,
        state: TCP_ESTABLISHED,
        flags: 0,
        ..Default::default()
    };
    s.laddr[..4].copy_from_slice(&local.0);
    s.raddr[..4].copy_from_slice(&remote.0);
    s
}

const SERVER: [u8; 4] = [10, 0, 0, 1];
const CLIENT: [u8; 4] = [10, 0, 0, 2];

fn conn(client_port: u16, ino: u64) -> SockInfo {
    sock(
        (SERVER, 8080),
        (CLIENT, client_port),
        0xffff_0000 + ino,
        ino,
    )
}

fn rst(s: SockInfo, owner: TaskInfo, source: u8, ts: u64) -> RstRecord {
    RstRecord {
        header: RecordHeader {
            kind: kind::RST_SENT,
            version: tracer_common::RECORD_VERSION,
            len: 152,
            ts_boot_ns: ts,
        },
        sock: s,
        current: task(0, b"swapper/1", 1),
        owner,
        reason: 1,
        owner_source: source,
        _pad: [0; 3],
    }
}

fn state(s: SockInfo, old: u8, new: u8, owner: TaskInfo, source: u8, ts: u64) -> StateRecord {
    StateRecord {
        header: RecordHeader {
            kind: kind::STATE_CHANGE,
            version: tracer_common::RECORD_VERSION,
            len: 152,
            ts_boot_ns: ts,
        },
        sock: s,
        current: task(0, b"swapper/1", 1),
        owner,
        old_state: old,
        new_state: new,
        owner_source: source,
        _pad: [0; 5],
    }
}

/// (pid, comm as text, cgroup, how).
fn summary(
    r: (Option<Owner>, AttributedBy),
) -> (Option<(u32, String, Option<String>)>, AttributedBy) {
    (
        r.0.map(|o| {
            (
                o.pid,
                comm_string(&o.comm),
                o.cgroup.as_deref().map(str::to_string),
            )
        }),
        r.1,
    )
}

fn who(pid: u32, comm: &str, cgroup: Option<&str>) -> Option<(u32, String, Option<String>)> {
    Some((pid, comm.to_string(), cgroup.map(str::to_string)))
}

fn v4(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

fn entry(local: SocketAddr, remote: SocketAddr, state: u8, inode: u64) -> SocketEntry {
    SocketEntry {
        netns: NETNS,
        family: 2,
        state,
        local,
        remote,
        inode,
        uid: 0,
        rqueue: 0,
        wqueue: 0,
        drops: None,
        tcp: None,
        cookie: 0,
    }
}

#[test]
fn locked_current_is_current_task_with_record_comm() {
    let src = procs();
    let mut a = Attributor::default();
    // The record's comm wins over /proc's (the process may be gone); the
    // cgroup comes from /proc.
    let r = rst(
        conn(40000, 11),
        task(100, b"curl-worker", 42),
        owner_source::LOCKED_CURRENT,
        1_000,
    );
    let (owner, by) = a.rst_owner(&r, &src);
    assert_eq!(by, AttributedBy::CurrentTask);
    let owner = owner.expect("test data");
    assert_eq!(owner.pid, 100);
    assert_eq!(owner.comm, r.owner.comm.to_vec());
    assert_eq!(comm_string(&owner.comm), "curl-worker");
    assert_eq!(owner.cgroup.as_deref(), Some("/user.slice/curl"));
    assert!(!a.wants_refresh);
}

#[test]
fn cgroup_is_resolved_once_per_cgroup_id() {
    let src = procs();
    let mut a = Attributor::default();
    let r = rst(
        conn(40000, 11),
        task(100, b"curl", 42),
        owner_source::LOCKED_CURRENT,
        1,
    );
    a.rst_owner(&r, &src);
    a.rst_owner(&r, &src);
    assert_eq!(src.lookups.get(), 1);
    // An unknown process: nothing cached, asked again next time.
    let r = rst(
        conn(40001, 12),
        task(999, b"gone", 43),
        owner_source::LOCKED_CURRENT,
        1,
    );
    assert_eq!(
        summary(a.rst_owner(&r, &src)),
        (who(999, "gone", None), AttributedBy::CurrentTask)
    );
    a.rst_owner(&r, &src);
    assert_eq!(src.lookups.get(), 3);
}

/// A process name as the kernel records it (NUL padded).
fn name16(name: &[u8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..name.len()].copy_from_slice(name);
    c
}

/// The owner of a kernel record is made once per task and shared; another
/// thread name, process name or cgroup of the same process is another
/// owner, with its own fields.
#[test]
fn task_owners_are_made_once_and_shared() {
    let src = procs();
    let mut a = Attributor::default();
    let t = TaskInfo {
        thread: name16(b"curl-worker"),
        ..task(100, b"curl", 42)
    };
    let first = a.procs.owner_of_task(&t, &src);
    assert!(a.procs.owner_of_task(&t, &src).shares(&first));
    assert_eq!(first.thread_text.as_deref(), Some("curl-worker"));
    let same_name = TaskInfo {
        thread: name16(b"curl"),
        ..t
    };
    let o = a.procs.owner_of_task(&same_name, &src);
    assert!(!o.shares(&first));
    assert_eq!(
        (o.comm_text.as_ref(), o.thread_text.as_deref()),
        ("curl", None)
    );
    let renamed = TaskInfo {
        comm: name16(b"curl2"),
        ..t
    };
    let o = a.procs.owner_of_task(&renamed, &src);
    assert_eq!(&*o.comm_text, "curl2");
    let moved = TaskInfo { cgroup_id: 43, ..t };
    let o = a.procs.owner_of_task(&moved, &src);
    assert!(!o.shares(&first));
    assert_eq!(o.cgroup.as_deref(), Some("/user.slice/curl"));
}

/// An owner whose cgroup was not found is not kept: once the cgroup can be
/// found, the owner has it.
#[test]
fn a_task_owner_without_its_cgroup_is_made_again() {
    let mut a = Attributor::default();
    let t = task(999, b"late", 44);
    let o = a.procs.owner_of_task(&t, &procs());
    assert_eq!(o.cgroup, None);
    let found = FakeProcs::with(&[(999, b"late", Some("/system.slice/late.service"))]);
    let o = a.procs.owner_of_task(&t, &found);
    assert_eq!(o.cgroup.as_deref(), Some("/system.slice/late.service"));
    assert_eq!(o.systemd_unit.as_deref(), Some("late.service"));
    assert!(a.procs.owner_of_task(&t, &found).shares(&o));
}

#[test]
fn socket_map_is_socket_owner() {
    let src = procs();
    let mut a = Attributor::default();
    let r = rst(
        conn(40000, 11),
        task(200, b"haproxy", 9),
        owner_source::SOCKET_MAP,
        1_000,
    );
    assert_eq!(
        summary(a.rst_owner(&r, &src)),
        (
            who(200, "haproxy", Some("/system.slice/haproxy.service")),
            AttributedBy::SocketOwner
        )
    );
}

#[test]
fn kernel_owner_with_tgid_zero_is_ignored() {
    let src = procs();
    let mut a = Attributor::default();
    for source in [owner_source::LOCKED_CURRENT, owner_source::SOCKET_MAP] {
        let r = rst(conn(40000, 0), task(0, b"swapper/0", 1), source, 1);
        assert_eq!(summary(a.rst_owner(&r, &src)), (None, AttributedBy::None));
    }
}

fn seeded_with_established() -> Attributor {
    let snap = Snapshot {
        sockets: vec![entry(
            v4(SERVER, 8080),
            v4(CLIENT, 40000),
            TCP_ESTABLISHED,
            5555,
        )],
        owners: HashMap::from([((NETNS, 5555), 300)]),
        ..Default::default()
    };
    let mut a = Attributor::default();
    a.seed(&snap, 10);
    a
}

#[test]
fn snapshot_inode_owner_is_socket_owner() {
    let src = procs();
    let mut a = seeded_with_established();
    assert_eq!(a.seeded_at_ns, Some(10));
    let r = rst(
        conn(40000, 5555),
        TaskInfo::default(),
        owner_source::NONE,
        1_000,
    );
    assert_eq!(
        summary(a.rst_owner(&r, &src)),
        (
            who(300, "postgres", Some("/system.slice/postgresql.service")),
            AttributedBy::SocketOwner
        )
    );
    assert!(!a.wants_refresh);
    // Same 4-tuple without an inode (e.g. a timewait or request sock): the
    // snapshot's tuple -> inode map finds it.
    let r = rst(
        conn(40000, 0),
        TaskInfo::default(),
        owner_source::NONE,
        1_000,
    );
    assert_eq!(summary(a.rst_owner(&r, &src)).0.map(|w| w.0), Some(300));
    // Another namespace does not match.
    let mut other = conn(40000, 5555);
    other.netns = NETNS + 1;
    let r = rst(other, TaskInfo::default(), owner_source::NONE, 1_000);
    assert_eq!(summary(a.rst_owner(&r, &src)), (None, AttributedBy::None));
}

#[test]
fn snapshot_process_info_is_used_before_proc() {
    let src = procs();
    let mut snap = Snapshot {
        sockets: vec![entry(
            v4(SERVER, 8080),
            v4(CLIENT, 40000),
            TCP_ESTABLISHED,
            5555,
        )],
        owners: HashMap::from([((NETNS, 5555), 300)]),
        ..Default::default()
    };
    snap.processes
        .insert(300, process(300, b"pg-at-start", Some("/old")));
    let mut a = Attributor::default();
    a.seed(&snap, 10);
    let r = rst(
        conn(40000, 5555),
        TaskInfo::default(),
        owner_source::NONE,
        1_000,
    );
    assert_eq!(
        summary(a.rst_owner(&r, &src)),
        (
            who(300, "pg-at-start", Some("/old")),
            AttributedBy::SocketOwner
        )
    );
    assert_eq!(src.lookups.get(), 0);
}

#[test]
fn recently_closed_tuple_is_socket_owner_from_tombstone() {
    let src = procs();
    let mut a = Attributor::default();
    let closed = state(
        conn(40000, 77),
        TCP_ESTABLISHED,
        TCP_CLOSE,
        task(200, b"haproxy", 9),
        owner_source::SOCKET_MAP,
        1_000,
    );
    assert_eq!(
        summary(a.on_state(&closed, &src)),
        (
            who(200, "haproxy", Some("/system.slice/haproxy.service")),
            AttributedBy::SocketOwner
        )
    );
    // The peer's late segment draws an RST with no socket at all.
    let mut late = rst(
        conn(40000, 0),
        TaskInfo::default(),
        owner_source::NONE,
        2_000,
    );
    late.sock.skaddr = 0;
    assert_eq!(
        summary(a.rst_owner(&late, &src)),
        (
            who(200, "haproxy", Some("/system.slice/haproxy.service")),
            AttributedBy::SocketOwner
        )
    );
    // A different client port is another connection.
    let other = rst(
        conn(40001, 0),
        TaskInfo::default(),
        owner_source::NONE,
        2_000,
    );
    assert_eq!(
        summary(a.rst_owner(&other, &src)),
        (None, AttributedBy::None)
    );
    // Forgotten after the TTL.
    late.header.ts_boot_ns = 1_000 + TOMBSTONE_TTL_NS;
    assert_eq!(
        summary(a.rst_owner(&late, &src)),
        (None, AttributedBy::None)
    );
}

fn listener_sock(port: u16) -> SockInfo {
    let mut s = sock(([0, 0, 0, 0], port), ([0, 0, 0, 0], 0), 0xffff_1000, 4242);
    s.state = TCP_CLOSE;
    s
}

#[test]
fn no_socket_goes_to_listener_owner_until_it_closes() {
    let src = procs();
    let mut a = Attributor::default();
    let listen = state(
        listener_sock(8080),
        TCP_CLOSE,
        TCP_LISTEN,
        task(500, b"nginx", 5),
        owner_source::NONE,
        100,
    );
    assert_eq!(
        summary(a.on_state(&listen, &src)),
        (
            who(500, "nginx", Some("/system.slice/nginx.service")),
            AttributedBy::SocketOwner
        )
    );
    let mut no_sock = rst(conn(51234, 0), TaskInfo::default(), owner_source::NONE, 200);
    no_sock.sock.skaddr = 0;
    assert_eq!(
        summary(a.rst_owner(&no_sock, &src)),
        (
            who(500, "nginx", Some("/system.slice/nginx.service")),
            AttributedBy::ListenerOwner
        )
    );
    // Unknown namespace: the only listener on that port still matches.
    let mut unknown_ns = no_sock;
    unknown_ns.sock.netns = 0;
    assert_eq!(
        summary(a.rst_owner(&unknown_ns, &src)).1,
        AttributedBy::ListenerOwner
    );
    // Another port: nobody.
    let mut other_port = no_sock;
    other_port.sock.lport = 9090;
    assert_eq!(
        summary(a.rst_owner(&other_port, &src)),
        (None, AttributedBy::None)
    );
    assert!(!a.wants_refresh);

    // The listener closes. The connections still in its accept queue are
    // reset right after, and those RSTs are its owner's...
    let unlisten = state(
        listener_sock(8080),
        TCP_LISTEN,
        TCP_CLOSE,
        TaskInfo::default(),
        owner_source::NONE,
        300,
    );
    a.on_state(&unlisten, &src);
    no_sock.header.ts_boot_ns = 301;
    assert_eq!(
        summary(a.rst_owner(&no_sock, &src)),
        (
            who(500, "nginx", Some("/system.slice/nginx.service")),
            AttributedBy::ListenerOwner
        )
    );
    // ... still within the 2 s the close takes at most ...
    no_sock.header.ts_boot_ns = 300 + 1_999_999_999;
    assert_eq!(
        summary(a.rst_owner(&no_sock, &src)).1,
        AttributedBy::ListenerOwner
    );
    // ... but later RSTs to that port answer clients of a port nobody
    // listens on: nobody's.
    no_sock.header.ts_boot_ns = 300 + 2_000_000_000;
    assert_eq!(
        summary(a.rst_owner(&no_sock, &src)),
        (None, AttributedBy::None)
    );
    no_sock.header.ts_boot_ns = 300 + TOMBSTONE_TTL_NS;
    assert_eq!(
        summary(a.rst_owner(&no_sock, &src)),
        (None, AttributedBy::None)
    );
    let mut unknown_ns = no_sock;
    unknown_ns.sock.netns = 0;
    assert_eq!(
        summary(a.rst_owner(&unknown_ns, &src)),
        (None, AttributedBy::None)
    );

    // Someone else listens on the port again: theirs from now on.
    let relisten = state(
        listener_sock(8080),
        TCP_CLOSE,
        TCP_LISTEN,
        task(200, b"haproxy", 9),
        owner_source::NONE,
        400 + TOMBSTONE_TTL_NS,
    );
    a.on_state(&relisten, &src);
    no_sock.header.ts_boot_ns = 500 + TOMBSTONE_TTL_NS;
    assert_eq!(
        summary(a.rst_owner(&no_sock, &src)),
        (
            who(200, "haproxy", Some("/system.slice/haproxy.service")),
            AttributedBy::ListenerOwner
        )
    );
}

#[test]
fn listener_child_socket_does_not_close_the_listener() {
    // LISTEN -> SYN_RECV is a request socket cloned from the listener, not
    // the listener leaving.
    let src = procs();
    let mut a = Attributor::default();
    a.on_state(
        &state(
            listener_sock(8080),
            TCP_CLOSE,
            TCP_LISTEN,
            task(500, b"nginx", 5),
            owner_source::NONE,
            1,
        ),
        &src,
    );
    a.on_state(
        &state(
            conn(51000, 0),
            TCP_LISTEN,
            3, // TCP_SYN_RECV
            TaskInfo::default(),
            owner_source::NONE,
            2,
        ),
        &src,
    );
    let r = rst(
        conn(51234, 0),
        TaskInfo::default(),
        owner_source::NONE,
        3 + TOMBSTONE_TTL_NS,
    );
    assert_eq!(summary(a.rst_owner(&r, &src)).0.map(|w| w.0), Some(500));
}

#[test]
fn unknown_namespace_with_two_listeners_on_the_port_is_ambiguous() {
    let src = procs();
    let mut a = Attributor::default();
    let mut l1 = listener_sock(8080);
    l1.netns = 1;
    let mut l2 = listener_sock(8080);
    l2.netns = 2;
    a.on_state(
        &state(l1, TCP_CLOSE, TCP_LISTEN, task(500, b"nginx", 5), 0, 1),
        &src,
    );
    a.on_state(
        &state(l2, TCP_CLOSE, TCP_LISTEN, task(200, b"haproxy", 9), 0, 1),
        &src,
    );
    let mut r = rst(conn(51234, 0), TaskInfo::default(), owner_source::NONE, 2);
    r.sock.netns = 0;
    assert_eq!(summary(a.rst_owner(&r, &src)), (None, AttributedBy::None));
    r.sock.netns = 2;
    assert_eq!(summary(a.rst_owner(&r, &src)).0.map(|w| w.0), Some(200));
    // Once one of them has been closed for longer than the TTL, the other is
    // the only match again.
    a.on_state(
        &state(l1, TCP_LISTEN, TCP_CLOSE, TaskInfo::default(), 0, 10),
        &src,
    );
    r.sock.netns = 0;
    r.header.ts_boot_ns = 10 + TOMBSTONE_TTL_NS;
    assert_eq!(summary(a.rst_owner(&r, &src)).0.map(|w| w.0), Some(200));
}

#[test]
fn listener_owner_for_the_poller() {
    let src = procs();
    let snap = Snapshot {
        sockets: vec![entry(
            v4([0, 0, 0, 0], 5432),
            v4([0, 0, 0, 0], 0),
            TCP_LISTEN,
            6000,
        )],
        owners: HashMap::from([((NETNS, 6000), 300)]),
        processes: HashMap::from([(300, process(300, b"postgres", None))]),
        ..Default::default()
    };
    let mut a = Attributor::default();
    a.seed(&snap, 0);
    // By inode.
    assert_eq!(
        summary(a.listener_owner(NETNS, 5432, 6000, None, &src)),
        (who(300, "postgres", None), AttributedBy::SocketOwner)
    );
    // An unknown inode on a known open listener's port.
    assert_eq!(
        summary(a.listener_owner(NETNS, 5432, 6001, None, &src)),
        (who(300, "postgres", None), AttributedBy::SocketOwner)
    );
    assert!(!a.wants_refresh);
    // Nothing known: a refresh is wanted.
    assert_eq!(
        summary(a.listener_owner(NETNS, 9999, 7000, None, &src)),
        (None, AttributedBy::None)
    );
    assert!(a.wants_refresh);
}

/// Two listeners on one port (SO_REUSEPORT), each its own socket: a poll's
/// listener belongs to whoever listened on that socket, and before that to
/// the process the kernel saw accepting from it (a listener handed over).
#[test]
fn listener_owner_by_socket_not_port() {
    let src = procs();
    let mut a = Attributor::default();
    let l1 = sock(([0, 0, 0, 0], 8080), ([0, 0, 0, 0], 0), 0x1000, 7001);
    let l2 = sock(([0, 0, 0, 0], 8080), ([0, 0, 0, 0], 0), 0x2000, 7002);
    for (l, owner) in [(l1, task(100, b"curl", 1)), (l2, task(200, b"haproxy", 2))] {
        a.on_state(
            &state(
                l,
                TCP_CLOSE,
                TCP_LISTEN,
                owner,
                owner_source::LOCKED_CURRENT,
                5,
            ),
            &src,
        );
    }
    let pid = |r: (Option<Owner>, AttributedBy)| r.0.map(|o| o.pid);
    assert_eq!(
        pid(a.listener_owner(NETNS, 8080, 7001, None, &src)),
        Some(100)
    );
    assert_eq!(
        pid(a.listener_owner(NETNS, 8080, 7002, None, &src)),
        Some(200)
    );
    // The kernel saw pid 300 accept from the first: it drains that queue.
    let acceptor = task(300, b"postgres", 3);
    assert_eq!(
        pid(a.listener_owner(NETNS, 8080, 7001, Some(&acceptor), &src)),
        Some(300)
    );
    // Closed: the socket no longer names its owner.
    a.on_state(
        &state(l1, TCP_LISTEN, TCP_CLOSE, TaskInfo::default(), 0, 9),
        &src,
    );
    assert_eq!(pid(a.listener_owner(NETNS, 8081, 7001, None, &src)), None);
}

#[test]
fn snapshot_listener_is_listener_owner() {
    let src = procs();
    let mut snap = Snapshot {
        sockets: vec![entry(
            v4([0, 0, 0, 0], 5432),
            v4([0, 0, 0, 0], 0),
            TCP_LISTEN,
            6000,
        )],
        owners: HashMap::from([((NETNS, 6000), 300)]),
        ..Default::default()
    };
    // Seeding resolves listener owners; give it the process so it needs no
    // /proc.
    snap.processes.insert(300, process(300, b"postgres", None));
    let mut a = Attributor::default();
    a.seed(&snap, 0);
    let mut r = rst(
        sock((SERVER, 5432), (CLIENT, 33333), 0, 0),
        TaskInfo::default(),
        owner_source::NONE,
        5,
    );
    r.sock.state = 0;
    assert_eq!(
        summary(a.rst_owner(&r, &src)),
        (who(300, "postgres", None), AttributedBy::ListenerOwner)
    );
}

#[test]
fn nothing_known_is_none() {
    let src = procs();
    let mut a = Attributor::default();
    let r = rst(conn(40000, 0), TaskInfo::default(), owner_source::NONE, 1);
    assert_eq!(summary(a.rst_owner(&r, &src)), (None, AttributedBy::None));
    assert!(!a.wants_refresh);
    // An unknown family has no key: still none, no panic.
    let mut odd = r;
    odd.sock.family = 0;
    assert_eq!(summary(a.rst_owner(&odd, &src)), (None, AttributedBy::None));
}

#[test]
fn live_socket_without_owner_wants_refresh() {
    let src = procs();
    let mut a = Attributor::default();
    let r = rst(
        conn(40000, 4242),
        TaskInfo::default(),
        owner_source::NONE,
        1,
    );
    assert_eq!(summary(a.rst_owner(&r, &src)), (None, AttributedBy::None));
    assert!(a.wants_refresh);
    // A refresh (seed) clears it.
    a.seed(&Snapshot::default(), 2);
    assert!(!a.wants_refresh);
    assert_eq!(a.seeded_at_ns, Some(2));
    // Even when a listener answers, the live socket still wants a refresh.
    a.on_state(
        &state(
            listener_sock(8080),
            TCP_CLOSE,
            TCP_LISTEN,
            task(500, b"nginx", 5),
            0,
            3,
        ),
        &src,
    );
    assert_eq!(
        summary(a.rst_owner(&r, &src)).1,
        AttributedBy::ListenerOwner
    );
    assert!(a.wants_refresh);
}

#[test]
fn close_wait_accounting() {
    let src = procs();
    let mut a = Attributor::default();
    let owner = task(7, b"leaky", 70);
    let enter1 = state(
        conn(40001, 1),
        TCP_ESTABLISHED,
        TCP_CLOSE_WAIT,
        owner,
        owner_source::SOCKET_MAP,
        100,
    );
    let enter2 = state(
        conn(40002, 2),
        TCP_ESTABLISHED,
        TCP_CLOSE_WAIT,
        owner,
        owner_source::SOCKET_MAP,
        200,
    );
    a.on_state(&enter1, &src);
    a.on_state(&enter2, &src);
    assert_eq!(
        a.close_wait_by_pid(),
        HashMap::from([(Some(7), (2, Some(100), false))])
    );
    // The first one finally closes (CLOSE_WAIT -> LAST_ACK).
    let leave1 = state(
        conn(40001, 1),
        TCP_CLOSE_WAIT,
        TCP_LAST_ACK,
        owner,
        owner_source::SOCKET_MAP,
        300,
    );
    a.on_state(&leave1, &src);
    assert_eq!(
        a.close_wait_by_pid(),
        HashMap::from([(Some(7), (1, Some(200), false))])
    );
    assert_eq!(
        a.close_wait.values().cloned().collect::<Vec<_>>(),
        vec![CloseWait {
            pid: Some(7),
            since_ns: Some(200),
            held: true
        }]
    );
    // Straight to CLOSE (e.g. a reset) also ends CLOSE_WAIT.
    let reset2 = state(
        conn(40002, 2),
        TCP_CLOSE_WAIT,
        TCP_CLOSE,
        owner,
        owner_source::SOCKET_MAP,
        400,
    );
    a.on_state(&reset2, &src);
    assert!(a.close_wait_by_pid().is_empty());
}

#[test]
fn snapshot_close_wait_has_no_since() {
    let src = procs();
    let snap = Snapshot {
        sockets: vec![
            entry(v4(SERVER, 8080), v4(CLIENT, 40001), TCP_CLOSE_WAIT, 801),
            entry(v4(SERVER, 8080), v4(CLIENT, 40002), TCP_CLOSE_WAIT, 802),
            // Held by nobody the fd scan found.
            entry(v4(SERVER, 8080), v4(CLIENT, 40003), TCP_CLOSE_WAIT, 803),
            entry(v4(SERVER, 8080), v4(CLIENT, 40004), TCP_ESTABLISHED, 804),
        ],
        owners: HashMap::from([((NETNS, 801), 7), ((NETNS, 802), 7), ((NETNS, 804), 7)]),
        ..Default::default()
    };
    let mut a = Attributor::default();
    a.seed(&snap, 50);
    assert_eq!(a.close_wait.len(), 3);
    for cw in a.close_wait.values() {
        assert_eq!(cw.since_ns, None);
    }
    assert_eq!(
        a.close_wait_by_pid(),
        HashMap::from([(Some(7), (2, None, true)), (None, (1, None, true))])
    );
    // One more enters CLOSE_WAIT after start: the oldest known entry time is
    // its, and the flag still says some were older than tracer.
    a.on_state(
        &state(
            conn(40005, 805),
            TCP_ESTABLISHED,
            TCP_CLOSE_WAIT,
            task(7, b"leaky", 70),
            owner_source::SOCKET_MAP,
            900,
        ),
        &src,
    );
    assert_eq!(a.close_wait_by_pid()[&Some(7)], (3, Some(900), true));
    // Seeding again does not reset the entry time of a known one.
    a.seed(&snap, 1_000);
    assert_eq!(a.close_wait.len(), 4);
    assert_eq!(a.seeded_at_ns, Some(50));
}

/// A refresh drops CLOSE_WAIT entries whose way out was missed, keeps the
/// ones it shows and the ones that entered after it started.
#[test]
fn refresh_reconciles_close_wait() {
    let mut a = Attributor::default();
    let p = procs();
    let srv = task(7, b"srv", 1);
    // Two sockets enter CLOSE_WAIT at t=100 and t=200.
    for (port, t) in [(40001u16, 100u64), (40002, 200)] {
        let s = sock(
            ([10, 0, 0, 1], 80),
            ([10, 0, 0, 2], port),
            0x1000 + port as u64,
            0,
        );
        a.on_state(
            &state(s, 1, TCP_CLOSE_WAIT, srv, owner_source::SOCKET_MAP, t),
            &p,
        );
    }
    // One enters at t=900, after the refresh snapshot started (t=500).
    let late = sock(([10, 0, 0, 1], 80), ([10, 0, 0, 2], 40003), 0x3000, 0);
    a.on_state(
        &state(late, 1, TCP_CLOSE_WAIT, srv, owner_source::SOCKET_MAP, 900),
        &p,
    );
    assert_eq!(a.close_wait.len(), 3);
    // The snapshot (taken at 500) still shows only 40002 in CLOSE_WAIT.
    let snap = Snapshot {
        sockets: vec![entry(
            v4([10, 0, 0, 1], 80),
            v4([10, 0, 0, 2], 40002),
            TCP_CLOSE_WAIT,
            0,
        )],
        taken_ns: 500,
        ..Snapshot::default()
    };
    a.seed(&snap, 1000);
    let ports = |a: &Attributor| {
        let mut ports: Vec<u16> = a.close_wait.keys().map(|k| k.remote.1).collect();
        ports.sort_unstable();
        ports
    };
    // One dump can skip a socket (snapshot::recheck): a first miss keeps it.
    assert_eq!(ports(&a), vec![40001, 40002, 40003]);
    // A second snapshot in a row without it drops it.
    let again = Snapshot {
        taken_ns: 1500,
        sockets: snap.sockets.clone(),
        ..Snapshot::default()
    };
    a.seed(&again, 2000);
    assert_eq!(ports(&a), vec![40002, 40003]);
}

/// A CLOSE_WAIT socket one listing missed and the next shows again stays,
/// and its miss is forgotten: it takes two misses in a row to drop it.
#[test]
fn a_close_wait_socket_missed_once_is_kept() {
    let mut a = Attributor::default();
    let p = procs();
    let srv = task(7, b"srv", 1);
    a.on_state(
        &state(
            conn(40001, 0),
            1,
            TCP_CLOSE_WAIT,
            srv,
            owner_source::SOCKET_MAP,
            100,
        ),
        &p,
    );
    let key = tracer_common::socket_id::ConnKey::of(&conn(40001, 0)).expect("inet");
    let listing = |taken_ns: u64, shows: bool| crate::overflow::CloseWaitSeen {
        taken_ns,
        netns: vec![NETNS],
        keys: if shows {
            [(key, true)].into_iter().collect()
        } else {
            Default::default()
        },
    };
    for (t, shows) in [(500, false), (600, true), (700, false)] {
        a.reconcile_close_wait(&listing(t, shows));
        assert_eq!(a.close_wait.len(), 1, "after the listing at {t}");
    }
    a.reconcile_close_wait(&listing(800, false));
    assert!(a.close_wait.is_empty(), "two misses in a row drop it");
}

/// A listener poll that listed CLOSE_WAIT sockets mends the set between
/// snapshots: in the namespaces it dumped, entries it no longer shows go
/// (their way out was missed), unless they entered after the poll began;
/// other namespaces are left alone.
#[test]
fn listener_poll_reconciles_close_wait() {
    let mut a = Attributor::default();
    let p = procs();
    let srv = task(7, b"srv", 1);
    let mut other_ns = conn(40009, 0);
    other_ns.netns = NETNS + 1;
    for (s, t) in [
        (conn(40001, 0), 100u64),
        (conn(40002, 0), 200),
        (conn(40003, 0), 900),
        (other_ns, 100),
    ] {
        a.on_state(
            &state(s, 1, TCP_CLOSE_WAIT, srv, owner_source::SOCKET_MAP, t),
            &p,
        );
    }
    let key = |s: &SockInfo| tracer_common::socket_id::ConnKey::of(s).expect("inet");
    let seen = crate::overflow::CloseWaitSeen {
        taken_ns: 500,
        netns: vec![NETNS],
        keys: [(key(&conn(40002, 0)), true)].into_iter().collect(),
    };
    a.reconcile_close_wait(&seen);
    let ports = |a: &Attributor| {
        let mut ports: Vec<u16> = a.close_wait.keys().map(|k| k.remote.1).collect();
        ports.sort_unstable();
        ports
    };
    // 40001 missed once: kept until a second poll in a row misses it.
    assert_eq!(ports(&a), vec![40001, 40002, 40003, 40009]);
    a.reconcile_close_wait(&crate::overflow::CloseWaitSeen {
        taken_ns: 1000,
        ..seen
    });
    assert_eq!(ports(&a), vec![40002, 40003, 40009]);
}

/// A child that reaches CLOSE_WAIT while still in its listener's accept
/// queue (no inode) holds no fd of the process: it is not counted for it
/// until a poll shows it accepted.
#[test]
fn queued_close_wait_children_are_not_held_until_accepted() {
    let mut a = Attributor::default();
    let p = procs();
    let srv = task(7, b"srv", 1);
    for (s, t) in [(conn(40001, 0), 100u64), (conn(40002, 5), 200)] {
        a.on_state(
            &state(s, 1, TCP_CLOSE_WAIT, srv, owner_source::SOCKET_MAP, t),
            &p,
        );
    }
    assert_eq!(
        a.close_wait_by_pid(),
        HashMap::from([(Some(7), (1, Some(200), false))])
    );
    let key = |s: &SockInfo| tracer_common::socket_id::ConnKey::of(s).expect("inet");
    let seen = crate::overflow::CloseWaitSeen {
        taken_ns: 500,
        netns: vec![NETNS],
        keys: [(key(&conn(40001, 0)), true), (key(&conn(40002, 5)), true)]
            .into_iter()
            .collect(),
    };
    a.reconcile_close_wait(&seen);
    assert_eq!(
        a.close_wait_by_pid(),
        HashMap::from([(Some(7), (2, Some(100), false))])
    );
}

#[test]
fn a_socket_tracer_closed_for_its_holder_is_the_holders() {
    // tracer's snapshot reader dropped the last reference of a socket the
    // holder had just closed: the kernel side names tracer (locked by it,
    // or learned at that close); the snapshot knows the real holder.
    let src = procs();
    let mut a = seeded_with_established();
    let own = task(std::process::id(), b"tracer", 1);
    assert!(is_own(&own));
    for source in [owner_source::LOCKED_CURRENT, owner_source::SOCKET_MAP] {
        let r = rst(conn(40000, 5555), own, source, 1_000);
        assert_eq!(
            summary(a.rst_owner(&r, &src)),
            (
                who(300, "postgres", Some("/system.slice/postgresql.service")),
                AttributedBy::SocketOwner
            )
        );
    }
    // A socket of tracer's own (nobody else known to hold it) stays its.
    let r = rst(conn(41000, 0), own, owner_source::LOCKED_CURRENT, 1_000);
    let (owner, by) = a.rst_owner(&r, &src);
    assert_eq!(owner.map(|o| o.pid), Some(std::process::id()));
    assert_eq!(by, AttributedBy::CurrentTask);
    // Another process's own answer is kept as it was.
    let r = rst(
        conn(40000, 5555),
        task(100, b"curl", 1),
        owner_source::LOCKED_CURRENT,
        1_000,
    );
    assert_eq!(summary(a.rst_owner(&r, &src)).0.map(|w| w.0), Some(100));
}
