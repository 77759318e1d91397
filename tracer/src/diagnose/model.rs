//! What findings are made of: the host as the end snapshot shows it. The
//! findings themselves live in `crate::report`.

use std::collections::HashMap;

pub use crate::report::{Finding, Kind};

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
