//! Manifests and indexes: classification (media-type confusion), index entries, platform selection, and
//! the OCI manifest/index parsers, on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rimg_fuzz::checks::manifest(data));
