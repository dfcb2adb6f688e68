//! goscope-memory: reads a live Go process's memory — without stopping it — to enumerate every
//! goroutine: status, wait reason, creation site, stack, and the channels it blocks on.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use goscope_memory::{ProcessMemory, snapshot};
//! let pid = 1234;
//! let binary = goscope_inspect::GoBinary::open(std::path::Path::new(&format!("/proc/{pid}/exe")))?;
//! let load_bias = 0; // runtime minus link-time address; non-zero for PIE (see goscope's target.rs)
//! let mem = ProcessMemory::new(pid)?;
//! let snap = snapshot(&mem, &binary, load_bias)?;
//! for g in &snap.goroutines {
//!     println!("goroutine {} [{}]", g.goid, g.wait_reason.as_deref().unwrap_or(g.status.runtime_name()));
//! }
//! # Ok(()) }
//! ```
//!
//! * [`ProcessMemory`]: bounded, batched reads with `process_vm_readv` (fallback `/proc/PID/mem`).
//! * [`locate_allgs`]: where `runtime.allgs` is (symbol table, or decoded from `runtime.allgadd`).
//! * [`snapshot`]: the goroutines, validated against torn reads (see the module docs of
//!   `snapshot.rs` for how).

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod allgs;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod process;
mod reach;
mod refs;
mod sema;
mod snapshot;
mod stack;
#[allow(unsafe_code, reason = "the fence: every unsafe call of the crate, each with its SAFETY argument")]
mod sys;
mod types;

pub use allgs::{ALLGADD, AllgsLocation, AllgsSource, LocateError, find_allgs_in_code, locate_allgs, locate_allgs_from_code};
pub use goscope_inspect::Location;
pub use process::{Batch, DEFAULT_BUDGET, MAX_REQUEST, MemoryError, ProcessMemory, ReadStats};
pub use reach::{
    GoroutineStack, HeapObject, Incomplete, ProcessHeap, ReachError, ReachGoroutine, ReachHolder, ReachLink, ReachMemory,
    ReachOptions, ReachReport, ReachRole, StackContext, StackPointers, find_leaked, find_leaked_in,
};
pub use refs::{referenced_globals, stack_words, whole_stack_words};
pub use sema::{is_semaphore_wait, semaphore_waiters};
pub use snapshot::{
    Channel, GStatus, Goroutine, ResumePoint, Snapshot, SnapshotError, SnapshotOptions, SnapshotStats, read_goroutines, snapshot,
    snapshot_with,
};
pub use stack::{StackEnd, StackFrame};
pub use sys::{MappedFile, monotonic_ns, release_free_heap};
pub use types::type_names;
