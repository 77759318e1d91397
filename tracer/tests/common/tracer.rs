//! The real `tracer` binary: started, waited for until ready, stopped, its JSON lines parsed.

use super::*;

// The tracer

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
        (
            Tracer::spawn_until(cmd, Some(rx), is_attached_line),
            StdoutHold(tx),
        )
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
        match wait_for_line(&err_rx, deadline, is_ready) {
            Ok(()) => {}
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
        t.ready_after = started.elapsed();
        t
    }
}
