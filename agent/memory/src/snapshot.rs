//! [`snapshot`]: every goroutine of a running Go process, read from its memory while it runs.
//!
//! Steps (all reads batched through [`ProcessMemory::read_batch`]):
//! 1. `runtime.allglen`, then the `runtime.allgs` slice header, then the `[]*g` array.
//! 2. Per chunk of g pointers: the g structs; status, goid, wait reason, creation site, ...
//! 3. Stacks: frame-pointer walks from the saved context (`g.sched`, or `g.syscall*` for a
//!    goroutine in a syscall), reading stack memory in windows.
//! 4. `g.waiting`: the sudog chain of a goroutine blocked on channels (one sudog for a send or
//!    receive, one per case for a select), and each channel's `hchan` header.
//! 5. The g structs again: a goroutine whose saved state changed meanwhile (it ran) is read
//!    again once; if it changes again its stack is left out and it is counted as inconsistent.
//!
//! The process keeps running, so every value is validated before use (goid, status, stack
//! bounds, frame pointers inside the stack, `sudog.g` pointing back at the g); nothing that fails
//! is reported as if it were true: it is retried once, then skipped and counted in
//! [`SnapshotStats`].
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use goscope_inspect::{
    GoBinary, Location,
    runtime::{self, GSCAN},
};
use serde::Serialize;

use crate::allgs::{AllgsLocation, LocateError, locate_allgs};
use crate::process::{MemoryError, ProcessMemory};
use crate::stack::{Frames, StackEnd, StackFrame, Symbols, Walk, WalkStart};
use crate::sys::monotonic_ns;

/// Largest goid accepted as plausible (the runtime hands them out sequentially).
const MAX_GOID: u64 = 1 << 48;
/// Largest goroutine stack accepted (the runtime's default limit is 1 GB on 64-bit).
const MAX_STACK: u64 = 1 << 32;
/// g structs read per batch.
const CHUNK: usize = 4096;
/// Goroutines per process_vm_readv call are bounded by IOV_MAX inside ProcessMemory.
const HCHAN_READ: usize = 48;

/// Limits and switches of a [`snapshot_with`].
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Also report dead (and idle) g structs; they are reused for new goroutines.
    pub include_dead: bool,
    /// Most g structs examined; the rest is counted in [`SnapshotStats::not_examined`].
    pub max_goroutines: usize,
    /// Most frames per stack.
    pub max_frames: usize,
    /// Bytes of stack read at a time per goroutine.
    pub stack_window: usize,
    /// Walk stacks.
    pub stacks: bool,
    /// Follow `g.waiting` to channels.
    pub channels: bool,
    /// Most sudogs followed per goroutine (a select has one per case).
    pub max_sudogs: usize,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            include_dead: false,
            max_goroutines: 1_000_000,
            max_frames: 64,
            stack_window: 1024,
            stacks: true,
            channels: true,
            max_sudogs: 4096,
        }
    }
}

/// Goroutine status (`g.atomicstatus` without the `_Gscan` bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GStatus {
    /// `_Gidle`: just allocated, not yet initialised.
    Idle,
    /// `_Grunnable`: on a run queue, not running.
    Runnable,
    /// `_Grunning`: running on a thread.
    Running,
    /// `_Gsyscall`: in a system call.
    Syscall,
    /// `_Gwaiting`: parked (the wait reason says on what).
    Waiting,
    /// `_Gdead`: exited, or not yet used; the g struct is kept for reuse.
    Dead,
    /// `_Gcopystack`: its stack is being moved.
    Copystack,
    /// `_Gpreempted`: stopped for a suspension.
    Preempted,
    /// Go 1.26+: a goroutine the GC's leak detection found blocked forever.
    Leaked,
    /// Go 1.26+: a dead g attached to an extra M (cgo callbacks).
    DeadExtra,
}

impl GStatus {
    /// Decodes `g.atomicstatus`; None for values the runtime never stores (torn or garbage).
    pub fn from_raw(raw: u32, go_minor: u32) -> Option<(GStatus, bool)> {
        let code = raw & !GSCAN;
        if code > 0xf || !runtime::gstatus_exists(code, go_minor) {
            return None;
        }
        let st = match code {
            0 => GStatus::Idle,
            1 => GStatus::Runnable,
            2 => GStatus::Running,
            3 => GStatus::Syscall,
            4 => GStatus::Waiting,
            6 => GStatus::Dead,
            8 => GStatus::Copystack,
            9 => GStatus::Preempted,
            10 => GStatus::Leaked,
            11 => GStatus::DeadExtra,
            _ => return None,
        };
        Some((st, raw & GSCAN != 0))
    }

    /// The runtime's name (`gStatusStrings`).
    pub fn runtime_name(self) -> &'static str {
        match self {
            GStatus::Idle => "idle",
            GStatus::Runnable => "runnable",
            GStatus::Running => "running",
            GStatus::Syscall => "syscall",
            GStatus::Waiting => "waiting",
            GStatus::Dead => "dead",
            GStatus::Copystack => "copystack",
            GStatus::Preempted => "preempted",
            GStatus::Leaked => "leaked",
            GStatus::DeadExtra => "waiting for cgo callback",
        }
    }

    /// Snake-case name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            GStatus::DeadExtra => "dead_extra",
            s => s.runtime_name(),
        }
    }

    /// A g struct that holds no goroutine.
    pub fn is_dead(self) -> bool {
        matches!(self, GStatus::Dead | GStatus::DeadExtra | GStatus::Idle)
    }

    /// Has a saved context to walk (not running, not dead).
    fn walkable(self) -> bool {
        matches!(
            self,
            GStatus::Runnable | GStatus::Syscall | GStatus::Waiting | GStatus::Copystack | GStatus::Preempted | GStatus::Leaked
        )
    }
}

/// A channel a goroutine waits on: its `hchan` header at the time of reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Channel {
    /// Address of the `hchan`.
    pub addr: u64,
    /// Elements buffered (`qcount`).
    pub len: u64,
    /// Buffer size (`dataqsiz`); 0 for an unbuffered channel.
    pub capacity: u64,
    /// Size of one element in bytes (`elemsize`).
    pub elem_size: u16,
    /// Whether the channel was closed.
    pub closed: bool,
    /// Runtime address of the element type's descriptor (`hchan.elemtype`).
    pub elem_type: u64,
    /// The element type's name ("int", "*main.Job", "struct {}"), when it could be read.
    pub element_type: Option<String>,
}

/// One goroutine.
#[derive(Debug, Clone, Serialize)]
pub struct Goroutine {
    /// The goroutine id.
    pub goid: u64,
    /// Address of the `runtime.g`.
    pub g_addr: u64,
    /// Its status.
    pub status: GStatus,
    /// The GC was scanning its stack (`_Gscan` bit).
    pub scan: bool,
    /// `g.waitreason` of a waiting (or leaked) goroutine, when not 0.
    pub wait_reason_code: Option<u8>,
    /// Its name from the binary's table ("chan receive"; "unknown wait reason" past its end).
    pub wait_reason: Option<String>,
    /// `g.waitsince` (runtime nanotime = CLOCK_MONOTONIC ns) of a waiting or syscall goroutine,
    /// when the GC recorded it (it stores the start of the first GC cycle that saw the goroutine
    /// blocked; 0 = unknown → None).
    pub wait_since_ns: Option<u64>,
    /// `g.parentGoid` (Go 1.21+; None when 0 or absent).
    pub parent_goid: Option<u64>,
    /// `g.lockedm` is set: the goroutine called runtime.LockOSThread (false when the binary's
    /// layout does not name the field).
    pub locked_to_thread: bool,
    /// `g.gopc`: return address of the `go` statement's call to newproc.
    pub gopc: u64,
    /// Where `gopc - 1` is: the `go` statement, as the runtime's "created by" line shows it: the
    /// physical function (the one that called newproc) with the file:line of the `go` statement,
    /// which may be inside a function inlined into it (see `created_at`).
    pub created_by: Option<Arc<Location>>,
    /// The logical frames at `gopc - 1`, innermost first: the function whose `go` statement it
    /// is (which may have been inlined), then the functions it was inlined into, up to the
    /// physical one. Empty when unknown.
    pub created_at: Vec<Arc<Location>>,
    /// `g.startpc`: entry of the goroutine's function.
    pub startpc: u64,
    /// Name of the function at `startpc`, when known.
    pub start_function: Option<String>,
    /// Channels from the `g.waiting` sudog chain (addresses of `runtime.hchan`), in chain order.
    pub channels: Vec<u64>,
    /// The sudogs are a select's.
    pub is_select: bool,
    /// Go 1.26+: the address a semaphore wait (sync.Mutex, RWMutex, WaitGroup: the `sema` field)
    /// or a sync.Cond wait (its notifyList) blocks on, from the sudog in `g.waiting`.
    pub sema_addr: Option<u64>,
    /// Addresses of the words of its sudogs that point at what it waits on (`sudog.elem` and
    /// `sudog.c`). The runtime hides them from its leak detection (`setSyncObjectsUntraceable`,
    /// Go 1.26): a sudog is reachable from the semtable treap or wait queue it sits in, through
    /// its neighbours, whatever goroutine they belong to, so following these words would make
    /// one goroutine's wait keep another's object alive.
    #[serde(skip)]
    pub sync_pointer_words: Vec<u64>,
    /// Its stack, innermost frame first (empty when not read).
    pub stack: Vec<StackFrame>,
    /// Why the stack walk ended.
    pub stack_end: StackEnd,
    /// Started by the runtime for itself (start function in package runtime, not runtime.main):
    /// the runtime's own tracebacks hide these unless GOTRACEBACK=system.
    pub system: bool,
    /// Where it last stopped running: `g.sched.pc`, and `g.sched.sp` as a distance below the
    /// stack's top (a stack copy moves `sp` but keeps this distance). With `tracking_seq`, what
    /// tells two reads of one park from a run and a new park at the same place.
    #[serde(skip)]
    pub resume: ResumePoint,
    /// `g.trackingSeq`: changes (modulo 256) on every transition out of `_Grunning`; None when
    /// the binary's layout does not name the field.
    #[serde(skip)]
    pub tracking_seq: Option<u8>,
}

/// Where a stopped goroutine resumes: its saved PC, and its saved SP as bytes below the top of
/// its stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumePoint {
    /// `g.sched.pc`.
    pub pc: u64,
    /// `g.stack.hi - g.sched.sp`.
    pub depth: u64,
}

impl Goroutine {
    /// How long it has been waiting at `now_ns` (CLOCK_MONOTONIC), when the runtime knows.
    pub fn waiting_for_ns(&self, now_ns: u64) -> Option<u64> {
        self.wait_since_ns.filter(|s| *s <= now_ns).map(|s| now_ns - s)
    }
}

/// Counters of one snapshot: what was read, and what was left out and why.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotStats {
    /// Length of the goroutine list (`allglen`), dead g structs included.
    pub allglen: u64,
    /// g structs examined (at most `max_goroutines`).
    pub examined: u64,
    /// Left out because of `max_goroutines`.
    pub not_examined: u64,
    /// Goroutines reported.
    pub reported: u64,
    /// Dead or idle g structs skipped.
    pub dead: u64,
    /// Skipped: the g failed validation (implausible goid, status or stack bounds, unreadable)
    /// on both reads.
    pub invalid: u64,
    /// Reported without stack and channels: its saved state changed while being read, twice.
    pub inconsistent: u64,
    /// Goroutines read a second time.
    pub retried: u64,
    /// Skipped because another g struct had the same goid.
    pub duplicate_goids: u64,
    /// Channels whose header failed validation twice (reported without details).
    pub invalid_channels: u64,
    /// Bytes copied from the process.
    pub bytes_read: u64,
    /// Read syscalls made.
    pub syscalls: u64,
    /// Reads went through /proc/PID/mem.
    pub proc_mem_fallback: bool,
    /// Wall time of the snapshot.
    pub elapsed_ns: u64,
}

/// Every goroutine of a process at (about) one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The process.
    pub pid: u32,
    /// CLOCK_MONOTONIC ns when reading started (same clock as `wait_since_ns`).
    pub read_start_ns: u64,
    /// CLOCK_MONOTONIC ns when reading ended.
    pub read_end_ns: u64,
    /// Where the goroutine list was found.
    pub location: AllgsLocation,
    /// Sorted by goid.
    pub goroutines: Vec<Goroutine>,
    /// Channels some goroutine waits on, by address.
    pub channels: BTreeMap<u64, Channel>,
    /// What reading cost and what it left out.
    pub stats: SnapshotStats,
}

impl Snapshot {
    /// A goroutine by goid.
    pub fn goroutine(&self, goid: u64) -> Option<&Goroutine> {
        self.goroutines.binary_search_by_key(&goid, |g| g.goid).ok().map(|i| &self.goroutines[i])
    }
}

/// Why a snapshot failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading the process failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The goroutine list could not be found.
    #[error(transparent)]
    Locate(#[from] LocateError),
    /// What was found is not a plausible goroutine list.
    #[error("runtime.allgs at {addr:#x} does not look like the goroutine list ({why}); is this the binary the process runs?")]
    BadList {
        /// Address of `runtime.allgs`.
        addr: u64,
        /// What did not fit.
        why: String,
    },
}

/// [`snapshot_with`] with default options.
pub fn snapshot(mem: &ProcessMemory, binary: &GoBinary, load_bias: u64) -> Result<Snapshot, SnapshotError> {
    snapshot_with(mem, binary, load_bias, &SnapshotOptions::default())
}

/// Reads every goroutine of the process `mem` reads, which runs `binary` loaded at `load_bias`
/// (runtime minus link-time address; 0 unless PIE).
pub fn snapshot_with(
    mem: &ProcessMemory,
    binary: &GoBinary,
    load_bias: u64,
    opts: &SnapshotOptions,
) -> Result<Snapshot, SnapshotError> {
    let location = locate_allgs(mem, binary, load_bias)?;
    snapshot_at(mem, binary, load_bias, location, opts)
}

/// [`snapshot_with`] from a known goroutine list.
pub(crate) fn snapshot_at(
    mem: &ProcessMemory,
    binary: &GoBinary,
    load_bias: u64,
    location: AllgsLocation,
    opts: &SnapshotOptions,
) -> Result<Snapshot, SnapshotError> {
    let started = Instant::now();
    let read_start_ns = monotonic_ns();
    let before = mem.stats();
    let mut stats = SnapshotStats::default();

    // 1. The list: allglen first (see allgs.rs), then the slice header.
    let gptrs = read_list(mem, &location, opts.max_goroutines, &mut stats)?;

    let mut ctx = Ctx::new(binary, load_bias, opts);
    let mut goroutines = Vec::new();
    let mut channels = BTreeMap::new();
    let mut retry = Vec::new();
    for chunk in gptrs.chunks(CHUNK) {
        ctx.process(mem, chunk, true, &mut goroutines, &mut channels, &mut retry, &mut stats)?;
    }
    stats.retried = retry.len() as u64;
    let again = std::mem::take(&mut retry);
    for chunk in again.chunks(CHUNK) {
        ctx.process(mem, chunk, false, &mut goroutines, &mut channels, &mut retry, &mut stats)?;
    }

    if opts.channels {
        fill_semaphores_from_semtable(mem, binary, load_bias, &mut goroutines);
    }
    goroutines.sort_by_key(|g: &Goroutine| g.goid);
    let n = goroutines.len();
    goroutines.dedup_by_key(|g| g.goid);
    stats.duplicate_goids = (n - goroutines.len()) as u64;
    stats.reported = goroutines.len() as u64;
    let after = mem.stats();
    stats.bytes_read = after.bytes - before.bytes;
    stats.syscalls = after.syscalls - before.syscalls;
    stats.proc_mem_fallback = after.proc_mem_fallback;
    stats.elapsed_ns = started.elapsed().as_nanos() as u64;
    Ok(Snapshot { pid: mem.pid(), read_start_ns, read_end_ns: monotonic_ns(), location, goroutines, channels, stats })
}

/// Reads the goroutines at the given `*g` addresses (e.g. ones seen parking), with the same
/// validation, channels and stacks as a snapshot. Entries that do not validate are left out;
/// callers check the goid, since the runtime reuses g structs. Returns them with the headers of
/// the channels they wait on.
pub fn read_goroutines(
    mem: &ProcessMemory,
    binary: &GoBinary,
    load_bias: u64,
    gptrs: &[u64],
    opts: &SnapshotOptions,
) -> Result<(Vec<Goroutine>, BTreeMap<u64, Channel>), SnapshotError> {
    let mut ctx = Ctx::new(binary, load_bias, opts);
    let (mut goroutines, mut channels, mut retry) = (Vec::new(), BTreeMap::new(), Vec::new());
    let mut stats = SnapshotStats::default();
    for chunk in gptrs.chunks(CHUNK) {
        ctx.process(mem, chunk, true, &mut goroutines, &mut channels, &mut retry, &mut stats)?;
    }
    if opts.channels {
        fill_semaphores_from_semtable(mem, binary, load_bias, &mut goroutines);
    }
    Ok((goroutines, channels))
}

/// Gives goroutines in a semaphore wait whose sudog memory did not name the semaphore (Go
/// 1.19–1.25 do not link it into `g.waiting`) the address the runtime's `semtable` queues them
/// under, and those in a `sync.Cond` wait their notify list's. Best effort: when the table cannot be read the address stays unknown, which only ever
/// keeps a wait from being proven.
fn fill_semaphores_from_semtable(mem: &ProcessMemory, binary: &GoBinary, load_bias: u64, goroutines: &mut [Goroutine]) {
    let unknown = |g: &Goroutine| {
        g.sema_addr.is_none()
            && matches!(g.status, GStatus::Waiting | GStatus::Leaked)
            && g.wait_reason.as_deref().is_some_and(crate::sema::is_semaphore_wait)
    };
    if goroutines.iter().any(unknown)
        && let Ok(waiters) = crate::sema::semaphore_waiters(mem, binary, load_bias)
    {
        for g in goroutines.iter_mut().filter(|g| unknown(g)) {
            if let Some(&(addr, sudog)) = waiters.get(&g.g_addr) {
                g.sema_addr = Some(addr);
                g.sync_pointer_words = sync_pointer_words(binary, &[sudog]);
            }
        }
    }
    let cond_waiter = |g: &Goroutine| {
        g.sema_addr.is_none()
            && matches!(g.status, GStatus::Waiting | GStatus::Leaked)
            && g.wait_reason.as_deref().is_some_and(crate::sema::is_notify_list_wait)
    };
    let cond_waiters: Vec<u64> = goroutines.iter().filter(|g| cond_waiter(g)).map(|g| g.g_addr).collect();
    if !cond_waiters.is_empty()
        && let Ok(lists) = crate::sema::notify_list_waiters(mem, binary, &cond_waiters)
    {
        for g in goroutines.iter_mut().filter(|g| cond_waiter(g)) {
            if let Some(&(list, sudog)) = lists.get(&g.g_addr) {
                g.sema_addr = Some(list);
                g.sync_pointer_words = sync_pointer_words(binary, &[sudog]);
            }
        }
    }
}

fn read_list(mem: &ProcessMemory, loc: &AllgsLocation, max: usize, stats: &mut SnapshotStats) -> Result<Vec<u64>, SnapshotError> {
    let bad = |why: String| SnapshotError::BadList { addr: loc.allgs, why };
    let mut attempt = 0;
    let (ptr, n) = loop {
        attempt += 1;
        let allglen = match loc.allglen {
            Some(a) => Some(mem.read_u64(a)?),
            None => None,
        };
        let h = mem.read_vec(loc.allgs, 24)?;
        let word = |i: usize| u64::from_le_bytes(h[i * 8..i * 8 + 8].try_into().expect("24 bytes"));
        let (ptr, len, cap) = (word(0), word(1), word(2));
        let n = allglen.unwrap_or(len);
        // allglen is stored after the slice, so (read first) it never exceeds len; the
        // header itself may be torn by a concurrent append: read once more.
        let why = if len > cap {
            Some(format!("len {len} > cap {cap}"))
        } else if cap > 1 << 32 {
            Some(format!("capacity {cap}"))
        } else if n > len {
            Some(format!("allglen {n} > len(allgs) {len}"))
        } else if ptr == 0 && n > 0 {
            Some("nil array".to_string())
        } else if ptr % 8 != 0 {
            Some(format!("misaligned array {ptr:#x}"))
        } else {
            None
        };
        match why {
            None => break (ptr, n),
            Some(w) if attempt >= 2 => return Err(bad(w)),
            Some(_) => continue,
        }
    };
    stats.allglen = n;
    let take = n.min(max as u64);
    stats.examined = take;
    stats.not_examined = n - take;
    let mut out = Vec::with_capacity(take as usize);
    // 1M pointers = 8 MB; read in 1 MB pieces so the budget check is gradual.
    const PIECE: u64 = 1 << 17;
    let mut i = 0;
    while i < take {
        let k = PIECE.min(take - i);
        let bytes = mem.read_vec(ptr + i * 8, (k * 8) as usize)?;
        out.extend(bytes.as_chunks::<8>().0.iter().map(|c| u64::from_le_bytes(*c)));
        i += k;
    }
    Ok(out)
}

/// Offsets of the g fields read.
#[derive(Debug, Clone, Copy)]
struct GOffsets {
    goid: usize,
    status: usize,
    waitsince: usize,
    waitreason: usize,
    waiting: usize,
    parent: Option<usize>,
    lockedm: Option<usize>,
    gopc: usize,
    startpc: usize,
    sched_sp: usize,
    sched_pc: usize,
    sched_bp: usize,
    syscallsp: usize,
    syscallpc: usize,
    syscallbp: Option<usize>,
    tracking_seq: Option<usize>,
    /// Bytes of g read: the highest field end.
    len: usize,
}

impl GOffsets {
    fn new(binary: &GoBinary) -> GOffsets {
        let l = binary.layout();
        let u = |x: u32| x as usize;
        // `syscallsp, syscallpc [, syscallbp]` follow the gobuf `sched` in every version, and
        // `bp` is the gobuf's last field (1.19-1.24 at 104, 1.25+ at 96): syscallsp = sched.bp+8.
        // `syscallbp` exists from Go 1.23. (runtime2.go of each version; go-runtime-facts.md §1.)
        let syscallsp = u(l.g_sched_bp) + 8;
        let syscallbp = (binary.build_info().go_version.minor >= runtime::G_SYSCALLBP_SINCE).then_some(syscallsp + 16);
        let mut o = GOffsets {
            goid: u(l.g_goid),
            status: u(l.g_atomicstatus),
            waitsince: u(l.g_waitsince),
            waitreason: u(l.g_waitreason),
            waiting: u(l.g_waiting),
            parent: l.g_parent_goid.map(u),
            lockedm: l.g_lockedm.map(u),
            gopc: u(l.g_gopc),
            startpc: u(l.g_startpc),
            sched_sp: u(l.g_sched_sp),
            sched_pc: u(l.g_sched_pc),
            sched_bp: u(l.g_sched_bp),
            syscallsp,
            syscallpc: syscallsp + 8,
            syscallbp,
            tracking_seq: l.g_tracking_seq.map(u),
            len: 0,
        };
        o.len = [
            16,
            o.goid + 8,
            o.status + 4,
            o.waitsince + 8,
            o.waitreason + 1,
            o.waiting + 8,
            o.parent.map_or(0, |p| p + 8),
            o.lockedm.map_or(0, |m| m + 8),
            o.gopc + 8,
            o.startpc + 8,
            o.sched_sp + 8,
            o.sched_pc + 8,
            o.sched_bp + 8,
            o.syscallpc + 8,
            o.syscallbp.map_or(0, |b| b + 8),
            o.tracking_seq.map_or(0, |t| t + 1),
        ]
        .into_iter()
        .max()
        .unwrap_or(16)
        .next_multiple_of(8);
        o
    }
}

/// The fields of one g as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GView {
    addr: u64,
    lo: u64,
    hi: u64,
    goid: u64,
    raw_status: u32,
    waitsince: u64,
    waitreason: u8,
    waiting: u64,
    parent: u64,
    lockedm: u64,
    gopc: u64,
    startpc: u64,
    sched_sp: u64,
    sched_pc: u64,
    sched_bp: u64,
    syscallsp: u64,
    syscallpc: u64,
    syscallbp: Option<u64>,
    tracking_seq: Option<u8>,
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("offset within the g prefix"))
}

impl GView {
    fn parse(addr: u64, b: &[u8], o: &GOffsets) -> GView {
        GView {
            addr,
            lo: u64_at(b, 0),
            hi: u64_at(b, 8),
            goid: u64_at(b, o.goid),
            raw_status: u32::from_le_bytes(b[o.status..o.status + 4].try_into().expect("4 bytes")),
            waitsince: u64_at(b, o.waitsince),
            waitreason: b[o.waitreason],
            waiting: u64_at(b, o.waiting),
            parent: o.parent.map_or(0, |p| u64_at(b, p)),
            lockedm: o.lockedm.map_or(0, |m| u64_at(b, m)),
            gopc: u64_at(b, o.gopc),
            startpc: u64_at(b, o.startpc),
            sched_sp: u64_at(b, o.sched_sp),
            sched_pc: u64_at(b, o.sched_pc),
            sched_bp: u64_at(b, o.sched_bp),
            syscallsp: u64_at(b, o.syscallsp),
            syscallpc: u64_at(b, o.syscallpc),
            syscallbp: o.syscallbp.map(|x| u64_at(b, x)),
            tracking_seq: o.tracking_seq.map(|t| b[t]),
        }
    }

    /// The fields a report depends on; a second read must agree on them.
    fn key(&self, status: GStatus) -> (u64, u32, [u64; 7], u8) {
        if status.walkable() {
            (
                self.goid,
                self.raw_status & !GSCAN,
                [
                    self.sched_sp,
                    self.sched_pc,
                    self.sched_bp,
                    self.syscallsp,
                    self.syscallpc,
                    self.syscallbp.unwrap_or(0),
                    self.waiting,
                ],
                self.waitreason,
            )
        } else {
            (self.goid, self.raw_status & !GSCAN, [0; 7], 0)
        }
    }

    /// Where a stack walk starts.
    fn walk_start(&self) -> WalkStart {
        if self.syscallsp != 0 {
            WalkStart {
                pc: self.syscallpc,
                sp: self.syscallsp,
                bp: self.syscallbp,
                lo: self.lo,
                hi: self.hi,
                in_morestack_stub: false,
            }
        } else {
            WalkStart {
                pc: self.sched_pc,
                sp: self.sched_sp,
                bp: Some(self.sched_bp),
                lo: self.lo,
                hi: self.hi,
                in_morestack_stub: false,
            }
        }
    }
}

/// What a snapshot needs from the binary, with caches.
struct Ctx<'a> {
    binary: &'a GoBinary,
    bias: u64,
    opts: &'a SnapshotOptions,
    offs: GOffsets,
    minor: u32,
    goexit: Vec<(u64, u64)>,
    injected: Vec<(u64, u64)>,
    morestack: Vec<(u64, u64)>,
    cache: HashMap<(u64, bool), Option<Frames>>,
    /// "created by" locations (physical function, innermost file:line) by gopc.
    created_cache: HashMap<u64, Option<Arc<Location>>>,
    start_functions: HashMap<u64, Option<String>>,
    /// Type names by descriptor address (None: unreadable).
    type_names: HashMap<u64, Option<String>>,
    sudog_len: usize,
}

impl Symbols for Ctx<'_> {
    fn frames(&mut self, pc: u64, call_site: bool) -> Option<Frames> {
        if let Some(hit) = self.cache.get(&(pc, call_site)) {
            return hit.clone();
        }
        let link = pc.wrapping_sub(self.bias);
        let mut f = self.binary.symbolize_frames(link);
        if call_site && f.last().is_some_and(|fr| link > fr.entry) {
            f = self.binary.symbolize_frames(link - 1);
        }
        let frames = (!f.is_empty()).then(|| {
            f.into_iter()
                .map(|f| {
                    Arc::new(Location {
                        function: f.function,
                        file: f.file,
                        line: f.line,
                        entry: f.entry.wrapping_add(self.bias),
                    })
                })
                .collect::<Frames>()
        });
        self.cache.insert((pc, call_site), frames.clone());
        frames
    }

    fn is_goexit(&self, pc: u64) -> bool {
        in_ranges(&self.goexit, pc)
    }

    fn is_injected_call(&self, pc: u64) -> bool {
        in_ranges(&self.injected, pc)
    }
}

fn in_ranges(r: &[(u64, u64)], pc: u64) -> bool {
    r.iter().any(|(a, b)| (*a..*b).contains(&pc))
}

/// A g in the middle of being processed.
struct Pending {
    view: GView,
    status: GStatus,
    scan: bool,
    walk: Option<Walk>,
    stack_end: StackEnd,
    channels: Vec<u64>,
    is_select: bool,
    sema: Option<u64>,
    /// Addresses of the sudogs it waits through.
    sudogs: Vec<u64>,
    /// Failed a check that warrants reading it again.
    suspect: bool,
}

impl<'a> Ctx<'a> {
    fn new(binary: &'a GoBinary, bias: u64, opts: &'a SnapshotOptions) -> Ctx<'a> {
        let ranges = |names: &[&str]| -> Vec<(u64, u64)> {
            names
                .iter()
                .filter_map(|n| binary.function(n))
                .map(|f| (f.entry.wrapping_add(bias), f.end.wrapping_add(bias)))
                .collect()
        };
        let l = binary.layout();
        let sudog_len = [l.sudog_g, l.sudog_c, l.sudog_elem, l.sudog_waitlink].into_iter().max().unwrap_or(0) as usize + 8;
        let sudog_len = sudog_len.max(l.sudog_is_select as usize + 1).next_multiple_of(8);
        Ctx {
            binary,
            bias,
            opts,
            offs: GOffsets::new(binary),
            minor: binary.build_info().go_version.minor,
            goexit: ranges(&["runtime.goexit"]),
            injected: ranges(&["runtime.asyncPreempt", "runtime.sigpanic", "runtime.debugCallV2"]),
            morestack: ranges(&["runtime.morestack", "runtime.morestack_noctxt"]),
            cache: HashMap::new(),
            created_cache: HashMap::new(),
            start_functions: HashMap::new(),
            type_names: HashMap::new(),
            sudog_len,
        }
    }

    /// Checks a view; Err names the failed check.
    fn validate(&self, v: &GView, status: GStatus) -> Result<(), &'static str> {
        if v.goid == 0 || v.goid > MAX_GOID {
            return Err("implausible goid");
        }
        if v.lo == 0 || v.hi <= v.lo || v.hi - v.lo > MAX_STACK || !v.lo.is_multiple_of(8) || !v.hi.is_multiple_of(8) {
            return Err("implausible stack bounds");
        }
        if status.walkable() {
            let s = v.walk_start();
            if s.sp < v.lo || s.sp > v.hi {
                return Err("saved SP outside the stack");
            }
            if s.pc == 0 {
                return Err("saved PC is 0");
            }
            if let Some(bp) = s.bp
                && bp != 0
                && (bp < v.lo || bp >= v.hi)
            {
                return Err("saved frame pointer outside the stack");
            }
        }
        if matches!(status, GStatus::Waiting | GStatus::Leaked) {
            let n = self.binary.wait_reasons().len();
            if n > 0 && usize::from(v.waitreason) >= n {
                return Err("wait reason out of range");
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn process(
        &mut self,
        mem: &ProcessMemory,
        gptrs: &[u64],
        first_pass: bool,
        out: &mut Vec<Goroutine>,
        channels: &mut BTreeMap<u64, Channel>,
        retry: &mut Vec<u64>,
        stats: &mut SnapshotStats,
    ) -> Result<(), SnapshotError> {
        let glen = self.offs.len;
        // A nil or misaligned pointer in allgs is itself a torn read (allgs never holds nil).
        let reqs: Vec<(u64, usize)> = gptrs.iter().map(|&g| (g, glen)).collect();
        let batch = mem.read_batch(&reqs)?;
        let mut pending: Vec<Pending> = Vec::with_capacity(gptrs.len());
        let reject = |g: u64, stats: &mut SnapshotStats, retry: &mut Vec<u64>| {
            if first_pass {
                retry.push(g);
            } else {
                stats.invalid += 1;
            }
        };
        for (i, &g) in gptrs.iter().enumerate() {
            let Some(bytes) = batch.get(i).filter(|_| g != 0 && g % 8 == 0) else {
                reject(g, stats, retry);
                continue;
            };
            let view = GView::parse(g, bytes, &self.offs);
            let Some((status, scan)) = GStatus::from_raw(view.raw_status, self.minor) else {
                reject(g, stats, retry);
                continue;
            };
            if status.is_dead() && !self.opts.include_dead {
                stats.dead += 1;
                continue;
            }
            if !status.is_dead() && self.validate(&view, status).is_err() {
                reject(g, stats, retry);
                continue;
            }
            pending.push(Pending {
                view,
                status,
                scan,
                walk: None,
                stack_end: if status == GStatus::Running { StackEnd::Running } else { StackEnd::NotRead },
                channels: Vec::new(),
                is_select: false,
                sema: None,
                sudogs: Vec::new(),
                suspect: false,
            });
        }
        drop(batch);

        if self.opts.stacks {
            self.walk_stacks(mem, &mut pending)?;
        }
        if self.opts.channels {
            self.follow_waiting(mem, &mut pending, channels, stats)?;
        }

        // Read the g structs again: what was derived must still describe them.
        let reqs: Vec<(u64, usize)> = pending.iter().map(|p| (p.view.addr, glen)).collect();
        let again = mem.read_batch(&reqs)?;
        for (i, p) in pending.into_iter().enumerate() {
            let now = again.get(i).map(|b| GView::parse(p.view.addr, b, &self.offs));
            let same = now.is_some_and(|n| n.key(p.status) == p.view.key(p.status));
            if same && !p.suspect {
                out.push(self.goroutine(p));
            } else if first_pass {
                retry.push(p.view.addr);
            } else if let Some(n) = now {
                // Changed twice: report what it is now, without what we could not pin down.
                match GStatus::from_raw(n.raw_status, self.minor) {
                    Some((status, scan)) if n.goid == p.view.goid && (status.is_dead() || self.validate(&n, status).is_ok()) => {
                        if status.is_dead() && !self.opts.include_dead {
                            stats.dead += 1;
                            continue;
                        }
                        stats.inconsistent += 1;
                        out.push(self.goroutine(Pending {
                            view: n,
                            status,
                            scan,
                            walk: None,
                            stack_end: StackEnd::Inconsistent,
                            channels: Vec::new(),
                            is_select: false,
                            sema: None,
                            sudogs: Vec::new(),
                            suspect: false,
                        }));
                    }
                    _ => stats.invalid += 1,
                }
            } else {
                stats.invalid += 1;
            }
        }
        Ok(())
    }

    fn walk_stacks(&mut self, mem: &ProcessMemory, pending: &mut [Pending]) -> Result<(), SnapshotError> {
        let window = self.opts.stack_window.max(16);
        let max_frames = self.opts.max_frames;
        // First round: the window at SP, plus for runnable-like goroutines the 5 bytes before the
        // resume PC (a `CALL rel32` to runtime.morestack* means it stopped in a prologue).
        let mut idx = Vec::new();
        let mut reqs = Vec::new();
        for (i, p) in pending.iter().enumerate() {
            if !p.status.walkable() {
                continue;
            }
            let s = p.view.walk_start();
            idx.push(i);
            reqs.push(Walk::first_window(&s, window));
            let stub_check = s.bp.is_some() && matches!(p.status, GStatus::Runnable | GStatus::Preempted | GStatus::Copystack);
            reqs.push(if stub_check { (s.pc.wrapping_sub(5), 5) } else { (0, 0) });
        }
        let batch = mem.read_batch(&reqs)?;
        let mut active = Vec::new();
        for (k, &i) in idx.iter().enumerate() {
            let mut s = pending[i].view.walk_start();
            if let Some(code) = batch.get(2 * k + 1).filter(|c| c.len() == 5 && c[0] == 0xe8) {
                let rel = i32::from_le_bytes(code[1..5].try_into().expect("4 bytes"));
                let target = s.pc.wrapping_add(rel as i64 as u64);
                s.in_morestack_stub = in_ranges(&self.morestack, target);
            }
            let (start, _) = reqs[2 * k];
            let w = Walk::init(&s, batch.get(2 * k).map(|b| (start, b.to_vec())));
            pending[i].walk = Some(w);
            active.push(i);
        }
        drop(batch);
        // Rounds: advance every walk; read what they need; repeat.
        let mut rounds = 0;
        while !active.is_empty() {
            rounds += 1;
            let mut need = Vec::new();
            let mut reqs = Vec::new();
            for &i in &active {
                let w = pending[i].walk.as_mut().expect("set above");
                match w.advance(self, max_frames, window) {
                    Some(r) if rounds <= max_frames + 2 => {
                        need.push(i);
                        reqs.push(r);
                    }
                    Some(_) => w.end = Some(StackEnd::Truncated),
                    None => {}
                }
            }
            if need.is_empty() {
                break;
            }
            let batch = mem.read_batch(&reqs)?;
            for (k, &i) in need.iter().enumerate() {
                let w = pending[i].walk.as_mut().expect("set above");
                w.supply(reqs[k].0, batch.get(k));
            }
            active = need;
        }
        for p in pending.iter_mut() {
            if let Some(w) = p.walk.as_mut() {
                w.finish();
                p.stack_end = w.end.unwrap_or(StackEnd::Truncated);
                // A resume PC outside Go code is not a real goroutine state.
                if w.frames.is_empty() {
                    p.suspect = true;
                }
            }
        }
        Ok(())
    }

    fn follow_waiting(
        &mut self,
        mem: &ProcessMemory,
        pending: &mut [Pending],
        channels: &mut BTreeMap<u64, Channel>,
        stats: &mut SnapshotStats,
    ) -> Result<(), SnapshotError> {
        let l = self.binary.layout().clone();
        // (pending index, next sudog address, sudogs seen)
        let mut cursors: Vec<(usize, u64, usize)> = pending
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.status, GStatus::Waiting | GStatus::Leaked) && p.view.waiting != 0)
            .map(|(i, p)| (i, p.view.waiting, 0))
            .collect();
        let mut seen: HashSet<(usize, u64)> = HashSet::new();
        while !cursors.is_empty() {
            let reqs: Vec<(u64, usize)> = cursors.iter().map(|c| (c.1, self.sudog_len)).collect();
            let batch = mem.read_batch(&reqs)?;
            let mut next = Vec::new();
            for (k, &(i, addr, n)) in cursors.iter().enumerate() {
                let p = &mut pending[i];
                let Some(b) = batch.get(k) else {
                    p.suspect = true;
                    continue;
                };
                if u64_at(b, l.sudog_g as usize) != p.view.addr || !seen.insert((i, addr)) {
                    // Not this goroutine's sudog (any more), or a cycle: it moved on.
                    p.suspect = true;
                    continue;
                }
                p.sudogs.push(addr);
                let c = u64_at(b, l.sudog_c as usize);
                if c == 0 {
                    // Parked on a channel, every sudog in g.waiting has its channel set (chanrecv,
                    // chansend and selectgo set it before parking, and clear it after waking): a
                    // zero means the goroutine woke and parked again between our reads (same
                    // stack, same recycled sudog, so the g itself looked unchanged).
                    // Go 1.26+ also links the sudog of a semaphore or sync.Cond wait into
                    // g.waiting (for leak detection), with c nil and elem = the semaphore
                    // (notifyList for a Cond) address.
                    let elem = u64_at(b, l.sudog_elem as usize);
                    if self.channel_wait(p.view.waitreason) || elem == 0 {
                        p.suspect = true;
                        continue;
                    }
                    p.sema.get_or_insert(elem);
                    // A semaphore wait has one sudog; its waitlink queues the *other* goroutines
                    // waiting on the same address (semaRoot.queue), not more of this one's.
                    continue;
                } else if !p.channels.contains(&c) {
                    p.channels.push(c);
                }
                if b[l.sudog_is_select as usize] != 0 {
                    p.is_select = true;
                }
                let link = u64_at(b, l.sudog_waitlink as usize);
                if link != 0 && n + 1 < self.opts.max_sudogs {
                    next.push((i, link, n + 1));
                }
            }
            cursors = next;
        }
        // Channel headers, each once.
        let mut todo: Vec<u64> =
            pending.iter().flat_map(|p| p.channels.iter().copied()).filter(|c| !channels.contains_key(c)).collect();
        todo.sort_unstable();
        todo.dedup();
        for attempt in 0..2 {
            if todo.is_empty() {
                break;
            }
            let reqs: Vec<(u64, usize)> = todo.iter().map(|&c| (c, HCHAN_READ)).collect();
            let batch = mem.read_batch(&reqs)?;
            let mut bad = Vec::new();
            for (k, &c) in todo.iter().enumerate() {
                match batch.get(k).and_then(|b| parse_hchan(c, b, &l)) {
                    Some(ch) => {
                        channels.insert(c, ch);
                    }
                    None => bad.push(c),
                }
            }
            if attempt == 1 {
                stats.invalid_channels += bad.len() as u64;
            }
            todo = bad;
        }
        self.name_element_types(mem, channels)
    }

    /// Fills in the element type names of channels that lack one.
    fn name_element_types(&mut self, mem: &ProcessMemory, channels: &mut BTreeMap<u64, Channel>) -> Result<(), SnapshotError> {
        let Some(base) = self.binary.types_base() else { return Ok(()) };
        let mut unnamed: Vec<u64> = channels
            .values()
            .filter(|c| c.element_type.is_none() && c.elem_type != 0 && !self.type_names.contains_key(&c.elem_type))
            .map(|c| c.elem_type)
            .collect();
        unnamed.sort_unstable();
        unnamed.dedup();
        if !unnamed.is_empty() {
            let names = crate::types::type_names(mem, base.wrapping_add(self.bias), &unnamed)?;
            for t in unnamed {
                self.type_names.insert(t, names.get(&t).cloned());
            }
        }
        for c in channels.values_mut().filter(|c| c.element_type.is_none()) {
            c.element_type = self.type_names.get(&c.elem_type).cloned().flatten();
        }
        Ok(())
    }

    /// A wait on channels: chan send/receive (not on a nil channel) or select (with cases),
    /// synctest's durable variants included.
    fn channel_wait(&self, code: u8) -> bool {
        self.binary.wait_reasons().name(code).is_some_and(|r| {
            (r.starts_with("chan send") || r.starts_with("chan receive") || r.starts_with("select"))
                && !r.contains("nil chan")
                && !r.contains("no cases")
        })
    }

    /// The runtime's "created by": the physical function at `gopc - 1` with the innermost
    /// file:line (`runtime.printcreatedby1` uses `funcname(f)` and `funcline(f, pc - 1)`).
    fn created_by(&mut self, gopc: u64, frames: &[Arc<Location>]) -> Option<Arc<Location>> {
        if let Some(hit) = self.created_cache.get(&gopc) {
            return hit.clone();
        }
        let loc = match frames {
            [] => None,
            [only] => Some(Arc::clone(only)),
            [inner, .., outer] => Some(Arc::new(Location {
                function: outer.function.clone(),
                file: inner.file.clone(),
                line: inner.line,
                entry: outer.entry,
            })),
        };
        self.created_cache.insert(gopc, loc.clone());
        loc
    }

    fn start_function(&mut self, startpc: u64) -> Option<String> {
        if let Some(s) = self.start_functions.get(&startpc) {
            return s.clone();
        }
        // The physical function: the entry PC is never inside an inlined call.
        let name = self.frames(startpc, false).and_then(|f| f.last().map(|l| l.function.clone()));
        self.start_functions.insert(startpc, name.clone());
        name
    }

    /// The words of `sudogs` that point at what their goroutine waits on (`elem`, `c`; from Go
    /// 1.26 both words of each `maybeTraceablePtr`).
    fn sync_pointer_words(&self, sudogs: &[u64]) -> Vec<u64> {
        sync_pointer_words(self.binary, sudogs)
    }

    fn goroutine(&mut self, p: Pending) -> Goroutine {
        let v = &p.view;
        let waiting = matches!(p.status, GStatus::Waiting | GStatus::Leaked);
        let (wait_reason_code, wait_reason) = if waiting && v.waitreason != 0 {
            let name = self.binary.wait_reasons().name(v.waitreason).unwrap_or("unknown wait reason");
            (Some(v.waitreason), Some(name.to_string()))
        } else {
            (None, None)
        };
        let wait_since_ns =
            (matches!(p.status, GStatus::Waiting | GStatus::Syscall) && v.waitsince > 0 && v.waitsince < i64::MAX as u64)
                .then_some(v.waitsince);
        let start_function = if v.startpc != 0 { self.start_function(v.startpc) } else { None };
        let system = start_function.as_deref().is_some_and(goscope_inspect::is_runtime_goroutine);
        let created_at: Vec<Arc<Location>> =
            if v.gopc != 0 { self.frames(v.gopc, true).map(|f| f.to_vec()).unwrap_or_default() } else { Vec::new() };
        let created_by = if v.gopc != 0 { self.created_by(v.gopc, &created_at) } else { None };
        let stack = p.walk.map(|w| w.frames).unwrap_or_default();
        Goroutine {
            goid: v.goid,
            g_addr: v.addr,
            status: p.status,
            scan: p.scan,
            wait_reason_code,
            wait_reason,
            wait_since_ns,
            parent_goid: (v.parent != 0).then_some(v.parent),
            locked_to_thread: v.lockedm != 0,
            gopc: v.gopc,
            created_by,
            created_at,
            startpc: v.startpc,
            start_function,
            channels: p.channels,
            is_select: p.is_select,
            sema_addr: p.sema,
            sync_pointer_words: self.sync_pointer_words(&p.sudogs),
            stack,
            stack_end: p.stack_end,
            system,
            resume: ResumePoint { pc: v.sched_pc, depth: v.hi.wrapping_sub(v.sched_sp) },
            tracking_seq: v.tracking_seq,
        }
    }
}

/// See [`Goroutine::sync_pointer_words`].
fn sync_pointer_words(binary: &GoBinary, sudogs: &[u64]) -> Vec<u64> {
    let l = binary.layout();
    // Go 1.26+: `elem` and `c` are `{vp unsafe.Pointer; vu uintptr}`; the layout names `vu`.
    let both_words = binary.build_info().go_version.minor >= runtime::SUDOG_TRACEABLE_PTR_SINCE;
    let fields: Vec<u64> = [u64::from(l.sudog_elem), u64::from(l.sudog_c)]
        .into_iter()
        .flat_map(|f| if both_words { vec![f - 8, f] } else { vec![f] })
        .collect();
    sudogs.iter().flat_map(|s| fields.iter().map(move |f| s + f)).collect()
}

fn parse_hchan(addr: u64, b: &[u8], l: &goscope_inspect::RuntimeLayout) -> Option<Channel> {
    let len = u64_at(b, l.hchan_qcount as usize);
    let capacity = u64_at(b, l.hchan_dataqsiz as usize);
    let es = l.hchan_elemsize as usize;
    let elem_size = u16::from_le_bytes(b.get(es..es + 2)?.try_into().ok()?);
    let cl = l.hchan_closed as usize;
    let closed = u32::from_le_bytes(b.get(cl..cl + 4)?.try_into().ok()?);
    let elem_type = u64_at(b, l.hchan_elemtype as usize);
    (len <= capacity && capacity < 1 << 40 && closed <= 1).then_some(Channel {
        addr,
        len,
        capacity,
        elem_size,
        closed: closed != 0,
        elem_type,
        element_type: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_decoding() {
        assert_eq!(GStatus::from_raw(4, 21), Some((GStatus::Waiting, false)));
        assert_eq!(GStatus::from_raw(0x1004, 21), Some((GStatus::Waiting, true)));
        assert_eq!(GStatus::from_raw(10, 25), None);
        assert_eq!(GStatus::from_raw(10, 26), Some((GStatus::Leaked, false)));
        assert_eq!(GStatus::from_raw(0x100b, 27), Some((GStatus::DeadExtra, true)));
        assert_eq!(GStatus::from_raw(5, 26), None);
        assert_eq!(GStatus::from_raw(7, 26), None);
        assert_eq!(GStatus::from_raw(0x2004, 26), None);
        assert_eq!(GStatus::from_raw(u32::MAX, 26), None);
    }
}
