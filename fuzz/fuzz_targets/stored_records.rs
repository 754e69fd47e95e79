//! Fuzz target: `keyservice::fuzzing::stored_records` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyservice::fuzzing::stored_records(data);
});
