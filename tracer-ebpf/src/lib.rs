#![no_std]
// The programs live in the `tracer` binary target (src/main.rs). This empty
// library lets tracer/build.rs declare a build dependency on this crate, so
// cargo rebuilds userspace when it changes.
