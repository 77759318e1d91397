use super::*;

use tracer_common::{owner_source, sock_flags};

/// Little-endian encoder following the `#[repr(C)]` layouts of
/// tracer-common/src/record.rs field by field, padding included. Padding
/// bytes are written as `pad` so tests can check the decoder ignores them.
struct Enc {
    out: Vec<u8>,
    pad: u8,
}

impl Enc {
    fn new(pad: u8) -> Self {
        Enc {
            out: Vec::new(),
            pad,
        }
    }
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }
    fn padding(&mut self, n: usize) {
        let p = self.pad;
        self.out.extend(std::iter::repeat_n(p, n));
    }
    fn header(&mut self, h: &RecordHeader) {
        self.u16(h.kind);
        self.u16(h.version);
        self.u32(h.len);
        self.u64(h.ts_boot_ns);
    }
    fn task(&mut self, t: &TaskInfo) {
        self.u32(t.tgid);
        self.u32(t.pid);
        self.u64(t.cgroup_id);
        self.bytes(&t.comm);
        self.bytes(&t.thread);
    }
    fn sock(&mut self, s: &SockInfo) {
        self.u64(s.skaddr);
        self.u64(s.ino);
        self.u32(s.netns);
        self.u16(s.family);
        self.u16(s.lport);
        self.u16(s.rport);
        self.u8(s.state);
        self.u8(s.flags);
        self.padding(4);
        self.bytes(&s.laddr);
        self.bytes(&s.raddr);
    }
}

fn enc_rst(r: &RstRecord, pad: u8) -> Vec<u8> {
    let mut e = Enc::new(pad);
    e.header(&r.header);
    e.sock(&r.sock);
    e.task(&r.current);
    e.task(&r.owner);
    e.u32(r.reason);
    e.u8(r.owner_source);
    e.padding(3);
    assert_eq!(e.out.len(), 184);
    e.out
}

fn enc_state(r: &StateRecord, pad: u8) -> Vec<u8> {
    let mut e = Enc::new(pad);
    e.header(&r.header);
    e.sock(&r.sock);
    e.task(&r.current);
    e.task(&r.owner);
    e.u8(r.old_state);
    e.u8(r.new_state);
    e.u8(r.owner_source);
    e.padding(5);
    assert_eq!(e.out.len(), 184);
    e.out
}

fn enc_accept(r: &AcceptFailedRecord, pad: u8) -> Vec<u8> {
    let mut e = Enc::new(pad);
    e.header(&r.header);
    e.task(&r.task);
    e.sock(&r.listener);
    e.i32(r.listen_fd);
    e.i32(r.errno);
    e.u64(r.fd_limit);
    assert_eq!(e.out.len(), 144);
    e.out
}

/// The in-memory bytes of a record (all these types have no implicit
/// padding, so every byte is initialised).
fn raw_bytes<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is a #[repr(C)] record of integers and byte arrays without
    // implicit padding (sizes asserted in tracer-common); reading its bytes
    // is reading initialised memory.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()).to_vec() }
}

fn comm(s: &[u8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..s.len()].copy_from_slice(s);
    c
}

fn header(kind: u16, len: usize, ts: u64) -> RecordHeader {
    RecordHeader {
        kind,
        version: RECORD_VERSION,
        len: len as u32,
        ts_boot_ns: ts,
    }
}

/// A socket with a distinct non-zero value in every field.
fn sample_sock() -> SockInfo {
    let mut laddr = [0u8; 16];
    let mut raddr = [0u8; 16];
    for i in 0..16 {
        laddr[i] = 0x10 + i as u8;
        raddr[i] = 0xa0 + i as u8;
    }
    SockInfo {
        skaddr: 0xffff_8880_1234_5678,
        ino: 0x0000_0001_0203_0405,
        netns: 0xf000_0098,
        family: 10,
        lport: 0x1f90,
        rport: 0xc822,
        state: 1,
        flags: sock_flags::HAS_SK,
        _pad: 0,
        laddr,
        raddr,
    }
}

fn sample_task(tgid: u32, pid: u32, cg: u64, name: &[u8]) -> TaskInfo {
    TaskInfo {
        tgid,
        pid,
        cgroup_id: cg,
        comm: comm(name),
        thread: comm(name),
    }
}

fn sample_rst(kind: u16) -> RstRecord {
    RstRecord {
        header: header(kind, size_of::<RstRecord>(), 0x0102_0304_0506_0708),
        sock: sample_sock(),
        current: sample_task(1111, 1112, 0x77, b"ksoftirqd/3"),
        owner: TaskInfo {
            thread: comm(b"worker-3"),
            ..sample_task(2222, 2223, 0x88, b"nginx")
        },
        reason: 0xdead_beef,
        owner_source: owner_source::SOCKET_MAP,
        _pad: [0; 3],
    }
}

fn sample_state() -> StateRecord {
    StateRecord {
        header: header(
            kind::STATE_CHANGE,
            size_of::<StateRecord>(),
            0x1122_3344_5566_7788,
        ),
        sock: sample_sock(),
        current: sample_task(10, 11, 12, b"swapper/0"),
        owner: sample_task(20, 21, 22, b"postgres"),
        old_state: 1,
        new_state: 8,
        owner_source: owner_source::LOCKED_CURRENT,
        _pad: [0; 5],
    }
}

fn sample_accept() -> AcceptFailedRecord {
    AcceptFailedRecord {
        header: header(
            kind::ACCEPT_FAILED,
            size_of::<AcceptFailedRecord>(),
            0xaabb_ccdd_eeff_0011,
        ),
        task: sample_task(4242, 4243, 0x99, b"java"),
        listener: sample_sock(),
        listen_fd: -1,
        errno: 24,
        fd_limit: 0x0000_0002_0000_0400,
    }
}

// The encoder must match the compiler's layout of the shared types, or every
// other test here would prove nothing.
#[cfg(target_endian = "little")]
#[test]
fn encoder_matches_repr_c_layout() {
    let rst = sample_rst(kind::RST_SENT);
    assert_eq!(enc_rst(&rst, 0), raw_bytes(&rst));
    let st = sample_state();
    assert_eq!(enc_state(&st, 0), raw_bytes(&st));
    let acc = sample_accept();
    assert_eq!(enc_accept(&acc, 0), raw_bytes(&acc));
}

#[test]
fn rst_sent_round_trip() {
    let rec = sample_rst(kind::RST_SENT);
    assert_eq!(decode(&enc_rst(&rec, 0)), Ok(Record::RstSent(rec)));
}

/// No process is known: the owner comes from the record alone.
struct NoProcs;

impl crate::attribute::procs::ProcSource for NoProcs {
    fn process(&self, _pid: u32) -> Option<crate::snapshot::ProcessInfo> {
        None
    }
}

/// The event a decoded reset record becomes (`Enricher::rst`).
fn rst_event(bytes: &[u8]) -> crate::event::Event {
    let Ok(Record::RstSent(rec)) = decode(bytes) else {
        panic!("not an rst_sent record");
    };
    let names = crate::kernel::KernelNames::default();
    let enricher = crate::enrich::Enricher {
        clock: crate::clock::Clock::with_offset(0),
        names: &names,
        proc_source: &NoProcs,
    };
    enricher.rst(&mut crate::attribute::Attributor::default(), &rec, true)
}

#[test]
fn the_kernels_side_of_a_reset_reaches_the_event() {
    // A connection this host made: the kernel set PEER_IS_SERVICE.
    let mut made = sample_rst(kind::RST_SENT);
    made.sock.flags = sock_flags::HAS_SK | sock_flags::PEER_IS_SERVICE;
    let bytes = enc_rst(&made, 0xff);
    assert_eq!(decode(&bytes), Ok(Record::RstSent(made)));
    assert!(rst_event(&bytes).peer_is_service);
    // A service's connection (or no socket): the flag is clear.
    let served = sample_rst(kind::RST_SENT);
    assert!(!rst_event(&enc_rst(&served, 0xff)).peer_is_service);
    // Internal: not a JSON field.
    let json = serde_json::to_string(&rst_event(&bytes)).expect("serialisable");
    assert!(!json.contains("peer_is_service"), "{json}");
}

#[test]
fn rst_received_round_trip() {
    let rec = sample_rst(kind::RST_RECEIVED);
    assert_eq!(decode(&enc_rst(&rec, 0)), Ok(Record::RstReceived(rec)));
}

#[test]
fn state_round_trip() {
    let rec = sample_state();
    assert_eq!(decode(&enc_state(&rec, 0)), Ok(Record::State(rec)));
}

#[test]
fn accept_failed_round_trip() {
    let rec = sample_accept();
    assert_eq!(decode(&enc_accept(&rec, 0)), Ok(Record::AcceptFailed(rec)));
}

#[test]
fn padding_bytes_are_ignored_and_zeroed() {
    // Garbage in every padding byte: the decoded records equal the originals
    // (whose padding is zero), so no field was read from a padding offset.
    let rst = sample_rst(kind::RST_SENT);
    assert_eq!(decode(&enc_rst(&rst, 0xa5)), Ok(Record::RstSent(rst)));
    let st = sample_state();
    assert_eq!(decode(&enc_state(&st, 0xa5)), Ok(Record::State(st)));
    let acc = sample_accept();
    assert_eq!(
        decode(&enc_accept(&acc, 0xa5)),
        Ok(Record::AcceptFailed(acc))
    );
}

#[test]
fn fields_land_at_their_offsets() {
    // One field changed at a time must change exactly that field.
    let mut rec = sample_state();
    let mut bytes = enc_state(&rec, 0);
    // SockInfo.rport is at 16 (header) + 8 + 8 + 4 + 2 + 2 = 40.
    bytes[40..42].copy_from_slice(&443u16.to_le_bytes());
    rec.sock.rport = 443;
    // StateRecord.new_state is at 16 + 64 + 48 + 48 + 1 = 177.
    bytes[177] = 10;
    rec.new_state = 10;
    assert_eq!(decode(&bytes), Ok(Record::State(rec)));
}

#[test]
fn longer_buffer_than_record_is_accepted() {
    // The ring buffer may hand over a sample rounded up; trailing bytes are
    // not part of the record.
    let rec = sample_rst(kind::RST_SENT);
    let mut bytes = enc_rst(&rec, 0);
    bytes.extend_from_slice(&[0xff; 8]);
    assert_eq!(decode(&bytes), Ok(Record::RstSent(rec)));
}

#[test]
fn short_header() {
    let bytes = enc_rst(&sample_rst(kind::RST_SENT), 0);
    assert_eq!(
        decode(&bytes[..15]),
        Err(DecodeError::Short {
            what: "header",
            len: 15,
            need: 16
        })
    );
    assert_eq!(
        decode(&[]),
        Err(DecodeError::Short {
            what: "header",
            len: 0,
            need: 16
        })
    );
}

#[test]
fn short_body_of_each_kind() {
    // Header consistent with the (short) buffer: the body check must catch it.
    let mut rst = sample_rst(kind::RST_RECEIVED);
    rst.header.len = 100;
    assert_eq!(
        decode(&enc_rst(&rst, 0)[..100]),
        Err(DecodeError::Short {
            what: "rst record",
            len: 100,
            need: 184
        })
    );
    let mut st = sample_state();
    st.header.len = 183;
    assert_eq!(
        decode(&enc_state(&st, 0)[..183]),
        Err(DecodeError::Short {
            what: "state record",
            len: 183,
            need: 184
        })
    );
    let mut acc = sample_accept();
    acc.header.len = 16;
    assert_eq!(
        decode(&enc_accept(&acc, 0)[..16]),
        Err(DecodeError::Short {
            what: "accept record",
            len: 16,
            need: 144
        })
    );
}

#[test]
fn wrong_version() {
    let mut rec = sample_rst(kind::RST_SENT);
    rec.header.version = 1;
    assert_eq!(decode(&enc_rst(&rec, 0)), Err(DecodeError::Version(1)));
    rec.header.version = 0;
    assert_eq!(decode(&enc_rst(&rec, 0)), Err(DecodeError::Version(0)));
    // Checked before the kind: a future version may have new kinds.
    rec.header.version = 9;
    rec.header.kind = 77;
    assert_eq!(decode(&enc_rst(&rec, 0)), Err(DecodeError::Version(9)));
}

#[test]
fn unknown_kind() {
    let mut rec = sample_rst(kind::RST_SENT);
    rec.header.kind = 99;
    assert_eq!(decode(&enc_rst(&rec, 0)), Err(DecodeError::Kind(99)));
    rec.header.kind = 0;
    assert_eq!(decode(&enc_rst(&rec, 0)), Err(DecodeError::Kind(0)));
    // A header alone with an unknown kind is an unknown kind, not short.
    let mut e = Enc::new(0);
    e.header(&header(1234, 16, 0));
    assert_eq!(decode(&e.out), Err(DecodeError::Kind(1234)));
}

#[test]
fn header_len_larger_than_buffer() {
    let mut rec = sample_rst(kind::RST_SENT);
    rec.header.len = 200;
    assert_eq!(
        decode(&enc_rst(&rec, 0)),
        Err(DecodeError::Length {
            said: 200,
            len: 184
        })
    );
    let mut acc = sample_accept();
    acc.header.len = u32::MAX;
    assert_eq!(
        decode(&enc_accept(&acc, 0)),
        Err(DecodeError::Length {
            said: u32::MAX,
            len: 144
        })
    );
}

#[test]
fn error_messages() {
    assert_eq!(
        DecodeError::Short {
            what: "header",
            len: 3,
            need: 16
        }
        .to_string(),
        "record of 3 bytes is shorter than its 16-byte header"
    );
    assert_eq!(
        DecodeError::Version(7).to_string(),
        "record version 7 (this tracer reads version 2)"
    );
    assert_eq!(
        DecodeError::Length { said: 9, len: 8 }.to_string(),
        "record says 9 bytes but carries 8"
    );
}

/// Bytes of a hex fixture: `#` starts a comment, whitespace is ignored.
fn hex_fixture(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digit"))
        .collect()
}

#[cfg(target_endian = "little")]
#[test]
fn decodes_fixture_rst_sent_no_socket() {
    let bytes = hex_fixture(include_str!(
        "../tests/fixtures/records/rst_sent_no_socket.hex"
    ));
    assert_eq!(bytes.len(), 184);
    let Ok(Record::RstSent(r)) = decode(&bytes) else {
        panic!("not an rst_sent: {:?}", decode(&bytes));
    };
    assert_eq!(
        r.header,
        RecordHeader {
            kind: kind::RST_SENT,
            version: 2,
            len: 184,
            ts_boot_ns: 5_000_000_123,
        }
    );
    assert_eq!(r.sock.skaddr, 0);
    assert_eq!(r.sock.ino, 0);
    assert_eq!(r.sock.netns, 4_026_531_840);
    assert_eq!(r.sock.family, 2);
    assert_eq!(r.sock.lport, 8080);
    assert_eq!(r.sock.rport, 51234);
    assert_eq!(r.sock.state, 0);
    assert_eq!(r.sock.flags, sock_flags::FROM_SKB);
    assert_eq!(r.sock.laddr[..4], [10, 0, 0, 1]);
    assert_eq!(r.sock.laddr[4..], [0; 12]);
    assert_eq!(r.sock.raddr[..4], [10, 0, 0, 2]);
    assert_eq!(r.sock.raddr[4..], [0; 12]);
    assert_eq!(r.current, sample_task(0, 0, 1, b"swapper/2"));
    assert_eq!(r.owner, TaskInfo::default());
    assert_eq!(r.reason, 1);
    assert_eq!(r.owner_source, owner_source::NONE);
    // Re-encoding the decoded record gives the fixture back, byte for byte.
    assert_eq!(enc_rst(&r, 0), bytes);
}
