//! Fuzz target: `keyservice::fuzzing::ss1` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyservice::fuzzing::ss1(data);
});
