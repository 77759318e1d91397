//! Finding network namespaces and running code inside one.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

use super::{SnapshotError, SnapshotOptions};

/// A network namespace and a file that can be opened to enter it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsRef {
    /// The namespace's inode (what `ip netns identify`, `lsns` and the
    /// kernel's `net->ns.inum` call it).
    pub inode: u32,
    /// `/run/netns/NAME` when the namespace has a name, else
    /// `/proc/PID/ns/net` of one process inside it.
    pub path: PathBuf,
    /// One process inside it (the lowest pid), if any.
    pub pid: Option<u32>,
    /// The file name under one of the namespace directories (`ip netns`).
    pub name: Option<String>,
}

/// The result of one pass over `/proc` and the namespace directories.
pub(crate) struct Listing {
    pub namespaces: Vec<NetnsRef>,
    pub netns_of_pid: std::collections::HashMap<u32, u32>,
    pub self_netns: u32,
    pub warnings: Vec<String>,
    pub truncated: bool,
}

const SELF_NET: &str = "/proc/self/ns/net";

/// True for the errors a process that exited while being read gives.
pub(crate) fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

fn io_err(path: &Path, source: io::Error) -> SnapshotError {
    SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Namespace inodes fit in 32 bits (`unsigned int inum` in the kernel).
fn ns_inode(meta: &fs::Metadata) -> u32 {
    meta.ino() as u32
}

/// Inode of this process's network namespace.
pub fn self_netns() -> Result<u32, SnapshotError> {
    let meta = fs::metadata(SELF_NET).map_err(|e| io_err(Path::new(SELF_NET), e))?;
    Ok(ns_inode(&meta))
}

/// Inode of the network namespace of `pid`, `None` when it cannot be read
/// (exited, or not permitted).
pub fn netns_of(pid: u32) -> Option<u32> {
    fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| ns_inode(&m))
}

/// Every network namespace: the ones processes run in and the ones bound
/// under `opts.netns_dirs`. This process's own namespace comes first.
pub fn list_netns(opts: &SnapshotOptions) -> Result<Vec<NetnsRef>, SnapshotError> {
    scan(opts).map(|l| l.namespaces)
}

/// The namespace with this inode, found by a fresh scan.
pub fn find_netns(inode: u32) -> Option<NetnsRef> {
    list_netns(&SnapshotOptions::default())
        .ok()?
        .into_iter()
        .find(|n| n.inode == inode)
}

pub(crate) fn scan(opts: &SnapshotOptions) -> Result<Listing, SnapshotError> {
    let self_path = Path::new(SELF_NET);
    let self_meta = fs::metadata(self_path).map_err(|e| io_err(self_path, e))?;
    // Every namespace file lives on the one nsfs; anything else under
    // /run/netns is a stale mount point.
    let nsfs_dev = self_meta.dev();
    let self_netns = ns_inode(&self_meta);
    let mut listing = Listing {
        namespaces: vec![NetnsRef {
            inode: self_netns,
            path: self_path.to_path_buf(),
            pid: None,
            name: None,
        }],
        netns_of_pid: Default::default(),
        self_netns,
        warnings: Vec::new(),
        truncated: false,
    };

    // namespace inode -> index in `listing.namespaces`
    let mut index: std::collections::HashMap<u32, usize> = [(self_netns, 0)].into();

    let (pids, truncated) =
        super::proc::list_pids(opts.max_pids).map_err(|e| io_err(Path::new("/proc"), e))?;
    listing.truncated = truncated;
    for pid in pids {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        match fs::metadata(&path) {
            Ok(meta) if meta.dev() == nsfs_dev => {
                let inode = ns_inode(&meta);
                listing.netns_of_pid.insert(pid, inode);
                if let Some(&i) = index.get(&inode) {
                    // /proc lists pids in ascending order: the first is the lowest.
                    listing.namespaces[i].pid.get_or_insert(pid);
                } else {
                    index.insert(inode, listing.namespaces.len());
                    listing.namespaces.push(NetnsRef {
                        inode,
                        path,
                        pid: Some(pid),
                        name: None,
                    });
                }
            }
            Ok(_) => {}
            Err(e) if is_gone(&e) => {}
            Err(e) => listing.warnings.push(format!("{}: {e}", path.display())),
        }
    }

    for dir in &opts.netns_dirs {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                listing.warnings.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if meta.dev() != nsfs_dev {
                continue;
            }
            let inode = ns_inode(&meta);
            let name = entry.file_name().to_string_lossy().into_owned();
            match index
                .get(&inode)
                .and_then(|&i| listing.namespaces.get_mut(i))
            {
                Some(known) => {
                    if known.name.is_none() {
                        known.name = Some(name);
                        // A bind mount outlives any process: a better handle.
                        if known.inode != self_netns {
                            known.path = path;
                        }
                    }
                }
                None => {
                    index.insert(inode, listing.namespaces.len());
                    listing.namespaces.push(NetnsRef {
                        inode,
                        path,
                        pid: None,
                        name: Some(name),
                    });
                }
            }
        }
    }
    Ok(listing)
}

/// Runs `f` on a new thread that first joins the namespace `ns`, and waits
/// for it. The caller's thread never changes namespace.
pub(crate) fn in_netns<T, F>(ns: &NetnsRef, f: F) -> Result<T, SnapshotError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, SnapshotError> + Send + 'static,
{
    let gone = |found| SnapshotError::NetnsGone {
        expected: ns.inode,
        found,
        path: ns.path.clone(),
    };
    let file = match File::open(&ns.path) {
        Ok(file) => file,
        Err(e) if is_gone(&e) => return Err(gone(None)),
        Err(e) => return Err(io_err(&ns.path, e)),
    };
    let meta = file.metadata().map_err(|e| io_err(&ns.path, e))?;
    if ns_inode(&meta) != ns.inode {
        // The pid was reused, or the name now points elsewhere.
        return Err(gone(Some(ns_inode(&meta))));
    }
    let (inode, path) = (ns.inode, ns.path.clone());
    let worker = std::thread::Builder::new()
        .name(format!("ns-{inode}"))
        .spawn(move || {
            // A new thread starts in its creator's namespace; when that is
            // already the target, skip setns() (it needs CAP_SYS_ADMIN even
            // then, and sock_diag of one's own namespace does not).
            let here = fs::metadata("/proc/thread-self/ns/net").map(|m| ns_inode(&m));
            if here.ok() != Some(inode) {
                // setns() changes the namespace of this thread only; it ends
                // right after `f`, so the change never leaks to other work.
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| {
                    SnapshotError::Setns {
                        netns: inode,
                        path,
                        source,
                    }
                })?;
            }
            drop(file);
            f()
        })
        .map_err(|e| SnapshotError::Thread(format!("cannot spawn: {e}")))?;
    worker
        .join()
        .map_err(|_| SnapshotError::Thread(format!("worker for netns {inode} panicked")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_lists_own_netns_first() {
        let list = list_netns(&SnapshotOptions::default()).expect("list namespaces");
        let own = self_netns().expect("own netns");
        assert_eq!(list[0].inode, own);
        assert_eq!(netns_of(std::process::id()), Some(own));
        let mut inodes: Vec<u32> = list.iter().map(|n| n.inode).collect();
        inodes.sort_unstable();
        inodes.dedup();
        assert_eq!(inodes.len(), list.len(), "each namespace once");
    }

    #[test]
    fn snapshot_in_netns_rejects_a_changed_handle() {
        let own = self_netns().expect("own netns");
        let wrong = NetnsRef {
            inode: own.wrapping_add(1),
            path: PathBuf::from(SELF_NET),
            pid: None,
            name: None,
        };
        let err = in_netns(&wrong, || Ok(())).expect_err("inode mismatch");
        assert!(matches!(err, SnapshotError::NetnsGone { found: Some(f), .. } if f == own));
    }
}
