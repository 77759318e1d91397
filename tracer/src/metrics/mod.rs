//! `watch --metrics-addr`: Prometheus metrics of what `watch` emits.
//!
//! Counters are bumped by [`MetricsSink`], which wraps the output sink, so
//! they count exactly the lines written (after the user's filters). Gauges of
//! the tracked processes (those named by an event in the last
//! [`procs::TRACK_FOR`], or holding CLOSE_WAIT sockets) are refreshed once a
//! second by [`Metrics::refresh_processes`]. Label sets are bounded
//! ([`MAX_SERIES`] per family): past the cap, new ones are folded into
//! `local_port="other"`, `comm="other"`.

pub mod exchange;
pub mod feed;
pub mod http;
pub mod procs;

use std::collections::HashSet;
use std::hash::Hash;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::event::{Event, EventKind};
use crate::sink::Sink;

/// Distinct label sets per counter family before folding into "other".
pub const MAX_SERIES: usize = 1000;

/// Label value for what is unknown (no owner, no reason on old kernels).
const UNKNOWN: &str = "unknown";
/// Label value the label sets past the cap are folded into.
const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RstLabels {
    pub local_port: String,
    pub reason: String,
    pub comm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortComm {
    pub local_port: String,
    pub comm: String,
}

/// Labels of `tracer_rst_received`: the connection's service port, not the
/// local one (on a client the local port is ephemeral: one label set per
/// connection otherwise).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceComm {
    pub port: String,
    pub comm: String,
}

/// Linux's default ephemeral range (net.ipv4.ip_local_port_range).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

/// The service end of a connection: the local port unless it is ephemeral
/// and the remote one is not.
pub fn service_port(local: Option<u16>, remote: Option<u16>) -> Option<u16> {
    match (local, remote) {
        (Some(l), Some(r)) if EPHEMERAL.contains(&l) && !EPHEMERAL.contains(&r) => Some(r),
        (Some(l), _) => Some(l),
        (None, r) => r,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcceptLabels {
    pub error: String,
    pub local_port: String,
    pub comm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcLabels {
    pub pid: String,
    pub comm: String,
}

/// Label sets of one family seen so far, up to a cap.
struct Budget<L> {
    seen: HashSet<L>,
    cap: usize,
}

impl<L: Clone + Hash + Eq> Budget<L> {
    fn new(cap: usize) -> Self {
        Budget {
            seen: HashSet::new(),
            cap,
        }
    }

    /// `labels` if already seen or under the cap, else `fold(labels)`.
    fn admit(&mut self, labels: L, fold: impl FnOnce(L) -> L) -> L {
        if self.seen.contains(&labels) {
            return labels;
        }
        if self.seen.len() < self.cap {
            self.seen.insert(labels.clone());
            return labels;
        }
        fold(labels)
    }
}

struct Budgets {
    rst_sent: Budget<RstLabels>,
    rst_received: Budget<ServiceComm>,
    accept: Budget<AcceptLabels>,
    overflow: Budget<PortComm>,
}

pub struct Metrics {
    registry: Registry,
    rst_sent: Family<RstLabels, Counter>,
    rst_received: Family<ServiceComm, Counter>,
    accept_failures: Family<AcceptLabels, Counter>,
    listen_overflows: Family<PortComm, Counter>,
    lost: Counter,
    pub(crate) fds: Family<ProcLabels, Gauge>,
    pub(crate) fd_limit: Family<ProcLabels, Gauge>,
    pub(crate) close_wait: Family<ProcLabels, Gauge>,
    pub(crate) exchanges: exchange::ExchangeMetrics,
    budgets: Mutex<Budgets>,
    pub(crate) tracked: Mutex<procs::Tracked>,
    /// Held while encoding and while the gauges are replaced, so a scrape
    /// never sees them half updated.
    pub(crate) consistent: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere leaves plain counters behind: keep serving them.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Self::with_cap(MAX_SERIES)
    }

    pub fn with_cap(cap: usize) -> Arc<Metrics> {
        let m = Metrics {
            registry: Registry::default(),
            rst_sent: Family::default(),
            rst_received: Family::default(),
            accept_failures: Family::default(),
            listen_overflows: Family::default(),
            lost: Counter::default(),
            fds: Family::default(),
            fd_limit: Family::default(),
            close_wait: Family::default(),
            exchanges: exchange::ExchangeMetrics::new(cap),
            budgets: Mutex::new(Budgets {
                rst_sent: Budget::new(cap),
                rst_received: Budget::new(cap),
                accept: Budget::new(cap),
                overflow: Budget::new(cap),
            }),
            tracked: Mutex::new(procs::Tracked::default()),
            consistent: Mutex::new(()),
        };
        Arc::new(m.registered())
    }

    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "tracer_rst_sent",
            "TCP resets this host sent, by local port, kernel reason and owning process",
            self.rst_sent.clone(),
        );
        r.register(
            "tracer_rst_received",
            "TCP resets this host received, by service port (the local port unless it is ephemeral) and owning process",
            self.rst_received.clone(),
        );
        r.register(
            "tracer_accept_failures",
            "accept() calls that failed, by error, listener port and calling process",
            self.accept_failures.clone(),
        );
        r.register(
            "tracer_listen_overflows",
            "Connection attempts dropped by a listener (full accept queue), by port and owner",
            self.listen_overflows.clone(),
        );
        r.register(
            "tracer_lost_events",
            "Kernel records lost because the ring buffer was full",
            self.lost.clone(),
        );
        r.register(
            "tracer_process_open_fds",
            "Open file descriptors of a tracked process",
            self.fds.clone(),
        );
        r.register(
            "tracer_process_fd_limit",
            "RLIMIT_NOFILE soft limit of a tracked process",
            self.fd_limit.clone(),
        );
        r.register(
            "tracer_process_close_wait_sockets",
            "Sockets of a tracked process in CLOSE_WAIT (peer closed, process has not)",
            self.close_wait.clone(),
        );
        let x = &self.exchanges;
        r.register(
            "tracer_upstream_connections",
            "Connections of a process to a remote endpoint that sent or received since tracer started, by remote address:port and process",
            x.connections.clone(),
        );
        r.register(
            "tracer_upstream_busy_ratio",
            "Share of the last 10 s those connections spent with a request outstanding, 0..1",
            x.busy.clone(),
        );
        r.register(
            "tracer_upstream_exchange_seconds",
            "Request sent -> first reply byte on a connection to a remote endpoint, by remote address:port and process",
            x.upstream_time.clone(),
        );
        r.register(
            "tracer_listener_response_seconds",
            "Request read -> first response byte on connections accepted from a listener, by local port and process",
            x.served_time.clone(),
        );
        self
    }

    /// Counts one emitted event.
    pub fn observe(&self, e: &Event) {
        let comm = || e.comm.as_deref().unwrap_or(UNKNOWN).to_string();
        let port = || {
            e.local_port
                .map_or_else(|| UNKNOWN.into(), |p| p.to_string())
        };
        let count = e.count.unwrap_or(1);
        let mut b = lock(&self.budgets);
        match e.event {
            EventKind::RstSent => {
                let l = RstLabels {
                    local_port: port(),
                    reason: e
                        .reason
                        .as_ref()
                        .and_then(|r| r.as_deref())
                        .unwrap_or(UNKNOWN)
                        .to_string(),
                    comm: comm(),
                };
                let l = b.rst_sent.admit(l, |l| RstLabels {
                    local_port: OTHER.into(),
                    comm: OTHER.into(),
                    ..l
                });
                self.rst_sent.get_or_create(&l).inc_by(count);
            }
            EventKind::RstReceived => {
                let l = ServiceComm {
                    port: service_port(e.local_port, e.remote_port)
                        .map_or_else(|| UNKNOWN.into(), |p| p.to_string()),
                    comm: comm(),
                };
                let l = b.rst_received.admit(l, |_| ServiceComm {
                    port: OTHER.into(),
                    comm: OTHER.into(),
                });
                self.rst_received.get_or_create(&l).inc_by(count);
            }
            EventKind::AcceptFailed => {
                let l = AcceptLabels {
                    error: e.error.clone().unwrap_or_else(|| UNKNOWN.into()),
                    local_port: port(),
                    comm: comm(),
                };
                let l = b.accept.admit(l, |l| AcceptLabels {
                    local_port: OTHER.into(),
                    comm: OTHER.into(),
                    ..l
                });
                self.accept_failures.get_or_create(&l).inc_by(count);
            }
            EventKind::ListenOverflow => {
                let l = PortComm {
                    local_port: port(),
                    comm: comm(),
                };
                let l = b.overflow.admit(l, |_| fold_port_comm());
                self.listen_overflows.get_or_create(&l).inc_by(count);
            }
            EventKind::Lost => {
                self.lost.inc_by(count);
            }
            EventKind::StateChange => {}
        }
        drop(b);
        if let Some(pid) = e.pid {
            lock(&self.tracked).seen(pid);
        }
    }

    /// The Prometheus text format (version 0.0.4) of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let _g = lock(&self.consistent);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn fold_port_comm() -> PortComm {
    PortComm {
        local_port: OTHER.into(),
        comm: OTHER.into(),
    }
}

/// The content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Wraps an output sink: every event written is also counted.
pub struct MetricsSink {
    inner: Box<dyn Sink>,
    metrics: Arc<Metrics>,
}

pub fn wrap(inner: Box<dyn Sink>, metrics: Arc<Metrics>) -> Box<dyn Sink> {
    Box::new(MetricsSink { inner, metrics })
}

impl Sink for MetricsSink {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        self.metrics.observe(e);
        self.inner.event(e)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    fn summary(&mut self, ts: &str, r: &crate::report::Report) -> io::Result<()> {
        self.inner.summary(ts, r)
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.inner.reopen()
    }

    fn second(&mut self, s: &crate::sink::Second<'_>) {
        self.inner.second(s)
    }

    fn wants_seconds(&self) -> bool {
        self.inner.wants_seconds()
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
