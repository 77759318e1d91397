//! How the programs read kernel memory at the offsets of `maps::offsets()`
//! (from the running kernel's BTF): [`read_at`] and [`Probe`] with
//! `bpf_probe_read_kernel`, any pointer; [`Btf`] with direct loads, for
//! pointers the verifier knows by their BTF type. Depends on no kernel
//! function; `kread.rs` describes tasks, sockets and packets with them.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use tracer_common::OFFSET_NONE;

/// Reads a `T` at `base + off`; `None` when the offset is unknown on this
/// kernel, the base is NULL, or the read faults.
#[inline(always)]
pub fn read_at<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == OFFSET_NONE {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies from any kernel address and returns
    // an error instead of faulting; `T` is a plain integer or byte array.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// How a program reads kernel structures at the offsets of `offsets()`.
/// [`Probe`] works on any pointer; [`Btf`] only on pointers the verifier
/// knows by their BTF type (the arguments of BTF tracepoints and fentry
/// programs, and the struct pointers read through them).
pub trait KMem {
    /// What [`KMem::load`] fills.
    type View<const W: usize>: Fields;
    /// The `T` at `base + off`; `None` when the offset is unknown on this
    /// kernel, the base is NULL, or the read faults.
    fn read<T: Copy>(base: u64, off: u32) -> Option<T>;
    /// A view of nothing, for [`KMem::load`].
    fn empty<const W: usize>() -> Self::View<W>;
    /// Makes `view` the fields of the structure at `base` from `start` to
    /// `start + W * 8` (the rest are read one by one). In place: a view
    /// returned by value was copied on the BPF stack, and 5.10 to 6.12 bound
    /// a call chain's frames at 512 bytes together.
    fn load<const W: usize>(view: &mut Self::View<W>, base: u64, start: u32);
}

/// Fields of one structure, by offset.
pub trait Fields {
    fn get<T: Copy>(&self, off: u32) -> Option<T>;
}

/// `bpf_probe_read_kernel`, a helper call per read; a view is one read of
/// the whole span ([`Span`]).
pub struct Probe;

impl KMem for Probe {
    type View<const W: usize> = Span<W>;

    #[inline(always)]
    fn read<T: Copy>(base: u64, off: u32) -> Option<T> {
        read_at(base, off)
    }

    #[inline(always)]
    fn empty<const W: usize>() -> Span<W> {
        Span::empty()
    }

    #[inline(always)]
    fn load<const W: usize>(view: &mut Span<W>, base: u64, start: u32) {
        view.load(base, start);
    }
}

/// Direct loads, which the verifier checks against the kernel's BTF (the
/// offset must be a constant of the program: `offsets()` is frozen
/// read-only data) and the JIT turns into loads that yield 0 instead of
/// faulting (`BPF_PROBE_MEM`). An instruction instead of a helper call.
pub struct Btf;

/// A structure read field by field with direct loads ([`Btf`]).
pub struct Direct(u64);

impl KMem for Btf {
    type View<const W: usize> = Direct;

    #[inline(always)]
    fn read<T: Copy>(base: u64, off: u32) -> Option<T> {
        if base == 0 || off == OFFSET_NONE {
            return None;
        }
        // SAFETY: `base` is a pointer of a BTF type known to the verifier,
        // which accepts the load only at a member of that type; a load that
        // faults yields zeroes. Volatile: one load per field, never merged
        // across members (the verifier refuses a load spanning two).
        Some(unsafe { core::ptr::read_volatile((base + off as u64) as *const T) })
    }

    #[inline(always)]
    fn empty<const W: usize>() -> Direct {
        Direct(0)
    }

    #[inline(always)]
    fn load<const W: usize>(view: &mut Direct, base: u64, _start: u32) {
        view.0 = base;
    }
}

impl Fields for Direct {
    #[inline(always)]
    fn get<T: Copy>(&self, off: u32) -> Option<T> {
        Btf::read(self.0, off)
    }
}

/// `W * 8` bytes of kernel memory from `base + start`, read with one probe
/// read (a power of two: offsets are masked with it for the verifier), then
/// taken apart. Where the offsets of a structure's fields are constants of
/// the loaded program (`offsets()`), the verifier sees every read from the
/// buffer at a constant stack offset (5.10 refuses variable ones).
pub struct Span<const W: usize> {
    buf: [u64; W],
    base: u64,
    start: u32,
    ok: bool,
}

impl<const W: usize> Fields for Span<W> {
    #[inline(always)]
    fn get<T: Copy>(&self, off: u32) -> Option<T> {
        Span::get(self, off)
    }
}

impl<const W: usize> Span<W> {
    const BYTES: usize = W * 8;

    #[inline(always)]
    pub(crate) fn empty() -> Span<W> {
        Span {
            buf: [0; W],
            base: 0,
            start: 0,
            ok: false,
        }
    }

    /// Reads `BYTES` at `base + start` into the buffer.
    #[inline(always)]
    pub(crate) fn load(&mut self, base: u64, start: u32) {
        self.base = base;
        self.start = start;
        self.ok = false;
        if base != 0 && start != OFFSET_NONE {
            // SAFETY: the helper copies `BYTES` from any kernel address into
            // our buffer of that size, returning an error instead of faulting.
            self.ok = unsafe {
                generated::bpf_probe_read_kernel(
                    self.buf.as_mut_ptr().cast(),
                    Self::BYTES as u32,
                    (base + start as u64) as *const core::ffi::c_void,
                )
            } == 0;
        }
    }

    /// The `T` at `off` of the base: from the buffer when it holds it, else
    /// read from the kernel.
    #[inline(always)]
    pub(crate) fn get<T: Copy>(&self, off: u32) -> Option<T> {
        let size = core::mem::size_of::<T>();
        if self.ok && off != OFFSET_NONE && off >= self.start {
            let rel = (off - self.start) as usize;
            if rel + size <= Self::BYTES {
                let at = rel & (Self::BYTES - 1);
                if at + size <= Self::BYTES {
                    // SAFETY: `at + size` is within the initialised buffer;
                    // read_unaligned copes with any alignment, and `T` is a
                    // plain integer or byte array.
                    return Some(unsafe {
                        core::ptr::read_unaligned(
                            (self.buf.as_ptr() as *const u8).add(at) as *const T
                        )
                    });
                }
            }
        }
        read_at(self.base, off)
    }
}
