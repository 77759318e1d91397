//! One finding of the verdict: the process it blames and its evidence
//! (the verdict's JSON).

use std::collections::BTreeMap;

use serde::Serialize;

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
    pub fn new(kind: Kind, pid: Option<u32>, comm: Option<String>) -> Self {
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
