//! Needs root. The production story, end to end, with the real binary: a
//! server (tests/scenarios/starving_server.py) with 64 fds and a backlog of
//! 8 in a private network namespace with tcp_abort_on_overflow=1; a first
//! batch of impatient clients exhausts its fds *before* tracer starts (its
//! sockets pile up in CLOSE_WAIT, accept() fails with EMFILE, the accept
//! queue is full); `tracer diagnose --duration 6` then watches a second
//! batch, and its verdict must blame the server, fd exhaustion first, with
//! numbers that match what `ss` and /proc say afterwards. Then a quiet
//! `diagnose --port <unused>` must say healthy.
//!
//! Run: `cargo test -p tracer --test diagnose_e2e -- --nocapture` (as root).

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Netns, Proc, Tracer, require_root};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/scenarios/starving_server.py"
);
const PORT: u16 = 2133;
const FD_LIMIT: u64 = 64;
/// `ls.listen(8)` in the script.
const BACKLOG: u64 = 8;
const WINDOW_S: f64 = 6.0;
/// How long the server may take to write its ready file.
const SERVER_READY: Duration = Duration::from_secs(10);
/// A client batch makes COUNT attempts of at most ~0.05 s each.
const CLIENTS_TIMEOUT: Duration = Duration::from_secs(30);
/// The window plus the final snapshot and the report.
const DIAGNOSE_EXIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Guards

/// The test's namespace (common's guard) with tcp_abort_on_overflow=1.
fn namespace() -> Netns {
    let ns = Netns::new();
    ns.stdout("sysctl", &["-qw", "net.ipv4.tcp_abort_on_overflow=1"]);
    ns
}

/// Removes the server's ready file, whatever happens.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Scenario pieces

/// Starts the server inside `ns` and waits for its ready file; returns it
/// with its pid, checked to be the spawned process itself (`ip netns exec`
/// execs python3).
fn start_server(ns: &Netns, ready: &TempFile) -> (Proc, u32) {
    let _ = std::fs::remove_file(&ready.0);
    let ready_path = ready.0.to_str().expect("utf-8 temp path");
    let server = Proc::spawn(
        "starving server",
        ns.command(
            "python3",
            &[
                SCRIPT,
                "server",
                &PORT.to_string(),
                &FD_LIMIT.to_string(),
                ready_path,
            ],
        ),
    );
    let pid = server.pid_from_file(&ready.0, SERVER_READY);
    assert_eq!(
        pid,
        server.id(),
        "ready-file pid vs spawned pid: `ip netns exec` should exec python3"
    );
    assert!(
        ns.pids().contains(&pid),
        "server {pid} not in {}: {:?}",
        ns.name(),
        ns.pids()
    );
    (server, pid)
}

/// Runs one client batch to its end (bounded); returns how long it took.
fn clients(ns: &Netns, count: u32) -> Duration {
    let t = Instant::now();
    let mut c = Proc::spawn(
        "clients",
        ns.command(
            "python3",
            &[
                SCRIPT,
                "clients",
                &PORT.to_string(),
                &count.to_string(),
                "0.05",
            ],
        ),
    );
    c.close_stdin();
    let status = c.wait(CLIENTS_TIMEOUT);
    assert!(status.success(), "clients: {status}; {}", c.stderr());
    t.elapsed()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

fn u64_of(f: &Value, key: &str) -> u64 {
    f[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {f}"))
}

/// Data lines (no header) of `ss` output.
fn ss_rows(out: &str) -> Vec<&str> {
    out.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// False (with a note) when the tracer binary was built without its kernel
/// programs (`AYA_BUILD_SKIP=1 cargo test ...`): it refuses to attach, so
/// there is nothing to test end to end. It says so before anything else.
fn has_kernel_programs(test: &str) -> bool {
    let mut cmd = Command::new(common::tracer_bin());
    cmd.args([
        "diagnose",
        "--duration",
        "0.1",
        "--format",
        "json",
        "--port",
        "1",
    ]);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not end within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stderr = reader.join().unwrap_or_default();
    if stderr.contains("built without its kernel programs") {
        eprintln!("{test}: skipped, {}", stderr.trim());
        return false;
    }
    true
}

/// A port nothing on this host uses right now (the kernel's pick).
fn unused_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// The test

#[test]
fn diagnose_tells_the_production_story() {
    let test = "diagnose_tells_the_production_story";
    if !require_root(test) || !has_kernel_programs(test) {
        return;
    }
    let t0 = Instant::now();
    // The story, in its own scope: the server and the namespace are gone
    // before the healthy run below looks at the host.
    {
        let ns = namespace();
        let ready =
            TempFile(std::env::temp_dir().join(format!("tracer-dx-{}.ready", std::process::id())));
        let (server, server_pid) = start_server(&ns, &ready);

        // The trouble begins before tracer starts.
        let batch1 = clients(&ns, 150);
        let fds_before = fd_count(server_pid);
        assert!(
            fds_before as u64 >= FD_LIMIT,
            "the first batch should have exhausted the server's fds: {fds_before}"
        );

        // Slower machines (an emulated kernel) get a longer window, so the
        // second batch still ends well inside it.
        let window_s = WINDOW_S * f64::from(common::time_scale());
        let tracer = Tracer::start(&[
            "diagnose",
            "--duration",
            &window_s.to_string(),
            "--format",
            "json",
        ]);
        let attached = Instant::now();
        let ready_after = tracer.ready_after;
        std::thread::sleep(Duration::from_secs(1));
        let batch2 = clients(&ns, 60);
        let clients_done = attached.elapsed();
        // Everything after this is stable (the server never closes and
        // nothing connects any more), so the final snapshot and `ss` below
        // see the same sockets: only if the clients ended inside the window.
        assert!(
            clients_done.as_secs_f64() < window_s - 0.5,
            "second client batch ended {clients_done:?} after attach, too close to \
             the end of the {window_s} s window for exact cross-checks"
        );
        let stopped = tracer.wait_exit(DIAGNOSE_EXIT);
        let ran_for = stopped.ran_for;
        let rep = stopped.report();

        // What the host says afterwards.
        let held_cw = ns.stdout("ss", &["-tanp", "state", "close-wait"]);
        let all_cw = ns.stdout("ss", &["-tan", "state", "close-wait"]);
        let listen = ns.stdout("ss", &["-ltn", "sport", "=", &format!(":{PORT}")]);
        let fds_after = fd_count(server_pid);
        let tag = format!("pid={server_pid},");
        let held = ss_rows(&held_cw)
            .iter()
            .filter(|l| l.contains(&tag))
            .count() as u64;
        let total = ss_rows(&all_cw).len() as u64;
        let listen_rows = ss_rows(&listen);
        assert_eq!(listen_rows.len(), 1, "listener on :{PORT}: {listen}");
        // `LISTEN  9  8  127.0.0.1:2133 ...`: Recv-Q is the accept queue.
        let recv_q: u64 = listen_rows[0]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("Recv-Q of {}", listen_rows[0]));

        eprintln!(
            "diagnose_e2e: server pid {server_pid}; batch 1 {batch1:?}; tracer ready after {ready_after:?}; \
             batch 2 {batch2:?} (done {clients_done:?} after attach); diagnose ran {ran_for:?}; \
             fds {fds_before} -> {fds_after}; CLOSE_WAIT held {held} + queued {recv_q} = ss {total}\n\
             report: {rep}"
        );
        let dump = format!("report: {rep:#}\nss close-wait:\n{held_cw}\nss listen:\n{listen}");

        let c = &rep["counters"];
        assert_eq!(rep["v"], 1, "{dump}");
        assert_eq!(rep["verdict"], "unhealthy", "{dump}");
        assert!(u64_of(c, "accept_failed") > 0, "{dump}");
        assert!(u64_of(c, "listen_overflow") > 0, "{dump}");
        let findings = rep["findings"].as_array().expect("findings array");

        // Most likely cause: the server is out of fds.
        let f0 = &findings[0];
        assert_eq!(f0["kind"], "fd_exhaustion", "{dump}");
        assert_eq!(f0["pid"], server_pid, "{dump}");
        assert_eq!(f0["comm"], "python3", "{dump}");
        assert_eq!(u64_of(f0, "fd_limit"), FD_LIMIT, "{dump}");
        assert_eq!(u64_of(f0, "local_port"), PORT as u64, "{dump}");
        let emfile = u64_of(f0, "accept_emfile");
        assert!(emfile > 0, "{dump}");
        assert!(emfile <= u64_of(c, "accept_failed"), "{dump}");
        assert_eq!(u64_of(f0, "fd_count"), fds_after as u64, "{dump}");

        // Its accept queue is full.
        let q = findings
            .iter()
            .find(|f| f["kind"] == "accept_queue_overflow" && f["local_port"] == PORT)
            .unwrap_or_else(|| panic!("no accept_queue_overflow on :{PORT}; {dump}"));
        assert_eq!(q["pid"], server_pid, "{dump}");
        assert_eq!(u64_of(q, "backlog"), BACKLOG, "{dump}");
        assert_eq!(u64_of(q, "queued"), recv_q, "{dump}");
        assert!(u64_of(q, "overflows") > 0, "{dump}");

        // Its connections pile up in CLOSE_WAIT: exactly what ss says it
        // holds. ss also lists the queued connections nobody accepted (also
        // CLOSE_WAIT, their clients gave up), which no process holds yet.
        let cw = findings
            .iter()
            .find(|f| f["kind"] == "close_wait_pileup")
            .unwrap_or_else(|| panic!("no close_wait_pileup; {dump}"));
        assert_eq!(cw["pid"], server_pid, "{dump}");
        let count = u64_of(cw, "count");
        assert!(count >= 10, "{dump}");
        assert_eq!(count, held, "CLOSE_WAIT held by the server; {dump}");
        assert_eq!(
            total,
            held + recv_q,
            "ss close-wait = held by the server + its accept queue; {dump}"
        );

        // Every finding about the server comes before any other.
        let first_other = findings
            .iter()
            .position(|f| f["pid"] != server_pid)
            .unwrap_or(findings.len());
        assert!(
            findings[first_other..]
                .iter()
                .all(|f| f["pid"] != server_pid),
            "{dump}"
        );

        drop(server);
        drop(ns);
    }
    let story = t0.elapsed();

    // Healthy: nothing happens on a port nobody uses.
    let t1 = Instant::now();
    let port = unused_port().to_string();
    let text = Tracer::start(&[
        "diagnose",
        "--duration",
        "2",
        "--format",
        "text",
        "--port",
        &port,
    ])
    .wait_exit(DIAGNOSE_EXIT);
    assert!(
        text.status.success(),
        "exit {:?}; stderr:\n{}",
        text.status,
        text.stderr
    );
    let narrative = text.lines.join("\n");
    assert!(narrative.contains("Healthy"), "{narrative}");
    assert!(!narrative.contains("Most likely cause"), "{narrative}");

    let json = Tracer::start(&[
        "diagnose",
        "--duration",
        "2",
        "--format",
        "json",
        "--port",
        &port,
    ])
    .wait_exit(DIAGNOSE_EXIT);
    let rep = json.report();
    assert_eq!(rep["verdict"], "healthy", "{rep:#}");
    assert_eq!(rep["findings"], serde_json::json!([]), "{rep:#}");
    eprintln!(
        "diagnose_e2e: story {story:?}, healthy runs {:?}",
        t1.elapsed()
    );
}
