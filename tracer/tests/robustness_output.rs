//! Needs root. Issue 6, the output half: process names with any bytes stay
//! one valid JSON line per event, and a ring buffer that overflows says so:
//! `lost` lines account for every record the kernel could not hand over.
//!
//! Run: `cargo test -p tracer --test robustness_output` (as root).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Netns, Proc, Tracer, dump, require_root, select, tracer_bin};
use serde_json::Value;

/// The kernel keeps this many bytes of a task name (TASK_COMM_LEN - 1).
const COMM_MAX: usize = 15;

/// Every line must be one JSON object with an `event`; returns them.
fn parse_all(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stdout line {i} is not JSON ({e}): {l:?}"));
            assert!(v["event"].is_string(), "line {i} has no event: {l}");
            v
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Hostile process names

/// Sets its name to the bytes hex-encoded in argv[1] (prctl PR_SET_NAME),
/// then, argv[2] times, connects to its own listener, accepts, and aborts
/// the client (SO_LINGER 0): one RST sent by the client, one received by the
/// accepted socket. Prints its pid, the listener port, the name the kernel
/// kept (hex) and the client ports, then waits for a line on stdin.
const ABORTER: &str = r#"
import ctypes, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
name, n = bytes.fromhex(sys.argv[1]), int(sys.argv[2])
if libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0) != 0:  # PR_SET_NAME
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")
with open("/proc/self/comm", "rb") as f:
    kept = f.read()[:-1]
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(n + 1)
port = ls.getsockname()[1]
ports = []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = ls.accept()
    ports.append(c.getsockname()[1])
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    a.close()
print(os.getpid(), port, kept.hex(), *ports, flush=True)
sys.stdin.readline()
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

struct Aborter {
    /// Kept alive (waiting on stdin) until the test ends.
    _proc: Proc,
    pid: u64,
    listen_port: u64,
    client_ports: Vec<u64>,
    want_comm: String,
}

/// A text line starts with the event's clock, `HH:MM:SS.mmm `.
fn starts_with_clock(l: &str) -> bool {
    let b = l.as_bytes();
    b.len() > 13
        && [2, 5].iter().all(|&i| b[i] == b':')
        && b[8] == b'.'
        && b[12] == b' '
        && [0, 1, 3, 4, 6, 7, 9, 10, 11]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
}

#[test]
fn hostile_process_names_stay_one_valid_line_per_event() {
    let test = "hostile_process_names_stay_one_valid_line_per_event";
    if !require_root(test) {
        return;
    }
    const ABORTS: usize = 10;
    let names: [&[u8]; 3] = [
        b"a\"b\\c\nd\xff",
        b"a\"b\\c\n\td\xff\xfe",
        // 6 + 20 bytes: the kernel keeps 15, cutting the fifth 'é' in half.
        "q\"\\\n\t\u{1}éééééééééé".as_bytes(),
    ];
    let ns = Netns::new();
    let netns = ns.inode();
    let json = Tracer::watch_json(&[]);
    let text = Tracer::start(&["watch", "--format", "text"]);

    let procs: Vec<Aborter> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let proc = ns.python(
                &format!("aborter {i}"),
                ABORTER,
                &[&hex(name), &ABORTS.to_string()],
            );
            let line = proc.line();
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 3 + ABORTS, "aborter {i}: {line}");
            let kept = &name[..name.len().min(COMM_MAX)];
            assert_eq!(
                unhex(f[2]),
                kept,
                "aborter {i}: the kernel kept another name than expected"
            );
            Aborter {
                pid: f[0].parse().unwrap(),
                listen_port: f[1].parse().unwrap(),
                client_ports: f[3..].iter().map(|p| p.parse().unwrap()).collect(),
                want_comm: String::from_utf8_lossy(kept).into_owned(),
                _proc: proc,
            }
        })
        .collect();
    assert_eq!(procs[0].want_comm, "a\"b\\c\nd\u{FFFD}");
    assert_eq!(procs[1].want_comm, "a\"b\\c\n\td\u{FFFD}\u{FFFD}");
    assert_eq!(procs[2].want_comm, "q\"\\\n\t\u{1}éééé\u{FFFD}");

    let want = names.len() * ABORTS;
    let complete = json.wait_for(Duration::from_secs(10), |ev| {
        select(ev, netns, "rst_sent").len() >= want
            && select(ev, netns, "rst_received").len() >= want
    });
    // Text lines carry no netns: ours are those with our pid and listener.
    let text_rsts = |lines: &[String], p: &Aborter| -> Vec<String> {
        let to_listener = format!(" -> 127.0.0.1:{} ", p.listen_port);
        let who = format!(" pid {} (", p.pid);
        lines
            .iter()
            .filter(|l| l.contains("RST sent") && l.contains(&to_listener) && l.contains(&who))
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while procs
        .iter()
        .any(|p| text_rsts(&text.lines(), p).len() < ABORTS)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let json = json.stop();
    let text = text.stop();
    for (what, s) in [("json", &json), ("text", &text)] {
        assert!(
            s.status.success(),
            "{what} tracer exit {:?}: {}",
            s.status,
            s.stderr
        );
    }
    let events = parse_all(&json.lines);
    let sent = select(&events, netns, "rst_sent");
    let received = select(&events, netns, "rst_received");
    eprintln!(
        "{test}: {} lines; in netns {netns}: {} rst_sent, {} rst_received; complete in time: {complete}",
        json.lines.len(),
        sent.len(),
        received.len()
    );
    for p in &procs {
        // Listener ports are unique (all listen at once); client ports
        // are not (an aborted connection leaves no TIME_WAIT behind).
        let mine =
            |e: &&Value| e["local_port"] == p.listen_port || e["remote_port"] == p.listen_port;
        let p_sent: Vec<&Value> = sent.iter().filter(mine).collect();
        let p_recv: Vec<&Value> = received.iter().filter(mine).collect();
        // One line per RST: a name cannot split or merge lines.
        assert_eq!(
            p_sent.len(),
            ABORTS,
            "pid {}: rst_sent:\n{}",
            p.pid,
            dump(&sent)
        );
        assert_eq!(
            p_recv.len(),
            ABORTS,
            "pid {}: rst_received:\n{}",
            p.pid,
            dump(&received)
        );
        for e in p_sent.iter().chain(&p_recv) {
            assert_eq!(e["pid"], p.pid, "{e}");
            assert_eq!(e["comm"].as_str(), Some(p.want_comm.as_str()), "{e}");
        }
        let mut ports: Vec<u64> = p_sent
            .iter()
            .map(|e| e["local_port"].as_u64().unwrap())
            .collect();
        ports.sort_unstable();
        let mut want_ports = p.client_ports.clone();
        want_ports.sort_unstable();
        assert_eq!(ports, want_ports, "pid {}: client ports of rst_sent", p.pid);
    }

    // Text: every line is whole (starts with its clock) and holds no
    // control character; one RST sent line per abort.
    for l in &text.lines {
        assert!(starts_with_clock(l), "text line split: {l:?}");
        assert!(!l.chars().any(char::is_control), "control char in {l:?}");
    }
    for p in &procs {
        let lines = text_rsts(&text.lines, p);
        assert_eq!(lines.len(), ABORTS, "pid {} text lines: {lines:#?}", p.pid);
        for c in &p.client_ports {
            let needle = format!(" 127.0.0.1:{c} -> ");
            let n = lines.iter().filter(|l| l.contains(&needle)).count();
            let want = p.client_ports.iter().filter(|x| *x == c).count();
            assert_eq!(n, want, "text lines for{needle}: {lines:#?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Ring buffer pressure

/// argv[1] connects to 127.0.0.1:9 (closed) as fast as possible; prints
/// how many were refused.
const STORM: &str = r#"
import socket, sys
n = int(sys.argv[1])
refused = 0
for _ in range(n):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", 9))
    except ConnectionRefusedError:
        refused += 1
    s.close()
print("refused", refused, flush=True)
"#;

fn lost_total(events: &[Value]) -> u64 {
    events
        .iter()
        .filter(|e| e["event"] == "lost")
        .map(|e| e["count"].as_u64().expect("lost.count"))
        .sum()
}

/// A 4 KiB ring buffer and a reader that does not read while 3000 refused
/// connects each make 4 records (two state changes, the RST sent and the
/// RST received): the tracer blocks on the full stdout pipe (64 KiB pipe +
/// its 64 KiB buffer hold a few hundred lines), the ring overflows, and the
/// loss is reported, to the record: rst_sent events + lost >= RSTs the
/// namespace sent (`lost` counts records of every kind and namespace,
/// hence >=).
#[test]
fn ring_buffer_overflow_is_reported_not_silent() {
    let test = "ring_buffer_overflow_is_reported_not_silent";
    if !require_root(test) {
        return;
    }
    const CONNECTS: u64 = 3000;
    let ns = Netns::new();
    let netns = ns.inode();
    let mut cmd = Command::new(tracer_bin());
    cmd.args([
        "watch",
        "--format",
        "json",
        "--ring-buffer-kib",
        "4",
        "--states",
        // One record per RST, so the storm overflows the ring.
        "--per-rst",
    ]);
    let (tracer, hold) = Tracer::start_cmd_held(cmd);

    let before = ns.tcp_out_rsts();
    let started = Instant::now();
    let storm = ns.python("storm", STORM, &[&CONNECTS.to_string()]);
    storm.expect_line(&format!("refused {CONNECTS}"));
    let storm_took = started.elapsed();
    let delta = ns.tcp_out_rsts() - before;
    // Blocked writing to the pipe nobody reads (wchan, when the kernel
    // shows it): informational.
    let wchan =
        std::fs::read_to_string(format!("/proc/{}/wchan", tracer.pid())).unwrap_or_default();
    std::thread::sleep(Duration::from_millis(500));
    hold.release();

    let settled = tracer.wait_for(Duration::from_secs(15), |ev| {
        lost_total(ev) > 0 && select(ev, netns, "rst_sent").len() as u64 + lost_total(ev) >= delta
    });
    let stopped = tracer.stop();
    assert!(
        stopped.status.success(),
        "tracer exit {:?}: {}",
        stopped.status,
        stopped.stderr
    );
    let events = parse_all(&stopped.lines);
    let sent = select(&events, netns, "rst_sent");
    let received = select(&events, netns, "rst_received");
    let states = select(&events, netns, "state_change");
    let lost: Vec<&Value> = events.iter().filter(|e| e["event"] == "lost").collect();
    let lost_sum = lost_total(&events);
    eprintln!(
        "{test}: storm of {CONNECTS} took {storm_took:?}; OutRsts +{delta}; tracer wchan {wchan:?}; \
         {} lines: {} rst_sent + {} rst_received + {} state_change in netns, \
         {} lost lines totalling {lost_sum}; settled in time: {settled}",
        stopped.lines.len(),
        sent.len(),
        received.len(),
        states.len(),
        lost.len()
    );

    assert_eq!(delta, CONNECTS, "Tcp OutRsts delta");
    for e in &lost {
        assert_eq!(e["v"], 1, "{e}");
        assert!(e["count"].as_u64().is_some_and(|c| c > 0), "{e}");
        assert!(e["ts"].is_string(), "{e}");
    }
    for e in &sent {
        assert_eq!(e["reason"], "NO_SOCKET", "{e}");
        assert_eq!(e["local_port"], 9, "{e}");
    }
    // Data was lost, and said so.
    assert!(
        lost_sum > 0,
        "no lost line, {} rst_sent of {delta}",
        sent.len()
    );
    assert!(
        (sent.len() as u64) < delta,
        "nothing lost in the netns ({} rst_sent of {delta}): the test did not overflow",
        sent.len()
    );
    // Nothing lost silently: every RST is either a line or counted as lost
    // (lost counts every kind of record in every namespace, hence >=).
    assert!(
        sent.len() as u64 + lost_sum >= delta,
        "{} rst_sent + {lost_sum} lost < {delta} RSTs sent: records vanished silently",
        sent.len()
    );
    // Tighter, over every record of the storm: a refused connect is 4
    // records (CLOSE->SYN_SENT, the RST sent, the RST received,
    // SYN_SENT->CLOSE), each a line or counted in `lost`.
    let lines_in_ns = (sent.len() + received.len() + states.len()) as u64;
    assert!(
        lines_in_ns + lost_sum >= 4 * delta,
        "{lines_in_ns} lines in the netns + {lost_sum} lost < {} records: some vanished silently",
        4 * delta
    );
    // A record read but not printed would be lost without a `lost` line.
    assert!(
        !stopped.stderr.contains("malformed"),
        "records dropped after decoding: {}",
        stopped.stderr
    );
}
