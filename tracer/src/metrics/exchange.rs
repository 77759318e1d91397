//! Metrics of the kernel's exchange timing (`crate::exchange`): per upstream
//! endpoint (remote address:port, calling process) the connections keyed
//! there, how busy they were over the last [`BUSY_WINDOW`] and a histogram
//! of exchange time (request sent -> first reply byte); per listening port
//! a histogram of response time (request read -> first response byte).
//!
//! Refreshed once a second from the kernel totals. Histograms accumulate
//! the differences between reads, so a total the kernel's LRU evicted and
//! restarted never makes a counter go down. Label sets are bounded like the
//! other families ([`super::MAX_SERIES`]; past it, `other`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use tracer_common::exchange::{DIR_SERVED, DIR_UPSTREAM, EXCH_BUCKETS, ExchKey, bucket_lower_us};
use tracer_common::socket_id;

use super::{Budget, OTHER, lock};
use crate::exchange::{ExchStat, Totals, busy_between, delta, sockets};

/// The busy ratio is measured over this many one-second reads.
pub const BUSY_WINDOW: usize = 10;

/// Histogram bounds: the powers of two of µs from 64 µs to 2^24 µs (16.8 s),
/// which are boundaries of the kernel's buckets, so every count is exact.
const FIRST_POW: u32 = 6;
const LAST_POW: u32 = 24;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// `addr:port` (`[v6]:port`).
    pub remote: String,
    pub comm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServedLabels {
    pub local_port: String,
    pub comm: String,
}

/// A histogram whose buckets are set from the kernel's, not observed one by
/// one: cumulative counts at the [`FIRST_POW`]..=[`LAST_POW`] bounds.
#[derive(Debug, Default)]
pub struct KernelHistogram {
    inner: Mutex<HistState>,
}

#[derive(Debug, Default)]
struct HistState {
    sum_s: f64,
    count: u64,
    /// Counts per kernel bucket (not cumulative).
    buckets: Vec<u64>,
}

impl KernelHistogram {
    fn add(&self, s: &ExchStat) {
        let mut h = lock(&self.inner);
        if h.buckets.len() < EXCH_BUCKETS {
            h.buckets.resize(EXCH_BUCKETS, 0);
        }
        h.sum_s += s.busy_ns as f64 / 1e9;
        h.count += s.count;
        for (sum, n) in h.buckets.iter_mut().zip(&s.buckets) {
            *sum += n;
        }
    }

    /// `(upper bound in s, cumulative count)`, the last bound +Inf.
    fn cumulative(h: &HistState) -> Vec<(f64, u64)> {
        let mut out = Vec::new();
        let mut i = 0;
        let mut seen = 0;
        for pow in FIRST_POW..=LAST_POW {
            let bound_us = f64::from(1u32 << pow);
            // Buckets wholly below the bound (their upper end <= it).
            while i < h.buckets.len() && bucket_lower_us(i + 1) <= bound_us {
                seen += h.buckets[i];
                i += 1;
            }
            out.push((bound_us / 1e6, seen));
        }
        out.push((f64::INFINITY, h.count));
        out
    }
}

impl TypedMetric for KernelHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for KernelHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = lock(&self.inner);
        let buckets = Self::cumulative(&h);
        encoder.encode_histogram::<NoLabelSet>(h.sum_s, h.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The exchange families and what their refresh keeps between reads.
pub struct ExchangeMetrics {
    pub(super) connections: Family<UpstreamLabels, Gauge>,
    pub(super) busy: Family<UpstreamLabels, Gauge<f64, AtomicU64>>,
    pub(super) upstream_time: Family<UpstreamLabels, KernelHistogram>,
    pub(super) served_time: Family<ServedLabels, KernelHistogram>,
    state: Mutex<RefreshState>,
}

struct RefreshState {
    last: Totals,
    last_ns: u64,
    /// Busy ns and elapsed ns of the last reads, per upstream label set.
    recent: VecDeque<(u64, HashMap<UpstreamLabels, u64>)>,
    comms: HashMap<u32, String>,
    upstreams: Budget<UpstreamLabels>,
    served: Budget<ServedLabels>,
}

impl ExchangeMetrics {
    pub fn new(cap: usize) -> Self {
        ExchangeMetrics {
            connections: Family::default(),
            busy: Family::default(),
            upstream_time: Family::default(),
            served_time: Family::default(),
            state: Mutex::new(RefreshState {
                last: Totals::new(),
                last_ns: 0,
                recent: VecDeque::new(),
                comms: HashMap::new(),
                upstreams: Budget::new(cap),
                served: Budget::new(cap),
            }),
        }
    }

    /// One read of the kernel totals at `now_ns` (boot clock); `comm` names
    /// a thread-group id (e.g. from /proc), asked once per process.
    pub fn refresh(&self, now: Totals, now_ns: u64, comm: &dyn Fn(u32) -> Option<String>) {
        let mut st = lock(&self.state);
        let window = delta(&st.last, &now);
        let busy = busy_between(&st.last, st.last_ns, &now, now_ns);
        let live: HashSet<u32> = now.keys().map(|k| k.tgid).collect();
        st.comms.retain(|tgid, _| live.contains(tgid));
        let name = |st: &mut RefreshState, tgid: u32| -> String {
            st.comms
                .entry(tgid)
                .or_insert_with(|| comm(tgid).unwrap_or_else(|| super::UNKNOWN.into()))
                .clone()
        };
        let mut conns: HashMap<UpstreamLabels, u64> = HashMap::new();
        let mut busy_now: HashMap<UpstreamLabels, u64> = HashMap::new();
        for (key, total) in &now {
            let comm = name(&mut st, key.tgid);
            match key.dir {
                DIR_UPSTREAM => {
                    let l = st
                        .upstreams
                        .admit(upstream_labels(key, comm), |_| UpstreamLabels {
                            remote: OTHER.into(),
                            comm: OTHER.into(),
                        });
                    *conns.entry(l.clone()).or_default() += sockets(total);
                    *busy_now.entry(l.clone()).or_default() +=
                        busy.get(key).copied().unwrap_or(0).max(0) as u64;
                    if let Some(w) = window.get(key) {
                        self.upstream_time.get_or_create(&l).add(w);
                    }
                }
                DIR_SERVED => {
                    if let Some(w) = window.get(key) {
                        let l = ServedLabels {
                            local_port: key.port.to_string(),
                            comm,
                        };
                        let l = st.served.admit(l, |_| ServedLabels {
                            local_port: OTHER.into(),
                            comm: OTHER.into(),
                        });
                        self.served_time.get_or_create(&l).add(w);
                    }
                }
                _ => {}
            }
        }
        st.recent.push_back((now_ns, busy_now));
        while st.recent.len() > BUSY_WINDOW + 1 {
            st.recent.pop_front();
        }
        st.last = now;
        st.last_ns = now_ns;
        let ratios = busy_ratios(&st.recent, &conns);
        self.connections.clear();
        for (l, n) in &conns {
            self.connections
                .get_or_create(l)
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.busy.clear();
        for (l, r) in ratios {
            self.busy.get_or_create(&l).set(r);
        }
    }
}

fn upstream_labels(key: &ExchKey, comm: String) -> UpstreamLabels {
    let addr = socket_id::addr(key.family, &key.addr).map(socket_id::normalise);
    let remote = match addr {
        Some(IpAddr::V6(a)) => format!("[{a}]:{}", key.port),
        Some(a) => format!("{a}:{}", key.port),
        None => format!("?:{}", key.port),
    };
    UpstreamLabels { remote, comm }
}

/// Time with a request outstanding over the reads in `recent` (the first
/// read only marks the start) / (connections x elapsed), at most 1.
fn busy_ratios(
    recent: &VecDeque<(u64, HashMap<UpstreamLabels, u64>)>,
    conns: &HashMap<UpstreamLabels, u64>,
) -> Vec<(UpstreamLabels, f64)> {
    let (Some(first), Some(last)) = (recent.front(), recent.back()) else {
        return Vec::new();
    };
    let elapsed = last.0.saturating_sub(first.0);
    if elapsed == 0 {
        return Vec::new();
    }
    let mut busy: HashMap<&UpstreamLabels, u64> = HashMap::new();
    for (_, per) in recent.iter().skip(1) {
        for (l, ns) in per {
            *busy.entry(l).or_default() += ns;
        }
    }
    conns
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(l, n)| {
            let b = busy.get(l).copied().unwrap_or(0) as f64;
            (l.clone(), (b / (*n as f64 * elapsed as f64)).min(1.0))
        })
        .collect()
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;
