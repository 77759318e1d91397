//! Owners of connecting sockets, learned without a map insert.
//!
//! connect() runs in the owner's context (`sock:inet_sock_set_state`,
//! CLOSE -> SYN_SENT; see `tcp_state.rs`), and the owner is needed later
//! only if the answer (a RST, say) is handled in softirq. Most connects
//! either fail at once (a refused connect: the socket is gone microseconds
//! later) or go on to send and receive, which moves the owner into
//! `OWNERS` with its exchange state (`owner::learn_current`). An LRU insert
//! and delete per connect (bucket locks, LRU list locks) was most of what
//! the programs cost in a refused-connect storm, so a connecting socket's
//! owner goes into `OWNER_CACHE` instead: a plain array indexed by a hash
//! of the socket address, written and read without locks (an array lookup
//! is inlined by the verifier).
//!
//! Integrity without locks: a writer clears the slot's socket, writes the
//! owner and a check word (a hash of socket and owner), then sets the
//! socket. A reader accepts a slot only when it names the socket and the
//! check matches what it read, so two CPUs writing one slot at once, or a
//! read during a write, give a miss, never another socket's owner. A miss
//! falls back to `OWNERS` and then to userspace, as an evicted entry always
//! has.
//!
//! One invariant keeps the two stores consistent: **a slot names a socket
//! only while `OWNERS` has no entry for it.** The cache is written only for
//! a socket `OWNERS` does not know (checked first, under the socket lock
//! connect() holds), and every insert into `OWNERS` clears the socket's
//! slot first (`owner::learn_entry`). So a lookup may trust the slot before
//! `OWNERS`, and the socket's destruction only clears the slot when it
//! names the socket, with no `OWNERS` delete (`forget`).
//!
//! Depends on no kernel function of its own.

use tracer_common::TaskInfo;

use crate::maps::{OWNER_CACHE, OWNER_CACHE_SLOTS, OwnerSlot, SK_NUMBER};

/// The slot of socket `sk` (a multiplicative hash of its address, which is
/// aligned: the low bits carry little), with the address as a plain number.
#[inline(always)]
fn slot_of(sk: u64) -> Option<(*mut OwnerSlot, u64)> {
    let sk = as_number(sk)?;
    let at = (sk.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as u32 & (OWNER_CACHE_SLOTS - 1);
    Some((OWNER_CACHE.get_ptr_mut(at)?, sk))
}

/// `sk` as a plain number. A BTF program's socket argument is a pointer to
/// the verifier, which allows no arithmetic on it but addition: stored in
/// this CPU's `SK_NUMBER` and read back, it is a number. A slot per nesting
/// level (as `RST_SCRATCH`): a program that interrupts this one on the CPU
/// takes the next slot and gives it back before this one resumes.
#[inline(always)]
fn as_number(sk: u64) -> Option<u64> {
    let p = SK_NUMBER.get_ptr_mut(0)?;
    // SAFETY: this CPU's value of a per-CPU array; `depth` is restored
    // before return, and a slot is used only at its own depth.
    unsafe {
        let n = &mut *p;
        let depth = core::ptr::read_volatile(&n.depth) as usize;
        let slot = n.slots.get_mut(depth)? as *mut u64;
        core::ptr::write_volatile(&mut n.depth, depth as u64 + 1);
        core::ptr::write_volatile(slot, sk);
        let number = core::ptr::read_volatile(slot);
        core::ptr::write_volatile(&mut n.depth, depth as u64);
        (number != 0).then_some(number)
    }
}

/// One step of the check word's mix.
#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    let x = (h ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 32)
}

/// 8-byte words of a `TaskInfo`.
const TASK_WORDS: usize = core::mem::size_of::<TaskInfo>() / 8;
const _: () = assert!(core::mem::size_of::<TaskInfo>() % 8 == 0);

/// The check word of `sk` owned by the `TaskInfo` at `task`, read from
/// wherever it lives, word by word (no copy on the 512-byte stack).
///
/// # Safety
/// `task` must point at readable, 8-byte aligned memory holding a
/// `TaskInfo` (a map value or a record); its words may change meanwhile
/// (the result then does not match).
#[inline(always)]
unsafe fn check_of(sk: u64, task: *const TaskInfo) -> u64 {
    let words = task as *const u64;
    let mut h = mix(0x6f77_6e65_7273_0001, sk);
    let mut i = 0;
    while i < TASK_WORDS {
        // SAFETY: the caller's; word `i` of the TaskInfo.
        h = mix(h, unsafe { core::ptr::read_volatile(words.add(i)) });
        i += 1;
    }
    h
}

/// Records `task` as the owner of `sk`.
#[inline(always)]
pub fn put(sk: u64, task: &TaskInfo) {
    let Some((slot, sk)) = slot_of(sk) else {
        return;
    };
    // SAFETY: a value of a plain array map, shared by every CPU: each word
    // is written with a volatile store, the socket last, and readers verify
    // the check word (see the module's note).
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).sk), 0);
        let from = task as *const TaskInfo as *const u64;
        let to = core::ptr::addr_of_mut!((*slot).task) as *mut u64;
        let mut i = 0;
        while i < TASK_WORDS {
            core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i)));
            i += 1;
        }
        let check = check_of(sk, task);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).check), check);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).sk), sk);
    }
}

/// The owner's tgid when `sk`'s slot names it and is whole.
#[inline(always)]
pub fn tgid(sk: u64) -> Option<u32> {
    let (slot, sk) = slot_of(sk)?;
    // SAFETY: as in `put`; the tgid returned is the one the check covered.
    unsafe {
        if core::ptr::read_volatile(core::ptr::addr_of!((*slot).sk)) != sk {
            return None;
        }
        let t = core::ptr::addr_of!((*slot).task);
        let tgid = core::ptr::read_volatile(core::ptr::addr_of!((*t).tgid));
        let check = check_of(sk, t);
        if core::ptr::read_volatile(core::ptr::addr_of!((*slot).check)) != check
            || core::ptr::read_volatile(core::ptr::addr_of!((*t).tgid)) != tgid
            || core::ptr::read_volatile(core::ptr::addr_of!((*slot).sk)) != sk
        {
            return None;
        }
        Some(tgid)
    }
}

/// Copies the owner of `sk` into `out` when its slot names it and is
/// whole; otherwise `out` may hold part of a copy (the caller overwrites
/// it). `out` is a record's or a scratch slot's: no copy on the stack.
#[inline(always)]
pub fn copy(sk: u64, out: &mut TaskInfo) -> bool {
    let Some((slot, sk)) = slot_of(sk) else {
        return false;
    };
    // SAFETY: as in `put`; the copy is checked against the check word read
    // after it, so a copy torn by a writer is refused.
    unsafe {
        if core::ptr::read_volatile(core::ptr::addr_of!((*slot).sk)) != sk {
            return false;
        }
        let from = core::ptr::addr_of!((*slot).task) as *const u64;
        let to = out as *mut TaskInfo as *mut u64;
        let mut i = 0;
        while i < TASK_WORDS {
            core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i)));
            i += 1;
        }
        let check = check_of(sk, out);
        core::ptr::read_volatile(core::ptr::addr_of!((*slot).check)) == check
            && core::ptr::read_volatile(core::ptr::addr_of!((*slot).sk)) == sk
    }
}

/// Clears `sk`'s slot if it names `sk`; whether it did. A socket whose
/// slot named it has no `OWNERS` entry (the module's invariant).
#[inline(always)]
pub fn take(sk: u64) -> bool {
    let Some((slot, sk)) = slot_of(sk) else {
        return false;
    };
    // SAFETY: as in `put`. A writer racing this clear leaves a slot that
    // fails its check (a miss).
    unsafe {
        if core::ptr::read_volatile(core::ptr::addr_of!((*slot).sk)) != sk {
            return false;
        }
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*slot).sk), 0);
    }
    true
}
