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

/// Every this many polls (about seconds) CLOSE_WAIT sockets are listed too,
/// while the count may be off: records were lost since the last listing,
/// or some CLOSE_WAIT socket still waits in an accept queue (it counts once
/// a listing shows it accepted).
pub const CLOSE_WAIT_EVERY: u64 = 5;
/// Otherwise every event was seen and the count is exact; listing them
/// walks the kernel's whole connection table once per namespace (costly on
/// a host with 100k connections: some 50 ms of kernel time each), so it is
/// only a safety net, every five minutes.
pub const CLOSE_WAIT_SETTLED_EVERY: u64 = 300;

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
pub struct ListenerMonitor {
    prev: HashMap<(u32, u64), u32>,
    /// Set after the first diff: from then on a listener seen for the first
    /// time was created while tracer watched, and all its drops are news.
    baselined: bool,
    /// Namespaces to poll; more are added as events name them.
    pub namespaces: Vec<NetnsRef>,
    /// Set by the caller while it counts CLOSE_WAIT sockets.
    pub close_wait_wanted: bool,
    /// Set by the caller while some counted socket waits in an accept queue.
    pub close_wait_unheld: bool,
    /// The caller's lost-record total, and its value at the last listing.
    pub lost_total: u64,
    lost_at_listing: u64,
    polls: u64,
    last_listing: u64,
    /// Each namespace's `ListenDrops` at its last dump: a namespace whose
    /// counter has not moved is not dumped (no listener there dropped).
    netns_drops: HashMap<u32, u64>,
    /// The poll at which each namespace's counter last moved.
    netns_moved: HashMap<u32, u64>,
    /// A namespace whose counter has not moved for [`QUIET_AFTER`] polls is
    /// read every this many polls only (1: every poll). Drops are counters:
    /// a later read reports all of them, only later.
    pub quiet_every: u64,
}

/// Polls without a listener drop after which a namespace counts as quiet.
pub const QUIET_AFTER: u64 = 30;
/// How often `watch` reads a quiet namespace's counter (polls, ~seconds).
pub const QUIET_EVERY: u64 = 10;

impl Default for ListenerMonitor {
    fn default() -> Self {
        ListenerMonitor {
            prev: HashMap::new(),
            baselined: false,
            namespaces: Vec::new(),
            close_wait_wanted: false,
            close_wait_unheld: false,
            lost_total: 0,
            lost_at_listing: 0,
            polls: 0,
            last_listing: 0,
            netns_drops: HashMap::new(),
            netns_moved: HashMap::new(),
            quiet_every: QUIET_EVERY,
        }
    }
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
        let unsettled = self.close_wait_unheld || self.lost_total != self.lost_at_listing;
        let every = if unsettled {
            CLOSE_WAIT_EVERY
        } else {
            CLOSE_WAIT_SETTLED_EVERY
        };
        let with_close_wait =
            self.close_wait_wanted && self.polls.saturating_sub(self.last_listing) >= every;
        if with_close_wait {
            self.last_listing = self.polls;
            self.lost_at_listing = self.lost_total;
        }
        let mut states = 1 << TCP_LISTEN;
        if with_close_wait {
            states |= 1 << TCP_CLOSE_WAIT;
        }
        let mut seen = CloseWaitSeen {
            taken_ns: crate::clock::Clock::boot_now(),
            ..CloseWaitSeen::default()
        };
        let mut listeners = Vec::new();
        let mut dumped = Vec::new();
        let baselined = self.baselined;
        let (polls, quiet_every) = (self.polls, self.quiet_every.max(1));
        let netns_drops = &mut self.netns_drops;
        let netns_moved = &mut self.netns_moved;
        self.namespaces.retain(|ns| {
            let quiet = polls.saturating_sub(netns_moved.get(&ns.inode).copied().unwrap_or(0))
                > QUIET_AFTER;
            // Quiet namespaces take turns (spread by inode), every
            // `quiet_every` polls each.
            if baselined
                && !with_close_wait
                && quiet
                && !(polls + u64::from(ns.inode)).is_multiple_of(quiet_every)
            {
                return true;
            }
            // Every listener drop bumps the namespace's ListenDrops: while
            // it stands still there is nothing to look for (one small read
            // instead of a walk of the kernel's listener table).
            let counter = match snapshot::listen_drops(ns) {
                Ok(c) => c,
                Err(e) => {
                    log::debug!("listener poll of netns {} failed: {e}", ns.inode);
                    return false;
                }
            };
            if baselined
                && !with_close_wait
                && counter.is_some()
                && netns_drops.get(&ns.inode) == counter.as_ref()
            {
                return true;
            }
            log::trace!(
                "listener poll: dumping netns {} (ListenDrops {counter:?}, was {:?})",
                ns.inode,
                netns_drops.get(&ns.inode)
            );
            match snapshot::dump_netns(ns, states) {
                Ok(entries) => {
                    if let Some(c) = counter
                        && netns_drops.insert(ns.inode, c) != Some(c)
                    {
                        netns_moved.insert(ns.inode, polls);
                    }
                    dumped.push(ns.inode);
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
            }
        });
        let alive: Vec<u32> = self.namespaces.iter().map(|n| n.inode).collect();
        self.netns_drops.retain(|ns, _| alive.contains(ns));
        self.netns_moved.retain(|ns, _| alive.contains(ns));
        Poll {
            overflows: self.diff_in(listeners, Some(&dumped)),
            close_wait: with_close_wait.then_some(seen),
        }
    }

    /// Increases of drop counters against the previous poll. The first diff
    /// sets the baseline of the listeners that existed at start-up (drops
    /// before tracer started are not reported as happening now); listeners
    /// that appear later start from zero.
    pub fn diff(&mut self, listeners: Vec<SocketEntry>) -> Vec<Overflow> {
        self.diff_in(listeners, None)
    }

    /// [`ListenerMonitor::diff`] for the namespaces in `only` (all when
    /// `None`): the previous counters of other namespaces are kept.
    fn diff_in(&mut self, listeners: Vec<SocketEntry>, only: Option<&[u32]>) -> Vec<Overflow> {
        let mut next: HashMap<(u32, u64), u32> = match only {
            Some(dumped) => self
                .prev
                .iter()
                .filter(|((ns, _), _)| !dumped.contains(ns))
                .map(|(k, v)| (*k, *v))
                .collect(),
            None => HashMap::with_capacity(listeners.len()),
        };
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
    fn a_namespace_left_out_keeps_its_baseline() {
        let mut m = ListenerMonitor::default();
        let mut other = listener(20, Some(3));
        other.netns = 2;
        assert!(
            m.diff(vec![listener(10, Some(100)), other.clone()])
                .is_empty()
        );
        // Only namespace 1 dumped: namespace 2's listener is not forgotten,
        // so its next dump reports only what is new.
        assert!(
            m.diff_in(vec![listener(10, Some(100))], Some(&[1]))
                .is_empty()
        );
        other.drops = Some(5);
        let out = m.diff_in(vec![other], Some(&[2]));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].listener.inode, out[0].drops), (20, 2));
    }

    #[test]
    fn listeners_without_counters_are_skipped() {
        let mut m = ListenerMonitor::default();
        assert!(m.diff(vec![listener(10, None)]).is_empty());
        assert!(m.diff(vec![listener(10, None)]).is_empty());
    }
}
