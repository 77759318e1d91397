//! What can go wrong while taking a snapshot.

use std::path::PathBuf;

/// Why a snapshot (or part of one) failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot enter network namespace {netns} through {}: {source} (needs root or CAP_SYS_ADMIN)",
        path.display()
    )]
    Setns {
        netns: u32,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("network namespace {expected} is gone ({} now names {found:?})", path.display())]
    NetnsGone {
        expected: u32,
        found: Option<u32>,
        path: PathBuf,
    },
    #[error("sock_diag netlink socket: {0}")]
    Netlink(#[source] std::io::Error),
    #[error("the kernel refused the sock_diag dump: {0}")]
    Kernel(#[source] std::io::Error),
    #[error("malformed sock_diag message: {0}")]
    Decode(String),
    #[error("network namespace worker thread: {0}")]
    Thread(String),
    #[error("no network namespace could be inspected ({failed} tried); first error: {first}")]
    NothingInspected {
        failed: usize,
        #[source]
        first: Box<SnapshotError>,
    },
}

impl SnapshotError {
    /// True when the failure is a missing privilege rather than a vanished
    /// namespace or process.
    pub fn is_permission(&self) -> bool {
        use std::io::ErrorKind::PermissionDenied;
        match self {
            Self::Io { source, .. } | Self::Netlink(source) | Self::Kernel(source) => {
                source.kind() == PermissionDenied
            }
            Self::Setns { source, .. } => {
                matches!(source, nix::Error::EPERM | nix::Error::EACCES)
            }
            Self::NothingInspected { first, .. } => first.is_permission(),
            _ => false,
        }
    }
}

/// What a failed start-up snapshot costs the operator.
pub const SNAPSHOT_COST: &str = "owners, CLOSE_WAIT ages and listener queues of sockets older than tracer stay unknown until those sockets act";

impl SnapshotError {
    /// What to do about it, in a few words.
    pub fn advice(&self) -> &'static str {
        use nix::errno::Errno;
        let module_missing = |e: &std::io::Error| {
            matches!(
                e.raw_os_error().map(Errno::from_raw),
                Some(Errno::ENOENT | Errno::EOPNOTSUPP | Errno::EPROTONOSUPPORT | Errno::EINVAL)
            )
        };
        match self {
            Self::NothingInspected { first, .. } => first.advice(),
            _ if self.is_permission() => {
                "run tracer as root, or with CAP_SYS_ADMIN and CAP_SYS_PTRACE (deploy/tracer.service)"
            }
            Self::Kernel(e) | Self::Netlink(e) if module_missing(e) => {
                "load the sock_diag modules (`modprobe tcp_diag inet_diag`; /lib/modules/$(uname -r) must match the running kernel)"
            }
            _ => "run with RUST_LOG=debug for details",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotError;

    #[test]
    fn missing_modules_and_privileges_get_their_advice() {
        let enoent = SnapshotError::Kernel(std::io::Error::from_raw_os_error(2));
        assert!(enoent.advice().contains("modprobe tcp_diag"));
        let nested = SnapshotError::NothingInspected {
            failed: 2,
            first: Box::new(SnapshotError::Kernel(std::io::Error::from_raw_os_error(
                libc::EOPNOTSUPP,
            ))),
        };
        assert!(nested.advice().contains("modprobe"));
        let eperm = SnapshotError::Netlink(std::io::Error::from_raw_os_error(libc::EACCES));
        assert!(eperm.advice().contains("root"));
        let other = SnapshotError::Decode("short".into());
        assert!(other.advice().contains("RUST_LOG"));
    }
}
