//! Outputs: one event per line, JSON for machines, text for people. They know
//! nothing of BPF; they print `event::Event`s.

pub mod closed;
pub mod json;
pub mod text;

use std::io;

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

pub trait Sink {
    fn event(&mut self, e: &Event) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    /// A periodic verdict (`watch --summary-every`).
    fn summary(&mut self, _ts: &str, _r: &crate::diagnose::report::Report) -> io::Result<()> {
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

/// Whether an output error means the reader went away (`| head -1`): a
/// normal end, not a failure.
pub fn is_closed_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}
