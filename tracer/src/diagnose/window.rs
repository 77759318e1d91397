//! A window of enriched events, aggregated for the verdict. Fed through the
//! same `Sink` interface the outputs use (diagnose's `collect::DiagnoseSink`),
//! so diagnose sees exactly what watch would print.

use std::collections::{BTreeMap, HashMap};

use crate::event::{Event, EventKind};
pub use crate::report::Counters;

/// The port a group of RSTs sent is keyed by: a local one (a service's,
/// a closed port's), or the remote one of connections the owner made,
/// whose local port is a new one each time. Which side is the service's is
/// the kernel side's decision for each reset (`Event::peer_is_service`),
/// the same that keys its storms, so a storm's single lines and its
/// aggregated ones land in one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RstPort {
    Local(u16),
    Remote(u16),
}

impl RstPort {
    /// The port a RST line is grouped by: the remote one when the kernel
    /// said the peer is the service, for a storm line keyed by the remote
    /// port (`local_sample`, which comes with that word) and for a reset
    /// in SYN_SENT (a connect, whatever the flag says); the local one
    /// otherwise.
    pub fn of(e: &Event) -> RstPort {
        let syn_sent = e.state.as_ref().and_then(|s| s.as_deref()) == Some("SYN_SENT");
        if e.peer_is_service || e.local_sample.is_some() || syn_sent {
            RstPort::Remote(e.remote_port.unwrap_or(0))
        } else {
            RstPort::Local(e.local_port.unwrap_or(0))
        }
    }
}

/// RSTs sent from one local port (or on connections to one remote port),
/// by owner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RstGroup {
    pub comm: Option<String>,
    pub count: u64,
    pub reasons: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcceptGroup {
    pub comm: Option<String>,
    pub count: u64,
    pub fd_count: Option<u32>,
    pub fd_limit: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverflowGroup {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub drops: u64,
    pub backlog: u32,
    pub queued: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Window {
    pub counters: Counters,
    /// (owner pid, local port or remote port) -> RSTs sent.
    pub rst_sent: HashMap<(Option<u32>, RstPort), RstGroup>,
    /// owner pid -> (comm, RSTs received: peers resetting its connections).
    pub rst_received: HashMap<Option<u32>, (Option<String>, u64)>,
    /// (pid, listener port, error name) -> accept failures.
    pub accept_failed: HashMap<(Option<u32>, Option<u16>, String), AcceptGroup>,
    /// (netns, listener port) -> overflow drops.
    pub overflows: HashMap<(Option<u32>, u16), OverflowGroup>,
}

/// `to = from`, reusing `to`'s buffer (as `clone_from` would).
fn copy_name(to: &mut Option<String>, from: Option<&str>) {
    match (to.as_mut(), from) {
        (Some(t), Some(f)) => {
            t.clear();
            t.push_str(f);
        }
        (_, f) => *to = f.map(str::to_string),
    }
}

impl Window {
    pub fn add(&mut self, e: &Event) {
        match e.event {
            EventKind::RstSent => {
                // A storm line stands for `count` resets, a plain one for 1.
                let n = e.count.unwrap_or(1);
                self.counters.rst_sent += n;
                let g = self.rst_sent.entry((e.pid, RstPort::of(e))).or_default();
                g.count += n;
                copy_name(&mut g.comm, e.comm.as_deref());
                let reason = e.reason.as_ref().and_then(|r| r.as_deref());
                let reason = reason.unwrap_or("UNKNOWN");
                match g.reasons.get_mut(reason) {
                    Some(c) => *c += n,
                    None => {
                        g.reasons.insert(reason.to_string(), n);
                    }
                }
            }
            EventKind::RstReceived => {
                let n = e.count.unwrap_or(1);
                self.counters.rst_received += n;
                let g = self.rst_received.entry(e.pid).or_insert((None, 0));
                copy_name(&mut g.0, e.comm.as_deref());
                g.1 += n;
            }
            EventKind::AcceptFailed => {
                let n = e.count.unwrap_or(1);
                self.counters.accept_failed += n;
                let key = (e.pid, e.local_port, e.error.clone().unwrap_or_default());
                let g = self.accept_failed.entry(key).or_default();
                g.count += n;
                copy_name(&mut g.comm, e.comm.as_deref());
                if let Some(c) = e.fd_count.flatten() {
                    g.fd_count = Some(c);
                }
                if let Some(l) = e.fd_limit.flatten() {
                    g.fd_limit = Some(l);
                }
            }
            EventKind::ListenOverflow => {
                let n = e.count.unwrap_or(0);
                self.counters.listen_overflow += n;
                let g = self
                    .overflows
                    .entry((e.netns, e.local_port.unwrap_or(0)))
                    .or_default();
                g.drops += n;
                g.backlog = e.backlog.unwrap_or(g.backlog);
                g.queued = e.queued.unwrap_or(g.queued);
                if e.pid.is_some() {
                    g.pid = e.pid;
                    copy_name(&mut g.comm, e.comm.as_deref());
                }
            }
            EventKind::Lost => self.counters.lost += e.count.unwrap_or(0),
            EventKind::StateChange => {}
        }
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
