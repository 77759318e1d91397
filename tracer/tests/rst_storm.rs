//! Needs root (the usage test does not). A closed-port storm well above
//! the storm threshold, inside a private network namespace: the kernel
//! counts most resets in its storm map, and the lines' counts add up to
//! exactly what the namespace's Tcp OutRsts counter says; with
//! `--per-rst`, one line per RST.
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

/// Runs `connects` refused connects under `tracer watch --format json
/// ARGS`, collects the lines of the namespace and checks that their resets
/// add up to the kernel's count.
fn storm(test: &str, connects: u16, args: &[&str]) -> Storm {
    let ns = Netns::new();
    let netns = ns.inode();
    let tracer = Tracer::watch_json(args);
    let before = ns.tcp_out_rsts();
    let started = Instant::now();
    let client = ns.python(
        "client",
        common::REFUSED_CLIENT,
        &[
            &connects.to_string(),
            &CLOSED_PORT.to_string(),
            &FIRST_CLIENT_PORT.to_string(),
        ],
    );
    let _pid = client.line();
    client.expect_line(&format!("refused {connects}"));
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
    assert_eq!(delta, u64::from(connects), "{test}: Tcp OutRsts delta");
    assert_exact(test, "rst_sent", &out.sent, delta, out.lost);
    // The client gets one reset per connect.
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
    let s = storm(test, CONNECTS, &[]);

    let client_ports: HashSet<u64> = (0..CONNECTS)
        .map(|i| u64::from(FIRST_CLIENT_PORT + i))
        .collect();
    for e in &s.sent {
        assert_eq!(e["reason"], "NO_SOCKET", "{e}");
        assert_eq!(e["local_port"], CLOSED_PORT, "{e}");
        assert_eq!(e["local_addr"], "127.0.0.1", "{e}");
    }
    let aggregated: Vec<&Value> = s.sent.iter().filter(|e| !e["count"].is_null()).collect();
    assert!(
        !aggregated.is_empty(),
        "{test}: a storm of {CONNECTS} gave no aggregated rst_sent line:\n{}",
        dump(&s.sent[..s.sent.len().min(20)])
    );
    // The default threshold (100 a second per key, split over the CPUs)
    // bounds the single lines: at most 100 + CPUs in each boot-time second
    // the storm touched.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let seconds = s.took.as_secs() + 2;
    let single = s.sent.iter().filter(|e| e["count"].is_null()).count() as u64;
    assert!(
        single <= (100 + cpus) * seconds,
        "{test}: {single} single rst_sent lines in a storm of {:?}",
        s.took
    );
    for e in &aggregated {
        let count = e["count"].as_u64().expect("count is a number");
        assert!(count >= 1, "{e}");
        assert!(e.get("socket_inode").is_none(), "{e}");
        let sample = e["remote_sample"].as_array().expect("remote_sample");
        assert!(
            !sample.is_empty() && sample.len() <= 4 && sample.len() as u64 <= count,
            "{e}"
        );
        let mut seen = HashSet::new();
        for r in sample {
            assert_eq!(r["addr"], "127.0.0.1", "{e}");
            let port = r["port"].as_u64().expect("port");
            assert!(client_ports.contains(&port), "not a client port: {e}");
            assert!(seen.insert(port), "repeated endpoint: {e}");
        }
    }
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
fn per_rst_keeps_one_line_per_reset() {
    let test = "per_rst_keeps_one_line_per_reset";
    if !require_root(test) {
        return;
    }
    let _one = one_at_a_time();
    const CONNECTS: u16 = 1000;
    let s = storm(test, CONNECTS, &["--per-rst"]);
    for e in s.sent.iter().chain(&s.received) {
        assert!(
            e.get("count").is_none() && e.get("remote_sample").is_none(),
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
