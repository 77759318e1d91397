//! Records + attribution -> interface events.

use std::sync::Arc;

use tracer_common::{REASON_NONE, RstRecord, SockInfo, StateRecord, kind, sock_flags};

use tracer_common::socket_id as keys;

use crate::attribute::{Attributor, procs::ProcSource};
use crate::clock::Clock;
use crate::event::{Endpoint, Event, EventKind};
use crate::kernel::KernelNames;
use crate::storm::StormLine;

/// Everything needed to turn records into events.
pub struct Enricher<'a> {
    pub clock: Clock,
    pub names: &'a KernelNames,
    pub proc_source: &'a dyn ProcSource,
}

impl Enricher<'_> {
    /// The kernel's name of a TCP state (shared by every event), `None`
    /// for none (0).
    pub fn state_name(&self, state: u8) -> Option<Arc<str>> {
        if state == 0 {
            return None;
        }
        Some(match self.names.state_text(u32::from(state)) {
            Some(name) => Arc::clone(name),
            None => format!("STATE_{state}").into(),
        })
    }

    pub fn socket_fields(&self, e: &mut Event, sock: &SockInfo) {
        e.family = keys::family_name(sock.family);
        if let Some(a) = keys::addr(sock.family, &sock.laddr) {
            e.local_addr = Some(a);
            e.local_port = Some(sock.lport);
        }
        if let Some(a) = keys::addr(sock.family, &sock.raddr) {
            e.remote_addr = Some(a);
            e.remote_port = Some(sock.rport);
        }
        e.state = Some(self.state_name(sock.state));
        e.netns = (sock.netns != 0).then_some(sock.netns);
        e.socket_inode = (sock.ino != 0).then_some(sock.ino);
    }

    pub fn rst(&self, attr: &mut Attributor, rec: &RstRecord, sent: bool) -> Event {
        let kind = if sent {
            EventKind::RstSent
        } else {
            EventKind::RstReceived
        };
        let mut e = Event::new(kind, self.clock.rfc3339(rec.header.ts_boot_ns));
        let (owner, by) = attr.rst_owner(rec, self.proc_source);
        e.set_owner(owner.as_ref(), by);
        self.socket_fields(&mut e, &rec.sock);
        e.peer_is_service = rec.sock.flags & sock_flags::PEER_IS_SERVICE != 0;
        if sent {
            e.reason = Some(if rec.reason == REASON_NONE {
                let inferred =
                    infer_reason(rec.sock.flags, e.state.as_ref().and_then(|s| s.as_deref()));
                e.reason_inferred = inferred.is_some().then_some(true);
                inferred.map(inferred_name)
            } else {
                Some(match self.names.rst_reason_text(rec.reason) {
                    Some(name) => Arc::clone(name),
                    None => format!("REASON_{}", rec.reason).into(),
                })
            });
        }
        e
    }

    /// The line of a storm counted in the kernel: the first counted reset's
    /// details, `count`, the time of the latest, `remote_sample` (or
    /// `local_sample`, for a key of a remote port). No `socket_inode`: one
    /// socket's would misdescribe a line of many.
    pub fn storm(&self, attr: &mut Attributor, line: &StormLine) -> Event {
        let sent = line.first.header.kind == kind::RST_SENT;
        let mut e = self.rst(attr, &line.first, sent);
        e.ts = self.clock.rfc3339(line.last_ns);
        e.count = Some(line.count);
        let sample = Some(
            line.sample
                .iter()
                .map(|(addr, port)| Endpoint {
                    addr: addr.to_string(),
                    port: *port,
                })
                .collect(),
        );
        // The key's side, which the first reset's flag repeats.
        e.peer_is_service = line.by_remote;
        if line.by_remote {
            e.local_sample = sample;
        } else {
            e.remote_sample = sample;
        }
        e.socket_inode = None;
        e
    }

    pub fn state(&self, attr: &mut Attributor, rec: &StateRecord) -> Event {
        let mut e = Event::new(
            EventKind::StateChange,
            self.clock.rfc3339(rec.header.ts_boot_ns),
        );
        let (owner, by) = attr.on_state(rec, self.proc_source);
        e.set_owner(owner.as_ref(), by);
        self.socket_fields(&mut e, &rec.sock);
        e.old_state = self.state_name(rec.old_state);
        e.new_state = self.state_name(rec.new_state);
        e
    }
}

/// The reason a kernel without RST reasons (before 6.10) would have given,
/// from what it did tell: a reset with no socket at all answers a packet for
/// which no socket exists (`NO_SOCKET`); one from a TIME_WAIT socket is
/// `TCP_TIMEWAIT_SOCKET` (the names of `enum sk_rst_reason`, 6.10+). Other
/// resets have no reason one could tell without the kernel's word.
pub fn infer_reason(flags: u8, state: Option<&str>) -> Option<&'static str> {
    if flags & sock_flags::HAS_SK == 0 && flags & sock_flags::FROM_SKB != 0 {
        return Some("NO_SOCKET");
    }
    match state {
        Some("TIME_WAIT") => Some("TCP_TIMEWAIT_SOCKET"),
        _ => None,
    }
}

/// An inferred reason's name, shared by every event that carries it.
fn inferred_name(name: &'static str) -> Arc<str> {
    static NAMES: std::sync::LazyLock<[Arc<str>; 2]> =
        std::sync::LazyLock::new(|| INFERRED.map(Arc::from));
    match INFERRED.iter().position(|&n| n == name) {
        Some(i) => Arc::clone(&NAMES[i]),
        None => Arc::from(name),
    }
}

/// Every name [`infer_reason`] gives.
const INFERRED: [&str; 2] = ["NO_SOCKET", "TCP_TIMEWAIT_SOCKET"];

#[cfg(test)]
mod tests {
    use super::infer_reason;
    use tracer_common::sock_flags::{FROM_SKB, HAS_SK};

    #[test]
    fn reasons_are_inferred_only_from_what_the_kernel_said() {
        assert_eq!(infer_reason(FROM_SKB, None), Some("NO_SOCKET"));
        assert_eq!(
            infer_reason(FROM_SKB | HAS_SK, Some("TIME_WAIT")),
            Some("TCP_TIMEWAIT_SOCKET")
        );
        assert_eq!(infer_reason(FROM_SKB | HAS_SK, Some("NEW_SYN_RECV")), None);
        assert_eq!(infer_reason(HAS_SK, Some("CLOSE")), None);
        assert_eq!(infer_reason(HAS_SK, Some("ESTABLISHED")), None);
    }
}
