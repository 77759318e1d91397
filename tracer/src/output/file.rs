//! `watch --output FILE`: events appended to a file for shippers that tail
//! it. The file is opened with O_APPEND, and every write(2) carries whole
//! lines only, so a reader never sees half an event. `reopen` (on SIGHUP)
//! flushes to the old file and continues in a fresh one at the same path,
//! which is how logrotate's `create` mode (mv, then SIGHUP) works.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Format, Sink};
use crate::event::Event;

/// Lines are written out once this many bytes are pending (and at every
/// flush of the event loop).
const WRITE_AT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("cannot open {path} for --output: {source}")]
pub struct OpenError {
    pub path: PathBuf,
    pub source: io::Error,
}

fn open(path: &Path) -> Result<File, OpenError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| OpenError {
            path: path.to_path_buf(),
            source,
        })
}

struct Inner {
    path: PathBuf,
    file: File,
    /// Bytes not written yet; whatever follows the last newline stays here.
    pending: Vec<u8>,
}

impl Inner {
    /// Writes every complete line pending.
    fn write_lines(&mut self) -> io::Result<()> {
        let Some(last_nl) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        super::write_out_prefix(&mut self.file, &mut self.pending, last_nl + 1)
    }
}

/// The `Write` end shared by the formatting sink and [`FileSink`].
#[derive(Clone)]
pub struct AppendFile(Arc<Mutex<Inner>>);

impl AppendFile {
    pub fn open(path: &Path) -> Result<AppendFile, OpenError> {
        Ok(AppendFile(Arc::new(Mutex::new(Inner {
            path: path.to_path_buf(),
            file: open(path)?,
            pending: Vec::with_capacity(WRITE_AT),
        }))))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what is complete to the current file, then opens the path
    /// anew. On failure the old file stays in use.
    pub fn reopen(&self) -> io::Result<()> {
        let mut inner = self.inner();
        inner.write_lines()?;
        let file = open(&inner.path).map_err(|e| io::Error::new(e.source.kind(), e))?;
        inner.file = file;
        Ok(())
    }
}

impl Write for AppendFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut inner = self.inner();
        inner.pending.extend_from_slice(buf);
        if inner.pending.len() >= WRITE_AT {
            inner.write_lines()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner().write_lines()
    }
}

/// A JSON or text sink writing to an [`AppendFile`], reopened on request.
pub struct FileSink {
    inner: Box<dyn Sink>,
    file: AppendFile,
}

impl FileSink {
    pub fn open(format: Format, path: &Path) -> Result<FileSink, OpenError> {
        let file = AppendFile::open(path)?;
        Ok(FileSink {
            inner: super::sink(format, file.clone()),
            file,
        })
    }
}

impl Sink for FileSink {
    fn event(&mut self, e: &Event) -> io::Result<()> {
        self.inner.event(e)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    fn summary(&mut self, ts: &str, r: &crate::report::Report) -> io::Result<()> {
        self.inner.summary(ts, r)
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.inner.flush()?;
        self.file.reopen()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tracer-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test data");
        dir
    }

    fn lost(n: u64) -> Event {
        let mut e = Event::new(EventKind::Lost, "2024-05-01T12:34:56.789012345Z".into());
        e.count = Some(n);
        e
    }

    #[test]
    fn appends_whole_lines_and_reopens() {
        let dir = tmp("reopen");
        let path = dir.join("events.json");
        std::fs::write(&path, "{\"earlier\":true}\n").expect("test data");
        let mut s = FileSink::open(Format::Json, &path).expect("test data");
        s.event(&lost(1)).expect("test data");
        s.flush().expect("test data");
        // logrotate: mv, then SIGHUP.
        let rotated = dir.join("events.json.1");
        std::fs::rename(&path, &rotated).expect("test data");
        s.event(&lost(2)).expect("test data");
        s.reopen().expect("test data");
        s.event(&lost(3)).expect("test data");
        s.flush().expect("test data");
        let old = std::fs::read_to_string(&rotated).expect("test data");
        let new = std::fs::read_to_string(&path).expect("test data");
        assert_eq!(old.lines().count(), 3, "{old}");
        assert!(old.starts_with("{\"earlier\":true}\n") && old.ends_with("\"count\":2}\n"));
        assert_eq!(new.lines().count(), 1, "{new}");
        assert!(new.ends_with("\"count\":3}\n"), "{new}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_partial_line_is_never_written() {
        let dir = tmp("partial");
        let path = dir.join("e.txt");
        let mut f = AppendFile::open(&path).expect("test data");
        f.write_all(b"one\ntw").expect("test data");
        f.flush().expect("test data");
        assert_eq!(std::fs::read_to_string(&path).expect("test data"), "one\n");
        f.write_all(&vec![b'x'; WRITE_AT]).expect("test data");
        assert_eq!(std::fs::read_to_string(&path).expect("test data"), "one\n");
        f.write_all(b"\n").expect("test data");
        f.flush().expect("test data");
        let text = std::fs::read_to_string(&path).expect("test data");
        assert_eq!(text.len(), 4 + 2 + WRITE_AT + 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unopenable_path_is_one_clear_error() {
        let e = FileSink::open(Format::Json, Path::new("/nonexistent-dir/x.json"))
            .err()
            .expect("test data");
        assert!(
            e.to_string()
                .starts_with("cannot open /nonexistent-dir/x.json for --output: "),
            "{e}"
        );
    }
}
