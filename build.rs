//! Builds `init/rimg-init.rs`, the container init that `rimg run --init` embeds and runs from a sealed
//! memfd (see that file for why it is a program of its own): plain `rustc`, no crates, statically linked so
//! it runs in any image.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "init/rimg-init.rs";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("rimg-init");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let status = Command::new(rustc)
        .args(["--edition", "2021", "--crate-type", "bin", "--crate-name", "rimg_init", "--target", &target])
        .args(["-C", "opt-level=s", "-C", "panic=abort", "-C", "strip=symbols", "-C", "codegen-units=1"])
        .args(["-C", "target-feature=+crt-static", "-D", "warnings", "-o"])
        .arg(&out)
        .arg(src)
        // A build under cargo-fuzz or coverage must not instrument the init: its flags are not ours.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("run rustc for init/rimg-init.rs");
    assert!(status.success(), "building {src} failed");
}
