//! The fixpoint on hand-built memory.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::*;

/// Sparse memory: words by address (unset words read as 0), heap objects, goroutine stacks.
#[derive(Default)]
struct FakeMemory {
    words: BTreeMap<u64, u64>,
    objects: BTreeMap<u64, HeapObject>,
    stacks: HashMap<u64, GoroutineStack>,
    unreadable: Vec<(u64, u64)>,
    bytes: u64,
    /// Every range read, to check what was (not) scanned.
    reads: Vec<(u64, u64)>,
    /// Pointer words of typed objects, by base.
    masks: HashMap<u64, Vec<bool>>,
    /// Pointer words of stacks by their stack maps, by the stack's `lo` (stacks with a context).
    stack_masks: HashMap<u64, Vec<bool>>,
}

impl FakeMemory {
    fn object(&mut self, base: u64, size: u64, pointers: &[(u64, u64)]) -> u64 {
        self.objects.insert(base, HeapObject { base, size, noscan: false, typed: false });
        for &(off, v) in pointers {
            self.words.insert(base + off, v);
        }
        base
    }

    fn noscan(&mut self, base: u64, size: u64, words: &[(u64, u64)]) -> u64 {
        self.object(base, size, words);
        self.objects.get_mut(&base).unwrap().noscan = true;
        base
    }

    /// A goroutine: its g struct (a heap object, here 0x100 bytes at `g`) and a stack at
    /// `[stack, stack + 0x1000)` holding `words` from its top down.
    fn goroutine(&mut self, g: u64, stack: u64, words: &[u64]) {
        self.object(g, 0x100, &[]);
        let hi = stack + 0x1000;
        let scan_from = hi - 8 * words.len() as u64;
        for (i, w) in words.iter().enumerate() {
            self.words.insert(scan_from + 8 * i as u64, *w);
        }
        self.stacks.insert(g, GoroutineStack { lo: stack, hi, scan_from, context: None });
    }

    fn was_read(&self, addr: u64) -> bool {
        self.reads.iter().any(|&(s, e)| (s..e).contains(&addr))
    }
}

impl ReachMemory for FakeMemory {
    fn stacks(&mut self, g_addrs: &[u64]) -> Result<Vec<Option<GoroutineStack>>, ReachError> {
        Ok(g_addrs.iter().map(|g| self.stacks.get(g).copied()).collect())
    }

    fn objects(&mut self, addrs: &[u64]) -> Result<Vec<Option<HeapObject>>, ReachError> {
        Ok(addrs
            .iter()
            .map(|&a| {
                let (_, o) = self.objects.range(..=a).next_back()?;
                (a < o.base + o.size).then_some(*o)
            })
            .collect())
    }

    fn read_words(&mut self, ranges: &[(u64, u64)]) -> Result<Vec<Option<Vec<u64>>>, ReachError> {
        Ok(ranges
            .iter()
            .map(|&(s, e)| {
                self.bytes += e - s;
                self.reads.push((s, e));
                if self.unreadable.iter().any(|&(us, ue)| us < e && s < ue) {
                    return None;
                }
                Some((s..e).step_by(8).map(|a| self.words.get(&a).copied().unwrap_or(0)).collect())
            })
            .collect())
    }

    fn pointer_masks(&mut self, objects: &[(HeapObject, u64)]) -> Result<Vec<Option<Vec<bool>>>, ReachError> {
        Ok(objects.iter().map(|(o, _)| self.masks.get(&o.base).cloned()).collect())
    }

    fn stack_pointers(&mut self, stacks: &[(GoroutineStack, &[u64])]) -> Result<Vec<Option<StackPointers>>, ReachError> {
        Ok(stacks
            .iter()
            .map(|(s, words)| {
                let mask = self.stack_masks.get(&s.lo)?.clone();
                assert_eq!(mask.len(), words.len(), "the whole stack from its saved SP");
                Some(StackPointers { mask, precise_frames: 2, conservative_frames: 1 })
            })
            .collect())
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

const GLOBALS: (u64, u64) = (0x10_0000, 0x10_1000);

fn g(goid: u64, role: ReachRole) -> ReachGoroutine {
    ReachGoroutine { goid, g_addr: 0x5000_0000 + goid * 0x1000, role, untraceable: Vec::new() }
}

fn stack_of(goid: u64) -> u64 {
    0x7000_0000 + goid * 0x1_0000
}

/// Adds goroutine `goid` with these stack words.
fn spawn(mem: &mut FakeMemory, goid: u64, words: &[u64]) {
    mem.goroutine(0x5000_0000 + goid * 0x1000, stack_of(goid), words);
}

/// Gives goroutine `goid`'s stack a saved context and these pointer words (by its stack maps).
fn stack_maps(mem: &mut FakeMemory, goid: u64, mask: &[bool]) {
    let g_addr = 0x5000_0000 + goid * 0x1000;
    let s = mem.stacks.get_mut(&g_addr).unwrap();
    s.context = Some(StackContext { g_addr, pc: 0x40_1000, sp: s.scan_from, into_stack: [0; 3], defer_fields: None });
    mem.stack_masks.insert(s.lo, mask.to_vec());
}

fn run(mem: &mut FakeMemory, gs: &[ReachGoroutine]) -> ReachReport {
    find_leaked_in(mem, &[GLOBALS], gs, &ReachOptions::default()).unwrap()
}

fn edges(pairs: &[(u64, &[u64])]) -> HashMap<u64, BTreeSet<u64>> {
    pairs.iter().map(|(k, v)| (*k, v.iter().copied().collect())).collect()
}

#[test]
fn chains_through_heap_objects_from_globals_and_stacks() {
    let mut mem = FakeMemory::default();
    let (ch1, ch2, ch3, lost) = (0x2000_0000, 0x2000_1000, 0x2000_2000, 0x2000_3000);
    for c in [ch1, ch2, ch3, lost] {
        mem.object(c, 96, &[]);
    }
    // global -> a -> b -> ch1 (pointer into the middle of ch1).
    let b = mem.object(0x3000_0100, 32, &[(16, ch1 + 8)]);
    let a = mem.object(0x3000_0000, 64, &[(40, b)]);
    mem.words.insert(GLOBALS.0 + 16, a);
    // main's stack -> struct -> struct -> ch2.
    let inner = mem.object(0x3000_0200, 48, &[(8, ch2)]);
    let outer = mem.object(0x3000_0300, 48, &[(24, inner)]);
    spawn(&mut mem, 1, &[7, outer, 0xdead_beef]);
    // goroutine 2 waits on ch1 and holds ch3 on its stack: 3 is live through 2.
    spawn(&mut mem, 2, &[ch3]);
    spawn(&mut mem, 3, &[]);
    spawn(&mut mem, 4, &[]);
    spawn(&mut mem, 5, &[lost]);
    let gs = [
        g(1, ReachRole::Root),
        g(2, ReachRole::Blocked(vec![ch1])),
        g(3, ReachRole::Blocked(vec![ch3])),
        g(4, ReachRole::Blocked(vec![ch2])),
        g(5, ReachRole::Blocked(vec![lost])),
    ];
    let r = run(&mut mem, &gs);
    assert_eq!(r.leaked, vec![5]);
    assert!(r.complete);
    assert!(r.could_wake.is_empty());
    assert_eq!(r.objects_scanned, 7);
}

#[test]
fn ab_ba_cycle_is_leaked_with_edges_both_ways() {
    let mut mem = FakeMemory::default();
    let (a, b) = (mem.object(0x2000_0000, 96, &[]), mem.object(0x2000_1000, 96, &[]));
    // Each holds both channels, goroutine 2 through a closure object.
    let closure = mem.object(0x3000_0000, 24, &[(8, a), (16, b)]);
    spawn(&mut mem, 1, &[a, b]);
    spawn(&mut mem, 2, &[closure]);
    spawn(&mut mem, 3, &[]);
    let gs = [g(1, ReachRole::Blocked(vec![a])), g(2, ReachRole::Blocked(vec![b])), g(3, ReachRole::Root)];
    let r = run(&mut mem, &gs);
    assert_eq!(r.leaked, vec![1, 2]);
    assert!(r.complete);
    assert_eq!(r.could_wake, edges(&[(1, &[2]), (2, &[1])]));
}

#[test]
fn stack_resident_mutex_is_live_while_its_owner_is() {
    let mut mem = FakeMemory::default();
    let lost = mem.object(0x2000_0000, 96, &[]);
    // 1 (runs) has a mutex on its stack that 2 waits on; 3 waits on a mutex on 4's stack, and 4
    // waits on a channel nobody has but 3: 3 and 4 wait for each other.
    let mu1 = stack_of(1) + 0xf00 + 4;
    let mu4 = stack_of(4) + 0xf00 + 4;
    spawn(&mut mem, 1, &[]);
    spawn(&mut mem, 2, &[mu1 - 4]);
    spawn(&mut mem, 3, &[mu4 - 4, lost]);
    spawn(&mut mem, 4, &[]);
    let gs = [
        g(1, ReachRole::Root),
        g(2, ReachRole::Blocked(vec![mu1])),
        g(3, ReachRole::Blocked(vec![mu4])),
        g(4, ReachRole::Blocked(vec![lost])),
    ];
    let r = run(&mut mem, &gs);
    assert_eq!(r.leaked, vec![3, 4]);
    assert_eq!(r.could_wake, edges(&[(3, &[4])]));
}

#[test]
fn globals_and_unknown_objects_count_as_reachable() {
    let mut mem = FakeMemory::default();
    spawn(&mut mem, 1, &[]);
    spawn(&mut mem, 2, &[]);
    // A mutex in a global, and an address that is no heap object, stack or global.
    let gs = [g(1, ReachRole::Blocked(vec![GLOBALS.0 + 64])), g(2, ReachRole::Blocked(vec![0x9999_0000]))];
    let r = run(&mut mem, &gs);
    assert!(r.leaked.is_empty());
    // Blocked on nothing known: a root.
    let r = run(&mut mem, &[g(1, ReachRole::Blocked(Vec::new()))]);
    assert!(r.leaked.is_empty());
}

#[test]
fn noscan_objects_are_marked_but_not_read() {
    let mut mem = FakeMemory::default();
    let ch = mem.object(0x2000_0000, 96, &[]);
    // A pointer-free buffer happening to hold ch's address, reachable from a global.
    let bytes = mem.noscan(0x3000_0000, 64, &[(0, ch)]);
    mem.words.insert(GLOBALS.0, bytes);
    spawn(&mut mem, 1, &[]);
    let r = run(&mut mem, &[g(1, ReachRole::Blocked(vec![ch]))]);
    assert_eq!(r.leaked, vec![1]);
    assert!(!mem.was_read(bytes));
    // A goroutine waiting on the noscan object itself (e.g. a semaphore in it) is live.
    spawn(&mut mem, 2, &[]);
    let r = run(&mut mem, &[g(2, ReachRole::Blocked(vec![bytes + 8]))]);
    assert!(r.leaked.is_empty());
}

#[test]
fn g_structs_are_scanned_only_for_live_goroutines() {
    let mut mem = FakeMemory::default();
    let (ch1, ch2) = (mem.object(0x2000_0000, 96, &[]), mem.object(0x2000_1000, 96, &[]));
    spawn(&mut mem, 1, &[]);
    spawn(&mut mem, 2, &[]);
    spawn(&mut mem, 3, &[]);
    let (g1, g2, g3) = (g(1, ReachRole::Blocked(vec![ch1])), g(2, ReachRole::Root), g(3, ReachRole::Blocked(vec![ch2])));
    // allgs (a global) holds every g; 1's g references ch1 (its sudog), runnable 2's g references
    // ch2 (its closure context, not yet on its stack).
    let allgs = mem.object(0x3000_0000, 24, &[(0, g1.g_addr), (8, g2.g_addr), (16, g3.g_addr)]);
    mem.words.insert(GLOBALS.0, allgs);
    mem.words.insert(g1.g_addr + 0x40, ch1);
    mem.words.insert(g2.g_addr + 0x50, ch2);
    let r = run(&mut mem, &[g1, g2, g3]);
    assert_eq!(r.leaked, vec![1]);
}

#[test]
fn forever_goroutines_are_leaked_whatever_is_reachable() {
    let mut mem = FakeMemory::default();
    spawn(&mut mem, 1, &[]);
    spawn(&mut mem, 2, &[]);
    let r = run(&mut mem, &[g(1, ReachRole::Forever), g(2, ReachRole::Root)]);
    assert_eq!(r.leaked, vec![1]);
    assert!(r.complete);
}

#[test]
fn wakeups_propagate_along_chains_of_blocked_goroutines() {
    let mut mem = FakeMemory::default();
    let chans: Vec<u64> = (0..50).map(|i| mem.object(0x2000_0000 + i * 0x100, 96, &[])).collect();
    // Root holds chans[0]; goroutine i+1 waits on chans[i] and holds chans[i+1].
    spawn(&mut mem, 1000, &[chans[0]]);
    let mut gs = vec![g(1000, ReachRole::Root)];
    for i in 0..49 {
        spawn(&mut mem, i + 1, &[chans[i as usize + 1]]);
        gs.push(g(i + 1, ReachRole::Blocked(vec![chans[i as usize]])));
    }
    // A select: live if any of its channels is reachable.
    spawn(&mut mem, 500, &[]);
    let orphan = mem.object(0x2100_0000, 96, &[]);
    gs.push(g(500, ReachRole::Blocked(vec![orphan, chans[49]])));
    let r = run(&mut mem, &gs);
    assert!(r.leaked.is_empty(), "{:?}", r.leaked);
}

#[test]
fn budget_exhaustion_and_unreadable_memory_make_the_report_incomplete() {
    let mut mem = FakeMemory::default();
    let ch = mem.object(0x2000_0000, 96, &[]);
    let big = mem.object(0x3000_0000, 8 << 20, &[((4 << 20) + 8, ch)]);
    mem.words.insert(GLOBALS.0, big);
    spawn(&mut mem, 1, &[]);
    let gs = [g(1, ReachRole::Blocked(vec![ch]))];
    // A large object is read in pieces, past the end of the first.
    let r = run(&mut mem, &gs);
    assert!(r.leaked.is_empty() && r.complete);
    let opts = ReachOptions { max_bytes: 1 << 20, ..ReachOptions::default() };
    let r = find_leaked_in(&mut mem, &[GLOBALS], &gs, &opts).unwrap();
    assert!(!r.complete);
    assert!(r.could_wake.is_empty());
    mem.unreadable.push((big, big + 8));
    let r = run(&mut mem, &gs);
    assert!(!r.complete);
}

#[test]
fn garbage_cycles_and_self_references_terminate() {
    let mut mem = FakeMemory::default();
    let ch = mem.object(0x2000_0000, 96, &[(0, 0x2000_0000), (8, u64::MAX), (16, 0x3000_0000)]);
    mem.object(0x3000_0000, 16, &[(0, ch), (8, 0x3000_0008)]);
    spawn(&mut mem, 1, &[ch, 1, u64::MAX - 7]);
    spawn(&mut mem, 2, &[ch]);
    let gs = [g(1, ReachRole::Blocked(vec![ch])), g(2, ReachRole::Blocked(vec![ch]))];
    let r = run(&mut mem, &gs);
    assert_eq!(r.leaked, vec![1, 2]);
    // Both hold only the channel they wait on: neither could wake the other.
    assert!(r.could_wake.is_empty(), "{:?}", r.could_wake);
}

#[test]
fn waiting_on_one_object_is_no_evidence_of_holding_what_another_waits_for() {
    let mut mem = FakeMemory::default();
    // 1 and 2 wait for two mutexes in one 16-byte allocation (each locked twice by its own
    // goroutine), each stack pointing at its own mutex; 3 waits for a mutex of its own object and
    // refers to that allocation too; 4 waits for a mutex in `other`, which 3 refers to.
    let shared = mem.noscan(0x2000_0000, 16, &[]);
    let own = mem.noscan(0x2000_1000, 16, &[]);
    let other = mem.noscan(0x2000_2000, 16, &[]);
    spawn(&mut mem, 1, &[shared]);
    spawn(&mut mem, 2, &[shared + 8]);
    spawn(&mut mem, 3, &[own, shared, other]);
    spawn(&mut mem, 4, &[other]);
    spawn(&mut mem, 5, &[]);
    let gs = [
        g(1, ReachRole::Blocked(vec![shared + 4])),
        g(2, ReachRole::Blocked(vec![shared + 12])),
        g(3, ReachRole::Blocked(vec![own + 4])),
        g(4, ReachRole::Blocked(vec![other + 4])),
        g(5, ReachRole::Root),
    ];
    let r = run(&mut mem, &gs);
    assert_eq!(r.leaked, vec![1, 2, 3, 4]);
    // 3 does not wait on `shared` or `other`: its references to them are evidence.
    assert_eq!(r.could_wake, edges(&[(3, &[1, 2, 4])]));
}

#[test]
fn why_live_names_the_words_from_the_root() {
    let mut mem = FakeMemory::default();
    let ch = mem.object(0x2000_0000, 96, &[]);
    let mu = stack_of(1) + 0xf00;
    let holder = mem.object(0x3000_0000, 32, &[(8, ch + 16), (16, mu)]);
    mem.words.insert(GLOBALS.0 + 24, holder);
    spawn(&mut mem, 1, &[]);
    spawn(&mut mem, 2, &[]);
    spawn(&mut mem, 3, &[]);
    // 2 waits on ch (a global reaches it through holder); 3 on a mutex in 1's stack, 1 on ch.
    let gs = [g(1, ReachRole::Blocked(vec![ch])), g(2, ReachRole::Blocked(vec![ch])), g(3, ReachRole::Blocked(vec![mu]))];
    let opts = ReachOptions { explain: true, ..ReachOptions::default() };
    let r = find_leaked_in(&mut mem, &[GLOBALS], &gs, &opts).unwrap();
    assert!(r.leaked.is_empty());
    let to_ch = vec![
        ReachLink { holder: ReachHolder::Global, addr: GLOBALS.0 + 24, value: holder },
        ReachLink { holder: ReachHolder::Object { base: holder, size: 32 }, addr: holder + 8, value: ch + 16 },
    ];
    assert_eq!(r.why_live[&2], to_ch);
    let mut to_mu = to_ch.clone();
    to_mu.push(ReachLink { holder: ReachHolder::Stack { goid: 1 }, addr: mu, value: mu });
    assert_eq!(r.why_live[&3], to_mu);
    // Without the option nothing is recorded.
    assert!(run(&mut mem, &gs).why_live.is_empty());
}

#[test]
fn typed_objects_are_followed_only_through_their_pointer_words() {
    let mut mem = FakeMemory::default();
    let (ch1, ch2) = (mem.object(0x2000_0000, 96, &[]), mem.object(0x2000_1000, 96, &[]));
    // A runtime struct reachable from a global: word 1 a pointer, word 2 a uintptr that happens
    // to hold ch2's address (like pageAlloc.searchAddr or a stale span-queue slot).
    let st = mem.object(0x3000_0000, 32, &[(8, ch1), (16, ch2)]);
    mem.objects.get_mut(&st).unwrap().typed = true;
    mem.masks.insert(st, vec![false, true, false, false]);
    mem.words.insert(GLOBALS.0, st);
    spawn(&mut mem, 1, &[]);
    spawn(&mut mem, 2, &[]);
    let gs = [g(1, ReachRole::Blocked(vec![ch1])), g(2, ReachRole::Blocked(vec![ch2]))];
    assert_eq!(run(&mut mem, &gs).leaked, vec![2]);
    // Unknown metadata: every word counts.
    mem.masks.clear();
    assert!(run(&mut mem, &gs).leaked.is_empty());
}

#[test]
fn go_1_19_pairs_give_pointer_bits_until_the_first_clear_scan_bit() {
    use super::process::pair_pointers;
    // Words 0-3: scan bits 1111, pointer bits 0101; words 4-7: scan 1101 (word 6 dead), pointer
    // bits 1001 (word 7's is stale: after the dead word it no longer counts).
    let bitmap = [0xf0 | 0b1010, 0b1011_0000 | 0b1001];
    let mask: Vec<u8> = pair_pointers(&bitmap, 0, 8).unwrap().into_iter().map(u8::from).collect();
    assert_eq!(mask, [0, 1, 0, 1, 1, 0, 0, 0]);
    // An object from word 1 on sees its own words; past the bitmap: unknown.
    assert_eq!(pair_pointers(&bitmap, 1, 3).unwrap(), [true, false, true]);
    assert!(pair_pointers(&bitmap, 6, 4).is_none());
}

#[test]
fn gc_programs_expand_to_pointer_masks() {
    use super::process::run_gc_program;
    // 3 literal bits 101, then the last 2 bits (01) repeated 3 times, then 1 literal bit 1.
    let prog = [0x03, 0b101, 0x82, 0x03, 0x01, 0x01, 0x00];
    let mask: Vec<u8> = run_gc_program(&prog, 100).unwrap().into_iter().map(u8::from).collect();
    assert_eq!(mask, [1, 0, 1, 0, 1, 0, 1, 0, 1, 1]);
    // Repeat count as varint after a varint length (n = 0 in the instruction): 1 bit, 200 times.
    let prog = [0x01, 0x01, 0x80, 0x01, 0xc8, 0x01, 0x00];
    assert_eq!(run_gc_program(&prog, 1000).unwrap().len(), 201);
    // Longer than allowed, repeating more bits than emitted, truncated: refused.
    assert!(run_gc_program(&prog, 100).is_none());
    assert!(run_gc_program(&[0x85, 0x01, 0x00], 100).is_none());
    assert!(run_gc_program(&[0x08], 100).is_none());
}

#[test]
fn a_live_waiters_sudog_neighbours_do_not_keep_other_waits_alive() {
    // 2 waits on mutex m1, which main holds; its sudog sits in the semtable treap next to 3's
    // sudog (its `next` child), whose `elem` is 3's mutex m2, which nothing else references.
    let mut mem = FakeMemory::default();
    let (m1, m2) = (mem.object(0x2000_0000, 24, &[]), mem.object(0x2000_1000, 24, &[]));
    let sudog3 = mem.object(0x3000_0100, 96, &[(24, m2 + 8)]);
    let sudog2 = mem.object(0x3000_0000, 96, &[(8, sudog3), (24, m1 + 8)]);
    spawn(&mut mem, 1, &[m1]);
    spawn(&mut mem, 2, &[sudog2]);
    spawn(&mut mem, 3, &[sudog3]);
    let blocked = |goid, m: u64, sudog: u64| ReachGoroutine {
        untraceable: vec![sudog + 24, sudog + 80],
        ..g(goid, ReachRole::Blocked(vec![m + 8]))
    };
    let gs = [g(1, ReachRole::Root), blocked(2, m1, sudog2), blocked(3, m2, sudog3)];
    let r = run(&mut mem, &gs);
    assert_eq!(r.leaked, vec![3]);
    assert!(r.complete);
    // Followed as ordinary pointers, the neighbour's elem would keep 3 alive.
    let plain: Vec<ReachGoroutine> = gs.iter().map(|g| ReachGoroutine { untraceable: Vec::new(), ..g.clone() }).collect();
    assert!(run(&mut mem, &plain).leaked.is_empty());
}

#[test]
fn a_leaked_waiters_sudog_neighbours_are_no_evidence_it_could_wake_them() {
    // 2 and 3 each wait for a mutex of their own (double locking), nothing else refers to them;
    // 2's sudog, on its stack, has 3's sudog as its treap neighbour, whose `elem` is 3's mutex.
    let mut mem = FakeMemory::default();
    let (m2, m3) = (mem.noscan(0x2000_0000, 16, &[]), mem.noscan(0x2000_1000, 16, &[]));
    let sudog3 = mem.object(0x3000_0100, 96, &[(24, m3 + 4)]);
    let sudog2 = mem.object(0x3000_0000, 96, &[(8, sudog3), (24, m2 + 4)]);
    spawn(&mut mem, 1, &[]);
    spawn(&mut mem, 2, &[sudog2, m2]);
    spawn(&mut mem, 3, &[sudog3, m3]);
    let blocked = |goid, m: u64, sudog: u64| ReachGoroutine {
        untraceable: vec![sudog + 24, sudog + 80],
        ..g(goid, ReachRole::Blocked(vec![m + 4]))
    };
    let gs = [g(1, ReachRole::Root), blocked(2, m2, sudog2), blocked(3, m3, sudog3)];
    let r = run(&mut mem, &gs);
    assert_eq!(r.leaked, vec![2, 3]);
    assert!(r.could_wake.is_empty(), "{:?}", r.could_wake);
    // Followed as ordinary pointers, the neighbour's elem would make 2 look able to wake 3.
    let plain: Vec<ReachGoroutine> = gs.iter().map(|g| ReachGoroutine { untraceable: Vec::new(), ..g.clone() }).collect();
    assert_eq!(run(&mut mem, &plain).could_wake, edges(&[(2, &[3])]));
}

#[test]
fn an_incomplete_report_names_what_stopped_it() {
    let mut mem = FakeMemory::default();
    let ch = mem.object(0x2000_0000, 96, &[]);
    let big = mem.object(0x3000_0000, 4 << 20, &[(8, ch)]);
    spawn(&mut mem, 1, &[big]);
    spawn(&mut mem, 2, &[]);
    let gs = [g(1, ReachRole::Root), g(2, ReachRole::Blocked(vec![ch]))];
    let opts = ReachOptions { max_bytes: 1 << 20, ..ReachOptions::default() };
    let r = find_leaked_in(&mut mem, &[GLOBALS], &gs, &opts).unwrap();
    assert_eq!(r.incomplete, Some(Incomplete::Budget { limit: 1 << 20 }));
    assert_eq!(r.incomplete.map(|i| i.to_string()).as_deref(), Some("the read budget of 1 MiB ran out"));
    let mut mem2 = FakeMemory::default();
    let ch = mem2.object(0x2000_0000, 96, &[]);
    let obj = mem2.object(0x3000_0000, 64, &[(8, ch)]);
    mem2.unreadable.push((obj, obj + 64));
    spawn(&mut mem2, 1, &[obj]);
    spawn(&mut mem2, 2, &[]);
    let r = find_leaked_in(&mut mem2, &[GLOBALS], &gs, &ReachOptions::default()).unwrap();
    assert_eq!(r.incomplete, Some(Incomplete::Unreadable { ranges: 1 }));
    assert!(!r.complete);
}

/// Stack bounds as a hostile process could leave them: the saved SP past the top of a leaked
/// goroutine's stack (scanned for `could_wake`), or reversed bounds (no stack: its references
/// cannot be followed, so nothing is proven). No arithmetic on them may overflow.
#[test]
fn hostile_stack_bounds_neither_panic_nor_prove() {
    let mut mem = FakeMemory::default();
    let ch = mem.object(0xc0_0001_0000, 0x60, &[]);
    spawn(&mut mem, 1, &[]);
    spawn(&mut mem, 2, &[]);
    let g2 = g(2, ReachRole::Blocked(vec![ch]));
    let s = mem.stacks[&g2.g_addr];
    mem.stacks.insert(g2.g_addr, GoroutineStack { scan_from: s.hi + 0x100, ..s });
    let report = run(&mut mem, &[g(1, ReachRole::Root), g2.clone()]);
    assert!(report.complete, "{report:?}");
    assert_eq!(report.leaked, [2]);

    let g1 = g(1, ReachRole::Root);
    mem.stacks.insert(g1.g_addr, GoroutineStack { lo: 0x2000, hi: 0x1000, scan_from: 0x1000, context: None });
    let report = run(&mut mem, &[g1, g2]);
    assert!(!report.complete, "goroutine 1's stack is unknown: {report:?}");
    assert_eq!(report.incomplete, Some(Incomplete::UnknownStack { goid: 1 }));
}

#[test]
fn dead_stack_slots_keep_nothing_alive() {
    let build = |maps: bool| {
        let mut mem = FakeMemory::default();
        let (ch, other) = (mem.object(0x2000_0000, 96, &[]), mem.object(0x2000_1000, 96, &[]));
        // Main (a root) still has `ch` in a dead slot; `other` is live.
        spawn(&mut mem, 1, &[ch, other]);
        spawn(&mut mem, 2, &[]);
        spawn(&mut mem, 3, &[]);
        if maps {
            stack_maps(&mut mem, 1, &[false, true]);
        }
        let gs = [g(1, ReachRole::Root), g(2, ReachRole::Blocked(vec![ch])), g(3, ReachRole::Blocked(vec![other]))];
        run(&mut mem, &gs)
    };
    let conservative = build(false);
    assert_eq!(conservative.leaked, Vec::<u64>::new());
    assert_eq!(conservative.stacks_conservative, 1);
    let precise = build(true);
    assert_eq!(precise.leaked, vec![2]);
    assert!(precise.complete);
    assert_eq!((precise.stack_frames_precise, precise.stack_frames_conservative, precise.stacks_conservative), (2, 1, 0));
}

#[test]
fn a_pointer_into_a_goroutines_stack_does_not_make_it_a_root() {
    let mut mem = FakeMemory::default();
    let (ch2, ch3) = (mem.object(0x2000_0000, 96, &[]), mem.object(0x2000_1000, 96, &[]));
    // Goroutine 2 (blocked on ch2, which nobody else has) holds ch3 at the top of its stack;
    // main holds a pointer to that very word (as a sudog's elem would), and a heap object too.
    spawn(&mut mem, 2, &[ch3]);
    let into_stack = stack_of(2) + 0x1000 - 8;
    let holder = mem.object(0x3000_0000, 16, &[(0, into_stack)]);
    spawn(&mut mem, 1, &[into_stack, holder]);
    spawn(&mut mem, 3, &[]);
    let gs = [g(1, ReachRole::Root), g(2, ReachRole::Blocked(vec![ch2])), g(3, ReachRole::Blocked(vec![ch3]))];
    let r = run(&mut mem, &gs);
    assert_eq!(r.leaked, vec![2, 3]);
    assert!(r.complete);
}

#[test]
fn g_structs_are_scanned_by_their_type() {
    let run_with = |typed: bool| {
        let mut mem = FakeMemory::default();
        let ch = mem.object(0x2000_0000, 96, &[]);
        spawn(&mut mem, 1, &[]);
        spawn(&mut mem, 2, &[]);
        // Word 1 of main's g (a uintptr such as `stack.hi`) holds the channel's address.
        let g1 = 0x5000_0000 + 0x1000;
        mem.words.insert(g1 + 8, ch);
        if typed {
            mem.objects.get_mut(&g1).unwrap().typed = true;
            mem.masks.insert(g1, (0..32).map(|w| w != 1).collect());
        }
        run(&mut mem, &[g(1, ReachRole::Root), g(2, ReachRole::Blocked(vec![ch]))])
    };
    assert_eq!(run_with(false).leaked, Vec::<u64>::new());
    assert_eq!(run_with(true).leaked, vec![2]);
}
