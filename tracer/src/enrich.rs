//! Records + attribution -> interface events.

use tracer_common::{REASON_NONE, RstRecord, SockInfo, StateRecord};

use crate::attribute::{Attributor, keys, procs::ProcSource};
use crate::clock::Clock;
use crate::event::{Event, EventKind};
use crate::kernel::KernelNames;

/// Everything needed to turn records into events.
pub struct Enricher<'a> {
    pub clock: Clock,
    pub names: &'a KernelNames,
    pub proc_source: &'a dyn ProcSource,
}

impl Enricher<'_> {
    pub fn state_name(&self, state: u8) -> Option<String> {
        if state == 0 {
            return None;
        }
        Some(
            self.names
                .state_name(state as u32)
                .map(str::to_string)
                .unwrap_or_else(|| format!("STATE_{state}")),
        )
    }

    pub fn socket_fields(&self, e: &mut Event, sock: &SockInfo) {
        e.family = keys::family_name(sock.family);
        if let Some(a) = keys::addr(sock.family, &sock.laddr) {
            e.local_addr = Some(a.to_string());
            e.local_port = Some(sock.lport);
        }
        if let Some(a) = keys::addr(sock.family, &sock.raddr) {
            e.remote_addr = Some(a.to_string());
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
        if sent {
            e.reason = Some(if rec.reason == REASON_NONE {
                None
            } else {
                Some(
                    self.names
                        .rst_reason_name(rec.reason)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("REASON_{}", rec.reason)),
                )
            });
        }
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
