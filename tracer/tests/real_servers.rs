//! Needs root. Real server shapes that once made tracer print something
//! false (issue 13), each with real processes in a private namespace:
//! a blocking accept() interrupted by signals, a burst of EMFILE lines over
//! several seconds, a process whose threads have their own names.
//!
//! Run: `cargo xtask test -- --test real_servers` (as root).

mod common;

use std::time::Duration;

use common::{
    Netns, Tracer, dump, numbers, of_pid, one_at_a_time, require_root, select, sum_count,
    with_exhaust_fds,
};

/// A blocking accept() server (the shape of socketserver, prefork Apache)
/// that gets SIGALRM every 50 ms while it serves argv[2] connections from a
/// forked client, one every 150 ms. argv[1] `timeo` sets SO_RCVTIMEO on the
/// listener, so an interrupted accept returns EINTR itself instead of
/// ERESTARTSYS. Then, as a control that the pipeline is live, it fails
/// argv[3] accepts with EMFILE. Prints "pid port signals served emfile".
const SIGNALLED_SERVER: &str = r#"
import os, signal, socket, struct, sys, time
mode, n, tries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
hits = [0]
def on_alarm(*_):
    hits[0] += 1
signal.signal(signal.SIGALRM, on_alarm)
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(16)
if mode == "timeo":
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 30, 0))
port = ls.getsockname()[1]
child = os.fork()
if child == 0:
    for _ in range(n):
        time.sleep(0.15)
        socket.create_connection(("127.0.0.1", port)).close()
    os._exit(0)
signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
served = 0
while served < n:
    a, _ = ls.accept()
    a.close()
    served += 1
signal.setitimer(signal.ITIMER_REAL, 0, 0)
os.waitpid(child, 0)
c = socket.create_connection(("127.0.0.1", port))
fill = exhaust_fds(64)
failed = 0
for _ in range(tries):
    try:
        ls.accept()
    except OSError as e:
        failed += e.errno == 24
del fill[:]
print(os.getpid(), port, hits[0], served, failed, flush=True)
sys.stdin.readline()
"#;

/// Signals interrupt a blocking accept(): the syscall exit sees
/// -ERESTARTSYS (or -EINTR with SO_RCVTIMEO) and the call is retried.
/// Nothing failed, so the only `accept_failed` lines of the server are the
/// control's EMFILE ones.
#[test]
fn signal_interrupted_accepts_are_not_failures() {
    if !require_root("signal_interrupted_accepts_are_not_failures") {
        return;
    }
    let _serial = one_at_a_time();
    let ns = Netns::new();
    let netns = ns.inode();
    let tracer = Tracer::watch_json(&[]);
    let mut servers = Vec::new();
    for mode in ["plain", "timeo"] {
        let server = ns.python(
            "signalled-server",
            &with_exhaust_fds(SIGNALLED_SERVER),
            &[mode, "10", "3"],
        );
        let f = numbers(&server.line_within(Duration::from_secs(20)));
        let (pid, port, signals, served, failed) = (f[0], f[1], f[2], f[3], f[4]);
        assert!(signals >= 20, "{mode}: only {signals} signals arrived");
        assert_eq!(served, 10, "{mode}: every connection was served");
        assert_eq!(failed, 3, "{mode}: the control accepts fail with EMFILE");
        servers.push((server, pid, port));
    }
    let done = tracer.wait_for(Duration::from_secs(10), |ev| {
        servers
            .iter()
            .all(|(_, pid, _)| sum_count(&of_pid(ev, "accept_failed", *pid)) >= 3)
    });
    for (s, _, _) in &mut servers {
        s.send("done");
    }
    let events = tracer.stop().events();
    let lines = select(&events, netns, "accept_failed");
    assert!(done, "{}", dump(&lines));
    for (_, pid, port) in &servers {
        let mine = of_pid(&events, "accept_failed", *pid);
        assert_eq!(sum_count(&mine), 3, "{}", dump(&lines));
        for e in &mine {
            assert_eq!(e["errno"], 24, "{e}");
            assert_eq!(e["local_port"], *port, "{e}");
        }
    }
}

/// A server out of fds (RLIMIT_NOFILE 64) failing accept() with EMFILE
/// every 10 ms for argv[1] seconds. Prints "pid port failed".
const EMFILE_BURST: &str = r#"
import os, socket, sys, time
secs = float(sys.argv[1])
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(16)
port = ls.getsockname()[1]
c = socket.create_connection(("127.0.0.1", port))
fill = exhaust_fds(64)
failed = 0
end = time.monotonic() + secs
while time.monotonic() < end:
    try:
        ls.accept()
    except OSError as e:
        failed += e.errno == 24
    time.sleep(0.01)
del fill[:]
print(os.getpid(), port, failed, flush=True)
sys.stdin.readline()
"#;

/// Seconds since the epoch of an RFC 3339 `ts` as tracer writes it
/// (`YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`), for differences within a month.
fn ts_secs(ts: &str) -> f64 {
    let day: f64 = ts[8..10].parse().expect("day");
    let h: f64 = ts[11..13].parse().expect("hour");
    let m: f64 = ts[14..16].parse().expect("minute");
    let s: f64 = ts[17..ts.len() - 1].parse().expect("seconds");
    ((day * 24.0 + h) * 60.0 + m) * 60.0 + s
}

/// During a 4 s EMFILE burst the one cause gives a line a second, each
/// stamped with its own interval's last failure: strictly increasing
/// timestamps about a second apart, the counts adding up to the failures.
#[test]
fn interval_lines_carry_their_own_time() {
    if !require_root("interval_lines_carry_their_own_time") {
        return;
    }
    let _serial = one_at_a_time();
    let ns = Netns::new();
    let netns = ns.inode();
    let tracer = Tracer::watch_json(&[]);
    let mut server = ns.python("emfile-burst", &with_exhaust_fds(EMFILE_BURST), &["4"]);
    let f = numbers(&server.line_within(Duration::from_secs(20)));
    let (pid, port, failed) = (f[0], f[1], f[2]);
    assert!(failed >= 200, "only {failed} EMFILE failures");
    let mine = |ev: &[serde_json::Value]| {
        of_pid(&select(ev, netns, "accept_failed"), "accept_failed", pid)
    };
    let done = tracer.wait_for(Duration::from_secs(10), |ev| sum_count(&mine(ev)) >= failed);
    server.send("done");
    let lines = mine(&tracer.stop().events());
    assert!(done, "{}", dump(&lines));
    assert_eq!(sum_count(&lines), failed, "{}", dump(&lines));
    assert!(lines.len() >= 4, "a line per second: {}", dump(&lines));
    for e in &lines {
        assert_eq!(e["errno"], 24, "{e}");
        assert_eq!(e["local_port"], port, "{e}");
        assert!(e["count"].as_u64().unwrap_or(0) > 0, "{e}");
    }
    let ts: Vec<f64> = lines
        .iter()
        .map(|e| ts_secs(e["ts"].as_str().expect("ts")))
        .collect();
    // The last line's interval may be cut short by the end of the burst.
    for (i, w) in ts.windows(2).enumerate() {
        let gap = w[1] - w[0];
        let last = i + 2 == ts.len();
        assert!(
            gap > 0.0 && gap < 1.5 && (last || gap > 0.5),
            "lines {i} and {}: {gap:.3} s apart\n{}",
            i + 1,
            dump(&lines)
        );
    }
    let span = ts[ts.len() - 1] - ts[0];
    assert!(
        (2.5..4.5).contains(&span),
        "a 4 s burst spans {span:.3} s of lines\n{}",
        dump(&lines)
    );
}

/// A process named `crt-main` (PR_SET_NAME in its main thread) whose worker
/// thread, named `crt-worker`, accepts argv[1] connections and aborts each
/// (SO_LINGER 0: one RST each). Prints "pid port", waits for a line, runs,
/// prints "done".
const NAMED_THREADS: &str = r#"
import ctypes, os, socket, struct, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
def name(n):
    assert libc.prctl(15, n, 0, 0, 0) == 0
name(b"crt-main")
n = int(sys.argv[1])
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(n)
port = ls.getsockname()[1]
def worker():
    name(b"crt-worker")
    for _ in range(n):
        a, _ = ls.accept()
        a.recv(1)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        a.close()
print(os.getpid(), port, flush=True)
sys.stdin.readline()
t = threading.Thread(target=worker)
t.start()
cs = []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    c.send(b"x")
    cs.append(c)
t.join()
time.sleep(0.2)
print("done", flush=True)
sys.stdin.readline()
"#;

/// `comm` is the process's name and `thread` the acting thread's; `--comm`
/// matches the process's name (in the kernel), not the thread's.
#[test]
fn thread_names_are_threads_not_processes() {
    if !require_root("thread_names_are_threads_not_processes") {
        return;
    }
    let _serial = one_at_a_time();
    let ns = Netns::new();
    let netns = ns.inode();
    let mut server = ns.python("named-threads", NAMED_THREADS, &["6"]);
    let f = numbers(&server.line());
    let (pid, port) = (f[0], f[1]);
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm"),
        "crt-main\n"
    );
    let all = Tracer::watch_json(&[]);
    let by_process = Tracer::watch_json(&["--comm", "crt-main"]);
    let by_thread = Tracer::watch_json(&["--comm", "crt-worker"]);
    let rsts_before = ns.tcp_out_rsts();
    server.send("go");
    server.expect_line("done");
    let sent = ns.tcp_out_rsts() - rsts_before;
    assert_eq!(sent, 6, "one RST per aborted connection");
    let aborts = |ev: &[serde_json::Value]| -> Vec<serde_json::Value> {
        select(ev, netns, "rst_sent")
            .into_iter()
            .filter(|e| e["local_port"] == port)
            .collect()
    };
    for t in [&all, &by_process] {
        let done = t.wait_for(Duration::from_secs(10), |ev| {
            aborts(ev).len() as u64 >= sent
        });
        assert!(done, "{}", dump(&aborts(&t.events())));
    }
    server.send("end");
    let thread_events = by_thread.stop().events();
    for (what, t) in [("no filter", all), ("--comm crt-main", by_process)] {
        let lines = aborts(&t.stop().events());
        assert_eq!(lines.len() as u64, sent, "{what}: {}", dump(&lines));
        for e in &lines {
            assert_eq!(e["pid"], pid, "{what}: {e}");
            assert_eq!(e["comm"], "crt-main", "{what}: {e}");
            assert_eq!(e["thread"], "crt-worker", "{what}: {e}");
        }
    }
    let mine: Vec<_> = thread_events
        .iter()
        .filter(|e| e["pid"] == pid)
        .cloned()
        .collect();
    assert!(
        mine.is_empty(),
        "--comm crt-worker names no process: {}",
        dump(&mine)
    );
}
