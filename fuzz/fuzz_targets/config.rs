//! Fuzz target: `keyservice::fuzzing::config` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyservice::fuzzing::config(data);
});
