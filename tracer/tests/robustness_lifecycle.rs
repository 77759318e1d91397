//! Needs root (the usage tests do not). Issue 6, the lifecycle half: the
//! tracer ends cleanly on SIGINT, SIGTERM and a closed stdout, leaving none
//! of its programs, links or maps loaded; without privileges or with bad
//! arguments it fails with one clear line and the documented exit status;
//! and it runs inside `ip netns exec` (a fresh sysfs without tracefs).
//!
//! Run: `cargo test -p tracer --test robustness_lifecycle` (as root).

mod common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    BpfIds, Netns, Stopped, Tracer, bpf_ids_of, bpftool_objects, dump, require_root, run_bounded,
    select, tracer_bin,
};
use serde_json::Value;

/// The tracer must be gone this long after it is told to stop.
const EXIT_WITHIN: Duration = Duration::from_secs(5);
/// The kernel frees programs, links and maps right after the last fd is
/// closed, maps after an RCU grace period: allow that much.
const UNLOAD_WITHIN: Duration = Duration::from_secs(3);
/// Nothing listens on it in a fresh namespace.
const CLOSED_PORT: u16 = 9;

// ---------------------------------------------------------------------------
// Helpers

/// `bpftool KIND show`, or `None` (with a note) without bpftool.
fn loaded(kind: &str, test: &str) -> Option<BTreeMap<u64, Value>> {
    let objs = bpftool_objects(kind);
    if objs.is_none() {
        eprintln!("{test}: bpftool not installed, load/unload checks skipped");
    }
    objs
}

/// The tracer's programs, links and maps, checked against what bpftool
/// lists while it runs.
fn ours_while_running(t: &Tracer, test: &str) -> Option<BpfIds> {
    let ours = bpf_ids_of(t.pid());
    assert!(
        !ours.progs.is_empty() && !ours.links.is_empty() && !ours.maps.is_empty(),
        "{test}: a ready tracer holds no BPF programs/links/maps: {ours:?}"
    );
    let progs = loaded("prog", test)?;
    let links = loaded("link", test)?;
    let maps = loaded("map", test)?;
    for (kind, ids, listed) in [
        ("prog", &ours.progs, &progs),
        ("link", &ours.links, &links),
        ("map", &ours.maps, &maps),
    ] {
        let missing: Vec<&u64> = ids.iter().filter(|id| !listed.contains_key(id)).collect();
        assert!(
            missing.is_empty(),
            "{test}: {kind} ids {missing:?} held by the tracer are not in `bpftool {kind} show`"
        );
    }
    for id in &ours.links {
        let prog = links[id]["prog_id"].as_u64();
        assert!(
            prog.is_some_and(|p| ours.progs.contains(&p)),
            "{test}: link {id} runs prog {prog:?}, not one of ours {:?}",
            ours.progs
        );
    }
    // bpftool prints the BTF name (the kernel keeps 15 bytes of it).
    let names: Vec<&str> = ours
        .progs
        .iter()
        .filter_map(|id| progs[id]["name"].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("tcp_send_reset")),
        "{test}: no tcp_send_reset program among ours: {names:?}"
    );
    eprintln!(
        "{test}: while running: progs {:?} ({names:?}), links {:?}, maps {:?}",
        ours.progs, ours.links, ours.maps
    );
    Some(ours)
}

/// Which of `ours` bpftool still lists.
fn still_loaded(ours: &BpfIds) -> Vec<String> {
    let mut left = Vec::new();
    for (kind, ids) in [
        ("prog", &ours.progs),
        ("link", &ours.links),
        ("map", &ours.maps),
    ] {
        let listed = bpftool_objects(kind).expect("bpftool was there a moment ago");
        for id in ids.iter().filter(|id| listed.contains_key(id)) {
            left.push(format!("{kind} {id}: {}", listed[id]));
        }
    }
    left
}

/// Waits (bounded) until none of `ours` is loaded.
fn assert_unloaded(ours: &BpfIds, test: &str) {
    let deadline = Instant::now() + UNLOAD_WITHIN;
    loop {
        let left = still_loaded(ours);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{test}: still loaded {UNLOAD_WITHIN:?} after the tracer exited:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A clean end: exit status 0, no panic, no runtime-failure line, every
/// stdout line JSON.
fn assert_clean_exit(stopped: &Stopped, test: &str) {
    assert_eq!(
        stopped.status.code(),
        Some(0),
        "{test}: exit status {:?}; stderr:\n{}",
        stopped.status,
        stopped.stderr
    );
    assert!(
        !stopped.stderr.contains("panicked") && !stopped.stderr.contains("tracer: "),
        "{test}: stderr:\n{}",
        stopped.stderr
    );
    let _ = stopped.events();
}

fn watch_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(tracer_bin());
    cmd.args(["watch", "--format", "json"]).args(args);
    cmd
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Signal(i32),
    /// The reader closes its end of stdout; `busy`: while events flow.
    ReaderCloses {
        busy: bool,
    },
}

/// Makes argv[1] connects to 127.0.0.1:argv[2] (refused), printing a line
/// first, then keeps on connecting until killed.
const STORM: &str = r#"
import socket, sys
port = int(sys.argv[1])
print("go", flush=True)
while True:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        pass
    s.close()
"#;

fn stops_cleanly(test: &str, how: Stop) {
    let ns = Netns::new();
    let (tracer, hold) = Tracer::start_cmd_held(watch_cmd(&[]));
    let ours = ours_while_running(&tracer, test);
    let storm = match how {
        Stop::ReaderCloses { busy: true } => {
            let p = ns.python("storm", STORM, &[&CLOSED_PORT.to_string()]);
            p.expect_line("go");
            // Let the events pile up in the pipe nobody reads.
            std::thread::sleep(Duration::from_millis(300));
            assert!(ns.tcp_out_rsts() > 0, "{test}: the storm sends no RSTs");
            Some(p)
        }
        _ => None,
    };
    let told = Instant::now();
    let stopped = match how {
        Stop::Signal(sig) => {
            hold.release();
            tracer.signal(sig);
            tracer.wait_exit(EXIT_WITHIN)
        }
        Stop::ReaderCloses { .. } => {
            hold.close();
            tracer.wait_exit(EXIT_WITHIN)
        }
    };
    let took = told.elapsed();
    drop(storm);
    eprintln!(
        "{test}: {how:?}: exited {:?} after {took:?}, {} stdout lines",
        stopped.status,
        stopped.lines.len()
    );
    assert_clean_exit(&stopped, test);
    if let Some(ours) = ours {
        assert_unloaded(&ours, test);
    }
}

// ---------------------------------------------------------------------------
// Ends

#[test]
fn sigint_exits_0_and_unloads_everything() {
    let test = "sigint_exits_0_and_unloads_everything";
    if require_root(test) {
        stops_cleanly(test, Stop::Signal(libc::SIGINT));
    }
}

#[test]
fn sigterm_exits_0_and_unloads_everything() {
    let test = "sigterm_exits_0_and_unloads_everything";
    if require_root(test) {
        stops_cleanly(test, Stop::Signal(libc::SIGTERM));
    }
}

#[test]
fn closed_stdout_exits_0_and_unloads_everything() {
    let test = "closed_stdout_exits_0_and_unloads_everything";
    if require_root(test) {
        stops_cleanly(test, Stop::ReaderCloses { busy: false });
    }
}

#[test]
fn closed_stdout_during_a_storm_exits_0_and_unloads_everything() {
    let test = "closed_stdout_during_a_storm_exits_0_and_unloads_everything";
    if require_root(test) {
        stops_cleanly(test, Stop::ReaderCloses { busy: true });
    }
}

/// Whether `pid` has a handler for `sig` (SigCgt in /proc/PID/status).
fn catches(pid: u32, sig: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1u64 << (sig - 1)) != 0)
}

/// SIGINT while it loads and attaches: it still ends with status 0 and
/// leaves nothing loaded.
#[test]
fn sigint_during_startup_exits_0_and_unloads_everything() {
    let test = "sigint_during_startup_exits_0_and_unloads_everything";
    if !require_root(test) {
        return;
    }
    let bpftool = loaded("prog", test).is_some();
    let mut cmd = watch_cmd(&[]);
    cmd.env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn tracer");
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut child = Reap(child);
    let pid = child.0.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !catches(pid, libc::SIGINT) {
        assert!(Instant::now() < deadline, "{test}: no SIGINT handler");
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill(2) on our unreaped child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let told = Instant::now();
    // Sample its BPF fds all along: whatever it loaded must be gone after
    // (an fd opened and closed between two samples can escape this).
    let mut seen = BpfIds::default();
    let status = loop {
        if let Ok(Some(s)) = child.0.try_wait() {
            break s;
        }
        let now = bpf_ids_of(pid);
        seen.progs.extend(now.progs);
        seen.links.extend(now.links);
        seen.maps.extend(now.maps);
        // Start-up (attach and snapshot) may not be over yet: allow for it.
        assert!(
            told.elapsed() < common::READY_TIMEOUT,
            "{test}: still running {:?} after SIGINT",
            common::READY_TIMEOUT
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = told.elapsed();
    let stderr = err_thread.join().unwrap_or_default();
    eprintln!("{test}: exited {status:?} {took:?} after SIGINT; saw {seen:?}; stderr:\n{stderr}");
    assert_eq!(status.code(), Some(0), "{test}: stderr:\n{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("tracer: "),
        "{test}: stderr:\n{stderr}"
    );
    if bpftool {
        assert_unloaded(&seen, test);
    }
}

// ---------------------------------------------------------------------------
// Failing clearly

/// The tracer as user nobody, no groups, no capabilities.
fn unprivileged(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(tracer_bin())
    .args(args)
    // A panic would print its backtrace: easy to spot.
    .env("RUST_BACKTRACE", "1")
    .env_remove("RUST_LOG");
    run_bounded(cmd, Duration::from_secs(20))
}

#[test]
fn not_root_fails_with_one_clear_line() {
    let test = "not_root_fails_with_one_clear_line";
    if !require_root(test) {
        return;
    }
    for args in [
        &["watch", "--format", "json"][..],
        &[][..],
        &["diagnose", "--duration", "1"][..],
    ] {
        let out = unprivileged(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!(
            "{test}: tracer {args:?} as nobody: {:?}: {stderr}",
            out.status
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "tracer {args:?} as nobody: stderr:\n{stderr}"
        );
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "tracer {args:?}: stderr:\n{stderr}");
        assert!(stderr.ends_with('\n'), "{stderr:?}");
        let line = lines[0];
        assert!(line.starts_with("tracer: "), "{line}");
        assert!(line.contains("root"), "{line}");
        assert!(line.contains("CAP_BPF"), "{line}");
        assert!(
            !line.contains("panicked") && !line.contains("backtrace"),
            "{line}"
        );
        assert!(stdout.is_empty(), "tracer {args:?}: stdout:\n{stdout}");
    }
}

/// `tracer ARGS` must exit 2 with a usage error, before touching the kernel.
fn assert_bad_usage(args: &[&str]) {
    let mut cmd = Command::new(tracer_bin());
    cmd.args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG");
    // Bounded: as root a wrongly accepted argument would start watching.
    let out = run_bounded(cmd, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "tracer {args:?}: want exit 2 (bad usage), got {:?}; stderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.starts_with("error: "),
        "tracer {args:?}: stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "tracer {args:?}: stderr:\n{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "tracer {args:?}: stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// No root needed: arguments are checked before anything else.
#[test]
fn bad_usage_exits_2() {
    for args in [
        &["watch", "--bogus"][..],
        &["watch", "--ring-buffer-kib", "3"][..],
        &["watch", "--ring-buffer-kib", "0"][..],
        &["watch", "--duration", "abc"][..],
        &["watch", "--port", "70000"][..],
        &["diagnose", "--duration", "abc"][..],
        &["bogus"][..],
    ] {
        assert_bad_usage(args);
    }
}

#[test]
fn out_of_range_duration_is_bad_usage() {
    for args in [
        &["watch", "--duration", "inf"][..],
        &["watch", "--duration", "1e300"][..],
        &["diagnose", "--duration", "inf"][..],
    ] {
        assert_bad_usage(args);
    }
}

#[test]
fn negative_or_nan_duration_is_bad_usage() {
    for args in [
        &["watch", "--duration", "nan"][..],
        &["watch", "--duration=-1"][..],
        &["diagnose", "--duration=-5"][..],
    ] {
        assert_bad_usage(args);
    }
}

// ---------------------------------------------------------------------------
// Inside `ip netns exec`

fn ns_inode(pid: u32, ns: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{ns}"))
        .unwrap_or_else(|e| panic!("stat /proc/{pid}/ns/{ns}: {e}"))
        .ino()
}

/// `ip netns exec` gives the tracer a fresh sysfs without tracefs mounted
/// and its own mount namespace: it still attaches and reports, with the
/// namespace's inode, an RST made in there.
#[test]
fn runs_inside_ip_netns_exec() {
    let test = "runs_inside_ip_netns_exec";
    if !require_root(test) {
        return;
    }
    const CONNECTS: usize = 5;
    let ns = Netns::new();
    let netns = ns.inode();
    let bin = tracer_bin();
    let tracer = Tracer::start_cmd(ns.command(
        bin.to_str().expect("UTF-8 tracer path"),
        &["watch", "--format", "json"],
    ));
    let ours = ours_while_running(&tracer, test);
    // The test runs what it claims: the tracer is inside the namespace, in
    // another mount namespace (ip netns exec remounts /sys).
    let me = std::process::id();
    assert_eq!(ns_inode(tracer.pid(), "net"), netns, "tracer's netns");
    assert_ne!(
        ns_inode(tracer.pid(), "mnt"),
        ns_inode(me, "mnt"),
        "ip netns exec gave the tracer no mount namespace of its own"
    );
    assert!(
        tracer.stderr_text().lines().any(|l| l.contains("attached")),
        "{}",
        tracer.stderr_text()
    );

    let client = ns.python(
        "client",
        common::REFUSED_CLIENT,
        &[&CONNECTS.to_string(), &CLOSED_PORT.to_string()],
    );
    let pid: u64 = client.line().parse().expect("client pid");
    client.expect_line(&format!("refused {CONNECTS}"));
    let complete = tracer.wait_for(Duration::from_secs(10), |ev| {
        select(ev, netns, "rst_sent").len() >= CONNECTS
            && select(ev, netns, "rst_received").len() >= CONNECTS
    });
    tracer.signal(libc::SIGINT);
    let stopped = tracer.wait_exit(EXIT_WITHIN);
    eprintln!(
        "{test}: ready after {:?}, complete in time: {complete}, exit {:?}; stderr:\n{}",
        stopped.ran_for, stopped.status, stopped.stderr
    );
    assert_clean_exit(&stopped, test);
    let events = stopped.events();
    let sent = select(&events, netns, "rst_sent");
    let received = select(&events, netns, "rst_received");
    assert_eq!(sent.len(), CONNECTS, "rst_sent:\n{}", dump(&sent));
    for e in &sent {
        assert_eq!(e["netns"], netns, "{e}");
        assert_eq!(e["reason"], "NO_SOCKET", "{e}");
        assert_eq!(e["local_port"], CLOSED_PORT, "{e}");
        assert_eq!(e["local_addr"], "127.0.0.1", "{e}");
    }
    assert_eq!(
        received.len(),
        CONNECTS,
        "rst_received:\n{}",
        dump(&received)
    );
    for e in &received {
        assert_eq!(e["netns"], netns, "{e}");
        assert_eq!(e["pid"], pid, "{e}");
        assert_eq!(e["remote_port"], CLOSED_PORT, "{e}");
    }
    if let Some(ours) = ours {
        assert_unloaded(&ours, test);
    }
}
