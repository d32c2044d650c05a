#![no_main]
//! `cargo +nightly fuzz run image_file`: see tessera::fuzzing::image_file.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tessera::fuzzing::image_file(data);
});
