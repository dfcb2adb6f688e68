//! End-to-end checks against real Go binaries built from tests/testdata/prog by several
//! toolchains: version, symbols (stripped pclntab vs unstripped symtab vs `go tool addr2line`),
//! layout (stripped table vs DWARF), wait reasons and probe sites.
//!
//! Tested: the installed go and every Go release of the integration tests' `GO_VERSIONS`
//! (tests/src/fixture.rs: the last patch of each minor version from 1.19 on), one test each, every
//! one in seven variants (plain, stripped, PIE, PIE stripped, cgo/external link, cgo stripped,
//! arm64). A toolchain not in the module cache is downloaded by the go command on first use; the
//! binaries are cached under `<target>/go-fixtures/`, each version's variants built in parallel.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Toolchain, Variant, fixture_or_skip, go_version, skip};
use goscope_inspect::{Arch, GoBinary, OffsetsSource, ProbeKind, table_layout, table_wait_reasons};

fn open(p: &Path) -> GoBinary {
    GoBinary::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Expected wait reason codes for "chan receive", "chan send", "select".
fn chan_codes(minor: u32) -> (u8, u8, u8) {
    if minor >= 26 { (19, 20, 18) } else { (14, 15, 9) }
}

/// Names that appear more than once in pclntab (assembly ABI0 + ABIInternal pairs).
fn duplicate_names(b: &GoBinary) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut dup = HashSet::new();
    for f in b.pclntab_functions() {
        if !seen.insert(f.name.clone()) {
            dup.insert(f.name);
        }
    }
    dup
}

/// `go tool addr2line` of the installed toolchain, as an independent oracle.
fn addr2line(bin: &Path, pcs: &[u64]) -> Result<Vec<(String, String, i64)>, String> {
    let mut child = Command::new("go")
        .env("GOTOOLCHAIN", "local")
        .args(["tool", "addr2line"])
        .arg(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut input = String::new();
    for pc in pcs {
        input.push_str(&format!("{pc:#x}\n"));
    }
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    writer.join().map_err(|_| "writer panicked")?.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let mut res = Vec::new();
    for pair in lines.chunks(2) {
        let func = pair[0].to_string();
        let loc = pair.get(1).ok_or("odd output")?;
        let (file, line) = loc.rsplit_once(':').ok_or_else(|| format!("bad line {loc}"))?;
        res.push((func, file.to_string(), line.parse().map_err(|_| format!("bad line {loc}"))?));
    }
    if res.len() != pcs.len() {
        return Err(format!("{} answers for {} pcs", res.len(), pcs.len()));
    }
    Ok(res)
}

fn check_toolchain(tc: Toolchain) {
    let version = match go_version(tc) {
        Ok(v) => v,
        Err(e) => return skip(&e),
    };
    common::prebuild(tc);
    let Some(plain_p) = fixture_or_skip(tc, Variant::Plain) else {
        return;
    };
    let plain = open(&plain_p);
    let v = &plain.build_info().go_version;
    assert_eq!(v.raw.split(' ').next().unwrap(), version, "version string");
    assert_eq!(v.major, 1);
    let minor = v.minor;
    eprintln!("checking {version} (go1.{minor})");

    // --- Build info.
    let bi = plain.build_info();
    assert_eq!(bi.module, "example.com/goscopefixture");
    assert!(bi.settings.iter().any(|(k, v)| k == "GOARCH" && v == "amd64"), "{:?}", bi.settings);
    assert!(!bi.cgo);
    assert!(bi.build_id.as_deref().is_some_and(|id| id.contains('/')), "{:?}", bi.build_id);
    assert_eq!(plain.arch(), Arch::Amd64);
    assert!(!plain.stripped());
    assert!(!plain.pie());
    assert_eq!(plain.offsets_source(), OffsetsSource::Dwarf);

    // --- DWARF layout equals the checked-in table for this version.
    let table = table_layout(minor).unwrap_or_else(|| panic!("no table for go1.{minor}"));
    assert_eq!(plain.layout().entries(), table.entries(), "DWARF layout vs offsets/go1.{minor}.txt");
    assert_eq!(plain.layout().g_parent_goid.is_some(), minor >= 21);

    // --- Wait reasons from the binary.
    let wr = plain.wait_reasons();
    assert_eq!(wr.source(), "binary");
    let (recv, send, sel) = chan_codes(minor);
    assert_eq!(wr.code_of("chan receive"), Some(recv));
    assert_eq!(wr.code_of("chan send"), Some(send));
    assert_eq!(wr.code_of("select"), Some(sel));
    assert_eq!(wr.name(recv), Some("chan receive"));
    assert_eq!(wr.names(), table_wait_reasons(minor).unwrap().as_slice());

    // --- Stack maps (what the runtime's GC scans a frame by).
    check_stack_maps(&plain, minor);

    // --- Probe sites.
    check_probe_sites(&plain, &plain_p, minor);
    assert!(plain.support().supported, "{:?}", plain.support());

    check_symbolization(&plain, &plain_p);
    for (full_v, stripped_v) in
        [(Variant::Plain, Variant::Stripped), (Variant::ExtLink, Variant::ExtLinkStripped), (Variant::Pie, Variant::PieStripped)]
    {
        check_stripped_twin(tc, &version, minor, full_v, stripped_v);
    }
    check_arm64(tc, &plain);
}

/// Symbolization against go tool addr2line (an independent implementation).
fn check_symbolization(plain: &GoBinary, plain_p: &Path) {
    let gopark = plain.symtab_function("runtime.gopark").expect("symtab gopark");
    let fr = plain.symbolize(gopark.entry + 4).unwrap();
    assert_eq!(fr.function, "runtime.gopark");
    assert_eq!(fr.entry, gopark.entry);
    assert!(fr.file.ends_with("runtime/proc.go"), "{}", fr.file);
    assert!(fr.line > 0);
    let funcs = plain.pclntab_functions();
    let pcs: Vec<u64> =
        funcs.iter().step_by((funcs.len() / 150).max(1)).flat_map(|f| [f.entry, f.entry + (f.end - f.entry) / 2]).collect();
    match addr2line(plain_p, &pcs) {
        Ok(oracle) => {
            let mut mismatches = 0;
            for (pc, (func, file, line)) in pcs.iter().zip(&oracle) {
                let ours = plain.symbolize(*pc).unwrap_or_else(|| panic!("no frame for {pc:#x}"));
                // addr2line prints ":-1" / "?:0" where the tables have no position; we use "?"/0.
                let (want_file, want_line) = if *line <= 0 || file.is_empty() { ("?", 0) } else { (file.as_str(), *line as u32) };
                if &ours.function != func || ours.file != want_file || ours.line != want_line {
                    mismatches += 1;
                    eprintln!("{pc:#x}: ours {ours:?} vs addr2line {func} {file}:{line}");
                }
            }
            assert_eq!(mismatches, 0, "symbolization differs from go tool addr2line");
        }
        Err(e) => eprintln!("note: go tool addr2line unavailable ({e}); oracle check skipped"),
    }
}

/// A stripped twin: pclntab entries equal the unstripped symtab's, the table layout the DWARF
/// layout, and so do wait reasons, probe sites and stack maps.
fn check_stripped_twin(tc: Toolchain, version: &str, minor: u32, full_v: Variant, stripped_v: Variant) {
    let Some(full_p) = fixture_or_skip(tc, full_v) else {
        return;
    };
    let Some(stripped_p) = fixture_or_skip(tc, stripped_v) else {
        return;
    };
    let full = open(&full_p);
    let stripped = open(&stripped_p);
    let what = format!("{version} {}", stripped_v.name());
    assert!(stripped.stripped(), "{what}");
    assert!(stripped.symtab_function("runtime.gopark").is_none(), "{what}: symtab expected gone");
    assert_eq!(stripped.offsets_source(), OffsetsSource::Table, "{what}");
    assert_eq!(full.offsets_source(), OffsetsSource::Dwarf, "{what}");
    assert_eq!(stripped.layout(), full.layout(), "{what}: table vs DWARF layout");
    assert_eq!(stripped.wait_reasons(), full.wait_reasons(), "{what}: wait reasons");
    assert_eq!(stripped.wait_reasons().source(), "binary", "{what}");
    assert_eq!(stripped.build_info().go_version, full.build_info().go_version);
    assert_eq!(stripped.text_start(), full.text_start(), "{what}: text start");
    if let Some(rt) = full.symtab_function("runtime.text") {
        assert_eq!(full.text_start(), rt.entry, "{what}: text start vs runtime.text symbol");
    }
    for name in ["runtime.gopark", "runtime.newproc1", "main.main", "runtime.ready", "runtime.goexit1"] {
        let sym = full.symtab_function(name).unwrap_or_else(|| panic!("{what}: {name} in symtab"));
        let pc = stripped.pclntab_function(name).unwrap_or_else(|| panic!("{what}: {name} in pclntab"));
        assert_eq!(pc.entry, sym.entry, "{what}: {name} entry");
        let f = stripped.function(name).unwrap();
        assert_eq!(f.entry, sym.entry, "{what}: {name} via function()");
        let fr = stripped.symbolize(sym.entry + 1).unwrap();
        assert_eq!(fr.function, name, "{what}");
        assert_eq!(fr, full.symbolize(sym.entry + 1).unwrap(), "{what}: frames differ");
    }
    // Every pclntab function with a unique name matches the symtab entry of the full twin.
    let dups = duplicate_names(&stripped);
    let symtab: HashMap<String, u64> =
        full.pclntab_functions().into_iter().filter_map(|f| full.symtab_function(&f.name).map(|s| (f.name, s.entry))).collect();
    let mut checked = 0;
    for f in stripped.pclntab_functions() {
        if dups.contains(&f.name) {
            continue;
        }
        if let Some(e) = symtab.get(&f.name) {
            assert_eq!(f.entry, *e, "{what}: {}", f.name);
            checked += 1;
        }
    }
    assert!(checked > 1000, "{what}: only {checked} functions compared");
    if stripped_v == Variant::ExtLinkStripped {
        assert!(stripped.build_info().cgo, "{what}: cgo");
    }
    if stripped_v == Variant::PieStripped {
        assert!(stripped.pie() && full.pie(), "{what}: pie");
    }
    check_probe_sites(&stripped, &stripped_p, minor);
    check_probe_sites(&full, &full_p, minor);
    assert_eq!(stripped.probe_sites(), full.probe_sites(), "{what}: probe sites");
    for f in stripped.pclntab_functions().iter().filter(|f| !dups.contains(&f.name)).step_by(7) {
        let (s, u) = (f.entry, full.pclntab_function(&f.name).map_or(0, |g| g.entry));
        for off in [0, (f.end - f.entry) / 2] {
            assert_eq!(stripped.frame_maps(s + off), full.frame_maps(u + off), "{what}: stack maps of {}", f.name);
        }
    }
    assert!(stripped.support().supported, "{what}: {:?}", stripped.support());
}

/// The arm64 cross build: same offsets, symbols work, probes unsupported.
fn check_arm64(tc: Toolchain, plain: &GoBinary) {
    if let Some(arm_p) = fixture_or_skip(tc, Variant::Arm64) {
        let arm = open(&arm_p);
        assert_eq!(arm.arch(), Arch::Arm64);
        // runtime.mheap holds arrays sized per architecture, so its `arenas` field moves; every
        // other offset is the same.
        let without_mheap =
            |l: &goscope_inspect::RuntimeLayout| goscope_inspect::RuntimeLayout { mheap_arenas: None, ..l.clone() };
        assert_eq!(without_mheap(arm.layout()), without_mheap(plain.layout()), "arm64 offsets equal amd64 offsets");
        assert_eq!(arm.wait_reasons(), plain.wait_reasons());
        let gp = arm.symtab_function("runtime.gopark").unwrap();
        assert_eq!(arm.pclntab_function("runtime.gopark").unwrap().entry, gp.entry);
        assert_eq!(arm.symbolize(gp.entry + 8).unwrap().function, "runtime.gopark");
        assert!(arm.probe_sites().is_empty());
        let s = arm.support();
        assert!(!s.supported && s.reasons.iter().any(|r| r.contains("amd64")), "{s:?}");
    }
}

/// Every Go function the runtime scans has its maps: at each instruction of a sample of functions
/// with a frame of locals, the locals map is there (the runtime throws "missing stackmap"
/// otherwise), and the args map wherever the function has arguments. Assembly functions
/// (no FUNCDATA at all) are told apart by having neither map anywhere.
fn check_stack_maps(b: &GoBinary, minor: u32) {
    let park = b.pclntab_function("runtime.gopark").expect("gopark");
    let m = b.frame_maps(park.entry + (park.end - park.entry) / 2).expect("gopark maps");
    assert!(m.frame_size > 0 && m.locals.is_some() && m.args.is_some() && m.objects.is_some(), "go1.{minor}: {m:?}");
    let goexit = b.pclntab_function("runtime.goexit").expect("goexit");
    assert!(b.frame_maps(goexit.entry + 1).expect("goexit maps").top_frame, "go1.{minor}");
    let preempt = b.pclntab_function("runtime.asyncPreempt").expect("asyncPreempt");
    assert_eq!(b.frame_maps(preempt.entry).unwrap().kind, goscope_inspect::FrameKind::InjectedCall);
    let (mut with_locals, mut checked) = (0, 0);
    for f in b.pclntab_functions().iter().filter(|f| f.name.starts_with("main.") || f.name.starts_with("runtime.")) {
        // Locals exist where the frame holds more than the saved frame pointer.
        let maps: Vec<_> = (f.entry..f.end).step_by(3).filter_map(|pc| b.frame_maps(pc)).filter(|m| m.frame_size > 8).collect();
        if maps.iter().all(|m| m.locals.is_none()) {
            continue; // assembly, or no frame
        }
        checked += 1;
        for m in &maps {
            assert!(m.locals.is_some(), "go1.{minor}: {}: {m:?}", f.name);
            assert!(m.args_size == Some(0) || m.args.is_some(), "go1.{minor}: {}: {m:?}", f.name);
            assert!(m.objects.is_some(), "go1.{minor}: {}", f.name);
            with_locals += usize::from(m.locals.as_ref().is_some_and(|l| l.words() > 0));
        }
    }
    assert!(checked > 500 && with_locals > 1000, "go1.{minor}: {checked} functions, {with_locals} pcs with pointer locals");
}

fn check_probe_sites(b: &GoBinary, path: &Path, minor: u32) {
    let file = std::fs::read(path).unwrap();
    let sites = b.probe_sites();
    for kind in ProbeKind::ALL {
        assert!(sites.iter().any(|s| s.probe == kind), "{}: no {kind:?} site", path.display());
    }
    for s in sites {
        let f = b.function(&s.symbol).unwrap();
        assert_eq!(s.address, f.entry + s.offset);
        assert!(s.offset > 0, "{s:?}: never at +0");
        assert!(s.address < f.end);
        let byte = file[s.file_offset as usize];
        match s.instruction.as_str() {
            "push rbp" => assert_eq!(byte, 0x55, "{s:?}"),
            "ret" => assert_eq!(byte, 0xc3, "{s:?}"),
            "nop" => assert_eq!(byte, 0x90, "{s:?}"),
            i if i.starts_with("call") => assert_eq!(byte, 0xe8, "{s:?}"),
            i if i.starts_with('j') => {
                assert!(byte == 0x0f || (0x70..=0x7f).contains(&byte), "{s:?}")
            }
            other => panic!("unexpected probe instruction {other}"),
        }
        assert!(!s.why.is_empty());
    }
    let gopark = sites.iter().find(|s| s.probe == ProbeKind::GoroutineParked).unwrap();
    if minor >= 21 {
        assert_eq!((gopark.offset, gopark.instruction.as_str()), (10, "push rbp"), "{gopark:?}");
    } else {
        // Go 1.19/1.20: no PUSH RBP; the NOP after the frame setup precedes any argument write.
        assert_eq!((gopark.offset, gopark.instruction.as_str()), (28, "nop"), "{gopark:?}");
    }
    let ready = sites.iter().find(|s| s.probe == ProbeKind::GoroutineReady).unwrap();
    if minor >= 21 {
        assert_eq!(ready.instruction, "push rbp");
    }
    // Creation: at an emulated instruction after newproc1 returns, in newproc's closure (every
    // `go` statement) and, when linked, newcoro's; never at newproc1's single-stepped RETs.
    let created: Vec<_> = sites.iter().filter(|s| s.probe == ProbeKind::GoroutineCreated).collect();
    assert!(
        created.iter().all(|s| goscope_inspect::CREATION_CALLERS.contains(&s.symbol.as_str()) && s.value_register.is_some()),
        "{created:?}"
    );
    assert_eq!(created.iter().filter(|s| s.symbol == "runtime.newproc.func1").count(), 1, "{created:?}");
}

#[test]
fn installed_go() {
    check_toolchain(None);
}

macro_rules! version_tests {
    ($($name:ident => $toolchain:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_toolchain(Some($toolchain));
            }
        )*

        /// The same releases as the version matrix (the integration tests' GO_VERSIONS and
        /// `cargo xtask offsets`).
        #[test]
        fn every_go_version_has_a_test() {
            let tested: Vec<&str> = [$($toolchain),*].iter().map(|t| t.trim_start_matches("go")).collect();
            assert_eq!(tested, integration_go_versions(), "keep this list and GO_VERSIONS in step");
        }
    };
}

version_tests! {
    go1_19 => "go1.19.13",
    go1_20 => "go1.20.14",
    go1_21 => "go1.21.13",
    go1_22 => "go1.22.12",
    go1_23 => "go1.23.12",
    go1_24 => "go1.24.13",
    go1_25 => "go1.25.14",
    go1_26 => "go1.26.11",
    go1_27 => "go1.27.4",
}

/// The version matrix: the integration tests' `GO_VERSIONS`, the one list.
fn integration_go_versions() -> Vec<String> {
    goscope_tests::GO_VERSIONS.iter().map(|v| (*v).to_owned()).collect()
}

/// Every checked-in table has a tested version of its minor.
#[test]
fn every_table_is_tested() {
    let minors: Vec<u32> = integration_go_versions().iter().map(|v| v.split('.').nth(1).unwrap().parse().unwrap()).collect();
    for minor in goscope_inspect::OLDEST_MINOR..=goscope_inspect::NEWEST_MINOR {
        assert!(table_layout(minor).is_some(), "no table for go1.{minor}");
        assert!(minors.contains(&minor), "go1.{minor} has a table but no tested release");
    }
}

/// The code validator accepts a binary's own layout and rejects other versions' layouts.
#[test]
fn layout_validation_discriminates_versions() {
    let mut bins = Vec::new();
    for tc in [Some("go1.19.13"), Some("go1.21.13"), Some("go1.23.12"), None] {
        if let Some(p) = fixture_or_skip(tc, Variant::Stripped) {
            bins.push(p);
        }
    }
    for p in bins {
        let data = std::fs::read(&p).unwrap();
        let b = GoBinary::from_bytes(&data).unwrap();
        let own = b.build_info().go_version.minor;
        for m in [19u32, 21, 23, 25, 26] {
            let l = table_layout(m).unwrap();
            let res = goscope_inspect::validate_layout(&data, &l);
            let same_class = l == *b.layout() || {
                // 1.19=1.20, 1.21~1.22, 1.23~1.24, 1.26=1.27 share every validated field.
                let class = |m: u32| match m {
                    19 | 20 => 0,
                    21 | 22 => 1,
                    23 | 24 => 2,
                    25 => 3,
                    _ => 4,
                };
                class(m) == class(own)
            };
            assert_eq!(res.is_ok(), same_class, "go1.{own} binary vs go1.{m} table: {res:?}");
        }
    }
}

/// Rewrites the version string in .go.buildinfo (same length) to simulate other toolchains.
fn patch_version(data: &mut [u8], new: &str) {
    let magic = b"\xff Go buildinf:";
    let pos = data.windows(magic.len()).position(|w| w == magic).expect("buildinfo magic");
    let len = data[pos + 32] as usize;
    assert_eq!(len, new.len(), "replacement must keep the length");
    data[pos + 33..pos + 33 + len].copy_from_slice(new.as_bytes());
}

#[test]
fn newer_go_version_validated_or_rejected() {
    // A go1.26 binary claiming go1.28: the newest table (1.27) matches it -> accepted.
    if let Some(p) = fixture_or_skip(None, Variant::Stripped) {
        let mut data = std::fs::read(&p).unwrap();
        let orig = GoBinary::from_bytes(&data).unwrap();
        let raw = orig.build_info().go_version.raw.clone();
        if orig.build_info().go_version.minor >= 26 && raw.len() == "go1.26.8".len() {
            patch_version(&mut data, "go1.28.0");
            let b = GoBinary::from_bytes(&data).expect("validated newer version");
            assert_eq!(b.build_info().go_version.minor, 28);
            assert_eq!(b.offsets_source(), OffsetsSource::Table);
            assert_eq!(b.layout(), &table_layout(27).unwrap());
            let s = b.support();
            assert!(s.supported, "{s:?}");
            assert!(s.notes.iter().any(|r| r.contains("validated")), "{s:?}");
        }
    }
    // A go1.23 binary claiming go1.28 without DWARF: newest layout does not fit -> rejected.
    if let Some(p) = fixture_or_skip(Some("go1.23.12"), Variant::Stripped) {
        let mut data = std::fs::read(&p).unwrap();
        patch_version(&mut data, "go1.28.99");
        match GoBinary::from_bytes(&data) {
            Err(goscope_inspect::InspectError::UnsupportedGoVersion { reason, .. }) => {
                assert!(reason.contains("does not match"), "{reason}");
            }
            other => panic!("expected UnsupportedGoVersion, got {other:?}"),
        }
        // ... but with DWARF the layout is read from the binary and the version is fine.
        if let Some(p) = fixture_or_skip(Some("go1.23.12"), Variant::Plain) {
            let mut data = std::fs::read(&p).unwrap();
            patch_version(&mut data, "go1.28.99");
            let b = GoBinary::from_bytes(&data).unwrap();
            assert_eq!(b.offsets_source(), OffsetsSource::Dwarf);
            assert_eq!(b.layout(), &table_layout(23).unwrap());
        }
        // Older than 1.19 -> rejected.
        patch_version(&mut data, "go1.18.10");
        assert!(matches!(GoBinary::from_bytes(&data), Err(goscope_inspect::InspectError::UnsupportedGoVersion { .. })));
    }
}

/// Without section headers every lookup falls back to scanning the PT_LOAD segments
/// (buildinfo magic, pclntab header, firstmoduledata, waitReasonStrings) and must agree.
#[test]
fn no_section_headers() {
    for tc in [Some("go1.19.13"), Some("go1.23.12"), None] {
        for variant in [Variant::Stripped, Variant::PieStripped, Variant::ExtLinkStripped] {
            let Some(p) = fixture_or_skip(tc, variant) else {
                continue;
            };
            let data = std::fs::read(&p).unwrap();
            let with = GoBinary::from_bytes(&data).unwrap();
            let mut d = data.clone();
            d[0x28..0x30].fill(0); // e_shoff
            d[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
            let what = format!("{} {}", p.display(), variant.name());
            let without = GoBinary::from_bytes(&d).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(without.build_info().go_version, with.build_info().go_version, "{what}");
            assert_eq!(without.build_info().build_id, with.build_info().build_id, "{what}");
            assert_eq!(without.text_start(), with.text_start(), "{what}");
            assert_eq!(without.pclntab_len(), with.pclntab_len(), "{what}");
            assert_eq!(without.layout(), with.layout(), "{what}");
            assert_eq!(without.wait_reasons(), with.wait_reasons(), "{what}");
            assert_eq!(without.probe_sites(), with.probe_sites(), "{what}");
            let gp = with.function("runtime.gopark").unwrap();
            assert_eq!(without.function("runtime.gopark"), Some(gp.clone()), "{what}");
            assert_eq!(without.symbolize(gp.entry + 10), with.symbolize(gp.entry + 10), "{what}");
        }
    }
}

/// Stripped binaries read the wait reasons through `runtime.waitReason.String` (array address
/// and length from its code); the data-scan fallback must find the same array (it may run past
/// its end into a following string variable, never stop short).
#[test]
fn wait_reason_scan_agrees_with_code() {
    for tc in [Some("go1.19.13"), Some("go1.21.13"), Some("go1.23.12"), None] {
        let Some(p) = fixture_or_skip(tc, Variant::Stripped) else {
            continue;
        };
        let data = std::fs::read(&p).unwrap();
        let b = GoBinary::from_bytes(&data).unwrap();
        let names = b.wait_reasons().names();
        assert_eq!(names, table_wait_reasons(b.build_info().go_version.minor).unwrap().as_slice());
        let scanned = goscope_inspect::wait_reasons_by_scan(&data).expect("scan");
        assert!(scanned.len() >= names.len() && scanned[..names.len()] == *names, "{}", p.display());
    }
}

/// DWARF in all three encodings: SHF_COMPRESSED (Go's default), GNU `.zdebug_*` and plain.
#[test]
fn dwarf_compression_variants() {
    let Some(p) = fixture_or_skip(Some("go1.21.13"), Variant::Plain) else {
        return;
    };
    let reference = open(&p);
    let dir = p.parent().unwrap();
    for (flag, name) in [("--compress-debug-sections=zlib-gnu", "zdebug"), ("--decompress-debug-sections", "uncompressed")] {
        let out = dir.join(format!("plain-{name}"));
        let ok = Command::new("objcopy").arg(flag).arg(&p).arg(&out).status().is_ok_and(|s| s.success());
        if !ok {
            eprintln!("objcopy {flag} unavailable; {name} DWARF not tested");
            continue;
        }
        let b = open(&out);
        assert_eq!(b.offsets_source(), OffsetsSource::Dwarf, "{name}");
        assert_eq!(b.layout(), reference.layout(), "{name}");
        assert!(!b.stripped());
    }
}
