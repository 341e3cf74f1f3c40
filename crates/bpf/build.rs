//! Builds the kernel programs of `crates/ebpf` for the BPF target with the nightly
//! toolchain and bpf-linker (`cargo xtask setup` installs both), into OUT_DIR.
use std::path::PathBuf;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .join("../ebpf")
        .canonicalize()
        .context("crates/ebpf")?;
    let root = root.to_str().context("crates/ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "ricochet-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context(
        "building the eBPF programs failed; `cargo xtask setup` installs what they need \
         (nightly rust-src, bpf-linker on LLVM 22)",
    )
}
