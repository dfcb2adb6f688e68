//! The whole analysis (`GoBinary::from_bytes`) on an arbitrary ELF image, then every query.
#![no_main]

use goscope_inspect::GoBinary;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bin) = GoBinary::from_bytes(data) else {
        return;
    };
    let text = bin.text_start();
    let symbolize = |pc: u64| {
        let _ = bin.symbolize(pc);
        let _ = bin.symbolize_frames(pc);
    };
    for pc in [0, 1, text, text.wrapping_add(0x40), text.wrapping_sub(1), u64::MAX] {
        symbolize(pc);
    }
    for name in ["runtime.gopark", "runtime.newproc1", "main.main", ""] {
        if let Some(f) = bin.function(name) {
            symbolize(f.entry);
            symbolize(f.entry.wrapping_add(0x10));
            symbolize(f.end.wrapping_sub(1));
        }
        let _ = bin.pclntab_function(name);
        let _ = bin.symtab_function(name);
    }
    let _ = bin.data_symbol("runtime.allgs");
    let _ = bin.layout().entries();
    for site in bin.probe_sites() {
        symbolize(site.address);
    }
    let _ = bin.wait_reasons().name(14);
    let _ = bin.wait_reasons().code_of("chan receive");
    let _ = (bin.build_info(), bin.support(), bin.pclntab_len(), bin.offsets_source(), bin.gofunc());
    let _ = format!("{bin:?}");
});
