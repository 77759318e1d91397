//! What `diagnose` gathers during its window: the events (the verdict's
//! [`Window`]) and the per-second [`Timeline`] of the processes involved.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;

use super::timeline::{Gauge, Timeline};
use super::window::Window;
use crate::attribute::procs::{LiveProc, ProcSource};
use crate::clock::Clock;
use crate::event::{Event, comm_string};
use crate::output::{Second, Sink};
use crate::snapshot::{Snapshot, TCP_CLOSE_WAIT};

/// At start, a process is charted when it holds at least this share of its
/// fd limit (percent), or sockets in CLOSE_WAIT; later, when an event or a
/// CLOSE_WAIT socket names it.
pub const SEED_FD_PERCENT: u64 = 50;

/// The sink `diagnose` hands its event loop.
pub struct DiagnoseSink {
    pub window: Rc<RefCell<Window>>,
    pub timeline: Rc<RefCell<Timeline>>,
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

    fn second(&mut self, s: &Second<'_>) {
        let mut t = self.timeline.borrow_mut();
        let close_wait: HashMap<u32, u32> = s
            .close_wait_by_pid
            .iter()
            .filter_map(|(pid, (n, _, _))| Some(((*pid)?, *n as u32)))
            .collect();
        for (&pid, &n) in &close_wait {
            if n > 0 && !t.procs.contains_key(&pid) {
                let comm = LiveProc
                    .process(pid)
                    .map(|p| comm_string(&p.comm))
                    .unwrap_or_default();
                t.seed(pid, &comm, Gauge::default());
            }
        }
        for pid in t.tracked() {
            let info = LiveProc.process(pid);
            let g = Gauge {
                fds: info
                    .as_ref()
                    .and_then(|p| (p.fd_count > 0).then_some(p.fd_count)),
                fd_limit: info.as_ref().and_then(|p| p.fd_limit),
                close_wait: close_wait.get(&pid).copied().unwrap_or(0),
            };
            t.sample(pid, s.now_ns, g);
        }
    }
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
