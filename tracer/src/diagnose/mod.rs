//! `tracer diagnose`: a snapshot at start, a window of events, a snapshot at
//! the end, then one verdict: findings ordered most likely root cause first,
//! told as a person would tell them.

pub mod collect;
pub mod findings;
pub mod html;
pub mod model;
pub mod report;
pub mod sparkline;
pub mod stuck;
pub mod svg;
pub mod timeline;
pub mod upstream;
pub mod window;
pub mod words;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write as _;
use std::rc::Rc;

use anyhow::Context as _;

use crate::cli::DiagnoseArgs;
use crate::clock::Clock;
use crate::event::comm_string;
use crate::output;
use crate::session::{KernelFilter, Session, ring_bytes};
use crate::snapshot::{self, Snapshot, SnapshotOptions, TCP_CLOSE_WAIT};
use crate::watch::{Loop, Signals, UserFilter};
use collect::DiagnoseSink;
use findings::{HostView, ListenerView, ProcView};
use timeline::Timeline;
use tracer_common::socket_id::ConnKey;
use window::Window;

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
        storm_per_cpu: crate::storm::per_cpu_threshold(
            args.common.storm_threshold(),
            crate::storm::online_cpus(),
        ),
    };
    // An unwritable report path fails now, not after the window.
    let mut report_file = args
        .report
        .as_deref()
        .map(|path| {
            std::fs::File::create(path)
                .with_context(|| format!("cannot create the report file {}", path.display()))
        })
        .transpose()?;
    let mut session = Session::start(&kfilter, ring, &args.common.no_mechanism)?;
    let window = Rc::new(RefCell::new(Window::default()));
    let ufilter = UserFilter {
        pids: args.common.pid.clone(),
        ports: args.common.port.clone(),
        comm: args.common.comm.clone(),
    };
    let started = Clock::boot_now();
    let timeline = Rc::new(RefCell::new(Timeline::new(started)));
    let sink = DiagnoseSink {
        prev_exchanges: None,
        window: window.clone(),
        timeline: timeline.clone(),
    };
    let kernel = session.caps.release.clone();
    let mut lp = Loop::new(&mut session, Box::new(sink), ufilter, false)?;
    // The window starts now, with the hooks attached; the start-up
    // snapshot runs meanwhile and what happens during it waits for it.
    let start_conns = Rc::new(RefCell::new(None));
    {
        let (timeline, start_conns) = (timeline.clone(), start_conns.clone());
        lp.on_snapshot = Some(Box::new(move |s: &Snapshot| {
            collect::seed(&mut timeline.borrow_mut(), s);
            *start_conns.borrow_mut() = Some(upstream::outbound_counts(&stuck::conn_views(s)));
        }));
    }
    lp.poll_quiet_namespaces_too();
    lp.start_snapshot();
    let start = TrafficStart {
        at_ns: Clock::boot_now(),
        totals: lp.exchanges.as_ref().map(|x| x.read()).unwrap_or_default(),
        outbound: None,
    };
    log::info!("attached; observing for {window_s} s");
    lp.run(Some(window_s), &mut signals).await?;
    lp.session.detach_in_background();
    let start = TrafficStart {
        outbound: start_conns.borrow_mut().take(),
        ..start
    };
    let elapsed_s = (Clock::boot_now().saturating_sub(started)) as f64 / 1e9;
    let end = tokio::task::spawn_blocking(|| snapshot::take_snapshot(&SnapshotOptions::default()))
        .await
        .map_err(|e| anyhow::anyhow!("final snapshot task: {e}"))?
        .map_err(|e| {
            anyhow::anyhow!("final snapshot of the host's sockets: {e}; {}", e.advice())
        })?;
    log::debug!("final snapshot in");
    let w = window.borrow();
    let traffic = start.until(&TrafficStart {
        at_ns: Clock::boot_now(),
        totals: lp.exchanges.as_ref().map(|x| x.read()).unwrap_or_default(),
        outbound: None,
    });
    let host = full_host_view(&end, &traffic, &lp.attr, started, elapsed_s);
    let found = findings::scope(
        findings::findings(&w, &host),
        &args.common.pid,
        &args.common.port,
        &host,
    );
    let rep = report::Report::new(elapsed_s, &w.counters, found);
    let mut t = timeline.borrow_mut();
    t.finish((elapsed_s.round() as usize).max(1));
    log::debug!("verdict computed");
    report::print(&rep, format)?;
    if format == output::Format::Text {
        print_sparklines(&rep, &t)?;
    }
    if let (Some(file), Some(path)) = (report_file.as_mut(), args.report.as_deref()) {
        let meta = html::Meta {
            host: nix::sys::utsname::uname()
                .map(|u| u.nodename().to_string_lossy().into_owned())
                .unwrap_or_default(),
            kernel,
            version: env!("CARGO_PKG_VERSION"),
            command: command_line(),
            started: Clock::new().rfc3339(started),
        };
        let page = html::render(&rep, &t, &host, &meta);
        file.write_all(page.as_bytes())
            .and_then(|()| file.flush())
            .with_context(|| format!("writing the report file {}", path.display()))?;
        log::info!("report written to {}", path.display());
    }
    Ok(())
}

/// The timeline under the text verdict: one sparkline per series of each
/// blamed process, one block per second.
fn print_sparklines(r: &report::Report, t: &Timeline) -> anyhow::Result<()> {
    let mut text = String::new();
    for (pid, comm) in html::blamed(r) {
        let Some(p) = t.procs.get(&pid) else { continue };
        let lines = sparkline::lines(p);
        if lines.is_empty() {
            continue;
        }
        if text.is_empty() {
            let unit = if t.step_s == 1 {
                "second".to_string()
            } else {
                format!("{} s", t.step_s)
            };
            text.push_str(&format!("\nTimeline (one block per {unit}):\n"));
        }
        match comm {
            Some(c) => text.push_str(&format!("  pid {pid} ({c})\n")),
            None => text.push_str(&format!("  pid {pid}\n")),
        }
        for l in lines {
            text.push_str(&l);
            text.push('\n');
        }
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if output::is_closed_pipe(&e) => Ok(()),
        other => Ok(other?),
    }
}

/// How tracer was started, each argument shell-quoted where it needs it.
fn command_line() -> String {
    std::env::args_os()
        .map(|a| {
            let a = a.to_string_lossy().into_owned();
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The verdict for a window, given the end snapshot, limited to `--pid` and
/// `--port` (see `findings::scope`); shared by `diagnose` and
/// `watch --summary-every`.
#[allow(clippy::too_many_arguments)]
pub fn verdict_scoped(
    w: &Window,
    end: &Snapshot,
    traffic: &Traffic,
    attr: &crate::attribute::Attributor,
    started: u64,
    window_s: f64,
    pids: &[u32],
    ports: &[u16],
) -> report::Report {
    let host = full_host_view(end, traffic, attr, started, window_s);
    let found = findings::scope(findings::findings(w, &host), pids, ports, &host);
    report::Report::new(window_s, &w.counters, found)
}

/// What a window starts from beyond events: the kernel's exchange totals
/// and the outbound connections then.
#[derive(Default)]
pub struct TrafficStart {
    /// Boot-time ns the totals were read.
    pub at_ns: u64,
    pub totals: crate::exchange::Totals,
    pub outbound: Option<HashMap<findings::Endpoint, u64>>,
}

impl TrafficStart {
    pub fn new(snap: &Snapshot, x: Option<&crate::exchange::ExchangeMaps>) -> Self {
        TrafficStart {
            at_ns: Clock::boot_now(),
            totals: x.map(|x| x.read()).unwrap_or_default(),
            outbound: Some(upstream::outbound_counts(&stuck::conn_views(snap))),
        }
    }

    /// The window from this start to `end`.
    pub fn until(&self, end: &TrafficStart) -> Traffic {
        // What was open at the start lies partly before the window; what
        // is open at the end counts for its time so far.
        let mut open: HashMap<findings::Endpoint, f64> = HashMap::new();
        for (k, a) in &end.totals {
            let Some(ep) = upstream::endpoint(k) else {
                continue;
            };
            let before = self
                .totals
                .get(k)
                .filter(|b| b.count <= a.count)
                .map_or(0, |b| crate::exchange::open_ns(b, self.at_ns));
            *open.entry(ep).or_default() +=
                (crate::exchange::open_ns(a, end.at_ns) - before) as f64;
        }
        Traffic {
            exchanges: crate::exchange::delta(&self.totals, &end.totals),
            start_outbound: self.outbound.clone(),
            span_s: end.at_ns.saturating_sub(self.at_ns) as f64 / 1e9,
            open,
        }
    }
}

/// The window's exchanges, and the outbound connections at its start.
#[derive(Default)]
pub struct Traffic {
    pub exchanges: HashMap<tracer_common::exchange::ExchKey, crate::exchange::ExchStat>,
    pub start_outbound: Option<HashMap<findings::Endpoint, u64>>,
    /// Seconds between the two reads of the totals.
    pub span_s: f64,
    /// Per upstream endpoint, ns to add to the completed exchanges' time
    /// for the time with a request outstanding within the window: open at
    /// the end so far, minus the part before the window of those open at
    /// its start.
    pub open: HashMap<findings::Endpoint, f64>,
}

/// The host view of the end snapshot with the window's exchanges.
fn full_host_view(
    end: &Snapshot,
    traffic: &Traffic,
    attr: &crate::attribute::Attributor,
    started: u64,
    window_s: f64,
) -> HostView {
    let ages = close_wait_ages(attr);
    let mut host = host_view(end, &ages, started);
    host.exchanges = traffic.exchanges.clone();
    host.start_outbound = traffic.start_outbound.clone();
    host.open = traffic.open.clone();
    // Busy ratios are over the time the exchange totals cover.
    host.window_s = if traffic.span_s > 0.0 {
        traffic.span_s
    } else {
        window_s
    };
    host
}

/// Boot-time ns each CLOSE_WAIT socket tracer knows entered that state;
/// `None` for those already there when tracer started.
fn close_wait_ages(attr: &crate::attribute::Attributor) -> HashMap<ConnKey, Option<u64>> {
    attr.close_wait
        .iter()
        .map(|(k, cw)| (*k, cw.since_ns))
        .collect()
}

/// What the end snapshot shows. CLOSE_WAIT ages: exact for sockets seen
/// entering the state; for sockets already there at `started`, the time
/// since then is a lower bound (the process is marked); sockets tracer did
/// not track count but give no age.
fn host_view(snap: &Snapshot, entered: &HashMap<ConnKey, Option<u64>>, started: u64) -> HostView {
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
    host.conns = stuck::conn_views(snap);
    for s in snap.sockets.iter().filter(|s| s.state == TCP_CLOSE_WAIT) {
        let Some(pid) = snap.owner_of(s) else {
            continue;
        };
        let age = match entered.get(&s.conn_key()) {
            Some(Some(t)) => Some(now.saturating_sub(*t) as f64 / 1e9),
            Some(None) => {
                host.close_wait_at_least.insert(pid);
                Some(now.saturating_sub(started) as f64 / 1e9)
            }
            None => None,
        };
        let e = host.close_wait.entry(pid).or_insert((0, None));
        e.0 += 1;
        if let Some(age) = age {
            e.1 = Some(e.1.map_or(age, |o: f64| o.max(age)));
        }
    }
    host
}
