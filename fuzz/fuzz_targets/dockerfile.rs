//! Dockerfiles: the parser and the word expansion/splitting rules never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| rimg_fuzz::checks::dockerfile(s));
