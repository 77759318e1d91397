use which::which;

/// Building this crate has an undeclared dependency on the `bpf-linker`
/// binary (installed by `cargo xtask setup`): rebuild when it changes.
fn main() {
    let bpf_linker = which("bpf-linker").unwrap_or_else(|err| {
        panic!("bpf-linker not found ({err}); run `cargo xtask setup` first")
    });
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
