//! The event loop: ring buffer -> decode -> attribute -> enrich -> sink.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::Signal;
use tracer_common::OwnerEntry;

use crate::aggregate::{ACCEPT_INTERVAL_MS, AcceptAggregator};
use crate::attribute::Attributor;
use crate::clock::Clock;
use crate::decode::{Record, decode};
use crate::diagnose::window::Window;
use crate::enrich::Enricher;
use crate::event::Event;
use crate::metrics::Metrics;
use crate::metrics::feed::ExchangeFeed;
use crate::output::{self, Sink, is_closed_pipe};
use crate::overflow::{ListenerMonitor, Poll};
use crate::session::Session;
use crate::snapshot::Snapshot;

use super::accepts::AcceptReads;
use super::counters::{Collector, KernelCounts};
use super::owner_proc::OwnerProc;
use super::startup::{needs_snapshot, wait_startup};
use super::{End, Signals, UserFilter};

/// What a caller does with the start-up snapshot before the loop is
/// seeded from it.
pub type OnSnapshot<'s> = Box<dyn FnMut(&Snapshot) + 's>;

/// State of `watch --summary-every`.
pub struct Summary {
    pub every: Duration,
    pub window: Window,
    /// Boot-time ns the current window started.
    pub started: u64,
    /// What the window needs beyond events: the kernel's exchange totals
    /// and the outbound connections at its start.
    pub traffic_start: crate::diagnose::TrafficStart,
    pub(super) pending: Option<tokio::task::JoinHandle<Option<Snapshot>>>,
}

/// How often the ring buffer is drained when the kernel side does not wake
/// the loop (bounds the latency of a quiet host's events).
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// While drains find nothing, the timer backs off (doubling) up to this:
/// an idle host costs 4 wake-ups a second, not 100, and the first record
/// after a quiet spell waits at most this long (the kernel side wakes the
/// loop at once when 256 KiB are waiting, so a storm cannot fill the ring
/// meanwhile).
const DRAIN_IDLE_MAX: Duration = Duration::from_millis(250);

/// Records held while the start-up snapshot runs (about 10 MiB at most).
/// Past this the oldest are attributed at once, with what the kernel's
/// owner map knows: none is dropped.
pub const HELD_MAX: usize = 65_536;

pub struct Loop<'s> {
    pub(super) ring: AsyncFd<RingBuf<MapData>>,
    /// The kernel's counts (lost records, accept failures, RST storms),
    /// read off the event thread once a second (`counters.rs`).
    pub(super) counts: Collector,
    /// Records lost so far, as the last read of the counts said.
    pub(super) drops_seen: u64,
    pub attr: Attributor,
    pub(super) accepts: AcceptAggregator,
    /// `accept_failed` lines waiting for their fd counts (off the thread).
    pub(super) accept_reads: AcceptReads,
    /// Listener inode -> the process that last accepted from it (kernel).
    pub(super) listen_owners: Option<aya::maps::HashMap<MapData, u64, OwnerEntry>>,
    /// The kernel's exchange timing and its listening-port set.
    pub exchanges: Option<crate::exchange::ExchangeMaps>,
    pub(super) sink: Box<dyn Sink>,
    pub(super) filter: UserFilter,
    pub(super) emit_states: bool,
    pub session: &'s Session,
    pub(super) clock: Clock,
    /// Set while the snapshot in `startup` is a refresh, not the first.
    pub(super) refreshing: bool,
    /// How long the last snapshot took (refreshes back off by it).
    pub(super) last_snapshot_took: Duration,
    /// The listener poller: here between polls, in `poll` during one.
    pub(super) monitor: Option<ListenerMonitor>,
    pub(super) poll: Option<tokio::task::JoinHandle<(ListenerMonitor, Poll)>>,
    pub(super) last_refresh: Instant,
    /// `--summary-every`: the window being aggregated.
    pub summary: Option<Summary>,
    /// Events printed and records decoded (for the summary).
    pub printed: u64,
    pub decode_errors: u64,
    /// `--metrics-addr`: gauges refreshed every tick.
    pub metrics: Option<Arc<Metrics>>,
    /// Its exchange refresh thread (started at the first tick).
    pub(super) exchange_feed: Option<ExchangeFeed>,
    /// `--output`: SIGHUP reopens the file.
    pub hup: Option<Signal>,
    /// Events go to stdout: end when its reader goes away.
    pub stdout_events: bool,
    /// The start-up snapshot while it runs ([`Loop::start_snapshot`]); the
    /// records that arrive meanwhile and that it may attribute
    /// ([`needs_snapshot`]) wait in `held`.
    pub(super) startup: Option<tokio::task::JoinHandle<Option<Snapshot>>>,
    pub(super) held: VecDeque<Record>,
    /// Called with the start-up snapshot before the loop is seeded from it.
    pub on_snapshot: Option<OnSnapshot<'s>>,
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
        let accept_fails = session
            .ebpf
            .take_map("ACCEPT_FAILS")
            .map(PerCpuHashMap::try_from)
            .transpose()
            .context("opening the accept-failure counts")?;
        let rst_storms = session
            .ebpf
            .take_map("RST_STORMS")
            .map(PerCpuHashMap::try_from)
            .transpose()
            .context("opening the RST storm counts")?;
        let listen_owners = session
            .ebpf
            .take_map("LISTEN_OWNERS")
            .map(aya::maps::HashMap::try_from)
            .transpose()
            .context("opening the listener owners")?;
        let exchanges = crate::exchange::ExchangeMaps::take(&mut session.ebpf)?;
        // SAFETY: the RingBuf owns its map fd and is moved into the AsyncFd,
        // so the fd stays open, and is not reused, for as long as it is
        // registered; it is deregistered when the AsyncFd drops.
        let ring =
            unsafe { AsyncFd::register(ring) }.context("registering the ring buffer with tokio")?;
        Ok(Loop {
            ring,
            counts: Collector::Idle(Box::new(KernelCounts::new(drops, accept_fails, rst_storms))),
            drops_seen: 0,
            attr: Attributor::default(),
            accepts: AcceptAggregator::default(),
            accept_reads: AcceptReads::default(),
            listen_owners,
            exchanges,
            sink,
            filter,
            emit_states,
            session: &*session,
            clock: Clock::new(),
            refreshing: false,
            last_snapshot_took: Duration::ZERO,
            monitor: Some(ListenerMonitor::default()),
            poll: None,
            summary: None,
            last_refresh: Instant::now(),
            printed: 0,
            decode_errors: 0,
            metrics: None,
            exchange_feed: None,
            hup: None,
            stdout_events: true,
            startup: None,
            held: VecDeque::new(),
            on_snapshot: None,
        })
    }

    pub async fn run(
        &mut self,
        duration: Option<f64>,
        signals: &mut Signals,
    ) -> anyhow::Result<End> {
        let deadline =
            duration.map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d.max(0.0)));
        let mut tick = tokio::time::interval(Duration::from_millis(ACCEPT_INTERVAL_MS));
        // The kernel side wakes this loop only when records pile up
        // (maps.rs, submit_flags); otherwise it drains on this timer.
        let mut drain_every = DRAIN_EVERY;
        let drain_timer = tokio::time::sleep(drain_every);
        tokio::pin!(drain_timer);
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
                snap = wait_startup(&mut self.startup) => {
                    self.startup = None;
                    self.finish_startup(snap).map(|()| None).map_err(anyhow::Error::from)
                }
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.context("waiting on the ring buffer")?;
                    guard.clear_ready();
                    Ok(None)
                }
                _ = tick.tick() => self.on_tick().await.map(|_| None),
                counts = self.counts.done() => match counts {
                    Some(c) => self.on_counts(c).map(|()| None).map_err(anyhow::Error::from),
                    None => Ok(None),
                },
                _ = &mut drain_timer => Ok(None),
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
            let drained = match self.drain() {
                Ok(n) => {
                    drain_every = if n > 0 {
                        DRAIN_EVERY
                    } else {
                        (drain_every * 2).min(DRAIN_IDLE_MAX)
                    };
                    drain_timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + drain_every);
                    self.print_accepts(false).await
                }
                Err(e) => Err(e),
            };
            match (step, drained) {
                (_, Err(e)) if is_closed_pipe(&e) => break End::ReaderClosed,
                (_, Err(e)) => return Err(e).context("writing events"),
                (Err(e), _) => return Err(e),
                (Ok(Some(end)), Ok(())) => break end,
                (Ok(None), Ok(())) => {}
            }
        };
        self.hup = hup;
        if let Some(h) = self.startup.take() {
            // Ended before the start-up snapshot was in: attribute what
            // waited with it all the same.
            let snap = h.await.ok().flatten();
            match self
                .finish_startup(snap)
                .and_then(|()| self.drain().map(drop))
            {
                Err(e) if is_closed_pipe(&e) => return Ok(End::ReaderClosed),
                other => other.context("writing events")?,
            }
        }
        if end == End::ReaderClosed {
            log::info!("stdout closed by its reader; detaching");
        } else {
            let counts = self.counts.last().await;
            let last = match self.on_counts(counts) {
                Ok(()) => self.print_accepts(true).await,
                Err(e) => Err(e),
            };
            match last {
                Err(e) if is_closed_pipe(&e) => return Ok(End::ReaderClosed),
                other => other.context("writing events")?,
            }
        }
        Ok(end)
    }

    /// Reads everything the ring buffer holds now; returns how many
    /// records it read.
    pub(super) fn drain(&mut self) -> std::io::Result<u32> {
        let mut n = 0u32;
        loop {
            let rec = {
                let Some(item) = self.ring.get_mut().next() else {
                    break;
                };
                decode(&item)
            };
            match rec {
                Ok(rec) if self.startup.is_some() && needs_snapshot(&rec) => {
                    self.held.push_back(rec);
                    if self.held.len() > HELD_MAX
                        && let Some(oldest) = self.held.pop_front()
                    {
                        self.process(&oldest)?;
                    }
                }
                Ok(rec) => self.process(&rec)?,
                Err(e) => {
                    self.decode_errors += 1;
                    log::warn!("dropping a malformed record: {e}");
                }
            }
            n += 1;
            // Keep the lines flowing to the reader during a storm.
            if n.is_multiple_of(4096) {
                self.sink.flush()?;
            }
        }
        self.sink.flush()?;
        Ok(n)
    }

    /// Attributes, enriches and prints one record. Records and events
    /// are used where they are (an event is a few hundred bytes, and
    /// moving them showed in a storm's profile).
    pub(super) fn process(&mut self, rec: &Record) -> std::io::Result<()> {
        let session = self.session;
        let enricher = Enricher {
            clock: self.clock,
            names: &session.kernel.names,
            proc_source: &OwnerProc,
        };
        match rec {
            Record::RstSent(r) => {
                let e = enricher.rst(&mut self.attr, r, true);
                self.emit_passing(&e)
            }
            Record::RstReceived(r) => {
                let e = enricher.rst(&mut self.attr, r, false);
                self.emit_passing(&e)
            }
            Record::State(r) => {
                let e = enricher.state(&mut self.attr, r);
                if self.emit_states {
                    self.emit_passing(&e)?;
                }
                Ok(())
            }
            Record::AcceptFailed(r) => {
                self.accepts.add(r);
                Ok(())
            }
        }
    }

    /// Prints an event that passes the user's filter.
    fn emit_passing(&mut self, e: &Event) -> std::io::Result<()> {
        if self.filter.passes(e) {
            self.emit(e)?;
        }
        Ok(())
    }

    /// Prints an event (and adds it to the summary window).
    pub(super) fn emit(&mut self, e: &Event) -> std::io::Result<()> {
        if let Some(s) = &mut self.summary {
            s.window.add(e);
        }
        self.sink.event(e)?;
        self.printed += 1;
        Ok(())
    }
}
