//! Goroutine leaks proven by reachability, from outside the process: what Go 1.26's
//! `goroutineleak` profile computes inside the GC.
//!
//! A goroutine blocked on channels or sync primitives can only ever run again if some goroutine
//! that can run could reach one of those objects. Marking starts from the roots — the binary's
//! pointer-bearing globals and the stacks of goroutines that can run by themselves — and goes
//! through the heap, resolving every word to its object with the runtime's own span metadata
//! (`mheap_.arenas` → `heapArena.spans` → `mspan`). A blocked goroutine whose object gets marked
//! is live: its stack is scanned too, and so on to a fixpoint. Blocked goroutines left over are
//! leaked (see [`find_leaked`] for what "proof" rests on).
//!
//! Two runtime paths are not followed, like the runtime's leak detector hides them
//! (`setSyncObjectsUntraceable` in go1.26 `mgc.go`): the g structs that `runtime.allgs` keeps for
//! every goroutine (their `waiting` sudogs point at the channels they block on) are scanned only
//! as part of a live goroutine, and `runtime.semtable` (whose sudogs point at every contended
//! mutex) is not a root.
use std::collections::{BTreeSet, HashMap};

use goscope_inspect::GoBinary;

use crate::process::{MemoryError, ProcessMemory};
use crate::snapshot::{GStatus, Goroutine};

mod engine;
mod frames;
mod process;

pub use engine::{GoroutineStack, HeapObject, ReachMemory, find_leaked_in};
pub use frames::{StackContext, StackPointers};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use process::HeapSymbols;
pub use process::ProcessHeap;

/// What one goroutine contributes to the analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachGoroutine {
    /// The goroutine's ID.
    pub goid: u64,
    /// Address of its g struct.
    pub g_addr: u64,
    /// Root, blocked on objects, or blocked forever.
    pub role: ReachRole,
    /// Addresses of words in heap objects never followed: the `elem` and `c` words of its
    /// sudogs (see [`crate::Goroutine::sync_pointer_words`]).
    pub untraceable: Vec<u64>,
}

/// How a goroutine takes part in the marking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReachRole {
    /// Can run again by itself (running, runnable, syscall, sleeping, IO wait, runtime waits, or
    /// a blocked goroutine whose wait object is unknown): its stack is a root.
    Root,
    /// Blocked on these objects: channel (hchan) addresses, sync primitive or semaphore
    /// addresses (any address inside the object). It is live if any of them is reachable.
    Blocked(Vec<u64>),
    /// Blocked with nothing that could ever wake it (nil channel, `select {}`).
    Forever,
}

impl ReachGoroutine {
    /// The role of a goroutine from a [`crate::snapshot`]: blocked on its channels for channel
    /// waits, on its semaphore for sync waits (memory has it from Go 1.26, which links that sudog
    /// into `g.waiting`; before, `probed_sync` is what the caller learned otherwise, e.g. at the
    /// park), forever for nil-channel waits and `select {}`, a root otherwise — also when the
    /// objects of a blocking wait are unknown.
    ///
    /// None for dead goroutines, and for the runtime's own goroutines parked in their idle waits
    /// (GC workers, sweeper, scavenger, finalizer and cleanup loops): they hold no user object
    /// that could wake anyone, but their frames keep stale copies of what they last worked on (a
    /// GC worker: the objects it marked), which as roots would keep leaks alive.
    pub fn from_goroutine(g: &Goroutine, probed_sync: Option<u64>) -> Option<ReachGoroutine> {
        if g.status.is_dead() {
            return None;
        }
        let blocked = matches!(g.status, GStatus::Waiting | GStatus::Leaked);
        let reason = g.wait_reason.as_deref().unwrap_or("");
        // "(synctest)" (1.24) and "(durable)" (1.25+) mark the same waits inside a synctest bubble.
        let base = reason.strip_suffix(" (synctest)").or_else(|| reason.strip_suffix(" (durable)")).unwrap_or(reason);
        let role = match base {
            _ if !blocked => ReachRole::Root,
            "chan send (nil chan)" | "chan receive (nil chan)" | "select (no cases)" => ReachRole::Forever,
            "chan send" | "chan receive" | "select" if !g.channels.is_empty() => ReachRole::Blocked(g.channels.clone()),
            "sync.Mutex.Lock"
            | "sync.RWMutex.RLock"
            | "sync.RWMutex.Lock"
            | "sync.WaitGroup.Wait"
            | "sync.Cond.Wait"
            | "semacquire" => match g.sema_addr.or(probed_sync) {
                Some(addr) => ReachRole::Blocked(vec![addr]),
                None => ReachRole::Root,
            },
            _ if g.system => return None,
            _ => ReachRole::Root,
        };
        Some(ReachGoroutine { goid: g.goid, g_addr: g.g_addr, role, untraceable: g.sync_pointer_words.clone() })
    }
}

/// Limits of [`find_leaked`].
#[derive(Debug, Clone)]
pub struct ReachOptions {
    /// Read budget; when it runs out the report is incomplete ([`ReachReport::complete`] false).
    pub max_bytes: u64,
    /// Most heap objects followed from each leaked goroutine's stack for
    /// [`ReachReport::could_wake`].
    pub could_wake_max_objects: usize,
    /// Record how each object was first marked, for [`ReachReport::why_live`] (one map entry
    /// per marked object).
    pub explain: bool,
}

impl Default for ReachOptions {
    fn default() -> Self {
        ReachOptions { max_bytes: 1 << 30, could_wake_max_objects: 10_000, explain: false }
    }
}

/// Where a [`ReachLink`]'s word is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachHolder {
    /// A pointer-bearing global.
    Global,
    /// The stack of this goroutine.
    Stack {
        /// Whose stack.
        goid: u64,
    },
    /// The g struct of this goroutine.
    GStruct {
        /// Whose g struct.
        goid: u64,
    },
    /// The heap object `[base, base + size)`.
    Object {
        /// First byte of the object.
        base: u64,
        /// Its size class's size in bytes.
        size: u64,
    },
}

/// One step of a [`ReachReport::why_live`] chain: the word at `addr` in `holder`, whose value
/// points into the next link's holder (the last link's: into the wait object). A wait object
/// that lives in a stack is a link of its own, with `addr` and `value` its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReachLink {
    /// What holds the word.
    pub holder: ReachHolder,
    /// The word's address.
    pub addr: u64,
    /// The word's value: a pointer into the next link.
    pub value: u64,
}

/// What [`find_leaked`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReachReport {
    /// Goids of the blocked goroutines none of whose objects is reachable from a root or from a
    /// goroutine that is itself live (ascending).
    pub leaked: Vec<u64>,
    /// For each leaked goroutine: the other leaked goroutines whose wait objects it references
    /// through its stack and what that reaches (bounded) — "if it ran, it could wake them"; the
    /// edges deadlock chains are built from. Empty when the report is incomplete.
    pub could_wake: HashMap<u64, BTreeSet<u64>>,
    /// With [`ReachOptions::explain`]: for each blocked goroutine found live, the chain of words
    /// through which its wait object was first reached, from a root (a global, or the stack or g
    /// struct of a root goroutine) on. Empty for the others.
    pub why_live: HashMap<u64, Vec<ReachLink>>,
    /// Everything reachable was scanned within budget; false => `leaked` is not proof.
    pub complete: bool,
    /// Why it is not complete (the first limit met), None when it is.
    pub incomplete: Option<Incomplete>,
    /// Bytes read from the target's memory.
    pub bytes_read: u64,
    /// Heap objects whose contents were scanned.
    pub objects_scanned: u64,
    /// Frames of live goroutines' stacks scanned by the runtime's stack maps (only the live
    /// pointer slots).
    pub stack_frames_precise: u64,
    /// Frames scanned conservatively (every word): no usable map, asyncPreempt and the frame it
    /// interrupted, frames with a `defer`, and the rest of a stack that could not be unwound
    /// (one each).
    pub stack_frames_conservative: u64,
    /// Live goroutines' stacks scanned whole, conservatively: running or in a system call (no
    /// saved context), changed while read, or larger than one read.
    pub stacks_conservative: u64,
    /// Wall time of the analysis, nanoseconds.
    pub elapsed_ns: u64,
}

/// What stopped an analysis from scanning everything reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incomplete {
    /// The read budget ([`ReachOptions::max_bytes`]) would have been exceeded.
    Budget {
        /// The budget in bytes.
        limit: u64,
    },
    /// Memory that should hold reachable data could not be read (this many ranges): on a running
    /// process, usually a stack or object freed or moved while it was read.
    Unreadable {
        /// How many ranges failed to read.
        ranges: u64,
    },
    /// A goroutine found live had no readable stack or g struct to follow.
    UnknownStack {
        /// The goroutine.
        goid: u64,
    },
}

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Incomplete::Budget { limit } => write!(f, "the read budget of {} MiB ran out", limit >> 20),
            Incomplete::Unreadable { ranges } => {
                write!(f, "{ranges} reachable memory range(s) could not be read (freed or moved while read)")
            }
            Incomplete::UnknownStack { goid } => write!(f, "goroutine {goid}'s stack could not be read"),
        }
    }
}

/// Why the analysis could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    /// Reading the target failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A runtime symbol the analysis starts from is missing (stripped binary).
    #[error("proving leaks needs the binary's symbol table: {0} is not known (stripped binary)")]
    NeedsSymbols(&'static str),
    /// A struct offset is known neither from DWARF nor from the per-version tables.
    #[error("proving leaks needs the offset of {0} (no DWARF and no table entry for this Go version)")]
    MissingOffset(&'static str),
    /// Not a linux/amd64 binary.
    #[error("proving leaks is implemented for linux/amd64 only (this binary is {0})")]
    UnsupportedArch(String),
    /// What was read contradicts the runtime's invariants.
    #[error("{what} at {addr:#x} does not look like the Go runtime's: {why}; is this the binary the process runs?")]
    BadRuntimeData {
        /// The runtime structure.
        what: &'static str,
        /// Where it was read.
        addr: u64,
        /// What was wrong.
        why: String,
    },
}

impl ReachError {
    /// The read budget ran out (the analysis stops incomplete rather than failing).
    pub fn is_budget(&self) -> bool {
        matches!(self, ReachError::Memory(MemoryError::BudgetExceeded { .. }))
    }
}

/// Which of `goroutines` are leaked, in the process `mem` reads, which runs `binary` at
/// `load_bias`.
///
/// "Leaked" is proof in the sense of the runtime's own detector when `complete` is true and the
/// process did not change meanwhile: the goroutines are read while the process runs, so callers
/// confirm a finding on a second run. Not seen by this analysis (each can only hide a reference,
/// so can only turn a live goroutine into a false "leaked"): values held only in the registers of
/// a goroutine that is running at that moment, and closures kept only by finalizers or cleanups
/// (`runtime.SetFinalizer`, `runtime.AddCleanup`: span specials are not read).
pub fn find_leaked(
    mem: &ProcessMemory,
    binary: &GoBinary,
    load_bias: u64,
    goroutines: &[ReachGoroutine],
    opts: &ReachOptions,
) -> Result<ReachReport, ReachError> {
    let mut heap = ProcessHeap::new(mem, binary, load_bias)?;
    let globals = heap.globals()?;
    find_leaked_in(&mut heap, &globals, goroutines, opts)
}

#[cfg(test)]
mod tests;
