//! Waiting for a tracer child to say on stderr that it is ready (or that
//! its hooks are attached): the line predicate and the bounded wait. Included
//! by `common`; `ecosystem_common` uses it from there (see time_scale.rs).

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

/// Whether a stderr line says the start-up snapshot is in (`watch`:
/// `[INFO  tracer::watch] ready: N existing sockets known ...`) or the
/// window has begun (`diagnose`: `attached; observing for ...`).
pub fn is_ready_line(line: &str) -> bool {
    line.contains("] ready: ") || line.contains("attached; observing")
}

/// Reads `lines` (a child's stderr, line by line) until one satisfies
/// `is_ready`. `Err(Disconnected)`: the sender hung up first (the child
/// closed its stderr: it ended); `Err(Timeout)`: `deadline` passed.
pub fn wait_for_line(
    lines: &Receiver<String>,
    deadline: Instant,
    is_ready: impl Fn(&str) -> bool,
) -> Result<(), RecvTimeoutError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if is_ready(&line) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
}
