//! Needs root and a cgroup v2 hierarchy. Container attribution end to end:
//! processes moved into cgroups named the way container runtimes and
//! systemd name theirs (a CRI containerd container in a Kubernetes pod, a
//! systemd service) reset connections, and their events must carry the
//! cgroup path and the container id, pod uid or unit parsed from it.
//!
//! Run: `cargo test -p tracer --test ecosystem_container` (as root).

mod common;
mod ecosystem_common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Netns, Tracer, dump, in_netns, require_root};
use ecosystem_common::{TRAFFIC, done_fields};

const CONTAINER_ID: &str = "5e3c0b1d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const POD_UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
/// Fixed ports in the private namespace, filtered on by tracer: a storm
/// elsewhere on the host cannot crowd the events out.
const POD_PORT: &str = "7301";
const UNIT_PORT: &str = "7302";

/// The cgroup2 mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// This process's cgroup v2 path (`0::/path`).
fn own_cgroup() -> String {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap_or_else(|| "/".into())
}

/// Cgroup directories created for the test, removed (deepest first, once
/// their processes are gone) on drop.
struct Cgroups {
    mount: PathBuf,
    dirs: Vec<String>,
}

impl Cgroups {
    /// Creates `rel` (a path below the mount) and its parents.
    fn create(&mut self, rel: &str) -> PathBuf {
        let mut acc = String::new();
        for part in rel.trim_matches('/').split('/') {
            acc.push('/');
            acc.push_str(part);
            let dir = self.mount.join(acc.trim_start_matches('/'));
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.dirs.push(acc.clone());
            }
        }
        self.mount.join(rel.trim_start_matches('/'))
    }

    fn enter(&self, rel: &str, pid: u32) {
        let procs = self
            .mount
            .join(rel.trim_start_matches('/'))
            .join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", procs.display()));
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for rel in self.dirs.iter().rev() {
            let dir = self.mount.join(rel.trim_start_matches('/'));
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn the_fixture_id_is_a_full_id() {
    assert_eq!(CONTAINER_ID.len(), 64);
}

#[test]
fn events_name_the_container_pod_and_unit() {
    if !require_root("events_name_the_container_pod_and_unit") {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        eprintln!("events_name_the_container_pod_and_unit: skipped, no cgroup2 mount");
        return;
    };
    // Below our own cgroup when we are in one (a delegated subtree under
    // systemd), so the layout stays ours.
    let base = format!(
        "{}/tracer-eco-{}.slice",
        own_cgroup().trim_end_matches('/'),
        std::process::id()
    );
    let pod_dir = format!(
        "{base}/kubepods-besteffort-pod{}.slice",
        POD_UID.replace('-', "_")
    );
    let container = format!("{pod_dir}/cri-containerd-{CONTAINER_ID}.scope");
    let service = format!("{base}/eco-test.service");
    let mut cg = Cgroups {
        mount,
        dirs: Vec::new(),
    };
    cg.create(&container);
    cg.create(&service);

    let ns = Netns::new();
    let tracer = Tracer::watch_json(&["--port", POD_PORT, "--port", UNIT_PORT]);
    let mut in_pod = ns.python("in-pod", TRAFFIC, &[]);
    let pod_pid: u32 = in_pod.line().trim().parse().unwrap();
    let mut in_unit = ns.python("in-unit", TRAFFIC, &[]);
    let unit_pid: u32 = in_unit.line().trim().parse().unwrap();
    cg.enter(&container, pod_pid);
    cg.enter(&service, unit_pid);
    let sent_from = |ev: &[serde_json::Value], port: u64| {
        in_netns(ev, ns.inode())
            .into_iter()
            .filter(|e| e["event"] == "rst_sent" && e["local_port"] == port)
            .collect::<Vec<_>>()
    };
    // Two resets from each; again if the ring buffer dropped them anyway.
    let reset = |p: &mut common::Proc, port: &str| {
        for _ in 0..3 {
            p.send(&format!("abort 2 {port}"));
            let port = done_fields(&p.line())[0];
            if tracer.wait_for(Duration::from_secs(5), |ev| sent_from(ev, port).len() >= 2) {
                return Some(port);
            }
        }
        None
    };
    let pod_port = reset(&mut in_pod, POD_PORT);
    let unit_port = reset(&mut in_unit, UNIT_PORT);
    drop(in_pod);
    drop(in_unit);
    let events = tracer.stop().events();
    let (Some(pod_port), Some(unit_port)) = (pod_port, unit_port) else {
        panic!("{}", dump(&in_netns(&events, ns.inode())));
    };

    for e in sent_from(&events, pod_port) {
        assert_eq!(e["pid"], pod_pid, "{e}");
        assert_eq!(e["cgroup"], container.as_str(), "{e}");
        assert_eq!(e["container_id"], CONTAINER_ID, "{e}");
        assert_eq!(e["pod_uid"], POD_UID, "{e}");
        assert!(e.get("systemd_unit").is_none(), "{e}");
    }
    for e in sent_from(&events, unit_port) {
        assert_eq!(e["pid"], unit_pid, "{e}");
        assert_eq!(e["cgroup"], service.as_str(), "{e}");
        assert_eq!(e["systemd_unit"], "eco-test.service", "{e}");
        assert!(e.get("container_id").is_none(), "{e}");
        assert!(e.get("pod_uid").is_none(), "{e}");
    }
    // Events of processes in no container carry none of the fields.
    for e in &events {
        if e["cgroup"] == "/" {
            assert!(
                e.get("container_id").is_none() && e.get("systemd_unit").is_none(),
                "{e}"
            );
        }
    }
}
