//! Needs root and Debian's chromium. `tracer diagnose --report FILE` on a
//! real incident: the starving server of tests/scenarios/starving_server.py
//! (64 fds, handlers stuck on an exhausted pool, tcp_abort_on_overflow=1)
//! is healthy when tracer starts; impatient clients then drive it to its fd
//! limit during the window. The report must reference no network resource,
//! render in headless Chromium, name the process and its port, chart one
//! point per second of the window, and not be a blank page.
//!
//! Run: `cargo test -p tracer --test report_html` (as root).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Netns, Proc, Tracer, require_root, run_bounded};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/scenarios/starving_server.py"
);
const PORT: u16 = 2134;
const FD_LIMIT: &str = "64";
const WINDOW_S: u64 = 8;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Headless Chromium on the file with `args` (its own profile dir).
fn headless(bin: &Path, profile: &Path, args: &[&str], file: &Path) -> std::process::Output {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(format!("file://{}", file.display()));
    run_bounded(cmd, Duration::from_secs(90))
}

/// Distinct RGB colours in an 8-bit RGB/RGBA PNG (filters undone): a blank
/// page has one.
fn png_colours(png: &[u8]) -> usize {
    let script = r#"
import struct, sys, zlib
d = open(sys.argv[1], "rb").read()
assert d[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
i, idat, w, h, ct = 8, b"", 0, 0, 0
while i < len(d):
    n, t = struct.unpack(">I4s", d[i:i+8])
    c = d[i+8:i+8+n]
    if t == b"IHDR":
        w, h, bd, ct = struct.unpack(">IIBB", c[:10])
        assert bd == 8 and ct in (2, 6), (bd, ct)
    elif t == b"IDAT":
        idat += c
    i += 12 + n
bpp = 3 if ct == 2 else 4
raw, stride = zlib.decompress(idat), w * bpp
prev, seen, o = bytearray(stride), set(), 0
for _ in range(h):
    f, line = raw[o], bytearray(raw[o+1:o+1+stride]); o += 1 + stride
    for x in range(stride):
        a = line[x-bpp] if x >= bpp else 0
        b, c = prev[x], prev[x-bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p-a), abs(p-b), abs(p-c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp * 7):
        seen.add(bytes(line[x:x+3]))
    prev = line
print(len(seen))
"#;
    let dir = std::env::temp_dir().join(format!("tracer-png-{}", std::process::id()));
    std::fs::write(&dir, png).expect("write png copy");
    let out = run_bounded(
        {
            let mut c = Command::new("python3");
            c.arg("-c").arg(script).arg(&dir);
            c
        },
        Duration::from_secs(60),
    );
    let _ = std::fs::remove_file(&dir);
    assert!(
        out.status.success(),
        "png check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("colour count")
}

#[test]
fn diagnose_report_renders_the_incident() {
    if !require_root("diagnose_report_renders_the_incident") {
        return;
    }
    let Some(chrome) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing: `cargo xtask setup` installs it"
        );
        eprintln!("SKIPPED diagnose_report_renders_the_incident: no chromium; not a pass");
        return;
    };
    let dir = TempDir(std::env::temp_dir().join(format!("tracer-report-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let report = dir.0.join("incident.html");
    let ns = Netns::new();
    ns.stdout("sysctl", &["-qw", "net.ipv4.tcp_abort_on_overflow=1"]);
    let ready = dir.0.join("ready");
    let ready_s = ready.to_str().expect("utf-8 path");
    let server = Proc::spawn(
        "starving server",
        ns.command(
            "python3",
            &[SCRIPT, "server", &PORT.to_string(), FD_LIMIT, ready_s],
        ),
    );
    let pid = server.pid_from_file(&ready, Duration::from_secs(10));

    let window = WINDOW_S.to_string();
    let report_s = report.to_str().expect("utf-8 path");
    let diag = Tracer::start(&[
        "diagnose",
        "--format",
        "text",
        "--duration",
        &window,
        "--port",
        &PORT.to_string(),
        "--report",
        report_s,
    ]);
    // The incident starts after tracer: fds climb to the limit in the window.
    let mut clients = Proc::spawn(
        "clients",
        ns.command(
            "python3",
            &[SCRIPT, "clients", &PORT.to_string(), "150", "0.05"],
        ),
    );
    clients.close_stdin();
    let status = clients.wait(Duration::from_secs(60));
    assert!(status.success(), "clients: {status}; {}", clients.stderr());
    let stopped = diag.wait_exit(Duration::from_secs(WINDOW_S + 30));
    assert!(
        stopped.status.success(),
        "diagnose: {:?}\n{}",
        stopped.status,
        stopped.stderr
    );
    let text = stopped.lines.join("\n");
    eprintln!("{text}");
    assert!(text.contains(&format!("pid {pid}")), "text verdict: {text}");
    assert!(text.contains("Timeline (one block per second):"), "{text}");
    assert!(text.contains("    fds "), "a sparkline of fds: {text}");

    let page = std::fs::read_to_string(&report).expect("the report file");
    for banned in [
        "http://", "https://", "<script", "src=", "@import", "url(", "<link",
    ] {
        assert!(!page.contains(banned), "the report references {banned}");
    }
    let profile = dir.0.join("chromium");
    let dom = headless(&chrome, &profile, &["--dump-dom"], &report);
    assert!(
        dom.status.success(),
        "chromium --dump-dom: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        dom.contains(&format!("data-pid=\"{pid}\"")),
        "the server's timeline in the DOM"
    );
    assert!(
        dom.contains(&format!("pid {pid} (python3)")),
        "the process by name"
    );
    assert!(dom.contains(&format!(":{PORT}")), "its port");
    let points: Vec<u64> = dom
        .match_indices("data-points=\"")
        .filter_map(|(i, m)| {
            let rest = &dom[i + m.len()..];
            rest[..rest.find('"')?].parse().ok()
        })
        .collect();
    assert!(points.len() >= 6, "charts in the DOM: {points:?}");
    assert!(
        points.iter().all(|p| *p == WINDOW_S),
        "one point per second of the {WINDOW_S} s window: {points:?}"
    );

    let png = dir.0.join("shot.png");
    let shot = headless(
        &chrome,
        &profile,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1000,1400",
        ],
        &report,
    );
    assert!(
        shot.status.success(),
        "chromium --screenshot: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).expect("screenshot");
    let colours = png_colours(&bytes);
    assert!(colours > 20, "a blank page: {colours} colours");
    if let Some(keep) = std::env::var_os("TRACER_KEEP_REPORT") {
        let keep = PathBuf::from(keep);
        let _ = std::fs::copy(&report, keep.join("incident-report.html"));
        let _ = std::fs::copy(&png, keep.join("incident-report.png"));
    }
    drop(server);
}
