//! `tracer diagnose`: a snapshot at start, a window of events, a snapshot at
//! the end, then one verdict: findings ordered most likely root cause first,
//! told as a person would tell them.

pub mod findings;
pub mod report;
pub mod window;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::attribute::keys::ConnKey;
use crate::cli::DiagnoseArgs;
use crate::clock::Clock;
use crate::event::comm_string;
use crate::output;
use crate::session::{KernelFilter, Session, ring_bytes};
use crate::snapshot::{self, Snapshot, SnapshotOptions, TCP_CLOSE_WAIT};
use crate::watch::{Loop, Signals, UserFilter, take_snapshot_blocking};
use findings::{HostView, ListenerView, ProcView};
use window::{Window, WindowSink};

/// Default observation window.
pub const DEFAULT_WINDOW_S: f64 = 30.0;

pub async fn run(args: DiagnoseArgs) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let format = args
        .common
        .format
        .unwrap_or_else(output::Format::default_for_stdout);
    let window_s = args.common.duration.unwrap_or(DEFAULT_WINDOW_S);
    let ring = ring_bytes(args.common.ring_buffer_kib)?;
    let kfilter = KernelFilter {
        ports: args.common.port.clone(),
        pids: args.common.pid.clone(),
        comm: args.common.comm.clone(),
        all_states: false,
    };
    let mut session = Session::start(&kfilter, ring)?;
    let window = Rc::new(RefCell::new(Window::default()));
    let ufilter = UserFilter {
        pids: args.common.pid.clone(),
        ports: args.common.port.clone(),
        comm: args.common.comm.clone(),
    };
    let started = Clock::boot_now();
    let mut lp = Loop::new(
        &mut session,
        Box::new(WindowSink(window.clone())),
        ufilter,
        false,
    )?;
    let snap = take_snapshot_blocking().await;
    lp.seed(snap);
    log::info!("attached; observing for {window_s} s");
    lp.run(Some(window_s), &mut signals).await?;
    let elapsed_s = (Clock::boot_now().saturating_sub(started)) as f64 / 1e9;
    let end = tokio::task::spawn_blocking(|| snapshot::take_snapshot(&SnapshotOptions::default()))
        .await
        .map_err(|e| anyhow::anyhow!("final snapshot task: {e}"))?
        .map_err(|e| anyhow::anyhow!("final snapshot: {e}"))?;
    let ages = close_wait_ages(&lp.attr, started);
    let host = host_view(&end, &ages, elapsed_s);
    let w = window.borrow();
    let found = findings::findings(&w, &host);
    let filtered: Vec<_> = found
        .into_iter()
        .filter(|f| {
            args.common.pid.is_empty() || f.pid.is_some_and(|p| args.common.pid.contains(&p))
        })
        .collect();
    let rep = report::Report::new(elapsed_s, &w.counters, filtered);
    report::print(&rep, format)
}

/// Boot-time ns each CLOSE_WAIT socket entered that state (None: before
/// tracer started, so at least since `started`).
/// The verdict for a window, given the end snapshot (shared by `diagnose`
/// and `watch --summary-every`).
pub fn verdict(
    w: &Window,
    end: &Snapshot,
    attr: &crate::attribute::Attributor,
    started: u64,
    window_s: f64,
) -> report::Report {
    let ages = close_wait_ages(attr, started);
    let host = host_view(end, &ages, window_s);
    report::Report::new(window_s, &w.counters, findings::findings(w, &host))
}

fn close_wait_ages(attr: &crate::attribute::Attributor, started: u64) -> HashMap<ConnKey, u64> {
    attr.close_wait
        .iter()
        .map(|(k, cw)| (*k, cw.since_ns.unwrap_or(started)))
        .collect()
}

fn host_view(snap: &Snapshot, entered: &HashMap<ConnKey, u64>, window_s: f64) -> HostView {
    let now = Clock::boot_now();
    let mut host = HostView::default();
    for (pid, p) in &snap.processes {
        host.processes.insert(
            *pid,
            ProcView {
                comm: comm_string(&p.comm),
                fd_count: p.fd_count,
                fd_limit: p.fd_limit,
            },
        );
    }
    for l in snap.listeners() {
        let pid = snap.owner_of(l);
        host.listeners.push(ListenerView {
            pid,
            comm: pid
                .and_then(|p| snap.processes.get(&p))
                .map(|p| comm_string(&p.comm)),
            netns: l.netns,
            port: l.local.port(),
            backlog: l.wqueue,
            queued: l.rqueue,
        });
    }
    for s in snap.sockets.iter().filter(|s| s.state == TCP_CLOSE_WAIT) {
        let Some(pid) = snap.owner_of(s) else {
            continue;
        };
        let key = ConnKey {
            netns: s.netns,
            local: (s.local.ip(), s.local.port()),
            remote: (s.remote.ip(), s.remote.port()),
        };
        // Unknown entry time: at least the whole window.
        let age = entered
            .get(&key)
            .map(|t| now.saturating_sub(*t) as f64 / 1e9)
            .unwrap_or(window_s);
        let e = host.close_wait.entry(pid).or_insert((0, None));
        e.0 += 1;
        e.1 = Some(e.1.map_or(age, |o: f64| o.max(age)));
    }
    host
}
