//! Every open file of every process, for the start-up snapshot's socket
//! owners: one pass in the kernel instead of a `readlink` per fd in
//! `/proc/PID/fd`.
//!
//! Kernel dependency: the BPF iterator `task_file` (kernel/bpf/task_iter.c,
//! Linux 5.8+), context `struct bpf_iter__task_file { meta, task, fd, file }`;
//! it visits each thread group's file table once (threads sharing it are
//! skipped). Members read: `task_struct.tgid`, `file.f_inode`,
//! `inode.i_ino`, `inode.i_mode` (offsets from BTF, `maps::offsets()`).
//! Output: one `TaskFileRecord` per fd through `bpf_seq_write`.

use aya_ebpf::helpers::generated::bpf_seq_write;
use tracer_common::OFFSET_NONE;
use tracer_common::task_file::TaskFileRecord;

use crate::kread::read_at;
use crate::maps::offsets;

/// `struct bpf_iter_meta` (include/linux/bpf.h): only `seq` is used.
#[repr(C)]
pub struct IterMeta {
    seq: *mut aya_ebpf::bindings::seq_file,
    session_id: u64,
    seq_num: u64,
}

/// `struct bpf_iter__task_file`: pointers are 8 bytes (`__bpf_md_ptr`),
/// `fd` is 8-aligned.
#[repr(C)]
pub struct IterTaskFile {
    meta: *const IterMeta,
    task: u64,
    fd: u32,
    _pad: u32,
    file: u64,
}

#[unsafe(link_section = "iter/task_file")]
#[unsafe(no_mangle)]
pub extern "C" fn task_files(ctx: *const IterTaskFile) -> i32 {
    // SAFETY: the kernel passes a valid `bpf_iter__task_file`; reading its
    // members is a context access the verifier checks.
    let (meta, task, fd, file) = unsafe { ((*ctx).meta, (*ctx).task, (*ctx).fd, (*ctx).file) };
    // The last call of a session has no task and no file.
    if meta.is_null() || task == 0 || file == 0 {
        return 0;
    }
    let o = offsets();
    if o.inode_mode == OFFSET_NONE || o.task_tgid == OFFSET_NONE {
        return 0;
    }
    let inode: u64 = read_at(file, o.file_inode).unwrap_or(0);
    let rec = TaskFileRecord {
        tgid: read_at(task, o.task_tgid).unwrap_or(0),
        fd,
        ino: read_at(inode, o.inode_ino).unwrap_or(0),
        mode: read_at::<u16>(inode, o.inode_mode).unwrap_or(0) as u32,
        _pad: 0,
    };
    // SAFETY: `meta` is the kernel's non-NULL iterator metadata; `seq` is
    // the seq_file of this read; the helper copies `rec` from our stack.
    unsafe {
        bpf_seq_write(
            (*meta).seq,
            &rec as *const TaskFileRecord as *const core::ffi::c_void,
            TaskFileRecord::SIZE as u32,
        );
    }
    0
}
