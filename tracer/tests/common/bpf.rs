//! The BPF programs, links and maps a process holds (to check that all are gone at exit).

use super::*;

/// Ids of the BPF programs, links and maps a process holds open (from
/// /proc/PID/fd and fdinfo).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BpfIds {
    pub progs: std::collections::BTreeSet<u64>,
    pub links: std::collections::BTreeSet<u64>,
    pub maps: std::collections::BTreeSet<u64>,
}

pub fn bpf_ids_of(pid: u32) -> BpfIds {
    let mut ids = BpfIds::default();
    let dir = format!("/proc/{pid}/fd");
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {dir}: {e}")) {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let (set, key) = match target.to_string_lossy().as_ref() {
            "anon_inode:bpf-prog" => (&mut ids.progs, "prog_id:"),
            "anon_inode:bpf_link" => (&mut ids.links, "link_id:"),
            "anon_inode:bpf-map" => (&mut ids.maps, "map_id:"),
            _ => continue,
        };
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(text) = std::fs::read_to_string(&info) else {
            continue;
        };
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
        {
            set.insert(id);
        }
    }
    ids
}

/// `bpftool KIND show --json` (KIND `prog`, `link` or `map`) as id -> object;
/// `None` when bpftool is not installed.
pub fn bpftool_objects(kind: &str) -> Option<std::collections::BTreeMap<u64, Value>> {
    let out = match Command::new("timeout")
        .args(["20", "bpftool", kind, "show", "--json"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("run timeout bpftool {kind} show: {e}"),
    };
    // timeout(1): 127 when the command is not found.
    if out.status.code() == Some(127) {
        return None;
    }
    assert!(
        out.status.success(),
        "bpftool {kind} show --json: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bpftool {kind} show --json is not a JSON list ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Some(
        list.into_iter()
            .map(|o| {
                let id = o["id"].as_u64().unwrap_or_else(|| panic!("no id in {o}"));
                (id, o)
            })
            .collect(),
    )
}
