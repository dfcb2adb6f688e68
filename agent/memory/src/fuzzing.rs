//! The decoders of a target's memory over a fake process memory built from bytes: what a Go
//! process could put in its own memory, for the cargo-fuzz target `memory` (agent/inspect/fuzz)
//! and the adversarial-memory tests below. Not a stable API (feature `fuzzing`).
//!
//! A [`FakeProcess`] answers `process_vm_readv` as the kernel does (ranges copied back to back,
//! stopping at the first one not completely mapped) from byte regions; everything else is
//! unmapped. [`snapshot`] runs the whole snapshot (goroutine list, g structs, stack walks, sudogs,
//! channels, element types, semaphores) over it, from a goroutine list at [`ALLGS`]; [`reach`]
//! runs the reachability fixpoint over a heap, stacks and goroutines read from bytes.
use std::io;

use goscope_inspect::GoBinary;

use crate::allgs::{AllgsLocation, AllgsSource};
use crate::process::ProcessMemory;
use crate::reach::{
    GoroutineStack, HeapObject, HeapSymbols, ProcessHeap, ReachError, ReachGoroutine, ReachMemory, ReachOptions, ReachReport,
    ReachRole, find_leaked_in,
};
use crate::snapshot::{Snapshot, SnapshotError, SnapshotOptions, snapshot_at};
use crate::sys::fake;

/// Where the fake memory's first region starts: above the first page, so that pointers into it
/// are small numbers a fuzzer finds easily.
pub const BASE: u64 = 0x1_0000;
/// The `runtime.allgs` slice header (pointer, length, capacity) of [`snapshot`].
pub const ALLGS: u64 = BASE;
/// `runtime.allglen` of [`snapshot`].
pub const ALLGLEN: u64 = BASE + 24;

/// A process's memory: byte regions at addresses; everything else is unmapped.
#[derive(Debug, Clone, Default)]
pub struct FakeProcess {
    regions: Vec<(u64, Vec<u8>)>,
}

impl FakeProcess {
    /// One region at [`BASE`].
    pub fn flat(bytes: Vec<u8>) -> FakeProcess {
        FakeProcess { regions: vec![(BASE, bytes)] }
    }

    /// Adds a region at `addr` (regions must not overlap).
    pub fn with_region(mut self, addr: u64, bytes: Vec<u8>) -> FakeProcess {
        self.regions.push((addr, bytes));
        self
    }

    /// The bytes `[addr, addr + len)` if they are all mapped (within one region).
    pub fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.regions.iter().find_map(|(start, bytes)| {
            let from = usize::try_from(addr.checked_sub(*start)?).ok()?;
            bytes.get(from..from.checked_add(len)?)
        })
    }

    /// `process_vm_readv`: copies `remote` back to back into `local`, stopping at the first range
    /// not completely mapped; EFAULT when that is the first.
    fn readv(&self, local: &mut [u8], remote: &[(u64, usize)]) -> io::Result<usize> {
        let mut copied = 0;
        for &(addr, len) in remote {
            let Some(bytes) = self.get(addr, len) else { break };
            local[copied..copied + len].copy_from_slice(bytes);
            copied += len;
        }
        if copied == 0 && remote.iter().any(|&(_, len)| len > 0) {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        Ok(copied)
    }

    /// Runs `body` with a reader of this memory (on this thread), capped at `budget` bytes.
    fn with_reader<R>(self, budget: u64, body: impl FnOnce(&ProcessMemory) -> R) -> R {
        let mem = ProcessMemory::new(std::process::id()).expect("the current process exists").with_budget(budget);
        fake::with_readv(move |_, local, remote| self.readv(local, remote), || body(&mem))
    }
}

/// What a [`snapshot`] read and how long it took.
#[derive(Debug)]
pub struct SnapshotRun {
    /// The snapshot, or why there is none.
    pub result: Result<Snapshot, SnapshotError>,
    /// Bytes requested from the fake memory (merged ranges, as the budget counts them).
    pub bytes_requested: u64,
}

/// A snapshot of `memory`, whose goroutine list is at [`ALLGS`] / [`ALLGLEN`], as a process
/// running `binary` (at load bias 0) would have it, reading at most `budget` bytes.
pub fn snapshot(binary: &GoBinary, memory: FakeProcess, opts: &SnapshotOptions, budget: u64) -> SnapshotRun {
    memory.with_reader(budget, |mem| {
        let location = AllgsLocation { allgs: ALLGS, allglen: Some(ALLGLEN), source: AllgsSource::Symtab };
        let result = snapshot_at(mem, binary, 0, location, opts);
        SnapshotRun { result, bytes_requested: budget - mem.budget_left() }
    })
}

/// Snapshot options from a fuzz input's first byte: dead g structs, stacks, channels, frame limit.
pub fn snapshot_options(flags: u8) -> SnapshotOptions {
    SnapshotOptions {
        include_dead: flags & 1 != 0,
        stacks: flags & 2 == 0,
        channels: flags & 4 == 0,
        max_frames: [64, 1, 3, 1000][usize::from(flags >> 3) & 3],
        stack_window: [1024, 16, 64, 4096][usize::from(flags >> 5) & 3],
        max_sudogs: if flags & 0x80 != 0 { 2 } else { 4096 },
        ..SnapshotOptions::default()
    }
}

/// The fuzz target's whole run: options from `data[0]`, memory from the rest (at [`BASE`]).
pub fn snapshot_bytes(binary: &GoBinary, data: &[u8]) -> SnapshotRun {
    let Some((&flags, memory)) = data.split_first() else {
        return snapshot(binary, FakeProcess::default(), &SnapshotOptions::default(), 1 << 20);
    };
    snapshot(binary, FakeProcess::flat(memory.to_vec()), &snapshot_options(flags), 64 << 20)
}

/// A heap, stacks and goroutines, all read from one region at [`BASE`]:
///
/// - goroutine `i` (at most 16) has its g at the word at `BASE + 8i`; its stack's `lo`, `hi`
///   and `scan_from` are the three words at its g;
/// - its role is `roles[i] % 3`: a root, blocked on the object at the word at
///   `BASE + 128 + 8i`, or blocked forever;
/// - every 32-byte block of the region is a heap object (noscan when its first byte is 0xff,
///   typed with the pointer mask of its second byte when that is 0xfe); the rest is not heap;
/// - the first `globals` bytes of the region are the pointer-bearing globals.
#[derive(Debug, Clone)]
pub struct FakeHeap {
    memory: FakeProcess,
    len: u64,
    bytes_read: u64,
}

impl FakeHeap {
    /// The heap of `region` (at [`BASE`]).
    pub fn new(region: Vec<u8>) -> FakeHeap {
        let len = region.len() as u64;
        FakeHeap { memory: FakeProcess::flat(region), len, bytes_read: 0 }
    }

    fn word(&self, addr: u64) -> Option<u64> {
        self.memory.get(addr, 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn object_at(&self, addr: u64) -> Option<HeapObject> {
        let off = addr.checked_sub(BASE).filter(|&o| o < self.len)?;
        let base = BASE + (off & !31);
        let first = self.memory.get(base, 2)?;
        Some(HeapObject { base, size: 32, noscan: first[0] == 0xff, typed: first[0] == 0xfe })
    }
}

impl ReachMemory for FakeHeap {
    fn stacks(&mut self, g_addrs: &[u64]) -> Result<Vec<Option<GoroutineStack>>, ReachError> {
        Ok(g_addrs
            .iter()
            .map(|&g| {
                let (lo, hi, scan_from) = (self.word(g)?, self.word(g.wrapping_add(8))?, self.word(g.wrapping_add(16))?);
                self.bytes_read += 24;
                Some(GoroutineStack { lo, hi, scan_from, context: None })
            })
            .collect())
    }

    fn objects(&mut self, addrs: &[u64]) -> Result<Vec<Option<HeapObject>>, ReachError> {
        Ok(addrs.iter().map(|&a| self.object_at(a)).collect())
    }

    fn read_words(&mut self, ranges: &[(u64, u64)]) -> Result<Vec<Option<Vec<u64>>>, ReachError> {
        Ok(ranges
            .iter()
            .map(|&(start, end)| {
                let len = usize::try_from(end.checked_sub(start)?).ok()?;
                let bytes = self.memory.get(start, len)?;
                self.bytes_read += len as u64;
                Some(bytes.as_chunks::<8>().0.iter().map(|w| u64::from_le_bytes(*w)).collect())
            })
            .collect())
    }

    fn pointer_masks(&mut self, objects: &[(HeapObject, u64)]) -> Result<Vec<Option<Vec<bool>>>, ReachError> {
        Ok(objects
            .iter()
            .map(|(o, _)| {
                let mask = self.memory.get(o.base + 1, 1)?[0];
                Some((0..o.size / 8).map(|i| mask >> (i % 8) & 1 != 0).collect())
            })
            .collect())
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
}

/// The reachability fixpoint over the [`FakeHeap`] of `region`, for goroutines with `roles`.
pub fn reach(region: Vec<u8>, roles: &[u8], globals: u64, opts: &ReachOptions) -> Result<ReachReport, ReachError> {
    let mut heap = FakeHeap::new(region);
    let goroutines: Vec<ReachGoroutine> = roles
        .iter()
        .take(16)
        .enumerate()
        .map(|(i, &r)| {
            let g_addr = heap.word(BASE + 8 * i as u64).unwrap_or(0);
            let object = heap.word(BASE + 128 + 8 * i as u64).unwrap_or(0);
            let role = match r % 3 {
                0 => ReachRole::Root,
                1 => ReachRole::Blocked(vec![object]),
                _ => ReachRole::Forever,
            };
            ReachGoroutine { goid: i as u64 + 1, g_addr, role, untraceable: Vec::new() }
        })
        .collect();
    let globals = [(BASE, BASE + globals.min(heap.len))];
    find_leaked_in(&mut heap, &globals, &goroutines, opts)
}

/// The fuzz target's reachability run: `data[0]` goroutines' roles follow (`data[1..=n]`), then
/// `data[n+1]` (globals, in words), then the region.
pub fn reach_bytes(data: &[u8]) -> Option<Result<ReachReport, ReachError>> {
    let (&n, rest) = data.split_first()?;
    let n = usize::from(n % 17);
    let roles = rest.get(..n)?;
    let (&globals, region) = rest.get(n..)?.split_first()?;
    let opts = ReachOptions { max_bytes: 16 << 20, could_wake_max_objects: 1000, explain: globals & 1 != 0 };
    Some(reach(region.to_vec(), roles, u64::from(globals) * 8, &opts))
}

/// The walk of `runtime.semtable`'s treaps of sudogs (how Go 1.19-1.25 waiters on a Mutex,
/// RWMutex or WaitGroup are found) over `memory`, with the table at [`BASE`]: g → (semaphore,
/// sudog) for the waits it found.
pub fn semtable(
    binary: &GoBinary,
    memory: FakeProcess,
) -> Result<std::collections::HashMap<u64, (u64, u64)>, crate::MemoryError> {
    let fields = crate::sema::SudogFields::of(binary);
    memory.with_reader(64 << 20, |mem| crate::sema::read_table(mem, BASE, &fields))
}

/// Where [`process_heap`] puts the runtime's variables (outside the region at [`BASE`]).
const MHEAP: u64 = 0x2000_0000;
const L2: u64 = 0x3000_0000;
const HEAP_ARENA: u64 = 0x5000_0000;
const MODULEDATA: u64 = 0x6000_0000;
/// `arenaIndex(BASE)` on linux/amd64: `(BASE - 0xffff800000000000) >> 26`.
const BASE_ARENA_INDEX: u64 = (BASE.wrapping_sub(0xffff_8000_0000_0000)) >> 26;
/// Pages of 8 KiB before [`BASE`] in its arena.
const BASE_PAGE: u64 = (BASE >> 13) % 8192;

/// The leak proof as goscope runs it on a process ([`ProcessHeap`]: the runtime's span metadata,
/// malloc headers and heap bitmaps, stack maps) over `region` at [`BASE`], for a process running
/// `binary` (which must know the heap offsets, e.g. from its Go version's table). The runtime's
/// variables are placed around it: `mheap_.arenas[0]` leads to a heapArena whose `spans` entries
/// for the region's pages are the region's first words (so the region says which `mspan` describes
/// each of its pages, and the mspans are in the region too); `firstmoduledata` says the region's
/// first `globals` bytes are `.data`. Goroutines as in [`reach`], their g addresses at
/// `BASE + 0x40 + 8i` and wait objects at `BASE + 0xc0 + 8i`.
pub fn process_heap(
    binary: &GoBinary,
    region: Vec<u8>,
    roles: &[u8],
    globals: u64,
    opts: &ReachOptions,
) -> Result<ReachReport, ReachError> {
    let l = binary.layout();
    let (Some(arenas), Some(spans)) = (l.mheap_arenas, l.heap_arena_spans) else {
        return Err(ReachError::MissingOffset("runtime.mheap.arenas"));
    };
    let module_fields = [l.moduledata_data, l.moduledata_edata, l.moduledata_bss, l.moduledata_ebss];
    let len = region.len() as u64;
    let word =
        |off: u64| region.get(off as usize..off as usize + 8).map_or(0, |w| u64::from_le_bytes(w.try_into().expect("8 bytes")));
    let goroutines: Vec<ReachGoroutine> = roles
        .iter()
        .take(16)
        .enumerate()
        .map(|(i, &r)| {
            let (g_addr, object) = (word(0x40 + 8 * i as u64), word(0xc0 + 8 * i as u64));
            let role = match r % 3 {
                0 => ReachRole::Root,
                1 => ReachRole::Blocked(vec![object]),
                _ => ReachRole::Forever,
            };
            ReachGoroutine { goid: i as u64 + 1, g_addr, role, untraceable: Vec::new() }
        })
        .collect();
    let mut mheap = vec![0u8; arenas as usize + 8];
    mheap[arenas as usize..].copy_from_slice(&L2.to_le_bytes());
    let mut arena = vec![0u8; spans as usize + 8192 * 8];
    let first_span = spans as usize + 8 * BASE_PAGE as usize;
    let page_spans = region.len().div_ceil(8192).min(8) * 8;
    arena[first_span..first_span + page_spans.min(region.len())].copy_from_slice(&region[..page_spans.min(region.len())]);
    let mut moduledata = vec![0u8; module_fields.iter().flatten().max().map_or(0, |m| *m as usize) + 8];
    let data_end = BASE + globals.min(len);
    for (field, value) in module_fields.iter().zip([BASE, data_end, data_end, data_end]) {
        if let Some(f) = field {
            moduledata[*f as usize..*f as usize + 8].copy_from_slice(&value.to_le_bytes());
        }
    }
    let memory = FakeProcess::flat(region)
        .with_region(MHEAP, mheap)
        .with_region(L2 + 8 * BASE_ARENA_INDEX, HEAP_ARENA.to_le_bytes().to_vec())
        .with_region(HEAP_ARENA, arena)
        .with_region(MODULEDATA, moduledata);
    memory.with_reader(opts.max_bytes.saturating_add(1 << 20), |mem| {
        let symbols = HeapSymbols { mheap: MHEAP, moduledata: MODULEDATA, semtable: None, gc_programs: None };
        let mut heap = ProcessHeap::with_symbols(mem, binary, 0, symbols)?;
        let globals = heap.globals()?;
        find_leaked_in(&mut heap, &globals, &goroutines, opts)
    })
}

/// The fuzz target's [`process_heap`] run, laid out as [`reach_bytes`].
pub fn process_heap_bytes(binary: &GoBinary, data: &[u8]) -> Option<Result<ReachReport, ReachError>> {
    let (&n, rest) = data.split_first()?;
    let n = usize::from(n % 17);
    let roles = rest.get(..n)?;
    let (&globals, region) = rest.get(n..)?.split_first()?;
    let opts = ReachOptions { max_bytes: 16 << 20, could_wake_max_objects: 1000, explain: globals & 1 != 0 };
    Some(process_heap(binary, region.to_vec(), roles, u64::from(globals) * 8, &opts))
}

#[cfg(test)]
mod tests;
