#![no_main]
//! `cargo +nightly fuzz run safetensors_checkpoint`: see tessera::fuzzing::safetensors_checkpoint.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tessera::fuzzing::safetensors_checkpoint(data);
});
