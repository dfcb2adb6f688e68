//! What goscope knows about the Go runtime that depends on the release, as data in one place:
//! each fact says from which Go 1.x release it holds (as otel-go-instrumentation's
//! `StructFieldConstMinVersion`). Struct field offsets measured from DWARF live in the per-release
//! tables (`offsets/go1.N.txt`); everything decided by the release number alone is here.
//!
//! Sources: the runtime's own files of each release (runtime2.go, symtab.go, sema.go, proc.go,
//! sync/*.go) and `docs/go-runtime-facts.md`.

/// Oldest Go 1.x release goscope supports (the first of the version matrix).
pub const OLDEST_MINOR: u32 = 19;
/// Newest Go 1.x release with measured facts and an offsets table (the last of the matrix).
pub const NEWEST_MINOR: u32 = 27;

/// A value that holds from Go 1.`since` on, until the next entry of its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since<T> {
    /// First Go 1.x minor release the value holds for.
    pub since: u32,
    /// The value.
    pub value: T,
}

const fn since<T>(since: u32, value: T) -> Since<T> {
    Since { since, value }
}

/// The value for Go 1.`minor` from `facts` (ordered by `since`): the newest entry not newer than
/// `minor`. Releases past [`NEWEST_MINOR`] get the newest value; callers that must not guess
/// check [`is_measured`].
pub fn at<T: Copy>(facts: &[Since<T>], minor: u32) -> Option<T> {
    facts.iter().rev().find(|f| f.since <= minor).map(|f| f.value)
}

/// Whether Go 1.`minor` is inside the measured matrix.
pub fn is_measured(minor: u32) -> bool {
    (OLDEST_MINOR..=NEWEST_MINOR).contains(&minor)
}

/// Offset of `gofunc` in `runtime.moduledata`: `covctrs, ecovctrs` were added in 1.20,
/// `typedesclen, itaboffset, itabsize` in 1.27.
pub const MODULEDATA_GOFUNC: &[Since<u64>] = &[since(19, 304), since(20, 320), since(27, 344)];

/// Offset of `types` in `runtime.moduledata` (after `covctrs, ecovctrs` from 1.20).
pub const MODULEDATA_TYPES: &[Since<u64>] = &[since(19, 280), since(20, 296)];

/// `g.syscallbp` (16 bytes after `g.syscallsp`) exists from this release.
pub const G_SYSCALLBP_SINCE: u32 = 23;

/// `sudog.elem` and `sudog.c` are `maybeTraceablePtr` (`{vp unsafe.Pointer; vu uintptr}`, two
/// words) from this release; one pointer before.
pub const SUDOG_TRACEABLE_PTR_SINCE: u32 = 26;

/// `g.atomicstatus` values (runtime2.go `_Gidle` … ) and the release that introduced each; the
/// `_Gscan` bit is [`GSCAN`]. Code 5 (`_Gmoribund_unused`) and 7 (`_Genqueue_unused`) are never
/// stored.
pub const GSTATUS_CODES: &[Since<u32>] = &[
    since(19, 0),  // _Gidle
    since(19, 1),  // _Grunnable
    since(19, 2),  // _Grunning
    since(19, 3),  // _Gsyscall
    since(19, 4),  // _Gwaiting
    since(19, 6),  // _Gdead
    since(19, 8),  // _Gcopystack
    since(19, 9),  // _Gpreempted
    since(26, 10), // _Gleaked
    since(26, 11), // _Gdeadextra
];

/// The `_Gscan` bit of `g.atomicstatus`.
pub const GSCAN: u32 = 0x1000;

/// Whether Go 1.`minor` ever stores status `code` (without the scan bit).
pub fn gstatus_exists(code: u32, minor: u32) -> bool {
    GSTATUS_CODES.iter().any(|c| c.value == code && c.since <= minor)
}

/// Integer register arguments of `runtime.newproc1` at entry: `(fn, callergp, callerpc)`, plus
/// `parked, waitreason` from 1.23.
pub const NEWPROC1_ARGS: &[Since<usize>] = &[since(19, 3), since(23, 5)];
/// Of `runtime.gopark`: `unlockf, lock, reason, traceReason, traceskip`.
pub const GOPARK_ARGS: &[Since<usize>] = &[since(19, 5)];
/// Of `runtime.ready`: `gp, traceskip, next`.
pub const READY_ARGS: &[Since<usize>] = &[since(19, 3)];
/// Of `runtime.goexit1`: none.
pub const GOEXIT1_ARGS: &[Since<usize>] = &[since(19, 0)];
/// Of `runtime.semacquire1`: `addr, lifo, profile, skipframes`, plus `reason` from 1.20.
pub const SEMACQUIRE1_ARGS: &[Since<usize>] = &[since(19, 4), since(20, 5)];

/// Offset of `lock` in `runtime.notifyList` (after the `wait` and `notify` uint32s): what gopark
/// gets as its lock for a `sync.Cond` wait. The same in every supported release.
pub const NOTIFY_LIST_LOCK: u64 = 8;

/// Offsets of the runtime objects goroutines wait on inside the sync primitives (the same in
/// every supported release): the semaphore a `semacquire1` waits on, or a Cond's notifyList.
pub mod sync_fields {
    /// `sync.Mutex.sema` (after `state int32`).
    pub const MUTEX_SEMA: u64 = 4;
    /// `sync.RWMutex.writerSem` (after the embedded Mutex).
    pub const RWMUTEX_WRITER_SEM: u64 = 8;
    /// `sync.RWMutex.readerSem`.
    pub const RWMUTEX_READER_SEM: u64 = 12;
    /// `sync.WaitGroup.sema` (after `noCopy` and the 64-bit `state`).
    pub const WAITGROUP_SEMA: u64 = 8;
    /// `sync.Cond.notify` (after `noCopy` and the `L Locker` interface).
    pub const COND_NOTIFY: u64 = 16;
}

/// What the runtime's garbage collector reads to scan a goroutine stack precisely
/// (`internal/abi/symtab.go`, `runtime/symtab.go` `stackmap`, `runtime/stack.go`
/// `stackObjectRecord`, `runtime/stkframe.go` `getStackMap`). The same in 1.19-1.27 unless a
/// list says otherwise.
pub mod stack_maps {
    use super::{Since, since};

    /// `PCDATA_StackMapIndex`: which bitmap of the function's stack maps is in force at a pc.
    pub const PCDATA_STACK_MAP_INDEX: u32 = 1;
    /// `FUNCDATA_ArgsPointerMaps`: the live pointer words of the argument area, per index.
    pub const FUNCDATA_ARGS_POINTER_MAPS: u32 = 0;
    /// `FUNCDATA_LocalsPointerMaps`: the live pointer words of the locals, per index.
    pub const FUNCDATA_LOCALS_POINTER_MAPS: u32 = 1;
    /// `FUNCDATA_StackObjects`: `n uintptr` then `n` stack object records.
    pub const FUNCDATA_STACK_OBJECTS: u32 = 2;
    /// `abi.ArgsSizeUnknown`: `_func.args` of reflect's stubs, whose argument map is dynamic.
    pub const ARGS_SIZE_UNKNOWN: i32 = i32::MIN;
    /// `abi.FuncFlagTopFrame`: the function is the bottom of its stack (goexit, mstart, ...).
    pub const FUNC_FLAG_TOP_FRAME: u8 = 1;
    /// `abi.FuncFlagSPWrite`: the function writes SP in ways the SP-delta table does not say.
    pub const FUNC_FLAG_SP_WRITE: u8 = 2;
    /// Size of a `stackObjectRecord` (`off, size int32; ptrdata int32; gcdataoff uint32`; the
    /// third field is `ptrBytes` from 1.22 and negative for a GC program before 1.24).
    pub const STACK_OBJECT_RECORD: &[Since<usize>] = &[since(19, 16)];
    /// The functions whose next frame stopped at an instruction that is not a call (the runtime's
    /// `isInjectedCall`): that frame has no stack map in force; asyncPreempt's and
    /// debugCallV2's frames and their callers' are scanned conservatively by the runtime.
    pub const INJECTED_CALLS: &[&str] = &["runtime.asyncPreempt", "runtime.debugCallV2", "runtime.sigpanic"];
    /// Offset of `ctxt` in `runtime.gobuf` (after `sp, pc, g`): the saved closure context.
    pub const GOBUF_CTXT: u64 = 24;
    /// Offsets of `g._panic` and `g._defer` (after `stack` and the two stack guards): the
    /// runtime follows both into the goroutine's stack when it scans it.
    pub const G_PANIC: u64 = 32;
    /// See [`G_PANIC`].
    pub const G_DEFER: u64 = 40;
    /// Offset of `fn` in `runtime._defer` (after `sp, pc` and the flags word).
    pub const DEFER_FN: u64 = 24;
    /// Offset of `link` in `runtime._defer`: after `_panic` until 1.21; 1.22 dropped `_panic`.
    pub const DEFER_LINK: &[Since<u64>] = &[since(19, 40), since(22, 32)];
    /// Reflect's stubs with a dynamic argument map (`stkframe.argMapInternal`).
    pub const REFLECT_STUBS: &[&str] = &["reflect.makeFuncStub", "reflect.methodValueCall"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_hold_from_their_release_on() {
        assert_eq!(at(MODULEDATA_GOFUNC, 19), Some(304));
        assert_eq!(at(MODULEDATA_GOFUNC, 26), Some(320));
        assert_eq!(at(MODULEDATA_GOFUNC, 27), Some(344));
        assert_eq!(at(MODULEDATA_GOFUNC, 30), Some(344), "a newer release gets the newest value");
        assert_eq!(at(MODULEDATA_GOFUNC, 18), None);
        assert_eq!(at(NEWPROC1_ARGS, 22), Some(3));
        assert_eq!(at(NEWPROC1_ARGS, 23), Some(5));
        assert!(gstatus_exists(10, 26) && !gstatus_exists(10, 25) && !gstatus_exists(5, 27));
    }

    #[test]
    fn every_list_starts_at_the_oldest_release_in_order() {
        let lists: [&[Since<usize>]; 5] = [NEWPROC1_ARGS, GOPARK_ARGS, READY_ARGS, GOEXIT1_ARGS, SEMACQUIRE1_ARGS];
        let starts = lists.iter().map(|l| l.iter().map(|f| f.since).collect::<Vec<_>>());
        let offsets =
            [MODULEDATA_GOFUNC, MODULEDATA_TYPES, stack_maps::DEFER_LINK].map(|l| l.iter().map(|f| f.since).collect::<Vec<_>>());
        for sinces in starts.chain(offsets) {
            assert_eq!(sinces.first(), Some(&OLDEST_MINOR));
            assert!(sinces.windows(2).all(|w| w[0] < w[1]) && sinces.iter().all(|&s| s <= NEWEST_MINOR), "{sinces:?}");
        }
    }
}
