//! Fuzz target: `keyservice::fuzzing::request_bodies` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyservice::fuzzing::request_bodies(data);
});
