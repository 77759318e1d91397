//! Needs root. Nothing is lost while tracer starts on a crowded host: in a
//! private namespace holding 32,000 established loopback sockets (a server
//! process holding the accepted ends, a client process the others, both
//! older than tracer), the client aborts 500 of its connections (SO_LINGER
//! 0) right after tracer's hooks are attached, while its start-up snapshot
//! still runs. Every reset is reported, the counts equal the namespace's
//! Tcp OutRsts, none is lost, and the server's side of each (received in
//! softirq, where the kernel does not know the owner) is attributed to the
//! server from the snapshot, which the records waited for.
//!
//! Run: `cargo test -p tracer --test startup_crowded` (as root).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Netns, Tracer, dump, one_at_a_time, require_root, resets, select};
use serde_json::Value;

/// Connections (two sockets each; 16,000 fds in each process).
const PAIRS: u32 = 16_000;
/// Of which the client aborts this many once told.
const ABORTS: u32 = 500;
const PORT: u16 = 7400;

/// Both scripts start with this: room for argv[1] connections' fds.
const RAISE_NOFILE: &str = r#"
import resource, sys
# As root the hard limit may be raised (up to fs.nr_open); else use it.
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]) + 64,) * 2)
except (ValueError, OSError):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
"#;

/// The server: listens, accepts PAIRS connections, keeps them, prints its
/// pid and "accepted", then waits for stdin to close.
const SERVER: &str = r#"
import os, socket, sys
pairs, port = int(sys.argv[1]), int(sys.argv[2])
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port))
l.listen(4096)
print(os.getpid(), flush=True)
kept = []
for i in range(pairs):
    c, _ = l.accept()
    kept.append(c)
print("accepted", flush=True)
sys.stdin.read()
"#;

/// The client: connects PAIRS times, prints its pid and "connected"; on
/// "abort" closes the first ABORTS with SO_LINGER 0, prints "aborted" and
/// the local ports it aborted, then waits for stdin to close.
const CLIENT: &str = r#"
import os, socket, struct, sys
pairs, port, aborts = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(os.getpid(), flush=True)
conns = []
for i in range(pairs):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(("127.0.0.1", port))
    conns.append(s)
print("connected", flush=True)
sys.stdin.readline()
ports = []
for s in conns[:aborts]:
    ports.append(s.getsockname()[1])
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
print("aborted", " ".join(map(str, ports)), flush=True)
sys.stdin.read()
"#;

#[test]
fn resets_during_the_start_up_snapshot_are_all_reported_and_attributed() {
    let test = "resets_during_the_start_up_snapshot_are_all_reported_and_attributed";
    if !require_root(test) {
        return;
    }
    let _one = one_at_a_time();
    let ns = Netns::new();
    let netns = ns.inode();
    let pairs = PAIRS.to_string();
    let port = PORT.to_string();
    let mut server = ns.python(
        "server",
        &format!("{RAISE_NOFILE}{SERVER}"),
        &[&pairs, &port],
    );
    let server_pid: u64 = server.line().parse().expect("server pid");
    let mut client = ns.python(
        "client",
        &format!("{RAISE_NOFILE}{CLIENT}"),
        &[&pairs, &port, &ABORTS.to_string()],
    );
    let client_pid: u64 = client.line().parse().expect("client pid");
    client.expect_line("connected");
    server.expect_line("accepted");

    let tracer = Tracer::watch_json_hooked(&[]);
    let before = ns.tcp_out_rsts();
    client.send("abort");
    let aborted = client.line();
    let ports: HashSet<u64> = aborted
        .strip_prefix("aborted ")
        .unwrap_or_else(|| panic!("client said {aborted:?}"))
        .split_whitespace()
        .map(|p| p.parse().expect("port"))
        .collect();
    assert_eq!(ports.len(), ABORTS as usize);
    let delta = ns.tcp_out_rsts() - before;
    let done = tracer.wait_for(Duration::from_secs(30), |ev| {
        resets(&select(ev, netns, "rst_received")) >= u64::from(ABORTS)
            && resets(&select(ev, netns, "rst_sent")) >= u64::from(ABORTS)
    });
    let stopped = tracer.stop_ok();
    let events = stopped.events();
    let lost: Vec<&Value> = events.iter().filter(|e| e["event"] == "lost").collect();
    let sent = select(&events, netns, "rst_sent");
    let received = select(&events, netns, "rst_received");
    // "attached: ...; N existing sockets known; M records held meanwhile"
    let held = stopped
        .stderr
        .lines()
        .find_map(|l| l.strip_suffix(" records held meanwhile"))
        .and_then(|l| l.rsplit("; ").next())
        .and_then(|n| n.trim().parse::<u64>().ok());
    eprintln!(
        "{test}: OutRsts +{delta}; {} rst_sent, {} rst_received, lost lines {}; held during the snapshot: {held:?}; complete in time: {done}",
        sent.len(),
        received.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{test}: lost records: {}",
        dump(&lost.into_iter().cloned().collect::<Vec<_>>())
    );
    assert_eq!(delta, u64::from(ABORTS), "{test}: one reset per abort");
    assert_eq!(
        resets(&sent),
        delta,
        "{test}: rst_sent vs OutRsts:\n{}",
        dump(&sent[..sent.len().min(5)])
    );
    assert_eq!(resets(&received), delta, "{test}: rst_received vs OutRsts");
    // Whether the records really waited: the snapshot of 32k sockets must
    // still have run when the aborts came, or this test proves nothing.
    assert!(
        held.is_some_and(|n| n > 0),
        "{test}: no record was held for the start-up snapshot (it ended before the aborts?); stderr:\n{}",
        stopped.stderr
    );
    // Every kernel of the matrix (5.10+) has the task_file iterator: the
    // owners come from it, not from a readlink per fd.
    assert!(
        stopped.stderr.contains("socket owners: task_file iterator"),
        "{test}: the task_file iterator was not used; stderr:\n{}",
        stopped.stderr
    );
    for e in &sent {
        assert_eq!(
            e["pid"], client_pid,
            "{test}: the abort is the client's: {e}"
        );
        assert!(
            ports.contains(&e["local_port"].as_u64().unwrap_or(0)),
            "{e}"
        );
    }
    for e in &received {
        assert!(
            ports.contains(&e["remote_port"].as_u64().unwrap_or(0)),
            "{e}"
        );
        assert_eq!(e["local_port"], u64::from(PORT), "{e}");
        assert_eq!(
            e["pid"], server_pid,
            "{test}: the server's socket, from the snapshot: {e}"
        );
        assert_eq!(e["attributed_by"], "socket_owner", "{e}");
    }
    client.close_stdin();
    server.close_stdin();
}
