//! Fuzz target: see `cyberdesk_operator::fuzzing::admission_body` for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cyberdesk_operator::fuzzing::admission_body(data);
});
