//! Fuzz target: see `cyberdesk_operator::fuzzing::template_render` for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cyberdesk_operator::fuzzing::template_render(data);
});
