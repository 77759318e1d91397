use which::which;

/// Building this crate has an undeclared dependency on the `bpf-linker`
/// binary (installed by `cargo xtask setup`): rebuild when it changes.
fn main() {
    let bpf_linker = which("bpf-linker").unwrap_or_else(|err| {
        panic!("bpf-linker not found ({err}); run `cargo xtask setup` first")
    });
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
    // bpf-linker passes --bpf-expand-memcpy-in-order to LLVM by default,
    // which turns off LLVM's inline expansion of every memory intrinsic:
    // each struct zeroing or copy then became a call to compiler-builtins'
    // byte-at-a-time memset/memmove (a 129-byte buffer cost 129 loop
    // iterations in every reset program). Without it, constant-size ones
    // become a few 8-byte loads and stores.
    println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
}
