//! The per-process gauges: which processes are tracked, and reading their fd
//! usage and limit from /proc off the event loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Metrics, ProcLabels, lock};
use crate::attribute::procs::{LiveProc, ProcSource};
use crate::event::comm_string;

/// A process stays tracked this long after its last event.
pub const TRACK_FOR: Duration = Duration::from_secs(600);
/// At most this many processes are tracked (the least recently seen go).
pub const MAX_TRACKED: usize = 256;

/// Processes named by events, and whether a refresh is running.
#[derive(Default)]
pub struct Tracked {
    last_seen: HashMap<u32, Instant>,
    refreshing: bool,
}

impl Tracked {
    pub fn seen(&mut self, pid: u32) {
        self.seen_at(pid, Instant::now());
    }

    fn seen_at(&mut self, pid: u32, now: Instant) {
        self.last_seen.insert(pid, now);
        if self.last_seen.len() > MAX_TRACKED
            && let Some(oldest) = self
                .last_seen
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(p, _)| *p)
        {
            self.last_seen.remove(&oldest);
        }
    }

    /// The pids seen within [`TRACK_FOR`] of `now` (older ones are dropped).
    fn current(&mut self, now: Instant) -> Vec<u32> {
        self.last_seen
            .retain(|_, t| now.saturating_duration_since(*t) < TRACK_FOR);
        self.last_seen.keys().copied().collect()
    }
}

/// One tracked process's gauge values.
#[derive(Debug, PartialEq, Eq)]
pub struct Row {
    pub labels: ProcLabels,
    /// `None` when /proc/PID/fd could not be read.
    pub fds: Option<u32>,
    /// `None` when unlimited or unreadable.
    pub fd_limit: Option<u64>,
    pub close_wait: u64,
}

/// Reads the tracked processes. Returns the rows and the pids that are gone.
pub fn read_rows(
    pids: &[u32],
    close_wait: &HashMap<u32, u64>,
    src: &dyn ProcSource,
) -> (Vec<Row>, Vec<u32>) {
    let mut rows = Vec::new();
    let mut gone = Vec::new();
    for &pid in pids {
        match src.process(pid) {
            Some(info) => rows.push(Row {
                labels: ProcLabels {
                    pid: pid.to_string(),
                    comm: comm_string(&info.comm),
                },
                fds: (info.fd_count > 0).then_some(info.fd_count),
                fd_limit: info.fd_limit,
                close_wait: close_wait.get(&pid).copied().unwrap_or(0),
            }),
            None => gone.push(pid),
        }
    }
    (rows, gone)
}

impl Metrics {
    /// Starts refreshing the per-process gauges in the background (skipped
    /// while the previous refresh runs). `close_wait` is the attributor's
    /// CLOSE_WAIT count per owning pid.
    pub fn refresh_processes(
        self: &Arc<Self>,
        close_wait: HashMap<Option<u32>, (u64, Option<u64>, bool)>,
    ) {
        let mut t = lock(&self.tracked);
        if t.refreshing {
            return;
        }
        let cw: HashMap<u32, u64> = close_wait
            .into_iter()
            .filter_map(|(pid, (n, _, _))| Some((pid?, n)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut pids = t.current(Instant::now());
        // CLOSE_WAIT holders first by count, within the same bound.
        let mut by_count: Vec<(u32, u64)> = cw.iter().map(|(p, n)| (*p, *n)).collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (pid, _) in by_count {
            if pids.len() >= MAX_TRACKED * 2 {
                break;
            }
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        t.refreshing = true;
        drop(t);
        let m = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let (rows, gone) = read_rows(&pids, &cw, &LiveProc);
            m.apply(rows, &gone);
        });
    }

    /// Replaces every per-process gauge with `rows`.
    pub fn apply(&self, rows: Vec<Row>, gone: &[u32]) {
        {
            let _g = lock(&self.consistent);
            self.fds.clear();
            self.fd_limit.clear();
            self.close_wait.clear();
            for r in &rows {
                if let Some(n) = r.fds {
                    self.fds.get_or_create(&r.labels).set(i64::from(n));
                }
                if let Some(n) = r.fd_limit {
                    self.fd_limit
                        .get_or_create(&r.labels)
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                self.close_wait
                    .get_or_create(&r.labels)
                    .set(i64::try_from(r.close_wait).unwrap_or(i64::MAX));
            }
        }
        let mut t = lock(&self.tracked);
        for pid in gone {
            t.last_seen.remove(pid);
        }
        t.refreshing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_is_bounded_and_expires() {
        let mut t = Tracked::default();
        let start = Instant::now();
        for pid in 0..(MAX_TRACKED as u32 + 10) {
            t.seen_at(pid, start + Duration::from_millis(pid as u64));
        }
        let mut now = t.current(start + Duration::from_secs(1));
        now.sort();
        assert_eq!(now.len(), MAX_TRACKED);
        // The least recently seen were evicted.
        assert_eq!(now[0], 10);
        t.seen_at(5, start + TRACK_FOR);
        assert_eq!(
            t.current(start + TRACK_FOR + Duration::from_secs(1)),
            vec![5]
        );
    }
}
