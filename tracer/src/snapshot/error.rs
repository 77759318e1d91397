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
