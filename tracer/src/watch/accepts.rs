//! `accept_failed` lines carry the process's fd count and limit, read from
//! /proc (on kernels before 6.2 counting `/proc/PID/fd` entry by entry, up
//! to the limit of a process that ran out of them). Those reads run off the
//! event thread: each second's lines wait, in order, in a bounded queue for
//! their batch of reads (`spawn_blocking`), and are printed when it is in;
//! the loop checks after every wake-up (at most `DRAIN_EVERY` later).

use std::collections::VecDeque;

use tokio::task::JoinHandle;

use crate::event::Event;
use crate::snapshot::{self, ProcessInfo};

use super::Loop;

/// Batches (one a second) that may wait for their reads; past it the loop
/// waits for the oldest (the reads are stuck; the events stay in order).
pub const MAX_PENDING: usize = 8;

/// One `accept_failed` line waiting for its process's fds.
pub struct Pending {
    pub event: Event,
    pub tgid: u32,
    /// The limit the kernel recorded; 0 when it did not (then /proc says).
    pub kernel_fd_limit: u64,
}

/// One second's lines and their reads.
pub struct Batch {
    lines: Vec<Pending>,
    reads: JoinHandle<Vec<Option<ProcessInfo>>>,
}

/// The queue of batches, oldest first.
#[derive(Default)]
pub struct AcceptReads {
    batches: VecDeque<Batch>,
}

/// The fd fields of an `accept_failed` line from its process's /proc entry
/// (`None`: gone or unreadable), as the event thread set them before.
pub fn fill_fds(e: &mut Event, kernel_fd_limit: u64, info: Option<ProcessInfo>) {
    e.fd_count = Some(info.as_ref().map(|i| i.fd_count));
    e.fd_limit = Some(if kernel_fd_limit != 0 {
        Some(kernel_fd_limit)
    } else {
        info.and_then(|i| i.fd_limit)
    });
}

impl AcceptReads {
    /// Starts the reads for `lines` (none when empty).
    pub fn start(&mut self, lines: Vec<Pending>) {
        if lines.is_empty() {
            return;
        }
        let tgids: Vec<u32> = lines.iter().map(|p| p.tgid).collect();
        let reads = tokio::task::spawn_blocking(move || {
            tgids.into_iter().map(snapshot::process_info).collect()
        });
        self.batches.push_back(Batch { lines, reads });
    }

    /// The next batch whose reads are in, oldest first; with `wait`, or
    /// when too many wait, waits for it.
    async fn next(&mut self, wait: bool) -> Option<Vec<Event>> {
        let head = self.batches.front()?;
        if !wait && !head.reads.is_finished() && self.batches.len() <= MAX_PENDING {
            return None;
        }
        let b = self.batches.pop_front()?;
        let infos = match b.reads.await {
            Ok(infos) => infos,
            Err(e) => {
                log::warn!("reading the fds of failed accepts: {e}");
                Vec::new()
            }
        };
        let mut infos = infos.into_iter();
        Some(
            b.lines
                .into_iter()
                .map(|mut p| {
                    fill_fds(&mut p.event, p.kernel_fd_limit, infos.next().flatten());
                    p.event
                })
                .collect(),
        )
    }
}

impl Loop<'_> {
    /// Prints the `accept_failed` lines whose reads are in; with `wait`,
    /// all of them (the end of the session).
    pub(super) async fn print_accepts(&mut self, wait: bool) -> std::io::Result<()> {
        let mut any = false;
        while let Some(lines) = self.accept_reads.next(wait).await {
            // Filtered when queued (`flush_periodic`).
            for e in lines {
                self.emit(&e)?;
            }
            any = true;
        }
        if any {
            self.sink.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    #[test]
    fn the_kernel_limit_wins_and_a_gone_process_says_null() {
        let info = ProcessInfo {
            pid: 7,
            comm: b"api".to_vec(),
            cgroup: None,
            fd_count: 1024,
            fd_limit: Some(1024),
        };
        let mut e = Event::new(EventKind::AcceptFailed, Default::default());
        fill_fds(&mut e, 0, Some(info.clone()));
        assert_eq!(
            (e.fd_count, e.fd_limit),
            (Some(Some(1024)), Some(Some(1024)))
        );
        fill_fds(&mut e, 4096, Some(info));
        assert_eq!(e.fd_limit, Some(Some(4096)));
        fill_fds(&mut e, 0, None);
        assert_eq!((e.fd_count, e.fd_limit), (Some(None), Some(None)));
    }

    fn line(tgid: u32, port: u16) -> Pending {
        let mut event = Event::new(EventKind::AcceptFailed, Default::default());
        event.local_port = Some(port);
        Pending {
            event,
            tgid,
            kernel_fd_limit: 0,
        }
    }

    #[tokio::test]
    async fn lines_come_out_in_order_with_their_fds() {
        let me = std::process::id();
        let mut q = AcceptReads::default();
        q.start(Vec::new());
        assert!(
            q.next(true).await.is_none(),
            "an empty second queues nothing"
        );
        q.start(vec![line(me, 1), line(u32::MAX, 2)]);
        q.start(vec![line(me, 3)]);
        let mut got = Vec::new();
        while let Some(b) = q.next(true).await {
            got.extend(b);
        }
        let ports: Vec<_> = got.iter().map(|e| e.local_port).collect();
        assert_eq!(ports, vec![Some(1), Some(2), Some(3)]);
        assert!(got[0].fd_count.flatten().is_some_and(|n| n > 0));
        assert_eq!(got[1].fd_count, Some(None), "a gone process");
    }
}
