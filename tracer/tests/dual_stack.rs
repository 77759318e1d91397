//! Needs root. A dual-stack listener (`[::]:port`, IPV6_V6ONLY off: Go's
//! `":8080"`) holding CLOSE_WAIT sockets of 127.0.0.1 clients from before
//! tracer started: sock_diag reports them as `::ffff:127.0.0.1`, the kernel
//! records as the same bytes; one socket identity makes both one key, so the
//! gauge and diagnose follow them as they close and new ones arrive.
//!
//! Run: `cargo xtask test -- --test dual_stack` (as root).

mod common;
mod ecosystem_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Netns, Tracer, require_root, scaled, time_scale};
use ecosystem_common::{free_port, http_get};

/// argv[1] CLOSE_WAIT sockets from IPv4 clients on a dual-stack listener;
/// then, per stdin line, `close` (all of them) or `make N` (N more).
/// Answers "ok HELD".
const DUAL_STACK: &str = r#"
import os, socket, sys, time
ls = socket.socket(socket.AF_INET6)
ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
ls.bind(("::", 0)); ls.listen(64)
port = ls.getsockname()[1]
held = []
def make(n):
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        a, _ = ls.accept()
        held.append(a)
        c.close()
    time.sleep(0.2)
make(int(sys.argv[1]))
print(os.getpid(), port, flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "close":
        for a in held:
            a.close()
        held.clear()
    elif cmd[0] == "make":
        make(int(cmd[1]))
    print("ok", len(held), flush=True)
"#;

/// The value of `tracer_process_close_wait_sockets{pid="PID"}`; 0 when the
/// series is absent (a process with nothing in CLOSE_WAIT may go untracked).
fn close_wait_gauge(addr: SocketAddr, pid: u64) -> f64 {
    let (status, head, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{head}");
    let label = format!("pid=\"{pid}\"");
    body.lines()
        .filter(|l| l.starts_with("tracer_process_close_wait_sockets{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Scrapes until the gauge reads `want` (bounded); returns the last value.
fn wait_gauge(addr: SocketAddr, pid: u64, want: f64) -> f64 {
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    loop {
        let v = close_wait_gauge(addr, pid);
        if v == want || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ss_close_wait(ns: &Netns) -> Vec<String> {
    ns.stdout("ss", &["-Htn", "state", "close-wait"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn dual_stack_close_wait_follows_closes() {
    if !require_root("dual_stack_close_wait_follows_closes") {
        return;
    }
    let ns = Netns::new();
    let mut server = ns.python("dual-stack", DUAL_STACK, &["20"]);
    let f: Vec<u64> = server
        .line()
        .split_whitespace()
        .map(|x| x.parse().expect("number"))
        .collect();
    let (pid, port) = (f[0], f[1]);
    let before = ss_close_wait(&ns);
    assert_eq!(before.len(), 20, "{before:?}");
    assert!(
        before.iter().all(|l| l.contains("[::ffff:127.0.0.1]")),
        "sock_diag shows the mapped spelling: {before:?}"
    );

    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let watch = Tracer::watch_json(&["--metrics-addr", &addr.to_string()]);
    let window = (12 * time_scale()).to_string();
    let diagnose = Tracer::start(&[
        "diagnose",
        "--duration",
        &window,
        "--format",
        "json",
        "--port",
        &port.to_string(),
    ]);
    let started = Instant::now();
    assert_eq!(
        wait_gauge(addr, pid, 20.0),
        20.0,
        "seeded from the snapshot"
    );

    server.send("close");
    server.expect_line("ok 0");
    assert!(ss_close_wait(&ns).is_empty());
    assert_eq!(
        wait_gauge(addr, pid, 0.0),
        0.0,
        "the 20 closed sockets must leave the gauge"
    );

    server.send("make 12");
    server.expect_line("ok 12");
    assert_eq!(ss_close_wait(&ns).len(), 12);
    assert_eq!(wait_gauge(addr, pid, 12.0), 12.0);
    let made_after = started.elapsed().as_secs_f64();

    let stopped = diagnose.wait_exit(scaled(Duration::from_secs(40)));
    watch.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert_eq!(stopped.lines.len(), 1, "{:?}", stopped.lines);
    let report: serde_json::Value = serde_json::from_str(&stopped.lines[0]).expect("JSON");
    let pileups: Vec<_> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == "close_wait_pileup")
        .collect();
    assert_eq!(pileups.len(), 1, "{report}");
    let f = pileups[0];
    assert_eq!(f["pid"], pid, "{f}");
    assert_eq!(f["count"], 12, "the 20 closed ones are gone: {f}");
    // Every one of the 12 was seen entering CLOSE_WAIT: an exact age, no
    // lower bound from sockets older than tracer.
    let oldest = f["oldest_s"].as_f64().unwrap_or_else(|| panic!("{f}"));
    let window_s = report["window_s"].as_f64().expect("window_s");
    assert!(
        oldest > 0.0 && oldest <= window_s - made_after + 2.0,
        "made {made_after:.1} s into a {window_s:.1} s window, oldest {oldest}: {f}"
    );
    assert!(f.get("oldest_at_least_s").is_none(), "{f}");
}
