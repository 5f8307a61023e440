//! Shared code of rimg's fuzz targets. The checks themselves are in [`checks`], which rimg's
//! `tests/fuzz_regressions.rs` also compiles, so fuzzer findings replay under `cargo test`.

pub mod checks;
