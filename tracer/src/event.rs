//! The enriched, versioned events of the public interface
//! (docs/schema.md). Outputs print these; diagnose aggregates them.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::timestamp::Timestamp;

/// Schema version of every event and report.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RstSent,
    RstReceived,
    AcceptFailed,
    ListenOverflow,
    StateChange,
    Lost,
}

/// How `pid` was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributedBy {
    /// The socket's owner: learned by the kernel programs in the owner's own
    /// context, resolved through /proc for sockets older than tracer, or the
    /// last owner of a connection closed moments before.
    SocketOwner,
    /// No socket: the owner of the listener on the local port.
    ListenerOwner,
    /// The task holding the socket lock when the kernel sent the RST.
    CurrentTask,
    None,
}

/// An endpoint in `remote_sample` or `local_sample`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub addr: String,
    pub port: u16,
}

/// The process an event is attributed to: what identifies it, and the
/// event fields it gives (`comm`, `thread`, `cgroup` and what the cgroup
/// path says), rendered once when the owner is made. Owners are cached and
/// shared by the attribution (a clone is one reference count) and every
/// event of one owner shares its strings: an RST storm's lines were paying
/// for the same names and parses on every line (perf).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner(Arc<OwnerInfo>);

#[derive(Debug, PartialEq, Eq)]
pub struct OwnerInfo {
    pub pid: u32,
    /// The process's name (its thread-group leader's `comm`): raw bytes
    /// (may be any bytes), rendered lossily as UTF-8.
    pub comm: Vec<u8>,
    /// The acting thread's name when the kernel named one that differs
    /// from `comm`; empty otherwise.
    pub thread: Vec<u8>,
    pub cgroup: Option<Arc<str>>,
    /// `comm` as the event's `comm`.
    pub comm_text: Arc<str>,
    /// The event's `thread` ([`thread_name`]).
    pub thread_text: Option<Arc<str>>,
    /// What `cgroup` says (crate::container).
    pub container_id: Option<Arc<str>>,
    pub systemd_unit: Option<Arc<str>>,
    pub pod_uid: Option<Arc<str>>,
}

impl Owner {
    pub fn new(pid: u32, comm: Vec<u8>, thread: Vec<u8>, cgroup: Option<String>) -> Owner {
        let c = cgroup
            .as_deref()
            .map(crate::container::parse)
            .unwrap_or_default();
        let comm_text = comm_string(&comm);
        let thread_text = thread_name(&comm_text, &thread).map(Arc::from);
        Owner(Arc::new(OwnerInfo {
            pid,
            comm_text: Arc::from(comm_text),
            thread_text,
            cgroup: cgroup.map(Arc::from),
            container_id: c.container_id.map(Arc::from),
            systemd_unit: c.systemd_unit.map(Arc::from),
            pod_uid: c.pod_uid.map(Arc::from),
            comm,
            thread,
        }))
    }

    /// Whether both are the one owner made once (not merely equal).
    #[cfg(test)]
    pub fn shares(&self, other: &Owner) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::ops::Deref for Owner {
    type Target = OwnerInfo;
    fn deref(&self) -> &OwnerInfo {
        &self.0
    }
}

/// One event line. Optional event-specific fields are left out when absent;
/// the fields every event carries are always present (`null` when unknown).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Event {
    pub v: u32,
    pub ts: Timestamp,
    pub event: EventKind,
    pub pid: Option<u32>,
    pub comm: Option<Arc<str>>,
    /// The acting thread's name, when it differs from the process's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<Arc<str>>,
    pub attributed_by: AttributedBy,
    pub cgroup: Option<Arc<str>>,
    /// Parsed from `cgroup` (crate::container), when it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<&'static str>,
    /// Written as `Display` writes it (serde's way for text formats);
    /// IPv4-mapped IPv6 addresses are normalised to IPv4 before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_addr: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    /// Present (possibly `null`) on every event about a socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Option<Arc<str>>>,
    /// rst_sent: the kernel's reason name, `null` where the kernel gives none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Option<Arc<str>>>,
    /// rst_sent: `true` when `reason` was inferred by tracer from what the
    /// kernel told (no socket, TIME_WAIT) because the kernel gives no reasons
    /// (before 6.10); absent when the kernel named the reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_inferred: Option<bool>,
    /// state_change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_state: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_state: Option<Arc<str>>,
    /// accept_failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_count: Option<Option<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_limit: Option<Option<u64>>,
    /// listen_overflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<u32>,
    /// lost: records lost; accept_failed/listen_overflow: occurrences
    /// aggregated into this line; rst_sent/rst_received: the resets a storm
    /// line stands for (absent on a line of one reset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// rst_sent/rst_received lines that stand for a storm (`count`
    /// resets counted in the kernel) of one local port: some of their
    /// remote endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_sample: Option<Vec<Endpoint>>,
    /// A storm line of connections this host made to one remote port (a
    /// refused connect's RST, say): some of their local endpoints (each
    /// connection's own local port). A storm line has this or
    /// `remote_sample`, never both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_sample: Option<Vec<Endpoint>>,
    /// Network namespace inode of the socket (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    /// Socket inode, as in /proc/PID/fd `socket:[N]` (extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_inode: Option<u64>,
    /// rst_sent/rst_received: the kernel side's word that the remote port is
    /// the service's, a connection this host made (SYN_SENT, or a local
    /// port no listener has): `sock_flags::PEER_IS_SERVICE`, the decision
    /// that also keys storms by the remote port (on a storm line: `true`
    /// exactly when it has `local_sample`). Internal, not in the JSON
    /// (docs/schema.md): diagnose groups resets by it (`RstPort::of`).
    #[serde(skip)]
    pub peer_is_service: bool,
}

impl Event {
    /// An event with only the common fields set.
    pub fn new(event: EventKind, ts: Timestamp) -> Self {
        Event {
            v: SCHEMA_VERSION,
            ts,
            event,
            pid: None,
            comm: None,
            thread: None,
            attributed_by: AttributedBy::None,
            cgroup: None,
            container_id: None,
            systemd_unit: None,
            pod_uid: None,
            family: None,
            local_addr: None,
            local_port: None,
            remote_addr: None,
            remote_port: None,
            state: None,
            reason: None,
            reason_inferred: None,
            old_state: None,
            new_state: None,
            errno: None,
            error: None,
            fd_count: None,
            fd_limit: None,
            backlog: None,
            queued: None,
            count: None,
            remote_sample: None,
            local_sample: None,
            netns: None,
            socket_inode: None,
            peer_is_service: false,
        }
    }

    pub fn set_owner(&mut self, owner: Option<&Owner>, by: AttributedBy) {
        match owner {
            Some(o) if o.pid != 0 => {
                self.pid = Some(o.pid);
                self.comm = Some(Arc::clone(&o.comm_text));
                self.thread.clone_from(&o.thread_text);
                self.cgroup.clone_from(&o.cgroup);
                self.container_id.clone_from(&o.container_id);
                self.systemd_unit.clone_from(&o.systemd_unit);
                self.pod_uid.clone_from(&o.pod_uid);
                self.attributed_by = by;
            }
            _ => {
                self.pid = None;
                self.comm = None;
                self.thread = None;
                self.cgroup = None;
                self.container_id = None;
                self.systemd_unit = None;
                self.pod_uid = None;
                self.attributed_by = AttributedBy::None;
            }
        }
    }
}

/// A process name as a string: bytes up to the first NUL, invalid UTF-8
/// replaced by U+FFFD. Quotes, backslashes and control characters are left
/// to the JSON encoder, which escapes them.
pub fn comm_string(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// The thread's name for `thread`: `None` when unknown or the same as the
/// process's (`comm`, rendered).
fn thread_name(comm: &str, thread: &[u8]) -> Option<String> {
    let t = comm_string(thread);
    (!t.is_empty() && t != comm).then_some(t)
}

/// Name of an errno value for `accept_failed.error`.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EINTR => "EINTR",
        libc::EINVAL => "EINVAL",
        libc::EBADF => "EBADF",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EPERM => "EPERM",
        libc::EPROTO => "EPROTO",
        libc::EFAULT => "EFAULT",
        libc::EAGAIN => "EAGAIN",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
