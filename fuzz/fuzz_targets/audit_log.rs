//! Fuzz target: `keyservice::fuzzing::audit_log` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyservice::fuzzing::audit_log(data);
});
