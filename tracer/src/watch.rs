//! `tracer watch`: the event loop. Ring buffer -> decode -> attribute ->
//! enrich -> sink, with lost-event accounting, accept-failure aggregation and
//! background snapshot refreshes; ends on Ctrl-C, SIGTERM, --duration or a
//! closed stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::aggregate::{ACCEPT_INTERVAL_MS, AcceptAggregator};
use crate::attribute::{Attributor, procs::LiveProc};
use crate::cli::WatchArgs;
use crate::clock::Clock;
use crate::decode::{Record, decode};
use crate::diagnose::window::Window;
use crate::enrich::Enricher;
use crate::event::{AttributedBy, Event, EventKind, comm_string, errno_name};
use crate::metrics::Metrics;
use crate::output::{self, Sink, is_closed_pipe};
use crate::overflow::{ListenerMonitor, Overflow};
use crate::session::{KernelFilter, Session, ring_bytes};
use crate::snapshot::{self, Snapshot, SnapshotOptions};

/// Minimum time between two snapshot refreshes triggered by unknown owners.
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Signal,
    Duration,
    ReaderClosed,
}

/// Userspace filters (the kernel applies what it can before).
pub struct UserFilter {
    pub pids: Vec<u32>,
    pub ports: Vec<u16>,
    pub comm: Option<String>,
}

impl UserFilter {
    pub fn passes(&self, e: &Event) -> bool {
        if e.event == EventKind::Lost {
            return true;
        }
        if !self.pids.is_empty() && !e.pid.is_some_and(|p| self.pids.contains(&p)) {
            return false;
        }
        if !self.ports.is_empty()
            && !e.local_port.is_some_and(|p| self.ports.contains(&p))
            && !e.remote_port.is_some_and(|p| self.ports.contains(&p))
        {
            return false;
        }
        if let Some(c) = &self.comm
            && e.comm.as_deref() != Some(c.as_str())
        {
            return false;
        }
        true
    }
}

/// SIGINT and SIGTERM handlers, installed before anything is attached so a
/// signal during start-up still ends the session cleanly.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }
}

pub async fn run(args: WatchArgs) -> anyhow::Result<End> {
    let mut signals = Signals::install()?;
    let format = match (args.common.format, &args.output) {
        (Some(f), _) => f,
        (None, Some(_)) => output::Format::Json,
        (None, None) => output::Format::default_for_stdout(),
    };
    let (sink, metrics, hup) = output::setup(&args, format).await?;
    let ring = ring_bytes(args.common.ring_buffer_kib)?;
    let kfilter = KernelFilter {
        ports: args.common.port.clone(),
        pids: args.common.pid.clone(),
        comm: args.common.comm.clone(),
        all_states: args.states,
    };
    let mut session = Session::start(&kfilter, ring)?;
    let ufilter = UserFilter {
        pids: args.common.pid.clone(),
        ports: args.common.port.clone(),
        comm: args.common.comm.clone(),
    };
    let mut lp = Loop::new(&mut session, sink, ufilter, args.states)?;
    lp.metrics = metrics;
    lp.hup = hup;
    lp.stdout_events = args.output.is_none();
    if let Some(every) = args.summary_every {
        lp.summary = Some(Summary {
            every: Duration::from_secs_f64(every),
            window: Window::default(),
            started: Clock::boot_now(),
            pending: None,
        });
    }
    let snap = take_snapshot_blocking().await;
    let sockets = snap.as_ref().map_or(0, |s| s.sockets.len());
    lp.seed(snap);
    let attached = lp
        .session
        .hooks
        .iter()
        .filter(|h| h.chosen.is_some())
        .count();
    log::info!(
        "attached: {attached} of {} hooks on {}; {sockets} existing sockets known",
        lp.session.hooks.len(),
        lp.session.caps.release
    );
    lp.run(args.common.duration, &mut signals).await
}

pub async fn take_snapshot_blocking() -> Option<Snapshot> {
    let res =
        tokio::task::spawn_blocking(|| snapshot::take_snapshot(&SnapshotOptions::default())).await;
    match res {
        Ok(Ok(s)) => {
            if s.warnings > 0 {
                log::debug!(
                    "snapshot: {} warnings, e.g. {:?}",
                    s.warnings,
                    s.warning_samples.first()
                );
            }
            Some(s)
        }
        Ok(Err(e)) => {
            log::warn!(
                "snapshot of existing sockets failed: {e}; owners of older sockets may be unknown"
            );
            None
        }
        Err(e) => {
            log::warn!("snapshot task failed: {e}");
            None
        }
    }
}

/// State of `watch --summary-every`.
pub struct Summary {
    pub every: Duration,
    pub window: Window,
    /// Boot-time ns the current window started.
    pub started: u64,
    pending: Option<tokio::task::JoinHandle<Option<Snapshot>>>,
}

pub struct Loop<'s> {
    ring: AsyncFd<RingBuf<MapData>>,
    drops: PerCpuArray<MapData, u64>,
    drops_seen: u64,
    pub attr: Attributor,
    accepts: AcceptAggregator,
    sink: Box<dyn Sink>,
    filter: UserFilter,
    emit_states: bool,
    pub session: &'s Session,
    clock: Clock,
    refresh: Option<tokio::task::JoinHandle<Option<Snapshot>>>,
    /// The listener poller: here between polls, in `poll` during one.
    monitor: Option<ListenerMonitor>,
    poll: Option<tokio::task::JoinHandle<(ListenerMonitor, Vec<Overflow>)>>,
    last_refresh: Instant,
    /// `--summary-every`: the window being aggregated.
    pub summary: Option<Summary>,
    /// Events printed and records decoded (for the summary).
    pub printed: u64,
    pub decode_errors: u64,
    /// `--metrics-addr`: gauges refreshed every tick.
    pub metrics: Option<Arc<Metrics>>,
    /// `--output`: SIGHUP reopens the file.
    pub hup: Option<Signal>,
    /// Events go to stdout: end when its reader goes away.
    pub stdout_events: bool,
}

impl<'s> Loop<'s> {
    pub fn new(
        session: &'s mut Session,
        sink: Box<dyn Sink>,
        filter: UserFilter,
        emit_states: bool,
    ) -> anyhow::Result<Self> {
        let ring_map = session
            .ebpf
            .take_map("EVENTS")
            .ok_or_else(|| anyhow!("EVENTS map missing from the eBPF object"))?;
        let ring = RingBuf::try_from(ring_map).context("opening the ring buffer")?;
        let drops_map = session
            .ebpf
            .take_map("DROPS")
            .ok_or_else(|| anyhow!("DROPS map missing from the eBPF object"))?;
        let drops = PerCpuArray::try_from(drops_map).context("opening the drop counter")?;
        // SAFETY: the RingBuf owns its map fd and is moved into the AsyncFd,
        // so the fd stays open, and is not reused, for as long as it is
        // registered; it is deregistered when the AsyncFd drops.
        let ring =
            unsafe { AsyncFd::register(ring) }.context("registering the ring buffer with tokio")?;
        Ok(Loop {
            ring,
            drops,
            drops_seen: 0,
            attr: Attributor::default(),
            accepts: AcceptAggregator::default(),
            sink,
            filter,
            emit_states,
            session: &*session,
            clock: Clock::new(),
            refresh: None,
            monitor: Some(ListenerMonitor::default()),
            poll: None,
            summary: None,
            last_refresh: Instant::now(),
            printed: 0,
            decode_errors: 0,
            metrics: None,
            hup: None,
            stdout_events: true,
        })
    }

    pub fn seed(&mut self, snap: Option<Snapshot>) {
        if let Some(s) = snap {
            self.attr.seed(&s, Clock::boot_now());
            if let Some(m) = &mut self.monitor {
                m.namespaces = s.namespaces.clone();
                // Baseline now, so drops before tracer started are not
                // reported as happening in the first second.
                m.diff(s.listeners().cloned().collect());
            }
        }
    }

    pub async fn run(
        &mut self,
        duration: Option<f64>,
        signals: &mut Signals,
    ) -> anyhow::Result<End> {
        let deadline =
            duration.map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d.max(0.0)));
        let mut tick = tokio::time::interval(Duration::from_millis(ACCEPT_INTERVAL_MS));
        let reader = self
            .stdout_events
            .then(crate::output::closed::ReaderGone::stdout);
        let mut hup = self.hup.take();
        let end = loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.context("waiting on the ring buffer")?;
                    guard.clear_ready();
                    Ok(None)
                }
                _ = tick.tick() => self.on_tick().await.map(|_| None),
                _ = signals.int.recv() => Ok(Some(End::Signal)),
                _ = signals.term.recv() => Ok(Some(End::Signal)),
                _ = sleep => Ok(Some(End::Duration)),
                _ = async {
                    match &reader {
                        Some(r) => r.wait().await,
                        None => std::future::pending().await,
                    }
                } => Ok(Some(End::ReaderClosed)),
                _ = output::recv_opt(&mut hup) => {
                    self.reopen_output();
                    Ok(None)
                }
            };
            // Drain after every wake-up (also the last one) so nothing the
            // kernel handed over is left unprinted.
            let drained = self.drain();
            match (step, drained) {
                (_, Err(e)) if is_closed_pipe(&e) => break End::ReaderClosed,
                (_, Err(e)) => return Err(e).context("writing events"),
                (Err(e), _) => return Err(e),
                (Ok(Some(end)), Ok(())) => break end,
                (Ok(None), Ok(())) => {}
            }
        };
        self.hup = hup;
        if end == End::ReaderClosed {
            log::info!("stdout closed by its reader; detaching");
        } else {
            match self.flush_periodic() {
                Err(e) if is_closed_pipe(&e) => return Ok(End::ReaderClosed),
                other => other.context("writing events")?,
            }
        }
        Ok(end)
    }

    /// Reads everything the ring buffer holds now.
    fn drain(&mut self) -> std::io::Result<()> {
        let enricher = Enricher {
            clock: self.clock,
            names: &self.session.kernel.names,
            proc_source: &LiveProc,
        };
        let mut n = 0u32;
        while let Some(item) = self.ring.get_mut().next() {
            let rec = decode(&item);
            drop(item);
            let ev = match rec {
                Ok(Record::RstSent(r)) => Some(enricher.rst(&mut self.attr, &r, true)),
                Ok(Record::RstReceived(r)) => Some(enricher.rst(&mut self.attr, &r, false)),
                Ok(Record::State(r)) => {
                    let e = enricher.state(&mut self.attr, &r);
                    self.emit_states.then_some(e)
                }
                Ok(Record::AcceptFailed(r)) => {
                    self.accepts.add(&r);
                    None
                }
                Err(e) => {
                    self.decode_errors += 1;
                    log::warn!("dropping a malformed record: {e}");
                    None
                }
            };
            if let Some(e) = ev
                && self.filter.passes(&e)
            {
                // Field by field: the ring buffer item borrows `self.ring`.
                if let Some(s) = &mut self.summary {
                    s.window.add(&e);
                }
                self.sink.event(&e)?;
                self.printed += 1;
            }
            n += 1;
            // Keep the lines flowing to the reader during a storm.
            if n % 4096 == 0 {
                self.sink.flush()?;
            }
        }
        self.sink.flush()
    }

    /// Prints an event (and adds it to the summary window).
    fn emit(&mut self, e: &Event) -> std::io::Result<()> {
        if let Some(s) = &mut self.summary {
            s.window.add(e);
        }
        self.sink.event(e)?;
        self.printed += 1;
        Ok(())
    }

    /// `--summary-every`: when the period is over, snapshot in the
    /// background; when the snapshot is in, print the verdict and start a
    /// new window.
    async fn maybe_summarize(&mut self) -> std::io::Result<()> {
        let Some(s) = &mut self.summary else {
            return Ok(());
        };
        let now = Clock::boot_now();
        if s.pending.is_none() {
            if now.saturating_sub(s.started) >= s.every.as_nanos() as u64 {
                s.pending = Some(tokio::task::spawn_blocking(|| {
                    snapshot::take_snapshot(&SnapshotOptions::default()).ok()
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
            let report = crate::diagnose::verdict(&window, &end, &self.attr, started, window_s);
            let ts = self.clock.rfc3339(now);
            self.sink.summary(&ts, &report)?;
        }
        Ok(())
    }

    /// SIGHUP with `--output`: continue in a fresh file (logrotate).
    fn reopen_output(&mut self) {
        match self.sink.reopen() {
            Ok(()) => log::info!("SIGHUP: reopened the --output file"),
            Err(e) => log::warn!(
                "SIGHUP: cannot reopen the --output file ({e}); still writing to the old one"
            ),
        }
    }

    async fn on_tick(&mut self) -> anyhow::Result<()> {
        if let Some(m) = &self.metrics {
            m.refresh_processes(self.attr.close_wait_by_pid());
        }
        self.flush_periodic()?;
        self.maybe_summarize().await?;
        self.maybe_refresh().await;
        self.poll_listeners().await?;
        Ok(())
    }

    /// Collects the previous listener poll (emitting `listen_overflow`
    /// lines) and starts the next one, off the event path.
    async fn poll_listeners(&mut self) -> std::io::Result<()> {
        if let Some(h) = &self.poll {
            if !h.is_finished() {
                return Ok(());
            }
            if let Some(h) = self.poll.take() {
                match h.await {
                    Ok((monitor, overflows)) => {
                        self.monitor = Some(monitor);
                        for o in overflows {
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
            self.poll = Some(tokio::task::spawn_blocking(move || {
                let out = monitor.poll();
                (monitor, out)
            }));
        }
        Ok(())
    }

    fn overflow_event(&mut self, o: &Overflow) -> Event {
        let l = &o.listener;
        let mut e = Event::new(
            EventKind::ListenOverflow,
            self.clock.rfc3339(Clock::boot_now()),
        );
        let (owner, by) = self
            .attr
            .listener_owner(l.netns, l.local.port(), l.inode, &LiveProc);
        e.set_owner(owner.as_ref(), by);
        e.family = crate::attribute::keys::family_name(l.family);
        e.local_addr = Some(l.local.ip().to_string());
        e.local_port = Some(l.local.port());
        e.state = Some(Some("LISTEN".into()));
        e.backlog = Some(l.wqueue);
        e.queued = Some(l.rqueue);
        e.count = Some(o.drops);
        e.netns = Some(l.netns);
        e.socket_inode = (l.inode != 0).then_some(l.inode);
        e
    }

    /// Lost-event lines and aggregated accept failures.
    fn flush_periodic(&mut self) -> std::io::Result<()> {
        let total: u64 = self
            .drops
            .get(&0, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(self.drops_seen);
        if total > self.drops_seen {
            let mut e = Event::new(EventKind::Lost, self.clock.rfc3339(Clock::boot_now()));
            e.count = Some(total - self.drops_seen);
            self.drops_seen = total;
            self.sink.event(&e)?;
        }
        for (rec, count) in self.accepts.drain() {
            let e = self.accept_event(&rec, count);
            if self.filter.passes(&e) {
                self.emit(&e)?;
            }
        }
        self.sink.flush()
    }

    fn accept_event(&mut self, rec: &tracer_common::AcceptFailedRecord, count: u64) -> Event {
        let enricher = Enricher {
            clock: self.clock,
            names: &self.session.kernel.names,
            proc_source: &LiveProc,
        };
        let mut e = Event::new(
            EventKind::AcceptFailed,
            self.clock.rfc3339(rec.header.ts_boot_ns),
        );
        let owner = self.attr.procs.owner_of_task(&rec.task, &LiveProc);
        e.set_owner(Some(&owner), AttributedBy::CurrentTask);
        if rec.listener.skaddr != 0 {
            enricher.socket_fields(&mut e, &rec.listener);
            // A listener has no peer.
            e.remote_addr = None;
            e.remote_port = None;
        }
        e.errno = Some(rec.errno);
        e.error = Some(errno_name(rec.errno));
        let info = snapshot::process_info(rec.task.tgid);
        e.fd_count = Some(info.as_ref().map(|i| i.fd_count));
        e.fd_limit = Some(if rec.fd_limit != 0 {
            Some(rec.fd_limit)
        } else {
            info.and_then(|i| i.fd_limit)
        });
        e.count = Some(count);
        if e.comm.is_none() {
            e.comm = Some(comm_string(&rec.task.comm));
        }
        e
    }

    async fn maybe_refresh(&mut self) {
        if let Some(h) = &self.refresh
            && h.is_finished()
        {
            if let Some(h) = self.refresh.take()
                && let Ok(Some(s)) = h.await
            {
                self.attr.seed(&s, Clock::boot_now());
            }
            return;
        }
        if self.refresh.is_none()
            && self.attr.wants_refresh
            && self.last_refresh.elapsed() >= REFRESH_EVERY
        {
            self.last_refresh = Instant::now();
            self.attr.wants_refresh = false;
            self.refresh = Some(tokio::task::spawn_blocking(|| {
                snapshot::take_snapshot(&SnapshotOptions::default()).ok()
            }));
        }
    }
}
