//! Needs root (to hand out capabilities). deploy/tracer.service runs tracer
//! as an unprivileged user with a short list of capabilities instead of
//! root. Here the real binary runs as uid 65534 (nobody) under `setpriv`
//! with exactly the unit's capabilities (ambient, inheritable and bounding
//! set), in a private mount namespace as systemd gives a service: it must
//! attribute resets (also of a connection older than itself, in another
//! network namespace), failed accepts and accept-queue drops. Then each
//! capability is taken away in turn and what it was for must stop working:
//! the list is the minimum.
//!
//! Run: `cargo test -p tracer --test ecosystem_caps` (as root).

mod common;
mod ecosystem_common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::{Netns, Proc, dump, in_netns, require_root};
use ecosystem_common::{Running, TRAFFIC, TempDir, done_fields, which};

const NOBODY: &str = "65534";
/// Fixed listener ports in the test namespace: tracer filters on them (and
/// the server's), so a storm elsewhere on the host cannot crowd them out.
const EMFILE_PORT: &str = "7001";
const OVERFLOW_PORT: &str = "7002";

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/tracer.service");

/// Accepts one connection, then on stdin "abort" resets it (SO_LINGER 0).
const SERVER: &str = r#"
import os, socket, struct, sys
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
print(os.getpid(), ls.getsockname()[1], flush=True)
c, _ = ls.accept()
print("accepted", flush=True)
sys.stdin.readline()
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()
print("closed", flush=True)
sys.stdin.read()
"#;

/// Connects to argv[1] and waits in recv() for the reset.
const CLIENT: &str = r#"
import os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print(os.getpid(), s.getsockname()[1], flush=True)
s.settimeout(30)
try:
    s.recv(1)
    print("eof", flush=True)
except ConnectionResetError:
    print("reset", flush=True)
sys.stdin.read()
"#;

/// The capabilities the unit grants (`AmbientCapabilities=`), lower case
/// without `cap_`, as setpriv wants them; checked against the bounding set.
fn unit_caps() -> Vec<String> {
    let text = std::fs::read_to_string(UNIT).expect("read deploy/tracer.service");
    let list = |key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(key))
            .flat_map(|v| v.split_whitespace())
            .map(|c| c.trim_start_matches("CAP_").to_lowercase())
            .collect()
    };
    let ambient = list("AmbientCapabilities=");
    assert!(!ambient.is_empty(), "no AmbientCapabilities= in the unit");
    assert_eq!(
        ambient,
        list("CapabilityBoundingSet="),
        "ambient and bounding sets differ"
    );
    ambient
}

/// The tracer binary copied where uid 65534 can surely run it.
fn binary(dir: &TempDir) -> PathBuf {
    let dst = dir.path().join("tracer");
    std::fs::copy(common::tracer_bin(), &dst).expect("copy the tracer binary");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dst
}

/// What one run under `caps` saw.
struct Outcome {
    started: Result<(), String>,
    server: u64,
    client: u64,
    emfile_port: u64,
    overflow_port: u64,
    /// Events of the test namespace.
    events: Vec<Value>,
    stderr: String,
}

impl Outcome {
    fn of(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }

    fn context(&self) -> String {
        format!("events:\n{}\nstderr:\n{}", dump(&self.events), self.stderr)
    }

    /// The reset the server sent, blamed on it.
    fn server_reset_attributed(&self) -> bool {
        self.of("rst_sent").iter().any(|e| e["pid"] == self.server)
    }

    /// The reset the (older than tracer) client received, blamed on it.
    fn client_reset_attributed(&self) -> bool {
        self.of("rst_received")
            .iter()
            .any(|e| e["pid"] == self.client)
    }

    fn accept_failures_seen(&self) -> bool {
        self.of("accept_failed")
            .iter()
            .any(|e| e["local_port"] == self.emfile_port && e["error"] == "EMFILE")
    }

    fn overflow_seen(&self) -> bool {
        self.of("listen_overflow")
            .iter()
            .any(|e| e["local_port"] == self.overflow_port && e["pid"].is_u64())
    }
}

/// A connection made before tracer starts, then tracer as nobody with
/// `caps`, then a reset on that connection, failed accepts and a full
/// accept queue, all in a private network namespace.
fn scenario(caps: &[String]) -> Outcome {
    let dir = TempDir::new(&format!("caps-{}", caps.join("-")));
    let bin = binary(&dir);
    let ns = Netns::new();
    let mut server = ns.python("server", SERVER, &[]);
    let (server_pid, port) = {
        let l = server.line();
        let mut f = l.split_whitespace().map(|x| x.parse::<u64>().unwrap());
        (f.next().unwrap(), f.next().unwrap())
    };
    let client = ns.python("client", CLIENT, &[&port.to_string()]);
    let client_pid: u64 = client
        .line()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    server.expect_line("accepted");

    let set = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "slave", "setpriv"])
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg("--")
        .arg(&bin)
        .args(["watch", "--format", "json", "--port", &port.to_string()])
        .args(["--port", EMFILE_PORT, "--port", OVERFLOW_PORT]);
    let mut out = Outcome {
        started: Ok(()),
        server: server_pid,
        client: client_pid,
        emfile_port: 0,
        overflow_port: 0,
        events: Vec::new(),
        stderr: String::new(),
    };
    let tracer = match Running::start(cmd) {
        Ok(t) => t,
        Err(stderr) => {
            out.started = Err(stderr.clone());
            out.stderr = stderr;
            return out;
        }
    };
    server.send("abort");
    server.expect_line("closed");
    client.expect_line("reset");
    let mut traffic: Proc = ns.python("traffic", TRAFFIC, &[]);
    traffic.line();
    traffic.send(&format!("emfile 5 {EMFILE_PORT}"));
    out.emfile_port = done_fields(&traffic.line())[0];
    traffic.send(&format!("overflow 1 6 {OVERFLOW_PORT}"));
    out.overflow_port = done_fields(&traffic.line())[0];
    // Everything a full run sees arrives within a few seconds (accept
    // failures after 1 s, listener polls every second).
    let netns = ns.inode();
    let o = (out.server, out.client, out.emfile_port, out.overflow_port);
    tracer.wait_for(Duration::from_secs(6), |ev| {
        let probe = Outcome {
            started: Ok(()),
            server: o.0,
            client: o.1,
            emfile_port: o.2,
            overflow_port: o.3,
            events: in_netns(ev, netns),
            stderr: String::new(),
        };
        probe.server_reset_attributed()
            && probe.client_reset_attributed()
            && probe.accept_failures_seen()
            && probe.overflow_seen()
    });
    out.events = in_netns(&tracer.events(), netns);
    out.stderr = tracer.stderr_text();
    let status = tracer.stop();
    assert!(
        status.success(),
        "tracer as nobody exited {status}; {}",
        out.context()
    );
    out
}

fn without(caps: &[String], drop: &[&str]) -> Vec<String> {
    caps.iter()
        .filter(|c| !drop.contains(&c.as_str()))
        .cloned()
        .collect()
}

fn tools_present(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    for tool in ["setpriv", "unshare"] {
        if which(tool).is_none() {
            eprintln!("{test}: skipped, `{tool}` (util-linux) not found");
            return false;
        }
    }
    true
}

#[test]
fn the_unit_is_well_formed() {
    let caps = unit_caps();
    for c in ["bpf", "perfmon"] {
        assert!(caps.contains(&c.to_string()), "{c} missing from {caps:?}");
    }
    let text = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing");
    }
    assert!(!text.lines().any(|l| l.starts_with("User=root")));
    // systemd's own check, when it is installed (the binary path must exist).
    if let Some(analyze) = which("systemd-analyze") {
        let dir = TempDir::new("unit");
        let unit = dir.path().join("tracer.service");
        let bin = common::tracer_bin();
        std::fs::write(
            &unit,
            text.replace("/usr/local/bin/tracer", bin.to_str().unwrap()),
        )
        .unwrap();
        let out = Command::new(analyze)
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "systemd-analyze verify: {err}");
        let complaints: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("tracer.service"))
            .collect();
        assert!(complaints.is_empty(), "{complaints:?}");
    }
}

#[test]
fn runs_as_nobody_with_only_the_units_capabilities() {
    if !tools_present("runs_as_nobody_with_only_the_units_capabilities") {
        return;
    }
    let out = scenario(&unit_caps());
    assert!(out.started.is_ok(), "did not start: {}", out.stderr);
    assert!(
        out.server_reset_attributed(),
        "rst_sent not blamed on the server; {}",
        out.context()
    );
    assert!(
        out.client_reset_attributed(),
        "rst_received not blamed on the older client; {}",
        out.context()
    );
    assert!(
        out.accept_failures_seen(),
        "no accept_failed; {}",
        out.context()
    );
    assert!(out.overflow_seen(), "no listen_overflow; {}", out.context());
}

#[test]
fn without_sys_admin_other_namespaces_are_not_polled() {
    if !tools_present("without_sys_admin_other_namespaces_are_not_polled") {
        return;
    }
    let out = scenario(&without(&unit_caps(), &["sys_admin"]));
    assert!(out.started.is_ok(), "{}", out.stderr);
    assert!(out.server_reset_attributed(), "{}", out.context());
    assert!(!out.overflow_seen(), "{}", out.context());
}

#[test]
fn without_sys_ptrace_older_sockets_have_no_owner() {
    if !tools_present("without_sys_ptrace_older_sockets_have_no_owner") {
        return;
    }
    let out = scenario(&without(&unit_caps(), &["sys_ptrace"]));
    assert!(out.started.is_ok(), "{}", out.stderr);
    assert!(out.server_reset_attributed(), "{}", out.context());
    assert!(!out.client_reset_attributed(), "{}", out.context());
}

#[test]
fn without_dac_read_search_failed_accepts_are_not_seen() {
    if !tools_present("without_dac_read_search_failed_accepts_are_not_seen") {
        return;
    }
    let out = scenario(&without(&unit_caps(), &["dac_read_search"]));
    assert!(out.started.is_ok(), "{}", out.stderr);
    assert!(out.server_reset_attributed(), "{}", out.context());
    assert!(!out.accept_failures_seen(), "{}", out.context());
}

#[test]
fn without_sys_admin_bpf_and_perfmon_are_each_needed() {
    if !tools_present("without_sys_admin_bpf_and_perfmon_are_each_needed") {
        return;
    }
    let base = without(&unit_caps(), &["sys_admin"]);
    for cap in ["bpf", "perfmon"] {
        let out = scenario(&without(&base, &[cap]));
        let Err(stderr) = &out.started else {
            panic!("started without {cap}; {}", out.context());
        };
        assert!(stderr.contains("tracer: "), "{cap}: {stderr}");
    }
}
