//! Where the snapshot learns which process holds which socket: by default
//! a `readlink` of every entry of every `/proc/PID/fd`; when the session
//! registered one ([`set_fd_source`]), the kernel's task-file iterator,
//! which lists every open file of every process in one read.
//!
//! The iterator reports kernel (init-namespace) pids, as every event does;
//! `/proc` reports this process's pid namespace's. When the two differ
//! (tracer in a pid namespace of its own) the iterator is not used.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt as _;
use std::sync::{Arc, Mutex};

use tracer_common::task_file::TaskFileRecord;

use super::proc::{FdScan, HeldSocket};

/// What a source lists: every socket fd, and how many fds each process
/// has (other files are only counted: a big host has 100k of them).
#[derive(Debug, Default)]
pub struct TaskFiles {
    pub sockets: Vec<TaskFileRecord>,
    pub fd_counts: HashMap<u32, u32>,
}

impl TaskFiles {
    pub fn add(&mut self, r: TaskFileRecord) {
        let n = self.fd_counts.entry(r.tgid).or_insert(0);
        *n = n.saturating_add(1);
        if r.is_socket() {
            self.sockets.push(r);
        }
    }
}

/// Lists every open file of every process, each file table once (the
/// task_file iterator skips threads sharing their leader's since 5.9).
pub trait FdSource: Send + Sync {
    fn read(&self) -> std::io::Result<TaskFiles>;
}

static SOURCE: Mutex<Option<Arc<dyn FdSource>>> = Mutex::new(None);

/// Registers (or, with `None`, removes) the source later snapshots use.
pub fn set_fd_source(source: Option<Arc<dyn FdSource>>) {
    *SOURCE.lock().unwrap_or_else(|p| p.into_inner()) = source;
}

fn source() -> Option<Arc<dyn FdSource>> {
    SOURCE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Every open file from the registered source; `None` when there is none,
/// it failed, or its pids are not this process's (`/proc`'s).
pub(crate) fn read_checked() -> Option<TaskFiles> {
    let source = source()?;
    // A socket only this call holds: the iterator must report it under
    // this process's /proc pid, or the pid namespaces differ.
    let probe = std::os::unix::net::UnixDatagram::unbound().ok()?;
    let probe_ino = std::fs::metadata(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd as _;
        probe.as_raw_fd()
    }))
    .ok()?
    .ino();
    let files = match source.read() {
        Ok(r) => r,
        Err(e) => {
            log::debug!("snapshot: task_file iterator failed ({e}); reading /proc instead");
            return None;
        }
    };
    drop(probe);
    let me = std::process::id();
    if !files
        .sockets
        .iter()
        .any(|r| r.tgid == me && r.ino == probe_ino)
    {
        log::debug!(
            "snapshot: the task_file iterator's pids are not /proc's (a pid namespace of its own); reading /proc instead"
        );
        return None;
    }
    Some(files)
}

/// The scan from [`read_checked`]'s files.
pub(crate) fn scan(files: TaskFiles, netns_of_pid: &mut HashMap<u32, u32>) -> FdScan {
    from_files(files, netns_of_pid, super::netns::netns_of)
}

/// Builds the scan: sockets kept with their holder's netns (processes
/// whose netns cannot be read have exited and are skipped, as the /proc
/// scan skips them). No per-process cap: it bounds the /proc scan's
/// readlinks, and the iterator did this work in the kernel.
pub(crate) fn from_files(
    files: TaskFiles,
    netns_of_pid: &mut HashMap<u32, u32>,
    netns_of: impl Fn(u32) -> Option<u32>,
) -> FdScan {
    let TaskFiles {
        mut sockets,
        mut fd_counts,
    } = files;
    sockets.sort_unstable_by_key(|r| (r.tgid, r.fd));
    sockets.dedup_by_key(|r| (r.tgid, r.fd));
    let mut gone = HashSet::new();
    let mut held = Vec::with_capacity(sockets.len());
    for r in sockets {
        if gone.contains(&r.tgid) {
            continue;
        }
        let netns = match netns_of_pid.get(&r.tgid) {
            Some(&ns) => ns,
            None => match netns_of(r.tgid) {
                Some(ns) => {
                    netns_of_pid.insert(r.tgid, ns);
                    ns
                }
                None => {
                    gone.insert(r.tgid);
                    continue;
                }
            },
        };
        held.push(HeldSocket {
            pid: r.tgid,
            netns,
            inode: r.ino,
        });
    }
    fd_counts.retain(|pid, _| !gone.contains(pid));
    FdScan {
        sockets: held,
        fd_counts,
        warnings: Vec::new(),
        truncated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::task_file::S_IFSOCK;

    fn rec(tgid: u32, fd: u32, ino: u64, sock: bool) -> TaskFileRecord {
        TaskFileRecord {
            tgid,
            fd,
            ino,
            mode: if sock { S_IFSOCK | 0o777 } else { 0o100644 },
            _pad: 0,
        }
    }

    #[test]
    fn records_become_held_sockets_and_fd_counts() {
        let mut netns = HashMap::from([(10, 1)]);
        let mut files = TaskFiles::default();
        for r in [
            rec(10, 3, 500, true),
            rec(10, 4, 77, false),
            rec(20, 0, 600, true),
            rec(30, 5, 700, true),
        ] {
            files.add(r);
        }
        // A socket listed twice keeps one entry.
        files.sockets.push(rec(10, 3, 500, true));
        let scan = from_files(files, &mut netns, |pid| (pid == 20).then_some(2));
        assert_eq!(
            scan.sockets,
            vec![
                HeldSocket {
                    pid: 10,
                    netns: 1,
                    inode: 500
                },
                HeldSocket {
                    pid: 20,
                    netns: 2,
                    inode: 600
                },
            ]
        );
        // Process 30 exited (no netns): neither its socket nor its count.
        assert_eq!(scan.fd_counts, HashMap::from([(10, 2), (20, 1)]));
        assert_eq!(netns.get(&20), Some(&2));
        assert!(!scan.truncated && scan.warnings.is_empty());
    }
}
