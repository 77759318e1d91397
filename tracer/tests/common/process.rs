//! Helper processes (mostly python3 scripts) inside a namespace.

use super::*;

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
