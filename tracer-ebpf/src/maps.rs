//! Maps and the globals userspace sets before load.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    AcceptFailAgg, AcceptFailKey, Filter, KernelOffsets, OwnerEntry, SockInfo, SockOwner, TaskInfo,
    TracepointLayouts,
    exchange::{ExchAgg, ExchKey, ListenPortKey},
    storm::{RstStormAgg, RstStormKey},
};

/// Every record goes through this ring buffer. Userspace sets its size
/// (`--ring-buffer-kib`) before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Records the ring buffer refused (full), per CPU; index 0.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Socket (`struct sock *`) -> the process that owns it, learned where the
/// kernel runs in the owner's context, and the socket's exchange state
/// (`exchange.rs`). Bounded (LRU); entries leave when the socket is
/// destroyed (`tcp_state.rs`).
#[map]
pub static OWNERS: LruHashMap<u64, SockOwner> =
    LruHashMap::with_max_entries(65536, BPF_F_NO_COMMON_LRU);

/// Socket -> the process that connected it (`owner_cache.rs`): a plain
/// array indexed by a hash of the socket address, written and read without
/// locks, each slot verified by a check word. 64 bytes a slot, 2 MiB in
/// all, whatever the CPUs.
#[map]
pub static OWNER_CACHE: Array<OwnerSlot> = Array::with_max_entries(OWNER_CACHE_SLOTS, 0);

/// Per CPU, room to turn a BTF socket pointer into a number
/// (`owner_cache::as_number`), a slot per nesting level.
#[map]
pub static SK_NUMBER: PerCpuArray<SkNumber> = PerCpuArray::with_max_entries(1, 0);

/// `SK_NUMBER`'s value.
#[repr(C)]
pub struct SkNumber {
    /// Users running on this CPU now.
    pub depth: u64,
    pub slots: [u64; 4],
}

/// Slots of `OWNER_CACHE` (a power of two).
pub const OWNER_CACHE_SLOTS: u32 = 32768;

/// A socket (0: empty, or being written), its owner, and the check word
/// over both (`owner_cache::check_of`).
#[repr(C)]
pub struct OwnerSlot {
    pub sk: u64,
    pub task: TaskInfo,
    pub check: u64,
}

const _: () = assert!(core::mem::size_of::<OwnerSlot>() == 64);
const _: () = assert!(OWNER_CACHE_SLOTS.is_power_of_two());

/// `BPF_F_NO_COMMON_LRU`: an LRU list per CPU, so inserts on two CPUs do not
/// take one lock (a connect storm learns an owner per connection). The
/// kernel splits `max_entries` between the possible CPUs: each CPU evicts
/// only what it inserted, once it holds its share.
pub const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// RST storms (`storm.rs`), per key and CPU: resets counted instead of
/// recorded, a sample of their remote endpoints, the first one's details.
/// Userspace reads the totals every second and never deletes (a delete
/// could lose a concurrent increment); the LRU bounds it. Its keys are
/// shared by all CPUs (the common LRU): a storm's keys are inserted by the
/// few CPUs that take the packets' softirqs, and a list per CPU would give
/// each of those only its share of the keys (64 of 4,096 on 64 CPUs);
/// inserts are rare (a key's first counted reset), and the counted path's
/// lookup takes no lock either way. Userspace sizes it by the possible CPUs
/// (tracer/src/map_sizes.rs).
#[map]
pub static RST_STORMS: LruPerCpuHashMap<RstStormKey, RstStormAgg> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// Per CPU: the inode numbers of the network namespaces seen last
/// (`kread::netns_inum`), a few slots indexed by a hash of the namespace's
/// cookie.
#[map]
pub static NETNS_CACHE: PerCpuArray<NetnsSlot> = PerCpuArray::with_max_entries(NETNS_SLOTS, 0);

/// Slots of `NETNS_CACHE` per CPU (a power of two).
pub const NETNS_SLOTS: u32 = 8;

/// A namespace's cookie (0: an empty slot, or one being written) and its
/// inode number.
#[repr(C)]
pub struct NetnsSlot {
    pub cookie: u64,
    pub inum: u32,
    pub _pad: u32,
}

/// Room to describe a reset before it is counted or recorded (off the
/// 512-byte BPF stack), one slot per nesting level: a softirq's reset
/// program may interrupt a process-context one on the same CPU.
#[map]
pub static RST_SCRATCH: PerCpuArray<RstScratch> = PerCpuArray::with_max_entries(1, 0);

/// Nesting levels of the reset programs on one CPU that get a slot.
pub const RST_NESTING: usize = 3;

pub struct RstScratch {
    /// Reset programs running on this CPU now (each restores it on exit,
    /// so an interruption between its load and store is harmless).
    pub depth: u32,
    pub socks: [SockInfo; RST_NESTING],
    /// The storm key of each slot's reset (a map key may live in a map
    /// value: 16 bytes less on the stack, which 5.10's verifier counts
    /// across the program and the subprograms it calls).
    pub keys: [RstStormKey; RST_NESTING],
    /// The counted path's clock (`storm::TickClock`).
    pub clock: crate::storm::TickClock,
}

/// Per CPU, the rate of the reset keys seen lately (`storm.rs`): a table
/// indexed by a hash of the key, one key a slot; a key that finds its slot
/// taken takes it over (it starts its second afresh: a few more records,
/// never a lost count). No map insert per new key, so a storm of one-off
/// keys (every reset from another local port) costs no LRU churn.
#[map]
pub static RST_RATES: PerCpuArray<RstRate> = PerCpuArray::with_max_entries(RST_RATE_SLOTS, 0);

/// Slots of RST_RATES (a power of two).
pub const RST_RATE_SLOTS: u32 = 1024;

pub struct RstRate {
    pub key: RstStormKey,
    /// The second (boot-time ns / 10^9) `passed` belongs to.
    pub window_sec: u64,
    /// Resets of `key` this CPU let through as records in that second.
    pub passed: u32,
    pub _pad: u32,
}

/// Staging area for a new RST_STORMS value (too big for the BPF stack).
#[map]
pub static STORM_SCRATCH: PerCpuArray<RstStormAgg> = PerCpuArray::with_max_entries(1, 0);

/// Listening socket inode -> the process that last accepted a connection
/// from it: the one draining its queue. A listener's creator is not always
/// that process (a socket passed over a unix socket, systemd socket
/// activation, a pre-fork master). Userspace looks it up by the inode a
/// listener poll reports. Bounded (LRU).
#[map]
pub static LISTEN_OWNERS: LruHashMap<u64, OwnerEntry> = LruHashMap::with_max_entries(16384, 0);

/// pid_tgid -> fd passed to accept()/accept4(), between syscall entry and exit.
#[map]
pub static ACCEPT_ARGS: HashMap<u64, i32> = HashMap::with_max_entries(16384, 0);

/// Accept failures counted in the kernel, per process, listener and errno
/// (per CPU, so no atomics): a server failing millions of accepts a second
/// costs a map update each, not a ring-buffer record. Userspace reads the
/// totals every second; the LRU bounds it (1,024 keys: a per-CPU map is
/// preallocated, a value per key on every CPU; 10,240 keys took some 10 ms
/// of start-up here and ten times the kernel memory). Userspace sizes it by
/// the possible CPUs (tracer/src/map_sizes.rs).
#[map]
pub static ACCEPT_FAILS: LruPerCpuHashMap<AcceptFailKey, AcceptFailAgg> =
    LruPerCpuHashMap::with_max_entries(1024, 0);

/// Staging area for a new ACCEPT_FAILS value (too big for the BPF stack).
#[map]
pub static ACCEPT_SCRATCH: PerCpuArray<AcceptFailAgg> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room to build an owner entry before inserting it: off the
/// 512-byte BPF stack, which 5.10's verifier counts across the whole call
/// chain of the reset programs.
#[map]
pub static OWNER_SCRATCH: PerCpuArray<SockOwner> = PerCpuArray::with_max_entries(1, 0);

/// Exchange durations per (process, endpoint, direction), per CPU (no
/// atomics, no cache line shared between CPUs serving one endpoint);
/// userspace adds the CPUs up and never deletes (the LRU bounds the map).
/// Userspace sizes it by the possible CPUs (tracer/src/map_sizes.rs).
#[map]
pub static EXCHANGES: LruPerCpuHashMap<ExchKey, ExchAgg> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// A zeroed `ExchAgg` to insert from (too big for the BPF stack); never
/// written.
#[map]
pub static EXCH_ZERO: PerCpuArray<ExchAgg> = PerCpuArray::with_max_entries(1, 0);

/// (netns, port) of this host's listeners, written by userspace from its
/// snapshots and by `tcp_state.rs` as a listener starts: a socket on such a
/// port was accepted, not connected (exchange direction, storm keys).
#[map]
pub static LISTEN_PORTS: HashMap<ListenPortKey, u8> = HashMap::with_max_entries(16384, 0);

#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets::EMPTY;

#[unsafe(no_mangle)]
static LAYOUTS: TracepointLayouts = TracepointLayouts::EMPTY;

#[unsafe(no_mangle)]
static FILTER: Filter = Filter::EMPTY;

/// Struct member offsets of the running kernel (read from BTF by userspace).
#[inline(always)]
pub fn offsets() -> &'static KernelOffsets {
    // SAFETY: a read-only global rewritten by the loader before the program is
    // loaded; volatile so the compiler cannot fold the EMPTY initialiser in.
    unsafe { &*core::ptr::read_volatile(&&OFFSETS) }
}

/// Classic tracepoint field offsets (from tracefs format files).
#[inline(always)]
pub fn layouts() -> &'static TracepointLayouts {
    // SAFETY: as `offsets`.
    unsafe { &*core::ptr::read_volatile(&&LAYOUTS) }
}

#[inline(always)]
pub fn filter() -> &'static Filter {
    // SAFETY: as `offsets`.
    unsafe { &*core::ptr::read_volatile(&&FILTER) }
}

/// Bytes waiting in the ring buffer above which a submit wakes the reader.
/// Below it the reader is not woken per record (each wake-up is an
/// irq_work and a context switch): it drains on its own 10 ms timer.
const WAKEUP_BYTES: u64 = 256 * 1024;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Flags for `submit`: wake the reader only when records pile up.
#[inline(always)]
pub fn submit_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Counts one record the ring buffer could not take.
#[inline(always)]
pub fn count_drop() {
    if let Some(counter) = DROPS.get_ptr_mut(0) {
        // SAFETY: a valid, aligned u64 in this CPU's slot of the map. The add
        // is atomic (BPF_ATOMIC add; core's AtomicU64 has no fetch_add on the
        // BPF target) because another of our programs, a softirq on this
        // CPU, may interrupt this one between a load and a store.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                counter, 1,
            )
        };
    }
}
