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

#[path = "../shared/ready.rs"]
mod ready;
pub use ready::{is_ready_line, wait_for_line};

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

mod bpf;
mod events;
mod netns;
mod process;
mod tracer;
// Each test binary uses a part of these.
#[allow(unused_imports)]
pub use {bpf::*, events::*, netns::*, process::*, tracer::*};

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
