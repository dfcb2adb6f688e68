//! The `.gopclntab` reader alone: header, functab, `_func` records, names, pc-value tables, files.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| goscope_inspect::fuzzing::pclntab(data));
