//! `TRACER_TEST_TIME_SCALE`: how much slower than this host the machine
//! running the tests is (e.g. 6 inside an emulated VM, where every BPF load
//! and packet takes longer), 1 by default. Included by `common`;
//! `ecosystem_common` uses it from there (a file included by both would be
//! compiled twice into the tests that use both: clippy's `duplicate_mod`).

/// The factor, at least 1.
pub fn time_scale() -> u32 {
    std::env::var("TRACER_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}
