use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds the kernel programs (`tracer-ebpf`) with the nightly toolchain and
/// bpf-linker, and leaves the object in OUT_DIR for `include_bytes_aligned!`.
/// `AYA_BUILD_SKIP=1` skips it (tools that only need the userspace code): an
/// empty object is left instead, which the binary refuses at run time.
fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("no parent of {manifest_dir}"))?
        .join("tracer-ebpf");
    let root_dir = root.to_string_lossy().into_owned();
    aya_build::build_ebpf(
        [Package {
            name: "tracer-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR not set")?)
        .join("tracer");
    if !out.exists() {
        std::fs::write(&out, []).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
