//! Image references: `Reference::parse` never panics and round-trips through its printed form.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| rimg_fuzz::checks::reference(s));
