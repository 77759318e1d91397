//! Process names and cgroup paths, cached: by pid for owners found through
//! /proc, by cgroup id for owners the kernel named.

use tracer_common::TaskInfo;

use crate::event::Owner;
use crate::snapshot::{self, ProcessInfo};

/// At most this many cached entries of each kind; the cache is cleared when
/// full (cheap to rebuild, bounded memory for weeks-long runs).
const MAX_CACHED: usize = 16_384;

/// Where process facts come from: /proc in production, fixtures in tests.
pub trait ProcSource {
    fn process(&self, pid: u32) -> Option<ProcessInfo>;

    /// The cgroup v2 path of a live process (cheaper than `process`).
    fn cgroup(&self, pid: u32) -> Option<String> {
        self.process(pid).and_then(|p| p.cgroup)
    }

    /// The path of a cgroup by id, for owners that already exited.
    fn cgroup_by_id(&self, _id: u64) -> Option<String> {
        None
    }
}

/// Reads /proc and the cgroup2 mount.
pub struct LiveProc;

/// The cgroup2 tree walker, shared by every `LiveProc` (rate limited inside).
static CGROUP_PATHS: std::sync::Mutex<Option<super::cgroups::CgroupPaths>> =
    std::sync::Mutex::new(None);

impl ProcSource for LiveProc {
    fn process(&self, pid: u32) -> Option<ProcessInfo> {
        snapshot::process_info(pid)
    }

    fn cgroup(&self, pid: u32) -> Option<String> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        snapshot::parse_cgroup_v2(&text)
    }

    fn cgroup_by_id(&self, id: u64) -> Option<String> {
        let mut guard = CGROUP_PATHS.lock().ok()?;
        guard
            .get_or_insert_with(super::cgroups::CgroupPaths::new)
            .path(id)
    }
}

/// What makes the owner of a kernel record: its process, cgroup and names.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct TaskKey {
    tgid: u32,
    cgroup_id: u64,
    comm: [u8; 16],
    thread: [u8; 16],
}

impl TaskKey {
    fn of(task: &TaskInfo) -> TaskKey {
        TaskKey {
            tgid: task.tgid,
            cgroup_id: task.cgroup_id,
            comm: task.comm,
            thread: task.thread,
        }
    }
}

#[derive(Default)]
pub struct Procs {
    by_pid: rustc_hash::FxHashMap<u32, Owner>,
    cgroup_by_id: rustc_hash::FxHashMap<u64, Option<String>>,
    /// The owners of kernel records, made once per task: an RST storm's
    /// records name the same few.
    by_task: rustc_hash::FxHashMap<TaskKey, Owner>,
}

impl Procs {
    /// Remembers what a snapshot learned about a process.
    pub fn seed(&mut self, info: &ProcessInfo) {
        self.bound();
        self.by_pid.insert(
            info.pid,
            Owner::new(info.pid, info.comm.clone(), Vec::new(), info.cgroup.clone()),
        );
    }

    /// The owner for a pid found through /proc or a snapshot.
    pub fn owner_of_pid(&mut self, pid: u32, src: &dyn ProcSource) -> Owner {
        if let Some(o) = self.by_pid.get(&pid) {
            return o.clone();
        }
        let owner = match src.process(pid) {
            Some(info) => Owner::new(pid, info.comm, Vec::new(), info.cgroup),
            None => Owner::new(pid, Vec::new(), Vec::new(), None),
        };
        self.bound();
        self.by_pid.insert(pid, owner.clone());
        owner
    }

    /// The owner for a task the kernel recorded: its comm as recorded (the
    /// process may be gone by now), its cgroup path resolved once per
    /// cgroup id. Made once per task while its cgroup is known.
    pub fn owner_of_task(&mut self, task: &TaskInfo, src: &dyn ProcSource) -> Owner {
        let key = TaskKey::of(task);
        if let Some(o) = self.by_task.get(&key) {
            return o.clone();
        }
        let cgroup = match self.cgroup_by_id.get(&task.cgroup_id) {
            Some(c) => c.clone(),
            None => {
                let c = src
                    .cgroup(task.tgid)
                    .or_else(|| src.cgroup_by_id(task.cgroup_id));
                // Cache only a success: a process that had exited may be
                // followed by a live one in the same cgroup.
                if c.is_some() {
                    self.bound();
                    self.cgroup_by_id.insert(task.cgroup_id, c.clone());
                }
                c
            }
        };
        // Kept only with its cgroup: one not found yet may be found later
        // (as `cgroup_by_id`).
        let known = cgroup.is_some();
        let owner = Owner::new(task.tgid, task.comm.to_vec(), task.thread.to_vec(), cgroup);
        if known {
            self.bound();
            self.by_task.insert(key, owner.clone());
        }
        owner
    }

    fn bound(&mut self) {
        if self.by_pid.len() >= MAX_CACHED {
            self.by_pid.clear();
        }
        if self.cgroup_by_id.len() >= MAX_CACHED {
            self.cgroup_by_id.clear();
        }
        if self.by_task.len() >= MAX_CACHED {
            self.by_task.clear();
        }
    }
}
