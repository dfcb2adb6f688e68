//! What the processor reads from the target's memory on its own schedule (never on the event
//! path): the goroutines at attach, the park stacks of long waits, and who holds which channel or
//! lock (the deadlock detector's evidence).
use std::collections::{BTreeSet, HashMap, HashSet};

use goscope_memory::{GStatus, ProcessMemory, ReachMemory as _};

use crate::{
    detect,
    model::{
        Location,
        state::{
            GoState, ParkMark, ProcessState, SnapshotGoroutine, Wait, WaitClass, is_synchronisation_internal,
            sync_function_class, sync_primitive,
        },
    },
    session::governor::Activity,
    target::TargetContext,
};

pub struct Seed {
    pub goroutines: usize,
    pub read_ns: u64,
    pub bytes_read: u64,
    /// How busy the goroutines are, for the budget governor.
    pub activity: Activity,
}

/// Reads every goroutine from the target's memory into the state (without stopping it).
pub fn seed_from_memory(state: &mut ProcessState, ctx: &TargetContext) -> Result<Seed, Box<dyn std::error::Error>> {
    read_into_state(state, ctx, ProcessState::reconcile, &goscope_memory::SnapshotOptions::default())
}

/// Re-reads every goroutine after events were lost or dropped (see [`ProcessState::resync`]).
pub fn resync_from_memory(state: &mut ProcessState, ctx: &TargetContext) -> Result<Seed, Box<dyn std::error::Error>> {
    read_into_state(state, ctx, ProcessState::resync, &goscope_memory::SnapshotOptions::default())
}

/// One periodic scan of scan mode (see [`ProcessState::merge_scan`]). Stacks are not read here:
/// [`read_park_stacks`] reads those of the waits that last.
pub fn scan_from_memory(state: &mut ProcessState, ctx: &TargetContext) -> Result<Seed, Box<dyn std::error::Error>> {
    let opts = goscope_memory::SnapshotOptions { stacks: false, ..goscope_memory::SnapshotOptions::default() };
    read_into_state(state, ctx, ProcessState::merge_scan, &opts)
}

fn read_into_state(
    state: &mut ProcessState,
    ctx: &TargetContext,
    merge: fn(&mut ProcessState, &[SnapshotGoroutine], u64),
    opts: &goscope_memory::SnapshotOptions,
) -> Result<Seed, Box<dyn std::error::Error>> {
    let mem = ProcessMemory::new(ctx.pid)?;
    let snap = goscope_memory::snapshot_with(&mem, &ctx.binary, ctx.load_bias, opts)?;
    let goroutines: Vec<SnapshotGoroutine> = snap
        .goroutines
        .iter()
        .filter_map(|g| {
            let state = match g.status {
                GStatus::Runnable | GStatus::Preempted | GStatus::Copystack => GoState::Runnable,
                GStatus::Running => GoState::Running,
                GStatus::Syscall => GoState::Syscall,
                GStatus::Waiting | GStatus::Leaked => GoState::Waiting,
                GStatus::Idle | GStatus::Dead | GStatus::DeadExtra => return None,
            };
            let wait = (state == GoState::Waiting).then(|| {
                let code = g.wait_reason_code.unwrap_or(0);
                let stack = sites(&g.stack);
                let class = wait_class(g.wait_reason.as_deref(), &stack);
                Wait {
                    reason_code: code,
                    class,
                    channels: g.channels.clone(),
                    lock: sync_primitive(class, g.sema_addr),
                    stack,
                    park_site: None,
                }
            });
            Some(SnapshotGoroutine {
                goid: g.goid,
                state,
                wait,
                // g.waitsince is only a GC's timestamp and may predate the wait: the wait is known
                // to have lasted at least since the read.
                wait_since_ns: 0,
                parent_goid: g.parent_goid,
                creation_pc: Some(g.gopc),
                start_pc: Some(g.startpc),
                g_addr: g.g_addr,
                park_mark: (state == GoState::Waiting).then(|| ParkMark {
                    g_addr: g.g_addr,
                    reason_code: g.wait_reason_code.unwrap_or(0),
                    resume_pc: g.resume.pc,
                    resume_depth: g.resume.depth,
                    tracking_seq: g.tracking_seq,
                    gc_wait_since: g.wait_since_ns.unwrap_or(0),
                }),
            })
        })
        .collect();
    merge(state, &goroutines, snap.read_start_ns);
    for ch in snap.channels.values() {
        state.set_channel_info(ch.addr, ch.capacity, ch.closed, ch.element_type.clone());
    }
    let activity = Activity {
        seqs: snap.goroutines.iter().filter_map(|g| Some(((g.goid, g.g_addr), g.tracking_seq?))).collect(),
        max_goid: snap.goroutines.iter().map(|g| g.goid).max().unwrap_or(0),
        read_ns: snap.read_start_ns,
    };
    Ok(Seed {
        activity,
        goroutines: goroutines.len(),
        read_ns: snap.read_end_ns.saturating_sub(snap.read_start_ns),
        bytes_read: snap.stats.bytes_read,
    })
}

/// The class of a wait from its reason and, before Go 1.21 (where every sync wait is
/// "semacquire"; WaitGroup until 1.24), from the sync function on its stack.
fn wait_class(reason: Option<&str>, stack: &[Location]) -> WaitClass {
    match WaitClass::of(reason.unwrap_or("")) {
        WaitClass::Semaphore => stack
            .iter()
            .take_while(|f| is_synchronisation_internal(&f.function))
            .find_map(|f| sync_function_class(&f.function))
            .unwrap_or(WaitClass::Semaphore),
        class => class,
    }
}

fn sites(stack: &[goscope_memory::StackFrame]) -> Vec<Location> {
    stack.iter().filter_map(|f| f.location.as_ref()).map(|l| Location::clone(l)).collect()
}

/// Waits shorter than this are not worth a memory read for their stack.
const STACK_AFTER_NS: u64 = 1_000_000_000;
/// Most park stacks read per tick, to bound the work a burst of blocking causes.
const STACKS_PER_TICK: usize = 512;

/// Reads the park stacks (and a select's channels, a lock's address) of goroutines blocked for
/// longer than STACK_AFTER_NS. Reading later instead of capturing at every park costs nothing on
/// the hot path: most parks end within microseconds.
pub fn read_park_stacks(state: &mut ProcessState, ctx: &TargetContext, now_ns: u64) {
    let wanted = state.needing_stacks(now_ns.saturating_sub(STACK_AFTER_NS), STACKS_PER_TICK);
    if wanted.is_empty() {
        return;
    }
    // A fresh reader per round: its byte budget bounds one round, not the whole session.
    let Ok(mem) = ProcessMemory::new(ctx.pid) else {
        return;
    };
    let mem = &mem;
    let gptrs: Vec<u64> = wanted.iter().map(|&(_, g)| g).collect();
    let opts = goscope_memory::SnapshotOptions::default();
    let Ok((read, channels)) = goscope_memory::read_goroutines(mem, &ctx.binary, ctx.load_bias, &gptrs, &opts) else {
        return;
    };
    for ch in channels.values() {
        state.set_channel_info(ch.addr, ch.capacity, ch.closed, ch.element_type.clone());
    }
    for g in read {
        // The g struct may have been reused by another goroutine since it parked.
        if !wanted.iter().any(|&(goid, addr)| goid == g.goid && addr == g.g_addr) || g.status != GStatus::Waiting {
            continue;
        }
        let stack = sites(&g.stack);
        let class = wait_class(g.wait_reason.as_deref(), &stack);
        state.enrich_wait(g.goid, class, &g.channels, sync_primitive(class, g.sema_addr), stack);
    }
}

/// Stacks of goroutines blocked on channels are re-read this often (in ticks of 500 ms).
pub const HOLDINGS_EVERY_TICKS: u64 = 10;
/// Most stacks read per round.
const HOLDINGS_MAX: usize = 1024;
/// Lock-holding objects starting at or below a word that are checked for containing it.
const LOCK_SPANS_CHECKED: usize = 16;
/// Most goroutines outside the stuck candidates whose stacks are read before a suspect deadlock
/// is raised; past it none is raised.
const OUTSIDE_MAX: usize = 20_000;
/// Most bytes read for them (stacks, the goroutine list, what package-level variables hold).
const OUTSIDE_BUDGET: u64 = 128 << 20;
/// `sync.Cond.L`'s data word: the Locker's pointer (the interface's second word).
const COND_LOCKER_DATA: u64 = 8;

/// An object the deadlock detector's evidence credits: `[lo, hi)` is referred to by any word
/// inside it, and counts as a reference to `object`.
type Span = (u64, u64, u64);

/// Which wait objects words refer to: channels by their address, locks, WaitGroups and Conds by
/// any pointer into the heap object holding them (or, outside the heap, their own address), a
/// Cond also through its Locker.
struct Referents {
    channels: HashSet<u64>,
    spans: Vec<Span>,
}

impl Referents {
    fn refer(&self, w: u64, held: &mut BTreeSet<u64>) {
        if self.channels.contains(&w) {
            held.insert(w);
        }
        let after = self.spans.partition_point(|&(lo, _, _)| lo <= w);
        held.extend(self.spans[..after].iter().rev().take(LOCK_SPANS_CHECKED).filter(|&&(_, hi, _)| w < hi).map(|&(_, _, l)| l));
    }

    /// What the package-level variables that `function`'s code uses refer to (their addresses,
    /// and the words they hold).
    fn refer_globals(
        &self,
        mem: &ProcessMemory,
        ctx: &TargetContext,
        function: &str,
        globals_of: &mut HashMap<String, Vec<u64>>,
        held: &mut BTreeSet<u64>,
    ) {
        if function.starts_with("runtime.") {
            return;
        }
        let globals = globals_of.entry(function.to_owned()).or_insert_with(|| {
            ctx.binary
                .function(function)
                .and_then(|f| goscope_memory::referenced_globals(mem, f.entry + ctx.load_bias, f.end + ctx.load_bias).ok())
                .unwrap_or_default()
        });
        for &addr in globals.iter() {
            self.refer(addr, held);
            if let Ok(value) = mem.read_u64(addr) {
                self.refer(value, held);
            }
        }
    }
}

/// For each goroutine blocked on channels, locks, WaitGroups or Conds past the threshold, which
/// of those objects it refers to: in a variable on its stack, or in a package-level variable that
/// a function on its stack uses. When those alone leave some candidates that only each other
/// could serve, also which of the objects any other goroutine refers to ([`read_outside`]). The
/// deadlock detector's evidence of who could serve whom.
pub fn read_holdings(
    state: &ProcessState,
    ctx: &TargetContext,
    now_ns: u64,
    threshold_ns: u64,
    globals_of: &mut HashMap<String, Vec<u64>>,
) -> detect::Holdings {
    let candidates = detect::deadlock_candidates(state, now_ns, threshold_ns);
    if candidates.len() < 2 {
        return detect::Holdings::default();
    }
    let Ok(mem) = ProcessMemory::new(ctx.pid) else {
        return detect::Holdings::default();
    };
    let waits = candidates.iter().filter_map(|g| g.wait.as_ref());
    let channels: HashSet<u64> = waits.clone().flat_map(|w| w.channels.iter().copied()).collect();
    let conds: Vec<u64> = waits.clone().filter(|w| w.class == WaitClass::Cond).filter_map(|w| w.lock).collect();
    let mut locks: Vec<u64> = waits.filter(|w| w.channels.is_empty()).flat_map(detect::wait_objects).collect();
    locks.sort_unstable();
    locks.dedup();
    // A Cond is also referred to through its Locker (or the object holding that): whoever can
    // take the lock may be the one to Signal.
    let mut lockers: Vec<(u64, u64)> =
        conds.iter().filter_map(|&c| mem.read_u64(c + COND_LOCKER_DATA).ok().filter(|&l| l != 0).map(|l| (l, c))).collect();
    lockers.sort_unstable();
    lockers.dedup();
    // A channel is referred to by its address. A lock is a field: referred to by any pointer into
    // the heap object that holds it, or (a package-level or stack variable) by its own address.
    let credited: Vec<(u64, u64)> = locks.iter().map(|&l| (l, l)).chain(lockers.iter().copied()).collect();
    let addrs: Vec<u64> = credited.iter().map(|&(a, _)| a).collect();
    let objects = goscope_memory::ProcessHeap::new(&mem, &ctx.binary, ctx.load_bias)
        .and_then(|mut heap| heap.objects(&addrs))
        .unwrap_or_else(|_| vec![None; addrs.len()]);
    // A goroutine waiting for a lock refers to the object holding it for that wait: no sign that
    // it holds another lock, WaitGroup or Cond of that object (two mutexes in one allocation, e.g.
    // two small structs the allocator packed into one block).
    let object_of: HashMap<u64, (u64, u64)> = locks
        .iter()
        .zip(&objects)
        .map(|(&l, o)| (l, o.map_or((l, l + 1), |o| (o.base, o.base.saturating_add(o.size)))))
        .collect();
    let mut spans: Vec<Span> = credited
        .iter()
        .zip(objects)
        .map(|(&(a, l), o)| o.map_or((a, a + 1, l), |o| (o.base, o.base.saturating_add(o.size), l)))
        .collect();
    spans.sort_unstable();
    let referents = Referents { channels, spans };
    let of = candidates
        .iter()
        .take(HOLDINGS_MAX)
        .filter_map(|g| {
            let mut held = BTreeSet::new();
            for w in goscope_memory::stack_words(&mem, &ctx.binary, g.g_addr?).ok()? {
                referents.refer(w, &mut held);
            }
            for frame in g.wait.iter().flat_map(|w| &w.stack) {
                referents.refer_globals(&mem, ctx, &frame.function, globals_of, &mut held);
            }
            let own = g
                .wait
                .as_ref()
                .filter(|w| matches!(w.class, WaitClass::Mutex | WaitClass::RWMutexRead | WaitClass::RWMutexWrite))
                .and_then(|w| w.lock);
            if let Some((own, own_object)) = own.and_then(|l| Some((l, object_of.get(&l)?))) {
                held.retain(|&l| l == own || object_of.get(&l) != Some(own_object));
            }
            Some((g.goid, held))
        })
        .collect();
    let mut holdings = detect::Holdings::of(of);
    if !detect::deadlock_stuck_without_outside(state, now_ns, threshold_ns, &holdings).is_empty() {
        holdings.outside = read_outside(ctx, &holdings, &referents, globals_of);
    }
    holdings
}

/// Which of the candidates' objects the goroutines outside them refer to: every goroutine of the
/// process except the candidates still parked (from a fresh read of the goroutine list), each by
/// the words of its stack (a parked one's live pointer slots by the stack maps where the heap
/// metadata is readable, else every word from its saved stack pointer; a running one's whole
/// stack, which only finds more) and the package-level variables the functions on it use (a
/// running one's: every word of its stack that is a code address, and its start function).
/// None when that cannot be read completely within [`OUTSIDE_MAX`] goroutines and
/// [`OUTSIDE_BUDGET`] bytes: a server could then hide among the unread.
fn read_outside(
    ctx: &TargetContext,
    holdings: &detect::Holdings,
    referents: &Referents,
    globals_of: &mut HashMap<String, Vec<u64>>,
) -> Option<BTreeSet<u64>> {
    let mem = ProcessMemory::new(ctx.pid).ok()?.with_budget(OUTSIDE_BUDGET);
    let opts = goscope_memory::SnapshotOptions {
        max_goroutines: OUTSIDE_MAX,
        channels: false,
        ..goscope_memory::SnapshotOptions::default()
    };
    let snap = goscope_memory::snapshot_with(&mem, &ctx.binary, ctx.load_bias, &opts).ok()?;
    if snap.stats.not_examined > 0 || snap.stats.invalid > 0 {
        return None;
    }
    let others: Vec<&goscope_memory::Goroutine> = snap
        .goroutines
        .iter()
        .filter(|g| !g.status.is_dead())
        .filter(|g| !(holdings.of.contains_key(&g.goid) && matches!(g.status, GStatus::Waiting | GStatus::Leaked)))
        .collect();
    let mut heap = goscope_memory::ProcessHeap::new(&mem, &ctx.binary, ctx.load_bias).ok();
    let words = outside_stacks(&mem, ctx, heap.as_mut(), &others)?;
    let mut held = BTreeSet::new();
    let mut code: HashMap<u64, Option<String>> = HashMap::new();
    let mut functions: BTreeSet<String> = BTreeSet::new();
    let mut frontier: Vec<u64> = Vec::new();
    for (g, (words, whole)) in others.iter().zip(words) {
        functions.extend(g.stack.iter().filter_map(|f| f.location.as_ref()).map(|l| l.function.clone()));
        functions.extend(g.start_function.clone());
        // Its frames are not known (running, or a walk that stopped early): any code address on
        // its stack may be a return address.
        if whole || g.stack_end != goscope_memory::StackEnd::Goexit {
            for &w in &words {
                let name = code.entry(w).or_insert_with(|| {
                    w.checked_sub(ctx.load_bias + 1).and_then(|pc| ctx.binary.symbolize(pc)).map(|l| l.function)
                });
                functions.extend(name.clone());
            }
        }
        frontier.extend(words);
    }
    // What their g structs point to: the closure of one not started yet (`sched.ctxt`), panic and
    // defer records (a deferred call's receiver).
    {
        use goscope_inspect::runtime::stack_maps::{G_DEFER, G_PANIC, GOBUF_CTXT};
        let ctxt = u64::from(ctx.binary.layout().g_sched_sp) + GOBUF_CTXT;
        let reqs: Vec<(u64, usize)> =
            others.iter().flat_map(|g| [ctxt, G_PANIC, G_DEFER].map(|off| (g.g_addr + off, 8))).collect();
        let batch = mem.read_batch(&reqs).ok()?;
        frontier.extend(
            (0..reqs.len()).filter_map(|k| batch.get(k)).map(|b| u64::from_le_bytes(b[..8].try_into().unwrap_or_default())),
        );
    }
    // The package-level variables their code uses (a field of one at its own address): their
    // addresses, and the word each holds.
    let mut globals: Vec<u64> = functions
        .iter()
        .filter(|f| !f.starts_with("runtime."))
        .flat_map(|f| {
            globals_of
                .entry(f.clone())
                .or_insert_with(|| {
                    ctx.binary
                        .function(f)
                        .and_then(|f| {
                            goscope_memory::referenced_globals(&mem, f.entry + ctx.load_bias, f.end + ctx.load_bias).ok()
                        })
                        .unwrap_or_default()
                })
                .clone()
        })
        .collect();
    globals.sort_unstable();
    globals.dedup();
    for &g in &globals {
        referents.refer(g, &mut held);
    }
    let windows: Vec<(u64, usize)> = globals.iter().map(|&g| (g, 8)).collect();
    let batch = mem.read_batch(&windows).ok()?;
    frontier.extend(
        (0..windows.len()).filter_map(|k| batch.get(k)).flat_map(|b| b.as_chunks::<8>().0.iter().map(|c| u64::from_le_bytes(*c))),
    );
    follow(&mem, heap.as_mut(), frontier, referents, &mut held)?;
    Some(held)
}

/// Without heap metadata, bytes read where a word points (the first fields of a struct; the
/// objects next to it in memory are unrelated, and refer to more).
const WINDOW: usize = 32;
/// Heap objects followed from a stack or a package-level variable: one that holds a pointer to a
/// struct that holds the channel refers to it too.
const OUTSIDE_HOPS: usize = 3;
/// Most heap objects (or, without heap metadata, windows) read in those hops.
const OUTSIDE_OBJECTS: usize = 200_000;

/// Looks for references to the candidates' objects in what the words of `frontier` point to, and
/// so on for [`OUTSIDE_HOPS`]: the heap object each points into, read whole (pointer-free ones
/// have nothing to follow), or without heap metadata (a stripped binary) a window of [`WINDOW`]
/// bytes from it. None past [`OUTSIDE_OBJECTS`] or the read budget.
fn follow(
    mem: &ProcessMemory,
    mut heap: Option<&mut goscope_memory::ProcessHeap<'_>>,
    mut frontier: Vec<u64>,
    referents: &Referents,
    held: &mut BTreeSet<u64>,
) -> Option<()> {
    let mut seen: HashSet<u64> = HashSet::new();
    let mut read = 0;
    for hop in 0..=OUTSIDE_HOPS {
        frontier.sort_unstable();
        frontier.dedup();
        for &w in &frontier {
            referents.refer(w, held);
        }
        if hop == OUTSIDE_HOPS {
            break;
        }
        frontier.retain(|&w| w >= 4096 && w.is_multiple_of(8) && !seen.contains(&w));
        let ranges: Vec<(u64, u64)> = match heap.as_deref_mut() {
            Some(h) => {
                let objects = h.objects(&frontier).ok()?;
                let mut r: Vec<(u64, u64)> = objects
                    .into_iter()
                    .flatten()
                    .filter(|o| !o.noscan)
                    .map(|o| (o.base, o.base.saturating_add(o.size)))
                    .collect();
                r.sort_unstable();
                r.dedup();
                r.retain(|&(base, _)| seen.insert(base));
                r
            }
            None => frontier.iter().filter(|&&w| seen.insert(w)).map(|&w| (w, w + WINDOW as u64)).collect(),
        };
        seen.extend(frontier.iter().copied());
        read += ranges.len();
        if read > OUTSIDE_OBJECTS {
            return None;
        }
        let reqs: Vec<(u64, usize)> = ranges.iter().map(|&(lo, hi)| (lo, (hi - lo) as usize)).collect();
        let batch = mem.read_batch(&reqs).ok()?;
        frontier = (0..reqs.len())
            .filter_map(|k| batch.get(k))
            .flat_map(|b| b.as_chunks::<8>().0.iter().map(|c| u64::from_le_bytes(*c)))
            .collect();
    }
    Some(())
}

/// The stack words of each goroutine to look through, and whether they are its whole stack
/// (its frames unknown); nothing for one that exited since the list was read. None when the
/// stack of one still there cannot be read.
fn outside_stacks(
    mem: &ProcessMemory,
    ctx: &TargetContext,
    heap: Option<&mut goscope_memory::ProcessHeap<'_>>,
    others: &[&goscope_memory::Goroutine],
) -> Option<Vec<(Vec<u64>, bool)>> {
    let g_addrs: Vec<u64> = others.iter().map(|g| g.g_addr).collect();
    let read: Vec<Option<(Vec<u64>, bool)>> = if let Some(heap) = heap {
        let stacks = heap.stacks(&g_addrs).ok()?;
        let ranges: Vec<(u64, u64)> = stacks.iter().map(|s| s.map_or((0, 0), |s| (s.scan_from, s.hi))).collect();
        let words = heap.read_words(&ranges).ok()?;
        let pairs: Vec<(goscope_memory::GoroutineStack, &[u64])> =
            stacks.iter().zip(&words).filter_map(|(s, w)| Some(((*s)?, w.as_deref()?))).collect();
        let mut masks = heap.stack_pointers(&pairs).ok()?.into_iter();
        stacks
            .iter()
            .zip(&words)
            .map(|(s, w)| {
                let (s, w) = ((*s)?, w.as_ref()?);
                let live = match masks.next().flatten() {
                    Some(m) => w.iter().zip(&m.mask).filter(|&(_, &p)| p).map(|(&w, _)| w).collect(),
                    None => w.clone(),
                };
                Some((live, s.context.is_none()))
            })
            .collect()
    } else {
        // No heap metadata (a stripped binary): every word, from the saved stack pointer, or the
        // whole stack of one that runs.
        others
            .iter()
            .map(|g| {
                if g.status == GStatus::Running {
                    goscope_memory::whole_stack_words(mem, g.g_addr).ok().map(|w| (w, true))
                } else {
                    goscope_memory::stack_words(mem, &ctx.binary, g.g_addr).ok().map(|w| (w, false))
                }
            })
            .collect()
    };
    // A stack that could not be read is only no loss when its goroutine has exited.
    let unread: Vec<u64> = read.iter().zip(&g_addrs).filter(|(r, _)| r.is_none()).map(|(_, &g)| g).collect();
    if !unread.is_empty() {
        let opts =
            goscope_memory::SnapshotOptions { stacks: false, channels: false, ..goscope_memory::SnapshotOptions::default() };
        let (again, _) = goscope_memory::read_goroutines(mem, &ctx.binary, ctx.load_bias, &unread, &opts).ok()?;
        let alive = |g: &&goscope_memory::Goroutine| {
            again.iter().any(|a| a.g_addr == g.g_addr && a.goid == g.goid && !a.status.is_dead())
        };
        if others.iter().filter(|g| unread.contains(&g.g_addr)).any(alive) {
            return None;
        }
    }
    Some(read.into_iter().map(Option::unwrap_or_default).collect())
}

/// Back-to-back reads of the busy goroutines' trackingSeq in [`sample_busy_parks`].
const BUSY_SAMPLES: usize = 64;
/// A pair of reads further apart than this (goscope itself was descheduled) is left out: a busy
/// goroutine may have wrapped its 8-bit counter in between.
const MAX_SAMPLE_GAP_NS: u64 = 200_000;

/// Transitions out of running per second of the goroutines whose `g` structs are at `g_addrs`,
/// from their `g.trackingSeq` read [`BUSY_SAMPLES`] times back to back (a few microseconds
/// apart). Two scans half a second apart see that 8-bit counter modulo 256, so a goroutine
/// parking thousands of times a second looks idle to them; reads microseconds apart see each
/// step. None when the layout has no trackingSeq or the reads fail.
pub fn sample_busy_parks(ctx: &TargetContext, g_addrs: &[u64]) -> Option<f64> {
    let offset = u64::from(ctx.binary.layout().g_tracking_seq?);
    if g_addrs.is_empty() {
        return Some(0.0);
    }
    let mem = ProcessMemory::new(ctx.pid).ok()?;
    let reqs: Vec<(u64, usize)> = g_addrs.iter().map(|&g| (g.wrapping_add(offset), 1)).collect();
    let mut last: Option<(Vec<Option<u8>>, u64)> = None;
    let (mut steps, mut ns) = (0u64, 0u64);
    for _ in 0..BUSY_SAMPLES {
        let batch = mem.read_batch(&reqs).ok()?;
        let now = goscope_memory::monotonic_ns();
        let seqs: Vec<Option<u8>> = (0..reqs.len()).map(|i| batch.get(i).and_then(|b| b.first().copied())).collect();
        if let Some((was, then)) = last.replace((seqs.clone(), now)) {
            let gap = now.saturating_sub(then);
            if gap > 0 && gap <= MAX_SAMPLE_GAP_NS {
                steps += was
                    .iter()
                    .zip(&seqs)
                    .filter_map(|(a, b)| Some(u64::from(b.as_ref()?.wrapping_sub(*a.as_ref()?))))
                    .sum::<u64>();
                ns += gap;
            }
        }
    }
    (ns > 0).then(|| steps as f64 * 1e9 / ns as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_refers_to_channels_by_address_and_to_sync_objects_through_the_objects_holding_them() {
        const CHAN: u64 = 0xc000_0100;
        const QUEUE: u64 = 0xc000_2000; // a heap object of 64 bytes holding the Cond's Locker
        const COND: u64 = 0xc000_3000; // a heap object of 64 bytes: the Cond
        const MU: u64 = 0x5a_0000; // a package-level Mutex
        let mut spans = vec![(QUEUE, QUEUE + 64, COND), (COND, COND + 64, COND), (MU, MU + 1, MU)];
        spans.sort_unstable();
        let r = Referents { channels: HashSet::from([CHAN]), spans };
        let refers = |w: u64| {
            let mut held = BTreeSet::new();
            r.refer(w, &mut held);
            held
        };
        assert_eq!(refers(CHAN), BTreeSet::from([CHAN]));
        assert!(refers(CHAN + 8).is_empty(), "a channel only by its address");
        assert_eq!(refers(QUEUE + 16), BTreeSet::from([COND]), "a pointer into the Locker's object");
        assert_eq!(refers(COND + 40), BTreeSet::from([COND]));
        assert!(refers(COND + 64).is_empty());
        assert_eq!(refers(MU), BTreeSet::from([MU]));
        assert!(refers(MU + 8).is_empty(), "a package-level lock only by its own address");
    }
}
