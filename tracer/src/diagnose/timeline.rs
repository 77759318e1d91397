//! The window as per-second series, per process: what `diagnose --report`
//! charts and the text form draws as sparklines. Counts (failed accepts,
//! queue drops, resets) come from the events the window sees; gauges (fds
//! held, the fd limit, sockets in CLOSE_WAIT) are sampled once a second.
//! The first second holds the state found at start, so an incident begun
//! before tracer starts where it stood.
//!
//! Bounded: at most [`MAX_PROCS`] processes and [`MAX_BUCKETS`] buckets;
//! a longer window doubles the bucket width (adjacent buckets merge).

use std::collections::{BTreeMap, HashMap};

use crate::event::{Event, EventKind};

pub const MAX_PROCS: usize = 64;
pub const MAX_BUCKETS: usize = 3600;

/// Something that first happened, at a bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub bucket: usize,
    pub what: String,
}

/// One process's series, one value per bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcSeries {
    pub comm: Option<String>,
    /// Open fds; `None` where not sampled (or unreadable).
    pub fds: Vec<Option<u32>>,
    /// The RLIMIT_NOFILE soft limit last seen.
    pub fd_limit: Option<u64>,
    pub close_wait: Vec<Option<u32>>,
    pub accept_failed: Vec<u64>,
    pub overflow_drops: Vec<u64>,
    pub rst_sent: Vec<u64>,
    pub rst_received: Vec<u64>,
    /// Share (percent) of its outbound connections' time spent with a
    /// request outstanding (open requests included); `None` where
    /// it had no timed upstream connection.
    pub upstream_busy: Vec<Option<u32>>,
    /// Mean time per exchange completed that second, ms.
    pub upstream_ms: Vec<Option<u32>>,
    pub markers: Vec<Marker>,
    /// Listener ports named by its events.
    pub ports: Vec<u16>,
}

/// A process's state at one instant (start snapshot or a sample).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauge {
    pub fds: Option<u32>,
    pub fd_limit: Option<u64>,
    pub close_wait: u32,
}

#[derive(Clone, Debug)]
pub struct Timeline {
    start_ns: u64,
    /// Bucket width in seconds (1 until the window outgrows MAX_BUCKETS).
    pub step_s: u64,
    /// Buckets in use (the last one may still be filling).
    pub buckets: usize,
    pub procs: BTreeMap<u32, ProcSeries>,
    /// The state at start of processes not charted yet (up to
    /// [`MAX_START_STATES`]): a process an event names later starts its
    /// series where it stood when tracer started.
    start_states: HashMap<u32, (String, Gauge)>,
}

/// How many start states are kept for processes not charted yet.
pub const MAX_START_STATES: usize = 100_000;

impl Timeline {
    pub fn new(start_ns: u64) -> Timeline {
        Timeline {
            start_ns,
            step_s: 1,
            buckets: 1,
            procs: BTreeMap::new(),
            start_states: HashMap::new(),
        }
    }

    /// Keeps `pid`'s state at start, for if it is charted later.
    pub fn remember_start(&mut self, pid: u32, comm: &str, g: Gauge) {
        if self.start_states.len() < MAX_START_STATES {
            self.start_states.insert(pid, (comm.to_string(), g));
        }
    }

    /// The bucket `now_ns` falls in, merging buckets when the window
    /// outgrows [`MAX_BUCKETS`].
    fn bucket(&mut self, now_ns: u64) -> usize {
        let step_ns = self.step_s * 1_000_000_000;
        let mut b = (now_ns.saturating_sub(self.start_ns) / step_ns) as usize;
        while b >= MAX_BUCKETS {
            self.halve();
            b /= 2;
        }
        if b + 1 > self.buckets {
            self.buckets = b + 1;
        }
        b
    }

    fn halve(&mut self) {
        self.step_s *= 2;
        self.buckets = self.buckets.div_ceil(2);
        for p in self.procs.values_mut() {
            merge(&mut p.accept_failed, |a, b| a + b);
            merge(&mut p.overflow_drops, |a, b| a + b);
            merge(&mut p.rst_sent, |a, b| a + b);
            merge(&mut p.rst_received, |a, b| a + b);
            merge(&mut p.fds, |a, b| b.or(a));
            merge(&mut p.close_wait, |a, b| b.or(a));
            merge(&mut p.upstream_busy, |a, b| b.or(a));
            merge(&mut p.upstream_ms, |a, b| b.or(a));
            for m in &mut p.markers {
                m.bucket /= 2;
            }
        }
    }

    /// The series of `pid`, created while fewer than MAX_PROCS exist (from
    /// its state at start when known).
    fn proc_mut(&mut self, pid: u32) -> Option<&mut ProcSeries> {
        if !self.procs.contains_key(&pid) {
            if self.procs.len() >= MAX_PROCS {
                return None;
            }
            let mut p = ProcSeries::default();
            if let Some((comm, g)) = self.start_states.remove(&pid) {
                p.comm = Some(comm);
                set(&mut p.fds, 0, g.fds);
                set(&mut p.close_wait, 0, Some(g.close_wait));
                p.fd_limit = g.fd_limit;
            }
            self.procs.insert(pid, p);
        }
        self.procs.get_mut(&pid)
    }

    /// The processes whose gauges are sampled each second.
    pub fn tracked(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }

    /// Starts tracking `pid` with the state found at start (first bucket).
    pub fn seed(&mut self, pid: u32, comm: &str, g: Gauge) {
        if let Some(p) = self.proc_mut(pid) {
            p.comm.get_or_insert_with(|| comm.to_string());
            set(&mut p.fds, 0, g.fds);
            set(&mut p.close_wait, 0, Some(g.close_wait));
            p.fd_limit = g.fd_limit.or(p.fd_limit);
        }
    }

    /// Counts one event at `now_ns` for its process.
    pub fn add(&mut self, e: &Event, now_ns: u64) {
        let Some(pid) = e.pid else { return };
        let b = self.bucket(now_ns);
        let Some(p) = self.proc_mut(pid) else { return };
        if p.comm.is_none() {
            p.comm = e.comm.as_deref().map(str::to_string);
        }
        let (series, first) = match e.event {
            EventKind::AcceptFailed => (
                &mut p.accept_failed,
                e.error.as_deref().map(|err| format!("first {err}")),
            ),
            EventKind::ListenOverflow => (
                &mut p.overflow_drops,
                Some(format!(
                    "accept queue of :{} full",
                    e.local_port.unwrap_or(0)
                )),
            ),
            EventKind::RstSent => (&mut p.rst_sent, None),
            EventKind::RstReceived => (&mut p.rst_received, None),
            EventKind::StateChange | EventKind::Lost => return,
        };
        let n = e.count.unwrap_or(1);
        add(series, b, n);
        if matches!(e.event, EventKind::AcceptFailed | EventKind::ListenOverflow)
            && let Some(port) = e.local_port
            && !p.ports.contains(&port)
        {
            p.ports.push(port);
        }
        if let Some(what) = first
            && n > 0
        {
            mark(p, b, what);
        }
    }

    /// Records a once-a-second sample of `pid`'s gauges.
    pub fn sample(&mut self, pid: u32, now_ns: u64, g: Gauge) {
        let b = self.bucket(now_ns);
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        set(&mut p.fds, b, g.fds);
        set(&mut p.close_wait, b, Some(g.close_wait));
        p.fd_limit = g.fd_limit.or(p.fd_limit);
        if let (Some(fds), Some(limit)) = (g.fds, p.fd_limit)
            && u64::from(fds) >= limit.saturating_sub(1)
        {
            mark(p, b, "fd limit reached".to_string());
        }
    }

    /// Records a second of `pid`'s exchanges with its upstreams.
    pub fn sample_upstream(&mut self, pid: u32, now_ns: u64, busy_pct: u32, mean_ms: Option<u32>) {
        let b = self.bucket(now_ns);
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        set(&mut p.upstream_busy, b, Some(busy_pct.min(100)));
        set(&mut p.upstream_ms, b, mean_ms);
    }

    /// Every series of every process padded or cut to `n` buckets (the
    /// window's seconds; what arrived after its end joins the last one).
    pub fn finish(&mut self, n: usize) {
        let n = n.max(1);
        for p in self.procs.values_mut() {
            fit(&mut p.accept_failed, n, |a, b| a + b);
            fit(&mut p.overflow_drops, n, |a, b| a + b);
            fit(&mut p.rst_sent, n, |a, b| a + b);
            fit(&mut p.rst_received, n, |a, b| a + b);
            fit(&mut p.fds, n, |a, b| b.or(a));
            fit(&mut p.close_wait, n, |a, b| b.or(a));
            fit(&mut p.upstream_busy, n, |a, b| b.or(a));
            fit(&mut p.upstream_ms, n, |a, b| b.or(a));
            for m in &mut p.markers {
                m.bucket = m.bucket.min(n - 1);
            }
        }
        self.buckets = n;
    }
}

fn mark(p: &mut ProcSeries, bucket: usize, what: String) {
    if !p.markers.iter().any(|m| m.what == what) {
        p.markers.push(Marker { bucket, what });
    }
}

fn add(v: &mut Vec<u64>, b: usize, n: u64) {
    if v.len() <= b {
        v.resize(b + 1, 0);
    }
    v[b] += n;
}

fn set<T: Clone + Default>(v: &mut Vec<T>, b: usize, x: T) {
    if v.len() <= b {
        v.resize(b + 1, T::default());
    }
    v[b] = x;
}

/// Merges adjacent pairs (the bucket width doubled).
fn merge<T: Copy>(v: &mut Vec<T>, f: impl Fn(T, T) -> T) {
    *v = v
        .chunks(2)
        .map(|c| if c.len() == 2 { f(c[0], c[1]) } else { c[0] })
        .collect();
}

/// Pads with defaults or folds the tail into the last bucket.
fn fit<T: Copy + Default>(v: &mut Vec<T>, n: usize, f: impl Fn(T, T) -> T) {
    while v.len() > n {
        let last = v.pop().unwrap_or_default();
        if let Some(prev) = v.last_mut() {
            *prev = f(*prev, last);
        }
    }
    v.resize(n, T::default());
}

#[cfg(test)]
#[path = "timeline_tests.rs"]
mod tests;
