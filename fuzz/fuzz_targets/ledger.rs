//! Fuzz target: `keyservice::fuzzing::ledger` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyservice::fuzzing::ledger(data);
});
