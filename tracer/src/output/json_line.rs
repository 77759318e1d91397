//! One [`Event`] as JSON, written by hand: byte for byte what
//! `serde_json::to_writer` writes for it (the same field order and skip
//! rules as its `Serialize` derive, serde_json's escaping), without the
//! serializer's per-field and per-byte machinery, which was most of the
//! time of a line during an RST storm (perf, `watch --per-rst`).
//! json_line_tests.rs compares the two over many events.

use std::net::IpAddr;

use crate::event::{AttributedBy, Endpoint, Event, EventKind};

/// Appends `e` as one JSON object (no newline) to `out`.
pub fn write_event(out: &mut Vec<u8>, e: &Event) {
    out.extend_from_slice(b"{\"v\":");
    int(out, e.v);
    key(out, b",\"ts\":");
    string_bytes(out, e.ts.as_bytes());
    key(out, b",\"event\":");
    name(out, kind_name(e.event));
    key(out, b",\"pid\":");
    opt_int(out, e.pid);
    key(out, b",\"comm\":");
    opt_string(out, e.comm.as_deref());
    if let Some(t) = &e.thread {
        key(out, b",\"thread\":");
        string(out, t);
    }
    key(out, b",\"attributed_by\":");
    name(out, attributed_by_name(e.attributed_by));
    key(out, b",\"cgroup\":");
    opt_string(out, e.cgroup.as_deref());
    field_str(out, b",\"container_id\":", e.container_id.as_deref());
    field_str(out, b",\"systemd_unit\":", e.systemd_unit.as_deref());
    field_str(out, b",\"pod_uid\":", e.pod_uid.as_deref());
    field_str(out, b",\"family\":", e.family);
    if let Some(a) = e.local_addr {
        key(out, b",\"local_addr\":");
        ip(out, a);
    }
    field_int(out, b",\"local_port\":", e.local_port);
    if let Some(a) = e.remote_addr {
        key(out, b",\"remote_addr\":");
        ip(out, a);
    }
    field_int(out, b",\"remote_port\":", e.remote_port);
    if let Some(s) = &e.state {
        key(out, b",\"state\":");
        opt_string(out, s.as_deref());
    }
    if let Some(r) = &e.reason {
        key(out, b",\"reason\":");
        opt_string(out, r.as_deref());
    }
    if let Some(b) = e.reason_inferred {
        key(out, b",\"reason_inferred\":");
        out.extend_from_slice(if b { b"true" } else { b"false" });
    }
    field_str(out, b",\"old_state\":", e.old_state.as_deref());
    field_str(out, b",\"new_state\":", e.new_state.as_deref());
    if let Some(n) = e.errno {
        key(out, b",\"errno\":");
        int(out, n);
    }
    field_str(out, b",\"error\":", e.error.as_deref());
    if let Some(n) = e.fd_count {
        key(out, b",\"fd_count\":");
        opt_int(out, n);
    }
    if let Some(n) = e.fd_limit {
        key(out, b",\"fd_limit\":");
        opt_int(out, n);
    }
    field_int(out, b",\"backlog\":", e.backlog);
    field_int(out, b",\"queued\":", e.queued);
    field_int(out, b",\"count\":", e.count);
    if let Some(s) = &e.remote_sample {
        key(out, b",\"remote_sample\":");
        endpoints(out, s);
    }
    if let Some(s) = &e.local_sample {
        key(out, b",\"local_sample\":");
        endpoints(out, s);
    }
    field_int(out, b",\"netns\":", e.netns);
    field_int(out, b",\"socket_inode\":", e.socket_inode);
    out.push(b'}');
}

/// The names serde's `rename_all = "snake_case"` gives the variants
/// (event_tests.rs pins them).
fn kind_name(k: EventKind) -> &'static str {
    match k {
        EventKind::RstSent => "rst_sent",
        EventKind::RstReceived => "rst_received",
        EventKind::AcceptFailed => "accept_failed",
        EventKind::ListenOverflow => "listen_overflow",
        EventKind::StateChange => "state_change",
        EventKind::Lost => "lost",
    }
}

fn attributed_by_name(a: AttributedBy) -> &'static str {
    match a {
        AttributedBy::SocketOwner => "socket_owner",
        AttributedBy::ListenerOwner => "listener_owner",
        AttributedBy::CurrentTask => "current_task",
        AttributedBy::None => "none",
    }
}

/// A key, written whole: `,"name":` (every field but the first, `v`,
/// follows another). Always inlined, so that each is a copy of a constant
/// length, not a call.
#[inline(always)]
fn key(out: &mut Vec<u8>, key: &'static [u8]) {
    out.extend_from_slice(key);
}

/// A string known to need no escape (a field or variant name).
#[inline(always)]
fn name(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

#[inline(always)]
fn field_str(out: &mut Vec<u8>, k: &'static [u8], v: Option<&str>) {
    if let Some(s) = v {
        key(out, k);
        string(out, s);
    }
}

#[inline(always)]
fn field_int<N: itoa::Integer>(out: &mut Vec<u8>, k: &'static [u8], v: Option<N>) {
    if let Some(n) = v {
        key(out, k);
        int(out, n);
    }
}

#[inline(always)]
fn opt_string(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

#[inline(always)]
fn opt_int<N: itoa::Integer>(out: &mut Vec<u8>, v: Option<N>) {
    match v {
        Some(n) => int(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

#[inline(always)]
fn int<N: itoa::Integer>(out: &mut Vec<u8>, n: N) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// An address as a JSON string, as serde writes an `IpAddr` (its
/// `Display`): IPv4 (every loopback and most service traffic) digit by
/// digit, without the formatting machinery, which cost more than the rest
/// of a line's socket fields (perf, one line per reset).
fn ip(out: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => {
            // `"255.255.255.255"`: at most 17 bytes, gathered here and
            // appended at once.
            let mut text = [0u8; 17];
            text[0] = b'"';
            let mut n = 1;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    text[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    text[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                text[n] = b'0' + octet % 10;
                n += 1;
            }
            text[n] = b'"';
            out.extend_from_slice(&text[..=n]);
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "\"{v6}\"");
        }
    }
}

/// `[{"addr":"10.0.0.2","port":40001},...]`.
fn endpoints(out: &mut Vec<u8>, sample: &[Endpoint]) {
    out.push(b'[');
    for (i, ep) in sample.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"addr\":");
        string(out, &ep.addr);
        out.extend_from_slice(b",\"port\":");
        int(out, ep.port);
        out.push(b'}');
    }
    out.push(b']');
}

/// Whether serde_json escapes this byte: `"`, `\` and the control
/// characters below 0x20 (DEL and everything non-ASCII go out verbatim).
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// A JSON string, escaped as serde_json escapes it.
fn string(out: &mut Vec<u8>, s: &str) {
    string_bytes(out, s.as_bytes());
}

/// [`string`] of the bytes of a string (UTF-8).
fn string_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    if verbatim(bytes) {
        out.extend_from_slice(bytes);
    } else {
        escaped(out, bytes);
    }
    out.push(b'"');
}

/// Whether no byte of `bytes` [`needs_escape`], eight at a time (nearly
/// every string of an event needs none: this check was the most of a
/// line's string work a byte at a time).
fn verbatim(mut bytes: &[u8]) -> bool {
    while let Some((word, rest)) = bytes.split_first_chunk::<8>() {
        if word_needs_escape(u64::from_le_bytes(*word)) {
            return false;
        }
        bytes = rest;
    }
    !bytes.iter().any(|&b| needs_escape(b))
}

/// Whether any byte of `x` is below 0x20, `"` or `\`: the exact tests
/// "has a byte less than n" (`(x - n*ONES) & !x & HIGHS`, exact for
/// n <= 0x80) and "has a zero byte" of `x ^ c*ONES` (Bit Twiddling Hacks).
/// Bytes of 0x80 and above never match (`!x` clears their high bit).
fn word_needs_escape(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let control = x.wrapping_sub(0x20 * ONES) & !x & HIGHS;
    let quote = has_zero(x ^ (u64::from(b'"') * ONES));
    let backslash = has_zero(x ^ (u64::from(b'\\') * ONES));
    control | quote | backslash != 0
}

/// The slow path of [`string`]: runs of verbatim bytes between escapes.
/// Escaped bytes are ASCII, so the runs split only between characters.
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
#[path = "json_line_tests.rs"]
mod tests;
