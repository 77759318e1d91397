//! The start-up snapshot and its refreshes, while the loop runs: records
//! they may attribute wait in `Loop::held` until the snapshot is in.

use std::time::Instant;

use crate::clock::Clock;
use crate::decode::Record;
use crate::snapshot::Snapshot;

use super::Loop;

impl Loop<'_> {
    /// Reads every namespace's listener-drop counter every second, quiet
    /// ones too (diagnose: its window is short and must see every drop in
    /// it; `watch` reads quiet namespaces every few seconds).
    pub fn poll_quiet_namespaces_too(&mut self) {
        if let Some(m) = &mut self.monitor {
            m.quiet_every = 1;
        }
    }

    /// Says the hooks are in (`watch`; `diagnose` says its window began).
    /// Said before the snapshot, not after it: events flow from here on,
    /// and a stdout nobody reads (which blocks the loop's writes) must not
    /// hide that.
    pub fn say_attached(&self) {
        let attached = self
            .session
            .hooks
            .iter()
            .filter(|h| h.chosen.is_some())
            .count();
        log::info!(
            target: "tracer::watch",
            "attached: {attached} of {} hooks on {}; reading the existing sockets",
            self.session.hooks.len(),
            self.session.caps.release
        );
    }

    /// Takes the start-up snapshot in the background: the loop runs (and
    /// the ring buffer is drained) from now on; records wait until the
    /// snapshot is in, then are attributed with it.
    pub fn start_snapshot(&mut self) {
        self.last_refresh = Instant::now();
        self.startup = Some(tokio::spawn(super::take_snapshot_blocking()));
    }

    /// The start-up snapshot is in: seed from it, then attribute and print
    /// what waited.
    pub(super) fn finish_startup(&mut self, snap: Option<Snapshot>) -> std::io::Result<()> {
        self.startup = None;
        self.last_snapshot_took = self.last_refresh.elapsed();
        if std::mem::take(&mut self.refreshing) {
            match snap {
                Some(s) => {
                    if let Some(x) = &mut self.exchanges {
                        x.set_listeners(&s);
                    }
                    self.attr.seed_owned(s, Clock::boot_now());
                }
                None => log::warn!(
                    "the snapshot refresh failed: owners of sockets older than tracer are unknown until the next one"
                ),
            }
            log::debug!(
                "snapshot refresh in after {:?}; {} records held meanwhile",
                self.last_snapshot_took,
                self.held.len()
            );
            while let Some(rec) = self.held.pop_front() {
                self.process(&rec)?;
            }
            crate::session::release_freed_memory();
            return self.sink.flush();
        }
        if let (Some(f), Some(s)) = (&mut self.on_snapshot, &snap) {
            f(s);
        }
        let sockets = snap.as_ref().map_or(0, |s| s.sockets.len());
        self.seed(snap);
        log::info!(
            target: "tracer::watch",
            "ready: {sockets} existing sockets known after {:.1} s; {} records held meanwhile",
            self.last_snapshot_took.as_secs_f64(),
            self.held.len()
        );
        while let Some(rec) = self.held.pop_front() {
            self.process(&rec)?;
        }
        crate::session::release_freed_memory();
        self.sink.flush()
    }

    pub fn seed(&mut self, snap: Option<Snapshot>) {
        if let Some(s) = snap {
            if let Some(x) = &mut self.exchanges {
                x.set_listeners(&s);
            }
            if let Some(sum) = &mut self.summary {
                sum.traffic_start = crate::diagnose::TrafficStart::new(&s, self.exchanges.as_ref());
            }
            if let Some(m) = &mut self.monitor {
                m.namespaces = s.namespaces.clone();
                // Baseline now, so drops before tracer started are not
                // reported as happening in the first second.
                m.diff(s.listeners().cloned().collect());
            }
            self.attr.seed_owned(s, Clock::boot_now());
        }
    }
}

/// Whether the start-up snapshot may know more of a record's owner than
/// the kernel told: a socket whose owner the kernel side did not know, or
/// named as tracer itself (`attribute::is_own`: a socket its snapshot
/// reader closed for the process that had just let go of it).
/// Resets with no socket at all (a closed port) and records whose owner
/// came from the kernel are printed at once, the others wait for it.
pub fn needs_snapshot(rec: &Record) -> bool {
    use crate::attribute::is_own;
    use tracer_common::owner_source::NONE;
    match rec {
        Record::RstSent(r) | Record::RstReceived(r) => {
            r.sock.skaddr != 0 && (r.owner_source == NONE || is_own(&r.owner))
        }
        Record::State(r) => r.owner_source == NONE || is_own(&r.owner),
        Record::AcceptFailed(_) => false,
    }
}

/// The start-up snapshot, once it is in; never, when none is pending.
pub(super) async fn wait_startup(
    pending: &mut Option<tokio::task::JoinHandle<Option<Snapshot>>>,
) -> Option<Snapshot> {
    match pending {
        Some(h) => h.await.ok().flatten(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{AcceptFailedRecord, RstRecord, StateRecord, owner_source};

    #[test]
    fn only_records_the_snapshot_can_attribute_wait_for_it() {
        let closed_port = RstRecord::default();
        assert!(!needs_snapshot(&Record::RstSent(closed_port)));
        let mut old_socket = RstRecord::default();
        old_socket.sock.skaddr = 0xffff_8880_0000_1000;
        assert!(needs_snapshot(&Record::RstReceived(old_socket)));
        let mut known = old_socket;
        known.owner_source = owner_source::SOCKET_MAP;
        known.owner.tgid = 4242;
        assert!(!needs_snapshot(&Record::RstSent(known)));
        // Named as tracer itself: the snapshot knows the real holder.
        let mut own = known;
        own.owner.tgid = std::process::id();
        assert!(needs_snapshot(&Record::RstSent(own)));
        let mut state = StateRecord::default();
        assert!(needs_snapshot(&Record::State(state)));
        state.owner_source = owner_source::LOCKED_CURRENT;
        state.owner.tgid = 4242;
        assert!(!needs_snapshot(&Record::State(state)));
        state.owner.tgid = std::process::id();
        assert!(needs_snapshot(&Record::State(state)));
        assert!(!needs_snapshot(&Record::AcceptFailed(
            AcceptFailedRecord::default()
        )));
    }
}
