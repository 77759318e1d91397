//! Raw records shared by the kernel programs (`tracer-ebpf`) and userspace
//! (`tracer`). Every type is `#[repr(C)]`, has no implicit padding and a
//! size asserted at compile time, so both sides agree byte for byte.
//!
//! Userspace never transmutes kernel bytes into these types: `tracer::decode`
//! checks lengths and enum values and copies field by field.
#![no_std]

pub mod config;
pub mod errno;
pub mod exchange;
pub mod record;
pub mod socket_id;
pub mod storm;
pub mod task_file;

pub use config::*;
pub use record::*;
