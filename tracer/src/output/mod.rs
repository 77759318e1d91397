//! Outputs: one event per line, JSON for machines, text for people. They know
//! nothing of BPF; they print `event::Event`s.

pub mod closed;
pub mod file;
pub mod json;
mod json_line;
pub mod text;

use std::io;
use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::report::{Report, narrative};
pub use crate::sink::{Second, Sink};

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

/// The sink for `format` writing to `w`.
pub fn sink<W: io::Write + 'static>(format: Format, w: W) -> Box<dyn Sink> {
    match format {
        Format::Json => Box::new(json::JsonSink::new(w)),
        Format::Text => Box::new(text::TextSink::new(w)),
    }
}

/// Where the events go: `--output` and `--metrics-addr` of `watch`
/// (built from the command line in `main.rs`).
#[derive(Clone, Debug, Default)]
pub struct SinkConfig {
    /// Append to this file (reopened on SIGHUP) instead of stdout.
    pub output: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics here.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// The event sink (stdout or `--output`, counted by `--metrics-addr`), the
/// metrics being served, and the SIGHUP handler that reopens `--output`.
/// Set up before attaching, so a bad path or a taken port fails at once.
pub async fn setup(
    cfg: SinkConfig,
    format: Format,
) -> anyhow::Result<(
    Box<dyn Sink>,
    Option<Arc<crate::metrics::Metrics>>,
    Option<Signal>,
)> {
    let (mut out, hup) = match &cfg.output {
        Some(path) => (
            Box::new(file::FileSink::open(format, path)?) as Box<dyn Sink>,
            Some(signal(SignalKind::hangup()).context("installing the SIGHUP handler")?),
        ),
        None => (sink(format, std::io::stdout()), None),
    };
    let mut metrics = None;
    if let Some(addr) = cfg.metrics_addr {
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
/// Writes `pending[..end]` to `w` as `BufWriter` does: retried when
/// interrupted or short, and what was written is drained from `pending`
/// even when an error stops it, so nothing is ever written twice and what
/// was not stays.
pub(crate) fn write_out_prefix(
    w: &mut impl io::Write,
    pending: &mut Vec<u8>,
    end: usize,
) -> io::Result<()> {
    let end = end.min(pending.len());
    let mut done = 0;
    let res = loop {
        if done == end {
            break Ok(());
        }
        match w.write(&pending[done..end]) {
            Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    pending.drain(..done);
    res
}

pub fn is_closed_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// The verdict on stdout: one JSON object, or the story in sentences. A
/// reader that went away is not an error.
pub fn print_report(r: &Report, format: Format) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let res = match format {
        Format::Json => serde_json::to_writer(&mut out, r)
            .map_err(std::io::Error::from)
            .and_then(|_| out.write_all(b"\n")),
        Format::Text => out.write_all(narrative(r).as_bytes()),
    };
    match res.and_then(|_| out.flush()) {
        Err(e) if is_closed_pipe(&e) => Ok(()),
        other => Ok(other?),
    }
}
