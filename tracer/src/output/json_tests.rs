//! The JSON sink's buffering: every line written out exactly once, whatever
//! the writer does (short writes, interruptions, an error between).

use std::cell::RefCell;
use std::io::{self, Write};
use std::rc::Rc;

use super::{JsonSink, WRITE_AT};
use crate::event::{Event, EventKind};
use crate::output::Sink as _;

/// A writer that takes at most `step` bytes a call, is interrupted every
/// other call, and fails once when `fail_at` bytes have been taken.
#[derive(Clone, Default)]
struct Awkward {
    got: Rc<RefCell<Vec<u8>>>,
    step: usize,
    calls: Rc<RefCell<usize>>,
    fail_at: Option<usize>,
    failed: Rc<RefCell<bool>>,
}

impl Write for Awkward {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        *self.calls.borrow_mut() += 1;
        if self.calls.borrow().is_multiple_of(2) {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let taken = self.got.borrow().len();
        if let Some(at) = self.fail_at
            && taken >= at
            && !*self.failed.borrow()
        {
            *self.failed.borrow_mut() = true;
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.step);
        self.got.borrow_mut().extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut e = Event::new(EventKind::RstSent, format!("t{i}").into());
            e.comm = Some(format!("proc-{i}\n\"").into());
            e.count = Some(i as u64);
            e
        })
        .collect()
}

fn lines(events: &[Event]) -> Vec<u8> {
    let text: String = events
        .iter()
        .map(|e| serde_json::to_string(e).expect("test data") + "\n")
        .collect();
    text.into_bytes()
}

#[test]
fn short_and_interrupted_writes_lose_and_repeat_nothing() {
    let evs = events(2_000);
    let want = lines(&evs);
    assert!(want.len() > 2 * WRITE_AT, "crosses the write-out size");
    let w = Awkward {
        step: 1_000,
        ..Default::default()
    };
    let mut sink = JsonSink::new(w.clone());
    for e in &evs {
        sink.event(e).expect("no failure set");
    }
    sink.flush().expect("no failure set");
    assert_eq!(*w.got.borrow(), want);
}

#[test]
fn after_an_error_the_rest_follows_once() {
    let evs = events(2_000);
    let want = lines(&evs);
    let w = Awkward {
        step: 777,
        fail_at: Some(WRITE_AT / 2),
        ..Default::default()
    };
    let mut sink = JsonSink::new(w.clone());
    let mut errors = 0;
    for e in &evs {
        if sink.event(e).is_err() {
            errors += 1;
        }
    }
    sink.flush().expect("failed once only");
    assert_eq!(errors, 1);
    assert_eq!(*w.got.borrow(), want);
}

#[test]
fn dropping_the_sink_writes_what_is_pending() {
    let evs = events(3);
    let w = Awkward {
        step: 5,
        ..Default::default()
    };
    {
        let mut sink = JsonSink::new(w.clone());
        for e in &evs {
            sink.event(e).expect("no failure set");
        }
        assert!(w.got.borrow().is_empty(), "held until a flush");
    }
    assert_eq!(*w.got.borrow(), lines(&evs));
}
