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

fn endpoint(addr: Option<String>, port: Option<u16>) -> String {
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
                // A failed accept is always the caller's: nothing to add.
                _ if e.event == EventKind::AcceptFailed => "",
                AttributedBy::SocketOwner => "",
                AttributedBy::ListenerOwner => " via listener",
                AttributedBy::CurrentTask => " in its own context",
                AttributedBy::None => "",
            };
            let thread = e
                .thread
                .as_deref()
                .map(|t| format!(", thread {}", printable(t)))
                .unwrap_or_default();
            format!("pid {pid} ({}{thread}){how}", printable(comm))
        }
        (Some(pid), None) => format!("pid {pid}"),
        _ => "no owner".into(),
    };
    let local = endpoint(e.local_addr.map(|a| a.to_string()), e.local_port);
    let remote = endpoint(e.remote_addr.map(|a| a.to_string()), e.remote_port);
    let state = e.state.clone().flatten().unwrap_or_else(|| "-".into());
    let storm = storm_suffix(e);
    let body = match e.event {
        EventKind::RstSent => {
            let reason = e.reason.clone().flatten().unwrap_or_else(|| "-".into());
            format!("RST sent     {local} -> {remote} {state} reason={reason} {who}{storm}")
        }
        EventKind::RstReceived => {
            format!("RST received {local} <- {remote} {state} {who}{storm}")
        }
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

/// `, x250 (storm, remotes 10.0.0.1:40000 ...)` on a line that stands for
/// resets counted in the kernel (`locals ...` for a storm of connections
/// this host made to one remote port); empty on a line of one reset.
fn storm_suffix(e: &Event) -> String {
    let Some(n) = e.count else {
        return String::new();
    };
    let none = Vec::new();
    let (what, sample) = match (&e.local_sample, &e.remote_sample) {
        (Some(locals), _) => ("locals", locals),
        (None, Some(remotes)) => ("remotes", remotes),
        (None, None) => ("remotes", &none),
    };
    let shown: Vec<String> = sample
        .iter()
        .map(|r| endpoint(Some(r.addr.clone()), Some(r.port)))
        .collect();
    format!(", x{n} (storm, {what} {})", shown.join(" "))
}

impl<W: Write> Sink for TextSink<W> {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        writeln!(self.out, "{}", line(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn summary(&mut self, ts: &str, r: &crate::report::Report) -> io::Result<()> {
        writeln!(self.out, "{} SUMMARY", clock_of(ts))?;
        self.out.write_all(crate::report::narrative(r).as_bytes())?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Owner;

    const TS: &str = "2024-05-01T12:34:56.789012345Z";

    fn rst_sent() -> Event {
        let mut e = Event::new(EventKind::RstSent, TS.into());
        e.set_owner(
            Some(&Owner::new(42, b"nginx\0\0\0".to_vec(), Vec::new(), None)),
            AttributedBy::SocketOwner,
        );
        e.family = Some("inet");
        e.local_addr = Some("10.0.0.1".parse().expect("test data"));
        e.local_port = Some(8080);
        e.remote_addr = Some("10.0.0.2".parse().expect("test data"));
        e.remote_port = Some(51234);
        e.state = Some(Some("ESTABLISHED".into()));
        e.reason = Some(Some("TCP_ABORT_ON_CLOSE".into()));
        e
    }

    #[test]
    fn rst_sent_line() {
        assert_eq!(
            line(&rst_sent()),
            "12:34:56.789 RST sent     10.0.0.1:8080 -> 10.0.0.2:51234 ESTABLISHED \
             reason=TCP_ABORT_ON_CLOSE pid 42 (nginx)"
        );
    }

    #[test]
    fn rst_sent_line_variants() {
        let mut e = rst_sent();
        e.family = Some("inet6");
        e.local_addr = Some("fe80::1".parse().expect("test data"));
        e.remote_addr = Some("2001:db8::2".parse().expect("test data"));
        e.state = Some(None);
        e.reason = Some(None);
        e.attributed_by = AttributedBy::CurrentTask;
        assert_eq!(
            line(&e),
            "12:34:56.789 RST sent     [fe80::1]:8080 -> [2001:db8::2]:51234 - reason=- \
             pid 42 (nginx) in its own context"
        );
        e.set_owner(None, AttributedBy::ListenerOwner);
        e.remote_addr = None;
        e.remote_port = None;
        assert_eq!(
            line(&e),
            "12:34:56.789 RST sent     [fe80::1]:8080 -> ? - reason=- no owner"
        );
    }

    #[test]
    fn storm_line_of_connections_made_lists_local_ends() {
        let mut e = rst_sent();
        e.count = Some(3000);
        e.local_sample = Some(vec![crate::event::Endpoint {
            addr: "10.0.0.1".into(),
            port: 40001,
        }]);
        assert!(
            line(&e).ends_with(", x3000 (storm, locals 10.0.0.1:40001)"),
            "{}",
            line(&e)
        );
    }

    #[test]
    fn storm_line_says_how_many_and_whom() {
        let mut e = rst_sent();
        e.count = Some(250);
        e.remote_sample = Some(vec![
            crate::event::Endpoint {
                addr: "10.0.0.2".into(),
                port: 51234,
            },
            crate::event::Endpoint {
                addr: "2001:db8::2".into(),
                port: 443,
            },
        ]);
        assert!(
            line(&e).ends_with(", x250 (storm, remotes 10.0.0.2:51234 [2001:db8::2]:443)"),
            "{}",
            line(&e)
        );
    }

    #[test]
    fn other_kinds() {
        let mut e = rst_sent();
        e.event = EventKind::RstReceived;
        e.reason = None;
        e.attributed_by = AttributedBy::ListenerOwner;
        assert_eq!(
            line(&e),
            "12:34:56.789 RST received 10.0.0.1:8080 <- 10.0.0.2:51234 ESTABLISHED \
             pid 42 (nginx) via listener"
        );
        let mut a = Event::new(EventKind::AcceptFailed, TS.into());
        a.set_owner(
            Some(&Owner::new(9, b"java".to_vec(), Vec::new(), None)),
            AttributedBy::SocketOwner,
        );
        a.local_port = Some(8080);
        a.error = Some("EMFILE".into());
        a.count = Some(3);
        a.fd_count = Some(None);
        a.fd_limit = Some(Some(1024));
        assert_eq!(
            line(&a),
            "12:34:56.789 accept() failed EMFILE x3 on *:8080 pid 9 (java) fds ?/1024"
        );
        let mut l = Event::new(EventKind::Lost, TS.into());
        l.count = Some(5);
        assert_eq!(line(&l), "12:34:56.789 LOST 5 events (ring buffer full)");
    }

    #[test]
    fn comm_with_control_characters_stays_on_one_line() {
        let mut e = rst_sent();
        e.set_owner(
            Some(&Owner::new(
                42,
                b"evil\nname\t\x1b[2J\r".to_vec(),
                Vec::new(),
                None,
            )),
            AttributedBy::SocketOwner,
        );
        let l = line(&e);
        assert_eq!(
            l,
            "12:34:56.789 RST sent     10.0.0.1:8080 -> 10.0.0.2:51234 ESTABLISHED \
             reason=TCP_ABORT_ON_CLOSE pid 42 (evil\\nname\\t\\u{1b}[2J\\r)"
        );
        assert!(!l.contains(['\n', '\r', '\t', '\x1b']));

        // Through the sink: exactly one line written.
        let mut out = Vec::new();
        {
            let mut sink = TextSink::new(&mut out);
            sink.event(&e).expect("test data");
            sink.flush().expect("test data");
        }
        let text = String::from_utf8(out).expect("test data");
        assert_eq!(text, format!("{l}\n"));
        assert_eq!(text.lines().count(), 1);
    }
}
