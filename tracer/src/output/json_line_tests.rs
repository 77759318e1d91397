//! `write_event` against `serde_json::to_string` over fixture events: every
//! optional field present and absent, hostile process names, every byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::write_event;
use crate::event::{AttributedBy, Endpoint, Event, EventKind, Owner};

fn ours(e: &Event) -> String {
    let mut out = Vec::new();
    write_event(&mut out, e);
    String::from_utf8(out).expect("write_event writes UTF-8")
}

fn serde(e: &Event) -> String {
    serde_json::to_string(e).expect("test data")
}

#[track_caller]
fn same(e: &Event) {
    assert_eq!(ours(e), serde(e), "{e:?}");
}

/// Strings that need escaping, or look as if they might.
const HOSTILE: &[&str] = &[
    "",
    "nginx",
    "say \"hi\"",
    "back\\slash",
    "\\\"",
    "\"",
    "\\",
    "tab\there",
    "line\nbreak\r\n",
    "\u{8}\u{c}\u{b}\u{0}\u{1f}\u{1b}[31m",
    "del\u{7f}",
    "caf\u{e9} \u{65e5}\u{672c} \u{1f980}",
    "a\u{fffd}b",
    "\u{2028}\u{2029}",
    "/",
    "</script>",
    "{\"v\":2}",
    "0123456789abcdef",
];

const KINDS: [EventKind; 6] = [
    EventKind::RstSent,
    EventKind::RstReceived,
    EventKind::AcceptFailed,
    EventKind::ListenOverflow,
    EventKind::StateChange,
    EventKind::Lost,
];

const BYS: [AttributedBy; 4] = [
    AttributedBy::SocketOwner,
    AttributedBy::ListenerOwner,
    AttributedBy::CurrentTask,
    AttributedBy::None,
];

/// Every optional field set, with extreme numbers.
fn full(s: &str) -> Event {
    let mut e = Event::new(EventKind::AcceptFailed, s.into());
    e.pid = Some(u32::MAX);
    e.comm = Some(s.into());
    e.thread = Some(s.into());
    e.attributed_by = AttributedBy::ListenerOwner;
    e.cgroup = Some(s.into());
    e.container_id = Some(s.into());
    e.systemd_unit = Some(s.into());
    e.pod_uid = Some(s.into());
    e.family = Some("inet6");
    e.local_addr = Some(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)));
    e.local_port = Some(u16::MAX);
    e.remote_addr = Some(IpAddr::V4(Ipv4Addr::BROADCAST));
    e.remote_port = Some(0);
    e.state = Some(Some(s.into()));
    e.reason = Some(Some(s.into()));
    e.reason_inferred = Some(false);
    e.old_state = Some(s.into());
    e.new_state = Some(s.into());
    e.errno = Some(i32::MIN);
    e.error = Some(s.into());
    e.fd_count = Some(Some(u32::MAX));
    e.fd_limit = Some(Some(u64::MAX));
    e.backlog = Some(0);
    e.queued = Some(u32::MAX);
    e.count = Some(u64::MAX);
    e.remote_sample = Some(vec![
        Endpoint {
            addr: s.into(),
            port: 1,
        },
        Endpoint {
            addr: "::1".into(),
            port: u16::MAX,
        },
    ]);
    e.local_sample = Some(vec![Endpoint {
        addr: s.into(),
        port: 0,
    }]);
    e.netns = Some(u32::MAX);
    e.socket_inode = Some(u64::MAX);
    e.peer_is_service = true;
    e
}

#[test]
fn the_common_fields_alone() {
    for kind in KINDS {
        for by in BYS {
            let mut e = Event::new(kind, "2026-11-25T20:43:35.689300358Z".into());
            e.attributed_by = by;
            same(&e);
        }
    }
}

#[test]
fn every_field_present_with_every_hostile_string() {
    for s in HOSTILE {
        same(&full(s));
    }
}

/// Each optional field absent in turn (and the nested options `null`).
#[test]
fn each_field_absent_in_turn() {
    type Clear = fn(&mut Event);
    let clears: &[Clear] = &[
        |e| e.pid = None,
        |e| e.comm = None,
        |e| e.thread = None,
        |e| e.cgroup = None,
        |e| e.container_id = None,
        |e| e.systemd_unit = None,
        |e| e.pod_uid = None,
        |e| e.family = None,
        |e| e.local_addr = None,
        |e| e.local_port = None,
        |e| e.remote_addr = None,
        |e| e.remote_port = None,
        |e| e.state = None,
        |e| e.state = Some(None),
        |e| e.reason = None,
        |e| e.reason = Some(None),
        |e| e.reason_inferred = None,
        |e| e.reason_inferred = Some(true),
        |e| e.old_state = None,
        |e| e.new_state = None,
        |e| e.errno = None,
        |e| e.errno = Some(24),
        |e| e.error = None,
        |e| e.fd_count = None,
        |e| e.fd_count = Some(None),
        |e| e.fd_limit = None,
        |e| e.fd_limit = Some(None),
        |e| e.backlog = None,
        |e| e.queued = None,
        |e| e.count = None,
        |e| e.remote_sample = None,
        |e| e.remote_sample = Some(Vec::new()),
        |e| e.local_sample = None,
        |e| e.netns = None,
        |e| e.socket_inode = None,
    ];
    for clear in clears {
        let mut e = full("x");
        clear(&mut e);
        same(&e);
    }
}

/// Every byte value (as a one-character string, and as raw process-name
/// bytes through `set_owner`'s lossy UTF-8), alone and inside text.
#[test]
fn every_byte() {
    for b in 0..=255u8 {
        let mut e = Event::new(EventKind::RstSent, "t".into());
        let c = char::from(b).to_string();
        e.comm = Some(c.as_str().into());
        e.cgroup = Some(format!("/a{c}b{c}").into());
        same(&e);
        let owner = Owner::new(
            1,
            vec![b'a', b, b'z', b, 0xff, b],
            vec![b, b'"'],
            Some(format!("{c}\\{c}")),
        );
        e.set_owner(Some(&owner), AttributedBy::CurrentTask);
        same(&e);
    }
}

/// The eight-at-a-time check against the byte-at-a-time one: every byte
/// value at every position of strings of 0 to 40 bytes (words, tails), in
/// plain and non-ASCII surroundings.
#[test]
fn the_word_check_finds_every_escape_anywhere() {
    for fill in [b'a', b'~', 0x7f, 0x80, 0xff] {
        for len in 0..=40 {
            let plain = vec![fill; len];
            assert!(super::verbatim(&plain), "{fill:#x} x {len}");
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = plain.clone();
                    bytes[at] = b;
                    assert_eq!(
                        super::verbatim(&bytes),
                        !super::needs_escape(b),
                        "{b:#x} at {at} of {len} (fill {fill:#x})"
                    );
                }
            }
        }
    }
}

/// Addresses as serde (their `Display`) writes them: every octet value in
/// every position of IPv4, and IPv6 forms (compressed zeros, IPv4-mapped).
#[test]
fn addresses_as_serde_writes_them() {
    let mut e = Event::new(EventKind::RstSent, "t".into());
    for octet in 0..=255u8 {
        for ip in [
            Ipv4Addr::new(octet, 0, 0, 0),
            Ipv4Addr::new(1, octet, 20, 200),
            Ipv4Addr::new(255, 99, octet, 100),
            Ipv4Addr::new(10, 9, 100, octet),
        ] {
            e.local_addr = Some(IpAddr::V4(ip));
            e.remote_addr = Some(IpAddr::V4(ip));
            same(&e);
        }
    }
    for ip in [
        Ipv6Addr::UNSPECIFIED,
        Ipv6Addr::LOCALHOST,
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0x1, 0, 0, 0x2),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1),
        Ipv4Addr::new(192, 168, 1, 1).to_ipv6_mapped(),
        Ipv6Addr::new(
            0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
        ),
    ] {
        e.local_addr = Some(IpAddr::V6(ip));
        same(&e);
    }
}

/// A small deterministic generator (xorshift), so the mixed cases are the
/// same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn maybe<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        self.next().is_multiple_of(2).then(|| f(self))
    }
    /// Raw bytes as a process name may hold them: hostile ASCII, invalid
    /// UTF-8, multi-byte characters, NULs.
    fn bytes(&mut self) -> Vec<u8> {
        const PARTS: &[&[u8]] = &[
            b"a",
            b"Z9",
            b"\"",
            b"\\",
            b"\n",
            b"\x00",
            b"\x01",
            b"\x1f",
            b"\x7f",
            b"\xff",
            b"\xc3",
            b"\xc3\xa9",
            b"\xe2\x82",
            b"\xf0\x9f\xa6\x80",
            b" ",
            b"/",
        ];
        let n = self.next() % 8;
        (0..n).flat_map(|_| self.pick(PARTS).to_vec()).collect()
    }
    fn text(&mut self) -> String {
        let b = self.bytes();
        String::from_utf8_lossy(&b).into_owned()
    }
    fn shared(&mut self) -> std::sync::Arc<str> {
        self.text().into()
    }
    /// An address of either family, with the zeros and small numbers that
    /// change how it is written.
    fn ip(&mut self) -> IpAddr {
        let part = |r: &mut Rng| {
            let any = r.next() as u16;
            r.pick(&[0u16, 0, 1, 9, 10, 99, 100, 255, 0xffff, any])
        };
        if self.next().is_multiple_of(2) {
            let octets = [0; 4].map(|_| part(self) as u8);
            IpAddr::V4(Ipv4Addr::from(octets))
        } else {
            IpAddr::V6(Ipv6Addr::from([0; 8].map(|_| part(self))))
        }
    }
}

#[test]
fn mixed_events_match_serde_json() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..5_000 {
        let mut e = Event::new(r.pick(&KINDS), r.text().into());
        let owner =
            r.maybe(|r| Owner::new(r.next() as u32, r.bytes(), r.bytes(), r.maybe(Rng::text)));
        e.set_owner(owner.as_ref(), r.pick(&BYS));
        e.container_id = r.maybe(Rng::shared);
        e.systemd_unit = r.maybe(Rng::shared);
        e.pod_uid = r.maybe(Rng::shared);
        e.family = r.maybe(|r| r.pick(&["inet", "inet6"]));
        e.local_addr = r.maybe(Rng::ip);
        e.local_port = r.maybe(|r| r.next() as u16);
        e.remote_addr = r.maybe(Rng::ip);
        e.remote_port = r.maybe(|r| r.next() as u16);
        e.state = r.maybe(|r| r.maybe(Rng::shared));
        e.reason = r.maybe(|r| r.maybe(Rng::shared));
        e.reason_inferred = r.maybe(|r| r.next().is_multiple_of(2));
        e.old_state = r.maybe(Rng::shared);
        e.new_state = r.maybe(Rng::shared);
        e.errno = r.maybe(|r| r.next() as i32);
        e.error = r.maybe(Rng::text);
        e.fd_count = r.maybe(|r| r.maybe(|r| r.next() as u32));
        e.fd_limit = r.maybe(|r| r.maybe(Rng::next));
        e.backlog = r.maybe(|r| r.next() as u32);
        e.queued = r.maybe(|r| r.next() as u32);
        e.count = r.maybe(Rng::next);
        let sample = |r: &mut Rng| {
            (0..r.next() % 5)
                .map(|_| Endpoint {
                    addr: r.text(),
                    port: r.next() as u16,
                })
                .collect::<Vec<_>>()
        };
        e.remote_sample = r.maybe(sample);
        e.local_sample = r.maybe(sample);
        e.netns = r.maybe(|r| r.next() as u32);
        e.socket_inode = r.maybe(Rng::next);
        e.peer_is_service = r.next().is_multiple_of(2);
        same(&e);
    }
}

/// The sink writes the same lines as serde_json plus a newline each.
#[test]
fn the_sink_writes_serde_json_lines() {
    use crate::output::Sink as _;
    let events: Vec<Event> = HOSTILE.iter().map(|s| full(s)).collect();
    let mut buf = Vec::new();
    {
        let mut sink = crate::output::json::JsonSink::new(&mut buf);
        for e in &events {
            sink.event(e).expect("in memory");
        }
        sink.flush().expect("in memory");
    }
    let want: String = events.iter().map(|e| serde(e) + "\n").collect();
    assert_eq!(String::from_utf8(buf).expect("UTF-8"), want);
}
