//! Needs root (the usage test does not). A closed-port storm well above
//! the storm threshold, inside a private network namespace: the kernel
//! counts most resets in its storm map, and the lines' counts add up to
//! exactly what the namespace's Tcp OutRsts counter says, on both sides:
//! the closed port's (one key: port 9) and the clients' (one key too: the
//! remote port, each RST arriving at a new local port); with `--per-rst`,
//! one line per RST.
//!
//! Run: `cargo test -p tracer --test rst_storm` (as root).

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Netns, Tracer, dump, one_at_a_time, require_root, resets, select, tracer_bin};
use serde_json::Value;

/// Nothing listens on it in a fresh namespace.
const CLOSED_PORT: u16 = 9;
/// The client (common::REFUSED_CLIENT) binds its n-th socket to
/// 127.0.0.1:(FIRST_CLIENT_PORT + n), so the sampled remote endpoints can
/// be checked exactly.
const FIRST_CLIENT_PORT: u16 = 20000;

fn lost(events: &[Value]) -> u64 {
    events
        .iter()
        .filter(|e| e["event"] == "lost")
        .map(|e| e["count"].as_u64().unwrap_or(0))
        .sum()
}

/// What one storm under one tracer gave.
struct Storm {
    delta: u64,
    /// How long the client took.
    took: Duration,
    sent: Vec<Value>,
    received: Vec<Value>,
    lost: u64,
}

/// A listener on 127.0.0.1:PORT (made after tracer is up: the kernel side
/// learns it as it starts listening), then N connections from
/// 127.0.0.1:(FIRST + n), each accepted and aborted by the client
/// (SO_LINGER 0: one RST sent by the client, received by the server side).
const ABORTING_CLIENT: &str = r#"
import os, socket, struct, sys
print(os.getpid(), flush=True)
n, port, first = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port))
l.listen(128)
aborted = 0
for i in range(n):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind(("127.0.0.1", first + i))
    c.connect(("127.0.0.1", port))
    s, _ = l.accept()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    s.close()
    aborted += 1
print("aborted", aborted, flush=True)
"#;

/// The service port of the abort storm.
const SERVICE_PORT: u16 = 8080;

/// The ports the client binds its `n` sockets to.
fn client_ports(n: u16) -> HashSet<u64> {
    (0..n).map(|i| u64::from(FIRST_CLIENT_PORT + i)).collect()
}

/// What makes the resets.
#[derive(Clone, Copy)]
enum Load {
    /// Connects to CLOSED_PORT, each answered by a RST (common::REFUSED_CLIENT).
    Refused,
    /// Connections to SERVICE_PORT aborted by the client (ABORTING_CLIENT).
    Aborted,
}

/// Runs `connects` refused or aborted connections under `tracer watch
/// --format json ARGS`, collects the lines of the namespace and checks that
/// their resets add up to the kernel's count.
fn storm(test: &str, connects: u16, args: &[&str], load: Load) -> Storm {
    let ns = Netns::new();
    let netns = ns.inode();
    let tracer = Tracer::watch_json(args);
    let before = ns.tcp_out_rsts();
    let started = Instant::now();
    let (script, port, done) = match load {
        Load::Refused => (common::REFUSED_CLIENT, CLOSED_PORT, "refused"),
        Load::Aborted => (ABORTING_CLIENT, SERVICE_PORT, "aborted"),
    };
    let client = ns.python(
        "client",
        script,
        &[
            &connects.to_string(),
            &port.to_string(),
            &FIRST_CLIENT_PORT.to_string(),
        ],
    );
    let _pid = client.line();
    client.expect_line(&format!("{done} {connects}"));
    let took = started.elapsed();
    let delta = ns.tcp_out_rsts() - before;
    // Counted resets come out with the next once-a-second read.
    let complete = tracer.wait_for(Duration::from_secs(15), |ev| {
        resets(&select(ev, netns, "rst_sent")) + lost(ev) >= delta
            && resets(&select(ev, netns, "rst_received")) + lost(ev) >= u64::from(connects)
    });
    let stopped = tracer.stop_ok();
    let events = stopped.events();
    let out = Storm {
        delta,
        took,
        sent: select(&events, netns, "rst_sent"),
        received: select(&events, netns, "rst_received"),
        lost: lost(&events),
    };
    eprintln!(
        "{test}: {connects} connects in {took:?}; OutRsts +{delta}; {} rst_sent lines for {} resets, {} rst_received lines \
         for {}; lost {}; complete in time: {complete}",
        out.sent.len(),
        resets(&out.sent),
        out.received.len(),
        resets(&out.received),
        out.lost
    );
    match load {
        Load::Refused => assert_eq!(delta, u64::from(connects), "{test}: Tcp OutRsts delta"),
        // A client's SYN retransmitted while the machine is slow (a VM
        // under emulation) can reach the listener after its connection was
        // aborted: the answer finds no socket and the client side resets
        // it once more. The lines must still add up to the kernel's count.
        Load::Aborted => assert!(delta >= u64::from(connects), "{test}: Tcp OutRsts +{delta}"),
    }
    assert_exact(test, "rst_sent", &out.sent, delta, out.lost);
    // One reset received per connection.
    assert_exact(
        test,
        "rst_received",
        &out.received,
        u64::from(connects),
        out.lost,
    );
    out
}

/// Every reset is in a line or reported lost: exact when nothing was lost.
fn assert_exact(test: &str, what: &str, lines: &[Value], want: u64, lost: u64) {
    let got = resets(lines);
    if lost == 0 {
        assert_eq!(got, want, "{test}: {what} resets vs the kernel's count");
    } else {
        assert!(
            got <= want && got + lost >= want,
            "{test}: {what}: {got} resets + {lost} lost vs {want}"
        );
    }
}

#[test]
fn closed_port_storm_lines_add_up_to_the_kernel_count() {
    let test = "closed_port_storm_lines_add_up_to_the_kernel_count";
    if !require_root(test) {
        return;
    }
    let _one = one_at_a_time();
    const CONNECTS: u16 = 3000;
    let s = storm(test, CONNECTS, &[], Load::Refused);

    let client_ports = client_ports(CONNECTS);
    for e in &s.sent {
        assert_eq!(e["reason"], "NO_SOCKET", "{e}");
        assert_eq!(e["local_port"], CLOSED_PORT, "{e}");
        assert_eq!(e["local_addr"], "127.0.0.1", "{e}");
    }
    // The closed port's side: one key (port 9), the clients in the sample.
    check_storm_lines(
        test,
        "rst_sent",
        &s.sent,
        "remote_sample",
        &client_ports,
        s.took,
    );
    // The clients' side: each refused connect's RST arrives at a new local
    // port, so the key is the remote port (9) and the sample lists the
    // clients' own ends.
    for e in &s.received {
        assert_eq!(e["remote_port"], CLOSED_PORT, "{e}");
        assert_eq!(e["state"], "SYN_SENT", "{e}");
    }
    check_storm_lines(
        test,
        "rst_received",
        &s.received,
        "local_sample",
        &client_ports,
        s.took,
    );
    // Each closed connect is answered once: the client ports of the
    // individual lines and of the samples are distinct.
    let mut individual = HashSet::new();
    for e in s.sent.iter().filter(|e| e["count"].is_null()) {
        let port = e["remote_port"].as_u64().expect("remote_port");
        assert!(client_ports.contains(&port), "{e}");
        assert!(individual.insert(port), "a reset reported twice: {e}");
    }
}

#[test]
fn abort_storm_lines_keep_the_service_port_on_both_sides() {
    let test = "abort_storm_lines_keep_the_service_port_on_both_sides";
    if !require_root(test) {
        return;
    }
    let _one = one_at_a_time();
    const CONNECTS: u16 = 2000;
    let s = storm(test, CONNECTS, &[], Load::Aborted);
    let client_ports = client_ports(CONNECTS);
    // The clients abort: their RSTs leave from a new local port each, to the
    // service's port, which is the key; the sample lists the clients' ends.
    // SO_LINGER 0 on an established socket: tcp_disconnect's TCP_STATE.
    // Before 6.10 the kernel names no reason, and an abort's is not inferred.
    let reason = if common::kernel_names_rst_reasons() {
        Value::from("TCP_STATE")
    } else {
        Value::Null
    };
    let mut aborts = 0;
    for e in &s.sent {
        assert_eq!(e["remote_port"], SERVICE_PORT, "{e}");
        if e["reason"] == reason {
            aborts += e["count"].as_u64().unwrap_or(1);
        } else {
            // Only the answer to a late SYN (see `storm`), a line of its own.
            assert!(
                e["reason"] == "NO_SOCKET" && e.get("count").is_none(),
                "{e}"
            );
        }
    }
    assert_eq!(
        aborts,
        u64::from(CONNECTS),
        "{test}: aborts among the resets sent"
    );
    check_storm_lines(
        test,
        "rst_sent",
        &s.sent,
        "local_sample",
        &client_ports,
        s.took,
    );
    // The service's connections receive them: the key is its local port (a
    // listener's, learned by the kernel side when it started listening),
    // the sample lists the clients.
    for e in &s.received {
        assert_eq!(e["local_port"], SERVICE_PORT, "{e}");
    }
    check_storm_lines(
        test,
        "rst_received",
        &s.received,
        "remote_sample",
        &client_ports,
        s.took,
    );
}

/// `tracer diagnose` over the abort storm: the client's resets are one
/// rst_storm finding for :SERVICE_PORT that counts them all, the single
/// lines below the storm threshold (each from another ephemeral local port)
/// with the aggregated ones, because the kernel side marked every reset of
/// a connection the client made (`PEER_IS_SERVICE`), not only the counted.
#[test]
fn diagnose_counts_an_abort_storm_by_the_service_port() {
    let test = "diagnose_counts_an_abort_storm_by_the_service_port";
    if !require_root(test) {
        return;
    }
    let _one = one_at_a_time();
    const CONNECTS: u16 = 2000;
    let ns = Netns::new();
    let window_s = 8 * common::time_scale();
    let port = SERVICE_PORT.to_string();
    let tracer = Tracer::start(&[
        "diagnose",
        "--duration",
        &window_s.to_string(),
        "--format",
        "json",
        "--port",
        &port,
    ]);
    let before = ns.tcp_out_rsts();
    let client = ns.python(
        "client",
        ABORTING_CLIENT,
        &[&CONNECTS.to_string(), &port, &FIRST_CLIENT_PORT.to_string()],
    );
    let pid: u64 = client.line().trim().parse().expect("the client's pid");
    let started = Instant::now();
    client.expect_line(&format!("aborted {CONNECTS}"));
    let took = started.elapsed();
    let delta = ns.tcp_out_rsts() - before;
    assert!(
        took.as_secs() + 1 < u64::from(window_s),
        "{test}: the storm took {took:?}, too close to the {window_s} s window"
    );
    let rep = tracer
        .wait_exit(Duration::from_secs(20 + u64::from(window_s)))
        .report();
    let empty = Vec::new();
    let storms: Vec<&Value> = rep["findings"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|f| f["kind"] == "rst_storm" && f["pid"] == pid)
        .collect();
    // None for a client's own (ephemeral) port.
    let client_ports = client_ports(CONNECTS);
    for f in &storms {
        let local = f["local_port"].as_u64();
        assert!(
            local.is_none_or(|p| !client_ports.contains(&p)),
            "{test}: a finding per client port: {f:#}"
        );
    }
    let by_remote: Vec<&&Value> = storms
        .iter()
        .filter(|f| !f["remote_port"].is_null())
        .collect();
    assert_eq!(
        by_remote.len(),
        1,
        "{test}: the client's rst_storm findings: {rep:#}"
    );
    let f = by_remote[0];
    assert_eq!(f["remote_port"], SERVICE_PORT, "{f:#}");
    assert!(f.get("local_port").is_none(), "{f:#}");
    // Every abort (one per connection) and at most the rare extra reset of
    // a late SYN (see `storm`), unless the window lost some.
    let count = f["count"].as_u64().expect("count");
    let lost = rep["counters"]["lost"].as_u64().unwrap_or(0);
    eprintln!("{test}: storm of {took:?}; OutRsts +{delta}; finding count {count}; lost {lost}");
    assert!(
        count + lost >= u64::from(CONNECTS) && count <= delta,
        "{test}: {count} resets in the finding, {CONNECTS} aborts, OutRsts +{delta}: {f:#}"
    );
}

/// `lines` (one side of the storm) hold aggregated lines, a bounded number
/// of single ones (the default threshold, 100 a second per key split over
/// the CPUs: at most 100 + CPUs in each second the storm touched), and each
/// aggregated line's `sample` (its other sample field absent) lists 1 to 4
/// distinct endpoints among `ports` on 127.0.0.1.
fn check_storm_lines(
    test: &str,
    what: &str,
    lines: &[Value],
    sample: &str,
    ports: &HashSet<u64>,
    took: Duration,
) {
    let other = if sample == "remote_sample" {
        "local_sample"
    } else {
        "remote_sample"
    };
    let aggregated: Vec<&Value> = lines.iter().filter(|e| !e["count"].is_null()).collect();
    assert!(
        !aggregated.is_empty(),
        "{test}: a storm gave no aggregated {what} line:\n{}",
        dump(&lines[..lines.len().min(20)])
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let seconds = took.as_secs() + 2;
    let single = lines.iter().filter(|e| e["count"].is_null()).count() as u64;
    assert!(
        single <= (100 + cpus) * seconds,
        "{test}: {single} single {what} lines in a storm of {took:?}"
    );
    for e in &aggregated {
        let count = e["count"].as_u64().expect("count is a number");
        assert!(count >= 1, "{e}");
        assert!(e.get("socket_inode").is_none(), "{e}");
        assert!(
            e.get(other).is_none(),
            "{what}: {other} on a line with {sample}: {e}"
        );
        let listed = e[sample]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no {sample}: {e}"));
        assert!(
            !listed.is_empty() && listed.len() <= 4 && listed.len() as u64 <= count,
            "{e}"
        );
        let mut seen = HashSet::new();
        for r in listed {
            assert_eq!(r["addr"], "127.0.0.1", "{e}");
            let port = r["port"].as_u64().expect("port");
            assert!(ports.contains(&port), "not a client port: {e}");
            assert!(seen.insert(port), "repeated endpoint: {e}");
        }
    }
}

#[test]
fn per_rst_keeps_one_line_per_reset() {
    let test = "per_rst_keeps_one_line_per_reset";
    if !require_root(test) {
        return;
    }
    let _one = one_at_a_time();
    const CONNECTS: u16 = 1000;
    let s = storm(test, CONNECTS, &["--per-rst"], Load::Refused);
    for e in s.sent.iter().chain(&s.received) {
        assert!(
            e.get("count").is_none()
                && e.get("remote_sample").is_none()
                && e.get("local_sample").is_none(),
            "{test}: an aggregated line with --per-rst: {e}"
        );
    }
    if s.lost == 0 {
        assert_eq!(s.sent.len() as u64, s.delta, "{test}: one line per RST");
    }
}

#[test]
fn storm_flags_are_checked() {
    for (args, want) in [
        (&["--storm-threshold", "0"][..], "--per-rst"),
        (&["--storm-threshold", "many"][..], "whole number"),
        (&["--storm-threshold", "5000000"][..], "at most"),
        (
            &["--per-rst", "--storm-threshold", "5"][..],
            "cannot be used with",
        ),
    ] {
        let out = Command::new(tracer_bin())
            .arg("watch")
            .args(args)
            .output()
            .expect("run tracer");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error:") && first.contains(want),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
