//! What `diagnose` gathers during its window: the events (the verdict's
//! [`Window`]) and the per-second [`Timeline`] of the processes involved.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;

use super::gauges::{self, Sampler};
use super::timeline::{Gauge, Timeline};
use super::window::Window;
use crate::attribute::procs::LiveProc;
use crate::clock::Clock;
use crate::event::{Event, comm_string};
use crate::exchange::{Totals, busy_between, delta, sockets};
use crate::sink::{Second, Sink};
use crate::snapshot::{Snapshot, TCP_CLOSE_WAIT};
use tracer_common::exchange::DIR_UPSTREAM;

/// At start, a process is charted when it holds at least this share of its
/// fd limit (percent), or sockets in CLOSE_WAIT; later, when an event or a
/// CLOSE_WAIT socket names it.
pub const SEED_FD_PERCENT: u64 = 50;

/// The sink `diagnose` hands its event loop.
pub struct DiagnoseSink {
    pub window: Rc<RefCell<Window>>,
    pub timeline: Rc<RefCell<Timeline>>,
    /// The exchange totals of the previous second, and when.
    pub prev_exchanges: Option<(u64, Totals)>,
    /// Reads the gauges off the event thread; shared with the command,
    /// which takes it after the window for the readings still due
    /// ([`finish_gauges`]).
    pub gauges: Rc<RefCell<Option<Sampler>>>,
}

/// The gauge collector for a [`DiagnoseSink`] (a thread reading /proc).
pub fn gauge_sampler() -> io::Result<Rc<RefCell<Option<Sampler>>>> {
    Ok(Rc::new(RefCell::new(Some(Sampler::spawn(LiveProc)?))))
}

/// After the window: stops the collector and applies the readings still
/// due, waiting for them off the event thread.
pub async fn finish_gauges(gauges: &Rc<RefCell<Option<Sampler>>>, t: &RefCell<Timeline>) {
    let Some(s) = gauges.borrow_mut().take() else {
        return;
    };
    match tokio::task::spawn_blocking(move || s.finish()).await {
        Ok(readings) => {
            let mut t = t.borrow_mut();
            for r in readings {
                gauges::apply(&mut t, r);
            }
        }
        Err(e) => log::warn!("timeline: the gauge collector failed: {e}"),
    }
}

impl Sink for DiagnoseSink {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        self.window.borrow_mut().add(e);
        self.timeline.borrow_mut().add(e, Clock::boot_now());
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn wants_seconds(&self) -> bool {
        true
    }

    fn second(&mut self, s: &Second<'_>) {
        let mut t = self.timeline.borrow_mut();
        let mut sampler = self.gauges.borrow_mut();
        // The previous seconds' /proc readings first, at their instants.
        for r in sampler.as_ref().map(Sampler::ready).unwrap_or_default() {
            gauges::apply(&mut t, r);
        }
        let close_wait: HashMap<u32, u32> = s
            .close_wait_by_pid
            .iter()
            .filter_map(|(pid, (n, _, _))| Some(((*pid)?, *n as u32)))
            .collect();
        let mut seed: Vec<u32> = close_wait
            .iter()
            .filter(|(pid, n)| **n > 0 && !t.procs.contains_key(pid))
            .map(|(pid, _)| *pid)
            .collect();
        seed.sort_unstable();
        if let Some(sampler) = sampler.as_mut() {
            sampler.request(gauges::Request {
                now_ns: s.now_ns,
                seed,
                tracked: t.tracked(),
                close_wait,
            });
        }
        if let Some(now) = s.exchanges {
            if let Some((then_ns, then)) = &self.prev_exchanges {
                for (pid, u) in upstream_second(then, *then_ns, now, s.now_ns) {
                    t.sample_upstream(pid, s.now_ns, u.busy_pct, u.mean_ms);
                }
            }
            self.prev_exchanges = Some((s.now_ns, now.clone()));
        }
    }
}

/// One process's second with its upstreams.
#[derive(Debug, PartialEq, Eq)]
pub struct UpstreamSecond {
    pub busy_pct: u32,
    pub mean_ms: Option<u32>,
}

/// Per process, from two reads of the exchange totals (`then` at
/// `then_ns`, `now` at `now_ns`): the busy share of its upstream
/// connections (time with a request outstanding / (connections x elapsed))
/// and the mean time of the exchanges completed in between.
pub fn upstream_second(
    then: &Totals,
    then_ns: u64,
    now: &Totals,
    now_ns: u64,
) -> HashMap<u32, UpstreamSecond> {
    let dt_ns = now_ns.saturating_sub(then_ns);
    let done = delta(then, now);
    let busy = busy_between(then, then_ns, now, now_ns);
    let mut per: HashMap<u32, (u64, i64, u64, u64)> = HashMap::new();
    for (k, total) in now.iter().filter(|(k, _)| k.dir == DIR_UPSTREAM) {
        let e = per.entry(k.tgid).or_default();
        e.0 += sockets(total);
        e.1 += busy.get(k).copied().unwrap_or(0);
        if let Some(w) = done.get(k) {
            e.2 += w.busy_ns;
            e.3 += w.count;
        }
    }
    per.into_iter()
        .filter(|(_, (conns, ..))| *conns > 0 && dt_ns > 0)
        .map(|(pid, (conns, busy, done_ns, count))| {
            let pct = (busy as f64 * 100.0 / (conns as f64 * dt_ns as f64)).round();
            let mean_ms = (count > 0).then(|| (done_ns as f64 / count as f64 / 1e6).round() as u32);
            (
                pid,
                UpstreamSecond {
                    busy_pct: pct.clamp(0.0, 100.0) as u32,
                    mean_ms,
                },
            )
        })
        .collect()
}

/// The processes worth charting from the start snapshot, with their state
/// then (the first second of the timeline).
pub fn seed(t: &mut Timeline, snap: &Snapshot) {
    let mut close_wait: HashMap<u32, u32> = HashMap::new();
    for s in snap.sockets.iter().filter(|s| s.state == TCP_CLOSE_WAIT) {
        if let Some(pid) = snap.owner_of(s) {
            *close_wait.entry(pid).or_default() += 1;
        }
    }
    let mut pids: Vec<u32> = snap.processes.keys().copied().collect();
    pids.sort_unstable();
    for pid in pids {
        let p = &snap.processes[&pid];
        let g = Gauge {
            fds: (p.fd_count > 0).then_some(p.fd_count),
            fd_limit: p.fd_limit,
            close_wait: close_wait.get(&pid).copied().unwrap_or(0),
        };
        let worth = close_wait.contains_key(&pid)
            || p.fd_limit
                .is_some_and(|l| l > 0 && u64::from(p.fd_count) * 100 >= l * SEED_FD_PERCENT);
        if worth {
            t.seed(pid, &comm_string(&p.comm), g);
        } else {
            t.remember_start(pid, &comm_string(&p.comm), g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::exchange::{DIR_SERVED, ExchAgg, ExchKey, bucket_of};

    fn agg(durations_ms: &[u64], sockets: u64) -> ExchAgg {
        let mut a = ExchAgg {
            sockets,
            ..ExchAgg::default()
        };
        for d in durations_ms {
            a.count += 1;
            a.busy_ns += d * 1_000_000;
            a.buckets[bucket_of(d * 1000)] += 1;
        }
        a
    }

    fn key(tgid: u32, dir: u8, port: u16) -> ExchKey {
        ExchKey {
            tgid,
            dir,
            port,
            ..ExchKey::default()
        }
    }

    #[test]
    fn a_second_of_a_saturated_pool() {
        let up = key(7, DIR_UPSTREAM, 5432);
        let served = key(7, DIR_SERVED, 8080);
        let idle = key(9, DIR_UPSTREAM, 6379);
        const S: u64 = 1_000_000_000;
        let then: Totals = [(up, agg(&[300; 3], 2)), (idle, agg(&[], 4))].into();
        // 6 more exchanges of 300 ms on 2 connections in one second: 1.8 s
        // of 2 s, busy 90 %; the served port is not an upstream.
        let mut now: Totals = [
            (up, agg(&[300; 9], 2)),
            (served, agg(&[1; 50], 9)),
            (idle, agg(&[], 4)),
        ]
        .into();
        let s = upstream_second(&then, 10 * S, &now, 11 * S);
        assert_eq!(
            s[&7],
            UpstreamSecond {
                busy_pct: 90,
                mean_ms: Some(300)
            }
        );
        assert_eq!(
            s[&9],
            UpstreamSecond {
                busy_pct: 0,
                mean_ms: None
            }
        );
        assert_eq!(s.len(), 2);
        // Both connections also had a request open since 10.9 s and 10.95 s:
        // 0.15 s more of the 2 s.
        let a = now.get_mut(&up).expect("up");
        a.open = 2;
        a.open_since = 10 * S + 900_000_000 + 10 * S + 950_000_000;
        let s = upstream_second(&then, 10 * S, &now, 11 * S);
        assert_eq!(s[&7].busy_pct, 98);
        // One request open since 9.5 s on one of 2 connections, nothing
        // completed: only its second within the window counts, 1 s of 2 s.
        let slow = key(8, DIR_UPSTREAM, 3306);
        let open = ExchAgg {
            open: 1,
            open_since: 9 * S + S / 2,
            ..agg(&[], 2)
        };
        let (then, now): (Totals, Totals) = ([(slow, open)].into(), [(slow, open)].into());
        assert_eq!(
            upstream_second(&then, 10 * S, &now, 11 * S)[&8],
            UpstreamSecond {
                busy_pct: 50,
                mean_ms: None
            }
        );
    }
}
