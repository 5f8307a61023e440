//! `WWW-Authenticate` challenges: one header value per input line.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rimg_fuzz::checks::www_authenticate(data));
