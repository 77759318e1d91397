//! Request/response exchange timing, aggregated in the kernel per
//! (process, endpoint): no record per exchange, no protocol parsing.
//!
//! An exchange on a socket is the time from the first byte sent after a
//! receive (or from the first send ever seen) to the first byte received
//! after it: for a client's connection, request -> first reply byte. For a
//! connection accepted from a listener the other way round: request read ->
//! first response byte written.

/// [`ExchKey::dir`]: an outbound connection (this process connected):
/// send -> first reply byte; keyed by the remote endpoint.
pub const DIR_UPSTREAM: u8 = 1;
/// [`ExchKey::dir`]: a connection of one of this host's listeners: request
/// read -> first response byte written; keyed by the local port.
pub const DIR_SERVED: u8 = 2;

/// Whether a socket whose last I/O was `last` ([`LAST_SENT`] or
/// [`LAST_RECEIVED`]) has a request outstanding: a client's connection
/// after a send, a listener's connection after a receive.
#[inline(always)]
pub fn outstanding(dir: u8, last: u32) -> bool {
    (dir == DIR_UPSTREAM && last == LAST_SENT) || (dir == DIR_SERVED && last == LAST_RECEIVED)
}

/// Histogram buckets: four per power of two of microseconds, up to 2^32 µs.
pub const EXCH_BUCKETS: usize = 128;
const SUB: u32 = 4;

/// Bucket of a duration in µs: `4 * floor(log2 us) + the next two bits`.
#[inline(always)]
pub fn bucket_of(us: u64) -> usize {
    let us = us | 1;
    let e = 63 - us.leading_zeros();
    let sub = if e >= 2 {
        ((us >> (e - 2)) & 3) as u32
    } else {
        // 1, 2 and 3 µs: the sub-bucket is the value's low bits.
        ((us << (2 - e)) & 3) as u32
    };
    let i = (e * SUB + sub) as usize;
    if i >= EXCH_BUCKETS {
        EXCH_BUCKETS - 1
    } else {
        i
    }
}

/// Lower bound in µs of a bucket (inverse of [`bucket_of`]).
pub fn bucket_lower_us(i: usize) -> f64 {
    let e = i as u32 / SUB;
    let sub = u64::from(i as u32 % SUB);
    let base = (1u64 << e.min(63)) as f64;
    base * (1.0 + sub as f64 / f64::from(SUB))
}

/// Kernel-side exchange state of one socket, kept beside its owner in the
/// owner map ([`crate::SockOwner`]): one lookup per send or receive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockExch {
    /// `bpf_ktime_get_boot_ns()` when the current direction began.
    pub since_ns: u64,
    /// [`LAST_SENT`]: a request may be outstanding; [`LAST_RECEIVED`];
    /// 0 until the owner's first send or receive.
    pub last: u32,
    pub _pad: u32,
    /// The aggregate this socket's exchanges go to, fixed at the owner's
    /// first send or receive (its `dir` says which kind it times; 0: not
    /// yet).
    pub key: ExchKey,
}

/// [`SockExch::last`] values.
pub const LAST_SENT: u32 = 1;
pub const LAST_RECEIVED: u32 = 2;

/// Key of the exchange aggregate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExchKey {
    /// The process (thread-group id) that made the exchange.
    pub tgid: u32,
    pub netns: u32,
    /// AF_INET / AF_INET6.
    pub family: u16,
    /// Remote port ([`DIR_UPSTREAM`]) or local port ([`DIR_SERVED`]).
    pub port: u16,
    pub dir: u8,
    pub _pad: [u8; 3],
    /// Remote address ([`DIR_UPSTREAM`], network order, 4 bytes for
    /// AF_INET); zero for [`DIR_SERVED`].
    pub addr: [u8; 16],
}

/// Value of the exchange aggregate: one per key and CPU (a per-CPU map, no
/// atomics, no shared cache line); userspace adds the CPUs up.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExchAgg {
    /// Exchanges completed.
    pub count: u64,
    /// Sum of their durations, ns.
    pub busy_ns: u64,
    /// Sockets keyed here (+1 at a socket's first timed send or receive,
    /// -1 when it is destroyed or changes owner), as a wrapping per-CPU
    /// difference: only the sum over CPUs, as `i64`, means anything.
    pub sockets: u64,
    /// Requests open now (+1 when one starts, -1 when it ends or its
    /// socket goes), a wrapping per-CPU difference like `sockets`.
    pub open: u64,
    /// Sum of the open requests' start times (`bpf_ktime_get_boot_ns`),
    /// wrapping: `open * t - open_since` (wrapping, over all CPUs) is the
    /// time the requests open at `t` have been open, exactly.
    pub open_since: u64,
    /// Their durations, by [`bucket_of`] their µs.
    pub buckets: [u32; EXCH_BUCKETS],
}

impl Default for ExchAgg {
    fn default() -> Self {
        ExchAgg {
            count: 0,
            busy_ns: 0,
            sockets: 0,
            open: 0,
            open_since: 0,
            buckets: [0; EXCH_BUCKETS],
        }
    }
}

/// Key of the listening-port set userspace keeps in the kernel: a socket
/// whose local port is a listener's in its namespace was accepted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenPortKey {
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
}

const _: () = {
    assert!(core::mem::size_of::<SockExch>() == 48);
    assert!(core::mem::size_of::<ExchKey>() == 32);
    assert!(core::mem::size_of::<ExchAgg>() == 40 + 4 * EXCH_BUCKETS);
    assert!(core::mem::size_of::<ListenPortKey>() == 8);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers and byte arrays only, no implicit padding
    // (sizes asserted above); any bit pattern is valid.
    unsafe impl aya::Pod for super::ExchKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExchAgg {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenPortKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bracket_their_values() {
        for us in [
            0u64,
            1,
            2,
            3,
            4,
            5,
            7,
            8,
            100,
            1000,
            300_000,
            299_999,
            1 << 31,
        ] {
            let i = bucket_of(us);
            assert!(bucket_lower_us(i) <= (us | 1) as f64, "{us} in {i}");
            assert!(bucket_lower_us(i + 1) > us as f64, "{us} in {i}");
        }
        assert_eq!(bucket_of(300_000), 72);
        assert_eq!(bucket_lower_us(72), 262_144.0);
        assert_eq!(bucket_lower_us(73), 327_680.0);
        assert_eq!(bucket_of(u64::MAX), EXCH_BUCKETS - 1);
        // Monotonic.
        let mut last = 0;
        for us in 0..5000u64 {
            let i = bucket_of(us);
            assert!(i >= last);
            last = i;
        }
    }
}
