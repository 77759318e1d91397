//! Last owners of connections closed moments ago, keyed by 4-tuple: an RST
//! that arrives after its socket is gone still names the process.

use std::collections::VecDeque;

use crate::event::Owner;
use tracer_common::socket_id::ConnKey;

/// How long a closed connection's owner is remembered (boot-time ns).
pub const TOMBSTONE_TTL_NS: u64 = 60_000_000_000;
/// At most this many tombstones; the oldest go first.
pub const MAX_TOMBSTONES: usize = 16_384;

#[derive(Default)]
pub struct Tombstones {
    map: rustc_hash::FxHashMap<ConnKey, (Owner, u64)>,
    order: VecDeque<(ConnKey, u64)>,
}

impl Tombstones {
    pub fn insert(&mut self, key: ConnKey, owner: Owner, now_ns: u64) {
        self.expire(now_ns);
        while self.map.len() >= MAX_TOMBSTONES {
            match self.order.pop_front() {
                Some((k, t)) => self.remove_if_at(&k, t),
                None => break,
            }
        }
        self.map.insert(key, (owner, now_ns));
        self.order.push_back((key, now_ns));
    }

    fn remove_if_at(&mut self, key: &ConnKey, at: u64) {
        if self.map.get(key).is_some_and(|(_, t)| *t == at) {
            self.map.remove(key);
        }
    }

    pub fn expire(&mut self, now_ns: u64) {
        while let Some(&(k, t)) = self.order.front() {
            if now_ns.saturating_sub(t) < TOMBSTONE_TTL_NS {
                break;
            }
            self.order.pop_front();
            self.remove_if_at(&k, t);
        }
    }

    /// The last owner of `key` if it closed within the TTL. An unknown
    /// namespace (0, e.g. a packet without a device) matches any namespace.
    pub fn get(&self, key: &ConnKey, now_ns: u64) -> Option<&Owner> {
        let fresh = |t: u64| now_ns.saturating_sub(t) < TOMBSTONE_TTL_NS;
        if let Some((o, t)) = self.map.get(key) {
            return fresh(*t).then_some(o);
        }
        if key.netns == 0 {
            return self
                .map
                .iter()
                .find(|(k, (_, t))| k.local == key.local && k.remote == key.remote && fresh(*t))
                .map(|(_, (o, _))| o);
        }
        None
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> ConnKey {
        ConnKey {
            netns: 1,
            local: ("127.0.0.1".parse().expect("test data"), port),
            remote: ("127.0.0.1".parse().expect("test data"), 9),
        }
    }

    fn owner(pid: u32) -> Owner {
        Owner::new(pid, b"srv".to_vec(), Vec::new(), None)
    }

    #[test]
    fn remembers_within_ttl_and_forgets_after() {
        let mut t = Tombstones::default();
        t.insert(key(80), owner(42), 1_000);
        assert_eq!(t.get(&key(80), 2_000).map(|o| o.pid), Some(42));
        assert!(t.get(&key(81), 2_000).is_none());
        assert!(t.get(&key(80), 1_000 + TOMBSTONE_TTL_NS).is_none());
        t.expire(1_000 + TOMBSTONE_TTL_NS);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn unknown_netns_matches_any() {
        let mut t = Tombstones::default();
        t.insert(key(80), owner(7), 0);
        let mut k = key(80);
        k.netns = 0;
        assert_eq!(t.get(&k, 1).map(|o| o.pid), Some(7));
    }

    #[test]
    fn newer_close_of_same_tuple_wins() {
        let mut t = Tombstones::default();
        t.insert(key(80), owner(1), 0);
        t.insert(key(80), owner(2), 10);
        assert_eq!(t.get(&key(80), 20).map(|o| o.pid), Some(2));
        // Expiring the first insert must not remove the newer one.
        t.expire(TOMBSTONE_TTL_NS + 5);
        assert_eq!(
            t.get(&key(80), TOMBSTONE_TTL_NS + 5).map(|o| o.pid),
            Some(2)
        );
    }
}
