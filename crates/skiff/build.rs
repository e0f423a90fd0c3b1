//! Link settings of the `skiff` binary.
//!
//! - Position-dependent (see docs/adr/0006): every container's shim is a process of this
//!   binary, and a position-independent one relocates 1.3 MB of `.data.rel.ro` at load time
//!   into private memory in each process.
//! - The functions an idle node agent runs are laid out together at the start of `.text`
//!   (`hot-code.txt`, lld's `--symbol-ordering-file`; see docs/adr/0010): the kernel maps
//!   64 KiB of code around every code page a process touches, so an agent whose few hundred
//!   idle-loop functions were scattered over the 100 MB of code kept 15 MB of it resident.
//!   Names the build no longer has are skipped without a warning; `scripts/hot-code.sh`
//!   regenerates the list.

fn main() {
    println!("cargo:rerun-if-changed=hot-code.txt");
    println!("cargo:rerun-if-env-changed=SKIFF_NO_CODE_ORDER");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    println!("cargo:rustc-link-arg-bin=skiff=-no-pie");
    // Rust links x86_64 Linux binaries with its own lld (since 1.90); the ordering is an lld
    // option. Another linker chosen through RUSTFLAGS, or SKIFF_NO_CODE_ORDER, goes without.
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let other_linker = flags.contains("fuse-ld") || flags.contains("linker");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-linux-gnu" && !other_linker && std::env::var_os("SKIFF_NO_CODE_ORDER").is_none() {
        let list = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("hot-code.txt");
        println!(
            "cargo:rustc-link-arg-bin=skiff=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bin=skiff=-Wl,--no-warn-symbol-ordering");
    }
}
