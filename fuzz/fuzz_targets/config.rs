//! Image configs: the OCI config parser and the `rootfs.diff_ids` digests that become store paths.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rimg_fuzz::checks::config(data));
