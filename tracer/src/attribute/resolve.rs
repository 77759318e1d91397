//! Finding the owner of a socket the kernel side named none for, from what
//! the attributor has learned: the snapshot's holder of its inode (or
//! 4-tuple), a recently closed socket's owner (tombstones), else the owner
//! of the listener on its port.

use tracer_common::SockInfo;
use tracer_common::socket_id::ConnKey;

use super::procs::ProcSource;
use super::{Attributor, CLOSED_LISTENER_NS, tuple_hash};
use crate::event::{AttributedBy, Owner};

impl Attributor {
    /// The owner of a socket the kernel side named no owner for: the
    /// snapshot's holder of its inode (or 4-tuple), a recently closed
    /// socket's, else its listener's.
    pub(super) fn resolve_socket(
        &mut self,
        sock: &SockInfo,
        now_ns: u64,
        src: &dyn ProcSource,
    ) -> (Option<Owner>, AttributedBy) {
        if sock.netns != 0 && self.seen_netns.len() < 4096 {
            self.seen_netns.insert(sock.netns);
        }
        let key = ConnKey::of(sock);
        let ino = if sock.ino != 0 {
            Some(sock.ino)
        } else {
            key.and_then(|k| {
                let h = tuple_hash(&k);
                self.tuple_inodes
                    .binary_search_by_key(&h, |&(t, _)| t)
                    .ok()
                    .map(|i| self.tuple_inodes[i].1)
            })
        };
        if let Some(ino) = ino
            && let Some(pid) = self.inode_owners.get(&(sock.netns, ino)).copied()
        {
            return (
                Some(self.procs.owner_of_pid(pid, src)),
                AttributedBy::SocketOwner,
            );
        }
        if let Some(k) = key
            && let Some(o) = self.tombstones.get(&k, now_ns)
        {
            return (Some(o.clone()), AttributedBy::SocketOwner);
        }
        if sock.ino != 0 {
            // A live socket nobody is known to own: older than tracer and
            // unseen by the snapshot. A refresh will know it next time.
            self.wants_refresh = true;
        }
        if let Some(o) = self.listener_at(sock.netns, sock.lport, Some(now_ns)) {
            return (Some(o), AttributedBy::ListenerOwner);
        }
        (None, AttributedBy::None)
    }

    /// The owner of the listener on `port`: open, or closed within the
    /// tombstone TTL before `now_ns` (when given).
    pub(super) fn listener_at(&self, netns: u32, port: u16, now_ns: Option<u64>) -> Option<Owner> {
        let usable = |closed: &Option<u64>| match (closed, now_ns) {
            (None, _) => true,
            (Some(t), Some(now)) => now.saturating_sub(*t) < CLOSED_LISTENER_NS,
            (Some(_), None) => false,
        };
        if let Some((o, closed)) = self.listeners.get(&(netns, port))
            && usable(closed)
        {
            return Some(o.clone());
        }
        if netns == 0 {
            // Unknown namespace: only an unambiguous port match counts.
            let mut hits = self
                .listeners
                .iter()
                .filter(|((_, p), (_, closed))| *p == port && usable(closed));
            let first = hits.next();
            if hits.next().is_none() {
                return first.map(|(_, (o, _))| o.clone());
            }
        }
        None
    }
}
