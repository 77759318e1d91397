//! Kernel programs of `tracer`. One file per hook family; each names the
//! kernel function or tracepoint it depends on. The programs record facts
//! (which socket, which task, what state, what reason) into the ring buffer
//! and never format anything.
#![no_std]
#![no_main]
// atomic_xadd for the drop counter and storm counts (the eBPF crate builds on nightly).
#![allow(internal_features)]
#![feature(core_intrinsics)]
#![allow(static_mut_refs)]

mod accept;
mod exchange;
mod kmem;
mod kread;
mod maps;
mod owner;
mod owner_cache;
mod sock_io;
mod storm;
mod task_files;
mod tcp_reply_reset;
mod tcp_reset;
mod tcp_state;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
