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

/// For each goroutine blocked on channels past the threshold, which of those channels it holds:
/// in a variable on its stack, or in a package-level variable that a function on its stack uses.
/// The deadlock detector's evidence of who could serve whom.
pub fn read_holdings(
    state: &ProcessState,
    ctx: &TargetContext,
    now_ns: u64,
    threshold_ns: u64,
    globals_of: &mut HashMap<String, Vec<u64>>,
) -> detect::Holdings {
    let candidates = detect::deadlock_candidates(state, now_ns, threshold_ns);
    if candidates.len() < 2 {
        return detect::Holdings::new();
    }
    let Ok(mem) = ProcessMemory::new(ctx.pid) else {
        return detect::Holdings::new();
    };
    let waits = candidates.iter().filter_map(|g| g.wait.as_ref());
    let channels: HashSet<u64> = waits.clone().flat_map(|w| w.channels.iter().copied()).collect();
    let mut locks: Vec<u64> = waits.filter(|w| w.channels.is_empty()).flat_map(detect::wait_objects).collect();
    locks.sort_unstable();
    locks.dedup();
    // A channel is referred to by its address. A lock is a field: referred to by any pointer into
    // the heap object that holds it, or (a package-level or stack variable) by its own address.
    let objects = goscope_memory::ProcessHeap::new(&mem, &ctx.binary, ctx.load_bias)
        .and_then(|mut heap| heap.objects(&locks))
        .unwrap_or_else(|_| vec![None; locks.len()]);
    let mut lock_spans: Vec<(u64, u64, u64)> = locks
        .iter()
        .zip(objects)
        .map(|(&l, o)| o.map_or((l, l + 1, l), |o| (o.base, o.base.saturating_add(o.size), l)))
        .collect();
    lock_spans.sort_unstable();
    let refer = |w: u64, held: &mut BTreeSet<u64>| {
        if channels.contains(&w) {
            held.insert(w);
        }
        let after = lock_spans.partition_point(|&(lo, _, _)| lo <= w);
        held.extend(lock_spans[..after].iter().rev().take(LOCK_SPANS_CHECKED).filter(|&&(_, hi, _)| w < hi).map(|&(_, _, l)| l));
    };
    candidates
        .iter()
        .take(HOLDINGS_MAX)
        .filter_map(|g| {
            let mut held = BTreeSet::new();
            for w in goscope_memory::stack_words(&mem, &ctx.binary, g.g_addr?).ok()? {
                refer(w, &mut held);
            }
            for frame in g.wait.iter().flat_map(|w| &w.stack).filter(|f| !f.function.starts_with("runtime.")) {
                let globals = globals_of.entry(frame.function.clone()).or_insert_with(|| {
                    ctx.binary
                        .function(&frame.function)
                        .and_then(|f| {
                            goscope_memory::referenced_globals(&mem, f.entry + ctx.load_bias, f.end + ctx.load_bias).ok()
                        })
                        .unwrap_or_default()
                });
                for &addr in globals.iter() {
                    refer(addr, &mut held);
                    if let Ok(value) = mem.read_u64(addr) {
                        refer(value, &mut held);
                    }
                }
            }
            Some((g.goid, held))
        })
        .collect()
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
