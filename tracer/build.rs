use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds the kernel programs (`tracer-ebpf`) with the nightly toolchain and
/// bpf-linker, and leaves the object in OUT_DIR for `include_bytes_aligned!`.
/// `AYA_BUILD_SKIP=1` skips it (tools that only need the userspace code).
fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata_package("tracer-ebpf")?;
    aya_build::build_ebpf([metadata], Toolchain::default())
}

fn cargo_metadata_package(name: &'static str) -> anyhow::Result<Package<'static>> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("no parent of {manifest_dir}"))?
        .join(name);
    let root_dir: &'static str = Box::leak(root.to_string_lossy().into_owned().into_boxed_str());
    Ok(Package {
        name,
        root_dir,
        ..Default::default()
    })
}
