//! Socket ownership: learned where the kernel runs in the owner's context,
//! looked up where it does not (softirq: incoming RSTs, FINs, SYNs).

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns};
use tracer_common::{SockOwner, TaskInfo, exchange::SockExch, owner_source};

use crate::{
    exchange,
    kread::{
        KMem, TCP_LISTEN, fill_current, is_fullsock, sock_ino, sock_owned_by_user,
        sock_owned_by_user_in,
    },
    maps::{LISTEN_OWNERS, OWNER_SCRATCH, OWNERS, filter},
    owner_cache,
};

/// This CPU's scratch owner entry (maps::OWNER_SCRATCH).
#[inline(always)]
fn scratch() -> Option<&'static mut SockOwner> {
    let p = OWNER_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot of a per-CPU array; BPF programs do not
    // preempt each other on a CPU, and every user fills it before use.
    Some(unsafe { &mut *p })
}

/// Records `task` as the owner of `sk` unless it already is.
#[inline(always)]
pub fn learn(sk: u64, task: &TaskInfo) {
    // A connecting socket's owner known from connect() (a refused
    // connect's RST, handled in its owner's context) needs no insert.
    if owner_cache::tgid(sk) == Some(task.tgid) {
        return;
    }
    let Some(entry) = scratch() else { return };
    entry.owner.task = *task;
    // Called from the reset programs, whose combined stack 5.10 bounds at
    // 512 bytes: no exchange bookkeeping here (a socket changing owner
    // there is rare; its old aggregate keeps it counted until it closes).
    learn_entry(sk, entry, false);
}

/// Inserts `entry` (its task filled in) for `sk` unless that task already
/// owns it. The entry is built by the caller in place: the BPF stack is
/// 512 bytes.
#[inline(always)]
fn learn_entry(sk: u64, entry: &mut SockOwner, leave_old: bool) {
    if sk == 0 || entry.owner.task.tgid == 0 {
        return;
    }
    // Looked up first, not inserted with BPF_NOEXIST: an LRU update takes a
    // free node before it finds the key there, evicting a live entry when
    // the map is full, and an accepted socket is learned twice by its owner
    // (inside inet_csk_accept and at the syscall's exit).
    // SAFETY: the value is read before the map can change under us.
    if let Some(known) = unsafe { OWNERS.get(sk) } {
        if known.owner.task.tgid == entry.owner.task.tgid {
            return;
        }
        if leave_old {
            exchange::leave(&known.exch);
        }
    }
    // SAFETY: helper without arguments.
    entry.owner.learned_ns = unsafe { bpf_ktime_get_boot_ns() };
    // A new owner times its own exchanges from its first send or receive.
    entry.exch = SockExch::default();
    // The slot goes before the entry comes: a slot names only sockets
    // OWNERS does not know (owner_cache's invariant).
    owner_cache::take(sk);
    let _ = OWNERS.insert(sk, &*entry, 0);
}

/// The exchange state of `sk` when the current process is its known owner
/// (the common case of a send or receive: one lookup, no task reads); else
/// `None`, and the caller learns the owner.
#[inline(always)]
pub fn exch_if_current_owns(sk: u64) -> Option<&'static mut SockExch> {
    let p = OWNERS.get_ptr_mut(sk)?;
    // The upper half of pid_tgid is the thread-group id.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a live value of the owner map. Two threads of the owner
    // sending at once can at worst skew one exchange; an eviction meanwhile
    // leaves the element to RCU until this program returns.
    let e = unsafe { &mut *p };
    if e.owner.task.tgid != tgid {
        return None;
    }
    Some(&mut e.exch)
}

/// Records the current task as the process accepting from listener `sk`
/// (keyed by the listener's inode) unless it already is.
#[inline(always)]
pub fn learn_listener(sk: u64) {
    if sk == 0 {
        return;
    }
    let ino = sock_ino(sk);
    if ino == 0 {
        return;
    }
    let Some(entry) = scratch() else { return };
    let entry = &mut entry.owner;
    fill_current(&mut entry.task);
    // SAFETY: the value is read before the map can change under us.
    if let Some(known) = unsafe { LISTEN_OWNERS.get(ino) } {
        if known.task.tgid == entry.task.tgid {
            return;
        }
    }
    // SAFETY: helper without arguments.
    entry.learned_ns = unsafe { bpf_ktime_get_boot_ns() };
    let _ = LISTEN_OWNERS.insert(ino, &*entry, 0);
}

/// Forgets a destroyed socket: a connecting socket's cache slot, which
/// means OWNERS has no entry for it (owner_cache's invariant), or its
/// OWNERS entry.
#[inline(always)]
pub fn forget(sk: u64) {
    if owner_cache::take(sk) {
        return;
    }
    // SAFETY: read before the element is removed.
    if let Some(known) = unsafe { OWNERS.get(sk) } {
        exchange::leave(&known.exch);
    }
    let _ = OWNERS.remove(sk);
}

/// The owner of `sk` as far as the kernel side can tell, with how it was found:
/// the current task when it holds the socket lock (process context of a
/// socket user; never for listeners, whose lock accept() holds while softirqs
/// answer SYNs), else the owner map, else none.
/// Writes the owner into `out` and returns the `owner_source`.
#[inline(always)]
pub fn resolve(sk: u64, state: u8, current: &TaskInfo, out: &mut TaskInfo) -> u8 {
    if sk != 0 && state != TCP_LISTEN && is_fullsock(state) && sock_owned_by_user(sk) {
        learn(sk, current);
        *out = *current;
        return owner_source::LOCKED_CURRENT;
    }
    if sk != 0 {
        if owner_cache::copy(sk, out) {
            return owner_source::SOCKET_MAP;
        }
        // SAFETY: copied out immediately.
        if let Some(entry) = unsafe { OWNERS.get(sk) } {
            *out = entry.owner.task;
            return owner_source::SOCKET_MAP;
        }
    }
    *out = TaskInfo::default();
    owner_source::NONE
}

/// The owner's tgid as [`resolve`] would find it (0 none), without
/// learning or copying: what a counted reset needs for its storm key.
/// `lock_sk` is `sk` as the program got it, read with `M`.
#[inline(always)]
pub fn owner_tgid<M: KMem>(lock_sk: u64, sk: u64, state: u8) -> u32 {
    if sk == 0 {
        return 0;
    }
    if state != TCP_LISTEN && is_fullsock(state) && sock_owned_by_user_in::<M>(lock_sk) {
        return (bpf_get_current_pid_tgid() >> 32) as u32;
    }
    if let Some(tgid) = owner_cache::tgid(sk) {
        return tgid;
    }
    // SAFETY: copied out immediately.
    unsafe { OWNERS.get(sk) }.map_or(0, |e| e.owner.task.tgid)
}

/// Kernel-side filters: a port filter matches either end; pid and comm
/// filters only drop events whose owner the kernel knows to be someone else
/// (the rest go to userspace, which resolves and filters them).
#[inline(always)]
pub fn passes(lport: u16, rport: u16, owner: &TaskInfo) -> bool {
    let f = filter();
    if f.has_comm != 0 && owner.tgid != 0 && owner.comm != f.comm {
        return false;
    }
    passes_ports_pid(lport, rport, owner.tgid)
}

/// The port and pid filters of [`passes`] (the comm filter needs the
/// owner's name, which a counted reset does not read: userspace applies it
/// to the aggregated line).
#[inline(always)]
pub fn passes_ports_pid(lport: u16, rport: u16, owner_tgid: u32) -> bool {
    let f = filter();
    if f.n_ports > 0 {
        let mut hit = false;
        let mut i = 0;
        while i < tracer_common::MAX_FILTER {
            if (i as u32) < f.n_ports && (f.ports[i] == lport || f.ports[i] == rport) {
                hit = true;
            }
            i += 1;
        }
        if !hit {
            return false;
        }
    }
    if f.n_pids > 0 && owner_tgid != 0 {
        let mut hit = false;
        let mut i = 0;
        while i < tracer_common::MAX_FILTER {
            if (i as u32) < f.n_pids && f.pids[i] == owner_tgid {
                hit = true;
            }
            i += 1;
        }
        if !hit {
            return false;
        }
    }
    true
}

/// The owner of a socket entering SYN_SENT (connect(), in the owner's
/// context with the socket locked): into the owner cache when OWNERS does
/// not know the socket (a new socket, or one connecting again after a
/// failed connect), else as [`learn_current`] (owner_cache's invariant).
#[inline(always)]
pub fn learn_connecting(sk: u64) {
    if sk == 0 {
        return;
    }
    let Some(entry) = scratch() else { return };
    fill_current(&mut entry.owner.task);
    // SAFETY: a lookup whose value is not kept.
    if unsafe { OWNERS.get(sk) }.is_some() {
        learn_entry(sk, entry, true);
    } else {
        owner_cache::put(sk, &entry.owner.task);
    }
}

/// The owner of a socket being touched by the current task in process
/// context (send, receive, listen, accept): learn it.
#[inline(always)]
pub fn learn_current(sk: u64) {
    if sk == 0 {
        return;
    }
    let Some(entry) = scratch() else { return };
    fill_current(&mut entry.owner.task);
    learn_entry(sk, entry, true);
}
