//! Needs root. The links of the starving-server chain, one at a time, in a
//! private network namespace: EMFILE accept failures, a full accept queue,
//! CLOSE_WAIT sockets a server never closes.
//!
//! Run: `cargo test -p tracer --test starving_signals` (as root).

mod common;

use std::time::Duration;

use serde_json::Value;

use common::{Netns, Tracer, dump, numbers, require_root, select, with_exhaust_fds};

/// A server with RLIMIT_NOFILE argv[1] that fills its fd table, then calls
/// accept() argv[2] times on a listener with a pending connection.
const EMFILE_SERVER: &str = r#"
import os, socket, sys
limit, tries = int(sys.argv[1]), int(sys.argv[2])
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(16)
port = ls.getsockname()[1]
c = socket.create_connection(("127.0.0.1", port))
fill = exhaust_fds(limit)
failed = 0
for _ in range(tries):
    try:
        ls.accept()
    except OSError as e:
        failed += e.errno == 24
print(os.getpid(), port, failed, flush=True)
sys.stdin.readline()
"#;

/// A listener with backlog argv[1] that never accepts, and argv[2]
/// non-blocking connects to it.
const FULL_QUEUE: &str = r#"
import os, socket, sys, time
backlog, n = int(sys.argv[1]), int(sys.argv[2])
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(backlog)
port = ls.getsockname()[1]
cs = []
for _ in range(n):
    c = socket.socket(); c.setblocking(False)
    try:
        c.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    cs.append(c)
print(os.getpid(), port, flush=True)
sys.stdin.readline()
"#;

/// A server that accepts argv[1] connections and never closes them; its
/// clients close theirs, so the server's sockets sit in CLOSE_WAIT.
const CLOSE_WAIT: &str = r#"
import os, socket, sys, time
n = int(sys.argv[1])
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(n)
port = ls.getsockname()[1]
held = []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = ls.accept()
    held.append(a)
    c.close()
time.sleep(0.2)
print(os.getpid(), port, flush=True)
sys.stdin.readline()
"#;

#[test]
fn emfile_accept_failures_name_pid_limit_and_port() {
    if !require_root("emfile_accept_failures_name_pid_limit_and_port") {
        return;
    }
    let ns = Netns::new();
    let netns = ns.inode();
    let tracer = Tracer::watch_json(&[]);
    let mut server = ns.python(
        "emfile-server",
        &with_exhaust_fds(EMFILE_SERVER),
        &["64", "25"],
    );
    let f = numbers(&server.line());
    let (pid, port, failed) = (f[0], f[1], f[2]);
    assert_eq!(failed, 25, "the server's accepts must fail with EMFILE");
    // Aggregated lines come out once a second.
    let done = tracer.wait_for(Duration::from_secs(10), |ev| {
        select(ev, netns, "accept_failed")
            .iter()
            .map(|e| e["count"].as_u64().unwrap_or(0))
            .sum::<u64>()
            >= failed
    });
    server.send("done");
    let events = tracer.stop().events();
    let lines = select(&events, netns, "accept_failed");
    assert!(done, "accept_failed lines:\n{}", dump(&lines));
    let total: u64 = lines.iter().map(|e| e["count"].as_u64().unwrap_or(0)).sum();
    assert_eq!(total, failed, "{}", dump(&lines));
    for e in &lines {
        assert_eq!(e["pid"], pid, "{e}");
        assert_eq!(e["error"], "EMFILE", "{e}");
        assert_eq!(e["errno"], 24, "{e}");
        assert_eq!(e["fd_limit"], 64, "{e}");
        assert_eq!(e["local_port"], port, "{e}");
        assert_eq!(e["local_addr"], "127.0.0.1", "{e}");
        assert_eq!(e["comm"], "python3", "{e}");
    }
}

#[test]
fn full_accept_queue_is_a_listen_overflow_of_its_owner() {
    if !require_root("full_accept_queue_is_a_listen_overflow_of_its_owner") {
        return;
    }
    let ns = Netns::new();
    let netns = ns.inode();
    let tracer = Tracer::watch_json(&[]);
    let mut server = ns.python("full-queue", FULL_QUEUE, &["4", "12"]);
    let f = numbers(&server.line());
    let (pid, port) = (f[0], f[1]);
    // Overflows are counted a second at a time and the client's SYNs are
    // retried: wait for the drops to add up, not for the first line (a slow
    // guest's first second held 2 of them).
    let dropped = |ev: &[Value]| -> u64 {
        select(ev, netns, "listen_overflow")
            .iter()
            .map(|e| e["count"].as_u64().unwrap_or(0))
            .sum()
    };
    let done = tracer.wait_for(Duration::from_secs(10), |ev| dropped(ev) >= 7);
    server.send("done");
    let events = tracer.stop().events();
    let lines = select(&events, netns, "listen_overflow");
    assert!(
        !lines.is_empty(),
        "no listen_overflow:\n{}",
        dump(&select(&events, netns, "state_change"))
    );
    let e = &lines[0];
    assert_eq!(e["pid"], pid, "{e}");
    assert_eq!(e["local_port"], port, "{e}");
    assert_eq!(e["backlog"], 4, "{e}");
    // A full queue holds backlog + 1 connections.
    assert_eq!(e["queued"], 5, "{e}");
    assert!(e["count"].as_u64().unwrap_or(0) > 0, "{e}");
    let reported: u64 = lines.iter().map(|e| e["count"].as_u64().unwrap_or(0)).sum();
    assert!(
        done && reported >= 7,
        "12 connects, 5 queued: at least 7 drops; {}",
        dump(&lines)
    );
}

#[test]
fn close_wait_counts_are_exact() {
    if !require_root("close_wait_counts_are_exact") {
        return;
    }
    let ns = Netns::new();
    let netns = ns.inode();
    let tracer = Tracer::watch_json(&["--states"]);
    let mut server = ns.python("close-wait", CLOSE_WAIT, &["7"]);
    let f = numbers(&server.line());
    let (pid, port) = (f[0], f[1]);
    let done = tracer.wait_for(Duration::from_secs(10), |ev| {
        select(ev, netns, "state_change")
            .iter()
            .filter(|e| e["new_state"] == "CLOSE_WAIT")
            .count()
            >= 7
    });
    let ss = ns.run("ss", &["-Htan", "state", "close-wait"]);
    let in_kernel = String::from_utf8_lossy(&ss.stdout).lines().count();
    server.send("done");
    let events = tracer.stop().events();
    let entered: Vec<_> = select(&events, netns, "state_change")
        .into_iter()
        .filter(|e| e["new_state"] == "CLOSE_WAIT")
        .collect();
    assert!(done, "{}", dump(&entered));
    assert_eq!(in_kernel, 7, "ss sees 7 CLOSE_WAIT sockets");
    assert_eq!(entered.len(), in_kernel, "{}", dump(&entered));
    for e in &entered {
        assert_eq!(e["pid"], pid, "{e}");
        assert_eq!(e["local_port"], port, "{e}");
        assert_eq!(e["old_state"], "ESTABLISHED", "{e}");
    }
}

/// `watch --summary-every` tells the verdict while it streams: a server out
/// of fds shows up as `fd_exhaustion` naming it in a `summary` line.
#[test]
fn summary_lines_name_the_starving_server() {
    if !require_root("summary_lines_name_the_starving_server") {
        return;
    }
    let ns = Netns::new();
    let tracer = Tracer::watch_json(&["--summary-every", "1"]);
    let mut server = ns.python(
        "emfile-server",
        &with_exhaust_fds(EMFILE_SERVER),
        &["64", "25"],
    );
    let f = numbers(&server.line());
    let (pid, port) = (f[0], f[1]);
    let blames = |e: &serde_json::Value| {
        e["event"] == "summary"
            && e["findings"].as_array().is_some_and(|fs| {
                fs.iter()
                    .any(|f| f["kind"] == "fd_exhaustion" && f["pid"] == pid)
            })
    };
    let done = tracer.wait_for(Duration::from_secs(10), |ev| ev.iter().any(blames));
    server.send("done");
    let events = tracer.stop().events();
    let summaries: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "summary")
        .cloned()
        .collect();
    assert!(done, "{}", dump(&summaries));
    let line = summaries
        .iter()
        .find(|e| blames(e))
        .expect("a summary blaming the server");
    assert_eq!(line["v"], 1);
    let finding = line["findings"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["pid"] == pid))
        .expect("finding");
    assert_eq!(finding["fd_limit"], 64, "{finding}");
    assert_eq!(finding["local_port"], port, "{finding}");
    assert!(
        finding["accept_emfile"].as_u64().unwrap_or(0) > 0,
        "{finding}"
    );
}
