//! The crate's only `unsafe`: the kernel calls that read another process and the clock.
//!
//! - [`read_process`]: `process_vm_readv(2)`, many remote ranges in one call;
//! - [`read_at`]: `pread(2)` on `/proc/PID/mem`, the fallback when the former is refused;
//! - [`monotonic_ns`]: `clock_gettime(CLOCK_MONOTONIC)`, the clock of `bpf_ktime_get_ns` and of
//!   the Go runtime's `nanotime`.
//!
//! The rest of the crate is `deny(unsafe_code)`. Under `cfg(test)` the two reads can be replaced
//! by fakes ([`fake`]), as aya's `sys` module does, so tests reach error paths (a process exiting
//! mid-read, a refused call, a short copy) that no real process produces on demand.
use std::{fs::File, io, os::unix::fs::FileExt as _};

/// Copies the `remote` ranges of process `pid`, back to back, into `local` (whose length is their
/// sum): `process_vm_readv(2)`. Returns the bytes copied; the kernel stops at the first range it
/// cannot read completely, so a short count means the ranges before it are complete.
pub(crate) fn read_process(pid: u32, local: &mut [u8], remote: &[(u64, usize)]) -> io::Result<usize> {
    #[cfg(test)]
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
    #[cfg(test)]
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

/// Fakes of the read calls for this thread's tests, and memory for tests to read.
#[cfg(test)]
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
    pub(crate) struct TestPages {
        base: *mut libc::c_void,
        len: usize,
    }

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

    impl Drop for TestPages {
        fn drop(&mut self) {
            // SAFETY: our own mapping; unmapping pages that are already unmapped is allowed.
            unsafe { libc::munmap(self.base, self.len) };
        }
    }
}
