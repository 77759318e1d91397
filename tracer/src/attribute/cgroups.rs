//! cgroup v2 ids (what the kernel records: `bpf_get_current_cgroup_id`, the
//! inode number of the cgroup's directory) to paths, by walking the cgroup2
//! mount. Used when the process is already gone and /proc/PID/cgroup cannot
//! say. Bounded and rate limited.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// At most this many directories per walk.
const MAX_DIRS: usize = 100_000;
/// At most one walk per this period (a miss for a cgroup that no longer
/// exists must not walk the tree on every event).
const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// The mount point of the cgroup2 filesystem in a mountinfo text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        (fstype == "cgroup2").then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

pub struct CgroupPaths {
    root: Option<PathBuf>,
    by_id: HashMap<u64, String>,
    last_walk: Option<Instant>,
}

impl CgroupPaths {
    pub fn new() -> Self {
        let root = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|t| cgroup2_mount(&t));
        Self::at(root)
    }

    pub fn at(root: Option<PathBuf>) -> Self {
        CgroupPaths {
            root,
            by_id: HashMap::new(),
            last_walk: None,
        }
    }

    /// The path of cgroup `id` relative to the cgroup2 root (`/` for the
    /// root itself), walking the tree again when it is unknown and the last
    /// walk is old enough.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.by_id.get(&id) {
            return Some(p.clone());
        }
        let stale = self.last_walk.is_none_or(|t| t.elapsed() >= RESCAN_EVERY);
        if stale && let Some(root) = self.root.clone() {
            self.by_id = walk(&root);
            self.last_walk = Some(Instant::now());
        }
        self.by_id.get(&id).cloned()
    }
}

impl Default for CgroupPaths {
    fn default() -> Self {
        Self::new()
    }
}

fn walk(root: &Path) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if out.len() >= MAX_DIRS {
            break;
        }
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        if let Ok(rel) = dir.strip_prefix(root) {
            out.insert(meta.ino(), format!("/{}", rel.display()));
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let text = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    32 31 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mount(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let v1 = "32 31 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        assert_eq!(cgroup2_mount(v1), None);
        let unified =
            "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn walks_a_tree_by_inode() {
        let dir = std::env::temp_dir().join(format!("tracer-cg-{}", std::process::id()));
        let child = dir.join("system.slice").join("nginx.service");
        std::fs::create_dir_all(&child).expect("test data");
        let id = std::fs::metadata(&child).expect("test data").ino();
        let root_id = std::fs::metadata(&dir).expect("test data").ino();
        let mut c = CgroupPaths::at(Some(dir.clone()));
        assert_eq!(c.path(id).as_deref(), Some("/system.slice/nginx.service"));
        assert_eq!(c.path(root_id).as_deref(), Some("/"));
        // Unknown ids do not walk again within the rescan period.
        assert_eq!(c.path(u64::MAX), None);
        std::fs::remove_dir_all(&dir).expect("test data");
    }
}
