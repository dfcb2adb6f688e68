//! ELF + DWARF reader alone (compressed sections, units, runtime struct members).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = goscope_inspect::dwarf_entries(data);
    let _ = goscope_inspect::wait_reasons_by_scan(data);
});
