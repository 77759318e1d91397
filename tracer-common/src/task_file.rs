//! What the task-file iterator (`tracer-ebpf/src/task_files.rs`, BPF
//! iterator `task_file`, Linux 5.8+) writes for every open file of every
//! process: one fixed-size record, read back-to-back from the iterator's
//! file by the start-up snapshot instead of a `readlink` per fd.

/// One open file descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskFileRecord {
    /// Process (thread-group) id, in the reader's pid namespace.
    pub tgid: u32,
    pub fd: u32,
    /// `file->f_inode->i_ino`.
    pub ino: u64,
    /// `file->f_inode->i_mode` (`S_IFSOCK` marks a socket).
    pub mode: u32,
    pub _pad: u32,
}

/// The file-type bits of `i_mode`, and the socket type.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;

impl TaskFileRecord {
    pub const SIZE: usize = core::mem::size_of::<TaskFileRecord>();

    pub fn is_socket(&self) -> bool {
        self.mode & S_IFMT == S_IFSOCK
    }
}

const _: () = assert!(TaskFileRecord::SIZE == 24);
