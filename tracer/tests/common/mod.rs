//! Shared helpers for the root integration tests: a throw-away network
//! namespace, processes (mostly python3 scripts) running inside it, its TCP
//! counters, and the real `tracer` binary streaming JSON events.
//!
//! Every wait is bounded, and every guard cleans up in `Drop`, so a failing
//! assertion leaves no namespace, tracer or helper process behind.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long the tracer may take to attach and take its start-up snapshot (a
/// bound for a loaded 2-core machine running tests in parallel, times
/// [`time_scale`]; start-up speed itself is measured by `cargo xtask bench`).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the tracer may take to exit after SIGINT.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound for a helper's next line or exit.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// True when running as root. Otherwise prints a visible skip note for
/// `test`, and under CI (`CI` set, as `.ci/run` is) fails the test: a root
/// test that did not run must not count as passed there.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("{test}: needs root, and CI must run it (CI is set, euid != 0)");
        }
        eprintln!("SKIPPED {test}: needs root (euid != 0); not a pass");
    }
    root
}

#[path = "../shared/time_scale.rs"]
mod time_scale;
pub use time_scale::time_scale;

/// The running kernel's (major, minor).
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next().and_then(|p| p.parse().ok()).expect("major");
    let minor = parts.next().and_then(|p| p.parse().ok()).expect("minor");
    (major, minor)
}

/// Whether the kernel names RST reasons (6.10+); before, tracer infers the
/// few it can and leaves the rest `null`.
pub fn kernel_names_rst_reasons() -> bool {
    kernel_version() >= (6, 10)
}

/// `d` stretched by [`time_scale`].
pub fn scaled(d: Duration) -> Duration {
    d * time_scale()
}

/// The tracer binary: `TRACER_BIN` (set by `cargo xtask test`) when set,
/// else the one cargo built for this test run.
pub fn tracer_bin() -> PathBuf {
    match std::env::var_os("TRACER_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_tracer")),
    }
}

/// Spawns a thread that sends every line of `r` (lossily decoded) down a
/// channel, and keeps a copy of all of them.
fn line_reader<R: Read + Send + 'static>(
    r: R,
    keep: Arc<Mutex<Vec<String>>>,
) -> (Receiver<String>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    keep.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            }
        }
    });
    (rx, handle)
}

/// Polls `child` until it exits or `timeout` passes.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = wait_bounded(child, Duration::from_secs(5));
}

// ---------------------------------------------------------------------------
// Network namespace

static NETNS_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh network namespace `tracer-t-<pid>-<n>` with `lo` up. Dropping it
/// kills every process still inside it (only ours: the name is unique) and
/// deletes it.
pub struct Netns {
    name: String,
    inode: u64,
}

impl Netns {
    pub fn new() -> Netns {
        let n = NETNS_SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("tracer-t-{}-{n}", std::process::id());
        // A leftover from a crashed earlier run with the same pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        // From here on the guard deletes it, whatever fails next.
        let mut ns = Netns { name, inode: 0 };
        run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns.inode = std::fs::metadata(format!("/run/netns/{}", ns.name))
            .expect("stat /run/netns entry")
            .ino();
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's inode, as in the events' `netns` field.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// `ip netns exec NAME program args...`, not yet spawned.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// Runs a short command inside the namespace to completion.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = self.command(program, args);
        cmd.stdin(Stdio::null());
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program} in {}: {e}", self.name));
        // Read both pipes on threads so the bound below holds.
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let (_o, ho) = line_reader(child.stdout.take().unwrap(), out.clone());
        let (_e, he) = line_reader(child.stderr.take().unwrap(), err.clone());
        let status = match wait_bounded(&mut child, STEP_TIMEOUT) {
            Some(s) => s,
            None => {
                kill_and_reap(&mut child);
                panic!("{program} {args:?} in {} did not finish", self.name);
            }
        };
        let _ = ho.join();
        let _ = he.join();
        let join = |v: &Arc<Mutex<Vec<String>>>| {
            let mut s = v.lock().unwrap().join("\n");
            s.push('\n');
            s.into_bytes()
        };
        Output {
            status,
            stdout: join(&out),
            stderr: join(&err),
        }
    }

    /// The processes inside the namespace now.
    pub fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stdout of a short command inside the namespace, which must succeed.
    pub fn stdout(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} in {}: {} {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `python3 -u -c script args...` inside the namespace.
    pub fn python(&self, label: &str, script: &str, args: &[&str]) -> Proc {
        let mut full = vec!["-u", "-c", script];
        full.extend_from_slice(args);
        Proc::spawn(label, self.command("python3", &full))
    }

    /// The namespace's `Tcp:` counters from /proc/net/snmp (exact and
    /// stateless, unlike nstat's history files).
    pub fn tcp_counters(&self) -> HashMap<String, u64> {
        let out = self.run("cat", &["/proc/net/snmp"]);
        assert!(out.status.success(), "cat /proc/net/snmp: {out:?}");
        parse_snmp(&String::from_utf8_lossy(&out.stdout), "Tcp:")
    }

    /// The namespace's Tcp OutRsts counter.
    pub fn tcp_out_rsts(&self) -> u64 {
        *self
            .tcp_counters()
            .get("OutRsts")
            .expect("OutRsts in /proc/net/snmp")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes left inside our namespace are ours (unique name).
        for pid in self.pids() {
            // SAFETY: plain kill(2) on a pid inside our namespace.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Parses the two-line `Prefix: names` / `Prefix: values` groups of
/// /proc/net/snmp for one prefix.
pub fn parse_snmp(text: &str, prefix: &str) -> HashMap<String, u64> {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert!(lines.len() >= 2, "no {prefix} lines in {text}");
    lines[0]
        .split_whitespace()
        .skip(1)
        .zip(lines[1].split_whitespace().skip(1))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse::<i64>().ok()? as u64)))
        .collect()
}

// ---------------------------------------------------------------------------
// Helper processes

/// A spawned helper with line-oriented stdin/stdout; killed on drop.
pub struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(label: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {label}: {e}"));
        let stdin = child.stdin.take();
        let (lines, _) = line_reader(child.stdout.take().unwrap(), Arc::default());
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let _ = line_reader(child.stderr.take().unwrap(), stderr.clone());
        Proc {
            label: label.to_string(),
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// The spawned process id (`ip netns exec` execs its command, so this is
    /// the helper's own pid).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The next stdout line, within `timeout`.
    pub fn line_within(&self, timeout: Duration) -> String {
        match self.lines.recv_timeout(scaled(timeout)) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}: no output line within {timeout:?}; stderr: {}",
                self.label,
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                // Give the stderr reader a moment to catch the traceback.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{}: exited before printing the expected line; stderr: {}",
                    self.label,
                    self.stderr()
                )
            }
        }
    }

    pub fn line(&self) -> String {
        self.line_within(STEP_TIMEOUT)
    }

    /// The next line, which must be exactly `want`.
    pub fn expect_line(&self, want: &str) {
        let got = self.line();
        assert_eq!(got, want, "{}: stderr: {}", self.label, self.stderr());
    }

    /// Writes one line to the helper's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: write {line:?}: {e}", self.label));
    }

    /// The pid this process writes into `path` once it is ready (bounded
    /// by `timeout`, scaled).
    pub fn pid_from_file(&self, path: &std::path::Path, timeout: Duration) -> u32 {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            if let Some(pid) = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "{}: wrote no pid to {} within {timeout:?}; stderr: {}",
                self.label,
                path.display(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits (bounded) for the helper to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match wait_bounded(&mut self.child, timeout) {
            Some(s) => s,
            None => panic!("{}: still running after {timeout:?}", self.label),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin = None;
        kill_and_reap(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// The tracer

/// Whether a stderr line says the start-up snapshot is in (`watch`:
/// `[INFO  tracer::watch] ready: N existing sockets known ...`) or the
/// window has begun (`diagnose`: `attached; observing for ...`).
fn is_ready_line(line: &str) -> bool {
    line.contains("] ready: ") || line.contains("attached; observing")
}

/// Whether a stderr line says the hooks are in (`[INFO  tracer::watch]
/// attached: 8 of 9 hooks ...`), not e.g. "optional hook X not attached".
/// The snapshot's "ready" line may wait behind a stdout nobody reads.
fn is_attached_line(line: &str) -> bool {
    line.contains("attached") && !line.contains("not attached")
}

/// A running `tracer` with its stdout collected by a reader thread.
pub struct Tracer {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stdout_thread: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
    started: Instant,
    /// Time from spawn to the ready line.
    pub ready_after: Duration,
}

/// What a stopped tracer left behind.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    pub lines: Vec<String>,
    pub stderr: String,
    pub ran_for: Duration,
}

impl Stopped {
    /// Every stdout line parsed as JSON (panics on a line that is not).
    pub fn events(&self) -> Vec<Value> {
        parse_lines(&self.lines)
    }

    /// The one JSON report `diagnose --format json` printed, after a clean
    /// exit.
    pub fn report(&self) -> Value {
        assert!(
            self.status.success(),
            "diagnose exit {:?}; stderr:\n{}",
            self.status,
            self.stderr
        );
        assert_eq!(
            self.lines.len(),
            1,
            "diagnose must print exactly one line: {:?}",
            self.lines
        );
        serde_json::from_str(&self.lines[0])
            .unwrap_or_else(|e| panic!("report is not JSON ({e}): {}", self.lines[0]))
    }
}

fn parse_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

impl Tracer {
    /// `tracer watch --format json ARGS`, waiting until it has attached.
    pub fn watch_json(args: &[&str]) -> Tracer {
        let mut full = vec!["watch", "--format", "json"];
        full.extend_from_slice(args);
        Tracer::start(&full)
    }

    /// `tracer ARGS` with RUST_LOG=info, waiting for the ready line.
    pub fn start(args: &[&str]) -> Tracer {
        let mut cmd = Command::new(tracer_bin());
        cmd.args(args);
        Tracer::spawn_ready(cmd, None)
    }

    /// `tracer watch --format json ARGS`, returning as soon as its hooks
    /// are attached (the `hooks:` line), while the start-up snapshot may
    /// still run.
    pub fn watch_json_hooked(args: &[&str]) -> Tracer {
        let mut cmd = Command::new(tracer_bin());
        cmd.args(["watch", "--format", "json"]).args(args);
        Tracer::spawn_until(cmd, None, |l| l.contains("] hooks: "))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The mechanism chosen for each hook, from the `hooks: a=tp_btf b=-`
    /// line tracer logs at start (`-`: none attached).
    pub fn hooks(&self) -> HashMap<String, String> {
        let text = self.stderr_text();
        let line = text
            .lines()
            .find_map(|l| l.split_once("hooks: ").map(|(_, rest)| rest.to_string()))
            .unwrap_or_else(|| panic!("no `hooks:` line on tracer's stderr:\n{text}"));
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Value> {
        parse_lines(&self.lines())
    }

    /// Polls the events until `done(events)` holds or `timeout` passes;
    /// returns whether it held.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            if done(&self.events()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// [`Tracer::stop`], asserting a clean exit.
    pub fn stop_ok(self) -> Stopped {
        let stopped = self.stop();
        assert!(
            stopped.status.success(),
            "tracer exit: {:?}; stderr:\n{}",
            stopped.status,
            stopped.stderr
        );
        stopped
    }

    /// Sends SIGINT, waits (bounded) for the exit, and collects the rest.
    pub fn stop(mut self) -> Stopped {
        if let Some(child) = self.child.as_ref() {
            // SAFETY: kill(2) on the pid of the child we spawned and have not
            // reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        }
        self.finish(STOP_TIMEOUT)
    }

    /// Waits (bounded) for the tracer to end by itself (`--duration`).
    pub fn wait_exit(mut self, timeout: Duration) -> Stopped {
        self.finish(timeout)
    }

    fn finish(&mut self, timeout: Duration) -> Stopped {
        let mut child = self.child.take().expect("running");
        let status = match wait_bounded(&mut child, timeout) {
            Some(s) => s,
            None => {
                kill_and_reap(&mut child);
                panic!(
                    "tracer did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
        };
        let ran_for = self.started.elapsed();
        // The pipes are closed now (unless a grandchild holds them: bound it).
        for h in [self.stdout_thread.take(), self.stderr_thread.take()]
            .into_iter()
            .flatten()
        {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        Stopped {
            status,
            lines: self.lines(),
            stderr: self.stderr_text(),
            ran_for,
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}

// ---------------------------------------------------------------------------
// Event filters

/// Events of one namespace (by inode).
pub fn in_netns(events: &[Value], netns: u64) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["netns"].as_u64() == Some(netns))
        .cloned()
        .collect()
}

/// Events of one kind.
pub fn of_kind(events: &[Value], kind: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["event"] == kind)
        .cloned()
        .collect()
}

/// Events of one kind in one namespace.
pub fn select(events: &[Value], netns: u64, kind: &str) -> Vec<Value> {
    of_kind(&in_netns(events, netns), kind)
}

/// Counts events of `kind` in `netns`.
pub fn count(events: &[Value], netns: u64, kind: &str) -> usize {
    events
        .iter()
        .filter(|e| e["netns"].as_u64() == Some(netns) && e["event"] == kind)
        .count()
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Held by a test for its whole run: the tests of one file that take it run
/// one after another (each loads the BPF programs, which on a loaded 2-core
/// host can take longer than the ready timeout when several do at once).
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Events of `kind` attributed to `pid`, in any namespace.
pub fn of_pid(events: &[Value], kind: &str, pid: u64) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["event"] == kind && e["pid"] == pid)
        .cloned()
        .collect()
}

/// The sum of the events' `count` fields (aggregated lines).
pub fn sum_count(events: &[Value]) -> u64 {
    events
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(0))
        .sum()
}

/// The resets RST lines stand for: each line's `count`, 1 when absent
/// (a line of its own).
pub fn resets(lines: &[Value]) -> u64 {
    lines.iter().map(|e| e["count"].as_u64().unwrap_or(1)).sum()
}

/// The whitespace-separated numbers of a line a test script printed.
pub fn numbers(line: &str) -> Vec<u64> {
    line.split_whitespace()
        .map(|f| f.parse().expect("number"))
        .collect()
}

/// One line per event, for assertion messages.
pub fn dump(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// Robustness helpers (robustness_*.rs): tracers started by a given command,
// a held stdout, and the BPF objects a process holds.

/// Keeps a tracer's stdout unread (its pipe fills, then the tracer blocks in
/// write) until `release` (read everything from then on) or `close` (drop
/// the read end, as `| head -1` does). Dropping it releases.
pub struct StdoutHold(mpsc::Sender<bool>);

impl StdoutHold {
    pub fn release(self) {
        let _ = self.0.send(true);
    }

    pub fn close(self) {
        let _ = self.0.send(false);
    }
}

impl Tracer {
    /// Like `start`, with the whole command given, e.g.
    /// `ip netns exec NAME tracer watch ...` (RUST_LOG=info is set here).
    pub fn start_cmd(cmd: Command) -> Tracer {
        Tracer::spawn_ready(cmd, None)
    }

    /// `start_cmd` with stdout held unread until the `StdoutHold` says.
    pub fn start_cmd_held(cmd: Command) -> (Tracer, StdoutHold) {
        let (tx, rx) = mpsc::channel();
        (Tracer::spawn_until(cmd, Some(rx), is_attached_line), StdoutHold(tx))
    }

    /// Sends `sig` to the tracer (the process `start*` spawned).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of the child we spawned and have not
        // reaped yet (`child` is taken only when it is reaped).
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    fn spawn_ready(cmd: Command, gate: Option<Receiver<bool>>) -> Tracer {
        Tracer::spawn_until(cmd, gate, is_ready_line)
    }

    fn spawn_until(
        mut cmd: Command,
        gate: Option<Receiver<bool>>,
        is_ready: fn(&str) -> bool,
    ) -> Tracer {
        let what = format!("{cmd:?}");
        let started = Instant::now();
        let mut child = cmd
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let stdout_thread = match gate {
            None => line_reader(out, stdout.clone()).1,
            Some(gate) => {
                let keep = stdout.clone();
                std::thread::spawn(move || {
                    // A dropped hold releases, so the tracer never stays
                    // blocked on a full pipe.
                    if gate.recv().unwrap_or(true) {
                        let (_, h) = line_reader(out, keep);
                        let _ = h.join();
                    } else {
                        drop(out);
                    }
                })
            }
        };
        let (err_rx, stderr_thread) = line_reader(child.stderr.take().unwrap(), stderr.clone());
        let mut t = Tracer {
            child: Some(child),
            stdout,
            stdout_thread: Some(stdout_thread),
            stderr,
            stderr_thread: Some(stderr_thread),
            started,
            ready_after: Duration::ZERO,
        };
        let deadline = started + scaled(READY_TIMEOUT);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match err_rx.recv_timeout(left) {
                Ok(line) if is_ready(&line) => break,
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = t
                        .child
                        .as_mut()
                        .and_then(|c| wait_bounded(c, Duration::from_secs(5)));
                    panic!(
                        "{what} ended before it was ready ({status:?}); stderr:\n{}",
                        t.stderr_text()
                    );
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{what}: not ready within {READY_TIMEOUT:?}; stderr:\n{}",
                    t.stderr_text()
                ),
            }
        }
        t.ready_after = started.elapsed();
        t
    }
}

/// Ids of the BPF programs, links and maps a process holds open (from
/// /proc/PID/fd and fdinfo).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BpfIds {
    pub progs: std::collections::BTreeSet<u64>,
    pub links: std::collections::BTreeSet<u64>,
    pub maps: std::collections::BTreeSet<u64>,
}

pub fn bpf_ids_of(pid: u32) -> BpfIds {
    let mut ids = BpfIds::default();
    let dir = format!("/proc/{pid}/fd");
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {dir}: {e}")) {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let (set, key) = match target.to_string_lossy().as_ref() {
            "anon_inode:bpf-prog" => (&mut ids.progs, "prog_id:"),
            "anon_inode:bpf_link" => (&mut ids.links, "link_id:"),
            "anon_inode:bpf-map" => (&mut ids.maps, "map_id:"),
            _ => continue,
        };
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(text) = std::fs::read_to_string(&info) else {
            continue;
        };
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
        {
            set.insert(id);
        }
    }
    ids
}

/// `bpftool KIND show --json` (KIND `prog`, `link` or `map`) as id -> object;
/// `None` when bpftool is not installed.
pub fn bpftool_objects(kind: &str) -> Option<std::collections::BTreeMap<u64, Value>> {
    let out = match Command::new("timeout")
        .args(["20", "bpftool", kind, "show", "--json"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("run timeout bpftool {kind} show: {e}"),
    };
    // timeout(1): 127 when the command is not found.
    if out.status.code() == Some(127) {
        return None;
    }
    assert!(
        out.status.success(),
        "bpftool {kind} show --json: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bpftool {kind} show --json is not a JSON list ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Some(
        list.into_iter()
            .map(|o| {
                let id = o["id"].as_u64().unwrap_or_else(|| panic!("no id in {o}"));
                (id, o)
            })
            .collect(),
    )
}

/// Runs `cmd` (stdin closed) to completion within `timeout`, collecting its
/// output; kills it and panics when it takes longer.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    fn read_all<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    }
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let out = read_all(child.stdout.take().unwrap());
    let err = read_all(child.stderr.take().unwrap());
    let status = match wait_bounded(&mut child, timeout) {
        Some(s) => s,
        None => {
            kill_and_reap(&mut child);
            panic!("{what}: still running after {timeout:?}");
        }
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Python for a test script that runs out of fds: `exhaust_fds(limit)`
/// lowers RLIMIT_NOFILE to `limit` and fills the fd table, returning the
/// files (delete them to have fds again). Prepend it with [`with_exhaust_fds`].
const PY_EXHAUST_FDS: &str = r#"
import resource
def exhaust_fds(limit):
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    fill = []
    try:
        while True:
            fill.append(open("/dev/null"))
    except OSError:
        pass
    return fill
"#;

/// `script` with `exhaust_fds` defined before it.
pub fn with_exhaust_fds(script: &str) -> String {
    format!("{PY_EXHAUST_FDS}{script}")
}

/// Prints its pid, makes argv[1] connects to 127.0.0.1:argv[2], then prints
/// how many were refused.
pub const REFUSED_CLIENT: &str = r#"
import os, socket, sys
print(os.getpid(), flush=True)
n, port = int(sys.argv[1]), int(sys.argv[2])
# Optional: bind the i-th socket to 127.0.0.1:(first + i).
first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
refused = 0
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if first:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", first + i))
    try:
        s.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        refused += 1
    finally:
        s.close()
print("refused", refused, flush=True)
"#;
