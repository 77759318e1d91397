//! RST storms counted in the kernel: when one key (network namespace, the
//! service's port, reason, owner, direction) repeats beyond a per-second
//! threshold, the reset programs count it in a per-CPU map instead of
//! writing one ring-buffer record per RST; userspace reads the totals once
//! a second and writes one line per key with `count` and a sample of the
//! endpoints that vary (the peers of a local service, or this host's own
//! ends of connections it made to one remote port).

use crate::RstRecord;

/// Endpoints kept per key and CPU (the most recent ones counted).
pub const STORM_SAMPLES: usize = 4;

/// Key of the storm map: what one aggregated line stands for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RstStormKey {
    /// Inode of the socket's (or the packet's) network namespace.
    pub netns: u32,
    /// Raw `enum sk_rst_reason` value, or `REASON_NONE`.
    pub reason: u32,
    /// The owner the kernel side knows (`RstRecord::owner.tgid`), 0 none.
    pub owner_tgid: u32,
    /// The port the key names, host order: the local one, or the remote
    /// one when `by_remote` is set.
    pub port: u16,
    /// `kind::RST_SENT` or `kind::RST_RECEIVED`.
    pub kind: u8,
    /// 1 when the key names the remote port: a connection this host made
    /// (its socket in SYN_SENT, or a local port no listener of its
    /// namespace has), whose own local port is a new one each time; the
    /// samples are then local endpoints. 0: the local port (a service, a
    /// closed port a packet sought); the samples are remote endpoints.
    pub by_remote: u8,
}

/// One endpoint of a counted reset: its remote end, or its local end when
/// the key names the remote port (`RstStormKey::by_remote`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StormEndpoint {
    /// 4 bytes for AF_INET, 16 for AF_INET6, network order.
    pub addr: [u8; 16],
    /// Host order.
    pub port: u16,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
}

/// Per-CPU value of the storm map: only keys that went past the threshold
/// on some CPU have an entry (the per-second rate of every key is tracked
/// apart, in a table the map's LRU never sees).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RstStormAgg {
    /// Resets counted here instead of recorded: a running total, never
    /// reset (userspace takes differences; the LRU bounds the map).
    pub count: u64,
    /// `bpf_ktime_get_boot_ns()` of the latest counted reset.
    pub last_ns: u64,
    /// Ring of endpoints (remote, or local when the key is `by_remote`):
    /// counted reset number `n` (from 0) wrote slot `n % STORM_SAMPLES`.
    pub samples: [StormEndpoint; STORM_SAMPLES],
    /// The first counted reset of this CPU, fully described (valid when
    /// `count > 0` and `first.header.kind` is the key's kind).
    pub first: RstRecord,
}

const _: () = {
    assert!(core::mem::size_of::<RstStormKey>() == 16);
    assert!(core::mem::size_of::<StormEndpoint>() == 20);
    assert!(core::mem::size_of::<RstStormAgg>() == 16 + 80 + 184);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers and byte arrays only, no implicit padding
    // (sizes asserted above); any bit pattern is valid.
    unsafe impl aya::Pod for super::RstStormKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RstStormAgg {}
}
