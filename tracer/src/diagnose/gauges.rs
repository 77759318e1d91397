//! The timeline's once-a-second /proc reads (fds held, the fd limit, the
//! names of processes that start holding CLOSE_WAIT sockets), off the event
//! thread: a collector thread takes each second's request on a bounded
//! channel and sends back the readings, which the timeline applies at their
//! own instant (`collect::DiagnoseSink`).

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use super::timeline::{Gauge, Timeline};
use crate::attribute::procs::ProcSource;
use crate::event::comm_string;

/// Seconds of requests (and of readings) that may wait; past it a second
/// goes unsampled rather than the event thread waiting on /proc.
pub const QUEUE: usize = 4;

/// What to read for one second.
#[derive(Debug)]
pub struct Request {
    pub now_ns: u64,
    /// Holders of CLOSE_WAIT sockets not charted yet: named, then charted.
    pub seed: Vec<u32>,
    /// The processes charted now.
    pub tracked: Vec<u32>,
    /// Sockets in CLOSE_WAIT per pid.
    pub close_wait: HashMap<u32, u32>,
}

/// What was read for one second.
#[derive(Debug, PartialEq, Eq)]
pub struct Reading {
    pub now_ns: u64,
    /// (pid, name; empty when unreadable).
    pub seeds: Vec<(u32, String)>,
    pub gauges: Vec<(u32, Gauge)>,
}

/// Reads one second, as the event thread did before: the new holders are
/// named first, then every charted process (the new ones included) sampled.
pub fn read(req: Request, src: &dyn ProcSource) -> Reading {
    let seeds: Vec<(u32, String)> = req
        .seed
        .iter()
        .map(|&pid| {
            let comm = src
                .process(pid)
                .map(|p| comm_string(&p.comm))
                .unwrap_or_default();
            (pid, comm)
        })
        .collect();
    let mut pids = req.tracked;
    for &pid in &req.seed {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    let gauges = pids
        .into_iter()
        .map(|pid| {
            let info = src.process(pid);
            let g = Gauge {
                fds: info
                    .as_ref()
                    .and_then(|p| (p.fd_count > 0).then_some(p.fd_count)),
                fd_limit: info.as_ref().and_then(|p| p.fd_limit),
                close_wait: req.close_wait.get(&pid).copied().unwrap_or(0),
            };
            (pid, g)
        })
        .collect();
    Reading {
        now_ns: req.now_ns,
        seeds,
        gauges,
    }
}

/// Applies one second's reading to the timeline, at its instant.
pub fn apply(t: &mut Timeline, r: Reading) {
    // Unconditionally, as before: seeding twice (a second requested
    // before the previous one's reading was in) is seeding once.
    for (pid, comm) in &r.seeds {
        t.seed(*pid, comm, Gauge::default());
    }
    for (pid, g) in r.gauges {
        t.sample(pid, r.now_ns, g);
    }
}

/// The collector thread and its two bounded channels.
pub struct Sampler {
    requests: Option<SyncSender<Request>>,
    readings: Receiver<Reading>,
    thread: Option<JoinHandle<()>>,
    /// Seconds not sampled because the collector was behind.
    pub skipped: u64,
}

impl Sampler {
    pub fn spawn<S: ProcSource + Send + 'static>(src: S) -> std::io::Result<Sampler> {
        let (req_tx, req_rx) = sync_channel::<Request>(QUEUE);
        let (out_tx, out_rx) = sync_channel::<Reading>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("diagnose-gauges".into())
            .spawn(move || {
                for req in req_rx {
                    if out_tx.send(read(req, &src)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Sampler {
            requests: Some(req_tx),
            readings: out_rx,
            thread: Some(thread),
            skipped: 0,
        })
    }

    /// Hands a second to the collector without waiting.
    pub fn request(&mut self, req: Request) {
        let Some(tx) = &self.requests else { return };
        match tx.try_send(req) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.skipped += 1;
                log::debug!("timeline: gauge collector behind; a second not sampled");
            }
            Err(TrySendError::Disconnected(_)) => self.requests = None,
        }
    }

    /// The readings that are in.
    pub fn ready(&self) -> Vec<Reading> {
        self.readings.try_iter().collect()
    }

    /// Every reading still due, once the collector has read them (blocks:
    /// call it off the event thread, after the window).
    pub fn finish(mut self) -> Vec<Reading> {
        self.requests = None;
        let out: Vec<Reading> = self.readings.iter().collect();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            log::warn!("timeline: the gauge collector panicked");
        }
        out
    }
}

#[cfg(test)]
#[path = "gauges_tests.rs"]
mod tests;
