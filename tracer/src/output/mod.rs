//! Outputs: one event per line, JSON for machines, text for people. They know
//! nothing of BPF; they print `event::Event`s.

pub mod closed;
pub mod file;
pub mod json;
pub mod text;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::event::Event;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

impl Format {
    /// Text on a terminal, JSON when stdout is a pipe or a file.
    pub fn default_for_stdout() -> Format {
        use std::io::IsTerminal;
        if io::stdout().is_terminal() {
            Format::Text
        } else {
            Format::Json
        }
    }
}

/// What sinks that chart the window get once a second.
pub struct Second<'a> {
    pub now_ns: u64,
    /// The attributor's sockets in CLOSE_WAIT per owner: (count, earliest
    /// entry in boot ns, some already there at start).
    pub close_wait_by_pid: &'a HashMap<Option<u32>, (u64, Option<u64>, bool)>,
    /// The kernel's exchange totals now, where exchange timing runs.
    pub exchanges: Option<&'a crate::exchange::Totals>,
}

pub trait Sink {
    fn event(&mut self, e: &Event) -> io::Result<()>;
    /// Once a second (diagnose's timeline samples its gauges).
    fn second(&mut self, _s: &Second<'_>) {}
    fn flush(&mut self) -> io::Result<()>;
    /// A periodic verdict (`watch --summary-every`).
    fn summary(&mut self, _ts: &str, _r: &crate::diagnose::report::Report) -> io::Result<()> {
        Ok(())
    }
    /// Continues in a fresh file at the same path (`--output`, on SIGHUP).
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The sink for `format` writing to `w`.
pub fn sink<W: io::Write + 'static>(format: Format, w: W) -> Box<dyn Sink> {
    match format {
        Format::Json => Box::new(json::JsonSink::new(w)),
        Format::Text => Box::new(text::TextSink::new(w)),
    }
}

/// The event sink (stdout or `--output`, counted by `--metrics-addr`), the
/// metrics being served, and the SIGHUP handler that reopens `--output`.
/// Set up before attaching, so a bad path or a taken port fails at once.
pub async fn setup(
    args: &crate::cli::WatchArgs,
    format: Format,
) -> anyhow::Result<(
    Box<dyn Sink>,
    Option<Arc<crate::metrics::Metrics>>,
    Option<Signal>,
)> {
    let (mut out, hup) = match &args.output {
        Some(path) => (
            Box::new(file::FileSink::open(format, path)?) as Box<dyn Sink>,
            Some(signal(SignalKind::hangup()).context("installing the SIGHUP handler")?),
        ),
        None => (sink(format, std::io::stdout()), None),
    };
    let mut metrics = None;
    if let Some(addr) = args.metrics_addr {
        let listener = crate::metrics::http::bind(addr).await?;
        let m = crate::metrics::Metrics::new();
        crate::metrics::http::spawn(listener, Arc::clone(&m));
        out = crate::metrics::wrap(out, Arc::clone(&m));
        metrics = Some(m);
    }
    Ok((out, metrics, hup))
}

/// The next signal of an optional handler; never without one.
pub async fn recv_opt(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Whether an output error means the reader went away (`| head -1`): a
/// normal end, not a failure.
pub fn is_closed_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}
