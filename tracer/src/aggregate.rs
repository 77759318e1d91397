//! Accept failures aggregated per (process, listener, errno) over a short
//! interval: a server failing thousands of accepts a second gives one line
//! per cause per interval, with a `count`, stamped with the time of the
//! last failure it counts (so a burst's lines are about an interval apart);
//! the first failure's details (process, listener, fd limit) describe it.

use std::collections::HashMap;

use tracer_common::{AcceptFailAgg, AcceptFailKey, AcceptFailedRecord};

/// Aggregation interval of `accept_failed` lines.
pub const ACCEPT_INTERVAL_MS: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AcceptKey {
    pub tgid: u32,
    pub netns: u32,
    pub lport: u16,
    pub errno: i32,
}

/// One line's worth: the first failure's details, how many, and the
/// boot-time ns of the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub first: AcceptFailedRecord,
    pub count: u64,
    pub last_ns: u64,
}

#[derive(Default)]
pub struct AcceptAggregator {
    /// Each key's failures in this interval.
    pending: HashMap<AcceptKey, Interval>,
    /// Keys in first-seen order, so lines come out in a stable order.
    order: Vec<AcceptKey>,
}

impl AcceptAggregator {
    /// One failure, at the record's time.
    pub fn add(&mut self, rec: &AcceptFailedRecord) {
        self.add_n(rec, 1, rec.header.ts_boot_ns);
    }

    /// Adds `n` failures like `rec`, the last of them at `last_ns`.
    pub fn add_n(&mut self, rec: &AcceptFailedRecord, n: u64, last_ns: u64) {
        // The kernel side drops interruptions already; an older object
        // might not.
        if n == 0 || !tracer_common::errno::accept_failed(rec.errno) {
            return;
        }
        let key = AcceptKey {
            tgid: rec.task.tgid,
            netns: rec.listener.netns,
            lport: rec.listener.lport,
            errno: rec.errno,
        };
        match self.pending.get_mut(&key) {
            Some(i) => {
                i.count += n;
                i.last_ns = i.last_ns.max(last_ns);
            }
            None => {
                self.pending.insert(
                    key,
                    Interval {
                        first: *rec,
                        count: n,
                        last_ns,
                    },
                );
                self.order.push(key);
            }
        }
    }

    /// Everything of the interval, first-seen order.
    pub fn drain(&mut self) -> Vec<Interval> {
        let mut out = Vec::with_capacity(self.order.len());
        for key in self.order.drain(..) {
            if let Some(v) = self.pending.remove(&key) {
                out.push(v);
            }
        }
        out
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Totals of the kernel's accept-failure map (`ACCEPT_FAILS`, per CPU) as
/// last read, to turn them into increments. Entries are never deleted from
/// userspace (a delete could lose a concurrent increment): the kernel's LRU
/// bounds the map, and a total lower than last time means the entry was
/// evicted and started again.
#[derive(Default)]
pub struct KernelTotals {
    last: HashMap<AcceptFailKey, u64>,
}

impl KernelTotals {
    /// Increments since the last read, with the first failure's details
    /// and the time of the latest, for the entries read now (one `Vec` of
    /// per-CPU values each).
    pub fn increments(
        &mut self,
        now: impl IntoIterator<Item = (AcceptFailKey, Vec<AcceptFailAgg>)>,
    ) -> Vec<Interval> {
        let mut next = HashMap::new();
        let mut out = Vec::new();
        for (key, per_cpu) in now {
            let total: u64 = per_cpu.iter().map(|v| v.count).sum();
            // CPUs that never saw this key hold zeroed values.
            let Some(first) = per_cpu
                .iter()
                .filter(|v| {
                    v.count > 0 && v.first.header.kind == tracer_common::kind::ACCEPT_FAILED
                })
                .min_by_key(|v| v.first.header.ts_boot_ns)
            else {
                continue;
            };
            let inc = increment(total, self.last.get(&key).copied().unwrap_or(0));
            if inc > 0 {
                let last_ns = per_cpu.iter().map(|v| v.last_ns).max().unwrap_or(0);
                out.push(Interval {
                    first: first.first,
                    count: inc,
                    last_ns: last_ns.max(first.first.header.ts_boot_ns),
                });
            }
            next.insert(key, total);
        }
        self.last = next;
        out
    }
}

/// What a kernel running total gained since it read `before`; a total
/// lower than that means the entry was evicted and started again, so all
/// of it is news.
pub fn increment(total: u64, before: u64) -> u64 {
    if total >= before {
        total - before
    } else {
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(tgid: u32, port: u16, errno: i32) -> AcceptFailedRecord {
        let mut r = AcceptFailedRecord::default();
        r.task.tgid = tgid;
        r.listener.lport = port;
        r.errno = errno;
        r
    }

    fn agg(tgid: u32, errno: i32, count: u64, ts: u64) -> (AcceptFailKey, AcceptFailAgg) {
        let mut first = rec(tgid, 80, errno);
        first.header.ts_boot_ns = ts;
        first.header.kind = tracer_common::kind::ACCEPT_FAILED;
        let key = AcceptFailKey {
            tgid,
            fd: 3,
            errno,
            _pad: 0,
            file: 0,
        };
        let last_ns = ts + count;
        (
            key,
            AcceptFailAgg {
                count,
                last_ns,
                first,
            },
        )
    }

    fn brief(out: &[Interval]) -> Vec<(u64, u64, u64)> {
        out.iter()
            .map(|i| (i.first.header.ts_boot_ns, i.count, i.last_ns))
            .collect()
    }

    #[test]
    fn kernel_totals_become_increments() {
        let mut t = KernelTotals::default();
        let (k, cpu0) = agg(1, libc::EMFILE, 5, 20);
        let (_, cpu1) = agg(1, libc::EMFILE, 7, 10);
        // The earliest first failure across CPUs carries the details, the
        // latest last failure the time: 20 + 5.
        let out = t.increments([(k, vec![cpu0, cpu1])]);
        assert_eq!(brief(&out), vec![(10, 12, 25)]);
        // A CPU that saw none holds a zeroed value: never the "first".
        let zero = AcceptFailAgg::default();
        let out = t.increments([(k, vec![zero, cpu0, cpu1])]);
        assert!(out.is_empty(), "same total as before");
        let mut t2 = KernelTotals::default();
        let out = t2.increments([(k, vec![zero, cpu0])]);
        assert_eq!(brief(&out), vec![(20, 5, 25)]);
        // Nothing new: nothing reported.
        assert!(t.increments([(k, vec![cpu0, cpu1])]).is_empty());
        // Three more on CPU 0, the last at 20 + 8.
        let (_, cpu0b) = agg(1, libc::EMFILE, 8, 20);
        let out = t.increments([(k, vec![cpu0b, cpu1])]);
        assert_eq!(brief(&out), vec![(10, 3, 28)]);
        // Evicted and started again: the new total is all news.
        let (_, fresh) = agg(1, libc::EMFILE, 2, 99);
        let out = t.increments([(k, vec![fresh])]);
        assert_eq!(brief(&out), vec![(99, 2, 101)]);
        // Gone from the map: forgotten, so its return counts from zero.
        assert!(t.increments(Vec::new()).is_empty());
        let out = t.increments([(k, vec![fresh])]);
        assert_eq!(out[0].count, 2);
    }

    #[test]
    fn one_line_per_cause_with_counts() {
        let mut a = AcceptAggregator::default();
        for i in 0..1000 {
            let mut r = rec(1, 80, libc::EMFILE);
            r.header.ts_boot_ns = 5_000 + i;
            a.add(&r);
        }
        a.add(&rec(1, 80, libc::ENFILE));
        a.add(&rec(2, 80, libc::EMFILE));
        let out = a.drain();
        let got: Vec<(u32, i32, u64)> = out
            .iter()
            .map(|i| (i.first.task.tgid, i.first.errno, i.count))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, libc::EMFILE, 1000),
                (1, libc::ENFILE, 1),
                (2, libc::EMFILE, 1)
            ]
        );
        // First failure's details, last failure's time.
        assert_eq!(
            (out[0].first.header.ts_boot_ns, out[0].last_ns),
            (5_000, 5_999)
        );
        assert!(a.is_empty());
        assert!(a.drain().is_empty());
    }

    #[test]
    fn interrupted_accepts_are_not_lines() {
        let mut a = AcceptAggregator::default();
        for errno in [libc::EINTR, libc::EAGAIN, 512, 513, 514, 516] {
            a.add(&rec(1, 80, errno));
        }
        assert!(a.is_empty());
        a.add(&rec(1, 80, libc::ECONNABORTED));
        assert_eq!(a.drain().len(), 1);
    }
}
