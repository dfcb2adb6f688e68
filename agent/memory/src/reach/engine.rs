//! The reachability fixpoint, over an abstract memory ([`ReachMemory`]) so that it can be tested
//! on hand-built memory.
//!
//! Marking is conservative: every 8-byte word of a scanned range that falls inside a heap object
//! marks that object. A missed reference would turn into a false "leaked", so whatever cannot be
//! decided counts as reachable (wait objects outside heap, globals and known stacks) or makes
//! the report incomplete (unreadable memory, the read budget).
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use super::frames::{StackContext, StackPointers};
use super::{Incomplete, ReachError, ReachGoroutine, ReachHolder, ReachLink, ReachOptions, ReachReport, ReachRole};

/// Largest range read at once: big objects are scanned in pieces of this size.
const READ_CHUNK: u64 = 1 << 20;
/// Bytes read per round of the breadth-first search (bounds the memory held at once).
const ROUND_BYTES: u64 = 32 << 20;
/// Words below this are small integers, never pointers.
const MIN_POINTER: u64 = 4096;
/// A word up to this many bytes before a stack-resident wait object counts as a reference to it
/// in [`ReachReport::could_wake`] (the object's address is a field inside a struct, e.g.
/// `&mu.sema`, while the stack holds `&mu`).
const STACK_OBJECT_REACH: u64 = 64;

/// Most links of one [`ReachReport::why_live`] chain.
const MAX_LINKS: usize = 1024;

/// The addresses of `waiter`'s wait objects in the stack of goroutine (index) `owner`.
fn stack_sites(sites: &[WaitSite], owner: usize) -> impl Iterator<Item = u64> + '_ {
    sites.iter().filter_map(move |s| match *s {
        WaitSite::Stack { owner: o, addr } if o == owner => Some(addr),
        _ => None,
    })
}

/// A heap object: `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeapObject {
    /// First byte.
    pub base: u64,
    /// Size in bytes (its span's element size).
    pub size: u64,
    /// Allocated as pointer-free (noscan span): marked, never read.
    pub noscan: bool,
    /// The runtime's metadata says which of its words hold pointers: only those are followed
    /// ([`ReachMemory::pointer_masks`]).
    pub typed: bool,
}

/// A goroutine's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoroutineStack {
    /// `[lo, hi)`: everything that belongs to this stack.
    pub lo: u64,
    /// One past the stack's last byte.
    pub hi: u64,
    /// Where the part in use starts (the saved stack pointer; `lo` when it is stale).
    pub scan_from: u64,
    /// The saved context to unwind from with the stack maps; None: the goroutine is running or
    /// in a system call (its saved context is stale), the stack is scanned conservatively.
    pub context: Option<StackContext>,
}

impl GoroutineStack {
    /// The stack if it is one: `lo < hi`, with `scan_from` brought inside `[lo, hi]`. A
    /// [`ReachMemory`] may hand over whatever the target's memory held; reversed bounds are no
    /// stack (the goroutine's references then cannot be followed: never a proof).
    fn checked(self) -> Option<GoroutineStack> {
        (self.lo < self.hi).then(|| GoroutineStack { scan_from: self.scan_from.clamp(self.lo, self.hi), ..self })
    }
}

/// What the fixpoint needs from a process.
pub trait ReachMemory {
    /// The stack of each goroutine, by g address; None when it cannot be read.
    fn stacks(&mut self, g_addrs: &[u64]) -> Result<Vec<Option<GoroutineStack>>, ReachError>;
    /// The heap object containing each address; None for an address outside the heap (or in
    /// heap memory that holds no object).
    fn objects(&mut self, addrs: &[u64]) -> Result<Vec<Option<HeapObject>>, ReachError>;
    /// The 8-byte words of each `[start, end)` range; None for a range that cannot be read.
    fn read_words(&mut self, ranges: &[(u64, u64)]) -> Result<Vec<Option<Vec<u64>>>, ReachError>;
    /// For each typed object and its first word (a malloc header holds the object's type there):
    /// which of its words may hold pointers; None when the metadata cannot be read or trusted
    /// (then every word is followed).
    fn pointer_masks(&mut self, objects: &[(HeapObject, u64)]) -> Result<Vec<Option<Vec<bool>>>, ReachError> {
        Ok(vec![None; objects.len()])
    }
    /// For each stack read whole (`[scan_from, hi)`, its words): which words hold pointers by the
    /// runtime's stack maps; None where that cannot be decided (then every word is followed).
    fn stack_pointers(&mut self, stacks: &[(GoroutineStack, &[u64])]) -> Result<Vec<Option<StackPointers>>, ReachError> {
        Ok(vec![None; stacks.len()])
    }
    /// Bytes read so far (metadata included).
    fn bytes_read(&self) -> u64;
}

/// Sorted, non-overlapping address ranges with a value each.
struct RangeIndex<T: Copy> {
    ranges: Vec<(u64, u64, T)>,
}

impl<T: Copy> RangeIndex<T> {
    fn new(mut ranges: Vec<(u64, u64, T)>) -> Self {
        ranges.retain(|(lo, hi, _)| lo < hi);
        ranges.sort_unstable_by_key(|r| r.0);
        RangeIndex { ranges }
    }

    fn find(&self, addr: u64) -> Option<T> {
        let i = self.ranges.partition_point(|r| r.0 <= addr).checked_sub(1)?;
        let (_, hi, v) = self.ranges[i];
        (addr < hi).then_some(v)
    }
}

/// Where a scanned range is.
#[derive(Debug, Clone, Copy)]
enum Origin {
    Global,
    /// The stack or the g struct of goroutine (index) `i`.
    Stack(usize),
    GStruct(usize),
    Object(HeapObject),
}

/// Why a goroutine is live.
#[derive(Debug, Clone, Copy)]
enum LiveCause {
    Root,
    /// The heap object at this base, which it waits on, was marked.
    Heap(u64),
    /// It waits on an object at `addr` in the stack of live goroutine (index) `owner`.
    StackOf {
        owner: usize,
        addr: u64,
    },
}

/// The word through which an object was first marked.
#[derive(Debug, Clone, Copy)]
struct Parent {
    origin: Origin,
    addr: u64,
    value: u64,
}

/// Where a wait object lives.
#[derive(Debug, Clone, Copy)]
enum WaitSite {
    Heap(u64),
    /// In the stack of goroutine (index) `owner`, at `addr`.
    Stack {
        owner: usize,
        addr: u64,
    },
}

/// Marking state of one analysis.
struct Marker<'a, M: ReachMemory> {
    mem: &'a mut M,
    max_bytes: u64,
    globals: RangeIndex<()>,
    stacks: RangeIndex<usize>,
    /// Heap objects that are g structs of listed goroutines: scanned only as part of a live
    /// goroutine (allgs references every g; following that would make every channel reachable).
    g_objects: HashMap<u64, usize>,
    /// The heap object of each goroutine's (index) g struct.
    g_heap: Vec<Option<HeapObject>>,
    marked: HashSet<u64>,
    live: Vec<Option<LiveCause>>,
    /// With [`ReachOptions::explain`]: the first marking word of each marked object.
    parents: Option<HashMap<u64, Parent>>,
    waiters_heap: HashMap<u64, Vec<usize>>,
    waiters_stack: HashMap<usize, Vec<usize>>,
    pending: Vec<(u64, u64, Origin)>,
    /// goid of each goroutine (index).
    goids: Vec<u64>,
    /// Words of heap objects never followed ([`ReachGoroutine::untraceable`]), sorted.
    untraceable: Vec<u64>,
    /// Why the marking is not complete (the first reason met), None while it is.
    incomplete: Option<Incomplete>,
    objects_scanned: u64,
    /// Each goroutine's stack (index), to scan it by its stack maps.
    stacks_of: Vec<Option<GoroutineStack>>,
    roots: StackRootStats,
}

/// How the stacks of live goroutines were scanned.
#[derive(Debug, Clone, Copy, Default)]
struct StackRootStats {
    precise_frames: u64,
    conservative_frames: u64,
    conservative_stacks: u64,
}

impl<M: ReachMemory> Marker<'_, M> {
    /// Records that the marking cannot be complete, keeping the first reason; counts unreadable
    /// ranges.
    fn give_up(&mut self, why: Incomplete) {
        match (&mut self.incomplete, why) {
            (Some(Incomplete::Unreadable { ranges }), Incomplete::Unreadable { ranges: more }) => *ranges += more,
            (None, why) => self.incomplete = Some(why),
            _ => {}
        }
    }

    fn make_live(&mut self, i: usize, cause: LiveCause, stack: Option<GoroutineStack>, g_object: Option<HeapObject>) {
        if self.live[i].is_some() {
            return;
        }
        self.live[i] = Some(cause);
        match (stack, g_object) {
            (Some(s), Some(g)) => {
                self.pending.push((s.scan_from, s.hi, Origin::Stack(i)));
                self.pending.push((g.base, g.base.saturating_add(g.size), Origin::GStruct(i)));
            }
            // Its references cannot be followed.
            _ => self.give_up(Incomplete::UnknownStack { goid: self.goids[i] }),
        }
    }

    /// Marks `obj`; returns the goroutines waiting on it.
    fn mark(&mut self, obj: HeapObject) -> Vec<usize> {
        if !self.marked.insert(obj.base) {
            return Vec::new();
        }
        if !obj.noscan && !self.g_objects.contains_key(&obj.base) {
            self.objects_scanned += 1;
            self.pending.push((obj.base, obj.base.saturating_add(obj.size), Origin::Object(obj)));
        }
        self.waiters_heap.remove(&obj.base).unwrap_or_default()
    }

    /// Takes up to [`ROUND_BYTES`] of pending ranges, split into [`READ_CHUNK`] pieces.
    fn take_round(&mut self) -> Vec<(u64, u64, Origin)> {
        let mut round = Vec::new();
        let mut bytes = 0;
        while bytes < ROUND_BYTES {
            let Some((start, end, origin)) = self.pending.pop() else { break };
            let start = start & !7;
            let piece_end = end.min(start.saturating_add(READ_CHUNK));
            if piece_end < end {
                self.pending.push((piece_end, end, origin));
            }
            if piece_end > start {
                bytes += piece_end - start;
                round.push((start, piece_end, origin));
            }
        }
        round
    }

    /// Zeroes the words of typed objects that are not pointers: scalars that happen to hold
    /// addresses (`uintptr` fields such as `g.stack.hi`, stale queue slots in `runtime.p`) are
    /// not references. Objects split over several ranges are left whole.
    fn keep_typed_pointers(&mut self, round: &[(u64, u64, Origin)], contents: &mut [Option<Vec<u64>>]) -> Result<(), ReachError> {
        // g structs too: the runtime scans them by their type like any object (a uintptr field
        // such as `stack.hi` can hold the address of the next span's first object).
        let typed: Vec<(usize, HeapObject, u64)> = (0..round.len())
            .filter_map(|k| {
                let (start, end, origin) = round[k];
                let o = match origin {
                    Origin::Object(o) => o,
                    Origin::GStruct(i) => self.g_heap[i]?,
                    _ => return None,
                };
                let first = *contents[k].as_ref()?.first()?;
                (o.typed && start == o.base && end == o.base.saturating_add(o.size)).then_some((k, o, first))
            })
            .collect();
        if typed.is_empty() {
            return Ok(());
        }
        let requests: Vec<(HeapObject, u64)> = typed.iter().map(|&(_, o, first)| (o, first)).collect();
        let typed: Vec<usize> = typed.iter().map(|t| t.0).collect();
        let masks = self.mem.pointer_masks(&requests)?;
        for (&k, mask) in typed.iter().zip(masks) {
            let (Some(mask), Some(words)) = (mask, contents[k].as_mut()) else { continue };
            for (word, is_pointer) in words.iter_mut().zip(mask.iter().chain(std::iter::repeat(&true))) {
                if !is_pointer {
                    *word = 0;
                }
            }
        }
        Ok(())
    }

    /// Zeroes the words of stacks that hold no live pointer by the runtime's stack maps. A stack
    /// read in pieces, or without a saved context, stays whole (conservative).
    fn keep_stack_pointers(&mut self, round: &[(u64, u64, Origin)], contents: &mut [Option<Vec<u64>>]) -> Result<(), ReachError> {
        let mut whole = Vec::new();
        for (k, &(start, end, origin)) in round.iter().enumerate() {
            let (Origin::Stack(i), Some(words)) = (origin, &contents[k]) else { continue };
            match self.stacks_of[i] {
                Some(s) if s.context.is_some() && start == s.scan_from && end == s.hi => whole.push((k, s, words.as_slice())),
                _ => self.roots.conservative_stacks += 1,
            }
        }
        if whole.is_empty() {
            return Ok(());
        }
        let requests: Vec<(GoroutineStack, &[u64])> = whole.iter().map(|&(_, s, w)| (s, w)).collect();
        let masks = self.mem.stack_pointers(&requests)?;
        let ks: Vec<usize> = whole.iter().map(|w| w.0).collect();
        for (k, mask) in ks.into_iter().zip(masks) {
            let (Some(p), Some(words)) = (mask, contents[k].as_mut()) else {
                self.roots.conservative_stacks += 1;
                continue;
            };
            self.roots.precise_frames += p.precise_frames;
            self.roots.conservative_frames += p.conservative_frames;
            for (word, is_pointer) in words.iter_mut().zip(p.mask.iter().chain(std::iter::repeat(&true))) {
                if !is_pointer {
                    *word = 0;
                }
            }
        }
        Ok(())
    }

    /// Zeroes the words of heap objects that are never followed (sudogs' `elem` and `c`).
    fn drop_untraceable(&self, round: &[(u64, u64, Origin)], contents: &mut [Option<Vec<u64>>]) {
        for (&(start, end, origin), words) in round.iter().zip(contents.iter_mut()) {
            let (Origin::Object(_), Some(words)) = (origin, words.as_mut()) else { continue };
            self.drop_untraceable_in(start, end, words);
        }
    }

    /// Zeroes the untraceable words of the range `[start, end)` read as `words`.
    fn drop_untraceable_in(&self, start: u64, end: u64, words: &mut [u64]) {
        let from = self.untraceable.partition_point(|&a| a < start);
        for &addr in self.untraceable[from..].iter().take_while(|&&a| a < end) {
            if let Some(word) = words.get_mut(((addr - start) / 8) as usize) {
                *word = 0;
            }
        }
    }

    /// With [`ReachOptions::explain`]: records, for each object of `objs` (what `candidates`
    /// resolve to) not marked yet, the first word of the round that points into it.
    fn record_parents(
        &mut self,
        round: &[(u64, u64, Origin)],
        contents: &[Option<Vec<u64>>],
        candidates: &[u64],
        objs: &[Option<HeapObject>],
    ) {
        let Some(parents) = self.parents.as_mut() else { return };
        for (&(start, _, origin), words) in round.iter().zip(contents) {
            for (k, &value) in words.iter().flatten().enumerate() {
                let Ok(j) = candidates.binary_search(&value) else { continue };
                let Some(obj) = objs[j] else { continue };
                if !self.marked.contains(&obj.base) {
                    parents.entry(obj.base).or_insert(Parent { origin, addr: start + 8 * k as u64, value });
                }
            }
        }
    }

    /// The links from a root to what made live goroutine `i` live, root first (empty for a root).
    /// Parents were marked before their children and goroutines made live before those they
    /// wake, so the walk ends; [`MAX_LINKS`] bounds it anyway.
    fn explain(&self, i: usize, goroutines: &[ReachGoroutine]) -> Vec<ReachLink> {
        let Some(parents) = &self.parents else { return Vec::new() };
        let mut links = Vec::new();
        let mut cause = self.live[i];
        while links.len() < MAX_LINKS {
            let mut object = match cause {
                None | Some(LiveCause::Root) => break,
                Some(LiveCause::StackOf { owner, addr }) => {
                    let holder = ReachHolder::Stack { goid: goroutines[owner].goid };
                    links.push(ReachLink { holder, addr, value: addr });
                    cause = self.live[owner];
                    continue;
                }
                Some(LiveCause::Heap(base)) => base,
            };
            cause = None;
            while links.len() < MAX_LINKS {
                let Some(p) = parents.get(&object) else { break };
                let holder = match p.origin {
                    Origin::Global => ReachHolder::Global,
                    Origin::Stack(j) => ReachHolder::Stack { goid: goroutines[j].goid },
                    Origin::GStruct(j) => ReachHolder::GStruct { goid: goroutines[j].goid },
                    Origin::Object(o) => ReachHolder::Object { base: o.base, size: o.size },
                };
                links.push(ReachLink { holder, addr: p.addr, value: p.value });
                match p.origin {
                    Origin::Global => break,
                    Origin::Stack(j) | Origin::GStruct(j) => {
                        cause = self.live[j];
                        break;
                    }
                    Origin::Object(o) => object = o.base,
                }
            }
        }
        links.reverse();
        links
    }

    /// Reads `ranges` within the budget; None when the budget does not allow it.
    fn read(&mut self, ranges: &[(u64, u64)]) -> Result<Option<Vec<Option<Vec<u64>>>>, ReachError> {
        let want: u64 = ranges.iter().map(|(s, e)| e - s).sum();
        if self.mem.bytes_read().saturating_add(want) > self.max_bytes {
            return Ok(None);
        }
        match self.mem.read_words(ranges) {
            Ok(words) => Ok(Some(words)),
            Err(e) if e.is_budget() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Words that may point at heap objects (not into globals or known stacks), deduplicated.
    fn heap_candidates<'w>(&self, words: impl Iterator<Item = &'w u64>) -> Vec<u64> {
        let mut c: Vec<u64> = words
            .copied()
            .filter(|&w| w >= MIN_POINTER && self.globals.find(w).is_none() && self.stacks.find(w).is_none())
            .collect();
        c.sort_unstable();
        c.dedup();
        c
    }
}

/// The fixpoint: which Blocked/Forever goroutines no root can reach, over `mem`.
///
/// `globals` are the `[start, end)` ranges of pointer-bearing globals (always reachable).
pub fn find_leaked_in<M: ReachMemory>(
    mem: &mut M,
    globals: &[(u64, u64)],
    goroutines: &[ReachGoroutine],
    opts: &ReachOptions,
) -> Result<ReachReport, ReachError> {
    let started = Instant::now();
    let g_addrs: Vec<u64> = goroutines.iter().map(|g| g.g_addr).collect();
    let stacks: Vec<Option<GoroutineStack>> =
        mem.stacks(&g_addrs)?.into_iter().map(|s| s.and_then(GoroutineStack::checked)).collect();
    let g_objs = mem.objects(&g_addrs)?;
    let stack_index = RangeIndex::new(stacks.iter().enumerate().filter_map(|(i, s)| s.map(|s| (s.lo, s.hi, i))).collect());
    let global_index = RangeIndex::new(globals.iter().map(|&(s, e)| (s, e, ())).collect());

    // Where each blocked goroutine's wait objects are. Anything that cannot be placed makes the
    // goroutine a root: it cannot be proven unreachable.
    let mut sites: Vec<Vec<WaitSite>> = vec![Vec::new(); goroutines.len()];
    let mut roots: Vec<usize> = Vec::new();
    let mut heap_wait: Vec<(usize, u64)> = Vec::new();
    for (i, g) in goroutines.iter().enumerate() {
        match &g.role {
            ReachRole::Root => roots.push(i),
            ReachRole::Forever => {}
            ReachRole::Blocked(objs) if objs.is_empty() => roots.push(i),
            ReachRole::Blocked(objs) => {
                for &addr in objs {
                    if global_index.find(addr).is_some() {
                        roots.push(i);
                    } else if let Some(owner) = stack_index.find(addr) {
                        sites[i].push(WaitSite::Stack { owner, addr });
                    } else {
                        heap_wait.push((i, addr));
                    }
                }
            }
        }
    }
    let wait_addrs: Vec<u64> = heap_wait.iter().map(|w| w.1).collect();
    for ((i, _), obj) in heap_wait.iter().zip(mem.objects(&wait_addrs)?) {
        match obj {
            Some(o) => sites[*i].push(WaitSite::Heap(o.base)),
            None => roots.push(*i),
        }
    }

    let mut m = Marker {
        mem,
        max_bytes: opts.max_bytes,
        globals: global_index,
        stacks: stack_index,
        g_objects: g_objs.iter().enumerate().filter_map(|(i, o)| o.map(|o| (o.base, i))).collect(),
        g_heap: g_objs.clone(),
        marked: HashSet::new(),
        live: vec![None; goroutines.len()],
        parents: opts.explain.then(HashMap::new),
        waiters_heap: HashMap::new(),
        waiters_stack: HashMap::new(),
        pending: globals.iter().map(|&(s, e)| (s, e, Origin::Global)).collect(),
        goids: goroutines.iter().map(|g| g.goid).collect(),
        untraceable: {
            let mut words: Vec<u64> = goroutines.iter().flat_map(|g| g.untraceable.iter().copied()).collect();
            words.sort_unstable();
            words.dedup();
            words
        },
        incomplete: None,
        objects_scanned: 0,
        stacks_of: stacks.clone(),
        roots: StackRootStats::default(),
    };
    for (i, s) in sites.iter().enumerate() {
        for site in s {
            match *site {
                WaitSite::Heap(base) => m.waiters_heap.entry(base).or_default().push(i),
                WaitSite::Stack { owner, .. } => m.waiters_stack.entry(owner).or_default().push(i),
            }
        }
    }

    let mut wake: Vec<(usize, LiveCause)> = roots.into_iter().map(|i| (i, LiveCause::Root)).collect();
    loop {
        while let Some((i, cause)) = wake.pop() {
            if m.live[i].is_none() {
                m.make_live(i, cause, stacks[i], g_objs[i]);
                for w in m.waiters_stack.remove(&i).unwrap_or_default() {
                    wake.extend(stack_sites(&sites[w], i).map(|addr| (w, LiveCause::StackOf { owner: i, addr })));
                }
            }
        }
        let round = m.take_round();
        if round.is_empty() {
            break;
        }
        let ranges: Vec<(u64, u64)> = round.iter().map(|&(s, e, _)| (s, e)).collect();
        let Some(mut contents) = m.read(&ranges)? else {
            m.give_up(Incomplete::Budget { limit: m.max_bytes });
            break;
        };
        let unreadable = contents.iter().filter(|c| c.is_none()).count() as u64;
        if unreadable > 0 {
            m.give_up(Incomplete::Unreadable { ranges: unreadable });
        }
        m.keep_typed_pointers(&round, &mut contents)?;
        m.keep_stack_pointers(&round, &mut contents)?;
        m.drop_untraceable(&round, &mut contents);
        let candidates = m.heap_candidates(contents.iter().flatten().flatten());
        let objs = m.mem.objects(&candidates)?;
        m.record_parents(&round, &contents, &candidates, &objs);
        for obj in objs.into_iter().flatten() {
            wake.extend(m.mark(obj).into_iter().map(|w| (w, LiveCause::Heap(obj.base))));
        }
    }

    let leaked: Vec<usize> = goroutines
        .iter()
        .enumerate()
        .filter(|(i, g)| m.live[*i].is_none() && !matches!(g.role, ReachRole::Root))
        .map(|(i, _)| i)
        .collect();
    let could_wake = if m.incomplete.is_none() {
        could_wake(&mut m, goroutines, &stacks, &sites, &leaked, opts.could_wake_max_objects)?
    } else {
        HashMap::new()
    };
    let why_live = (0..goroutines.len())
        .filter(|&i| m.parents.is_some() && !matches!(goroutines[i].role, ReachRole::Root) && m.live[i].is_some())
        .map(|i| (goroutines[i].goid, m.explain(i, goroutines)))
        .collect();
    let mut leaked: Vec<u64> = leaked.iter().map(|&i| goroutines[i].goid).collect();
    leaked.sort_unstable();
    Ok(ReachReport {
        leaked,
        could_wake,
        why_live,
        complete: m.incomplete.is_none(),
        incomplete: m.incomplete,
        bytes_read: m.mem.bytes_read(),
        objects_scanned: m.objects_scanned,
        stack_frames_precise: m.roots.precise_frames,
        stack_frames_conservative: m.roots.conservative_frames,
        stacks_conservative: m.roots.conservative_stacks,
        elapsed_ns: u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
    })
}

/// Zeroes the dead words of the leaked goroutines' stacks read whole in this round, by the
/// runtime's stack maps: a stale word in a slot no frame uses (a stack reused from a goroutine
/// that grew or exited) must not make one goroutine look able to wake another. A stack read in
/// pieces, or without a saved context or usable maps, stays whole (conservative).
fn keep_live_stack_words<M: ReachMemory>(
    m: &mut Marker<'_, M>,
    stacks: &[Option<GoroutineStack>],
    sources: &[usize],
    ranges: &[(u64, u64)],
    contents: &mut [Option<Vec<u64>>],
) -> Result<(), ReachError> {
    let whole: Vec<usize> = (0..sources.len())
        .filter(|&k| {
            stacks[sources[k]].is_some_and(|s| s.context.is_some() && ranges[k] == (s.scan_from, s.hi)) && contents[k].is_some()
        })
        .collect();
    if whole.is_empty() {
        return Ok(());
    }
    let masks = {
        let requests: Vec<(GoroutineStack, &[u64])> =
            whole.iter().filter_map(|&k| Some((stacks[sources[k]]?, contents[k].as_deref()?))).collect();
        m.mem.stack_pointers(&requests)?
    };
    for (k, mask) in whole.into_iter().zip(masks) {
        let (Some(p), Some(words)) = (mask, contents[k].as_mut()) else { continue };
        for (word, is_pointer) in words.iter_mut().zip(p.mask.iter().chain(std::iter::repeat(&true))) {
            if !is_pointer {
                *word = 0;
            }
        }
    }
    Ok(())
}

/// For each leaked goroutine, the other leaked goroutines whose wait objects its stack reaches
/// through heap objects no root reaches (at most `max_objects` objects per goroutine), except
/// through a heap object it waits on itself.
fn could_wake<M: ReachMemory>(
    m: &mut Marker<'_, M>,
    goroutines: &[ReachGoroutine],
    stacks: &[Option<GoroutineStack>],
    sites: &[Vec<WaitSite>],
    leaked: &[usize],
    max_objects: usize,
) -> Result<HashMap<u64, BTreeSet<u64>>, ReachError> {
    let mut waiting_on_heap: HashMap<u64, Vec<usize>> = HashMap::new();
    // owner -> (address, waiter)
    let mut waiting_in_stack: HashMap<usize, Vec<(u64, usize)>> = HashMap::new();
    for &i in leaked {
        for site in &sites[i] {
            match *site {
                WaitSite::Heap(base) => waiting_on_heap.entry(base).or_default().push(i),
                WaitSite::Stack { owner, addr } => waiting_in_stack.entry(owner).or_default().push((addr, i)),
            }
        }
    }
    let mut edges: HashMap<u64, BTreeSet<u64>> = HashMap::new();
    // (source goroutine, range) to scan; objects visited per source.
    let mut frontier: Vec<(usize, (u64, u64))> = Vec::new();
    let mut visited: HashMap<usize, HashSet<u64>> = HashMap::new();
    for &i in leaked {
        if let Some(s) = stacks[i] {
            frontier.push((i, (s.scan_from, s.hi)));
        }
    }
    while !frontier.is_empty() {
        let mut sources = Vec::new();
        let mut ranges = Vec::new();
        let mut bytes = 0;
        while bytes < ROUND_BYTES {
            let Some((src, (start, end))) = frontier.pop() else { break };
            let start = start & !7;
            let piece_end = end.min(start.saturating_add(READ_CHUNK));
            if piece_end < end {
                frontier.push((src, (piece_end, end)));
            }
            bytes += piece_end.saturating_sub(start);
            sources.push(src);
            ranges.push((start, piece_end));
        }
        let Some(mut contents) = m.read(&ranges)? else { break };
        keep_live_stack_words(m, stacks, &sources, &ranges, &mut contents)?;
        // A sudog's `elem` and `c` are not followed here either: the semaphore treap links the
        // sudogs of unrelated waiters (a goroutine's own sudog, on its stack, would lead through
        // its neighbours' `elem` to every lock waited on at that semaphore root).
        for (&(start, end), words) in ranges.iter().zip(contents.iter_mut()) {
            if let Some(words) = words.as_mut() {
                m.drop_untraceable_in(start, end, words);
            }
        }
        let mut per_source: Vec<(usize, u64)> = Vec::new();
        for (src, words) in sources.iter().zip(&contents) {
            for &w in words.iter().flatten() {
                if let Some(owner) = m.stacks.find(w) {
                    for &(addr, waiter) in waiting_in_stack.get(&owner).into_iter().flatten() {
                        if waiter != *src && w <= addr && addr - w < STACK_OBJECT_REACH {
                            edges.entry(goroutines[*src].goid).or_default().insert(goroutines[waiter].goid);
                        }
                    }
                } else if w >= MIN_POINTER && m.globals.find(w).is_none() {
                    per_source.push((*src, w));
                }
            }
        }
        per_source.sort_unstable();
        per_source.dedup();
        let addrs: Vec<u64> = per_source.iter().map(|p| p.1).collect();
        let objs = m.mem.objects(&addrs)?;
        for ((src, _), obj) in per_source.into_iter().zip(objs) {
            // Objects a root reaches cannot lead to a leaked goroutine's wait object.
            let Some(obj) = obj.filter(|o| !m.marked.contains(&o.base) && !m.g_objects.contains_key(&o.base)) else {
                continue;
            };
            let seen = visited.entry(src).or_default();
            if seen.len() >= max_objects || !seen.insert(obj.base) {
                continue;
            }
            // Two goroutines blocked on one object (senders on one channel, waiters for one lock,
            // or for two locks in one allocation) hold it for their own waits: that is no sign
            // that either could release what the other waits for.
            let own_wait = sites[src].iter().any(|s| matches!(*s, WaitSite::Heap(base) if base == obj.base));
            for &waiter in waiting_on_heap.get(&obj.base).into_iter().flatten() {
                if waiter != src && !own_wait {
                    edges.entry(goroutines[src].goid).or_default().insert(goroutines[waiter].goid);
                }
            }
            if !obj.noscan {
                frontier.push((src, (obj.base, obj.base.saturating_add(obj.size))));
            }
        }
    }
    Ok(edges)
}
