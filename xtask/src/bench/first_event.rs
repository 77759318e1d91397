//! The big host's exec → first event: `tracer watch` started while a
//! closed-port connect happens every 5 ms (`bench pace`), timed to its
//! `hooks:` line, to its first rst line, and to that line's own `ts`.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, anyhow, bail};

use super::Bench;
use super::sandbox::{self, Guarded};

/// `tracer watch` started while a closed-port connect happens every 5 ms:
/// (exec to attached, exec to its first rst line, exec to that line's
/// `ts`: when the kernel side saw the reset).
pub fn measure(bench: &Bench) -> Result<(f64, f64, f64)> {
    let mut pacer_cmd = bench.ns.exec(&bench.generator)?;
    pacer_cmd
        .args(["bench", "pace", "--every-ms", "5", "--count", "2000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let _pacer = Guarded::spawn(&mut pacer_cmd)?;
    std::thread::sleep(Duration::from_millis(100));
    let mut cmd = Command::new(&bench.paths.tracer);
    cmd.args(["watch", "--format", "json"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let t_wall = SystemTime::now();
    let mut proc = Guarded::spawn(&mut cmd)?;
    let stdout = proc
        .child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout"))?;
    let stderr = proc
        .child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("no stderr"))?;
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if line.contains("\"event\":\"rst_") {
                let at = Instant::now();
                let seen = line_ts(&line);
                let _ = tx.send(("event", at, seen));
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if line.contains("hooks: ") {
                let _ = tx2.send(("attached", Instant::now(), None));
            }
        }
    });
    let (mut attach, mut first, mut seen) = (None, None, None);
    while attach.is_none() || first.is_none() {
        sandbox::check_interrupted()?;
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(("attached", at, _)) => attach = Some(at.duration_since(t).as_secs_f64()),
            Ok((_, at, ts)) => {
                first = Some(at.duration_since(t).as_secs_f64());
                seen = ts.and_then(|ts| ts.duration_since(t_wall).ok());
            }
            Err(_) => bail!("tracer watch printed no event within 60 s"),
        }
    }
    proc.signal(libc::SIGINT)?;
    proc.expect_success(Duration::from_secs(20))?;
    let seen = seen.ok_or_else(|| anyhow!("tracer's first rst line has no usable ts"))?;
    Ok((
        attach.unwrap_or_default(),
        first.unwrap_or_default(),
        seen.as_secs_f64(),
    ))
}

/// The `ts` of a JSON line (RFC 3339, UTC).
fn line_ts(line: &str) -> Option<SystemTime> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    humantime::parse_rfc3339(v["ts"].as_str()?).ok()
}
