//! The `.go.buildinfo` blob parser alone: varint strings, modinfo, Go version.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| goscope_inspect::fuzzing::buildinfo(data));
