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
//!
//! Which words of an object hold pointers, Go 1.22+ (`mbitmap.go`, `internal/abi/type.go`): in
//! a scan span of a small size class (`spanclass >> 1 != 0`), objects larger than 512 bytes start
//! with a malloc header, their `*_type`, whose `PtrBytes` (+8) and `GCData` (+32) mask, one bit
//! per word, tiled over the rest of the object, say so; with `TFlagGCMaskOnDemand` (`TFlag` +20,
//! bit 4, Go 1.24+) `GCData` points at the mask's address (0 until built); before 1.24 a `Kind_`
//! (+23) with bit 6 (`KindGCProg`) has a GC program instead of a mask. Spans of objects up to 512
//! bytes end with a bitmap, one bit per word of the span (`spanHeapBitsRange`), followed with the
//! Green Tea GC (default from 1.26) by 128 bytes of inline mark bits whose last byte is the span
//! class. Large objects (size class 0) and everything not matching this are scanned whole.
//! Go 1.20 and 1.21 (`mbitmap.go` before malloc headers): `heapArena` starts with `bitmap`, one
//! bit per word of the arena (`heapArenaBitmapWords` uintptrs, 1 MiB), then `noMorePtrs` (16 KiB),
//! then `spans`; `heapBitsSetType` writes an allocated scan object's bits, zeros through its end,
//! and `initHeapBits` sets every bit of a scan span of 8-byte objects. Go 1.19: `heapArena`
//! starts with `bitmap`, 2 bits per word (2 MiB), then `spans`; byte `w / 4` holds word `w`'s
//! pointer bit at `w % 4` and its scan bit at `4 + w % 4`; a clear scan bit ends the object's
//! pointers (the bits after it are not kept), as `scanobject` reads them.
//! Globals: `runtime.gcdata` and `runtime.gcbss` are GC programs (`runGCProg`) for the pointer
//! words of `[data, edata)` and `[bss, ebss)`.
use std::collections::HashMap;
use std::sync::Arc;

use goscope_inspect::runtime::stack_maps::{DEFER_FN, DEFER_LINK, G_DEFER, G_PANIC, GOBUF_CTXT};
use goscope_inspect::{Arch, FrameMaps, GoBinary, RuntimeLayout};

use super::ReachError;
use super::engine::{GoroutineStack, HeapObject, ReachMemory};
use super::frames::{FrameMapSource, StackContext, StackPointers, stack_pointers};
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
/// `heapArena.bitmap` bytes on Go 1.20/1.21 (one bit per word of a 64 MiB arena), followed with
/// `noMorePtrs` (one bit per bitmap word): where `spans` starts when the arena has that layout.
const ARENA_BITMAP_BYTES: u64 = (1 << HEAP_ARENA_SHIFT) / 64;
const ARENA_SPANS_AFTER_BITMAPS: u64 = ARENA_BITMAP_BYTES + ARENA_BITMAP_BYTES / 64;
/// Go 1.19's `heapArena.bitmap` (two bits per word), where `spans` starts.
const ARENA_SPANS_AFTER_PAIRS: u64 = 2 * ARENA_BITMAP_BYTES;
/// Objects larger than this in small size classes have a malloc header (`minSizeForMallocHeader`).
const MIN_SIZE_FOR_MALLOC_HEADER: u64 = 512;
/// Largest object of a small size class (`maxSmallSize`): bounds a header type's size.
const MAX_SMALL_SIZE: u64 = 32 << 10;
/// `abi.Type` bytes read: up to `GCData`.
const TYPE_READ_LEN: usize = 40;
const TFLAG_GC_MASK_ON_DEMAND: u8 = 1 << 4;
const KIND_GC_PROG: u8 = 1 << 6;
/// `unsafe.Sizeof(spanInlineMarkBits{})` (Green Tea GC), after the heap bitmap of one-page spans
/// of objects of 16 to 512 bytes.
const INLINE_MARK_BITS: u64 = 128;
/// Most bytes of a globals' GC program read: per word of the range, at most
/// 1/8 byte of literal plus instruction bytes.
const fn gc_program_max_len(words: u64) -> u64 {
    words / 4 + 64
}
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
    sched_pc: u64,
    /// `g.syscallsp` (`g.syscallpc` follows): right after the gobuf `sched`, whose last field is
    /// `bp`, in every supported release.
    syscall_sp: u64,
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
            sched_pc: u64::from(l.g_sched_pc),
            syscall_sp: u64::from(l.g_sched_bp) + 8,
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
    /// Bytes of a g read for its stack: up to the last field used.
    fn g_read_len(&self) -> usize {
        [self.sched_sp + GOBUF_CTXT, self.sched_pc, self.syscall_sp + 8, self.atomicstatus, G_DEFER]
            .into_iter()
            .max()
            .unwrap_or(0) as usize
            + 8
    }

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
    pointers: SpanPointers,
}

/// Where the runtime keeps which words of a span's objects hold pointers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpanPointers {
    /// Not used: every word is scanned.
    Unknown,
    /// Each object starts with its type (malloc header).
    Header,
    /// The bitmap at `bitmap`, one bit per word of the span; `class` is the span class the
    /// inline mark bits after it end with (Green Tea), to check the layout.
    InSpan { bitmap: u64, class: Option<u8> },
    /// Go 1.19's pairs at `bitmap`, a pointer and a scan bit per word of the span.
    Pairs { bitmap: u64 },
}

/// The layout of the bitmap heap arenas start with (before Go 1.22).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArenaBitmap {
    /// One pointer bit per word (Go 1.20, 1.21).
    Bits,
    /// A pointer and a scan bit per word (Go 1.19).
    Pairs,
}

/// A type's pointer layout: `size` bytes, of which the words set in `pointers` hold pointers.
#[derive(Debug, Clone)]
struct TypePointers {
    size: u64,
    pointers: Vec<bool>,
}

/// The heap of a live process, with its span metadata cached.
pub struct ProcessHeap<'a> {
    mem: &'a ProcessMemory,
    binary: &'a GoBinary,
    load_bias: u64,
    /// Runtime PC -> the stack maps there (None: no function with frame information).
    frame_maps: HashMap<u64, Option<Arc<FrameMaps>>>,
    /// Offset of `_defer.link` for this release (None: not a measured release).
    defer_link: Option<u64>,
    off: Offsets,
    /// Runtime address of `runtime.firstmoduledata`.
    moduledata: u64,
    /// Runtime addresses of `runtime.gcdata` and `runtime.gcbss`, when known.
    gc_programs: Option<[u64; 2]>,
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
    /// The runtime puts malloc headers in objects (Go 1.22+, unless built with
    /// `GOEXPERIMENT=noallocheaders`).
    malloc_headers: bool,
    /// Heap arenas start with a bitmap of the words of the arena (Go 1.19 to 1.21).
    arena_bitmap: Option<ArenaBitmap>,
    /// Masks have no GC programs and may be built on demand (Go 1.24+).
    masks_on_demand: bool,
    /// Spans of small objects end with their heap bitmap in a layout known here (not Go 1.25's
    /// Green Tea experiment), and with inline mark bits after it (Green Tea from 1.26).
    bitmaps_in_span: bool,
    green_tea: bool,
    /// Span start -> its heap bitmap, None when unreadable or not as expected.
    bitmaps: HashMap<u64, Option<Vec<u8>>>,
    /// `*_type` of malloc headers -> its pointer layout, None when it cannot be trusted.
    types: HashMap<u64, Option<TypePointers>>,
    bytes_at_start: u64,
}

/// Runtime addresses of the runtime variables a [`ProcessHeap`] starts from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeapSymbols {
    /// `runtime.mheap_`.
    pub mheap: u64,
    /// `runtime.firstmoduledata`.
    pub moduledata: u64,
    /// `[start, end)` of `runtime.semtable`, when known.
    pub semtable: Option<(u64, u64)>,
    /// `runtime.gcdata` and `runtime.gcbss`, when known.
    pub gc_programs: Option<[u64; 2]>,
}

impl<'a> ProcessHeap<'a> {
    /// The heap of the process `mem` reads, running `binary` at `load_bias`. Needs the symbol
    /// table (`runtime.mheap_`, `runtime.firstmoduledata`) and the heap offsets of the layout.
    pub fn new(mem: &'a ProcessMemory, binary: &'a GoBinary, load_bias: u64) -> Result<ProcessHeap<'a>, ReachError> {
        if binary.arch() != Arch::Amd64 {
            return Err(ReachError::UnsupportedArch(format!("{:?}", binary.arch())));
        }
        let symbol = |name: &'static str| {
            binary.data_symbol(name).map(|a| a.wrapping_add(load_bias)).ok_or(ReachError::NeedsSymbols(name))
        };
        let symbols = HeapSymbols {
            mheap: symbol("runtime.mheap_")?,
            moduledata: symbol("runtime.firstmoduledata")?,
            semtable: symbol("runtime.semtable").ok().map(|a| (a, a + SEMTABLE_BYTES)),
            gc_programs: symbol("runtime.gcdata").and_then(|d| Ok([d, symbol("runtime.gcbss")?])).ok(),
        };
        Self::with_symbols(mem, binary, load_bias, symbols)
    }

    /// [`Self::new`] with the runtime symbols' addresses given (the fuzzing harness places them).
    pub(crate) fn with_symbols(
        mem: &'a ProcessMemory,
        binary: &'a GoBinary,
        load_bias: u64,
        symbols: HeapSymbols,
    ) -> Result<ProcessHeap<'a>, ReachError> {
        let off = Offsets::of(binary.layout())?;
        let HeapSymbols { mheap, moduledata, semtable, gc_programs } = symbols;
        let bytes_at_start = mem.stats().bytes;
        let info = binary.build_info();
        let minor = if info.go_version.major == 1 { info.go_version.minor } else { 0 };
        let experiment = |name: &str| info.settings.iter().any(|(k, v)| k == "GOEXPERIMENT" && v.split(',').any(|e| e == name));
        let green_tea = (minor >= 26 && !experiment("nogreenteagc")) || (minor == 25 && experiment("greenteagc"));
        let malloc_headers = minor >= 22 && !experiment("noallocheaders");
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
            binary,
            load_bias,
            frame_maps: HashMap::new(),
            defer_link: goscope_inspect::runtime::is_measured(minor)
                .then(|| goscope_inspect::runtime::at(DEFER_LINK, minor))
                .flatten(),
            off,
            moduledata,
            gc_programs,
            semtable,
            l2,
            arenas: HashMap::new(),
            arena_spans: HashMap::new(),
            spans: HashMap::new(),
            malloc_headers,
            arena_bitmap: match minor {
                19 if off.spans == ARENA_SPANS_AFTER_PAIRS => Some(ArenaBitmap::Pairs),
                20 | 21 if off.spans == ARENA_SPANS_AFTER_BITMAPS => Some(ArenaBitmap::Bits),
                _ => None,
            },
            masks_on_demand: minor >= 24,
            bitmaps_in_span: malloc_headers && !(minor == 25 && green_tea),
            green_tea,
            bitmaps: HashMap::new(),
            types: HashMap::new(),
            bytes_at_start,
        })
    }

    /// `[start, end)` ranges of the pointer words of the globals (`.data`, `.bss` per
    /// `firstmoduledata`, narrowed by their GC programs when readable), without
    /// `runtime.semtable`.
    pub fn globals(&mut self) -> Result<Vec<(u64, u64)>, ReachError> {
        let reqs: Vec<(u64, usize)> = self.off.module_ranges.iter().map(|o| (self.moduledata + o, 8)).collect();
        let batch = self.mem.read_batch(&reqs)?;
        let mut v = [0u64; 4];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = batch.get(i).map(le_u64).ok_or(MemoryError::Unmapped { pid: self.mem.pid(), addr: reqs[i].0, len: 8 })?;
        }
        let sections = [(v[0], v[1]), (v[2], v[3])];
        for (start, end) in sections {
            if end < start || end - start > MAX_REGION {
                return Err(ReachError::BadRuntimeData {
                    what: "runtime.firstmoduledata",
                    addr: self.moduledata,
                    why: format!("global range {start:#x}..{end:#x}"),
                });
            }
        }
        let masks = self.global_masks(&sections)?;
        let mut ranges = Vec::new();
        for ((start, end), mask) in sections.into_iter().zip(masks) {
            let mut runs = Vec::new();
            match mask {
                Some(mask) => {
                    let mut run_start = None;
                    for (w, is_pointer) in mask.iter().chain([&false]).enumerate() {
                        let addr = start + 8 * w as u64;
                        match (run_start, is_pointer) {
                            (None, true) => run_start = Some(addr),
                            (Some(s), false) => {
                                runs.push((s, addr.min(end)));
                                run_start = None;
                            }
                            _ => {}
                        }
                    }
                }
                None => runs.push((start, end)),
            }
            for (start, end) in runs {
                match self.semtable {
                    Some((s, e)) if s < end && e > start => {
                        ranges.push((start, s.max(start)));
                        ranges.push((e.min(end), end));
                    }
                    _ => ranges.push((start, end)),
                }
            }
        }
        ranges.retain(|(s, e)| s < e);
        Ok(ranges)
    }

    /// The pointer words of each `[start, end)` section by its GC program; None when the
    /// program is unknown, unreadable or does not describe the section.
    fn global_masks(&mut self, sections: &[(u64, u64); 2]) -> Result<[Option<Vec<bool>>; 2], ReachError> {
        let Some(programs) = self.gc_programs else { return Ok([None, None]) };
        let words = sections.map(|(s, e)| (e - s) / 8);
        let reqs: Vec<(u64, usize)> = (0..2).map(|k| (programs[k], gc_program_max_len(words[k]) as usize)).collect();
        let batch = self.mem.read_batch(&reqs)?;
        Ok([0, 1].map(|k| {
            let mask = run_gc_program(batch.get(k)?, words[k] as usize)?;
            // The program covers the section (its last words may be left out as scalars).
            (mask.len() as u64 <= words[k]).then_some(mask)
        }))
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
        let (malloc_headers, bitmaps_in_span, green_tea) = (self.malloc_headers, self.bitmaps_in_span, self.green_tea);
        let arena_bitmap = self.arena_bitmap;
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
                let spanclass = b[off.spanclass as usize];
                let noscan = spanclass & 1 != 0;
                let small = spanclass >> 1 != 0;
                let pointers = if noscan || !small {
                    SpanPointers::Unknown
                } else if let Some(kind) = arena_bitmap {
                    self.arena_bitmap_of(kind, start, bytes)
                } else if elemsize > MIN_SIZE_FOR_MALLOC_HEADER {
                    if malloc_headers { SpanPointers::Header } else { SpanPointers::Unknown }
                } else if !bitmaps_in_span || (green_tea && npages != 1) {
                    SpanPointers::Unknown
                } else {
                    let inline = green_tea && elemsize >= 16;
                    let bitmap = start + bytes - bytes / 64 - if inline { INLINE_MARK_BITS } else { 0 };
                    SpanPointers::InSpan { bitmap, class: inline.then_some(spanclass) }
                };
                plausible.then_some(Span { start, bytes, elemsize, noscan, pointers })
            });
            self.spans.insert(p, span);
        }
        Ok(())
    }

    /// Reads the pointer layouts of the types not cached yet.
    fn read_missing_types(&mut self, type_addrs: &[u64]) -> Result<(), ReachError> {
        let mut missing: Vec<u64> = type_addrs.iter().copied().filter(|t| !self.types.contains_key(t)).collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let reqs: Vec<(u64, usize)> = missing.iter().map(|t| (*t, TYPE_READ_LEN)).collect();
        let batch = self.mem.read_batch(&reqs)?;
        // (type, size, pointer words, where the mask is or, on demand, where its address is)
        let mut plausible: Vec<(u64, u64, u64, u64, bool)> = Vec::new();
        for (k, &t) in missing.iter().enumerate() {
            self.types.insert(t, None);
            let Some(b) = batch.get(k) else { continue };
            let (size, ptr_bytes, tflag, kind, gcdata) = (le_u64(b), le_u64(&b[8..]), b[20], b[23], le_u64(&b[32..]));
            let on_demand = self.masks_on_demand && tflag & TFLAG_GC_MASK_ON_DEMAND != 0;
            let gc_program = !self.masks_on_demand && kind & KIND_GC_PROG != 0;
            if size > 0
                && size <= MAX_SMALL_SIZE
                && size.is_multiple_of(8)
                && ptr_bytes > 0
                && ptr_bytes <= size
                && ptr_bytes.is_multiple_of(8)
                && gcdata != 0
                && !gc_program
            {
                plausible.push((t, size, ptr_bytes / 8, gcdata, on_demand));
            }
        }
        let reqs: Vec<(u64, usize)> = plausible.iter().filter(|p| p.4).map(|p| (p.3, 8)).collect();
        let built = self.mem.read_batch(&reqs)?;
        let mut built_masks = (0..built.len()).map(|k| built.get(k).map(le_u64).unwrap_or(0));
        let mut masks: Vec<(u64, u64, u64, u64)> = Vec::new();
        for (t, size, words, gcdata, on_demand) in plausible {
            let mask_at = if on_demand { built_masks.next().unwrap_or(0) } else { gcdata };
            if mask_at != 0 {
                masks.push((t, size, words, mask_at));
            }
        }
        let reqs: Vec<(u64, usize)> = masks.iter().map(|m| (m.3, m.2.div_ceil(8) as usize)).collect();
        let bits = self.mem.read_batch(&reqs)?;
        for (k, (t, size, words, _)) in masks.into_iter().enumerate() {
            let Some(b) = bits.get(k) else { continue };
            let pointers = (0..words as usize).map(|w| b[w / 8] >> (w % 8) & 1 != 0).collect();
            self.types.insert(t, Some(TypePointers { size, pointers }));
        }
        Ok(())
    }

    /// Reads the heap bitmaps of the spans not cached yet.
    fn read_missing_bitmaps(&mut self, spans: &[Span]) -> Result<(), ReachError> {
        let mut missing: Vec<Span> = spans.iter().copied().filter(|s| !self.bitmaps.contains_key(&s.start)).collect();
        missing.sort_unstable_by_key(|s| s.start);
        missing.dedup_by_key(|s| s.start);
        let mut reqs = Vec::new();
        let mut checks = Vec::new();
        for s in &missing {
            let (bitmap, bitmap_len, class) = match s.pointers {
                SpanPointers::InSpan { bitmap, class } => (bitmap, s.bytes / 64, class),
                SpanPointers::Pairs { bitmap } => (bitmap, s.bytes / 32, None),
                SpanPointers::Unknown | SpanPointers::Header => continue,
            };
            let len = bitmap_len + if class.is_some() { INLINE_MARK_BITS } else { 0 };
            reqs.push((bitmap, len as usize));
            checks.push((s.start, bitmap_len as usize, class));
        }
        let batch = self.mem.read_batch(&reqs)?;
        for (k, (start, len, class)) in checks.into_iter().enumerate() {
            let bitmap = batch.get(k).filter(|b| class.is_none_or(|c| b.last() == Some(&c))).map(|b| b[..len].to_vec());
            self.bitmaps.insert(start, bitmap);
        }
        Ok(())
    }

    /// Where the heap arena's bitmap (Go 1.19-1.21) has the bits of the span `[start, start +
    /// bytes)`; Unknown when the span crosses into another arena or its arena is not cached.
    fn arena_bitmap_of(&self, kind: ArenaBitmap, start: u64, bytes: u64) -> SpanPointers {
        // Torn or garbage span fields must not overflow here (the span is checked after).
        let end = start.checked_add(bytes).and_then(|e| e.checked_sub(1));
        let (Some(first), Some(last)) = (arena_index(start), end.and_then(arena_index)) else {
            return SpanPointers::Unknown;
        };
        match self.arenas.get(&first) {
            Some(&arena) if arena != 0 && first == last => {
                let word_in_arena = (start % (1 << HEAP_ARENA_SHIFT)) / 8;
                match kind {
                    ArenaBitmap::Bits => SpanPointers::InSpan { bitmap: arena + word_in_arena / 8, class: None },
                    ArenaBitmap::Pairs => SpanPointers::Pairs { bitmap: arena + word_in_arena / 4 },
                }
            }
            _ => SpanPointers::Unknown,
        }
    }

    /// The span holding `addr`, once read.
    fn span_of(&self, addr: u64) -> Option<Span> {
        self.spans.get(&self.span_ptr(addr)).copied().flatten()
    }

    /// `*mspan` of the page holding `addr` (0: none), once its arena is cached.
    fn span_ptr(&self, addr: u64) -> u64 {
        let Some(idx) = arena_index(addr) else { return 0 };
        let arena = self.arenas.get(&idx).copied().unwrap_or(0);
        let page = ((addr >> PAGE_SHIFT) % PAGES_PER_ARENA) as usize;
        self.arena_spans.get(&arena).and_then(|spans| spans.get(page).copied()).unwrap_or(0)
    }
}

impl ProcessHeap<'_> {
    /// The stack of the g at `g_addr` whose first bytes are `b` (None: implausible bounds).
    fn stack_of(&self, g_addr: u64, b: &[u8]) -> Option<GoroutineStack> {
        let word = |o: u64| b.get(o as usize..o as usize + 8).map(le_u64);
        // g.stack = {lo, hi} at offset 0.
        let (lo, hi, sp, pc) = (word(0)?, word(8)?, word(self.off.sched_sp)?, word(self.off.sched_pc)?);
        let at = self.off.atomicstatus as usize;
        let status = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) & !GSCAN;
        if lo == 0 || hi <= lo || hi - lo > MAX_REGION {
            return None;
        }
        // A running goroutine's saved context is stale: scan all of its stack. One in a system
        // call is scanned from where it entered it (`syscallsp`, `syscallpc`), as the runtime does.
        let (sp, pc) = if status == GSYSCALL { (word(self.off.syscall_sp)?, word(self.off.syscall_sp + 8)?) } else { (sp, pc) };
        let saved_sp_valid = status != GRUNNING && (lo..hi).contains(&sp);
        let context = saved_sp_valid.then(|| StackContext {
            g_addr,
            pc,
            sp,
            into_stack: [self.off.sched_sp + GOBUF_CTXT, G_PANIC, G_DEFER].map(|o| word(o).unwrap_or(0)),
            defer_fields: self.defer_link.map(|link| [DEFER_FN, link]),
        });
        // One in a system call can return and run below `syscallsp` at any moment: its whole stack
        // is read, for the case that it changed while read and is then scanned conservatively.
        let scan_from = if saved_sp_valid && status != GSYSCALL { sp & !7 } else { lo };
        Some(GoroutineStack { lo, hi, scan_from, context })
    }
}

impl FrameMapSource for ProcessHeap<'_> {
    fn frame_maps(&mut self, pc: u64) -> Option<Arc<FrameMaps>> {
        let (binary, bias) = (self.binary, self.load_bias);
        self.frame_maps.entry(pc).or_insert_with(|| binary.frame_maps(pc.wrapping_sub(bias)).map(Arc::new)).clone()
    }
}

/// `arenaIndex(addr)`, when inside the arena map.
fn arena_index(addr: u64) -> Option<u64> {
    let idx = addr.wrapping_sub(ARENA_BASE_OFFSET) >> HEAP_ARENA_SHIFT;
    (idx < ARENA_L2_ENTRIES).then_some(idx)
}

/// The pointer words of the object of `words` words from word `first` of a span whose Go 1.19
/// bitmap (2 bits per word) is `bitmap`: each word's pointer bit up to the first clear scan bit,
/// none after it (as `scanobject` stops there). None when the bitmap is short.
pub(super) fn pair_pointers(bitmap: &[u8], first: usize, words: usize) -> Option<Vec<bool>> {
    let mut mask = Vec::with_capacity(words);
    let mut more = true;
    for w in first..first + words {
        let pair = bitmap.get(w / 4)? >> (w % 4);
        more &= pair & 0x10 != 0;
        mask.push(more && pair & 1 != 0);
    }
    Some(mask)
}

/// The pointer mask (one bool per word) a GC program describes, as the runtime's `runGCProg`
/// builds it: literal bits, or the last `n` bits repeated `c` times. None when it is malformed
/// or describes more than `max_words` words.
pub(super) fn run_gc_program(prog: &[u8], max_words: usize) -> Option<Vec<bool>> {
    fn varint(prog: &[u8], p: &mut usize) -> Option<usize> {
        let mut v = 0usize;
        for shift in (0..64).step_by(7) {
            let b = *prog.get(*p)?;
            *p += 1;
            v |= usize::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut bits: Vec<bool> = Vec::new();
    let mut p = 0;
    loop {
        let inst = *prog.get(p)?;
        p += 1;
        let n = usize::from(inst & 0x7f);
        if inst & 0x80 == 0 {
            if n == 0 {
                return Some(bits);
            }
            for i in 0..n {
                bits.push(prog.get(p + i / 8)? >> (i % 8) & 1 != 0);
            }
            p += n.div_ceil(8);
        } else {
            let n = if n == 0 { varint(prog, &mut p)? } else { n };
            let total = n.checked_mul(varint(prog, &mut p)?)?;
            if n == 0 || n > bits.len() || bits.len().checked_add(total)? > max_words {
                return None;
            }
            let from = bits.len() - n;
            for i in 0..total {
                bits.push(bits[from + i]);
            }
        }
        if bits.len() > max_words {
            return None;
        }
    }
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap_or_default())
}

impl ReachMemory for ProcessHeap<'_> {
    fn stacks(&mut self, g_addrs: &[u64]) -> Result<Vec<Option<GoroutineStack>>, ReachError> {
        let reqs: Vec<(u64, usize)> = g_addrs.iter().map(|g| (*g, self.off.g_read_len())).collect();
        let batch = self.mem.read_batch(&reqs)?;
        Ok((0..g_addrs.len()).map(|i| self.stack_of(g_addrs[i], batch.get(i)?)).collect())
    }

    fn stack_pointers(&mut self, stacks: &[(GoroutineStack, &[u64])]) -> Result<Vec<Option<StackPointers>>, ReachError> {
        // A goroutine that ran while its stack was read has another layout than its saved
        // context says: read the g again, and keep the maps only where nothing changed.
        let contexts: Vec<Option<StackContext>> = stacks.iter().map(|(s, _)| s.context).collect();
        let reqs: Vec<(u64, usize)> = contexts.iter().flatten().map(|c| (c.g_addr, self.off.g_read_len())).collect();
        let batch = self.mem.read_batch(&reqs)?;
        let again: Vec<Option<GoroutineStack>> =
            (0..reqs.len()).map(|k| batch.get(k).and_then(|b| self.stack_of(reqs[k].0, b))).collect();
        let mut again = again.into_iter();
        let mut out = Vec::with_capacity(stacks.len());
        for (stack, words) in stacks {
            let Some(ctx) = stack.context else {
                out.push(None);
                continue;
            };
            let unchanged = again.next().flatten().is_some_and(|now| now == *stack);
            out.push(unchanged.then(|| stack_pointers(words, stack.scan_from, stack.lo, &ctx, self)));
        }
        Ok(out)
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
                    typed: span.pointers != SpanPointers::Unknown,
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

    fn pointer_masks(&mut self, objects: &[(HeapObject, u64)]) -> Result<Vec<Option<Vec<bool>>>, ReachError> {
        let spans: Vec<Option<Span>> = objects.iter().map(|(o, _)| self.span_of(o.base)).collect();
        let in_span: Vec<Span> = spans.iter().flatten().copied().filter(|s| s.pointers != SpanPointers::Header).collect();
        self.read_missing_bitmaps(&in_span)?;
        let headers: Vec<u64> = objects
            .iter()
            .zip(&spans)
            .filter(|(_, s)| s.is_some_and(|s| s.pointers == SpanPointers::Header))
            .map(|(o, _)| o.1)
            .collect();
        self.read_missing_types(&headers)?;
        Ok(objects
            .iter()
            .zip(spans)
            .map(|(&(obj, first_word), span)| {
                let span = span.filter(|s| s.elemsize == obj.size)?;
                let words = (obj.size / 8) as usize;
                match span.pointers {
                    SpanPointers::Unknown => None,
                    SpanPointers::Header => {
                        let layout = self.types.get(&first_word)?.as_ref()?;
                        // The type tiles the rest (an array of it), as the runtime's typePointers.
                        let per_elem = (layout.size / 8) as usize;
                        let data = (0..words - 1).map(|w| layout.pointers.get(w % per_elem).copied().unwrap_or(false));
                        Some(std::iter::once(false).chain(data).collect())
                    }
                    SpanPointers::InSpan { .. } => {
                        let bitmap = self.bitmaps.get(&span.start)?.as_ref()?;
                        let first = ((obj.base - span.start) / 8) as usize;
                        (first..first + words).map(|w| bitmap.get(w / 8).map(|b| b >> (w % 8) & 1 != 0)).collect()
                    }
                    SpanPointers::Pairs { .. } => {
                        let bitmap = self.bitmaps.get(&span.start)?.as_ref()?;
                        let first = ((obj.base - span.start) / 8) as usize;
                        pair_pointers(bitmap, first, words)
                    }
                }
            })
            .collect())
    }

    fn bytes_read(&self) -> u64 {
        self.mem.stats().bytes.saturating_sub(self.bytes_at_start)
    }
}
