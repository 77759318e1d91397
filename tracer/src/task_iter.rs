//! The task-file iterator (`tracer-ebpf/src/task_files.rs`): every open
//! file of every process in one read, for the snapshot's socket owners
//! ([`crate::snapshot::FdSource`]).
//!
//! aya loads the program; a fresh iterator is needed for every read, and
//! aya can create one only by consuming the `Iter` program's link, which
//! lives inside the session's `Ebpf`. So this keeps a clone of the loaded
//! program's fd and makes the two syscalls of a read itself:
//! `BPF_LINK_CREATE` (attach type `BPF_TRACE_ITER`) and `BPF_ITER_CREATE`.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Context as _, anyhow};
use aya::programs::{Iter, ProgramFd};
use aya::{Btf, Ebpf};
use tracer_common::task_file::TaskFileRecord;

use crate::snapshot::TaskFiles;

/// `enum bpf_cmd` and `enum bpf_attach_type` values (include/uapi/linux/bpf.h).
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u64 = 28;

pub struct TaskFileIter {
    prog: ProgramFd,
}

impl TaskFileIter {
    /// Loads the iterator program (`task_file`, Linux 5.8+).
    pub fn load(ebpf: &mut Ebpf, btf: &Btf) -> anyhow::Result<TaskFileIter> {
        let prog: &mut Iter = ebpf
            .program_mut("task_files")
            .ok_or_else(|| anyhow!("task_files missing from the eBPF object"))?
            .try_into()
            .context("task_files is not an iterator program")?;
        prog.load("task_file", btf).map_err(|e| {
            anyhow!(
                "loading the task_file iterator: {}",
                crate::probes::attach::chain(&e)
            )
        })?;
        let prog = prog
            .fd()
            .context("the task_file iterator's fd")?
            .try_clone()
            .context("duplicating the task_file iterator's fd")?;
        Ok(TaskFileIter { prog })
    }

    /// One iterator over every task's files, as a file to read.
    fn open(&self) -> io::Result<File> {
        let mut attr = [0u64; 16];
        attr[0] = self.prog.as_fd().as_raw_fd() as u32 as u64; // prog_fd, target_fd 0
        attr[1] = BPF_TRACE_ITER; // attach_type, flags 0
        let link = bpf(BPF_LINK_CREATE, &mut attr)?;
        let mut attr = [0u64; 16];
        attr[0] = link.as_raw_fd() as u32 as u64; // link_fd, flags 0
        let iter = bpf(BPF_ITER_CREATE, &mut attr)?;
        // The iterator holds its own reference to the link.
        drop(link);
        Ok(File::from(iter))
    }
}

/// `bpf(cmd, attr, sizeof attr)` returning a new fd.
fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-initialised buffer the size of (or larger
    // than, with a zero tail, which the kernel accepts) `union bpf_attr`;
    // the kernel reads it and returns an fd or -1 with errno.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf() returned no fd"))?;
    // SAFETY: the syscall just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl crate::snapshot::FdSource for TaskFileIter {
    fn read(&self) -> io::Result<TaskFiles> {
        let mut file = self.open()?;
        // Read in pieces (a host with 200k fds makes 4.8 MB of records;
        // only the sockets are kept).
        let mut files = TaskFiles::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut have = 0;
        loop {
            let n = match file.read(&mut buf[have..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            have += n;
            let whole = have - have % TaskFileRecord::SIZE;
            for chunk in buf[..whole].chunks_exact(TaskFileRecord::SIZE) {
                files.add(parse_record(chunk));
            }
            buf.copy_within(whole..have, 0);
            have -= whole;
        }
        if have != 0 {
            return Err(io::Error::other(format!(
                "task_file iterator ended inside a record ({have} of {} bytes)",
                TaskFileRecord::SIZE
            )));
        }
        Ok(files)
    }
}

/// One record, field by field (native endianness, as the kernel wrote it).
pub fn parse_record(b: &[u8]) -> TaskFileRecord {
    let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut ino = [0u8; 8];
    ino.copy_from_slice(&b[8..16]);
    TaskFileRecord {
        tgid: u32_at(0),
        fd: u32_at(4),
        ino: u64::from_ne_bytes(ino),
        mode: u32_at(16),
        _pad: 0,
    }
}
