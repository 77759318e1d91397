//! JSON lines: one object per event, UTF-8, escaped by serde_json whatever
//! bytes process names hold.

use std::io::{self, BufWriter, Write};

use super::Sink;
use crate::event::Event;

pub struct JsonSink<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(w: W) -> Self {
        JsonSink {
            out: BufWriter::with_capacity(64 * 1024, w),
        }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, e).map_err(io::Error::from)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
