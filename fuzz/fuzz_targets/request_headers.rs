//! Fuzz target: `keyservice::fuzzing::request_headers` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyservice::fuzzing::request_headers(data);
});
