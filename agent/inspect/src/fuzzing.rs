//! Entry points for the cargo-fuzz targets in `fuzz/`: the crate's internal parsers, each fed
//! with raw bytes and then queried the way [`crate::GoBinary`] queries them. Not a stable API.

use crate::{buildinfo, pclntab::Pclntab, shared::SharedSlice};

/// `.go.buildinfo` blob parsing: version string, modinfo text, `GoVersion` and settings.
pub fn buildinfo(data: &[u8]) {
    if let Ok((version, modinfo)) = buildinfo::parse_buildinfo_blob(data) {
        let _ = crate::GoVersion::parse(&version).map(|v| v.minor_string());
        let mi = buildinfo::parse_modinfo(&modinfo);
        let _ = (mi.path.len(), mi.module.len(), mi.module_version.len(), mi.settings.len());
    }
    // The version parser also sees arbitrary text in the field.
    let _ = crate::GoVersion::parse(&String::from_utf8_lossy(data));
}

/// A `.gopclntab` mapped at 0x4e0000 (text at 0x401000 when the header has no textStart):
/// header, every function's name and range, and PC lookups (name, file, line, stack maps).
pub fn pclntab(data: &[u8]) {
    let Ok(mut p) = Pclntab::parse(data, 0x4e_0000) else {
        return;
    };
    if p.header_text_start == 0 {
        p.text_start = 0x40_1000;
    }
    let _ = p.plausible();
    let mut pcs = vec![p.text_start, p.text_start.wrapping_sub(1), u64::MAX];
    // Names are copied as `GoBinary` does, so copies that outgrow the input hit the fuzzer's
    // allocation limits.
    let mut names = std::collections::HashMap::new();
    for (i, (name, entry, end)) in p.functions().enumerate() {
        names.entry(name.to_string()).or_insert((entry, end));
        if i < 64 {
            pcs.extend([entry, entry.wrapping_add(1), end.wrapping_sub(1), end]);
        }
    }
    for pc in &pcs {
        let _ = p.lookup(*pc);
    }
    // Inline trees: `moduledata.gofunc` inside the table (as in Go 1.26+), then a copy. Fewer
    // PCs: each expansion copies names as `GoBinary::symbolize_frames` does (bounded per call).
    let pcs = &pcs[..pcs.len().min(24)];
    for gofunc in [p.vaddr, p.vaddr.wrapping_add(data.len() as u64 / 2)] {
        p.set_gofunc(gofunc, None);
        let _ = p.check_gofunc(8);
        for pc in pcs {
            let _ = p.lookup_frames(*pc);
            let _ = crate::stackmap::frame_maps(&p, *pc);
        }
    }
    p.set_gofunc(0x10, Some(SharedSlice::owned(data.to_vec())));
    for pc in pcs {
        if let Some((frames, _)) = p.lookup_frames(*pc) {
            assert!(!frames.is_empty() && frames.len() <= crate::pclntab::MAX_INLINE_DEPTH);
        }
        // Stack maps: frame size, pointer bitmaps and stack objects from the same bytes.
        if let Some(maps) = crate::stackmap::frame_maps(&p, *pc) {
            let words = maps.locals.as_ref().map_or(0, |m| m.words());
            assert!(words <= 1 << 20);
        }
    }
}
