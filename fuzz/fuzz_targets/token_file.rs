#![no_main]
//! `cargo +nightly fuzz run token_file`: see tessera::fuzzing::token_file.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tessera::fuzzing::token_file(data);
});
