//! Accept-queue overflow, per listener, in every network namespace.
//!
//! SYNs that reach a full accept queue are dropped on paths that carry no
//! drop reason on current kernels (see docs/attribution.md); what shows every
//! such drop, on every kernel, is the listener's own drop counter
//! (`SK_MEMINFO_DROPS` in sock_diag; `ss -ltm` prints it as dN) next to its
//! queue length and backlog. This module polls them and turns increases into
//! `listen_overflow` occurrences.
//!
//! Every few polls, while tracer counts sockets in CLOSE_WAIT, the same dump
//! also lists the CLOSE_WAIT sockets, so a count whose transition out was
//! missed (a full ring buffer) is mended within seconds, not at the next
//! full snapshot.

use std::collections::HashMap;

use tracer_common::socket_id::ConnKey;

use crate::snapshot::{self, NetnsRef, SocketEntry, TCP_CLOSE_WAIT, TCP_LISTEN};

/// Every this many polls (about seconds) CLOSE_WAIT sockets are listed too.
pub const CLOSE_WAIT_EVERY: u64 = 5;

/// The CLOSE_WAIT sockets of the namespaces one poll dumped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloseWaitSeen {
    /// Boot-time ns the poll started: entries newer than it may be missing.
    pub taken_ns: u64,
    /// The namespaces dumped.
    pub netns: Vec<u32>,
    /// CLOSE_WAIT sockets seen, and whether each has an inode (accepted:
    /// a process holds it) or not (still in its listener's queue).
    pub keys: HashMap<ConnKey, bool>,
}

/// What one poll found.
#[derive(Clone, Debug, Default)]
pub struct Poll {
    pub overflows: Vec<Overflow>,
    /// Present on the polls that listed CLOSE_WAIT sockets.
    pub close_wait: Option<CloseWaitSeen>,
}

/// One listener whose drop counter grew since the previous poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overflow {
    pub listener: SocketEntry,
    /// Drops since the previous poll.
    pub drops: u64,
}

/// Drop counters seen at the previous poll, keyed by (netns, socket inode).
#[derive(Default)]
pub struct ListenerMonitor {
    prev: HashMap<(u32, u64), u32>,
    /// Set after the first diff: from then on a listener seen for the first
    /// time was created while tracer watched, and all its drops are news.
    baselined: bool,
    /// Namespaces to poll; more are added as events name them.
    pub namespaces: Vec<NetnsRef>,
    /// Set by the caller while it counts CLOSE_WAIT sockets.
    pub close_wait_wanted: bool,
    polls: u64,
}

impl ListenerMonitor {
    /// Adds a namespace seen in an event, if it is not polled yet.
    pub fn watch_netns(&mut self, inode: u32) {
        if inode == 0 || self.namespaces.iter().any(|n| n.inode == inode) {
            return;
        }
        if let Some(ns) = snapshot::find_netns(inode) {
            self.namespaces.push(ns);
        }
    }

    /// Polls every namespace (blocking: setns threads). Namespaces that are
    /// gone are dropped from the list.
    pub fn poll(&mut self) -> Poll {
        self.polls += 1;
        let with_close_wait = self.close_wait_wanted && self.polls.is_multiple_of(CLOSE_WAIT_EVERY);
        let mut states = 1 << TCP_LISTEN;
        if with_close_wait {
            states |= 1 << TCP_CLOSE_WAIT;
        }
        let mut seen = CloseWaitSeen {
            taken_ns: crate::clock::Clock::boot_now(),
            ..CloseWaitSeen::default()
        };
        let mut listeners = Vec::new();
        self.namespaces
            .retain(|ns| match snapshot::dump_netns(ns, states) {
                Ok(entries) => {
                    seen.netns.push(ns.inode);
                    for e in entries {
                        if e.is_listener() {
                            listeners.push(e);
                        } else if e.state == TCP_CLOSE_WAIT {
                            seen.keys.insert(e.conn_key(), e.inode != 0);
                        }
                    }
                    true
                }
                Err(e) => {
                    log::debug!("listener poll of netns {} failed: {e}", ns.inode);
                    false
                }
            });
        Poll {
            overflows: self.diff(listeners),
            close_wait: with_close_wait.then_some(seen),
        }
    }

    /// Increases of drop counters against the previous poll. The first diff
    /// sets the baseline of the listeners that existed at start-up (drops
    /// before tracer started are not reported as happening now); listeners
    /// that appear later start from zero.
    pub fn diff(&mut self, listeners: Vec<SocketEntry>) -> Vec<Overflow> {
        let mut next = HashMap::with_capacity(listeners.len());
        let mut out = Vec::new();
        for l in listeners {
            let Some(drops) = l.drops else { continue };
            let key = (l.netns, l.inode);
            next.insert(key, drops);
            let before = match self.prev.get(&key) {
                Some(&b) => Some(b),
                None if self.baselined => Some(0),
                None => None,
            };
            if let Some(before) = before
                && drops > before
            {
                out.push(Overflow {
                    drops: (drops - before) as u64,
                    listener: l,
                });
            }
        }
        self.prev = next;
        self.baselined = true;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(inode: u64, drops: Option<u32>) -> SocketEntry {
        SocketEntry {
            netns: 1,
            family: 2,
            state: snapshot::TCP_LISTEN,
            local: "127.0.0.1:8080".parse().expect("test data"),
            remote: "0.0.0.0:0".parse().expect("test data"),
            inode,
            uid: 0,
            rqueue: 5,
            wqueue: 4,
            drops,
            tcp: None,
            cookie: 0,
        }
    }

    #[test]
    fn first_poll_is_baseline_then_increases_are_reported() {
        let mut m = ListenerMonitor::default();
        assert!(m.diff(vec![listener(10, Some(100))]).is_empty());
        assert!(m.diff(vec![listener(10, Some(100))]).is_empty());
        let out = m.diff(vec![listener(10, Some(107))]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].listener.inode, 10);
        assert_eq!(out[0].drops, 7);
        // A listener that appeared after start-up: all its drops are news.
        let out = m.diff(vec![listener(10, Some(107)), listener(11, Some(5))]);
        assert_eq!(
            out.iter()
                .map(|o| (o.listener.inode, o.drops))
                .collect::<Vec<_>>(),
            vec![(11, 5)]
        );
    }

    #[test]
    fn listeners_without_counters_are_skipped() {
        let mut m = ListenerMonitor::default();
        assert!(m.diff(vec![listener(10, None)]).is_empty());
        assert!(m.diff(vec![listener(10, None)]).is_empty());
    }
}
