//! Per-process facts from `/proc`: comm, cgroup, open fds, RLIMIT_NOFILE,
//! and which sockets each process holds.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use super::netns::is_gone;

/// The pids listed in /proc, in its (ascending) order, at most `max`; the
/// flag says whether `max` cut the list.
pub(crate) fn list_pids(max: usize) -> std::io::Result<(Vec<u32>, bool)> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pids.len() >= max {
            return Ok((pids, true));
        }
        pids.push(pid);
    }
    Ok((pids, false))
}
use super::{ProcessInfo, SnapshotOptions};

/// One socket fd: process, the process's netns, socket inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeldSocket {
    pub pid: u32,
    pub netns: u32,
    pub inode: u64,
}

/// The result of one pass over `/proc/*/fd`.
pub(crate) struct FdScan {
    pub sockets: Vec<HeldSocket>,
    pub fd_counts: HashMap<u32, u32>,
    pub warnings: Vec<String>,
    pub truncated: bool,
}

/// The socket inode of an fd link target (`socket:[12345]`).
pub fn parse_socket_link(target: &[u8]) -> Option<u64> {
    let digits = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The cgroup v2 path from `/proc/PID/cgroup` text (the `0::/path` line).
pub fn parse_cgroup_v2(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("0"), Some(""), Some(path)) => Some(path.to_string()),
            _ => None,
        }
    })
}

/// The soft `Max open files` limit from `/proc/PID/limits` text; `None` when
/// unlimited or unparsable. (Hand-parsed: procfs 0.18's `Limits` parser
/// panics with an arithmetic overflow on a line it does not expect.)
pub fn parse_nofile_soft(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    match line.split_whitespace().next()? {
        "unlimited" => None,
        soft => soft.parse().ok(),
    }
}

/// Sockets `pid` holds open, by inode. Empty when the process is gone or
/// unreadable.
pub fn socket_inodes_of(pid: u32) -> Vec<u64> {
    let mut inodes = Vec::new();
    let _ = for_each_fd(pid, usize::MAX, |inode| inodes.push(inode));
    inodes
}

/// comm, cgroup, fd count and fd limit of `pid`; `None` when the process is
/// gone (its comm cannot be read).
pub fn process_info(pid: u32) -> Option<ProcessInfo> {
    process_info_with(pid, None)
}

/// [`process_info`] with an fd count already known from a scan.
pub(crate) fn process_info_with(pid: u32, fd_count: Option<u32>) -> Option<ProcessInfo> {
    let mut comm = fs::read(format!("/proc/{pid}/comm")).ok()?;
    if comm.last() == Some(&b'\n') {
        comm.pop();
    }
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|t| parse_cgroup_v2(&t));
    let fd_limit = fs::read(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|t| parse_nofile_soft(&t));
    let fd_count = fd_count.or_else(|| count_fds(pid)).unwrap_or(0);
    Some(ProcessInfo {
        pid,
        comm,
        cgroup,
        fd_count,
        fd_limit,
    })
}

/// Open fds of `pid`. Linux >= 6.2 reports the count as the size of
/// `/proc/PID/fd`; older kernels say 0 and the directory is counted.
fn count_fds(pid: u32) -> Option<u32> {
    let dir = format!("/proc/{pid}/fd");
    let size = fs::metadata(&dir).ok()?.size();
    if size > 0 {
        return u32::try_from(size).ok();
    }
    let n = fs::read_dir(&dir).ok()?.count();
    u32::try_from(n).ok()
}

/// Calls `found` with the inode of every socket fd of `pid` (at most `cap`
/// fds are resolved). Returns the number of fds seen and whether the cap
/// was hit.
fn for_each_fd(pid: u32, cap: usize, mut found: impl FnMut(u64)) -> std::io::Result<(u32, bool)> {
    let dir = fs::read_dir(format!("/proc/{pid}/fd"))?;
    let mut seen = 0u32;
    for entry in dir {
        // An fd closed while listing is not an error.
        let Ok(entry) = entry else { continue };
        seen = seen.saturating_add(1);
        if seen as usize > cap {
            // Keep counting: the fd count stays right even when capped.
            continue;
        }
        if let Ok(target) = fs::read_link(entry.path()) {
            if let Some(inode) = parse_socket_link(target.as_os_str().as_bytes()) {
                found(inode);
            }
        }
    }
    Ok((seen, seen as usize > cap))
}

/// Which process holds which socket, over all of `/proc`. Each pid's netns
/// comes from `netns_of_pid` (filled in for pids it lacks).
pub(crate) fn scan_fds(opts: &SnapshotOptions, netns_of_pid: &mut HashMap<u32, u32>) -> FdScan {
    let mut scan = FdScan {
        sockets: Vec::new(),
        fd_counts: HashMap::new(),
        warnings: Vec::new(),
        truncated: false,
    };
    let pids = match list_pids(opts.max_pids) {
        Ok((pids, truncated)) => {
            scan.truncated = truncated;
            pids
        }
        Err(e) => {
            scan.warnings.push(format!("/proc: {e}"));
            return scan;
        }
    };
    for pid in pids {
        let netns = match netns_of_pid.get(&pid) {
            Some(&ns) => ns,
            None => match super::netns::netns_of(pid) {
                Some(ns) => {
                    netns_of_pid.insert(pid, ns);
                    ns
                }
                None => continue, // exited
            },
        };
        let sockets = &mut scan.sockets;
        match for_each_fd(pid, opts.max_fds_per_pid, |inode| {
            sockets.push(HeldSocket { pid, netns, inode })
        }) {
            Ok((count, capped)) => {
                scan.fd_counts.insert(pid, count);
                if capped {
                    scan.truncated = true;
                    scan.warnings.push(format!(
                        "pid {pid}: only the first {} fds resolved",
                        opts.max_fds_per_pid
                    ));
                }
            }
            Err(e) if is_gone(&e) => {}
            Err(e) => scan.warnings.push(format!("/proc/{pid}/fd: {e}")),
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/snapshot/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn snapshot_socket_link() {
        assert_eq!(parse_socket_link(b"socket:[12345]"), Some(12345));
        assert_eq!(parse_socket_link(b"socket:[0]"), Some(0));
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"socket:[12a]"), None);
        assert_eq!(parse_socket_link(b"socket:[+1]"), None);
        assert_eq!(parse_socket_link(b"socket:[99999999999999999999999]"), None);
        assert_eq!(parse_socket_link(b"pipe:[12345]"), None);
        assert_eq!(parse_socket_link(b"/tmp/socket:[1]"), None);
        assert_eq!(parse_socket_link(b"anon_inode:[eventfd]"), None);
        for line in String::from_utf8(fixture("fd_links.txt"))
            .expect("test data")
            .lines()
        {
            let (target, want) = line.rsplit_once(" => ").expect("fixture line");
            let want = want.parse::<u64>().ok();
            assert_eq!(parse_socket_link(target.as_bytes()), want, "{target}");
        }
    }

    #[test]
    fn snapshot_cgroup_text() {
        let v2 = String::from_utf8(fixture("cgroup_v2.txt")).expect("test data");
        assert_eq!(
            parse_cgroup_v2(&v2).as_deref(),
            Some("/system.slice/nginx.service")
        );
        let hybrid = String::from_utf8(fixture("cgroup_hybrid.txt")).expect("test data");
        assert_eq!(
            parse_cgroup_v2(&hybrid).as_deref(),
            Some("/user.slice/user-1000.slice/session-2.scope")
        );
        let v1 = String::from_utf8(fixture("cgroup_v1.txt")).expect("test data");
        assert_eq!(parse_cgroup_v2(&v1), None);
        assert_eq!(parse_cgroup_v2("0::/a:b\n").as_deref(), Some("/a:b"));
        assert_eq!(parse_cgroup_v2("").as_deref(), None);
    }

    #[test]
    fn snapshot_limits_text() {
        assert_eq!(parse_nofile_soft(&fixture("limits.txt")), Some(1024));
        assert_eq!(parse_nofile_soft(&fixture("limits_unlimited.txt")), None);
        assert_eq!(parse_nofile_soft(b"garbage"), None);
        assert_eq!(parse_nofile_soft(b""), None);
        assert_eq!(parse_nofile_soft(b"Max open files\n"), None);
        assert_eq!(
            parse_nofile_soft(b"Max open files  12x  4096  files\n"),
            None
        );
        assert_eq!(parse_nofile_soft(b"\xff\nMax open files 7 8 files"), None);
    }

    #[test]
    fn snapshot_own_process_info() {
        let me = std::process::id();
        let info = process_info(me).expect("own process");
        assert_eq!(info.pid, me);
        assert!(!info.comm.is_empty() && !info.comm.ends_with(b"\n"));
        assert!(info.fd_count >= 3, "fd_count {}", info.fd_count);
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .expect("getrlimit")
            .0;
        assert_eq!(info.fd_limit, Some(soft));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let ino = fs::metadata(format!("/proc/self/fd/{}", {
            use std::os::fd::AsRawFd;
            listener.as_raw_fd()
        }))
        .expect("stat fd")
        .ino();
        assert!(socket_inodes_of(me).contains(&ino));
        assert!(process_info(u32::MAX).is_none());
        assert!(socket_inodes_of(u32::MAX).is_empty());
    }
}
