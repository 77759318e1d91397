//! What findings are made of: the host as the end snapshot shows it, and
//! the findings themselves (the verdict's JSON).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// A process as seen at the end of the window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcView {
    pub comm: String,
    pub fd_count: u32,
    pub fd_limit: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerView {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub netns: u32,
    pub port: u16,
    pub backlog: u32,
    pub queued: u32,
}

#[derive(Clone, Debug, Default)]
pub struct HostView {
    pub processes: HashMap<u32, ProcView>,
    pub listeners: Vec<ListenerView>,
    /// pid -> (sockets in CLOSE_WAIT, age of the oldest in seconds where known).
    pub close_wait: HashMap<u32, (u64, Option<f64>)>,
    /// pids some of whose CLOSE_WAIT sockets were already there when tracer
    /// started: their age in `close_wait` is only a lower bound.
    pub close_wait_at_least: std::collections::HashSet<u32>,
    /// Every owned ESTABLISHED or CLOSE_WAIT connection.
    pub conns: Vec<super::stuck::ConnView>,
    /// Exchanges the kernel timed in the window.
    pub exchanges: HashMap<tracer_common::exchange::ExchKey, crate::exchange::ExchStat>,
    /// Outbound connections per (pid, netns, remote) at the window's start;
    /// `None` when no start snapshot was taken.
    pub start_outbound: Option<HashMap<Endpoint, u64>>,
    /// Upstream requests still open at the end, by endpoint: ns open so
    /// far (each at most the window).
    pub open: HashMap<Endpoint, f64>,
    /// The window's length in seconds.
    pub window_s: f64,
}

/// A process's remote endpoint: (pid, netns, remote address, remote port).
pub type Endpoint = (u32, u32, std::net::IpAddr, u16);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    FdExhaustion,
    AcceptQueueOverflow,
    CloseWaitPileup,
    UpstreamSaturation,
    ListenerLatency,
    RstStorm,
    PeerResets,
}

/// One finding: the process it blames and its evidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_emfile: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_s: Option<f64>,
    /// (extension) The oldest predates tracer: it is at least this old.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_at_least_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasons: Option<BTreeMap<String, u64>>,
    /// close_wait_pileup: request read, never answered / never read; with
    /// `answered` they add up to `count`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unanswered: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchanges: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange_ms_p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange_ms_p99: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_ms_p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_ms_p99: Option<f64>,
    /// Requests the process read or received and has not answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_comm: Option<String>,
}

impl Finding {
    pub(super) fn new(kind: Kind, pid: Option<u32>, comm: Option<String>) -> Self {
        Finding {
            kind,
            pid,
            comm,
            summary: String::new(),
            fd_count: None,
            fd_limit: None,
            accept_emfile: None,
            local_port: None,
            backlog: None,
            queued: None,
            overflows: None,
            count: None,
            oldest_s: None,
            oldest_at_least_s: None,
            reasons: None,
            unanswered: None,
            unread: None,
            answered: None,
            remote_addr: None,
            remote_port: None,
            connections: None,
            busy_ratio: None,
            exchanges: None,
            exchange_ms_p50: None,
            exchange_ms_p99: None,
            response_ms_p50: None,
            response_ms_p99: None,
            waiting: None,
            peer_pid: None,
            peer_comm: None,
        }
    }
}
