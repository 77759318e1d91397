//! A repeatable measure of what one JSON line costs during a refused-connect
//! storm (`watch --per-rst`): the records a closed port's storm makes go
//! through attribution, enrichment and the JSON sink, as the event loop's
//! `process` takes them, without the kernel. Ignored by default (it only
//! times): `valgrind --tool=callgrind` over
//! `cargo test --release --bin tracer per_rst_lines -- --ignored` counts its
//! instructions, far steadier than CPU ticks on a shared machine.

use std::io::{self, Write};

use tracer_common::socket_id::AF_INET;
use tracer_common::{
    RECORD_VERSION, RecordHeader, RstRecord, SockInfo, StateRecord, TaskInfo, kind, owner_source,
    sock_flags,
};

use crate::attribute::Attributor;
use crate::attribute::procs::ProcSource;
use crate::clock::Clock;
use crate::enrich::Enricher;
use crate::kernel::KernelNames;
use crate::output::{Format, sink};
use crate::snapshot::ProcessInfo;

const NETNS: u32 = 4_026_532_174;
const CLOSED_PORT: u16 = 9;
const LINES_PER_CONNECT: u64 = 2;

/// Every process is `xtask` in the root cgroup.
struct OneProc;

impl ProcSource for OneProc {
    fn process(&self, pid: u32) -> Option<ProcessInfo> {
        Some(ProcessInfo {
            pid,
            comm: b"xtask".to_vec(),
            cgroup: Some("/".into()),
            fd_count: 0,
            fd_limit: None,
        })
    }
}

/// Counts the bytes written (only: looking at them would be measured too).
#[derive(Default, Clone)]
struct Counter(std::rc::Rc<std::cell::Cell<u64>>);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.set(self.0.get() + buf.len() as u64);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn task(tgid: u32) -> TaskInfo {
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"xtask");
    TaskInfo {
        tgid,
        pid: tgid,
        cgroup_id: 1,
        comm,
        thread: comm,
    }
}

fn header(kind: u16, ts: u64) -> RecordHeader {
    RecordHeader {
        kind,
        version: RECORD_VERSION,
        len: 152,
        ts_boot_ns: ts,
    }
}

fn loopback(lport: u16, rport: u16, state: u8, flags: u8, ino: u64) -> SockInfo {
    let mut s = SockInfo {
        ino,
        netns: NETNS,
        family: AF_INET,
        lport,
        rport,
        state,
        flags,
        ..Default::default()
    };
    s.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    s.raddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    s
}

/// The two records of one refused connect from `port`: the closed port's
/// reset (no socket) and the client's (its SYN_SENT socket, locked by it).
fn refused_connect(port: u16, ts: u64, pid: u32) -> [(RstRecord, bool); 2] {
    let sent = RstRecord {
        header: header(kind::RST_SENT, ts),
        sock: loopback(CLOSED_PORT, port, 0, sock_flags::FROM_SKB, 0),
        current: task(pid),
        owner: TaskInfo::default(),
        reason: 1,
        owner_source: owner_source::NONE,
        _pad: [0; 3],
    };
    let received = RstRecord {
        header: header(kind::RST_RECEIVED, ts + 3_000),
        sock: loopback(
            port,
            CLOSED_PORT,
            2,
            sock_flags::HAS_SK | sock_flags::PEER_IS_SERVICE,
            8_000_000 + u64::from(port),
        ),
        current: task(pid),
        owner: task(pid),
        reason: 0,
        owner_source: owner_source::LOCKED_CURRENT,
        _pad: [0; 3],
    };
    [(sent, true), (received, false)]
}

#[test]
#[ignore = "a cost measure, run under callgrind"]
fn per_rst_lines() {
    let connects: u64 = std::env::var("LINE_COST_CONNECTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let pid = 15_157;
    let names = KernelNames::fallback();
    let enricher = Enricher {
        // 2026-12-08T01:44:46Z at boot time 0.
        clock: Clock::with_offset(1_796_694_286_000_000_000),
        names: &names,
        proc_source: &OneProc,
    };
    let mut attr = Attributor::default();
    // A listener that was on the port (the storm's resets are its).
    let listen = StateRecord {
        header: header(kind::STATE_CHANGE, 1),
        sock: loopback(CLOSED_PORT, 0, 10, sock_flags::HAS_SK, 7_000_000),
        current: task(pid),
        owner: task(pid),
        old_state: 7,
        new_state: 10,
        owner_source: owner_source::LOCKED_CURRENT,
        _pad: [0; 5],
    };
    attr.on_state(&listen, &OneProc);
    let counter = Counter::default();
    let mut out = sink(Format::Json, counter.clone());
    let mut ts = 1_000_000_000u64;
    let mut lines = 0u64;
    for i in 0..connects {
        let port = 32_768 + (i % 28_000) as u16;
        for (rec, sent) in refused_connect(port, ts, pid) {
            let e = enricher.rst(&mut attr, &rec, sent);
            out.event(&e).expect("in memory");
            lines += 1;
        }
        ts += 11_000;
        if i % 4096 == 4095 {
            out.flush().expect("in memory");
        }
    }
    out.flush().expect("in memory");
    assert_eq!(lines, connects * LINES_PER_CONNECT);
    // A real storm's lines of loopback resets are about 300 bytes long.
    let per_line = counter.0.get() as f64 / lines as f64;
    assert!(
        (250.0..350.0).contains(&per_line),
        "{per_line} bytes a line"
    );
    eprintln!("{lines} lines, {per_line:.1} bytes a line");
}
