#![no_main]
//! `cargo +nightly fuzz run model_config`: see tessera::fuzzing::model_config.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tessera::fuzzing::model_config(data);
});
