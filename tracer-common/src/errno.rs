//! Which accept() return values are failures. Shared by the kernel programs
//! (which drop the others before they cost a map update) and userspace.
//!
//! - `EAGAIN`: a non-blocking accept found the queue empty.
//! - `ERESTARTSYS`, `ERESTARTNOINTR`, `ERESTARTNOHAND`,
//!   `ERESTART_RESTARTBLOCK` (512, 513, 514, 516; include/linux/errno.h):
//!   a blocking accept interrupted by a signal, as the syscall exit sees it
//!   before signal delivery restarts the call or turns it into `EINTR`. They
//!   never reach the process.
//! - `EINTR`: the same interruption where the kernel returns it directly
//!   (an accept with `SO_RCVTIMEO`, io_uring). The process sees it, but the
//!   pending connection stays queued for the next accept: nothing failed
//!   for any client.
//!
//! Everything else is a failure, among them `EMFILE`/`ENFILE` (resource
//! exhaustion, the only ones that feed `fd_exhaustion`) and `ECONNABORTED`
//! (the peer aborted a connection before it was accepted: the client's
//! connection was lost, but not for lack of any resource of this host).

pub const EINTR: i32 = 4;
pub const EAGAIN: i32 = 11;
pub const ERESTARTSYS: i32 = 512;
pub const ERESTARTNOINTR: i32 = 513;
pub const ERESTARTNOHAND: i32 = 514;
pub const ERESTART_RESTARTBLOCK: i32 = 516;

/// Whether accept() returning `-errno` is a failure worth reporting.
#[inline(always)]
pub const fn accept_failed(errno: i32) -> bool {
    !matches!(
        errno,
        EAGAIN | EINTR | ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND | ERESTART_RESTARTBLOCK
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interruptions_are_not_failures() {
        for e in [4, 11, 512, 513, 514, 516] {
            assert!(!accept_failed(e), "{e}");
        }
        // EMFILE, ENFILE, ENOBUFS, ENOMEM, ECONNABORTED, EPERM.
        for e in [24, 23, 105, 12, 103, 1] {
            assert!(accept_failed(e), "{e}");
        }
    }
}
