//! Thousands of seeded adversarial memories: a plausible goroutine list, g structs, stacks, sudogs
//! and channels laid out as the runtime would, then broken the ways a process can break them
//! (cycles, self-pointers, huge lengths, allgs pointing at itself, reversed stack bounds, random
//! words), and random bytes. Every run must end without a panic, within a bounded number of bytes
//! requested, time and allocation.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use goscope_inspect::{GoBinary, RuntimeLayout};

use super::*;

/// A real (cut-down) Go 1.26 binary from the inspect fuzz corpus: its runtime layout (from DWARF),
/// wait reasons and a dozen symbolized functions.
const SEED_BINARY: &[u8] = include_bytes!("../../../inspect/fuzz/corpus/go_binary/seed-go1.26-dwarf");
/// Size of the fake memory region.
const REGION: usize = 64 << 10;
/// Read budget of each snapshot.
const BUDGET: u64 = 64 << 20;
/// Most bytes one snapshot of a [`REGION`]-byte memory may request.
const MAX_REQUESTED: u64 = 8 << 20;
/// Most bytes one run may allocate at its peak (beyond what was allocated before it).
const MAX_PEAK_ALLOC: usize = 32 << 20;
/// Slowest acceptable run (debug build, on a loaded 2-vCPU machine).
const MAX_RUN: Duration = Duration::from_secs(2);

/// Counts this thread's live heap bytes and their peak (other threads' tests do not disturb it).
struct CountingAlloc;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

#[allow(unsafe_code, reason = "a counting wrapper of the system allocator, for the allocation bound")]
// SAFETY: every call is forwarded to the system allocator unchanged; the counters are plain
// thread-local cells without destructors, safe to touch from inside an allocation.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|l| {
            l.set(l.get() + layout.size());
            let _ = PEAK.try_with(|p| p.set(p.get().max(l.get())));
        });
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(layout.size())));
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Peak heap growth of this thread while `f` runs.
fn peak_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let r = f();
    (r, PEAK.with(Cell::get) - before)
}

/// xorshift64*: reproducible from the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

fn binary() -> GoBinary {
    GoBinary::from_bytes(SEED_BINARY).expect("the seed binary analyses")
}

/// Offsets in the region of a [`World`]: list, g structs, stacks, sudogs, channels.
const LIST: u64 = 0x100;
const GS: u64 = 0x1000;
const G_STRIDE: u64 = 0x200;
const STACKS: u64 = 0x6000;
const STACK_SIZE: u64 = 0x400;
const SUDOGS: u64 = 0xc000;
const SUDOG_STRIDE: u64 = 0x80;
const HCHANS: u64 = 0xd000;
const HCHAN_STRIDE: u64 = 0x80;
/// Most goroutines in a world (every table above has room for this many).
const MAX_GS: u64 = 16;

/// A memory under construction.
struct World<'a> {
    bytes: Vec<u8>,
    layout: &'a RuntimeLayout,
}

impl World<'_> {
    fn put(&mut self, off: u64, value: u64) {
        let off = off as usize;
        if let Some(w) = self.bytes.get_mut(off..off + 8) {
            w.copy_from_slice(&value.to_le_bytes());
        }
    }

    fn put_u32(&mut self, off: u64, value: u32) {
        let off = off as usize;
        if let Some(w) = self.bytes.get_mut(off..off + 4) {
            w.copy_from_slice(&value.to_le_bytes());
        }
    }

    fn put_u8(&mut self, off: u64, value: u8) {
        if let Some(b) = self.bytes.get_mut(off as usize) {
            *b = value;
        }
    }

    /// Goroutine `i`, blocked in a channel receive (or runnable) with a frame-pointer chain of
    /// `depth` frames returning to `pc`, waiting through a sudog on channel `i`.
    fn goroutine(&mut self, i: u64, status: u32, reason: u8, pc: u64, depth: u64) {
        let l = self.layout;
        let g = GS + i * G_STRIDE;
        let (lo, hi) = (BASE + STACKS + i * STACK_SIZE, BASE + STACKS + (i + 1) * STACK_SIZE);
        self.put(g, lo);
        self.put(g + 8, hi);
        self.put(g + u64::from(l.g_goid), i + 1);
        self.put_u32(g + u64::from(l.g_atomicstatus), status);
        self.put_u8(g + u64::from(l.g_waitreason), reason);
        let sp = hi - 8 * (2 * depth + 2);
        self.put(g + u64::from(l.g_sched_sp), sp);
        self.put(g + u64::from(l.g_sched_pc), pc);
        // Frame records [bp] = caller's bp, [bp+8] = return address, going up the stack.
        let mut bp = sp + 8;
        self.put(g + u64::from(l.g_sched_bp), bp);
        for k in 0..depth {
            let caller = if k + 1 == depth { 0 } else { bp + 16 };
            self.put(bp - BASE, caller);
            self.put(bp + 8 - BASE, pc + 1);
            bp = caller;
        }
        let sudog = BASE + SUDOGS + i * SUDOG_STRIDE;
        let hchan = BASE + HCHANS + i * HCHAN_STRIDE;
        self.put(g + u64::from(l.g_waiting), sudog);
        self.put(sudog - BASE + u64::from(l.sudog_g), BASE + g);
        self.put(sudog - BASE + u64::from(l.sudog_c), hchan);
        self.put(hchan - BASE + u64::from(l.hchan_dataqsiz), 4);
        self.put(hchan - BASE + u64::from(l.hchan_buf), hchan + 0x40);
        self.put(hchan - BASE + u64::from(l.hchan_elemsize), 8);
    }
}

/// A plausible world of `n` goroutines, then `rng`'s choice of damage. Returns the region and
/// the snapshot flags.
fn adversarial(rng: &mut Rng, layout: &RuntimeLayout, pc: u64, chan_receive: u8) -> (Vec<u8>, u8) {
    let mut w = World { bytes: vec![0; REGION], layout };
    let n = 1 + rng.below(MAX_GS);
    w.put(0, BASE + LIST);
    w.put(8, n);
    w.put(16, n);
    w.put(24, n);
    for i in 0..n {
        w.put(LIST + 8 * i, BASE + GS + i * G_STRIDE);
        let status = if rng.chance(4) { 1 } else { 4 };
        w.goroutine(i, status, chan_receive, pc, 1 + rng.below(6));
    }
    let damage = rng.below(14);
    let g = |rng: &mut Rng| GS + rng.below(n) * G_STRIDE;
    let l = layout;
    match damage {
        // allgs pointing at itself, at its own header, with huge or inconsistent lengths.
        0 => w.put(0, BASE),
        1 => {
            w.put(8, 1 << 40);
            w.put(16, 1 << 40);
            w.put(24, 1 << 40);
        }
        2 => {
            w.put(8, u64::MAX);
            w.put(16, u64::MAX - 1);
            w.put(24, u64::MAX);
        }
        3 => w.put(0, u64::MAX - 7),
        // g pointers to themselves, to the list, misaligned, at the top of the address space.
        4 => {
            let slot = LIST + 8 * rng.below(n);
            w.put(slot, [BASE + slot, BASE, BASE + GS + 3, u64::MAX - 7, 8][rng.below(5) as usize]);
        }
        // Stack bounds reversed, empty, spanning the address space.
        5 => {
            let g = g(rng);
            let (lo, hi) = [(BASE + STACKS + 0x400, BASE + STACKS), (0, u64::MAX), (u64::MAX - 0x3ff, u64::MAX), (8, 8)]
                [rng.below(4) as usize];
            w.put(g, lo);
            w.put(g + 8, hi);
        }
        // Frame pointers that loop, point down, or leave the stack.
        6 => {
            let g = g(rng);
            let bp = u64::from_le_bytes(w.bytes[(g + u64::from(l.g_sched_bp)) as usize..][..8].try_into().unwrap());
            let target = [bp, bp - 16, u64::MAX - 15, bp + 1][rng.below(4) as usize];
            w.put(bp.wrapping_sub(BASE), target);
        }
        // Sudog chains that cycle (self, or two sudogs on each other), point back at another g.
        7 => {
            let i = rng.below(n);
            let s = SUDOGS + i * SUDOG_STRIDE;
            let other = SUDOGS + rng.below(n) * SUDOG_STRIDE;
            w.put(s + u64::from(l.sudog_waitlink), BASE + other);
            w.put(other + u64::from(l.sudog_waitlink), BASE + s);
            w.put_u8(s + u64::from(l.sudog_is_select), 1);
        }
        8 => {
            let s = SUDOGS + rng.below(n) * SUDOG_STRIDE;
            w.put(s + u64::from(l.sudog_g), u64::MAX - 7);
            w.put(s + u64::from(l.sudog_c), BASE + s);
        }
        // Channels with huge counts, element sizes, element types pointing anywhere.
        9 => {
            let c = HCHANS + rng.below(n) * HCHAN_STRIDE;
            w.put(c + u64::from(l.hchan_qcount), u64::MAX);
            w.put(c + u64::from(l.hchan_dataqsiz), 1 << 62);
            w.put(c + u64::from(l.hchan_elemsize), u64::MAX);
            w.put(c + u64::from(l.hchan_elemtype), [BASE + c, u64::MAX, 1][rng.below(3) as usize]);
        }
        // Wait reasons and statuses out of range; goids at the edges.
        10 => {
            let g = g(rng);
            w.put_u8(g + u64::from(l.g_waitreason), 0xff);
            w.put_u32(g + u64::from(l.g_atomicstatus), [0x1004, 0xffff_ffff, 6, 2][rng.below(4) as usize]);
            w.put(g + u64::from(l.g_goid), [0, u64::MAX, 1 << 48][rng.below(3) as usize]);
        }
        // Every g the same g (duplicates), or the same pointer of all ones.
        11 => {
            let g = if rng.chance(2) { BASE + GS } else { u64::MAX };
            for i in 0..n {
                w.put(LIST + 8 * i, g);
            }
        }
        // Random words anywhere.
        12 => {
            for _ in 0..1 + rng.below(64) {
                let off = rng.below(REGION as u64 / 8) * 8;
                let v = match rng.below(4) {
                    0 => rng.next(),
                    1 => BASE + rng.below(REGION as u64),
                    2 => u64::MAX - rng.below(64),
                    _ => rng.below(64),
                };
                w.put(off, v);
            }
        }
        // Random bytes.
        _ => {
            for b in &mut w.bytes {
                *b = rng.next() as u8;
            }
            w.put(0, BASE + LIST);
        }
    }
    let flags = if rng.chance(3) { rng.next() as u8 } else { 0 };
    (w.bytes, flags)
}

#[test]
fn snapshots_of_adversarial_memory_end_bounded_without_panicking() {
    let binary = binary();
    let layout = binary.layout().clone();
    let pc = binary.function("runtime.gopark").map_or(0x40_1000, |f| f.entry + 8);
    let chan_receive = binary.wait_reasons().code_of("chan receive").unwrap_or(14);
    let mut worst = (0u64, 0usize, Duration::ZERO);
    let mut reported = 0usize;
    for seed in 1..=3000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let (region, flags) = adversarial(&mut rng, &layout, pc, chan_receive);
        let started = Instant::now();
        let (run, peak) = peak_alloc(|| snapshot(&binary, FakeProcess::flat(region), &snapshot_options(flags), BUDGET));
        let took = started.elapsed();
        assert!(run.bytes_requested <= MAX_REQUESTED, "seed {seed}: {} bytes requested", run.bytes_requested);
        assert!(peak <= MAX_PEAK_ALLOC, "seed {seed}: {peak} bytes allocated at the peak");
        assert!(took <= MAX_RUN, "seed {seed}: took {took:?}");
        if let Ok(snap) = &run.result {
            assert!(
                snap.goroutines.len() as u64 <= MAX_GS,
                "seed {seed}: {} goroutines from {MAX_GS} g structs",
                snap.goroutines.len()
            );
            reported += snap.goroutines.len();
        }
        worst = (worst.0.max(run.bytes_requested), worst.1.max(peak), worst.2.max(took));
    }
    eprintln!("worst of 3000 snapshots: {} bytes requested, {} bytes allocated, {:?}", worst.0, worst.1, worst.2);
    // The plausible parts decode: the generator is not just feeding garbage.
    assert!(reported > 3000, "only {reported} goroutines decoded in 3000 worlds");
}

/// `n` goroutines blocked in a channel receive, each through a sudog on a channel of its own.
fn plausible_world(binary: &GoBinary, n: u64) -> Vec<u8> {
    let layout = binary.layout();
    let pc = binary.function("runtime.gopark").map_or(0x40_1000, |f| f.entry + 8);
    let chan_receive = binary.wait_reasons().code_of("chan receive").unwrap_or(14);
    let mut w = World { bytes: vec![0; REGION], layout };
    w.put(0, BASE + LIST);
    for k in [8, 16, 24] {
        w.put(k, n);
    }
    for i in 0..n {
        w.put(LIST + 8 * i, BASE + GS + i * G_STRIDE);
        w.goroutine(i, 4, chan_receive, pc, 3);
    }
    w.bytes
}

#[test]
fn a_plausible_world_decodes_its_goroutines_and_channels() {
    let binary = binary();
    let run = snapshot(&binary, FakeProcess::flat(plausible_world(&binary, 2)), &SnapshotOptions::default(), BUDGET);
    let snap = run.result.expect("a plausible world snapshots");
    assert_eq!(snap.goroutines.iter().map(|g| g.goid).collect::<Vec<_>>(), [1, 2]);
    assert!(snap.goroutines.iter().all(|g| g.channels.len() == 1), "{:?}", snap.goroutines);
    assert_eq!(snap.channels.len(), 2);
}

/// Writes the `memory` fuzz target's seeds (agent/inspect/fuzz/corpus/memory/seed-*): plausible
/// worlds, which lead the fuzzer past the validation into stacks, sudogs and channels.
#[test]
#[ignore = "run by hand: cargo test -p goscope-memory --lib write_memory_fuzz_seeds -- --ignored"]
fn write_memory_fuzz_seeds() {
    let binary = binary();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../inspect/fuzz/corpus/memory");
    std::fs::create_dir_all(&dir).unwrap();
    for n in [1, 3] {
        let mut region = plausible_world(&binary, n);
        let used = region.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        region.truncate(used);
        let mut seed = vec![0u8];
        seed.extend(region);
        std::fs::write(dir.join(format!("seed-world-{n}")), seed).unwrap();
    }
}

#[test]
fn random_bytes_as_memory_never_panic() {
    let binary = binary();
    for seed in 1..=2000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let len = rng.below(4096) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let run = snapshot_bytes(&binary, &data);
        assert!(run.bytes_requested <= MAX_REQUESTED, "seed {seed}: {} bytes", run.bytes_requested);
        let _ = reach_bytes(&data);
        let _ = semtable(&binary, FakeProcess::flat(data));
    }
}

/// `runtime.semtable` treaps whose sudogs point at themselves, at each other, at the table: the
/// walk ends (each sudog once), and a g found twice is left out.
#[test]
fn semaphore_treaps_with_cycles_end() {
    let binary = binary();
    let l = binary.layout().clone();
    let mut found = 0;
    for seed in 1..=500u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut region = vec![0u8; 32 << 10];
        let mut put = |off: u64, v: u64| region[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
        let sudog = |i: u64| BASE + 0x4000 + 0x80 * i;
        for entry in 0..251 {
            if rng.chance(4) {
                put(entry * 64 + 8, sudog(rng.below(32)));
            }
        }
        for i in 0..32 {
            let s = sudog(i) - BASE;
            put(s + u64::from(l.sudog_g), BASE + 0x6000 + 8 * rng.below(4));
            put(s + u64::from(l.sudog_elem), BASE + 4 * rng.below(1024));
            for link in [u64::from(l.sudog_next), u64::from(l.sudog_next) + 8, u64::from(l.sudog_waitlink)] {
                let target = match rng.below(4) {
                    0 => 0,
                    1 => sudog(i),
                    2 => BASE,
                    _ => sudog(rng.below(32)),
                };
                put(s + link, target);
            }
        }
        let started = Instant::now();
        let waits = semtable(&binary, FakeProcess::flat(region)).expect("the table reads");
        assert!(started.elapsed() <= MAX_RUN, "seed {seed}");
        assert!(waits.len() <= 4, "seed {seed}: {} distinct gs from 4", waits.len());
        found += waits.len();
    }
    assert!(found > 0, "the walk finds the waiters it can");
}

/// Heaps with cycles, self-references, goroutines sharing one g, stacks reversed or spanning the
/// address space: the fixpoint ends, within its budget, and proves nothing it cannot.
#[test]
fn reachability_over_adversarial_heaps_ends_bounded() {
    let opts = ReachOptions { max_bytes: 1 << 20, could_wake_max_objects: 100, explain: true };
    for seed in 1..=2000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut region = vec![0u8; 8192];
        let mut put = |off: u64, v: u64| region[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
        let n = 1 + rng.below(16);
        for i in 0..n {
            let g = 0x400 + i * 0x20;
            put(8 * i, BASE + g);
            put(128 + 8 * i, BASE + 0x1000 + rng.below(0x1000));
            let (lo, hi) = match rng.below(5) {
                0 => (BASE + 0x200, BASE + 0x100),
                1 => (0, u64::MAX),
                2 => (BASE + 0x1000, BASE + 0x1000),
                _ => (BASE + 0x1000 + i * 0x80, BASE + 0x1080 + i * 0x80),
            };
            put(g, lo);
            put(g + 8, hi);
            put(g + 16, [lo, hi, lo.wrapping_sub(8), u64::MAX][rng.below(4) as usize]);
        }
        // Pointers everywhere in the heap half: cycles, self-references, the globals.
        for _ in 0..rng.below(512) {
            let off = 0x1000 + rng.below(0x1000 / 8) * 8;
            let v = match rng.below(3) {
                0 => BASE + off,
                1 => BASE + rng.below(8192),
                _ => rng.next(),
            };
            put(off, v);
        }
        let roles: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        let started = Instant::now();
        let (report, peak) = peak_alloc(|| reach(region, &roles, rng.below(256), &opts));
        assert!(started.elapsed() <= MAX_RUN, "seed {seed}: took {:?}", started.elapsed());
        assert!(peak <= MAX_PEAK_ALLOC, "seed {seed}: {peak} bytes allocated");
        if let Ok(r) = report {
            assert!(r.bytes_read <= opts.max_bytes + 8192, "seed {seed}: read {}", r.bytes_read);
            // Only blocked goroutines can be leaked.
            for goid in &r.leaked {
                assert!(!roles[*goid as usize - 1].is_multiple_of(3), "seed {seed}: root goroutine {goid} reported leaked");
            }
        }
    }
}

/// The same seed binary with its Go version's offsets table: heap offsets included.
const SEED_BINARY_TABLE: &[u8] = include_bytes!("../../../inspect/fuzz/corpus/go_binary/seed-go1.26-symtab");

/// The leak proof on a process (span metadata, heap bitmaps, malloc headers, stack maps) over
/// heaps whose pages point at plausible and implausible mspans (zero, huge or misaligned sizes,
/// spans covering the address space), with cycles and self-references: no panic, bounded.
#[test]
fn the_process_heap_over_adversarial_span_metadata_ends_bounded() {
    let binary = GoBinary::from_bytes(SEED_BINARY_TABLE).expect("the seed binary analyses");
    let l = binary.layout().clone();
    let (start, npages, elemsize, spanclass, state) = (
        l.mspan_start_addr.unwrap() as usize,
        l.mspan_npages.unwrap() as usize,
        l.mspan_elemsize.unwrap() as usize,
        l.mspan_spanclass.unwrap() as usize,
        l.mspan_state.unwrap() as usize,
    );
    let opts = ReachOptions { max_bytes: 1 << 20, could_wake_max_objects: 100, explain: true };
    let mut completed = 0;
    for seed in 1..=1500u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut region = vec![0u8; 32 << 10];
        let put = |region: &mut Vec<u8>, off: usize, v: u64| region[off..off + 8].copy_from_slice(&v.to_le_bytes());
        // The four pages' mspans: one plausible span over the region, or garbage.
        let mspan = 0x100usize;
        for page in 0..4 {
            let target = match rng.below(6) {
                0 => BASE + rng.below(32 << 10),
                1 => u64::MAX - 7,
                _ => BASE + mspan as u64,
            };
            put(&mut region, 8 * page, target);
        }
        let (span_start, pages, size) = match rng.below(6) {
            0 => (BASE, 4, 0),
            1 => (BASE, u64::MAX >> 13, 64),
            2 => (BASE + 3, 4, 64),
            3 => (u64::MAX - 8191, 1, 8192),
            _ => (BASE, 4, [16, 64, 1024, 8192][rng.below(4) as usize]),
        };
        put(&mut region, mspan + start, span_start);
        put(&mut region, mspan + npages, pages);
        put(&mut region, mspan + elemsize, size);
        region[mspan + spanclass] = rng.next() as u8;
        region[mspan + state] = if rng.chance(5) { rng.next() as u8 } else { 1 };
        // Goroutines: g structs at 0x1000 + 0x100i with stacks in [0x4000, 0x6000).
        let n = 1 + rng.below(8);
        for i in 0..n {
            let g = 0x1000 + 0x100 * i as usize;
            put(&mut region, 0x40 + 8 * i as usize, BASE + g as u64);
            put(&mut region, 0xc0 + 8 * i as usize, BASE + rng.below(32 << 10));
            let (lo, hi) = if rng.chance(5) { (rng.next(), rng.next()) } else { (BASE + 0x4000, BASE + 0x6000) };
            put(&mut region, g, lo);
            put(&mut region, g + 8, hi);
            put(&mut region, g + l.g_sched_sp as usize, BASE + 0x4000 + rng.below(0x2000));
            put(&mut region, g + l.g_sched_pc as usize, rng.next());
        }
        for _ in 0..rng.below(256) {
            let off = 0x2000 + 8 * rng.below((30 << 10) / 8) as usize;
            let v = if rng.chance(2) { BASE + rng.below(32 << 10) } else { rng.next() };
            if off + 8 <= region.len() {
                put(&mut region, off, v);
            }
        }
        let roles: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        let started = Instant::now();
        let (report, peak) = peak_alloc(|| process_heap(&binary, region, &roles, rng.below(64) * 8, &opts));
        assert!(started.elapsed() <= MAX_RUN, "seed {seed}: took {:?}", started.elapsed());
        assert!(peak <= MAX_PEAK_ALLOC, "seed {seed}: {peak} bytes allocated");
        if let Ok(r) = report {
            completed += usize::from(r.complete);
            for goid in &r.leaked {
                assert!(!roles[*goid as usize - 1].is_multiple_of(3), "seed {seed}: root goroutine {goid} reported leaked");
            }
        }
    }
    eprintln!("{completed} of 1500 process-heap analyses complete");
}
