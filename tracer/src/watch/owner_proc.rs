//! The process facts the event path's owner lookups use: name and cgroup.
//! `LiveProc::process` also counts the process's fds, which before Linux
//! 6.2 means reading `/proc/PID/fd` entry by entry (up to the whole limit
//! of a process that ran out of them) on the event thread, the first time
//! each process is seen; owners never use that count, so the event path
//! asks this source instead. The fd counts printed come from
//! `accepts.rs`, off the thread.

use crate::attribute::procs::{LiveProc, ProcSource};
use crate::snapshot::ProcessInfo;

/// `LiveProc` without the fd count and limit (0 and `None`).
pub struct OwnerProc;

impl ProcSource for OwnerProc {
    fn process(&self, pid: u32) -> Option<ProcessInfo> {
        let mut comm = std::fs::read(format!("/proc/{pid}/comm")).ok()?;
        if comm.last() == Some(&b'\n') {
            comm.pop();
        }
        Some(ProcessInfo {
            pid,
            comm,
            cgroup: LiveProc.cgroup(pid),
            fd_count: 0,
            fd_limit: None,
        })
    }

    fn cgroup(&self, pid: u32) -> Option<String> {
        LiveProc.cgroup(pid)
    }

    fn cgroup_by_id(&self, id: u64) -> Option<String> {
        LiveProc.cgroup_by_id(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_cgroups_as_live_proc_does() {
        let me = std::process::id();
        let live = LiveProc.process(me).expect("this process");
        let owner = OwnerProc.process(me).expect("this process");
        assert_eq!((owner.pid, &owner.comm), (live.pid, &live.comm));
        assert_eq!(owner.cgroup, live.cgroup);
        assert_eq!((owner.fd_count, owner.fd_limit), (0, None));
        assert!(OwnerProc.process(u32::MAX).is_none());
    }
}
