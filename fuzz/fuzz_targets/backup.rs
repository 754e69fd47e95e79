//! Fuzz target: `keyservice::fuzzing::backup` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyservice::fuzzing::backup(data);
});
