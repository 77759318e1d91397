//! Attribution: which process an event belongs to, and how that was found.
//!
//! In order: the owner the kernel side found (the task holding the socket
//! lock, or the owner map filled where the kernel runs in the owner's
//! context); the holder of the socket's inode in the start-up snapshot
//! (sockets older than tracer); the last owner of the same 4-tuple closed
//! moments ago (tombstones); the owner of the listener on the local port;
//! else none. See docs/attribution.md.

pub mod cgroups;
pub mod procs;
pub mod tombstones;

mod resolve;

use std::collections::HashMap;

use rustc_hash::{FxHashMap, FxHashSet};

use tracer_common::socket_id::ConnKey;
use tracer_common::{RstRecord, SockInfo, StateRecord, TaskInfo, owner_source};

use crate::event::{AttributedBy, Owner};
use crate::snapshot::Snapshot;
use procs::{ProcSource, Procs};
use tombstones::Tombstones;

/// How long a closed listener still owns RSTs to its port: the resets of
/// its accept queue go out while it closes; later RSTs to that port answer
/// clients of a port nobody listens on any more, and name nobody.
const CLOSED_LISTENER_NS: u64 = 2_000_000_000;

const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LISTEN: u8 = 10;

/// A socket sitting in CLOSE_WAIT: the peer closed, the owner has not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseWait {
    pub pid: Option<u32>,
    /// Boot-time ns it entered CLOSE_WAIT; `None` when it was already there
    /// at start-up (age at least the time since then).
    pub since_ns: Option<u64>,
    /// Accepted: the process holds it (an fd). A child still in its
    /// listener's accept queue (no inode yet) is not held; a poll or a
    /// snapshot that shows its inode makes it so.
    pub held: bool,
}

#[derive(Default)]
pub struct Attributor {
    pub procs: Procs,
    tombstones: Tombstones,
    /// (netns, port) -> listener owner and, once closed, when: a closing
    /// listener resets the connections still in its accept queue right after
    /// it leaves LISTEN, and those RSTs belong to its owner.
    listeners: FxHashMap<(u32, u16), (Owner, Option<u64>)>,
    /// (netns, listener inode) -> the process that called listen() on it,
    /// for listeners that appeared since start: one socket, one owner,
    /// where several share a port (SO_REUSEPORT).
    listen_inodes: FxHashMap<(u32, u64), Owner>,
    /// (netns, socket inode) -> pid, from snapshots.
    inode_owners: HashMap<(u32, u64), u32>,
    /// 4-tuple -> socket inode, from snapshots (records without an inode):
    /// (hash of the 4-tuple, inode), sorted: half the memory of a map
    /// over a big host's 100k sockets; looked up only for records without
    /// an inode.
    tuple_inodes: Vec<(u64, u64)>,
    /// Sockets in CLOSE_WAIT now.
    pub close_wait: FxHashMap<ConnKey, CloseWait>,
    /// CLOSE_WAIT sockets the last listing (snapshot or poll) of their
    /// namespace did not show. A dump can skip a socket when the kernel's
    /// connection table changes under it (snapshot::recheck), so an entry
    /// is dropped only when two listings in a row miss it.
    close_wait_missed: FxHashSet<ConnKey>,
    /// Set when an event on a live socket found no owner: a fresh snapshot
    /// may know it (the caller decides when, rate limited).
    pub wants_refresh: bool,
    /// Boot-time ns of the snapshot the attributor was seeded with.
    pub seeded_at_ns: Option<u64>,
    /// Network namespaces named by events since last drained (for the
    /// listener poller).
    pub seen_netns: FxHashSet<u32>,
}

/// Whether a tracked CLOSE_WAIT socket stays after a listing of its
/// namespace that `listed` it or not: a first miss is remembered, a second
/// in a row drops it (and forgets the miss).
fn kept_unless_missed_twice(missed: &mut FxHashSet<ConnKey>, k: &ConnKey, listed: bool) -> bool {
    if listed {
        missed.remove(k);
        return true;
    }
    if missed.remove(k) {
        return false;
    }
    missed.insert(*k);
    true
}

impl Attributor {
    /// Learns what existed before attach (or since the last refresh). A
    /// snapshot replaces what earlier ones said about inodes, so memory
    /// follows the host's sockets over weeks of refreshes; CLOSE_WAIT entries
    /// older than the snapshot that it no longer shows are dropped (their
    /// transition out was missed, e.g. lost in a full ring buffer).
    #[cfg(test)]
    pub fn seed(&mut self, snap: &Snapshot, now_ns: u64) {
        self.seed_sockets(snap, now_ns);
        self.inode_owners = snap.owners.clone();
    }

    /// `Attributor::seed` taking the snapshot: its sockets are freed and
    /// its owner map moves in, so a big host's snapshot and the
    /// attributor's copy of it never coexist (peak memory).
    pub fn seed_owned(&mut self, mut snap: Snapshot, now_ns: u64) {
        self.seed_sockets(&snap, now_ns);
        snap.sockets = Vec::new();
        self.inode_owners = std::mem::take(&mut snap.owners);
    }

    /// Drops what the last snapshot said about inodes and 4-tuples, to free
    /// their memory before a refresh builds the next (records that need
    /// them wait for it).
    pub fn forget_snapshot(&mut self) {
        self.inode_owners = HashMap::new();
        self.tuple_inodes = Vec::new();
    }

    fn seed_sockets(&mut self, snap: &Snapshot, now_ns: u64) {
        for info in snap.processes.values() {
            self.procs.seed(info);
        }
        self.tuple_inodes = Vec::with_capacity(snap.sockets.len());
        let mut in_close_wait = std::collections::HashSet::new();
        for s in &snap.sockets {
            let key = s.conn_key();
            if s.inode != 0 {
                self.tuple_inodes.push((tuple_hash(&key), s.inode));
            }
            let pid = snap.owner_of(s);
            if s.state == TCP_LISTEN
                && let Some(pid) = pid
            {
                let owner = self.procs.owner_of_pid(pid, &procs::LiveProc);
                self.listeners
                    .insert((s.netns, s.local.port()), (owner, None));
            }
            if s.state == TCP_CLOSE_WAIT {
                in_close_wait.insert(key);
                self.close_wait
                    .entry(key)
                    .or_insert(CloseWait {
                        pid,
                        since_ns: None,
                        held: false,
                    })
                    .held = s.inode != 0;
            }
        }
        // Sorted for lookups; a 4-tuple seen twice (listeners sharing a
        // port) keeps one inode, as a map would.
        self.tuple_inodes.sort_unstable();
        self.tuple_inodes.dedup_by_key(|e| e.0);
        if snap.taken_ns != 0 {
            let missed = &mut self.close_wait_missed;
            self.close_wait.retain(|k, cw| {
                let listed =
                    in_close_wait.contains(k) || cw.since_ns.is_some_and(|t| t >= snap.taken_ns);
                kept_unless_missed_twice(missed, k, listed)
            });
        }
        if self.seeded_at_ns.is_none() {
            self.seeded_at_ns = Some(now_ns);
        }
        self.wants_refresh = false;
    }

    /// The owner of an RST's socket and how it was found.
    pub fn rst_owner(
        &mut self,
        rec: &RstRecord,
        src: &dyn ProcSource,
    ) -> (Option<Owner>, AttributedBy) {
        self.socket_owner(
            &rec.sock,
            &rec.owner,
            rec.owner_source,
            rec.header.ts_boot_ns,
            src,
        )
    }

    /// The owner of a listener found by a listener poll, by what identifies
    /// that one socket before its port: the process the kernel saw accept
    /// from it last (`accepting`, from the kernel's listener map: the one
    /// draining its queue, whoever created it), else the process that
    /// called listen() on it, else the lowest pid holding it in the
    /// snapshot, else the listener on its port.
    pub fn listener_owner(
        &mut self,
        netns: u32,
        port: u16,
        inode: u64,
        accepting: Option<&TaskInfo>,
        src: &dyn ProcSource,
    ) -> (Option<Owner>, AttributedBy) {
        if let Some(t) = accepting.filter(|t| t.tgid != 0) {
            return (
                Some(self.procs.owner_of_task(t, src)),
                AttributedBy::SocketOwner,
            );
        }
        if let Some(o) = self.listen_inodes.get(&(netns, inode)) {
            return (Some(o.clone()), AttributedBy::SocketOwner);
        }
        if let Some(pid) = self.inode_owners.get(&(netns, inode)).copied() {
            return (
                Some(self.procs.owner_of_pid(pid, src)),
                AttributedBy::SocketOwner,
            );
        }
        match self.listener_at(netns, port, Some(crate::clock::Clock::boot_now())) {
            Some(o) => (Some(o), AttributedBy::SocketOwner),
            None => {
                self.wants_refresh = true;
                (None, AttributedBy::None)
            }
        }
    }

    fn socket_owner(
        &mut self,
        sock: &SockInfo,
        kernel_owner: &TaskInfo,
        source: u8,
        now_ns: u64,
        src: &dyn ProcSource,
    ) -> (Option<Owner>, AttributedBy) {
        let kernel_answer = match source {
            owner_source::LOCKED_CURRENT if kernel_owner.tgid != 0 => {
                Some(AttributedBy::CurrentTask)
            }
            owner_source::SOCKET_MAP if kernel_owner.tgid != 0 => Some(AttributedBy::SocketOwner),
            _ => None,
        };
        if let Some(by) = kernel_answer {
            if !is_own(kernel_owner) {
                return (Some(self.procs.owner_of_task(kernel_owner, src)), by);
            }
            // tracer itself, on a socket it may not hold: see `is_own`.
            // Its holder as for an unknown owner; tracer when none is
            // known (its metrics connections are its own).
            return match self.resolve_socket(sock, now_ns, src) {
                (Some(o), found_by) => (Some(o), found_by),
                (None, _) => (Some(self.procs.owner_of_task(kernel_owner, src)), by),
            };
        }
        self.resolve_socket(sock, now_ns, src)
    }

    /// Updates listeners, CLOSE_WAIT and tombstones from a state change;
    /// returns the owner of the socket.
    pub fn on_state(
        &mut self,
        rec: &StateRecord,
        src: &dyn ProcSource,
    ) -> (Option<Owner>, AttributedBy) {
        let now = rec.header.ts_boot_ns;
        let (owner, by) = if rec.new_state == TCP_LISTEN && rec.owner.tgid != 0 {
            (
                Some(self.procs.owner_of_task(&rec.owner, src)),
                AttributedBy::SocketOwner,
            )
        } else {
            self.socket_owner(&rec.sock, &rec.owner, rec.owner_source, now, src)
        };
        let key = ConnKey::of(&rec.sock);
        if rec.new_state == TCP_LISTEN
            && let Some(o) = &owner
        {
            // Forget listeners closed longer ago than the tombstone TTL.
            self.listeners.retain(|_, (_, closed)| {
                closed.is_none_or(|t| now.saturating_sub(t) < CLOSED_LISTENER_NS)
            });
            self.listeners
                .insert((rec.sock.netns, rec.sock.lport), (o.clone(), None));
            if rec.sock.ino != 0 {
                self.listen_inodes
                    .insert((rec.sock.netns, rec.sock.ino), o.clone());
            }
        }
        // LISTEN -> CLOSE is the listener closing; LISTEN -> SYN_RECV is a
        // child socket cloned from it.
        if rec.old_state == TCP_LISTEN && rec.new_state == TCP_CLOSE {
            self.listen_inodes.remove(&(rec.sock.netns, rec.sock.ino));
            if let Some((_, closed)) = self.listeners.get_mut(&(rec.sock.netns, rec.sock.lport)) {
                *closed = Some(now);
            }
        }
        if let Some(k) = key {
            if rec.new_state == TCP_CLOSE_WAIT {
                self.close_wait.insert(
                    k,
                    CloseWait {
                        pid: owner.as_ref().map(|o| o.pid),
                        since_ns: Some(now),
                        held: rec.sock.ino != 0,
                    },
                );
            }
            if rec.old_state == TCP_CLOSE_WAIT {
                self.close_wait.remove(&k);
                self.close_wait_missed.remove(&k);
            }
            if rec.new_state == TCP_CLOSE {
                self.close_wait.remove(&k);
                self.close_wait_missed.remove(&k);
                if let Some(o) = &owner {
                    self.tombstones.insert(k, o.clone(), now);
                }
            }
        }
        (owner, by)
    }

    /// Forgets the CLOSE_WAIT sockets a listener poll no longer shows in the
    /// namespaces it dumped (their transition out was missed), unless they
    /// entered the state after the poll began.
    pub fn reconcile_close_wait(&mut self, seen: &crate::overflow::CloseWaitSeen) {
        let missed = &mut self.close_wait_missed;
        self.close_wait.retain(|k, cw| {
            if let Some(&held) = seen.keys.get(k) {
                // Accepted since (or still queued): as the poll shows it.
                cw.held = held;
                missed.remove(k);
                return true;
            }
            if !seen.netns.contains(&k.netns) || cw.since_ns.is_some_and(|t| t >= seen.taken_ns) {
                return true;
            }
            kept_unless_missed_twice(missed, k, false)
        });
    }

    /// The CLOSE_WAIT sockets tracked now (for an end-of-window snapshot to
    /// look up those its dump does not list: `snapshot::recheck`).
    pub fn close_wait_keys(&self) -> Vec<ConnKey> {
        self.close_wait.keys().copied().collect()
    }

    /// Whether some CLOSE_WAIT socket counted is still in an accept queue.
    pub fn close_wait_unheld(&self) -> bool {
        self.close_wait.values().any(|cw| !cw.held)
    }

    /// CLOSE_WAIT sockets each process holds (accepted or connected, not
    /// waiting in an accept queue), per owning pid: (count, oldest entry time; `None`
    /// in the second field means some were there before tracer started).
    pub fn close_wait_by_pid(&self) -> HashMap<Option<u32>, (u64, Option<u64>, bool)> {
        let mut out: HashMap<Option<u32>, (u64, Option<u64>, bool)> = HashMap::new();
        for cw in self.close_wait.values().filter(|cw| cw.held) {
            let e = out.entry(cw.pid).or_insert((0, None, false));
            e.0 += 1;
            match cw.since_ns {
                Some(t) => e.1 = Some(e.1.map_or(t, |o: u64| o.min(t))),
                None => e.2 = true,
            }
        }
        out
    }
}

/// Whether the kernel side's owner is tracer's own process. tracer's
/// snapshot readers (the task_file iterator, the /proc/PID/fd fallback)
/// hold a reference to every open file for a moment; when a process closes
/// a socket meanwhile, tracer drops the last reference and the kernel
/// closes (and may reset) the socket in tracer's thread, which then looks
/// like the socket's owner (locked by it, or learned at that close).
pub fn is_own(task: &TaskInfo) -> bool {
    static OWN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    task.tgid != 0 && task.tgid == *OWN.get_or_init(std::process::id)
}

/// The key of `tuple_inodes`: a 64-bit SipHash of the 4-tuple and netns,
/// 8 bytes instead of the 44 of a [`ConnKey`] (a host with 100k sockets
/// keeps one per socket). Two of 100k keys collide with odds of about
/// 1 in 10^9; the inode found is then checked against the netns in
/// `inode_owners`.
fn tuple_hash(key: &ConnKey) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
