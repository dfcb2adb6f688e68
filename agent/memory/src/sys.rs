//! The crate's only `unsafe`: the kernel calls that read another process and the clock.
//!
//! - [`read_process`]: `process_vm_readv(2)`, many remote ranges in one call;
//! - [`read_at`]: `pread(2)` on `/proc/PID/mem`, the fallback when the former is refused;
//! - [`monotonic_ns`]: `clock_gettime(CLOCK_MONOTONIC)`, the clock of `bpf_ktime_get_ns` and of
//!   the Go runtime's `nanotime`;
//! - [`MappedFile`]: `mmap(2)` of the target's executable, and [`release_free_heap`]:
//!   `malloc_trim(3)`, which keep the agent's memory small.
//!
//! The rest of the crate is `deny(unsafe_code)`. Under `cfg(test)` the two reads can be replaced
//! by fakes ([`fake`]; also with the `fuzzing` feature), as aya's `sys` module does, so tests reach error paths (a process exiting
//! mid-read, a refused call, a short copy) that no real process produces on demand.
use std::{fs::File, io, os::unix::fs::FileExt as _};

/// Copies the `remote` ranges of process `pid`, back to back, into `local` (whose length is their
/// sum): `process_vm_readv(2)`. Returns the bytes copied; the kernel stops at the first range it
/// cannot read completely, so a short count means the ranges before it are complete.
pub(crate) fn read_process(pid: u32, local: &mut [u8], remote: &[(u64, usize)]) -> io::Result<usize> {
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(result) = fake::readv(pid, local, remote) {
        return result;
    }
    let local_iov = libc::iovec { iov_base: local.as_mut_ptr().cast::<libc::c_void>(), iov_len: local.len() };
    let remote_iov: Vec<libc::iovec> =
        remote.iter().map(|&(addr, len)| libc::iovec { iov_base: addr as usize as *mut libc::c_void, iov_len: len }).collect();
    // SAFETY: `local_iov` describes `local.len()` writable bytes of `local`, borrowed mutably for
    // the call; `remote_iov` holds `remote_iov.len()` iovecs the kernel only reads (the remote
    // addresses are checked by the kernel against the target's mappings, never dereferenced here).
    let n = unsafe {
        libc::process_vm_readv(pid as libc::pid_t, &local_iov, 1, remote_iov.as_ptr(), remote_iov.len() as libc::c_ulong, 0)
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// Reads from `/proc/PID/mem` at `offset` (the remote address): `pread(2)`.
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    #[cfg(any(test, feature = "fuzzing"))]
    if let Some(result) = fake::pread(buf, offset) {
        return result;
    }
    file.read_at(buf, offset)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns` (every event's timestamp)
/// and of the Go runtime's `nanotime` (`g.waitsince`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A whole file mapped read-only (`mmap(2)`, private): the executable a target runs, for its
/// analysis ([`goscope_inspect::GoBinary::from_file`]). Only the pages read are resident, and
/// [`MappedFile::release_resident`] gives those back after the analysis; later lookups fault in
/// the few pages they touch, from the page cache the target's own mapping of the file keeps warm.
///
/// An executable cannot be opened for writing while a process runs it (ETXTBSY), but once the
/// last one exited, the file may be truncated in place while goscope still reads it (a session
/// ending symbolizes what it has left). A read past the new end would raise SIGBUS and end goscope:
/// [`shrink_guard`] catches that fault and puts a page of zeros where the file's page was, so such
/// reads see zeros (which the decoders treat as any corrupted table) and [`MappedFile::shrank`]
/// turns true.
pub struct MappedFile {
    base: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value: no thread can write through it, and
// it is unmapped only by Drop, once no reference into it is left.
unsafe impl Send for MappedFile {}
// SAFETY: as above: shared references only read.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps the file at `path` (an empty file is an empty mapping).
    pub fn open(path: &std::path::Path) -> io::Result<MappedFile> {
        use std::os::fd::AsRawFd as _;
        let file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))?;
        if len == 0 {
            return Ok(MappedFile { base: std::ptr::null_mut(), len: 0 });
        }
        // SAFETY: a new private read-only mapping of an open file; the kernel checks the
        // descriptor and the length; nothing else refers to the mapping yet.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mapped = MappedFile { base, len };
        shrink_guard::install()?;
        // Unguarded, a truncation could end goscope: a mapping the guard cannot hold is refused
        // (and unmapped by Drop, which skips the guard's slots it does not hold).
        shrink_guard::guard(base as usize, len)?;
        Ok(mapped)
    }

    /// Whether the mapped file that holds `bytes` shrank while goscope read it: some reads saw
    /// zeros, not the file. False for bytes of no mapped file.
    pub fn shrank(bytes: &[u8]) -> bool {
        shrink_guard::shrank(bytes.as_ptr() as usize)
    }

    /// Gives back the pages read so far (`madvise(MADV_DONTNEED)`): the contents stay the same,
    /// and a later read faults the page in again from the file.
    pub fn release_resident(&self) {
        if self.len > 0 {
            // SAFETY: our own read-only file mapping: dropping its pages loses nothing (they are
            // re-read from the file), and references into it stay valid.
            unsafe { libc::madvise(self.base, self.len, libc::MADV_DONTNEED) };
        }
    }
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `len` readable bytes at `base`, mapped until Drop, which needs `&mut self`
        // and so cannot run while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.base.cast::<u8>(), self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if self.len > 0 {
            // Before the unmap: the addresses may be mapped again by anyone afterwards.
            shrink_guard::unguard(self.base as usize);
            // SAFETY: our own mapping, no longer borrowed (Drop has `&mut self`).
            unsafe { libc::munmap(self.base, self.len) };
        }
    }
}

/// Keeps a mapped file that shrank from ending the process: a SIGBUS handler that, for a fault
/// inside a guarded mapping, maps a page of zeros over the faulting page and returns (the read is
/// retried and sees zeros). Any other SIGBUS goes to the handler that was there before (Rust's
/// own, which reports stack overflows), or ends the process as the default action does.
mod shrink_guard {
    use std::{
        io,
        sync::{
            OnceLock,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        },
    };

    /// How many files can be mapped at once: one per executable `goscope run` watches.
    const SLOTS: usize = 1024;

    /// One guarded mapping, `start..end`; a free slot has `start` 0. `end` is set after `start`
    /// is claimed and cleared before it is freed, so a half-written slot guards nothing.
    struct Slot {
        start: AtomicUsize,
        end: AtomicUsize,
        /// A read of this mapping faulted: the file shrank.
        shrank: AtomicBool,
    }

    static GUARDED: [Slot; SLOTS] =
        [const { Slot { start: AtomicUsize::new(0), end: AtomicUsize::new(0), shrank: AtomicBool::new(false) } }; SLOTS];
    static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);
    /// The SIGBUS action before ours, set once before ours is installed.
    static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

    /// Installs the handler (once per process).
    pub(super) fn install() -> io::Result<()> {
        static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
        let installed = INSTALLED.get_or_init(|| {
            // SAFETY: sysconf only reads a system constant.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            if page > 0 {
                PAGE_SIZE.store(page as usize, Ordering::Relaxed);
            }
            // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, empty mask, no flags).
            let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: reads the current action into `previous`, which we own.
            if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) } != 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL));
            }
            let _ = PREVIOUS.set(previous);
            // SAFETY: as above, all-zero is valid; the fields set next make it ours.
            let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
            ours.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
            // On the alternate stack Rust gives every thread: a fault may come with little stack.
            ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: `ours` is a complete action whose handler has the SA_SIGINFO signature and
            // only makes async-signal-safe calls (atomics, mmap, sigaction).
            if unsafe { libc::sigaction(libc::SIGBUS, &ours, std::ptr::null_mut()) } != 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL));
            }
            Ok(())
        });
        installed.map_err(io::Error::from_raw_os_error)
    }

    /// Guards the mapping of `len` bytes at `start`; an error when every slot is taken.
    pub(super) fn guard(start: usize, len: usize) -> io::Result<()> {
        for slot in &GUARDED {
            if slot.start.compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                slot.shrank.store(false, Ordering::Relaxed);
                slot.end.store(start + len, Ordering::Release);
                return Ok(());
            }
        }
        Err(io::Error::other(format!("more than {SLOTS} files mapped at once")))
    }

    /// Stops guarding the mapping at `start` (nothing when it was never guarded).
    pub(super) fn unguard(start: usize) {
        if let Some(slot) = GUARDED.iter().find(|s| s.start.load(Ordering::Acquire) == start) {
            slot.end.store(0, Ordering::Release);
            slot.start.store(0, Ordering::Release);
        }
    }

    /// The slot of the guarded mapping that holds `addr`.
    fn slot_of(addr: usize) -> Option<&'static Slot> {
        GUARDED.iter().find(|s| {
            let start = s.start.load(Ordering::Acquire);
            start != 0 && addr >= start && addr < s.end.load(Ordering::Acquire)
        })
    }

    pub(super) fn shrank(addr: usize) -> bool {
        slot_of(addr).is_some_and(|s| s.shrank.load(Ordering::Relaxed))
    }

    extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
        let addr = unsafe { (*info).si_addr() } as usize;
        if let Some(slot) = slot_of(addr) {
            let page = addr & !(PAGE_SIZE.load(Ordering::Relaxed) - 1);
            // SAFETY: replaces one page of our own guarded read-only file mapping (the page the
            // file no longer has) with zeros; nothing can have a view of it other than reads.
            let zeros = unsafe {
                libc::mmap(
                    page as *mut libc::c_void,
                    PAGE_SIZE.load(Ordering::Relaxed),
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if zeros != libc::MAP_FAILED {
                slot.shrank.store(true, Ordering::Relaxed);
                return;
            }
        }
        forward(signal, info, context);
    }

    /// Hands a SIGBUS that is not ours to the action installed before ours.
    fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
        let previous = PREVIOUS.get().map_or(libc::SIG_DFL, |p| p.sa_sigaction);
        let takes_info = PREVIOUS.get().is_some_and(|p| p.sa_flags & libc::SA_SIGINFO != 0);
        if previous == libc::SIG_DFL || previous == libc::SIG_IGN {
            // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask.
            let default: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: restores the default action; returning re-runs the faulting instruction,
            // whose SIGBUS then ends the process as it would have without us.
            unsafe { libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut()) };
        } else if takes_info {
            // SAFETY: the previous action was installed with SA_SIGINFO: its handler has this type.
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(previous) };
            handler(signal, info, context);
        } else {
            // SAFETY: a previous action without SA_SIGINFO is a plain signal handler.
            let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(previous) };
            handler(signal);
        }
    }
}

/// Returns the allocator's free memory to the kernel (`malloc_trim(3)`; glibc only): after a
/// large analysis, freed blocks between live ones otherwise stay resident for the agent's life.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Fakes of the read calls for this thread's tests and fuzzing, and memory for tests to read.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fake {
    use std::{cell::RefCell, io};

    type Readv = Box<dyn FnMut(u32, &mut [u8], &[(u64, usize)]) -> io::Result<usize>>;
    type Pread = Box<dyn FnMut(&mut [u8], u64) -> io::Result<usize>>;

    thread_local! {
        static READV: RefCell<Option<Readv>> = RefCell::new(None);
        static PREAD: RefCell<Option<Pread>> = RefCell::new(None);
    }

    /// Runs `body` with `process_vm_readv` answered by `fake`.
    pub(crate) fn with_readv<R>(
        fake: impl FnMut(u32, &mut [u8], &[(u64, usize)]) -> io::Result<usize> + 'static,
        body: impl FnOnce() -> R,
    ) -> R {
        READV.with(|f| *f.borrow_mut() = Some(Box::new(fake)));
        let result = body();
        READV.with(|f| *f.borrow_mut() = None);
        result
    }

    /// Runs `body` with `pread` answered by `fake`.
    #[cfg(test)]
    pub(crate) fn with_pread<R>(fake: impl FnMut(&mut [u8], u64) -> io::Result<usize> + 'static, body: impl FnOnce() -> R) -> R {
        PREAD.with(|f| *f.borrow_mut() = Some(Box::new(fake)));
        let result = body();
        PREAD.with(|f| *f.borrow_mut() = None);
        result
    }

    pub(super) fn readv(pid: u32, local: &mut [u8], remote: &[(u64, usize)]) -> Option<io::Result<usize>> {
        READV.with(|f| f.borrow_mut().as_mut().map(|fake| fake(pid, local, remote)))
    }

    pub(super) fn pread(buf: &mut [u8], offset: u64) -> Option<io::Result<usize>> {
        PREAD.with(|f| f.borrow_mut().as_mut().map(|fake| fake(buf, offset)))
    }

    /// Memory a test maps in its own process: pages to read, some of them unmapped again.
    #[cfg(test)]
    pub(crate) struct TestPages {
        base: *mut libc::c_void,
        len: usize,
    }

    #[cfg(test)]
    impl TestPages {
        const PAGE: usize = 4096;

        /// `pages` fresh zeroed pages, readable and writable.
        pub(crate) fn map(pages: usize) -> Self {
            let len = pages * Self::PAGE;
            // SAFETY: a new anonymous private mapping; nothing else refers to it.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(base, libc::MAP_FAILED, "mmap failed");
            Self { base, len }
        }

        /// The mapping's address.
        pub(crate) fn addr(&self) -> u64 {
            self.base as u64
        }

        /// Stores `value` at byte `offset` (8-aligned, inside a mapped page).
        pub(crate) fn write_u64(&mut self, offset: usize, value: u64) {
            assert!(offset.is_multiple_of(8) && offset + 8 <= self.len);
            // SAFETY: in bounds of our own writable mapping (checked above) and aligned.
            unsafe { self.base.cast::<u8>().add(offset).cast::<u64>().write(value) };
        }

        /// Unmaps page `page` (reads of it fail from now on).
        pub(crate) fn unmap_page(&mut self, page: usize) {
            assert!((page + 1) * Self::PAGE <= self.len);
            // SAFETY: unmapping a page of our own mapping; nothing holds a reference into it.
            let r = unsafe { libc::munmap(self.base.cast::<u8>().add(page * Self::PAGE).cast(), Self::PAGE) };
            assert_eq!(r, 0, "munmap failed");
        }
    }

    #[cfg(test)]
    impl Drop for TestPages {
        fn drop(&mut self) {
            // SAFETY: our own mapping; unmapping pages that are already unmapped is allowed.
            unsafe { libc::munmap(self.base, self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_file_reads_the_same_after_its_pages_are_released() {
        let path = std::env::temp_dir().join(format!("goscope-mapped-{}", std::process::id()));
        let contents: Vec<u8> = (0..3 * 4096 + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &contents).unwrap();
        let mapped = MappedFile::open(&path).unwrap();
        assert_eq!(mapped.as_ref(), &contents[..]);
        mapped.release_resident();
        assert_eq!(mapped.as_ref(), &contents[..]);
        drop(mapped);
        std::fs::write(&path, b"").unwrap();
        let empty = MappedFile::open(&path).unwrap();
        assert!(empty.as_ref().is_empty());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(MappedFile::open(&path).err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
    }

    #[test]
    fn a_mapped_file_truncated_in_place_reads_as_zeros_instead_of_ending_the_process() {
        let path = std::env::temp_dir().join(format!("goscope-truncated-{}", std::process::id()));
        let contents = vec![0xa5u8; 4 * 4096];
        std::fs::write(&path, &contents).unwrap();
        let mapped = MappedFile::open(&path).unwrap();
        assert_eq!(mapped.as_ref()[3 * 4096], 0xa5, "the file's own bytes before it shrinks");
        assert!(!MappedFile::shrank(mapped.as_ref()));
        // In place (O_TRUNC), as `cp new old` does: the mapping outlives the file's pages.
        File::create(&path).unwrap();
        let after: Vec<u8> = (0..4).map(|page| std::hint::black_box(mapped.as_ref())[page * 4096 + 7]).collect();
        assert_eq!(after, [0, 0, 0, 0]);
        assert!(MappedFile::shrank(mapped.as_ref()));
        drop(mapped);
        std::fs::remove_file(&path).unwrap();
    }
}
