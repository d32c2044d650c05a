#![no_main]
//! `cargo +nightly fuzz run torch_checkpoint`: see tessera::fuzzing::torch_checkpoint.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tessera::fuzzing::torch_checkpoint(data);
});
