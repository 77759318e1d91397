//! Needs root. `watch --output FILE`: events appended as whole JSON lines,
//! stdout left alone, and logrotate's dance (mv the file, SIGHUP) moves the
//! stream to a fresh file at the same path without losing or splitting a
//! line.
//!
//! Run: `cargo test -p tracer --test ecosystem_output` (as root).

mod common;
mod ecosystem_common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Netns, Tracer, require_root};
use ecosystem_common::{TRAFFIC, TempDir, done_fields, json_lines};

/// Resets of the rst_sent lines from `port` in `lines` (a storm line
/// stands for `count` of them).
fn resets_from(lines: &[Value], port: u64) -> usize {
    lines
        .iter()
        .filter(|e| e["event"] == "rst_sent" && e["local_port"] == port)
        .map(|e| e["count"].as_u64().unwrap_or(1) as usize)
        .sum()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until the file at `path` holds `n` resets from `port`.
fn wait_resets(path: &Path, port: u64, n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let text = read(path);
        // A read racing a write(2) may see part of it: only lines up to the
        // last newline count here (whole files are checked at the end).
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        if resets_from(&json_lines(whole, "output file"), port) >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn output_file_survives_logrotate() {
    if !require_root("output_file_survives_logrotate") {
        return;
    }
    let dir = TempDir::new("output");
    let path = dir.path().join("events.json");
    let rotated = dir.path().join("events.json.1");
    let ns = Netns::new();
    // Fixed ports, filtered on: a storm elsewhere cannot crowd them out.
    let tracer = Tracer::start(&[
        "watch",
        "--output",
        path.to_str().unwrap(),
        "--port",
        "7201",
        "--port",
        "7202",
        "--port",
        "7203",
    ]);
    let pid = tracer.pid() as i32;
    let mut traffic = ns.python("traffic", TRAFFIC, &[]);
    traffic.line();

    // First batch, into the file.
    traffic.send("abort 5 7201");
    let p1 = done_fields(&traffic.line())[0];
    assert!(wait_resets(&path, p1, 5), "{}", read(&path));

    // logrotate: mv; events keep going to the moved file until SIGHUP.
    std::fs::rename(&path, &rotated).unwrap();
    traffic.send("abort 300 7202");
    let p2 = done_fields(&traffic.line())[0];
    assert!(wait_resets(&rotated, p2, 300), "{}", read(&rotated));
    // SAFETY: kill(2) on the tracer we spawned, still running.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(path.exists(), "SIGHUP did not reopen {}", path.display());

    // Third batch, into the new file only.
    traffic.send("abort 4 7203");
    let p3 = done_fields(&traffic.line())[0];
    assert!(wait_resets(&path, p3, 4), "{}", read(&path));
    drop(traffic);
    let stopped = tracer.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped.lines.is_empty(),
        "stdout must stay empty with --output: {:?}",
        &stopped.lines[..stopped.lines.len().min(3)]
    );
    assert!(stopped.stderr.contains("reopened"), "{}", stopped.stderr);

    let old = json_lines(&read(&rotated), "rotated file");
    let new = json_lines(&read(&path), "new file");
    assert_eq!(resets_from(&old, p1), 5);
    assert_eq!(resets_from(&old, p2), 300);
    assert_eq!(
        resets_from(&old, p3),
        0,
        "after SIGHUP nothing goes to the old file"
    );
    assert_eq!(resets_from(&new, p1) + resets_from(&new, p2), 0);
    assert_eq!(resets_from(&new, p3), 4);
    for e in old.iter().chain(&new) {
        assert_eq!(e["v"], 1, "{e}");
    }
}

#[test]
fn output_appends_and_is_created_private() {
    if !require_root("output_appends_and_is_created_private") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("append");
    let path = dir.path().join("events.json");
    std::fs::write(&path, "{\"earlier\":1}\n").unwrap();
    let tracer = Tracer::start(&[
        "watch",
        "--output",
        path.to_str().unwrap(),
        "--duration",
        "1",
    ]);
    let stopped = tracer.wait_exit(Duration::from_secs(15));
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let text = read(&path);
    assert!(text.starts_with("{\"earlier\":1}\n"), "{text}");
    json_lines(&text, "appended file");

    let fresh = dir.path().join("fresh.json");
    let tracer = Tracer::start(&[
        "watch",
        "--output",
        fresh.to_str().unwrap(),
        "--duration",
        "1",
    ]);
    tracer.wait_exit(Duration::from_secs(15));
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o007, 0, "not world-accessible: {mode:o}");
}

#[test]
fn an_unwritable_output_fails_at_start_with_one_line() {
    // The file is opened before anything is attached: no root needed.
    let out = std::process::Command::new(common::tracer_bin())
        .args(["watch", "--output", "/nonexistent-dir/events.json"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("tracer: cannot open /nonexistent-dir/events.json for --output: "),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
