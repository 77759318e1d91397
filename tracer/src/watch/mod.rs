//! `tracer watch`: the event loop. Ring buffer -> decode -> attribute ->
//! enrich -> sink, with lost-event accounting, accept-failure aggregation and
//! background snapshot refreshes; ends on Ctrl-C, SIGTERM, --duration or a
//! closed stdout.

use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::clock::Clock;
use crate::diagnose::window::Window;
use crate::event::{Event, EventKind};
use crate::output;
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

/// What `watch` and `diagnose` share (main.rs converts the command line
/// into it).
#[derive(Debug, Clone)]
pub struct Common {
    /// `None`: text on a terminal, JSON otherwise (`watch --output`: JSON).
    pub format: Option<output::Format>,
    /// `None`: until a signal or a closed stdout (`diagnose`: its default
    /// window).
    pub duration: Option<f64>,
    pub ring_buffer_kib: u32,
    pub pids: Vec<u32>,
    pub ports: Vec<u16>,
    pub comm: Option<String>,
    /// `session::KernelFilter::storm_per_cpu`'s input: `None` never counts.
    pub storm_threshold: Option<u32>,
    pub no_mechanism: Vec<crate::probes::table::Kind>,
}

impl Common {
    /// What the kernel side filters before a record is written.
    pub fn kernel_filter(&self, all_states: bool) -> KernelFilter {
        KernelFilter {
            ports: self.ports.clone(),
            pids: self.pids.clone(),
            comm: self.comm.clone(),
            all_states,
            storm_per_cpu: crate::storm::per_cpu_threshold(
                self.storm_threshold,
                crate::storm::online_cpus(),
            ),
        }
    }

    /// What userspace filters after (the kernel applies what it can).
    pub fn user_filter(&self) -> UserFilter {
        UserFilter {
            pids: self.pids.clone(),
            ports: self.ports.clone(),
            comm: self.comm.clone(),
        }
    }
}

/// What `watch` runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: Common,
    /// Every state transition too (`state_change` lines).
    pub states: bool,
    /// A `summary` line (the verdict of the last N seconds) every N seconds.
    pub summary_every: Option<f64>,
    pub sink: output::SinkConfig,
}

pub async fn run(args: Config) -> anyhow::Result<End> {
    let mut signals = Signals::install()?;
    let format = match (args.common.format, &args.sink.output) {
        (Some(f), _) => f,
        (None, Some(_)) => output::Format::Json,
        (None, None) => output::Format::default_for_stdout(),
    };
    let (sink, metrics, hup) = output::setup(args.sink.clone(), format).await?;
    let ring = ring_bytes(args.common.ring_buffer_kib)?;
    let kfilter = args.common.kernel_filter(args.states);
    let mut session = Session::start(&kfilter, ring, &args.common.no_mechanism)?;
    let ufilter = args.common.user_filter();
    let mut lp = Loop::new(&mut session, sink, ufilter, args.states)?;
    lp.metrics = metrics;
    lp.hup = hup;
    lp.stdout_events = args.sink.output.is_none();
    if let Some(every) = args.summary_every {
        lp.summary = Some(Summary {
            traffic_start: Default::default(),
            every: Duration::from_secs_f64(every),
            window: Window::default(),
            started: Clock::boot_now(),
            pending: None,
        });
    }
    lp.say_attached();
    lp.start_snapshot();
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
                "snapshot of existing sockets failed: {e}; {}; {}",
                snapshot::SNAPSHOT_COST,
                e.advice()
            );
            None
        }
        Err(e) => {
            log::warn!("snapshot task failed: {e}");
            None
        }
    }
}

mod accepts;
mod counters;
mod event_loop;
mod owner_proc;
mod periodic;
mod startup;

pub use event_loop::{Loop, Summary};
