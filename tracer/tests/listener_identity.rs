//! Needs root. Which process a listener belongs to when its port does not
//! say (issue 13): a listener handed to another process over a unix socket
//! (systemd socket activation, a supervisor), an SO_REUSEPORT group with one
//! member stalled, and accept() on an AF_UNIX listener, which is no TCP
//! listener at all.
//!
//! Run: `cargo xtask test -- --test listener_identity` (as root).

mod common;

use std::time::Duration;

use serde_json::Value;

use common::{
    Netns, Tracer, dump, numbers, of_pid, one_at_a_time, require_root, select, sum_count,
    with_exhaust_fds,
};

/// The creator: a TCP listener (backlog 2) it hands over an abstract unix
/// socket (argv[1]) to whoever connects, keeping its own copy, as systemd
/// does. Prints "pid port inode", then serves one hand-over.
const CREATOR: &str = r#"
import os, socket, sys
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(2)
port = ls.getsockname()[1]
u = socket.socket(socket.AF_UNIX); u.bind("\0" + sys.argv[1]); u.listen(1)
print(os.getpid(), port, os.fstat(ls.fileno()).st_ino, flush=True)
conn, _ = u.accept()
socket.send_fds(conn, [b"L"], [ls.fileno()])
conn.close()
sys.stdin.readline()
"#;

/// The receiver: takes the listener over the unix socket argv[1], accepts
/// argv[2] connections (its own), then stalls while argv[3] more connects
/// pile up. Prints "pid".
const RECEIVER: &str = r#"
import os, socket, sys, time
u = socket.socket(socket.AF_UNIX); u.connect("\0" + sys.argv[1])
_, fds, _, _ = socket.recv_fds(u, 1, 1)
ls = socket.socket(fileno=fds[0])
port = ls.getsockname()[1]
held = []
for _ in range(int(sys.argv[2])):
    held.append(socket.create_connection(("127.0.0.1", port)))
    held.append(ls.accept()[0])
for _ in range(int(sys.argv[3])):
    c = socket.socket(); c.setblocking(False)
    try:
        c.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    held.append(c)
time.sleep(0.3)
print(os.getpid(), flush=True)
sys.stdin.readline()
"#;

fn overflows_of(events: &[Value], netns: u64, port: u64) -> Vec<Value> {
    select(events, netns, "listen_overflow")
        .into_iter()
        .filter(|e| e["local_port"] == port)
        .collect()
}

/// The creator keeps its copy and has the lower pid; the receiver is the
/// one accepting (and then stalling): its queue's drops are its own.
#[test]
fn a_handed_over_listener_belongs_to_its_acceptor() {
    if !require_root("a_handed_over_listener_belongs_to_its_acceptor") {
        return;
    }
    let _serial = one_at_a_time();
    let ns = Netns::new();
    let netns = ns.inode();
    let tracer = Tracer::watch_json(&[]);
    let name = format!("tracer-handoff-{}", std::process::id());
    let mut creator = ns.python("creator", CREATOR, &[&name]);
    let f = numbers(&creator.line());
    let (creator_pid, port, inode) = (f[0], f[1], f[2]);
    let mut receiver = ns.python("receiver", RECEIVER, &[&name, "2", "12"]);
    let receiver_pid = numbers(&receiver.line())[0];
    assert!(creator_pid < receiver_pid, "the creator has the lower pid");
    let done = tracer.wait_for(Duration::from_secs(10), |ev| {
        !overflows_of(ev, netns, port).is_empty()
    });
    creator.send("done");
    receiver.send("done");
    let lines = overflows_of(&tracer.stop().events(), netns, port);
    assert!(done, "no listen_overflow on :{port}");
    for e in &lines {
        assert_eq!(e["pid"], receiver_pid, "{}", dump(&lines));
        assert_eq!(e["socket_inode"], inode, "{e}");
        assert_eq!(e["attributed_by"], "socket_owner", "{e}");
    }
    let drops = sum_count(&lines);
    assert!(drops >= 9, "12 connects, 3 queued: {}", dump(&lines));
}

/// One SO_REUSEPORT member: backlog argv[2] on port argv[1] (0: any);
/// argv[3] `accept` accepts forever, `stall` never does. Prints
/// "pid port inode".
const REUSEPORT_MEMBER: &str = r#"
import os, socket, sys, threading
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
ls.bind(("127.0.0.1", int(sys.argv[1]))); ls.listen(int(sys.argv[2]))
print(os.getpid(), ls.getsockname()[1], os.fstat(ls.fileno()).st_ino, flush=True)
held = []
def serve():
    while True:
        held.append(ls.accept()[0])
if sys.argv[3] == "accept":
    threading.Thread(target=serve, daemon=True).start()
sys.stdin.readline()
"#;

/// argv[2] non-blocking connects to port argv[1], kept open.
const CONNECTS: &str = r#"
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    c = socket.socket(); c.setblocking(False)
    try:
        c.connect(("127.0.0.1", int(sys.argv[1])))
    except BlockingIOError:
        pass
    held.append(c)
time.sleep(0.3)
print("done", flush=True)
sys.stdin.readline()
"#;

/// The stalled member (the first to listen, lowest pid) overflows; the
/// member that accepts does not. Every drop is the stalled one's.
#[test]
fn reuseport_blames_the_stalled_member() {
    if !require_root("reuseport_blames_the_stalled_member") {
        return;
    }
    let _serial = one_at_a_time();
    let ns = Netns::new();
    let netns = ns.inode();
    let tracer = Tracer::watch_json(&[]);
    let mut stalled = ns.python("stalled", REUSEPORT_MEMBER, &["0", "2", "stall"]);
    let f = numbers(&stalled.line());
    let (stalled_pid, port, stalled_inode) = (f[0], f[1], f[2]);
    let port_s = port.to_string();
    let mut busy = ns.python("busy", REUSEPORT_MEMBER, &[&port_s, "512", "accept"]);
    let busy_pid = numbers(&busy.line())[0];
    let mut clients = ns.python("clients", CONNECTS, &[&port_s, "60"]);
    clients.expect_line("done");
    let done = tracer.wait_for(Duration::from_secs(10), |ev| {
        !overflows_of(ev, netns, port).is_empty()
    });
    let ss = ns.stdout("ss", &["-Hltn", "sport", "=", &format!(":{port}")]);
    for p in [&mut stalled, &mut busy, &mut clients] {
        p.send("done");
    }
    let lines = overflows_of(&tracer.stop().events(), netns, port);
    assert!(done, "no listen_overflow on :{port}; ss:\n{ss}");
    assert_ne!(stalled_pid, busy_pid);
    for e in &lines {
        assert_eq!(e["pid"], stalled_pid, "{}", dump(&lines));
        assert_eq!(e["socket_inode"], stalled_inode, "{e}");
        assert_eq!(e["backlog"], 2, "{e}");
        assert_eq!(e["queued"], 3, "{e}");
    }
}

/// A server out of fds failing accept() on an AF_UNIX listener (abstract
/// argv[1]) argv[2] times. Prints "pid failed".
const UNIX_EMFILE: &str = r#"
import os, socket, sys
u = socket.socket(socket.AF_UNIX); u.bind("\0" + sys.argv[1]); u.listen(8)
c = socket.socket(socket.AF_UNIX); c.connect("\0" + sys.argv[1])
fill = exhaust_fds(64)
failed = 0
for _ in range(int(sys.argv[2])):
    try:
        u.accept()
    except OSError as e:
        failed += e.errno == 24
del fill[:]
print(os.getpid(), failed, flush=True)
sys.stdin.readline()
"#;

/// A failed accept on a unix listener is a true failure, but it has no TCP
/// listener: no address, port, family or state.
#[test]
fn unix_listener_failures_have_no_tcp_fields() {
    if !require_root("unix_listener_failures_have_no_tcp_fields") {
        return;
    }
    let _serial = one_at_a_time();
    let ns = Netns::new();
    let tracer = Tracer::watch_json(&[]);
    let name = format!("tracer-unix-{}", std::process::id());
    let mut server = ns.python("unix-emfile", &with_exhaust_fds(UNIX_EMFILE), &[&name, "4"]);
    let f = numbers(&server.line());
    let (pid, failed) = (f[0], f[1]);
    assert_eq!(failed, 4);
    let done = tracer.wait_for(Duration::from_secs(10), |ev| {
        sum_count(&of_pid(ev, "accept_failed", pid)) >= failed
    });
    server.send("done");
    let lines = of_pid(&tracer.stop().events(), "accept_failed", pid);
    assert!(done, "{}", dump(&lines));
    assert_eq!(sum_count(&lines), failed, "{}", dump(&lines));
    for e in &lines {
        assert_eq!(e["errno"], 24, "{e}");
        for field in [
            "family",
            "local_addr",
            "local_port",
            "state",
            "socket_inode",
        ] {
            assert!(e.get(field).is_none(), "{field} on a unix listener: {e}");
        }
    }
}
