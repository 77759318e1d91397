//! Ring-buffer bytes -> checked records. Lengths, versions and kinds are
//! verified and every field is copied out explicitly: no transmute of kernel
//! bytes.

use tracer_common::{
    AcceptFailedRecord, RECORD_VERSION, RecordHeader, RstRecord, SockInfo, StateRecord, TaskInfo,
    kind,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {need}-byte {what}")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("record version {0} (this tracer reads version {RECORD_VERSION})")]
    Version(u16),
    #[error("unknown record kind {0}")]
    Kind(u16),
    #[error("record says {said} bytes but carries {len}")]
    Length { said: u32, len: usize },
}

/// A decoded kernel record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    RstSent(RstRecord),
    RstReceived(RstRecord),
    State(StateRecord),
    AcceptFailed(AcceptFailedRecord),
}

/// A little-endian cursor over one record's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        // Callers check the total length first; a short buffer yields zeros.
        if let Some(src) = self.buf.get(self.pos..self.pos + N) {
            out.copy_from_slice(src);
        }
        self.pos += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_ne_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.bytes())
    }
    fn i32(&mut self) -> i32 {
        i32::from_ne_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_ne_bytes(self.bytes())
    }
    fn skip(&mut self, n: usize) {
        self.pos += n;
    }
    fn header(&mut self) -> RecordHeader {
        RecordHeader {
            kind: self.u16(),
            version: self.u16(),
            len: self.u32(),
            ts_boot_ns: self.u64(),
        }
    }
    fn task(&mut self) -> TaskInfo {
        TaskInfo {
            tgid: self.u32(),
            pid: self.u32(),
            cgroup_id: self.u64(),
            comm: self.bytes(),
            thread: self.bytes(),
        }
    }
    fn sock(&mut self) -> SockInfo {
        let skaddr = self.u64();
        let ino = self.u64();
        let netns = self.u32();
        let family = self.u16();
        let lport = self.u16();
        let rport = self.u16();
        let state = self.u8();
        let flags = self.u8();
        self.skip(4);
        SockInfo {
            skaddr,
            ino,
            netns,
            family,
            lport,
            rport,
            state,
            flags,
            _pad: 0,
            laddr: self.bytes(),
            raddr: self.bytes(),
        }
    }
}

fn need(what: &'static str, buf: &[u8], size: usize) -> Result<(), DecodeError> {
    if buf.len() < size {
        return Err(DecodeError::Short {
            what,
            len: buf.len(),
            need: size,
        });
    }
    Ok(())
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
    need("header", buf, size_of::<RecordHeader>())?;
    let mut r = Reader::new(buf);
    let header = r.header();
    if header.version != RECORD_VERSION {
        return Err(DecodeError::Version(header.version));
    }
    if header.len as usize > buf.len() {
        return Err(DecodeError::Length {
            said: header.len,
            len: buf.len(),
        });
    }
    match header.kind {
        kind::RST_SENT | kind::RST_RECEIVED => {
            need("rst record", buf, size_of::<RstRecord>())?;
            let rec = RstRecord {
                header,
                sock: r.sock(),
                current: r.task(),
                owner: r.task(),
                reason: r.u32(),
                owner_source: r.u8(),
                _pad: [0; 3],
            };
            Ok(if header.kind == kind::RST_SENT {
                Record::RstSent(rec)
            } else {
                Record::RstReceived(rec)
            })
        }
        kind::STATE_CHANGE => {
            need("state record", buf, size_of::<StateRecord>())?;
            Ok(Record::State(StateRecord {
                header,
                sock: r.sock(),
                current: r.task(),
                owner: r.task(),
                old_state: r.u8(),
                new_state: r.u8(),
                owner_source: r.u8(),
                _pad: [0; 5],
            }))
        }
        kind::ACCEPT_FAILED => {
            need("accept record", buf, size_of::<AcceptFailedRecord>())?;
            let task = r.task();
            let listener = r.sock();
            let listen_fd = r.i32();
            let errno = r.i32();
            Ok(Record::AcceptFailed(AcceptFailedRecord {
                header,
                task,
                listener,
                listen_fd,
                errno,
                fd_limit: r.u64(),
            }))
        }
        other => Err(DecodeError::Kind(other)),
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
