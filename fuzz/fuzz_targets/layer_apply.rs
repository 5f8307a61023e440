//! Layer blobs as raw bytes (tar, or gzip/zstd of a tar), applied into a directory inside a watched
//! sentinel tree: errors are fine, panics and any change outside the layer directory are bugs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rimg_fuzz::checks::layer_tar(data));
