//! What a process's connections are doing, from the end snapshot: for an
//! accepted connection, whether its request was read and answered (sock_diag
//! receive queue and `tcp_info` counters, so connections older than tracer
//! count too); for an outbound one, which endpoint it talks to.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::snapshot::{Snapshot, TCP_CLOSE_WAIT, TCP_ESTABLISHED, TcpInfo};

/// Where an accepted connection's request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Handling {
    /// Request bytes still in the receive queue: never read. In CLOSE_WAIT
    /// also a connection whose client gave up before sending anything.
    Unread,
    /// Request read, no byte of response written since.
    Unanswered,
    /// Response bytes written after the last request bytes arrived.
    Answered,
    /// ESTABLISHED, nothing received yet and nothing pending.
    Idle,
}

/// Classifies a connection from its state, receive queue (`rqueue`,
/// `rcv_nxt - copied_seq`: in CLOSE_WAIT it includes the peer's FIN until
/// the process reads it) and `tcp_info`. `None` without `tcp_info`.
pub fn classify(state: u8, rqueue: u32, tcp: Option<&TcpInfo>) -> Option<Handling> {
    let tcp = tcp?;
    let fin = state == TCP_CLOSE_WAIT;
    // The FIN is the last byte of the sequence space: while it is queued,
    // one of the queued "bytes" is the FIN, not data.
    let unread_data = if fin {
        rqueue.saturating_sub(1)
    } else {
        rqueue
    };
    let received_data = tcp.bytes_received.saturating_sub(u64::from(fin));
    Some(if unread_data > 0 {
        Handling::Unread
    } else if received_data == 0 {
        if fin {
            Handling::Unread
        } else {
            Handling::Idle
        }
    } else if tcp.bytes_sent == 0 || tcp.last_data_sent_ms > tcp.last_data_recv_ms {
        // Nothing sent, or the last send is older than the last request bytes.
        Handling::Unanswered
    } else {
        Handling::Answered
    })
}

/// Counts of a set of accepted connections by [`Handling`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Classes {
    pub unread: u64,
    pub unanswered: u64,
    pub answered: u64,
    pub idle: u64,
    /// Connections without `tcp_info` (not classified).
    pub unknown: u64,
}

impl Classes {
    pub fn add(&mut self, h: Option<Handling>) {
        match h {
            Some(Handling::Unread) => self.unread += 1,
            Some(Handling::Unanswered) => self.unanswered += 1,
            Some(Handling::Answered) => self.answered += 1,
            Some(Handling::Idle) => self.idle += 1,
            None => self.unknown += 1,
        }
    }

    /// Requests the process has not answered (read or not).
    pub fn waiting(&self) -> u64 {
        self.unread + self.unanswered
    }
}

/// One connection of a process at the end of the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnView {
    pub pid: u32,
    pub netns: u32,
    pub state: u8,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    /// Accepted from one of this host's listeners (its local port is a
    /// listener's in its namespace), else connected by the process.
    pub inbound: bool,
    pub handling: Option<Handling>,
}

/// Every owned ESTABLISHED or CLOSE_WAIT connection of a snapshot.
pub fn conn_views(snap: &Snapshot) -> Vec<ConnView> {
    let listening: HashSet<(u32, u16)> = snap
        .listeners()
        .map(|l| (l.netns, l.local.port()))
        .collect();
    snap.sockets
        .iter()
        .filter(|s| s.state == TCP_ESTABLISHED || s.state == TCP_CLOSE_WAIT)
        .filter_map(|s| {
            let pid = snap.owner_of(s)?;
            let key = s.conn_key();
            let inbound = listening.contains(&(s.netns, s.local.port()));
            Some(ConnView {
                pid,
                netns: s.netns,
                state: s.state,
                local: key.local,
                remote: key.remote,
                inbound,
                handling: classify(s.state, s.rqueue, s.tcp.as_ref()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(received: u64, sent: u64, last_sent_ms: u32, last_recv_ms: u32) -> TcpInfo {
        TcpInfo {
            bytes_received: received,
            bytes_sent: sent,
            last_data_sent_ms: last_sent_ms,
            last_data_recv_ms: last_recv_ms,
        }
    }

    #[test]
    fn close_wait_connections_by_what_happened_to_their_request() {
        let cw = TCP_CLOSE_WAIT;
        // 40 request bytes + FIN, all queued: never read.
        assert_eq!(
            classify(cw, 41, Some(&info(41, 0, 900, 900))),
            Some(Handling::Unread)
        );
        // Request read, FIN still queued, nothing sent: stuck handler.
        assert_eq!(
            classify(cw, 1, Some(&info(41, 0, 900, 800))),
            Some(Handling::Unanswered)
        );
        // Read through the FIN, never answered.
        assert_eq!(
            classify(cw, 0, Some(&info(41, 0, 900, 800))),
            Some(Handling::Unanswered)
        );
        // Answered after the request came.
        assert_eq!(
            classify(cw, 1, Some(&info(41, 120, 300, 800))),
            Some(Handling::Answered)
        );
        // Keep-alive: answered once, the next request read and not answered.
        assert_eq!(
            classify(cw, 1, Some(&info(81, 120, 900, 800))),
            Some(Handling::Unanswered)
        );
        // Only the FIN ever came.
        assert_eq!(
            classify(cw, 1, Some(&info(1, 0, 900, 900))),
            Some(Handling::Unread)
        );
        assert_eq!(classify(cw, 1, None), None);
    }

    #[test]
    fn established_connections() {
        let est = TCP_ESTABLISHED;
        assert_eq!(
            classify(est, 0, Some(&info(0, 0, 5, 5))),
            Some(Handling::Idle)
        );
        assert_eq!(
            classify(est, 40, Some(&info(40, 0, 5, 5))),
            Some(Handling::Unread)
        );
        assert_eq!(
            classify(est, 0, Some(&info(40, 0, 5, 3))),
            Some(Handling::Unanswered)
        );
        // Same tick: the response counts as after the request.
        assert_eq!(
            classify(est, 0, Some(&info(40, 9, 3, 3))),
            Some(Handling::Answered)
        );
    }

    #[test]
    fn classes_add_up() {
        let mut c = Classes::default();
        for h in [
            Some(Handling::Unread),
            Some(Handling::Unanswered),
            Some(Handling::Unanswered),
            Some(Handling::Answered),
            None,
        ] {
            c.add(h);
        }
        assert_eq!(
            (c.unread, c.unanswered, c.answered, c.unknown),
            (1, 2, 1, 1)
        );
        assert_eq!(c.waiting(), 3);
    }
}
