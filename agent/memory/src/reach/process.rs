//! [`ProcessHeap`]: [`ReachMemory`] over a live process, resolving addresses to heap objects
//! through the runtime's span metadata.
//!
//! Constants (linux/amd64, identical in the runtime source of Go 1.19 to 1.27: `malloc.go`,
//! `mheap.go`, `sema.go`, `internal/cpu`):
//! `arenaIndex(p) = (p - arenaBaseOffset) / heapArenaBytes` with `arenaBaseOffset =
//! 0xffff800000000000` and `heapArenaBytes = 64 MiB`; `arenaL1Bits = 0`, so `mheap_.arenas` has
//! one L1 entry pointing at `1 << 22` L2 entries (`*heapArena`); `heapArena.spans[(p / 8192) %
//! 8192]` is the page's `*mspan`; a span holds heap objects iff `state == mSpanInUse (1)`;
//! `spanclass & 1` is the noscan bit; `semtable` is 251 entries padded to 64 bytes.
use std::collections::HashMap;

use goscope_inspect::{Arch, GoBinary, RuntimeLayout};

use super::ReachError;
use super::engine::{GoroutineStack, HeapObject, ReachMemory};
use crate::process::{MemoryError, ProcessMemory};

const ARENA_BASE_OFFSET: u64 = 0xffff_8000_0000_0000;
const HEAP_ARENA_SHIFT: u32 = 26;
const ARENA_L2_ENTRIES: u64 = 1 << 22;
const PAGE_SHIFT: u32 = 13;
const PAGES_PER_ARENA: u64 = 1 << (HEAP_ARENA_SHIFT - PAGE_SHIFT);
const MSPAN_IN_USE: u8 = 1;
const SEMTABLE_BYTES: u64 = 251 * 64;
/// Largest span accepted (1 TiB): a bigger `npages` is a torn or garbage read.
const MAX_SPAN_PAGES: u64 = 1 << 27;
/// Largest stack or global range accepted.
const MAX_REGION: u64 = 1 << 32;
/// `_Gscan`, and the statuses whose saved stack pointer is stale (`_Grunning`, `_Gsyscall`).
const GSCAN: u32 = 0x1000;
const GRUNNING: u32 = 2;
const GSYSCALL: u32 = 3;

/// Offsets [`ProcessHeap`] reads, all from the binary's [`RuntimeLayout`].
#[derive(Debug, Clone, Copy)]
struct Offsets {
    arenas: u64,
    spans: u64,
    start_addr: u64,
    npages: u64,
    elemsize: u64,
    spanclass: u64,
    state: u64,
    sched_sp: u64,
    atomicstatus: u64,
    module_ranges: [u64; 4],
}

impl Offsets {
    fn of(l: &RuntimeLayout) -> Result<Offsets, ReachError> {
        let need = |v: Option<u32>, name: &'static str| v.map(u64::from).ok_or(ReachError::MissingOffset(name));
        Ok(Offsets {
            arenas: need(l.mheap_arenas, "runtime.mheap.arenas")?,
            spans: need(l.heap_arena_spans, "runtime.heapArena.spans")?,
            start_addr: need(l.mspan_start_addr, "runtime.mspan.startAddr")?,
            npages: need(l.mspan_npages, "runtime.mspan.npages")?,
            elemsize: need(l.mspan_elemsize, "runtime.mspan.elemsize")?,
            spanclass: need(l.mspan_spanclass, "runtime.mspan.spanclass")?,
            state: need(l.mspan_state, "runtime.mspan.state")?,
            sched_sp: u64::from(l.g_sched_sp),
            atomicstatus: u64::from(l.g_atomicstatus),
            module_ranges: [
                need(l.moduledata_data, "runtime.moduledata.data")?,
                need(l.moduledata_edata, "runtime.moduledata.edata")?,
                need(l.moduledata_bss, "runtime.moduledata.bss")?,
                need(l.moduledata_ebss, "runtime.moduledata.ebss")?,
            ],
        })
    }

    /// Bytes of an mspan read: up to the last field used.
    fn span_read_len(&self) -> usize {
        let last = [self.start_addr, self.npages, self.elemsize].into_iter().max().unwrap_or(0) + 8;
        last.max(self.spanclass + 1).max(self.state + 1) as usize
    }
}

/// A span as read.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    bytes: u64,
    elemsize: u64,
    noscan: bool,
}

/// The heap of a live process, with its span metadata cached.
pub struct ProcessHeap<'a> {
    mem: &'a ProcessMemory,
    off: Offsets,
    /// Runtime address of `runtime.firstmoduledata`.
    moduledata: u64,
    /// Runtime `[start, end)` of `runtime.semtable`, when known.
    semtable: Option<(u64, u64)>,
    /// `mheap_.arenas[0]`: the L2 array.
    l2: u64,
    /// Arena index -> `*heapArena` (0: none).
    arenas: HashMap<u64, u64>,
    /// `*heapArena` -> its `spans` array.
    arena_spans: HashMap<u64, Box<[u64]>>,
    /// `*mspan` -> the span, None when it holds no heap objects or is implausible.
    spans: HashMap<u64, Option<Span>>,
    bytes_at_start: u64,
}

impl<'a> ProcessHeap<'a> {
    /// The heap of the process `mem` reads, running `binary` at `load_bias`. Needs the symbol
    /// table (`runtime.mheap_`, `runtime.firstmoduledata`) and the heap offsets of the layout.
    pub fn new(mem: &'a ProcessMemory, binary: &GoBinary, load_bias: u64) -> Result<ProcessHeap<'a>, ReachError> {
        if binary.arch() != Arch::Amd64 {
            return Err(ReachError::UnsupportedArch(format!("{:?}", binary.arch())));
        }
        let off = Offsets::of(binary.layout())?;
        let symbol = |name: &'static str| {
            binary.data_symbol(name).map(|a| a.wrapping_add(load_bias)).ok_or(ReachError::NeedsSymbols(name))
        };
        let mheap = symbol("runtime.mheap_")?;
        let moduledata = symbol("runtime.firstmoduledata")?;
        let semtable = symbol("runtime.semtable").ok().map(|a| (a, a + SEMTABLE_BYTES));
        let bytes_at_start = mem.stats().bytes;
        let l2_at = mheap + off.arenas;
        let l2 = mem.read_u64(l2_at)?;
        if l2 == 0 || !l2.is_multiple_of(8) {
            return Err(ReachError::BadRuntimeData {
                what: "runtime.mheap_.arenas[0]",
                addr: l2_at,
                why: format!("the L2 arena array pointer is {l2:#x}"),
            });
        }
        Ok(ProcessHeap {
            mem,
            off,
            moduledata,
            semtable,
            l2,
            arenas: HashMap::new(),
            arena_spans: HashMap::new(),
            spans: HashMap::new(),
            bytes_at_start,
        })
    }

    /// `[start, end)` ranges of the pointer-bearing globals (`.data`, `.bss` per
    /// `firstmoduledata`), without `runtime.semtable`.
    pub fn globals(&mut self) -> Result<Vec<(u64, u64)>, ReachError> {
        let reqs: Vec<(u64, usize)> = self.off.module_ranges.iter().map(|o| (self.moduledata + o, 8)).collect();
        let batch = self.mem.read_batch(&reqs)?;
        let mut v = [0u64; 4];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = batch.get(i).map(le_u64).ok_or(MemoryError::Unmapped { pid: self.mem.pid(), addr: reqs[i].0, len: 8 })?;
        }
        let mut ranges = Vec::new();
        for (start, end) in [(v[0], v[1]), (v[2], v[3])] {
            if end < start || end - start > MAX_REGION {
                return Err(ReachError::BadRuntimeData {
                    what: "runtime.firstmoduledata",
                    addr: self.moduledata,
                    why: format!("global range {start:#x}..{end:#x}"),
                });
            }
            match self.semtable {
                Some((s, e)) if s < end && e > start => {
                    ranges.push((start, s.max(start)));
                    ranges.push((e.min(end), end));
                }
                _ => ranges.push((start, end)),
            }
        }
        ranges.retain(|(s, e)| s < e);
        Ok(ranges)
    }

    fn read_missing_arenas(&mut self, indexes: &[u64]) -> Result<(), ReachError> {
        let mut missing: Vec<u64> = indexes.iter().copied().filter(|i| !self.arenas.contains_key(i)).collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let reqs: Vec<(u64, usize)> = missing.iter().map(|i| (self.l2 + i * 8, 8)).collect();
        let batch = self.mem.read_batch(&reqs)?;
        let mut new_arenas = Vec::new();
        for (k, idx) in missing.into_iter().enumerate() {
            let arena = batch.get(k).map(le_u64).unwrap_or(0);
            self.arenas.insert(idx, arena);
            if arena != 0 && !self.arena_spans.contains_key(&arena) {
                new_arenas.push(arena);
            }
        }
        new_arenas.sort_unstable();
        new_arenas.dedup();
        let len = (PAGES_PER_ARENA * 8) as usize;
        let reqs: Vec<(u64, usize)> = new_arenas.iter().map(|a| (a + self.off.spans, len)).collect();
        let batch = self.mem.read_batch(&reqs)?;
        for (k, arena) in new_arenas.into_iter().enumerate() {
            // Missing span metadata would hide every object of the arena: not a result to report.
            let spans = batch.get(k).ok_or_else(|| ReachError::BadRuntimeData {
                what: "runtime.heapArena",
                addr: arena,
                why: "its spans array is unreadable".into(),
            })?;
            self.arena_spans.insert(arena, spans.as_chunks::<8>().0.iter().map(|c| u64::from_le_bytes(*c)).collect());
        }
        Ok(())
    }

    fn read_missing_spans(&mut self, ptrs: &[u64]) -> Result<(), ReachError> {
        let mut missing: Vec<u64> = ptrs.iter().copied().filter(|p| !self.spans.contains_key(p)).collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let len = self.off.span_read_len();
        let reqs: Vec<(u64, usize)> = missing.iter().map(|p| (*p, len)).collect();
        let batch = self.mem.read_batch(&reqs)?;
        let off = self.off;
        for (k, p) in missing.into_iter().enumerate() {
            let span = batch.get(k).and_then(|b| {
                let word = |o: u64| le_u64(&b[o as usize..o as usize + 8]);
                let (start, npages, elemsize) = (word(off.start_addr), word(off.npages), word(off.elemsize));
                let bytes = npages << PAGE_SHIFT;
                let plausible = b[off.state as usize] == MSPAN_IN_USE
                    && npages > 0
                    && npages <= MAX_SPAN_PAGES
                    && start.is_multiple_of(1 << PAGE_SHIFT)
                    && start.checked_add(bytes).is_some()
                    && (8..=bytes).contains(&elemsize);
                plausible.then_some(Span { start, bytes, elemsize, noscan: b[off.spanclass as usize] & 1 != 0 })
            });
            self.spans.insert(p, span);
        }
        Ok(())
    }

    /// `*mspan` of the page holding `addr` (0: none), once its arena is cached.
    fn span_ptr(&self, addr: u64) -> u64 {
        let Some(idx) = arena_index(addr) else { return 0 };
        let arena = self.arenas.get(&idx).copied().unwrap_or(0);
        let page = ((addr >> PAGE_SHIFT) % PAGES_PER_ARENA) as usize;
        self.arena_spans.get(&arena).and_then(|spans| spans.get(page).copied()).unwrap_or(0)
    }
}

/// `arenaIndex(addr)`, when inside the arena map.
fn arena_index(addr: u64) -> Option<u64> {
    let idx = addr.wrapping_sub(ARENA_BASE_OFFSET) >> HEAP_ARENA_SHIFT;
    (idx < ARENA_L2_ENTRIES).then_some(idx)
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap_or_default())
}

impl ReachMemory for ProcessHeap<'_> {
    fn stacks(&mut self, g_addrs: &[u64]) -> Result<Vec<Option<GoroutineStack>>, ReachError> {
        let (sp_off, status_off) = (self.off.sched_sp as usize, self.off.atomicstatus as usize);
        let len = sp_off.max(status_off) + 8;
        let reqs: Vec<(u64, usize)> = g_addrs.iter().map(|g| (*g, len)).collect();
        let batch = self.mem.read_batch(&reqs)?;
        Ok((0..g_addrs.len())
            .map(|i| {
                let b = batch.get(i)?;
                // g.stack = {lo, hi} at offset 0.
                let (lo, hi, sp) = (le_u64(b), le_u64(&b[8..]), le_u64(&b[sp_off..]));
                let status = u32::from_le_bytes(b[status_off..status_off + 4].try_into().ok()?) & !GSCAN;
                if lo == 0 || hi <= lo || hi - lo > MAX_REGION {
                    return None;
                }
                // A running goroutine's (or one in a syscall) saved SP is stale: scan all of it.
                let saved_sp_valid = status != GRUNNING && status != GSYSCALL && (lo..hi).contains(&sp);
                Some(GoroutineStack { lo, hi, scan_from: if saved_sp_valid { sp & !7 } else { lo } })
            })
            .collect())
    }

    fn objects(&mut self, addrs: &[u64]) -> Result<Vec<Option<HeapObject>>, ReachError> {
        let indexes: Vec<u64> = addrs.iter().filter_map(|a| arena_index(*a)).collect();
        self.read_missing_arenas(&indexes)?;
        let ptrs: Vec<u64> = addrs.iter().map(|a| self.span_ptr(*a)).filter(|p| *p != 0).collect();
        self.read_missing_spans(&ptrs)?;
        Ok(addrs
            .iter()
            .map(|&addr| {
                let span = self.spans.get(&self.span_ptr(addr)).copied().flatten()?;
                let offset = addr.checked_sub(span.start).filter(|o| *o < span.bytes)?;
                let base = span.start + offset / span.elemsize * span.elemsize;
                // The tail of a span past its last whole object holds no object.
                (base + span.elemsize <= span.start + span.bytes).then_some(HeapObject {
                    base,
                    size: span.elemsize,
                    noscan: span.noscan,
                })
            })
            .collect())
    }

    fn read_words(&mut self, ranges: &[(u64, u64)]) -> Result<Vec<Option<Vec<u64>>>, ReachError> {
        let reqs: Vec<(u64, usize)> = ranges.iter().map(|&(s, e)| (s, e.saturating_sub(s) as usize)).collect();
        let batch = self.mem.read_batch(&reqs)?;
        Ok((0..ranges.len())
            .map(|i| batch.get(i).map(|b| b.as_chunks::<8>().0.iter().map(|c| u64::from_le_bytes(*c)).collect()))
            .collect())
    }

    fn bytes_read(&self) -> u64 {
        self.mem.stats().bytes.saturating_sub(self.bytes_at_start)
    }
}
