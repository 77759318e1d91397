//! One readable line per event, for a person at a terminal.

use std::io::{self, BufWriter, Write};

use super::Sink;
use crate::event::{AttributedBy, Event, EventKind};

pub struct TextSink<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> TextSink<W> {
    pub fn new(w: W) -> Self {
        TextSink {
            out: BufWriter::new(w),
        }
    }
}

/// `HH:MM:SS.mmm` of an RFC 3339 timestamp.
fn clock_of(ts: &str) -> &str {
    ts.get(11..23).unwrap_or(ts)
}

fn endpoint(addr: &Option<String>, port: Option<u16>) -> String {
    match (addr, port) {
        (Some(a), Some(p)) if a.contains(':') => format!("[{a}]:{p}"),
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (None, Some(p)) => format!("*:{p}"),
        _ => "?".into(),
    }
}

/// Control characters in a process name would break the line: escape them.
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

pub fn line(e: &Event) -> String {
    let who = match (e.pid, &e.comm) {
        (Some(pid), Some(comm)) => {
            let how = match e.attributed_by {
                AttributedBy::SocketOwner => "",
                AttributedBy::ListenerOwner => " via listener",
                AttributedBy::CurrentTask => " in its own context",
                AttributedBy::None => "",
            };
            format!("pid {pid} ({}){how}", printable(comm))
        }
        (Some(pid), None) => format!("pid {pid}"),
        _ => "no owner".into(),
    };
    let local = endpoint(&e.local_addr, e.local_port);
    let remote = endpoint(&e.remote_addr, e.remote_port);
    let state = e.state.clone().flatten().unwrap_or_else(|| "-".into());
    let body = match e.event {
        EventKind::RstSent => {
            let reason = e.reason.clone().flatten().unwrap_or_else(|| "-".into());
            format!("RST sent     {local} -> {remote} {state} reason={reason} {who}")
        }
        EventKind::RstReceived => format!("RST received {local} <- {remote} {state} {who}"),
        EventKind::AcceptFailed => format!(
            "accept() failed {} x{} on {local} {who} fds {}/{}",
            e.error.as_deref().unwrap_or("?"),
            e.count.unwrap_or(1),
            e.fd_count.flatten().map_or("?".into(), |n| n.to_string()),
            e.fd_limit.flatten().map_or("?".into(), |n| n.to_string()),
        ),
        EventKind::ListenOverflow => format!(
            "listen queue full on {local} ({}/{}) {} dropped {who}",
            e.queued.unwrap_or(0),
            e.backlog.unwrap_or(0),
            e.count.unwrap_or(0)
        ),
        EventKind::StateChange => format!(
            "state {local} {remote} {} -> {} {who}",
            e.old_state.as_deref().unwrap_or("?"),
            e.new_state.as_deref().unwrap_or("?")
        ),
        EventKind::Lost => format!("LOST {} events (ring buffer full)", e.count.unwrap_or(0)),
    };
    format!("{} {body}", clock_of(&e.ts))
}

impl<W: Write> Sink for TextSink<W> {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        writeln!(self.out, "{}", line(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
