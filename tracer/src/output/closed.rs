//! Notices when the reader of stdout goes away (`tracer watch | head -1`)
//! even while no event is being written, so the tool exits promptly with its
//! programs detached instead of at the next event.

use std::os::fd::{AsFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

pub struct ReaderGone {
    fd: Option<AsyncFd<OwnedFd>>,
}

impl ReaderGone {
    /// Watches a duplicate of stdout. Regular files and terminals cannot be
    /// "closed by the reader" (epoll refuses files): then it never fires.
    pub fn stdout() -> ReaderGone {
        let fd = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .filter(is_pipe_or_socket)
            // SAFETY: the OwnedFd is a private duplicate of stdout moved into
            // the AsyncFd: it stays open, and is not reused, while registered.
            .and_then(|fd| unsafe { AsyncFd::register_with_interest(fd, Interest::ERROR) }.ok());
        ReaderGone { fd }
    }

    /// Completes when the reader has closed its end.
    pub async fn wait(&self) {
        match &self.fd {
            Some(fd) => match fd.ready(Interest::ERROR).await {
                Ok(mut guard) => {
                    guard.retain_ready();
                }
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

fn is_pipe_or_socket(fd: &OwnedFd) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let file = std::fs::File::from(match fd.try_clone() {
        Ok(f) => f,
        Err(_) => return false,
    });
    file.metadata()
        .map(|m| m.file_type().is_fifo() || m.file_type().is_socket())
        .unwrap_or(false)
}
