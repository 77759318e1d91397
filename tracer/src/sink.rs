//! The interface every consumer of the event path implements: the outputs
//! (json, text, file), metrics and diagnose's window. Below all of them, so
//! none imports another to be a sink.

use std::collections::HashMap;
use std::io;

use crate::event::Event;
use crate::report::Report;

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
    /// Whether [`Sink::second`] does anything (its inputs are not
    /// gathered otherwise: a big host's CLOSE_WAIT list each second).
    fn wants_seconds(&self) -> bool {
        false
    }
    fn flush(&mut self) -> io::Result<()>;
    /// A periodic verdict (`watch --summary-every`).
    fn summary(&mut self, _ts: &str, _r: &Report) -> io::Result<()> {
        Ok(())
    }
    /// Continues in a fresh file at the same path (`--output`, on SIGHUP).
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}
