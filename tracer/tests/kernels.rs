//! Needs root. Every rung of the hook table on the kernel it runs on (this
//! host's, and each kernel of the VM matrix: `cargo xtask test` runs this
//! file inside 5.10, 6.1 and 6.12): one scenario with every kind of reset,
//! run once with the rungs this kernel chooses, once without BTF tracepoints
//! (raw tracepoints) and once without BTF tracepoints, raw tracepoints and
//! trampolines (classic tracepoints, kprobes, kretprobes). Each run must see
//! every RST the kernel counted (`TcpOutRsts`), exactly once, attributed
//! alike. The rungs chosen by default must match docs/kernels.md.
//!
//! Run: `cargo test -p tracer --test kernels` (as root).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use common::{Netns, Proc, Tracer, dump, require_root, select};

const CLOSED_PORT: u16 = 9;
const TW_PORT: u16 = 7001;
const ABORT_PORT: u16 = 7002;
const HOLD_PORT: u16 = 7003;
/// Connects to the closed port, per family.
const CLOSED: usize = 10;
/// Connections whose TIME_WAIT socket answers data with a RST.
const TW: usize = 5;
/// Connections the server aborts (SO_LINGER 0).
const ABORTS: usize = 5;
/// Accepted connections the server only holds; the client aborts them.
const HOLDS: usize = 3;

/// Listens on TW_PORT, ABORT_PORT, HOLD_PORT; prints its pid, then obeys
/// stdin, one line each:
///   tw N     accept N, wait for each client's FIN, send a byte (the
///            client's TIME_WAIT socket answers with a RST) -> "tw RESETS"
///   abort N  accept N, SO_LINGER 0 and close each -> "aborted"
///   hold N   accept N and keep them (no send, no receive) -> "held"
///   check    recv() on every held socket -> "holds RESETS"
const SERVER: &str = r#"
import errno, os, socket, struct, sys, time
def listen(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    s.settimeout(20)
    return s
tw, ab, hold = listen(int(sys.argv[1])), listen(int(sys.argv[2])), listen(int(sys.argv[3]))
held = []
print(os.getpid(), flush=True)
for line in sys.stdin:
    cmd, *arg = line.split()
    n = int(arg[0]) if arg else 0
    if cmd == "tw":
        resets = 0
        for _ in range(n):
            c, _ = tw.accept()
            c.settimeout(20)
            if c.recv(16) != b"":
                sys.exit("tw: expected the client's FIN")
            time.sleep(0.1)
            c.send(b"x")
            # A reset in CLOSE_WAIT leaves EPIPE in SO_ERROR (tcp_reset()).
            for _ in range(200):
                err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    break
                time.sleep(0.01)
            if err in (errno.EPIPE, errno.ECONNRESET):
                resets += 1
            c.close()
        print("tw", resets, flush=True)
    elif cmd == "abort":
        for _ in range(n):
            c, _ = ab.accept()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        print("aborted", flush=True)
    elif cmd == "hold":
        for _ in range(n):
            c, _ = hold.accept()
            held.append(c)
        print("held", flush=True)
    elif cmd == "check":
        resets = 0
        for c in held:
            c.settimeout(20)
            try:
                c.recv(16)
            except ConnectionResetError:
                resets += 1
        print("holds", resets, flush=True)
    else:
        sys.exit("unknown command %r" % cmd)
"#;

/// Prints its pid, then obeys stdin, one line each:
///   closed N     N connects to 127.0.0.1:9 and N to [::1]:9 -> "refused R"
///   tw N         N connections to TW_PORT, each closed at once -> "closed"
///   abort N      N connections to ABORT_PORT -> "connected"
///   abort_check  recv() on each -> "aborts RESETS"
///   hold N       N connections to HOLD_PORT -> "connected"
///   drop         SO_LINGER 0 and close each held one -> "dropped"
const CLIENT: &str = r#"
import os, socket, struct, sys
tw_port, ab_port, hold_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(os.getpid(), flush=True)
def connect(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(("127.0.0.1", port))
    return s
aborts, holds = [], []
for line in sys.stdin:
    cmd, *arg = line.split()
    n = int(arg[0]) if arg else 0
    if cmd == "closed":
        refused = 0
        for af, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            for _ in range(n):
                s = socket.socket(af, socket.SOCK_STREAM)
                try:
                    s.connect((host, 9))
                except ConnectionRefusedError:
                    refused += 1
                s.close()
        print("refused", refused, flush=True)
    elif cmd == "tw":
        for _ in range(n):
            connect(tw_port).close()
        print("closed", flush=True)
    elif cmd == "abort":
        aborts = [connect(ab_port) for _ in range(n)]
        print("connected", flush=True)
    elif cmd == "abort_check":
        resets = 0
        for s in aborts:
            try:
                s.recv(16)
            except ConnectionResetError:
                resets += 1
            s.close()
        print("aborts", resets, flush=True)
    elif cmd == "hold":
        holds = [connect(hold_port) for _ in range(n)]
        print("connected", flush=True)
    elif cmd == "drop":
        for s in holds:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        print("dropped", flush=True)
    else:
        sys.exit("unknown command %r" % cmd)
"#;

/// Before 6.10 the kernel names no RST reasons; tracer infers some.
fn reasons_inferred() -> bool {
    !common::kernel_names_rst_reasons()
}

/// The column of docs/kernels.md's table for this kernel: hook -> cell.
fn documented_rungs() -> Option<(String, HashMap<String, String>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/kernels.md");
    let doc = std::fs::read_to_string(path).expect("docs/kernels.md");
    let table = doc
        .split("<!-- kernels-table: begin -->")
        .nth(1)
        .and_then(|t| t.split("<!-- kernels-table: end -->").next())
        .expect("kernels table markers in docs/kernels.md");
    let rows: Vec<Vec<String>> = table
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    let (major, minor) = common::kernel_version();
    let want = format!("{major}.{minor}");
    let col = rows.first()?.iter().position(|h| *h == want)?;
    let cells = rows[1..]
        .iter()
        .map(|r| (r[0].clone(), r[col].clone()))
        .collect();
    Some((want, cells))
}

struct Counts {
    rsts: u64,
    server_pid: u64,
    client_pid: u64,
}

/// Runs every kind of reset in `ns` while `tracer` watches; returns the
/// kernel's count of resets sent and the two pids.
fn make_resets(ns: &Netns) -> Counts {
    let ports = [TW_PORT, ABORT_PORT, HOLD_PORT].map(|p| p.to_string());
    let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
    let before = ns.tcp_out_rsts();
    let mut server: Proc = ns.python("server", SERVER, &ports);
    let mut client: Proc = ns.python("client", CLIENT, &ports);
    let server_pid: u64 = server.line().parse().expect("server pid");
    let client_pid: u64 = client.line().parse().expect("client pid");

    client.send(&format!("closed {CLOSED}"));
    client.expect_line(&format!("refused {}", 2 * CLOSED));

    client.send(&format!("tw {TW}"));
    client.expect_line("closed");
    server.send(&format!("tw {TW}"));
    server.expect_line(&format!("tw {TW}"));

    client.send(&format!("abort {ABORTS}"));
    client.expect_line("connected");
    server.send(&format!("abort {ABORTS}"));
    server.expect_line("aborted");
    client.send("abort_check");
    client.expect_line(&format!("aborts {ABORTS}"));

    client.send(&format!("hold {HOLDS}"));
    client.expect_line("connected");
    server.send(&format!("hold {HOLDS}"));
    server.expect_line("held");
    client.send("drop");
    client.expect_line("dropped");
    server.send("check");
    server.expect_line(&format!("holds {HOLDS}"));

    Counts {
        rsts: ns.tcp_out_rsts() - before,
        server_pid,
        client_pid,
    }
}

/// The events whose `side` (local_port / remote_port) is `port`, which
/// must be exactly `n`.
fn exactly<'a>(
    test: &str,
    what: &str,
    events: &'a [Value],
    side: &str,
    port: u16,
    n: usize,
) -> Vec<&'a Value> {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e[side].as_u64() == Some(u64::from(port)))
        .collect();
    assert_eq!(found.len(), n, "{test}: {what}:\n{}", dump(events));
    found
}

/// One run with `denied` mechanisms: every RST seen once, attributed.
/// Returns the chosen mechanism of each hook.
fn every_reset_once(test: &str, denied: &[&str]) -> Option<HashMap<String, String>> {
    if !require_root(test) {
        return None;
    }
    let ns = Netns::new();
    let netns = ns.inode();
    let mut args = Vec::new();
    for d in denied {
        args.extend(["--no-mechanism", d]);
    }
    let tracer = Tracer::watch_json(&args);
    let hooks = tracer.hooks();
    let c = make_resets(&ns);
    let expected = (2 * CLOSED + TW + ABORTS + HOLDS) as u64;
    assert_eq!(c.rsts, expected, "{test}: TcpOutRsts delta");
    tracer.wait_for(Duration::from_secs(10), |ev| {
        select(ev, netns, "rst_sent").len() as u64 >= c.rsts
            && select(ev, netns, "rst_received").len() >= ABORTS + HOLDS
    });
    let stopped = tracer.stop();
    assert!(
        stopped.status.success(),
        "{test}: tracer exit {:?}",
        stopped.status
    );
    let events = stopped.events();
    let sent = select(&events, netns, "rst_sent");
    let received = select(&events, netns, "rst_received");
    eprintln!(
        "{test}: hooks {hooks:?}; OutRsts +{}; {} rst_sent",
        c.rsts,
        sent.len()
    );
    assert_eq!(
        sent.len() as u64,
        c.rsts,
        "{test}: rst_sent vs TcpOutRsts:\n{}",
        dump(&sent)
    );

    let inferred = reasons_inferred();
    let closed = exactly(
        test,
        "closed-port resets",
        &sent,
        "local_port",
        CLOSED_PORT,
        2 * CLOSED,
    );
    for family in ["inet", "inet6"] {
        let n = closed.iter().filter(|e| e["family"] == family).count();
        assert_eq!(n, CLOSED, "{test}: closed-port resets of {family}");
    }
    for e in &closed {
        assert_eq!(e["reason"], "NO_SOCKET", "{test}: {e}");
        assert_eq!(e.get("reason_inferred").is_some(), inferred, "{test}: {e}");
        assert!(e["pid"].is_null(), "{test}: nobody owns a closed port: {e}");
    }
    let mut from_time_wait = 0;
    for e in exactly(test, "TIME_WAIT resets", &sent, "remote_port", TW_PORT, TW) {
        assert_eq!(e["local_addr"], "127.0.0.1", "{test}: {e}");
        if e["state"] == "TIME_WAIT" {
            from_time_wait += 1;
            assert_eq!(e["reason"], "TCP_TIMEWAIT_SOCKET", "{test}: {e}");
            assert_eq!(e.get("reason_inferred").is_some(), inferred, "{test}: {e}");
        } else {
            // The client's closed socket stays a full FIN_WAIT2 socket
            // when the peer's ACK of its FIN arrives while close() still
            // holds the socket lock (tcp_rcv_state_process(): "we could
            // lose such FIN otherwise"); the byte then aborts it. Seen
            // under TCG, where the timing is stretched.
            assert_eq!(e["state"], "CLOSE", "{test}: {e}");
            if common::kernel_names_rst_reasons() {
                assert_eq!(e["reason"], "TCP_ABORT_ON_DATA", "{test}: {e}");
            }
        }
    }
    assert!(
        from_time_wait >= 1,
        "{test}: not one of the {TW} resets came from a TIME_WAIT socket"
    );
    for e in exactly(test, "aborts", &sent, "local_port", ABORT_PORT, ABORTS) {
        assert_eq!(e["pid"], c.server_pid, "{test}: the server aborted: {e}");
    }
    for e in exactly(
        test,
        "aborts received",
        &received,
        "remote_port",
        ABORT_PORT,
        ABORTS,
    ) {
        assert_eq!(e["pid"], c.client_pid, "{test}: the client's socket: {e}");
    }
    for e in exactly(
        test,
        "client aborts",
        &sent,
        "remote_port",
        HOLD_PORT,
        HOLDS,
    ) {
        assert_eq!(e["pid"], c.client_pid, "{test}: the client aborted: {e}");
    }
    let held = exactly(
        test,
        "held sockets reset",
        &received,
        "local_port",
        HOLD_PORT,
        HOLDS,
    );
    for e in &held {
        // Never used by the server since accept(): only what was learned
        // at the accept (inet_csk_accept, or the syscall's exit) names it.
        assert_eq!(
            e["pid"], c.server_pid,
            "{test}: the accepted socket's owner: {e}"
        );
        assert_eq!(e["attributed_by"], "socket_owner", "{test}: {e}");
    }
    Some(hooks)
}

#[test]
fn default_rungs_match_the_kernels_table() {
    let Some(hooks) = every_reset_once("default_rungs_match_the_kernels_table", &[]) else {
        return;
    };
    let Some((column, documented)) = documented_rungs() else {
        let (major, minor) = common::kernel_version();
        assert!(
            std::env::var_os("CI").is_none(),
            "kernel {major}.{minor} has no column in docs/kernels.md: add it"
        );
        eprintln!("SKIPPED table check: kernel {major}.{minor} has no column in docs/kernels.md");
        return;
    };
    let mut mismatches = Vec::new();
    for (hook, cell) in &documented {
        let chosen = hooks
            .get(hook)
            .map(String::as_str)
            .unwrap_or("(no such hook)");
        let want = if cell == "not needed" {
            "-"
        } else {
            cell.as_str()
        };
        if chosen != want {
            mismatches.push(format!("{hook}: docs say {cell}, tracer chose {chosen}"));
        }
    }
    for hook in hooks.keys().filter(|h| !documented.contains_key(*h)) {
        mismatches.push(format!("{hook}: missing from the table"));
    }
    assert!(
        mismatches.is_empty(),
        "docs/kernels.md column {column} is out of date:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn raw_tracepoint_rungs() {
    let Some(hooks) = every_reset_once("raw_tracepoint_rungs", &["tp_btf"]) else {
        return;
    };
    for hook in ["tcp_send_reset", "tcp_receive_reset", "inet_sock_set_state"] {
        assert_eq!(hooks[hook], "raw_tracepoint", "{hook}");
    }
}

#[test]
fn classic_tracepoint_and_kprobe_rungs() {
    let Some(hooks) = every_reset_once(
        "classic_tracepoint_and_kprobe_rungs",
        &["tp_btf", "raw_tracepoint", "fentry", "fexit"],
    ) else {
        return;
    };
    for hook in ["tcp_send_reset", "tcp_receive_reset", "inet_sock_set_state"] {
        assert_eq!(hooks[hook], "tracepoint", "{hook}");
    }
    let kprobes = std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists();
    let want = if kprobes { "kretprobe" } else { "-" };
    assert_eq!(hooks["inet_csk_accept"], want, "inet_csk_accept");
    if reasons_inferred() {
        let want = if kprobes { "kprobe" } else { "-" };
        assert_eq!(hooks["tcp_v4_send_reset"], want, "tcp_v4_send_reset");
        assert_eq!(hooks["tcp_v6_send_reset"], want, "tcp_v6_send_reset");
    }
}
