//! Needs root. Resets on established loopback connections between a python
//! server and a python client (separate processes) inside a private network
//! namespace: each RST must be blamed on the process whose socket sent or
//! received it, whatever task the kernel happened to run in.
//!
//! Run: `cargo test -p tracer --test attribution_rst` (as root).

mod common;

use std::time::Duration;

use serde_json::Value;

use common::{Netns, Proc, STEP_TIMEOUT, Tracer, dump, in_netns, require_root, select};

/// argv: family ("4"/"6"), then optionally a process name to set with
/// prctl(PR_SET_NAME). Listens on loopback, prints "PID PORT", accepts one
/// connection and prints "accepted", then obeys one stdin command:
///   abort        SO_LINGER {1, 0} and close: RST from tcp_disconnect
///   abort_exit   the same, then exit at once
///   close_unread wait (bounded) until data is queued unread, then close
/// prints "closed", and waits for stdin to close.
const SERVER: &str = r#"
import ctypes, os, select, socket, struct, sys
fam = sys.argv[1]
if len(sys.argv) > 2:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(15, os.fsencode(sys.argv[2]), 0, 0, 0) != 0:
        sys.exit("prctl: errno %d" % ctypes.get_errno())
af, host = (socket.AF_INET6, "::1") if fam == "6" else (socket.AF_INET, "127.0.0.1")
ls = socket.socket(af, socket.SOCK_STREAM)
ls.bind((host, 0))
ls.listen(8)
print(os.getpid(), ls.getsockname()[1], flush=True)
c, _ = ls.accept()
print("accepted", flush=True)
cmd = sys.stdin.readline().strip()
if cmd in ("abort", "abort_exit"):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    if cmd == "abort_exit":
        os._exit(0)
elif cmd == "close_unread":
    r, _, _ = select.select([c], [], [], 20)
    if not r:
        sys.exit("no data arrived")
    c.close()
else:
    sys.exit("unknown command %r" % cmd)
print("closed", flush=True)
sys.stdin.read()
"#;

/// argv: family, port, "send" or "quiet". Prints its pid, connects, prints
/// "connected LOCALPORT", with "send" sends 100 bytes and prints "sent",
/// then blocks in recv() and prints "reset" on ECONNRESET (else what it got).
const CLIENT: &str = r#"
import os, socket, sys
fam, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
af, host = (socket.AF_INET6, "::1") if fam == "6" else (socket.AF_INET, "127.0.0.1")
print(os.getpid(), flush=True)
s = socket.socket(af, socket.SOCK_STREAM)
s.connect((host, port))
print("connected", s.getsockname()[1], flush=True)
if mode == "send":
    s.sendall(b"x" * 100)
    print("sent", flush=True)
s.settimeout(30)
try:
    d = s.recv(100)
    print("eof" if not d else "data", flush=True)
except ConnectionResetError:
    print("reset", flush=True)
except socket.timeout:
    print("timeout", flush=True)
sys.stdin.read()
"#;

/// A connected server/client pair inside `ns`.
struct Pair {
    server: Proc,
    client: Proc,
    server_pid: u64,
    server_port: u64,
    client_pid: u64,
    client_port: u64,
}

fn connect_pair(ns: &Netns, fam: &str, server_name: Option<&str>, client_mode: &str) -> Pair {
    let mut sargs = vec![fam];
    if let Some(n) = server_name {
        sargs.push(n);
    }
    let server = ns.python("server", SERVER, &sargs);
    let first = server.line();
    let (spid, sport) = first.split_once(' ').expect("server: PID PORT");
    let server_pid: u64 = spid.parse().unwrap();
    let server_port: u64 = sport.parse().unwrap();

    let client = ns.python(
        "client",
        CLIENT,
        &[fam, &server_port.to_string(), client_mode],
    );
    let client_pid: u64 = client.line().parse().expect("client pid");
    let connected = client.line();
    let client_port: u64 = connected
        .strip_prefix("connected ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("client said {connected:?}"));
    if client_mode == "send" {
        client.expect_line("sent");
    }
    server.expect_line("accepted");
    assert_ne!(server_pid, client_pid);
    Pair {
        server,
        client,
        server_pid,
        server_port,
        client_pid,
        client_port,
    }
}

/// Waits for one rst_sent and one rst_received in `netns`, stops the tracer,
/// and returns exactly those two events (asserting there is one of each).
fn one_rst_each_way(tracer: Tracer, netns: u64) -> (Value, Value) {
    let complete = tracer.wait_for(Duration::from_secs(10), |ev| {
        !select(ev, netns, "rst_sent").is_empty() && !select(ev, netns, "rst_received").is_empty()
    });
    let stopped = tracer.stop();
    assert!(
        stopped.status.success(),
        "tracer exit {:?}; stderr:\n{}",
        stopped.status,
        stopped.stderr
    );
    let events = stopped.events();
    let mine = in_netns(&events, netns);
    assert!(
        complete,
        "missing RST events in netns; got:\n{}",
        dump(&mine)
    );
    let sent = select(&events, netns, "rst_sent");
    let received = select(&events, netns, "rst_received");
    assert_eq!(sent.len(), 1, "rst_sent in netns:\n{}", dump(&mine));
    assert_eq!(received.len(), 1, "rst_received in netns:\n{}", dump(&mine));
    eprintln!("sent:     {}\nreceived: {}", sent[0], received[0]);
    (sent[0].clone(), received[0].clone())
}

fn assert_socket(e: &Value, family: &str, addr: &str, local_port: u64, remote_port: u64) {
    assert_eq!(e["v"], 1, "{e}");
    assert_eq!(e["family"], family, "{e}");
    assert_eq!(e["local_addr"], addr, "{e}");
    assert_eq!(e["remote_addr"], addr, "{e}");
    assert_eq!(e["local_port"], local_port, "{e}");
    assert_eq!(e["remote_port"], remote_port, "{e}");
}

/// The sent side of an abort: owned by the server's socket.
fn assert_server_sent(e: &Value, p: &Pair, family: &str, addr: &str, reason: &str, comm: &str) {
    assert_socket(e, family, addr, p.server_port, p.client_port);
    // Before 6.10 the kernel names no reason, and an abort's cannot be
    // inferred from what it does say.
    if common::kernel_names_rst_reasons() {
        assert_eq!(e["reason"], reason, "{e}");
    } else {
        assert!(e["reason"].is_null(), "{e}");
        assert!(e.get("reason_inferred").is_none(), "{e}");
    }
    assert_eq!(e["pid"], p.server_pid, "{e}");
    assert_eq!(e["comm"], comm, "{e}");
    // The RST goes out inside the server's own close(): the tool (6.18)
    // names it by the current task; the socket's owner is the same process.
    let by = e["attributed_by"].as_str().unwrap_or_default();
    assert!(
        by == "current_task" || by == "socket_owner",
        "attributed_by: {e}"
    );
}

/// The received side: the client's socket, though on loopback the kernel
/// processes the RST while the server's task is current.
fn assert_client_received(e: &Value, p: &Pair, family: &str, addr: &str) {
    assert_socket(e, family, addr, p.client_port, p.server_port);
    assert_eq!(e["pid"], p.client_pid, "{e}");
    assert_eq!(e["comm"], "python3", "{e}");
    assert_eq!(e["attributed_by"], "socket_owner", "{e}");
    assert_eq!(e["state"], "ESTABLISHED", "{e}");
}

/// Runs `cmd` on the server and waits until the client saw the reset.
fn server_does(p: &mut Pair, cmd: &str, expect_closed: bool) {
    p.server.send(cmd);
    if expect_closed {
        p.server.expect_line("closed");
    }
    p.client.expect_line("reset");
}

/// The kernel's reason for the RST of tcp_disconnect (SO_LINGER {1, 0}).
const LINGER0_REASON: &str = "TCP_STATE";

#[test]
fn a_linger0_abort_by_server() {
    if !require_root("a_linger0_abort_by_server") {
        return;
    }
    let ns = Netns::new();
    let tracer = Tracer::watch_json(&[]);
    let mut p = connect_pair(&ns, "4", None, "quiet");
    server_does(&mut p, "abort", true);
    let (sent, received) = one_rst_each_way(tracer, ns.inode());
    assert_server_sent(&sent, &p, "inet", "127.0.0.1", LINGER0_REASON, "python3");
    assert_client_received(&received, &p, "inet", "127.0.0.1");
}

#[test]
fn b_close_with_unread_data() {
    if !require_root("b_close_with_unread_data") {
        return;
    }
    let ns = Netns::new();
    let tracer = Tracer::watch_json(&[]);
    let mut p = connect_pair(&ns, "4", None, "send");
    server_does(&mut p, "close_unread", true);
    let (sent, received) = one_rst_each_way(tracer, ns.inode());
    assert_server_sent(
        &sent,
        &p,
        "inet",
        "127.0.0.1",
        "TCP_ABORT_ON_CLOSE",
        "python3",
    );
    assert_client_received(&received, &p, "inet", "127.0.0.1");
}

#[test]
fn c_linger0_abort_ipv6() {
    if !require_root("c_linger0_abort_ipv6") {
        return;
    }
    let ns = Netns::new();
    let tracer = Tracer::watch_json(&[]);
    let mut p = connect_pair(&ns, "6", None, "quiet");
    server_does(&mut p, "abort", true);
    let (sent, received) = one_rst_each_way(tracer, ns.inode());
    assert_server_sent(&sent, &p, "inet6", "::1", LINGER0_REASON, "python3");
    assert_client_received(&received, &p, "inet6", "::1");
}

#[test]
fn d_connection_established_before_tracer() {
    if !require_root("d_connection_established_before_tracer") {
        return;
    }
    let ns = Netns::new();
    let mut p = connect_pair(&ns, "4", None, "quiet");
    // Both sockets exist, the client is already blocked in recv().
    let tracer = Tracer::watch_json(&[]);
    server_does(&mut p, "abort", true);
    let (sent, received) = one_rst_each_way(tracer, ns.inode());
    assert_server_sent(&sent, &p, "inet", "127.0.0.1", LINGER0_REASON, "python3");
    assert_client_received(&received, &p, "inet", "127.0.0.1");
}

#[test]
fn e_server_exits_right_after_rst() {
    if !require_root("e_server_exits_right_after_rst") {
        return;
    }
    // A quote and a backslash: the JSON must escape both.
    const NAME: &str = "srv\"q\\x";
    let ns = Netns::new();
    let tracer = Tracer::watch_json(&[]);
    let mut p = connect_pair(&ns, "4", Some(NAME), "quiet");
    server_does(&mut p, "abort_exit", false);
    let status = p.server.wait(STEP_TIMEOUT);
    assert!(status.success(), "server: {status:?} {}", p.server.stderr());
    let (sent, received) = one_rst_each_way(tracer, ns.inode());
    assert_server_sent(&sent, &p, "inet", "127.0.0.1", LINGER0_REASON, NAME);
    assert_client_received(&received, &p, "inet", "127.0.0.1");
}

/// tracer in a container that shares the host's PID namespace but has its
/// own network, mount, UTS and IPC namespaces: it still sees the hooks of
/// every namespace and resolves a connection that existed before it
/// started, in another namespace than its own (through /proc/PID/ns/net).
#[test]
fn f_from_a_container_sharing_the_host_pid_namespace() {
    if !require_root("f_from_a_container_sharing_the_host_pid_namespace") {
        return;
    }
    let ns = Netns::new();
    let mut p = connect_pair(&ns, "4", None, "quiet");
    let bin = common::tracer_bin();
    let mut cmd = std::process::Command::new("unshare");
    // No --fork: unshare execs tracer, so its pid (and its signals) are
    // tracer's.
    cmd.args(["--net", "--mount", "--uts", "--ipc", "--"])
        .arg(&bin)
        .args(["watch", "--format", "json"]);
    let tracer = Tracer::start_cmd(cmd);
    let own_ns = std::fs::read_link("/proc/self/ns/net").expect("own netns");
    let tracer_ns =
        std::fs::read_link(format!("/proc/{}/ns/net", tracer.pid())).expect("tracer netns");
    assert_ne!(
        tracer_ns, own_ns,
        "tracer must run in a network namespace of its own"
    );
    server_does(&mut p, "abort", true);
    let (sent, received) = one_rst_each_way(tracer, ns.inode());
    assert_server_sent(&sent, &p, "inet", "127.0.0.1", LINGER0_REASON, "python3");
    assert_client_received(&received, &p, "inet", "127.0.0.1");
}
