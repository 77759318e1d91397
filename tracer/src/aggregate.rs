//! Accept failures aggregated per (process, listener, errno) over a short
//! interval: a server failing thousands of accepts a second gives one line
//! per cause per interval, with a `count`.

use std::collections::HashMap;

use tracer_common::AcceptFailedRecord;

/// Aggregation interval of `accept_failed` lines.
pub const ACCEPT_INTERVAL_MS: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AcceptKey {
    pub tgid: u32,
    pub netns: u32,
    pub lport: u16,
    pub errno: i32,
}

#[derive(Default)]
pub struct AcceptAggregator {
    /// The first record of each key in this interval, and the count.
    pending: HashMap<AcceptKey, (AcceptFailedRecord, u64)>,
    /// Keys in first-seen order, so lines come out in a stable order.
    order: Vec<AcceptKey>,
}

impl AcceptAggregator {
    pub fn add(&mut self, rec: &AcceptFailedRecord) {
        let key = AcceptKey {
            tgid: rec.task.tgid,
            netns: rec.listener.netns,
            lport: rec.listener.lport,
            errno: rec.errno,
        };
        match self.pending.get_mut(&key) {
            Some((_, n)) => *n += 1,
            None => {
                self.pending.insert(key, (*rec, 1));
                self.order.push(key);
            }
        }
    }

    /// Everything of the interval: (first record, count), first-seen order.
    pub fn drain(&mut self) -> Vec<(AcceptFailedRecord, u64)> {
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

    #[test]
    fn one_line_per_cause_with_counts() {
        let mut a = AcceptAggregator::default();
        for _ in 0..1000 {
            a.add(&rec(1, 80, libc::EMFILE));
        }
        a.add(&rec(1, 80, libc::ENFILE));
        a.add(&rec(2, 80, libc::EMFILE));
        let out = a.drain();
        let got: Vec<(u32, i32, u64)> = out
            .iter()
            .map(|(r, n)| (r.task.tgid, r.errno, *n))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, libc::EMFILE, 1000),
                (1, libc::ENFILE, 1),
                (2, libc::EMFILE, 1)
            ]
        );
        assert!(a.is_empty());
        assert!(a.drain().is_empty());
    }
}
