#![no_main]
//! `cargo +nightly fuzz run flax_checkpoint`: see tessera::fuzzing::flax_checkpoint.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tessera::fuzzing::flax_checkpoint(data);
});
