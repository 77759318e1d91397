//! The verdict engine of `tracer diagnose` and `watch --summary-every`: a
//! window of events and the host at its end -> findings ordered most likely
//! root cause first -> a `report::Report`. It runs no event loop and prints
//! nothing: the command (`diagnose_cmd`) drives the loop, `output` prints.

pub mod collect;
pub mod findings;
pub mod gauges;
pub mod html;
pub mod model;
pub mod sparkline;
pub mod stuck;
pub mod svg;
pub mod timeline;
pub mod upstream;
pub mod window;
pub mod words;

use std::collections::HashMap;

use crate::clock::Clock;
use crate::event::comm_string;
use crate::report::Report;
use crate::snapshot::{Snapshot, TCP_CLOSE_WAIT};
use findings::{HostView, ListenerView, ProcView};
use tracer_common::socket_id::ConnKey;
use window::Window;

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
) -> Report {
    let host = full_host_view(end, traffic, attr, started, window_s);
    let found = findings::scope(findings::findings(w, &host), pids, ports, &host);
    Report::new(window_s, &w.counters, found)
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
pub fn full_host_view(
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
