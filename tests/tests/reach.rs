//! Goroutine leaks proven by reachability (`goscope_memory::find_leaked`) on real processes.
//!
//! The `leaks` fixture makes two leaks — a sender on a channel only it references, and two
//! goroutines in an AB-BA channel cycle — next to blocked goroutines that are healthy because
//! something that can run references what they wait on (a package-level variable, a heap object
//! on main's stack, a sleeping mutex holder, a timer, a struct two pointers deep). The analysis
//! must report exactly the leaks, with "could wake" edges both ways inside the cycle, on every Go
//! release the tests cover, plain and PIE. A stripped binary is refused: proof needs symbols.
//!
//! Reading another process's memory needs root (or CAP_SYS_PTRACE): without it the test prints
//! SKIP, except under CI=true, where it fails.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use goscope_inspect::GoBinary;
use goscope_memory::{
    GStatus, HeapObject, ProcessHeap, ProcessMemory, ReachError, ReachGoroutine, ReachMemory, ReachOptions, ReachReport,
    Snapshot, find_leaked, snapshot,
};
use goscope_tests::{ChildGuard, GO_VERSIONS, GoFixture, Variant};

const FIXTURE: &str = "leaks";
const LEAKED_ROLES: [&str; 2] = ["leak_sender", "abba"];
/// How long a check keeps re-analysing (every 500 ms) while a verdict misses a leak: goscope
/// re-proves on every scan, so a proof missed once must come within this, not at the first try.
const REANALYSIS_DEADLINE: Duration = Duration::from_secs(15);

fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    let reason = format!("not root (euid {euid}): reading another process's memory needs root or CAP_SYS_PTRACE");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {reason}");
    }
    eprintln!("SKIP: {reason}");
    false
}

/// Runtime minus link-time address of the executable: the mapping of file offset 0 against the
/// first PT_LOAD's `p_vaddr - p_offset` (0 for ET_EXEC).
fn load_bias(pid: u32, exe: &Path) -> Result<u64> {
    let elf = std::fs::read(exe)?;
    let field = |off: usize, len: usize| -> Result<u64> {
        let b = elf.get(off..off + len).ok_or_else(|| anyhow!("truncated ELF"))?;
        let mut v = [0u8; 8];
        v[..len].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    };
    const ET_DYN: u64 = 3;
    if field(0x10, 2)? != ET_DYN {
        return Ok(0);
    }
    let (phoff, phentsize, phnum) = (field(0x20, 8)? as usize, field(0x36, 2)? as usize, field(0x38, 2)? as usize);
    let first_load = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&ph| field(ph, 4).is_ok_and(|t| t == 1))
        .ok_or_else(|| anyhow!("no PT_LOAD"))?;
    let link_base = field(first_load + 0x10, 8)? - field(first_load + 8, 8)?;
    let exe = exe.canonicalize()?;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 6 && Path::new(f[5]) == exe && f[2].trim_start_matches('0').is_empty() {
            let start = u64::from_str_radix(f[0].split('-').next().unwrap_or(""), 16)?;
            return Ok(start - link_base);
        }
    }
    bail!("{} is not mapped in {pid}", exe.display())
}

/// A snapshot in which every reported goroutine is parked (the fixture's goroutines go from
/// their report to where they block in microseconds, but give them time).
fn settled_snapshot(mem: &ProcessMemory, binary: &GoBinary, bias: u64, goids: &BTreeSet<u64>) -> Result<Snapshot> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snap = snapshot(mem, binary, bias)?;
        let parked =
            goids.iter().all(|id| snap.goroutine(*id).is_some_and(|g| g.status == GStatus::Waiting && g.wait_reason.is_some()));
        if parked || Instant::now() > deadline {
            return Ok(snap);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the fixture and the analysis; checks the verdict; returns a line for the log.
fn check(fixture: &GoFixture) -> Result<String> {
    let mut child: ChildGuard = fixture.spawn(&[])?;
    let info = child.expect_json("goids", Duration::from_secs(60))?;
    let roles: BTreeMap<String, Vec<u64>> = serde_json::from_value(info["goids"].clone()).context("goids")?;
    let ids = |role: &str| roles.get(role).cloned().unwrap_or_default();
    let all: BTreeSet<u64> = roles.values().flatten().copied().collect();
    let expected: BTreeSet<u64> = LEAKED_ROLES.iter().flat_map(|r| ids(r)).collect();
    ensure!(expected.len() == 3 && all.len() == 10, "fixture reported {roles:?}");

    let pid = child.pid();
    let binary = GoBinary::open(&fixture.path)?;
    let bias = load_bias(pid, &fixture.path)?;
    let mem = ProcessMemory::new(pid)?;
    // Like goscope, which re-analyses on every scan, look again when a verdict misses a leak:
    // before Go 1.22 every word is a possible pointer, and on a loaded machine a goroutine caught
    // mid-step can hold a passing copy of one. A false leak ends the search at once (and fails).
    let deadline = Instant::now() + REANALYSIS_DEADLINE;
    let (snap, goroutines, report) = loop {
        let snap = settled_snapshot(&mem, &binary, bias, &all)?;
        let goroutines: Vec<ReachGoroutine> =
            snap.goroutines.iter().filter_map(|g| ReachGoroutine::from_goroutine(g, None)).collect();
        let report =
            match find_leaked(&mem, &binary, bias, &goroutines, &ReachOptions { explain: true, ..ReachOptions::default() }) {
                Err(e @ ReachError::NeedsSymbols(_)) if fixture.variant == Variant::Stripped => {
                    return Ok(format!("{}: refused as expected: {e}", fixture.label()));
                }
                r => r?,
            };
        if Instant::now() > deadline || report.leaked.len() >= expected.len() {
            break (snap, goroutines, report);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    ensure!(fixture.variant != Variant::Stripped, "a stripped binary was analysed: {report:?}");
    let describe = |r: &ReachReport| {
        let gs: Vec<String> = snap
            .goroutines
            .iter()
            .map(|g| format!("{} [{}] {:?}", g.goid, g.wait_reason.as_deref().unwrap_or(g.status.name()), g.start_function))
            .collect();
        format!("roles {roles:?}\nreport {r:?}\ngoroutines:\n  {}", gs.join("\n  "))
    };
    ensure!(report.complete, "incomplete analysis\n{}", describe(&report));
    let leaked: BTreeSet<u64> = report.leaked.iter().copied().collect();
    ensure!(leaked == expected, "leaked {leaked:?}, expected {expected:?}\n{}", describe(&report));
    let abba = ids("abba");
    for (from, to) in [(abba[0], abba[1]), (abba[1], abba[0])] {
        ensure!(
            report.could_wake.get(&from).is_some_and(|s| s.contains(&to)),
            "no could_wake edge {from} -> {to}\n{}",
            describe(&report)
        );
    }
    let sender = ids("leak_sender")[0];
    ensure!(
        report.could_wake.get(&sender).is_none_or(|s| s.is_empty()),
        "the lone sender could wake {:?}\n{}",
        report.could_wake.get(&sender),
        describe(&report)
    );
    Ok(format!(
        "{}: {} goroutines, leaked {:?}, could_wake {:?}; {} objects scanned, stack frames {} by their maps and {} \
         conservative, {} bytes read in {:.1} ms",
        fixture.label(),
        goroutines.len(),
        report.leaked,
        report.could_wake,
        report.objects_scanned,
        report.stack_frames_precise,
        report.stack_frames_conservative,
        report.bytes_read,
        report.elapsed_ns as f64 / 1e6
    ))
}

#[test]
fn leaks_are_proven_exactly() {
    if !require_root() {
        return;
    }
    let mut specs: Vec<(&str, Option<&str>, Variant)> = vec![(FIXTURE, None, Variant::Stripped)];
    for version in std::iter::once(None).chain(GO_VERSIONS.iter().map(|v| Some(*v))) {
        for variant in [Variant::Plain, Variant::Pie] {
            specs.push((FIXTURE, version, variant));
        }
    }
    let mut failures = Vec::new();
    for (spec, built) in specs.iter().zip(GoFixture::build_many(&specs)) {
        let result = built.and_then(|f| check(&f));
        match result {
            Ok(line) => eprintln!("{line}"),
            Err(e) => failures.push(format!("{FIXTURE} {:?} {}: {e:#}", spec.1, spec.2)),
        }
    }
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), specs.len(), failures.join("\n\n"));
}

/// The `syncleaks` fixture: sync-primitive waits that began before the analysis. Every leaked
/// one must be proven on every release, which before Go 1.26 needs the semaphore's address from
/// the runtime's semtable, or a Cond's notify list (g.waiting does not name them); the healthy
/// ones never.
fn check_sync(fixture: &GoFixture) -> Result<String> {
    const LEAKED: [&str; 5] = ["mutex_orphan", "rw_writer", "wg_waiter", "lock_abba", "cond_orphan"];
    let mut child: ChildGuard = fixture.spawn(&[])?;
    let info = child.expect_json("goids", Duration::from_secs(60))?;
    let roles: BTreeMap<String, Vec<u64>> = serde_json::from_value(info["goids"].clone()).context("goids")?;
    let all: BTreeSet<u64> = roles.values().flatten().copied().collect();
    let expected: BTreeSet<u64> = LEAKED.iter().flat_map(|r| roles.get(*r).cloned().unwrap_or_default()).collect();
    ensure!(expected.len() == 6 && all.len() == 10, "fixture reported {roles:?}");

    let pid = child.pid();
    let binary = GoBinary::open(&fixture.path)?;
    let bias = load_bias(pid, &fixture.path)?;
    let mem = ProcessMemory::new(pid)?;
    let deadline = Instant::now() + REANALYSIS_DEADLINE;
    let (snap, report) = loop {
        let snap = settled_snapshot(&mem, &binary, bias, &all)?;
        let goroutines: Vec<ReachGoroutine> =
            snap.goroutines.iter().filter_map(|g| ReachGoroutine::from_goroutine(g, None)).collect();
        let report = find_leaked(&mem, &binary, bias, &goroutines, &ReachOptions { explain: true, ..ReachOptions::default() })?;
        if Instant::now() > deadline || report.leaked.len() >= expected.len() {
            break (snap, report);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let describe = || {
        let gs: Vec<String> = snap
            .goroutines
            .iter()
            .filter(|g| all.contains(&g.goid))
            .map(|g| format!("{} [{}] sema {:?}", g.goid, g.wait_reason.as_deref().unwrap_or(g.status.name()), g.sema_addr))
            .collect();
        format!("roles {roles:?}\nreport {report:?}\ngoroutines:\n  {}", gs.join("\n  "))
    };
    // Every semaphore wait of the fixture is named, the healthy ones too.
    let unnamed: Vec<u64> = all.iter().copied().filter(|id| snap.goroutine(*id).is_none_or(|g| g.sema_addr.is_none())).collect();
    ensure!(unnamed.is_empty(), "no semaphore address for {unnamed:?}\n{}", describe());
    ensure!(report.complete, "incomplete analysis\n{}", describe());
    let leaked: BTreeSet<u64> = report.leaked.iter().filter(|g| all.contains(g)).copied().collect();
    ensure!(leaked == expected, "leaked {leaked:?}, expected {expected:?}\n{}", describe());
    Ok(format!("{}: leaked {:?}, could_wake {:?}", fixture.label(), report.leaked, report.could_wake))
}

fn sync_matrix(version: Option<&str>) -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let fixture = GoFixture::build("syncleaks", version, Variant::Plain)?;
    eprintln!("{}", check_sync(&fixture)?);
    Ok(())
}

#[test]
fn sync_leaks_before_attach_installed_go() -> Result<()> {
    sync_matrix(None)
}

goscope_tests::go_version_tests!(sync_matrix);

/// The `layouts` fixture's objects: where the runtime records which words of an object hold
/// pointers (Go 1.19: the heap arena's 2-bit bitmap; 1.20/1.21: its 1-bit bitmap; 1.22+: the
/// span's bitmap or the malloc header's type) must say exactly what the types say, so that
/// scanning by those masks follows every pointer and nothing else in the data.
fn pointer_masks_match_the_types(version: Option<&str>) -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let fixture = GoFixture::build("layouts", version, Variant::Plain)?;
    let mut child = fixture.spawn(&[])?;
    let info = child.expect_json("objects", Duration::from_secs(60))?;
    let objects = info["objects"].as_array().context("objects")?;
    let binary = GoBinary::open(&fixture.path)?;
    let mem = ProcessMemory::new(child.pid())?;
    let mut heap = ProcessHeap::new(&mem, &binary, load_bias(child.pid(), &fixture.path)?)?;
    let addrs: Vec<u64> = objects.iter().filter_map(|o| o["addr"].as_u64()).collect();
    ensure!(addrs.len() == objects.len() && !addrs.is_empty(), "fixture printed {info}");
    let found: Vec<HeapObject> = heap
        .objects(&addrs)?
        .into_iter()
        .zip(&addrs)
        .map(|(o, a)| o.with_context(|| format!("no object at {a:#x}")))
        .collect::<Result<_>>()?;
    let first_words = heap.read_words(&found.iter().map(|o| (o.base, o.base + 8)).collect::<Vec<_>>())?;
    let requests: Vec<(HeapObject, u64)> =
        found.iter().zip(first_words).map(|(o, w)| (*o, w.and_then(|w| w.first().copied()).unwrap_or(0))).collect();
    let masks = heap.pointer_masks(&requests)?;
    let mut problems = Vec::new();
    for ((object, found), mask) in objects.iter().zip(&found).zip(masks) {
        let Some(mask) = mask else {
            problems.push(format!("no mask for {object} ({found:?})"));
            continue;
        };
        let first = ((object["addr"].as_u64().unwrap_or(0) - found.base) / 8) as usize;
        let pointers: BTreeSet<usize> =
            object["pointers"].as_array().into_iter().flatten().filter_map(|w| w.as_u64()).map(|w| first + w as usize).collect();
        // Past the data the runtime may mark more (a malloc header's type tiles the whole slot, as
        // the collector scans it): those words are zero, so only the data's words must match.
        let words = object["words"].as_u64().unwrap_or(0) as usize;
        let marked: BTreeSet<usize> =
            mask.iter().enumerate().filter(|(w, p)| **p && (first..first + words).contains(w)).map(|(w, _)| w).collect();
        if marked != pointers {
            problems.push(format!("{object}: words {marked:?} marked, the type has {pointers:?} ({found:?})"));
        }
    }
    ensure!(problems.is_empty(), "{}:\n{}", fixture.label(), problems.join("\n"));
    Ok(())
}

mod layouts {
    goscope_tests::go_version_tests!(super::pointer_masks_match_the_types);
}
