//! JSON lines: one object per event, UTF-8, escaped as serde_json escapes
//! whatever bytes process names hold (events by `json_line`, byte for byte
//! serde_json's; summaries by serde_json itself).

use std::io::{self, BufWriter, Write};

use super::Sink;
use crate::event::Event;

pub struct JsonSink<W: Write> {
    out: BufWriter<W>,
    /// The line being written (kept: no allocation per event).
    line: Vec<u8>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(w: W) -> Self {
        JsonSink {
            out: BufWriter::with_capacity(64 * 1024, w),
            line: Vec::with_capacity(1024),
        }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        self.line.clear();
        super::json_line::write_event(&mut self.line, e);
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
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
        serde_json::to_writer(&mut self.out, &v).map_err(io::Error::from)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}
