//! Helpers shared by the `ecosystem_*` tests (metrics, file output,
//! containers, schema, capabilities): a tracer started from any command
//! (e.g. under `setpriv`), a traffic generator, a scraper.
//!
//! Every wait is bounded and every guard cleans up in `Drop`.
//!
//! It uses `common` (the helpers of the root tests) for what both share:
//! every test that declares `mod ecosystem_common;` declares `mod common;`
//! too, so each shared file is compiled once per test.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{is_ready_line, time_scale, wait_for_line};

/// How long a tracer may take to attach (times [`time_scale`]).
pub const READY: Duration = Duration::from_secs(20);

/// A traffic generator driven line by line on stdin. Prints its pid first,
/// then answers each command with one line. PORT, when given, is the
/// listener's port (fixed ports let a test filter with `--port`, so a storm
/// elsewhere on the host cannot crowd its events out); else any free port.
///   abort N [PORT]       N connections the server resets (SO_LINGER 0):
///                        N rst_sent from PORT -> "done PORT"
///   closed N [PORT]      N connects to a closed port (NO_SOCKET resets)
///                        -> "done PORT"
///   close_wait N [PORT]  N accepted connections whose clients close: N
///                        server sockets held in CLOSE_WAIT -> "done PORT"
///   overflow B N [PORT]  a listener with backlog B that never accepts, N
///                        non-blocking connects -> "done PORT"
///   emfile N [PORT]      RLIMIT_NOFILE lowered to what is open now, N
///                        accept() calls failing with EMFILE
///                        -> "done PORT FAILED"
///   limit N              RLIMIT_NOFILE soft limit set to N -> "done 0"
/// Listeners are closed by the next command using the same port.
pub const TRAFFIC: &str = r#"
import os, resource, socket, struct, sys
print(os.getpid(), flush=True)
keep = []
held = {}
def listener(backlog, args, i):
    port = int(args[i]) if len(args) > i else 0
    if port in held:
        held.pop(port).close()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port)); ls.listen(backlog)
    port = ls.getsockname()[1]
    held[port] = ls
    return ls, port
for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "abort":
        n = int(cmd[1]); ls, port = listener(n, cmd, 2); cs = []
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port)); a, _ = ls.accept()
            a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            a.close(); cs.append(c)
        for c in cs:
            c.close()
        print("done", port, flush=True)
    elif cmd[0] == "closed":
        ls, port = listener(1, cmd, 2); held.pop(port).close()
        for _ in range(int(cmd[1])):
            c = socket.socket()
            try:
                c.connect(("127.0.0.1", port))
            except ConnectionRefusedError:
                pass
            c.close()
        print("done", port, flush=True)
    elif cmd[0] == "close_wait":
        n = int(cmd[1]); ls, port = listener(n, cmd, 2)
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port)); a, _ = ls.accept()
            keep.append(a); c.close()
        print("done", port, flush=True)
    elif cmd[0] == "overflow":
        ls, port = listener(int(cmd[1]), cmd, 3)
        for _ in range(int(cmd[2])):
            c = socket.socket(); c.setblocking(False)
            try:
                c.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            keep.append(c)
        print("done", port, flush=True)
    elif cmd[0] == "emfile":
        ls, port = listener(16, cmd, 2)
        keep.append(socket.create_connection(("127.0.0.1", port)))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        fill = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")), hard))
        try:
            while True:
                fill.append(open("/dev/null"))
        except OSError:
            pass
        failed = 0
        for _ in range(int(cmd[1])):
            try:
                ls.accept()
            except OSError as e:
                failed += e.errno == 24
        for f in fill:
            f.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        print("done", port, failed, flush=True)
    elif cmd[0] == "limit":
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(cmd[1]), hard))
        print("done 0", flush=True)
    else:
        sys.exit("unknown command %r" % cmd)
"#;

/// The fields of a "done ..." answer after the word.
pub fn done_fields(line: &str) -> Vec<u64> {
    let mut it = line.split_whitespace();
    assert_eq!(it.next(), Some("done"), "unexpected answer {line:?}");
    it.map(|f| f.parse().expect("number")).collect()
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("tracer-eco-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One HTTP/1.1 GET, bounded: (status, head, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .unwrap_or_else(|e| panic!("read from {addr}: {e}"));
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_string(), body.to_string())
}

/// The program on PATH, if any.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Lines of a file parsed as JSON; panics on a line that is not whole.
pub fn json_lines(text: &str, what: &str) -> Vec<Value> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{what} ends in a partial line: {:?}",
        &text[text.len().saturating_sub(200)..]
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: not a JSON line ({e}): {l}"))
        })
        .collect()
}

/// A tracer started from an arbitrary command (e.g. under `setpriv`), its
/// stdout and stderr collected; killed on drop.
pub struct Running {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect<R: Read + Send + 'static>(
    r: R,
    keep: Arc<Mutex<Vec<String>>>,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            keep.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    rx
}

impl Running {
    /// Spawns `cmd` (RUST_LOG=info) and waits for its ready line (`watch`:
    /// the start-up snapshot is in; `diagnose`: the window began).
    /// Returns Err(stderr) when it exits first.
    pub fn start(mut cmd: Command) -> Result<Running, String> {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), stdout.clone());
        let err_rx = collect(child.stderr.take().unwrap(), stderr.clone());
        let mut r = Running {
            child: Some(child),
            stdout,
            stderr,
        };
        let deadline = Instant::now() + READY * time_scale();
        match wait_for_line(&err_rx, deadline, is_ready_line) {
            Ok(()) => Ok(r),
            Err(RecvTimeoutError::Disconnected) => {
                let _ = r.wait(Duration::from_secs(5));
                Err(r.stderr_text())
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "tracer not ready within {READY:?}; stderr:\n{}",
                    r.stderr_text()
                )
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Polls the events until `done` holds or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
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

    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, then a bounded wait; the exit status.
    pub fn stop(mut self) -> ExitStatus {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        }
        let status = self.wait(Duration::from_secs(10));
        status.unwrap_or_else(|| panic!("tracer ignored SIGINT; stderr:\n{}", self.stderr_text()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}
