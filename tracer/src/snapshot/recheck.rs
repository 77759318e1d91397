//! Sockets a dump did not list although tracer has reason to think they
//! exist, asked for one by one.
//!
//! A sock_diag dump walks the kernel's connection table in chunks and
//! resumes each chunk by its position in a hash chain: a socket that
//! leaves a chain ahead of the walk meanwhile (a connection closing, a
//! FIN_WAIT2 orphan turning into TIME_WAIT) shifts the next one out of
//! the dump. On a busy host one dump can miss a socket or two (2,998 of
//! 3,000 CLOSE_WAIT sockets, docs/benchmarks.md). An exact lookup of the
//! 4-tuple (`sockdiag::lookup`) cannot skip: the sockets tracer tracks in
//! a state and a dump left out are looked up before they are dropped or
//! left uncounted.

use std::collections::{HashMap, HashSet};

use tracer_common::socket_id::ConnKey;

use super::{
    Snapshot, SnapshotError, SnapshotOptions, SocketEntry, TCP_CLOSE_WAIT, handles, sockdiag,
};

/// Looks up every key of `expected` the snapshot does not list in `state`
/// and adds those the kernel has in that state now. Returns how many were
/// added. Blocking (one netlink round trip per key): run it where the
/// snapshot was taken.
pub fn add_unlisted(snap: &mut Snapshot, expected: &[ConnKey], state: u8) -> usize {
    let listed: HashSet<ConnKey> = snap
        .sockets
        .iter()
        .filter(|s| s.state == state)
        .map(|s| s.conn_key())
        .collect();
    let mut by_netns: HashMap<u32, Vec<&ConnKey>> = HashMap::new();
    for k in expected.iter().filter(|k| !listed.contains(k)) {
        by_netns.entry(k.netns).or_default().push(k);
    }
    let mut found = Vec::new();
    for (inode, keys) in by_netns {
        found.extend(
            lookup_in(inode, &keys)
                .into_iter()
                .filter(|e| e.state == state),
        );
    }
    let added = found.len();
    if added > 0 {
        log::debug!("snapshot: {added} sockets the dump did not list, found by lookup");
    }
    snap.sockets.extend(found);
    added
}

/// The sockets of `keys` in namespace `inode` the kernel has now, over the
/// handle the snapshot's dump used; none when it has none (the namespace
/// is gone, or was not dumped).
fn lookup_in(inode: u32, keys: &[&ConnKey]) -> Vec<SocketEntry> {
    let Some(handle) = handles::kept_handle(inode) else {
        log::debug!("snapshot: no kept sock_diag socket in netns {inode} for a lookup");
        return Vec::new();
    };
    let h = handles::lock(&handle);
    let mut out = Vec::new();
    for key in keys {
        match sockdiag::lookup(&h.diag, h.inode, key) {
            Ok(Some(e)) => out.push(e),
            Ok(None) => {}
            Err(e) => {
                log::debug!("snapshot: lookup of {key:?} in netns {inode}: {e}");
                break;
            }
        }
    }
    out
}

/// A snapshot (default options), then the CLOSE_WAIT sockets tracer tracks
/// that its dump did not list looked up one by one (`add_unlisted`): the
/// end of a diagnose window or of a `--summary-every` period, whose
/// verdict counts them.
pub fn take_snapshot_expecting(close_wait: &[ConnKey]) -> Result<Snapshot, SnapshotError> {
    let mut snap = super::take_snapshot(&SnapshotOptions::default())?;
    add_unlisted(&mut snap, close_wait, TCP_CLOSE_WAIT);
    Ok(snap)
}
