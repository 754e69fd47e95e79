//! Fuzz target: `keyservice::fuzzing::admin_socket` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyservice::fuzzing::admin_socket(data);
});
