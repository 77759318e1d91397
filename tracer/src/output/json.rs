//! JSON lines: one object per event, UTF-8, escaped as serde_json escapes
//! whatever bytes process names hold (events by `json_line`, byte for byte
//! serde_json's; summaries by serde_json itself).

use std::io::{self, Write};

use super::Sink;
use crate::event::Event;

/// Lines are written out once this many bytes are pending (and at every
/// flush of the event loop).
const WRITE_AT: usize = 64 * 1024;

/// Lines are written into `pending` where they are made (as a `BufWriter`
/// would hold them, without copying each line into it), and out to `w`
/// by [`JsonSink::write_out`].
pub struct JsonSink<W: Write> {
    w: W,
    /// Bytes not written out yet.
    pending: Vec<u8>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(w: W) -> Self {
        JsonSink {
            w,
            pending: Vec::with_capacity(WRITE_AT + 4096),
        }
    }

    /// Writes out what is pending, as `BufWriter` does: what was written
    /// is never written again, even after an error; what was not stays.
    fn write_out(&mut self) -> io::Result<()> {
        let end = self.pending.len();
        super::write_out_prefix(&mut self.w, &mut self.pending, end)
    }
}

impl<W: Write> Drop for JsonSink<W> {
    /// What is pending is written out (errors ignored), as a `BufWriter`
    /// would on drop.
    fn drop(&mut self) {
        let _ = self.write_out();
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        super::json_line::write_event(&mut self.pending, e);
        self.pending.push(b'\n');
        if self.pending.len() >= WRITE_AT {
            self.write_out()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.w.flush()
    }

    /// `{"v":1,"ts":...,"event":"summary", ...the diagnose report}`.
    fn summary(&mut self, ts: &str, r: &crate::report::Report) -> io::Result<()> {
        let mut v = serde_json::to_value(r).map_err(io::Error::from)?;
        if let serde_json::Value::Object(map) = &mut v {
            let mut out = serde_json::Map::new();
            out.insert(
                "v".into(),
                map.remove("v").unwrap_or(serde_json::Value::Null),
            );
            out.insert("ts".into(), ts.into());
            out.insert("event".into(), "summary".into());
            out.extend(std::mem::take(map));
            v = serde_json::Value::Object(out);
        }
        serde_json::to_writer(&mut self.pending, &v).map_err(io::Error::from)?;
        self.pending.push(b'\n');
        self.flush()
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
