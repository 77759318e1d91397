//! What a cgroup v2 path says about where a process runs: the container id
//! (Docker, containerd, CRI-O, Podman), the Kubernetes pod uid, or the
//! systemd unit. Pure string parsing of the path the events already carry;
//! nothing is looked up.
//!
//! Recognised layouts (systemd and cgroupfs drivers):
//!
//! ```text
//! /system.slice/docker-<64hex>.scope                       container_id
//! /docker/<64hex>                                          container_id
//! /machine.slice/libpod-<64hex>.scope                      container_id
//! /kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<uid_with_underscores>.slice/
//!   cri-containerd-<64hex>.scope                           pod_uid, container_id
//! /kubepods/burstable/pod<uid>/<64hex>                     pod_uid, container_id
//! /system.slice/nginx.service                              systemd_unit
//! /user.slice/user-1000.slice/session-2.scope              systemd_unit
//! ```

/// Prefixes of the systemd scope a container runtime creates per container.
const RUNTIME_PREFIXES: &[&str] = &[
    "docker-",
    "cri-containerd-",
    "crio-",
    "libpod-",
    "containerd-",
];

/// Suffixes of systemd unit names that can hold processes.
const UNIT_SUFFIXES: &[&str] = &[".service", ".scope"];

/// Facts parsed from one cgroup path; each `None` when the path has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Full container id (64 hex digits), as `docker ps --no-trunc` and
    /// `crictl ps` show it.
    pub container_id: Option<String>,
    /// The innermost systemd unit (`nginx.service`, `session-2.scope`), left
    /// out for a container's own scope (its id says more).
    pub systemd_unit: Option<String>,
    /// Kubernetes pod uid, with dashes (`kubectl get pod -o
    /// jsonpath='{.metadata.uid}'`).
    pub pod_uid: Option<String>,
}

impl ContainerInfo {
    pub fn is_empty(&self) -> bool {
        self.container_id.is_none() && self.systemd_unit.is_none() && self.pod_uid.is_none()
    }
}

/// Parses a cgroup v2 path (`/proc/PID/cgroup`'s `0::` line).
pub fn parse(path: &str) -> ContainerInfo {
    let mut info = ContainerInfo::default();
    // Innermost first: the deepest match is the one that describes the
    // process (a unit nested in a user manager, a container in a pod).
    for comp in path.rsplit('/').filter(|c| !c.is_empty()) {
        if info.container_id.is_none()
            && let Some(id) = container_id(comp)
        {
            info.container_id = Some(id.to_string());
        } else if info.pod_uid.is_none()
            && let Some(uid) = pod_uid(comp)
        {
            info.pod_uid = Some(uid);
        } else if info.is_empty() && is_unit(comp) {
            // Only a unit inside any container or pod: a container's own
            // scope (`docker-<id>.scope`) was taken as its id.
            info.systemd_unit = Some(comp.to_string());
        }
    }
    info
}

/// The id in `docker-<id>.scope`, `cri-containerd-<id>.scope`, ... or a bare
/// `<id>` component (cgroupfs driver).
fn container_id(comp: &str) -> Option<&str> {
    let base = comp.strip_suffix(".scope").unwrap_or(comp);
    let id = RUNTIME_PREFIXES
        .iter()
        .find_map(|p| base.strip_prefix(p))
        .unwrap_or(base);
    is_full_id(id).then_some(id)
}

fn is_full_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pod uid in `kubepods-<qos>-pod<uid_with_underscores>.slice`,
/// `kubepods-pod<uid>.slice` (systemd driver) or `pod<uid>` (cgroupfs).
fn pod_uid(comp: &str) -> Option<String> {
    let raw = if let Some(slice) = comp.strip_suffix(".slice") {
        let start = slice.rfind("-pod")? + "-pod".len();
        if !slice.starts_with("kubepods") {
            return None;
        }
        &slice[start..]
    } else {
        comp.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-");
    is_uuid(&uid).then_some(uid)
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_unit(comp: &str) -> bool {
    UNIT_SUFFIXES
        .iter()
        .any(|s| comp.len() > s.len() && comp.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c0b1d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
    const POD: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

    fn info(c: Option<&str>, u: Option<&str>, p: Option<&str>) -> ContainerInfo {
        ContainerInfo {
            container_id: c.map(str::to_string),
            systemd_unit: u.map(str::to_string),
            pod_uid: p.map(str::to_string),
        }
    }

    #[test]
    fn container_cgroup_fixtures() {
        let pod_us = POD.replace('-', "_");
        let cases: Vec<(String, ContainerInfo)> = vec![
            (
                format!("/system.slice/docker-{ID}.scope"),
                info(Some(ID), None, None),
            ),
            (format!("/docker/{ID}"), info(Some(ID), None, None)),
            (
                format!("/machine.slice/libpod-{ID}.scope"),
                info(Some(ID), None, None),
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                info(Some(ID), None, None),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/\
                     kubepods-burstable-pod{pod_us}.slice/cri-containerd-{ID}.scope"
                ),
                info(Some(ID), None, Some(POD)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{pod_us}.slice/crio-{ID}.scope"),
                info(Some(ID), None, Some(POD)),
            ),
            (
                format!("/kubepods/besteffort/pod{POD}/{ID}"),
                info(Some(ID), None, Some(POD)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod_us}.slice"
                ),
                info(None, None, Some(POD)),
            ),
            (
                "/system.slice/nginx.service".into(),
                info(None, Some("nginx.service"), None),
            ),
            (
                "/user.slice/user-1000.slice/session-2.scope".into(),
                info(None, Some("session-2.scope"), None),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.service".into(),
                info(None, Some("app-foo.service"), None),
            ),
            (
                "/system.slice/containerd.service".into(),
                info(None, Some("containerd.service"), None),
            ),
            // A service that delegates sub-cgroups (its processes live in a leaf).
            (
                "/system.slice/app.service/worker".into(),
                info(None, Some("app.service"), None),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse(&path), want, "{path}");
        }
    }

    #[test]
    fn paths_without_facts() {
        for path in [
            "/",
            "",
            "/system.slice",
            "/user.slice/user-1000.slice",
            "/docker/abc123",
            "/docker/short-not-hex",
            "/kubepods/burstable/podnot-a-uid",
            "/.service",
            // 63 hex digits
            "/docker/3f2a9c0b1d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e",
        ] {
            let got = parse(path);
            assert!(got.is_empty(), "{path}: {got:?}");
        }
    }

    #[test]
    fn a_container_scope_is_not_reported_as_a_unit() {
        let got = parse(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(got.systemd_unit, None);
        // A unit inside a container (systemd running in it) is, with the id.
        let got = parse(&format!("/docker/{ID}/system.slice/nginx.service"));
        assert_eq!(got, info(Some(ID), Some("nginx.service"), None));
    }

    #[test]
    fn uppercase_or_truncated_ids_are_handled() {
        let upper = ID.to_uppercase();
        assert_eq!(
            parse(&format!("/docker/{upper}")).container_id.as_deref(),
            Some(upper.as_str())
        );
        // A short id is no container id; the scope is still a unit.
        let short = format!("docker-{}.scope", &ID[..12]);
        assert_eq!(
            parse(&format!("/system.slice/{short}")),
            info(None, Some(&short), None)
        );
    }
}
