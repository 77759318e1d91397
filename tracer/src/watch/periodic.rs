//! What the loop does once a second: lost-event lines, aggregated accept
//! failures, listener polls, snapshot refreshes, summaries, SIGHUP.

use crate::snapshot;
use std::sync::Arc;

use crate::aggregate::Interval;
use crate::clock::Clock;
use crate::enrich::Enricher;
use crate::event::{AttributedBy, Event, EventKind, comm_string, errno_name};
use crate::metrics::feed::{ExchangeFeed, proc_comm};
use crate::overflow::Overflow;
use tracer_common::socket_id;

use super::accepts::Pending;
use super::counters::Counts;
use super::owner_proc::OwnerProc;
use super::{Loop, REFRESH_EVERY};

impl Loop<'_> {
    /// `--summary-every`: when the period is over, snapshot in the
    /// background; when the snapshot is in, print the verdict and start a
    /// new window.
    pub(super) async fn maybe_summarize(&mut self) -> std::io::Result<()> {
        let Some(s) = &mut self.summary else {
            return Ok(());
        };
        let now = Clock::boot_now();
        if s.pending.is_none() {
            if now.saturating_sub(s.started) >= s.every.as_nanos() as u64 {
                let close_wait = self.attr.close_wait_keys();
                s.pending = Some(tokio::task::spawn_blocking(move || {
                    snapshot::take_snapshot_expecting(&close_wait).ok()
                }));
            }
            return Ok(());
        }
        if !s.pending.as_ref().is_some_and(|h| h.is_finished()) {
            return Ok(());
        }
        let Some(h) = s.pending.take() else {
            return Ok(());
        };
        let window = std::mem::take(&mut s.window);
        let started = std::mem::replace(&mut s.started, now);
        let window_s = now.saturating_sub(started) as f64 / 1e9;
        if let Ok(Some(end)) = h.await {
            let next = crate::diagnose::TrafficStart::new(&end, self.exchanges.as_ref());
            let start = std::mem::replace(&mut s.traffic_start, next);
            let traffic = start.until(&s.traffic_start);
            let report = crate::diagnose::verdict_scoped(
                &window,
                &end,
                &traffic,
                &self.attr,
                started,
                window_s,
                &self.filter.pids,
                &self.filter.ports,
            );
            let ts = self.clock.rfc3339(now);
            self.sink.summary(&ts, &report)?;
        }
        Ok(())
    }

    /// SIGHUP with `--output`: continue in a fresh file (logrotate).
    pub(super) fn reopen_output(&mut self) {
        match self.sink.reopen() {
            Ok(()) => log::info!("SIGHUP: reopened the --output file"),
            Err(e) => log::warn!(
                "SIGHUP: cannot reopen the --output file ({e}); still writing to the old one"
            ),
        }
    }

    pub(super) async fn on_tick(&mut self) -> anyhow::Result<()> {
        // Follow steps and slewing of the wall clock.
        self.clock.resample();
        if self.startup.is_some() {
            // The kernel's counts wait in their maps, and attribution for
            // the snapshot, like the held records.
            return Ok(());
        }
        // What the per-second consumers need, only when there is one.
        let wanted = self.sink.wants_seconds() || self.metrics.is_some();
        let close_wait = if wanted {
            self.attr.close_wait_by_pid()
        } else {
            Default::default()
        };
        let now_ns = Clock::boot_now();
        let exchanges = wanted
            .then(|| self.exchanges.as_ref().map(|x| x.read()))
            .flatten();
        if self.sink.wants_seconds() {
            self.sink.second(&crate::output::Second {
                now_ns,
                close_wait_by_pid: &close_wait,
                exchanges: exchanges.as_ref(),
            });
        }
        if let Some(m) = &self.metrics {
            m.refresh_processes(close_wait);
            if let Some(totals) = exchanges {
                // On its own thread (it reads /proc for new processes' names).
                if self.exchange_feed.is_none() {
                    match ExchangeFeed::spawn(Arc::clone(m)) {
                        Ok(f) => self.exchange_feed = Some(f),
                        Err(e) => log::warn!("metrics: cannot start the exchange refresh: {e}"),
                    }
                }
                match &mut self.exchange_feed {
                    Some(f) => f.send(totals, now_ns),
                    None => m.exchanges.refresh(totals, now_ns, &proc_comm),
                }
            }
        }
        self.counts.start();
        self.print_accepts(false).await?;
        self.maybe_summarize().await?;
        self.maybe_refresh().await;
        self.poll_listeners().await?;
        Ok(())
    }

    /// Collects the previous listener poll (emitting `listen_overflow`
    /// lines) and starts the next one, off the event path.
    pub(super) async fn poll_listeners(&mut self) -> std::io::Result<()> {
        if let Some(h) = &self.poll {
            if !h.is_finished() {
                return Ok(());
            }
            if let Some(h) = self.poll.take() {
                match h.await {
                    Ok((monitor, poll)) => {
                        self.monitor = Some(monitor);
                        if let Some(seen) = &poll.close_wait {
                            self.attr.reconcile_close_wait(seen);
                        }
                        for o in poll.overflows {
                            let e = self.overflow_event(&o);
                            if self.filter.passes(&e) {
                                self.emit(&e)?;
                            }
                        }
                        self.sink.flush()?;
                    }
                    Err(e) => log::warn!("listener poll failed: {e}"),
                }
            }
        }
        if let Some(mut monitor) = self.monitor.take() {
            for ns in self.attr.seen_netns.drain() {
                monitor.watch_netns(ns);
            }
            monitor.close_wait_wanted = !self.attr.close_wait.is_empty();
            monitor.close_wait_unheld = self.attr.close_wait_unheld();
            monitor.lost_total = self.drops_seen;
            self.poll = Some(tokio::task::spawn_blocking(move || {
                let out = monitor.poll();
                (monitor, out)
            }));
        }
        Ok(())
    }

    pub(super) fn overflow_event(&mut self, o: &Overflow) -> Event {
        let l = &o.listener;
        let mut e = Event::new(
            EventKind::ListenOverflow,
            self.clock.rfc3339(Clock::boot_now()),
        );
        // One lookup by inode; a missing entry is no evidence.
        let accepting = self
            .listen_owners
            .as_ref()
            .and_then(|m| m.get(&l.inode, 0).ok())
            .map(|e| e.task);
        let (owner, by) = self.attr.listener_owner(
            l.netns,
            l.local.port(),
            l.inode,
            accepting.as_ref(),
            &OwnerProc,
        );
        e.set_owner(owner.as_ref(), by);
        e.family = socket_id::family_name(l.family);
        e.local_addr = Some(l.local.ip());
        e.local_port = Some(l.local.port());
        e.state = Some(Some("LISTEN".into()));
        e.backlog = Some(l.wqueue);
        e.queued = Some(l.rqueue);
        e.count = Some(o.drops);
        e.netns = Some(l.netns);
        e.socket_inode = (l.inode != 0).then_some(l.inode);
        e
    }

    /// Turns what the kernel's counts collector read (`counters.rs`) into
    /// lines: lost records, accept failures (printed once their fds are
    /// read, `accepts.rs`) and RST storms.
    pub(super) fn on_counts(&mut self, c: Counts) -> std::io::Result<()> {
        self.drops_seen = c.lost_total;
        if c.lost > 0 {
            let mut e = Event::new(EventKind::Lost, self.clock.rfc3339(Clock::boot_now()));
            e.count = Some(c.lost);
            self.sink.event(&e)?;
        }
        for i in c.accept_failures {
            self.accepts.add_n(&i.first, i.count, i.last_ns);
        }
        // Printed when their fds are read (`accepts.rs`), in order.
        let mut lines = Vec::new();
        for i in self.accepts.drain() {
            let line = self.accept_event(&i);
            if self.filter.passes(&line.event) {
                lines.push(line);
            }
        }
        self.accept_reads.start(lines);
        let enricher = Enricher {
            clock: self.clock,
            names: &self.session.kernel.names,
            proc_source: &OwnerProc,
        };
        let storms: Vec<Event> = c
            .storms
            .iter()
            .map(|line| enricher.storm(&mut self.attr, line))
            .collect();
        for e in storms {
            if self.filter.passes(&e) {
                self.emit(&e)?;
            }
        }
        self.sink.flush()
    }

    /// One interval's `accept_failed` line: the first failure's details,
    /// the count, and the time of the last failure it counts; its fd
    /// fields are filled off the event thread (`accepts::fill_fds`).
    pub(super) fn accept_event(&mut self, interval: &Interval) -> Pending {
        let (rec, count) = (&interval.first, interval.count);
        let enricher = Enricher {
            clock: self.clock,
            names: &self.session.kernel.names,
            proc_source: &OwnerProc,
        };
        let mut e = Event::new(
            EventKind::AcceptFailed,
            self.clock.rfc3339(interval.last_ns),
        );
        let owner = self.attr.procs.owner_of_task(&rec.task, &OwnerProc);
        e.set_owner(Some(&owner), AttributedBy::CurrentTask);
        if rec.listener.skaddr != 0 {
            enricher.socket_fields(&mut e, &rec.listener);
            // A listener has no peer.
            e.remote_addr = None;
            e.remote_port = None;
        }
        e.errno = Some(rec.errno);
        e.error = Some(errno_name(rec.errno));
        e.count = Some(count);
        if e.comm.is_none() {
            e.comm = Some(comm_string(&rec.task.comm).into());
        }
        Pending {
            event: e,
            tgid: rec.task.tgid,
            kernel_fd_limit: rec.fd_limit,
        }
    }

    /// A snapshot refresh when some socket's owner is unknown, at most
    /// every [`REFRESH_EVERY`] and, on a host where a snapshot is costly,
    /// at most every [`REFRESH_COST_FACTOR`] times as long as the last one
    /// took (a 1 s snapshot of 128k sockets: one every 20 s at most, 5 %
    /// of a CPU at worst). It runs like the start-up snapshot: records it
    /// may attribute wait for it, and the attributor's old owner maps are
    /// dropped first, so a big host's two copies never coexist.
    pub(super) async fn maybe_refresh(&mut self) {
        let every = REFRESH_EVERY.max(self.last_snapshot_took * REFRESH_COST_FACTOR);
        if self.startup.is_none() && self.attr.wants_refresh && self.last_refresh.elapsed() >= every
        {
            self.attr.wants_refresh = false;
            self.attr.forget_snapshot();
            self.refreshing = true;
            self.start_snapshot();
        }
    }
}

/// Refreshes wait at least this many times as long as a snapshot takes.
const REFRESH_COST_FACTOR: u32 = 20;
