//! Which process holds which socket, from the fd scan's (pid, netns,
//! inode) triples, and the snapshot's debug figures of memory.

use std::collections::HashMap;

use super::{Snapshot, proc};

/// VmHWM of this process, for the debug log.
pub(super) fn peak_rss() -> String {
    status_field("VmHWM:")
}

/// VmRSS of this process, for the debug log.
pub(super) fn rss_now() -> String {
    status_field("VmRSS:")
}

fn status_field(name: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Fills `owners`/`shared_owners` from (pid, pid's netns, socket inode)
/// triples: keyed by the socket's own netns where sock_diag saw the socket,
/// by the holder's netns otherwise.
pub(super) fn attribute(snap: &mut Snapshot, mut held: Vec<proc::HeldSocket>) {
    // Grouped by inode, lowest pid first (no allocation per socket: a big
    // host holds 100k of them).
    held.sort_unstable_by_key(|h| (h.inode, h.pid));
    held.dedup_by_key(|h| (h.inode, h.pid));
    snap.owners.reserve(held.len());
    let mut insert =
        |owners: &mut HashMap<(u32, u64), u32>, netns: u32, group: &[proc::HeldSocket]| {
            let Some(first) = group.first() else { return };
            owners.insert((netns, first.inode), first.pid);
            if group.len() > 1 {
                snap_shared(&mut snap.shared_owners, (netns, first.inode), group);
            }
        };
    // Socket inodes come from one global counter, so an inode seen by
    // sock_diag in namespace N and held by a process is that socket, even
    // when the process itself runs in another namespace.
    let mut matched = vec![false; held.len()];
    for s in snap.sockets.iter().filter(|s| s.inode != 0) {
        let i = held.partition_point(|h| h.inode < s.inode);
        let n = held[i..].iter().take_while(|h| h.inode == s.inode).count();
        if n > 0 && !matched[i] {
            insert(&mut snap.owners, s.netns, &held[i..i + n]);
            matched[i..i + n].fill(true);
        }
    }
    // Other sockets (UDP, unix, newer than the dump): the holder's netns.
    let mut i = 0;
    for group in held.chunk_by(|a, b| a.inode == b.inode) {
        if !matched[i] {
            insert(&mut snap.owners, group[0].netns, group);
        }
        i += group.len();
    }
}

fn snap_shared(
    shared: &mut HashMap<(u32, u64), Vec<u32>>,
    key: (u32, u64),
    group: &[proc::HeldSocket],
) {
    shared.insert(key, group.iter().map(|h| h.pid).collect());
}
