//! Malformed input never panics and yields errors with actionable messages.

mod common;

use common::{Variant, fixture_or_skip};
use goscope_inspect::{GoBinary, InspectError};

/// xorshift64* — deterministic pseudo-random bytes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_bytes_are_rejected() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for len in [0usize, 1, 3, 4, 16, 63, 64, 65, 200, 4096, 70_000] {
        for _ in 0..20 {
            let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert!(GoBinary::from_bytes(&data).is_err());
            // Same with a valid ELF64 magic/ident so the header parsers are exercised.
            if len >= 16 {
                data[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
                assert!(GoBinary::from_bytes(&data).is_err());
            }
        }
    }
}

#[test]
fn error_messages() {
    assert!(matches!(GoBinary::from_bytes(b"hello"), Err(InspectError::NotElf)));
    let e = GoBinary::open(std::path::Path::new("/nonexistent/goscope/bin")).unwrap_err();
    assert!(matches!(e, InspectError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/goscope/bin"));
    // A real non-Go ELF (the test binary itself is Rust).
    let me = std::env::current_exe().unwrap();
    let e = GoBinary::open(&me).unwrap_err();
    assert!(matches!(e, InspectError::NotGo), "{e}");
    assert_eq!(e.to_string(), "not a Go binary: no .go.buildinfo section or Go build id note");
    let mut elf32 = vec![0u8; 64];
    elf32[..6].copy_from_slice(b"\x7fELF\x01\x01");
    assert!(matches!(GoBinary::from_bytes(&elf32), Err(InspectError::UnsupportedArch { .. })));
    for e in [InspectError::NotElf, InspectError::NotGo] {
        assert!(!e.to_string().contains('\n'));
    }
}

fn check_mutations(data: &[u8], iterations: usize, seed: u64) {
    let mut rng = Rng(seed);
    // Truncations at many points, including inside every header.
    let mut cuts: Vec<usize> = (0..64).chain([100, 500, 4096, 65536]).collect();
    for _ in 0..40 {
        cuts.push(rng.below(data.len()));
    }
    for cut in cuts {
        if cut < data.len() {
            let _ = GoBinary::from_bytes(&data[..cut]);
        }
    }
    assert!(GoBinary::from_bytes(&data[..data.len() / 2]).is_err(), "half a binary must not parse");
    // Random byte corruption, concentrated on the first pages (headers, notes, buildinfo) and
    // spread over the rest.
    for _ in 0..iterations {
        let mut d = data.to_vec();
        let n = 1 + rng.below(16);
        for _ in 0..n {
            let pos = if rng.below(2) == 0 { rng.below(4096.min(d.len())) } else { rng.below(d.len()) };
            d[pos] = rng.next() as u8;
        }
        let _ = GoBinary::from_bytes(&d);
    }
}

#[test]
fn mutated_stripped_binary_never_panics() {
    let Some(p) = fixture_or_skip(None, Variant::Stripped) else {
        return;
    };
    let data = std::fs::read(p).unwrap();
    check_mutations(&data, 300, 7);
    // Targeted: corrupt the pclntab header fields and the buildinfo varints.
    let b = GoBinary::from_bytes(&data).unwrap();
    assert!(b.pclntab_len() > 0);
    let magic_pos = data.windows(4).position(|w| w == [0xf1, 0xff, 0xff, 0xff]);
    if let Some(pos) = magic_pos {
        for field in 0..9 {
            for v in [0u64, 1, u64::MAX, u64::MAX / 2, data.len() as u64] {
                let mut d = data.clone();
                let o = pos + 8 + 8 * field;
                if o + 8 <= d.len() {
                    d[o..o + 8].copy_from_slice(&v.to_le_bytes());
                    let _ = GoBinary::from_bytes(&d);
                }
            }
        }
    }
    // Without section headers every lookup goes through the segment scanners.
    let mut headless = data.clone();
    headless[0x28..0x30].fill(0);
    headless[0x3c..0x40].fill(0);
    assert!(GoBinary::from_bytes(&headless).is_ok());
    check_mutations(&headless, 150, 13);
    let bi = data.windows(14).position(|w| w == b"\xff Go buildinf:").unwrap();
    for v in [0u8, 0x7f, 0x80, 0xff] {
        let mut d = data.clone();
        d[bi + 32] = v;
        let _ = GoBinary::from_bytes(&d);
        d[bi + 15] = v;
        let _ = GoBinary::from_bytes(&d);
    }
}

/// Stack maps over a corrupted `.gopclntab` (frame sizes, pcdata, funcdata offsets, the bitmaps and
/// stack object records themselves, which Go 1.26 keeps inside the table): lookups at many PCs
/// answer or return None, never panic, and bitmaps stay bounded.
#[test]
fn mutated_stack_maps_never_panic() {
    let Some(p) = fixture_or_skip(None, Variant::Stripped) else {
        return;
    };
    let data = std::fs::read(p).unwrap();
    let b = GoBinary::from_bytes(&data).unwrap();
    let table = data.windows(4).position(|w| w == [0xf1, 0xff, 0xff, 0xff]).expect("pclntab magic");
    let len = b.pclntab_len();
    let funcs = b.pclntab_functions();
    let pcs: Vec<u64> =
        funcs.iter().step_by((funcs.len() / 100).max(1)).flat_map(|f| [f.entry, f.entry + (f.end - f.entry) / 2]).collect();
    let mut rng = Rng(21);
    for _ in 0..150 {
        let mut d = data.clone();
        for _ in 0..256 {
            let pos = table + rng.below(len);
            d[pos] = rng.next() as u8;
        }
        let Ok(m) = GoBinary::from_bytes(&d) else { continue };
        for &pc in &pcs {
            if let Some(maps) = m.frame_maps(pc) {
                assert!(maps.locals.as_ref().is_none_or(|l| l.words() <= 1 << 20));
                assert!(maps.objects.as_ref().is_none_or(|o| o.len() <= 1 << 16));
            }
        }
    }
}

#[test]
fn mutated_dwarf_binary_never_panics() {
    let Some(p) = fixture_or_skip(None, Variant::Plain) else {
        return;
    };
    let data = std::fs::read(p).unwrap();
    check_mutations(&data, 25, 11);
}

// --- Regressions found by fuzzing and review (issue #3). The same inputs are in
// fuzz/corpus/<target>/regress-*; here they are built in code so that the tests stand alone.

/// Counts the bytes allocated by the current thread, so that a test can check that an input
/// does not make the parser allocate more than a small multiple of its size.
mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static ALLOCATED: Cell<u64> = const { Cell::new(0) };
    }

    fn add(n: usize) {
        let _ = ALLOCATED.try_with(|c| c.set(c.get().saturating_add(n as u64)));
    }

    // SAFETY: forwards to the system allocator unchanged; only counts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            add(layout.size());
            // SAFETY: the caller upholds GlobalAlloc's contract, which System needs unchanged.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            add(layout.size());
            // SAFETY: the caller upholds GlobalAlloc's contract, which System needs unchanged.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller upholds GlobalAlloc's contract, which System needs unchanged.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            add(new_size);
            // SAFETY: the caller upholds GlobalAlloc's contract, which System needs unchanged.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Bytes allocated (cumulatively, frees not subtracted) by this thread while running `f`.
    pub fn during<T>(f: impl FnOnce() -> T) -> (T, u64) {
        let before = ALLOCATED.with(Cell::get);
        let r = f();
        (r, ALLOCATED.with(Cell::get) - before)
    }
}

#[global_allocator]
static COUNTING: alloc_count::Counting = alloc_count::Counting;

const SHT_PROGBITS: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHF_COMPRESSED: u64 = 0x800;

/// One section of a synthetic ELF: name, type, flags, addr, link, entsize, data.
struct Sec<'a>(&'a str, u32, u64, u64, u32, u64, &'a [u8]);

fn elf_header(phnum: u16, shoff: u64, shnum: u16) -> Vec<u8> {
    let mut h = b"\x7fELF\x02\x01\x01".to_vec();
    h.resize(16, 0);
    h.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&0x401000u64.to_le_bytes());
    h.extend_from_slice(&(if phnum > 0 { 64u64 } else { 0 }).to_le_bytes());
    h.extend_from_slice(&shoff.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, phnum, 64, shnum, shnum.saturating_sub(1)] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

/// An ELF64 file with the given sections (plus the null section and `.shstrtab`, last).
fn elf_with_sections(secs: &[Sec<'_>]) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    let mut shstr = vec![0u8];
    let mut shdrs = vec![0u8; 64];
    let shstrtab = Sec(".shstrtab", SHT_STRTAB, 0, 0, 0, 0, &[]);
    for (i, Sec(name, ty, flags, addr, link, entsize, data)) in secs.iter().chain([&shstrtab]).enumerate() {
        let name_off = shstr.len() as u32;
        shstr.extend_from_slice(name.as_bytes());
        shstr.push(0);
        let data = if i == secs.len() { &shstr[..] } else { data };
        out.resize(out.len().next_multiple_of(16), 0);
        let off = out.len() as u64;
        out.extend_from_slice(data);
        shdrs.extend_from_slice(&name_off.to_le_bytes());
        shdrs.extend_from_slice(&ty.to_le_bytes());
        for v in [*flags, *addr, off, data.len() as u64] {
            shdrs.extend_from_slice(&v.to_le_bytes());
        }
        shdrs.extend_from_slice(&link.to_le_bytes());
        shdrs.extend_from_slice(&1u32.to_le_bytes()); // sh_info: first global symbol
        shdrs.extend_from_slice(&1u64.to_le_bytes());
        shdrs.extend_from_slice(&entsize.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(8), 0);
    let shoff = out.len() as u64;
    out.extend_from_slice(&shdrs);
    out[..64].copy_from_slice(&elf_header(0, shoff, (secs.len() + 2) as u16));
    out
}

/// An ELF64 file without section headers: one PT_LOAD per (vaddr, flags, data).
fn elf_with_segments(segs: &[(u64, u32, &[u8])]) -> Vec<u8> {
    let mut out = elf_header(segs.len() as u16, 0, 0);
    let data_start = 64 + 56 * segs.len();
    let mut body = Vec::new();
    for (vaddr, flags, data) in segs {
        body.resize((data_start + body.len()).next_multiple_of(16) - data_start, 0);
        let off = (data_start + body.len()) as u64;
        body.extend_from_slice(data);
        out.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        out.extend_from_slice(&flags.to_le_bytes());
        for v in [off, *vaddr, *vaddr, data.len() as u64, data.len() as u64, 0x1000] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out.extend_from_slice(&body);
    out
}

fn uleb(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// DWARF 4 whose `runtime.g` has `n` members of type `X`, and `X` has `n` members of type `X`.
fn self_referential_dwarf(n: usize) -> Vec<u8> {
    // 1: compile_unit(name string); 2: structure_type(name string);
    // 3: member(name string, data_member_location udata, type ref_addr).
    let abbrev: &[u8] =
        &[1, 0x11, 1, 0x03, 0x08, 0, 0, 2, 0x13, 1, 0x03, 0x08, 0, 0, 3, 0x0d, 0, 0x03, 0x08, 0x38, 0x0f, 0x49, 0x10, 0, 0, 0];
    let mut body = vec![1];
    body.extend_from_slice(b"cu\0");
    let x = 11 + body.len() as u32;
    body.push(2);
    body.extend_from_slice(b"X\0");
    for _ in 0..n {
        body.push(3);
        body.extend_from_slice(b"m\0");
        uleb(0, &mut body);
        body.extend_from_slice(&x.to_le_bytes());
    }
    body.push(0);
    body.push(2);
    body.extend_from_slice(b"runtime.g\0");
    for i in 0..n {
        body.push(3);
        body.extend_from_slice(format!("f{i}\0").as_bytes());
        uleb(i as u64, &mut body);
        body.extend_from_slice(&x.to_le_bytes());
    }
    body.extend_from_slice(&[0, 0]);
    let mut info = ((7 + body.len()) as u32).to_le_bytes().to_vec();
    info.extend_from_slice(&4u16.to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    info.push(8);
    info.extend_from_slice(&body);
    elf_with_sections(&[
        Sec(".debug_info", SHT_PROGBITS, 0, 0, 0, 0, &info),
        Sec(".debug_abbrev", SHT_PROGBITS, 0, 0, 0, 0, abbrev),
    ])
}

/// Fuzzing (dwarf target): following member types to a Go 1.26 `vu` word recursed into every
/// member of every struct to depth 4, so a self-referential struct with n members cost ~n^6
/// (700 bytes: 23 s). The search now has a step budget.
#[test]
fn dwarf_self_referential_types_are_bounded() {
    for n in [16, 400] {
        let data = self_referential_dwarf(n);
        let t = std::time::Instant::now();
        let entries = goscope_inspect::dwarf_entries(&data).unwrap().unwrap();
        assert!(entries.contains_key("runtime.g.goid") || entries.is_empty());
        let secs = t.elapsed().as_secs_f64();
        assert!(secs < 20.0, "n={n}: {secs:.1} s");
    }
}

/// Review: a 424-byte file whose SHF_COMPRESSED DWARF sections claim 256 MiB each made the
/// reader allocate the claimed size up front; claims are now bounded by what the payload can
/// inflate to.
#[test]
fn compressed_dwarf_claims_are_bounded_by_the_payload() {
    // Elf64_Chdr { ELFCOMPRESS_ZLIB, 0, 256 MiB, 1 } + zlib stream of nothing.
    let mut z = 1u32.to_le_bytes().to_vec();
    z.extend_from_slice(&0u32.to_le_bytes());
    z.extend_from_slice(&(256u64 << 20).to_le_bytes());
    z.extend_from_slice(&1u64.to_le_bytes());
    z.extend_from_slice(&[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    let data = elf_with_sections(&[
        Sec(".debug_info", SHT_PROGBITS, SHF_COMPRESSED, 0, 0, 0, &z),
        Sec(".debug_abbrev", SHT_PROGBITS, SHF_COMPRESSED, 0, 0, 0, &z),
    ]);
    let (r, allocated) = alloc_count::during(|| goscope_inspect::dwarf_entries(&data));
    let e = r.unwrap_err();
    assert!(e.to_string().contains("claims 268435456 bytes uncompressed"), "{e}");
    assert!(allocated < 1 << 20, "{allocated} bytes allocated for a {}-byte file", data.len());
}

/// Review: every `.symtab` entry may name the same long string; each was copied, so 550 KB
/// made 2.3 GB. The copies are now bounded by the input size.
#[test]
fn overlapping_symbol_names_are_bounded() {
    let long = 20_000;
    let mut strtab = vec![0u8];
    strtab.resize(1 + long, b'A');
    strtab.push(0);
    let mut symtab = vec![0u8; 24];
    for i in 0..3000u32 {
        symtab.extend_from_slice(&(1 + i % long as u32).to_le_bytes());
        symtab.push(0x12); // STB_GLOBAL, STT_FUNC
        symtab.push(0);
        symtab.extend_from_slice(&1u16.to_le_bytes());
        symtab.extend_from_slice(&(0x401000 + u64::from(i)).to_le_bytes());
        symtab.extend_from_slice(&1u64.to_le_bytes());
    }
    let data =
        elf_with_sections(&[Sec(".symtab", SHT_SYMTAB, 0, 0, 2, 24, &symtab), Sec(".strtab", SHT_STRTAB, 0, 0, 0, 0, &strtab)]);
    let (r, allocated) = alloc_count::during(|| GoBinary::from_bytes(&data));
    assert!(matches!(r, Err(InspectError::NotGo)), "{r:?}");
    // Unbounded: 3000 names of ~10 KB = 30 MB.
    assert!(allocated < 8 << 20, "{allocated} bytes allocated for a {}-byte file", data.len());
}

/// Review: the same for `.gopclntab` function names (each up to 64 KiB), which `GoBinary` copies
/// into its name index; `fuzzing::pclntab` copies them the same way.
#[test]
fn overlapping_pclntab_names_are_bounded() {
    let n = 4000u32;
    let names_len = 65_000usize;
    let names_off = 72usize;
    let pcln_off = (names_off + names_len + 1).next_multiple_of(8);
    let funcs_rel = 8 * (n as usize + 1);
    let mut d = Vec::new();
    d.extend_from_slice(&0xffff_fff1u32.to_le_bytes());
    d.extend_from_slice(&[0, 0, 1, 8]);
    for v in [u64::from(n), 0, 0x401000, names_off as u64, 8, 8, 8, pcln_off as u64] {
        d.extend_from_slice(&v.to_le_bytes());
    }
    d.resize(names_off + names_len, b'A');
    d.push(0);
    d.resize(pcln_off, 0);
    for i in 0..=n {
        d.extend_from_slice(&i.to_le_bytes());
        d.extend_from_slice(&((funcs_rel + 44 * i.min(n - 1) as usize) as u32).to_le_bytes());
    }
    for i in 0..n {
        // entryOff, nameOff (a different suffix of the long name each), then zeros.
        d.extend_from_slice(&i.to_le_bytes());
        d.extend_from_slice(&i.to_le_bytes());
        d.extend_from_slice(&[0u8; 36]);
    }
    let ((), allocated) = alloc_count::during(|| goscope_inspect::fuzzing::pclntab(&d));
    // Unbounded: 4000 names of ~63 KB = 250 MB.
    assert!(allocated < 16 << 20, "{allocated} bytes allocated for a {}-byte table", d.len());
}

/// Review: without section headers every 8-aligned pclntab header look-alike in a segment was
/// parsed, copying the rest of the segment each time (quadratic: 0.5 s for 2 MB, minutes for
/// 20 MB). Now only the first few look-alikes are tried.
#[test]
fn pclntab_scan_is_not_quadratic() {
    let mut blob = Vec::new();
    let mut hdr = 0xffff_fff1u32.to_le_bytes().to_vec();
    hdr.extend_from_slice(&[0, 0, 1, 8]);
    for v in [0u64, 0, 0x401000, 8, 8, 8, 8, 8] {
        hdr.extend_from_slice(&v.to_le_bytes());
    }
    while blob.len() < 1 << 20 {
        blob.extend_from_slice(&hdr);
    }
    // A buildinfo blob so that the analysis gets as far as the pclntab search.
    let mut bi = b"\xff Go buildinf:\x08\x02".to_vec();
    bi.resize(32, 0);
    bi.push(9);
    bi.extend_from_slice(b"go1.22.12");
    bi.push(0);
    let data = elf_with_segments(&[
        (0x60_0000, 6, &bi),   // RW
        (0x50_0000, 4, &blob), // R
    ]);
    let (r, allocated) = alloc_count::during(|| GoBinary::from_bytes(&data));
    assert!(matches!(r, Err(InspectError::MissingSymbol { .. })), "{r:?}");
    // Quadratic: ~14,500 look-alikes x ~0.5 MB = 7 GB copied.
    assert!(allocated < 256 << 20, "{allocated} bytes allocated for a {}-byte file", data.len());
}

/// Review: scans over data (buildinfo, moduledata, wait reasons) were quadratic in crafted
/// input: thousands of section headers covering the same bytes were each scanned again, and every
/// moduledata look-alike read through the whole section table. 2 MB took seconds, 20 MB minutes.
#[test]
fn overlapping_sections_and_look_alikes_are_linear() {
    // 15,000 headers for the same 1 MB of writable data: NotGo after one pass over it.
    let region = vec![1u8; 1 << 20];
    let data = elf_with_sections(&[Sec("d", SHT_PROGBITS, 3, 0x60_0000, 0, 0, &region)]);
    let data = repeat_section_header(data, 1, 15_000);
    let t = std::time::Instant::now();
    assert!(matches!(GoBinary::from_bytes(&data), Err(InspectError::NotGo)));
    let overlap = t.elapsed();

    // Go 1.26 (no textStart in the pclntab header, no .go.module): 1 MB of words equal to the
    // pclntab address, each a moduledata look-alike, behind 15,000 empty sections.
    let mut bi = b"\xff Go buildinf:\x08\x02".to_vec();
    bi.resize(32, 0);
    bi.push(8);
    bi.extend_from_slice(b"go1.26.8");
    bi.push(0);
    let mut pcln = 0xffff_fff1u32.to_le_bytes().to_vec();
    pcln.extend_from_slice(&[0, 0, 1, 8]);
    for v in [0u64, 0, 0, 64, 64, 64, 64, 64] {
        pcln.extend_from_slice(&v.to_le_bytes());
    }
    pcln.resize(80, 0);
    let words: Vec<u8> = std::iter::repeat_n(0x50_0000u64.to_le_bytes(), 1 << 17).flatten().collect();
    let data = elf_with_sections(&[
        Sec(".go.buildinfo", SHT_PROGBITS, 3, 0x60_0000, 0, 0, &bi),
        Sec(".gopclntab", SHT_PROGBITS, 2, 0x50_0000, 0, 0, &pcln),
        Sec("x", 8, 2, 0x10, 0, 0, &[]),
        Sec(".noptrdata", SHT_PROGBITS, 3, 0x70_0000, 0, 0, &words),
    ]);
    let data = repeat_section_header(data, 3, 15_000);
    let t = std::time::Instant::now();
    let e = GoBinary::from_bytes(&data).unwrap_err();
    assert!(e.to_string().contains("runtime.firstmoduledata was not found"), "{e}");
    let lookalikes = t.elapsed();
    assert!(
        overlap.as_secs() < 5 && lookalikes.as_secs() < 5,
        "overlapping sections: {overlap:?}, moduledata look-alikes: {lookalikes:?}"
    );
}

/// `data` with section header `index` repeated `n` times (a new header table at the end).
fn repeat_section_header(mut data: Vec<u8>, index: usize, n: usize) -> Vec<u8> {
    let u16_at = |d: &[u8], o: usize| usize::from(u16::from_le_bytes([d[o], d[o + 1]]));
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap()) as usize;
    let shnum = u16_at(&data, 0x3c);
    let hdr = |i: usize| data[shoff + 64 * i..shoff + 64 * (i + 1)].to_vec();
    let mut table = Vec::new();
    for i in 0..shnum {
        for _ in 0..if i == index { n } else { 1 } {
            table.extend_from_slice(&hdr(i));
        }
    }
    let new_shoff = data.len() as u64;
    data.extend_from_slice(&table);
    let new_shnum = (shnum + n - 1) as u16;
    data[0x28..0x30].copy_from_slice(&new_shoff.to_le_bytes());
    data[0x3c..0x3e].copy_from_slice(&new_shnum.to_le_bytes());
    data[0x3e..0x40].copy_from_slice(&(new_shnum - 1).to_le_bytes());
    data
}
